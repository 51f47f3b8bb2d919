//! `simulator`: a Meeting BaaS simulator (`simulator api`, the default) or a sink that prints
//! what hookstream forwards (`simulator sink`). See docs/simulator.md.

use clap::{Parser, Subcommand};
use simulator::timeline::{self, Plan};
use simulator::{FakeApi, Reply, Simulator};
use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

#[derive(Parser)]
#[command(
    name = "simulator",
    version,
    about = "A Meeting BaaS simulator for hookstream: the API it calls, and the webhooks Meeting BaaS sends.",
    after_help = "Control routes, while it runs (no key): GET /_sim/state, GET /_sim/bots, GET /_sim/calendars, \
POST /_sim/outage?secs=N, POST /_sim/misbehave?rate_limit_share=F&drop_webhooks_share=F, \
POST /_sim/pause, POST /_sim/resume, POST /_sim/meetings?count=N&lead_secs=S&length_secs=L, \
POST /_sim/calendars/ID/connection?status=revoked|error|permission_denied|active. \
GET /_calls lists the calls it received. More: docs/simulator.md."
)]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
    #[command(flatten)]
    api: ApiArgs,
}

#[derive(Subcommand)]
enum Command {
    /// Serve the simulated Meeting BaaS API and play its side: calendars, meetings, webhooks,
    /// bots that end (the default).
    Api(ApiArgs),
    /// Print every request it receives (one line each) and answer 200: a FORWARD_URL target.
    Sink {
        /// Where to listen.
        #[arg(long, env = "SINK_LISTEN_ADDR", default_value = "0.0.0.0:8001")]
        listen: SocketAddr,
        /// Each answer waits this long, in milliseconds (a slow downstream).
        #[arg(long, env = "SINK_DELAY_MS", default_value_t = 0)]
        delay_ms: u64,
    },
}

#[derive(clap::Args, Clone)]
struct ApiArgs {
    /// Where the API listens.
    #[arg(long, env = "SIM_LISTEN_ADDR", default_value = "0.0.0.0:8000")]
    listen: SocketAddr,
    /// The API key: API calls must carry it (x-meeting-baas-api-key), v1 webhooks are sent with
    /// it. Unset: any key is taken and v1 webhooks carry none.
    #[arg(long, env = "MEETING_BAAS_API_KEY", hide_env_values = true)]
    api_key: Option<String>,
    /// The ingress's webhook URL (http://host:port/webhooks/meeting-baas). Unset: no webhook is
    /// sent (the API alone, for `processor reconcile` to find the drift).
    #[arg(long, env = "SIM_WEBHOOK_URL")]
    webhook_url: Option<String>,
    /// The whsec_ secret v2 webhooks are signed with (the ingress's WEBHOOK_SECRETS holds it).
    #[arg(long, env = "SIM_WEBHOOK_SECRET", hide_env_values = true)]
    webhook_secret: Option<String>,
    /// v2 calendars connected at the start.
    #[arg(long, env = "SIM_V2_CALENDARS", default_value_t = 2)]
    v2_calendars: usize,
    /// v1 calendars at the start.
    #[arg(long, env = "SIM_V1_CALENDARS", default_value_t = 1)]
    v1_calendars: usize,
    /// One more v2 calendar connects every this many seconds (0: never), up to 10 calendars.
    #[arg(long, env = "SIM_CALENDAR_EVERY_SECS", default_value_t = 300)]
    calendar_every_secs: u64,
    /// A new meeting every this many seconds, on the calendars in turn (0: none).
    #[arg(long, env = "SIM_MEETING_EVERY_SECS", default_value_t = 15)]
    meeting_every_secs: u64,
    /// A meeting starts this many seconds after it is created.
    #[arg(long, env = "SIM_MEETING_LEAD_SECS", default_value_t = 45)]
    meeting_lead_secs: u64,
    /// A meeting lasts this many seconds; its bot ends, and its result is sent, at its end.
    #[arg(long, env = "SIM_MEETING_LENGTH_SECS", default_value_t = 30)]
    meeting_length_secs: u64,
    /// The share of meetings cancelled before they start (0 to 1).
    #[arg(long, env = "SIM_CANCEL_SHARE", default_value_t = 0.2, value_parser = share)]
    cancel_share: f64,
    /// The share of bots that end failed (bot.failed / failed) rather than completed.
    #[arg(long, env = "SIM_FAIL_SHARE", default_value_t = 0.0, value_parser = share)]
    fail_share: f64,
    /// Misbehave: the API answers 503 to everything, starting this many seconds after the start…
    #[arg(long, env = "SIM_OUTAGE_AFTER_SECS", requires = "outage_for_secs")]
    outage_after_secs: Option<u64>,
    /// …for this many seconds.
    #[arg(long, env = "SIM_OUTAGE_FOR_SECS", requires = "outage_after_secs")]
    outage_for_secs: Option<u64>,
    /// Misbehave: the share of API calls answered 429 with Retry-After: 1 (0 to 1).
    #[arg(long, env = "SIM_RATE_LIMIT_SHARE", default_value_t = 0.0, value_parser = share)]
    rate_limit_share: f64,
    /// Misbehave: the share of webhooks never sent (0 to 1): the reconciler's work.
    #[arg(long, env = "SIM_DROP_WEBHOOKS_SHARE", default_value_t = 0.0, value_parser = share)]
    drop_webhooks_share: f64,
}

