//! The command line: `processor` (run), `processor healthcheck`, `processor status`,
//! `processor dead list|show|replay|purge`. Operator commands return their exit code and text;
//! `main` prints them.

use crate::ops::{self, BadArgs, Ops};
use clap::{Parser, Subcommand};

/// Exit code: nothing matched.
pub const EXIT_NOTHING: u8 = 1;
/// Exit code: Redis could not be reached (`EX_UNAVAILABLE`).
pub const EXIT_UNAVAILABLE: u8 = 69;

#[derive(Debug, Parser)]
#[command(name = "processor", version, about = "hookstream processor: handles the events in the Redis Stream")]
#[command(after_help = shared::config::help_table(&crate::config::all_vars()))]
pub struct Cli {
    #[command(subcommand)]
    pub command: Option<Command>,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Exit 0 when the local /healthz (on METRICS_ADDR) answers 200 (for container health checks).
    Healthcheck,
    /// Stream length, dead length, group lag, pending entries per consumer, idle consumers.
    Status,
    /// Look at, replay or purge dead-lettered entries.
    Dead {
        #[command(subcommand)]
        action: Dead,
    },
}

#[derive(Debug, Subcommand)]
pub enum Dead {
    /// A table of dead entries, newest first.
    List {
        /// How many to show.
        #[arg(long, default_value_t = 20)]
        count: usize,
        /// Only entries of this event name.
        #[arg(long)]
        event: Option<String>,
    },
    /// One dead entry, every field, the payload pretty-printed.
    Show { id: String },
    /// Move entries back to the events stream with their original fields (each atomically).
    Replay {
        /// Dead entry ids.
        ids: Vec<String>,
        /// Every dead entry (with --event: every one of that event).
        #[arg(long, conflicts_with = "ids")]
        all: bool,
        /// With --all: only entries of this event name.
        #[arg(long, requires = "all")]
        event: Option<String>,
    },
    /// Delete dead entries: by id, or those that died longer ago than a duration (7d, 12h, 30m).
    Purge {
        /// Dead entry ids.
        ids: Vec<String>,
        #[arg(long, value_name = "DURATION", conflicts_with = "ids")]
        older_than: Option<String>,
    },
}

/// An operator command's result: exit code and what to print (stdout), or an error line (stderr).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Done {
    pub code: u8,
    pub stdout: String,
    pub stderr: String,
}

impl Done {
    fn ok(stdout: String) -> Self {
        Self { code: 0, stdout, stderr: String::new() }
    }

    fn nothing(stderr: impl Into<String>) -> Self {
        Self { code: EXIT_NOTHING, stdout: String::new(), stderr: stderr.into() }
    }

    fn bad(err: BadArgs) -> Self {
        Self { code: shared::EXIT_USAGE, stdout: String::new(), stderr: err.0 }
    }

    fn redis(err: redis::RedisError) -> Self {
        Self { code: EXIT_UNAVAILABLE, stdout: String::new(), stderr: format!("Redis: {err}") }
    }
}

macro_rules! try_redis {
    ($e:expr) => {
        match $e {
            Ok(v) => v,
            Err(err) => return Done::redis(err),
        }
    };
}

fn check_ids(ids: &[String]) -> Result<(), BadArgs> {
    ids.iter().try_for_each(|id| ops::check_id(id))
}

/// Runs `processor status`.
pub async fn status(ops: &Ops, reap_after: std::time::Duration) -> Done {
    Done::ok(try_redis!(ops.status(reap_after).await))
}

/// Runs a `processor dead …` command.
pub async fn dead(ops: &Ops, action: Dead) -> Done {
    match action {
        Dead::List { count, event } => {
            let entries = try_redis!(ops.dead_list(count, event.as_deref()).await);
            if entries.is_empty() {
                return Done::nothing("no dead entries");
            }
            Done::ok(ops::format_list(&entries))
        }
        Dead::Show { id } => {
            if let Err(e) = ops::check_id(&id) {
                return Done::bad(e);
            }
            match try_redis!(ops.dead_show(&id).await) {
                Some(entry) => Done::ok(ops::format_entry(&entry)),
                None => Done::nothing(format!("no dead entry {id}")),
            }
        }
        Dead::Replay { ids, all, event } => {
            let ids = if all {
                try_redis!(ops.dead_ids(event.as_deref()).await)
            } else if ids.is_empty() {
                return Done::bad(BadArgs("name the entries to replay, or --all".into()));
            } else {
                if let Err(e) = check_ids(&ids) {
                    return Done::bad(e);
                }
                ids
            };
            let moved = match ops.replay(&ids, |_| Ok::<(), std::convert::Infallible>(())).await {
                Ok(moved) => moved,
                Err(ops::ReplayError::Redis(n, err)) => {
                    return Done {
                        code: EXIT_UNAVAILABLE,
                        stdout: format!("replayed {n}\n"),
                        stderr: format!("Redis failed; the rest stay in the dead stream: {err}"),
                    }
                }
                Err(ops::ReplayError::Interrupted(_, never)) => match never {},
            };
            if moved.is_empty() {
                return Done::nothing("no dead entries matched");
            }
            let mut out = String::new();
            for (from, to) in &moved {
                out.push_str(&format!("{from} -> {to}\n"));
            }
            out.push_str(&format!("replayed {}\n", moved.len()));
            Done::ok(out)
        }
        Dead::Purge { ids, older_than } => {
            let purged = match (older_than, ids.is_empty()) {
                (Some(text), true) => match ops::parse_duration(&text) {
                    Ok(age) => try_redis!(ops.purge_older_than(age).await),
                    Err(e) => return Done::bad(e),
                },
                (None, false) => {
                    if let Err(e) = check_ids(&ids) {
                        return Done::bad(e);
                    }
                    try_redis!(ops.purge_ids(&ids).await)
                }
                _ => return Done::bad(BadArgs("name the entries to purge, or --older-than DURATION".into())),
            };
            if purged == 0 {
                return Done::nothing("no dead entries matched");
            }
            Done::ok(format!("purged {purged}\n"))
        }
    }
}
