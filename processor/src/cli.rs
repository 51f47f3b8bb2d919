//! The command line: `processor` (run), `processor healthcheck`, `processor status`,
//! `processor dead list|show|replay|purge`, `processor retry list|now`. Operator commands return their exit code and text;
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
    /// With PARTITIONS > 1: `status` and `dead …` look at this partition only (0 to P-1).
    #[arg(long, global = true, value_name = "INDEX")]
    pub partition: Option<usize>,
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
    /// Look at the entries parked for a later retry (`{ns}:retry`), or make them due now.
    Retry {
        #[command(subcommand)]
        action: Retry,
    },
    /// Compare the calendars with their bots now (one reconcile pass): prints one line per
    /// drifted meeting and queues it to be decided; exit 69 when the API cannot be listed.
    Reconcile {
        /// Print the drift only; append nothing.
        #[arg(long)]
        dry_run: bool,
    },
    /// Record a new partition count for a drained namespace (stop every ingress first, then run
    /// this, then restart everything with PARTITIONS set to the new count).
    Repartition {
        /// The new partition count (1 to 1024).
        partitions: usize,
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

#[derive(Debug, Subcommand)]
pub enum Retry {
    /// A table of parked entries, soonest due first: id, event, attempts, due, last error.
    List {
        /// How many to show.
        #[arg(long, default_value_t = 20)]
        count: usize,
    },
    /// Make a parked entry (by the id it had when parked) or every one due now; a running
    /// processor re-appends them within a second.
    Now {
        /// The entry's id when it was parked (as `retry list` shows it).
        id: Option<String>,
        /// Every parked entry.
        #[arg(long, conflicts_with = "id")]
        all: bool,
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

    /// A listing with nothing in it: exit 0 (a `set -e` script goes on), the note on stderr.
    fn empty(note: &str) -> Self {
        Self { code: 0, stdout: String::new(), stderr: note.to_string() }
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

/// Runs an operator command (`status`, `dead …`, `repartition`) on one short-lived connection.
/// `status` and `dead …` look at the partitions the namespace was created with
/// (`{ns}:partitions`), whatever `PARTITIONS` says; `partition` picks one of them.
pub async fn operate(config: &crate::ProcessorConfig, partition: Option<usize>, command: Command) -> Done {
    let mut con = match config
        .common
        .redis_target()
        .and_then(|t| shared::conn::Conn::open(&t, std::time::Duration::from_secs(10)))
    {
        Ok(con) => con,
        Err(err) => return Done::redis(err),
    };
    // Every age and due time it prints is on Redis's clock ([`crate::clock`]).
    if let Err(err) = crate::clock::sync(&mut con).await {
        return Done::redis(err);
    }
    let ns = &config.common.namespace;
    if let Command::Repartition { partitions } = command {
        return repartition(&mut con, ns, partitions).await;
    }
    if let Command::Reconcile { dry_run } = command {
        return reconcile(config, con, dry_run).await;
    }
    let count = try_redis!(shared::layout::recorded_partitions(&mut con, ns).await).unwrap_or(config.common.partitions);
    let mut parts: Vec<Ops> = shared::keys::Partitions::new(ns, count)
        .all()
        .iter()
        .map(|keys| Ops::new(keys.clone(), config.group.clone(), con.clone()))
        .collect();
    if let Some(index) = partition {
        if index >= parts.len() {
            return Done::bad(BadArgs(format!(
                "--partition {index}: the namespace has {count} partition(s), 0 to {}",
                count - 1
            )));
        }
        parts = vec![parts.swap_remove(index)];
    }
    match command {
        Command::Dead { action } => dead(&parts, action).await,
        Command::Retry { action } => retry(&parts, action).await,
        _ => {
            let mut done = status(&parts, config.consumer_idle_reap).await;
            if done.code == 0 {
                let namespace = shared::keys::Keys::new(ns);
                done.stdout.push_str(&try_redis!(crate::ops::breaker_status(&mut con, &namespace).await));
                done.stdout.push_str(&try_redis!(crate::ops::reconcile_status(&mut con, ns).await));
                done.stdout.push_str(&try_redis!(crate::ops::calendar_status(&mut con, &namespace).await));
            }
            done
        }
    }
}

/// Runs `processor reconcile [--dry-run]`: one pass now, whoever holds the lease.
pub async fn reconcile(config: &crate::ProcessorConfig, con: shared::conn::Conn, dry_run: bool) -> Done {
    let reconciler = match config.reconciler(con) {
        Ok(r) => r,
        Err(err) => return Done { code: EXIT_UNAVAILABLE, stdout: String::new(), stderr: err.to_string() },
    };
    match reconciler.pass(dry_run).await {
        Ok(report) => {
            let mut out: String = report.drift.iter().map(|d| format!("{d}\n")).collect();
            for bot in &report.missing_results {
                out.push_str(&format!("v2 bot {bot} missing result\n"));
            }
            let verb = if dry_run { "found (dry run: nothing appended)" } else { "queued" };
            out.push_str(&format!(
                "{} calendars, {} events, {} drifted, {} bots ended, {} missing results {verb}\n",
                report.calendars,
                report.events,
                report.drift.len(),
                report.bots,
                report.missing_results.len()
            ));
            let stderr = report.errors.join("\n");
            Done { code: 0, stdout: out, stderr }
        }
        Err(why) => Done { code: EXIT_UNAVAILABLE, stdout: String::new(), stderr: format!("cannot reconcile: {why}") },
    }
}

/// Runs `processor repartition N`.
pub async fn repartition(con: &mut shared::conn::Conn, ns: &str, partitions: usize) -> Done {
    if !(1..=1024).contains(&partitions) {
        return Done::bad(BadArgs(format!("{partitions} partitions: the count must be 1 to 1024")));
    }
    match shared::layout::repartition(con, ns, partitions).await {
        Ok(text) => Done::ok(text),
        Err(shared::layout::RepartitionError::Redis(err)) => Done::redis(err),
        Err(shared::layout::RepartitionError::NotDrained(why)) => Done::nothing(format!("not repartitioned: {why}")),
    }
}

/// Runs `processor status` over `ops` (one per partition looked at).
pub async fn status(ops: &[Ops], reap_after: std::time::Duration) -> Done {
    let mut out = String::new();
    for (n, part) in ops.iter().enumerate() {
        if n > 0 {
            out.push('\n');
        }
        out.push_str(&try_redis!(part.status(reap_after).await));
    }
    Done::ok(out)
}

/// Runs a `processor retry …` command over `ops` (one per partition looked at).
pub async fn retry(ops: &[Ops], action: Retry) -> Done {
    match action {
        Retry::List { count } => {
            let mut entries = Vec::new();
            for part in ops {
                entries.extend(try_redis!(part.retry_list(count).await));
            }
            if entries.is_empty() {
                return Done::empty("no parked entries");
            }
            entries.sort_by_key(|e| e.due_ms);
            entries.truncate(count);
            let partitioned = ops.len() > 1 || ops.iter().any(|part| part.keys.partition > 0);
            Done::ok(ops::format_retry_list(&entries, partitioned))
        }
        Retry::Now { id, all } => {
            if id.is_none() && !all {
                return Done::bad(BadArgs("name the parked entry (its id, as `retry list` shows it), or --all".into()));
            }
            if let Some(id) = &id {
                if let Err(e) = ops::check_id(id) {
                    return Done::bad(e);
                }
            }
            // An open breaker is made half open first: the first entry made due probes the
            // downstream now (the fix is usually why this command is run), and the others,
            // refused while the probe is under way, wait for it to close — no doubled delay.
            let mut out = String::new();
            if let Some(part) = ops.first() {
                for downstream in crate::downstream::breaker::Downstream::ALL {
                    let key = part.keys.breaker(downstream.label());
                    if try_redis!(crate::downstream::breaker::half_open_now(&mut part.con(), &key).await) {
                        out.push_str(&format!(
                            "breaker {} was open: made half open, the first entry probes {}\n",
                            downstream.label(),
                            downstream.describe()
                        ));
                    }
                }
            }
            let mut made = 0;
            for part in ops {
                made += try_redis!(part.retry_now(id.as_deref()).await);
            }
            if made == 0 {
                return Done::nothing(match &id {
                    Some(id) => format!("no parked entry {id}"),
                    None => "no parked entries waiting".into(),
                });
            }
            out.push_str(&format!("made due now: {made}\n"));
            Done::ok(out)
        }
    }
}

/// Runs a `processor dead …` command over `ops` (one per partition looked at). With several
/// partitions, an id is looked for in each (ids are per stream; `--partition` narrows it).
pub async fn dead(ops: &[Ops], action: Dead) -> Done {
    match action {
        Dead::List { count, event } => {
            let mut entries = Vec::new();
            for part in ops {
                entries.extend(try_redis!(part.dead_list(count, event.as_deref()).await));
            }
            if entries.is_empty() {
                return Done::empty("no dead entries");
            }
            // Newest first across partitions (ids are times).
            entries.sort_by_key(|e| std::cmp::Reverse(crate::stream::parse_id(&e.id)));
            entries.truncate(count);
            let partitioned = ops.len() > 1 || ops.iter().any(|part| part.keys.partition > 0);
            Done::ok(ops::format_list(&entries, partitioned))
        }
        Dead::Show { id } => {
            if let Err(e) = ops::check_id(&id) {
                return Done::bad(e);
            }
            let mut out = String::new();
            for part in ops {
                if let Some(entry) = try_redis!(part.dead_show(&id).await) {
                    out.push_str(&ops::format_entry(&entry));
                }
            }
            if out.is_empty() {
                return Done::nothing(format!("no dead entry {id}"));
            }
            Done::ok(out)
        }
        Dead::Replay { ids, all, event } => {
            if !all && ids.is_empty() {
                return Done::bad(BadArgs("name the entries to replay, or --all".into()));
            }
            if let Err(e) = check_ids(&ids) {
                return Done::bad(e);
            }
            let mut moved = Vec::new();
            for part in ops {
                let ids = if all { try_redis!(part.dead_ids(event.as_deref()).await) } else { ids.clone() };
                match part.replay(&ids, |_| Ok::<(), std::convert::Infallible>(())).await {
                    Ok(done) => moved.extend(done),
                    Err(ops::ReplayError::Redis(n, err)) => {
                        return Done {
                            code: EXIT_UNAVAILABLE,
                            stdout: format!("replayed {}\n", moved.len() + n),
                            stderr: format!("Redis failed; the rest stay in the dead stream: {err}"),
                        }
                    }
                    Err(ops::ReplayError::Interrupted(_, never)) => match never {},
                }
            }
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
            let age = match (older_than, ids.is_empty()) {
                (Some(text), true) => match ops::parse_duration(&text) {
                    Ok(age) => Some(age),
                    Err(e) => return Done::bad(e),
                },
                (None, false) => {
                    if let Err(e) = check_ids(&ids) {
                        return Done::bad(e);
                    }
                    None
                }
                _ => return Done::bad(BadArgs("name the entries to purge, or --older-than DURATION".into())),
            };
            let mut purged = 0;
            for part in ops {
                purged += match age {
                    Some(age) => try_redis!(part.purge_older_than(age).await),
                    None => try_redis!(part.purge_ids(&ids).await),
                };
            }
            if purged == 0 {
                return Done::nothing("no dead entries matched");
            }
            Done::ok(format!("purged {purged}\n"))
        }
    }
}