fn share(s: &str) -> Result<f64, String> {
    s.parse::<f64>().ok().filter(|v| (0.0..=1.0).contains(v)).ok_or_else(|| format!("{s:?} is not a share from 0 to 1"))
}

fn secs(n: u64) -> Option<Duration> {
    (n > 0).then(|| Duration::from_secs(n))
}

#[tokio::main]
async fn main() {
    // A usage error exits 64 (EX_USAGE) with clap's message, as the services' configuration
    // errors do; --help and --version print and exit 0.
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) if e.use_stderr() => {
            let _ = e.print();
            std::process::exit(64);
        }
        Err(e) => {
            let _ = e.print();
            std::process::exit(0);
        }
    };
    // Listening for SIGTERM/SIGINT from here on, before anything is bound or sent: a signal
    // that comes while the simulator starts is then a clean stop, not the default action.
    let stop = shared::shutdown::signal();
    let code = match cli.command {
        Some(Command::Sink { listen, delay_ms }) => sink(listen, Duration::from_millis(delay_ms), stop).await,
        Some(Command::Api(args)) => api(args, stop).await,
        None => api(cli.api, stop).await,
    };
    std::process::exit(code);
}

/// Binds `addr`, or says why not in one line (exit 64).
async fn bind(what: &str, addr: SocketAddr) -> Result<FakeApi, i32> {
    FakeApi::bind(addr).await.map_err(|e| {
        eprintln!("simulator: cannot listen on {addr} for the {what}: {e}");
        64
    })
}

async fn api(args: ApiArgs, stop: impl Future<Output = ()>) -> i32 {
    if let Some(url) = &args.webhook_url {
        if reqwest::Url::parse(url).is_err() {
            eprintln!("simulator: --webhook-url is not a URL");
            return 64;
        }
    }
    if let Some(secret) = &args.webhook_secret {
        if simulator::webhooks::sign(secret, "x", 0, b"").is_none() {
            eprintln!("simulator: --webhook-secret is not a whsec_ secret (whsec_ and base64)");
            return 64;
        }
    }
    let server = match bind("API", args.listen).await {
        Ok(s) => s,
        Err(code) => return code,
    };
    let sim = Simulator::new(args.api_key.clone(), args.webhook_url.clone(), args.webhook_secret.clone());
    {
        let mut account = sim.world.lock();
        account.misbehaviour.rate_limit_share = args.rate_limit_share;
        account.misbehaviour.drop_webhooks_share = args.drop_webhooks_share;
    }
    sim.install(&server);
    let plan = Plan {
        v2_calendars: args.v2_calendars,
        v1_calendars: args.v1_calendars,
        calendar_every: secs(args.calendar_every_secs),
        max_calendars: 10,
        meeting_every: secs(args.meeting_every_secs),
        lead: Duration::from_secs(args.meeting_lead_secs),
        length: Duration::from_secs(args.meeting_length_secs.max(1)),
        cancel_share: args.cancel_share,
        outage: args
            .outage_after_secs
            .zip(args.outage_for_secs)
            .map(|(a, f)| (Duration::from_secs(a), Duration::from_secs(f))),
        fail_share: args.fail_share,
    };
    println!(
        "simulator: Meeting BaaS API on http://{} (key {}), webhooks to {}",
        server.addr,
        if args.api_key.is_some() { "required" } else { "not checked" },
        args.webhook_url.as_deref().map_or("nowhere (no --webhook-url)".into(), simulator::webhooks::redacted)
    );
    if args.webhook_url.is_some() && args.webhook_secret.is_none() && args.v2_calendars > 0 {
        eprintln!(
            "simulator: no --webhook-secret: v2 webhooks go unsigned (the ingress refuses them unless ALLOW_UNSIGNED)"
        );
    }
    let timeline = tokio::spawn(timeline::run(sim.clone(), plan));
    stop.await;
    timeline.abort();
    0
}

async fn sink(listen: SocketAddr, delay: Duration, stop: impl Future<Output = ()>) -> i32 {
    let server = match bind("sink", listen).await {
        Ok(s) => s,
        Err(code) => return code,
    };
    server.fallback(Arc::new(move |call| {
        let event = call.header("x-hookstream-event").unwrap_or("-");
        let id = call.header("x-hookstream-id").unwrap_or("-");
        let text = String::from_utf8_lossy(&call.body).replace('\n', " ");
        let mut body: String = text.chars().take(240).collect();
        if body.len() < text.len() {
            body.push('…');
        }
        println!("sink: {} {} event={event} id={id} {body}", call.method, call.path);
        Some(Reply::value(200, &serde_json::json!({"received": true})).delayed(delay))
    }));
    println!("sink: listening on http://{}; every request is printed here", server.addr);
    stop.await;
    0
}
