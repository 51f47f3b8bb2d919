//! `loadgen`: sends webhooks to a hookstream ingress and reports throughput and latency.
//!
//! Closed loop by default (`-c` connections, each sending its next request when the previous
//! answer arrives); with `--rate` an open loop at a fixed rate, latency measured from each
//! request's *intended* send time, so a stalled server is not hidden (no coordinated omission).
//! With `--drain` it then waits until the consumer group has acked everything and reports the
//! end-to-end throughput; with `--sink` it also serves as the processors' `FORWARD_URL` and
//! reports the end-to-end latency from each entry's stream id time to its forward.

use base64::engine::general_purpose::STANDARD as BASE64;
use base64::Engine;
use bytes::Bytes;
use clap::{Parser, ValueEnum};
use hdrhistogram::Histogram;
use hmac::{Hmac, Mac};
use http_body_util::{BodyExt, Full};
use hyper::client::conn::http1;
use hyper_util::rt::TokioIo;
use serde_json::json;
use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;
use std::process::ExitCode;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};
use tokio::net::TcpStream;

#[derive(Debug, Clone, Copy, ValueEnum)]
enum Auth {
    /// `x-meeting-baas-api-key` (API v1).
    V1,
    /// Standard Webhooks signature (API v2).
    V2,
    /// Alternate.
    Mixed,
}

#[derive(Debug, Clone, Parser)]
#[command(name = "loadgen", about = "Load generator for the hookstream ingress")]
struct Args {
    /// The ingress's base URL.
    #[arg(long, default_value = "http://127.0.0.1:8080")]
    url: String,
    /// Requests to send.
    #[arg(short = 'n', long, default_value_t = 10_000)]
    requests: usize,
    /// Stop sending after this many seconds, even if fewer requests were sent.
    #[arg(long)]
    duration: Option<f64>,
    /// Keep-alive connections (closed loop: requests in flight).
    #[arg(short = 'c', long, default_value_t = 50)]
    connections: usize,
    /// Fixed rate in requests per second (open loop) instead of as fast as possible.
    #[arg(long)]
    rate: Option<f64>,
    /// Share of requests that are copies of an earlier one (0 to 1).
    #[arg(long, default_value_t = 0.0)]
    duplicates: f64,
    /// Approximate body size in bytes.
    #[arg(long, default_value_t = 512)]
    size: usize,
    /// How requests authenticate.
    #[arg(long, value_enum, default_value = "v1")]
    auth: Auth,
    /// The ingress's MEETING_BAAS_API_KEY, for --auth v1/mixed.
    #[arg(long, default_value = "bench-key")]
    api_key: String,
    /// Standard Webhooks secret for --auth v2/mixed.
    #[arg(long, default_value = "whsec_C2FVsBQIhrscChlQIMV+b5sSYspob7oD")]
    secret: String,
    /// The event name in the bodies (bot.* events are forwarded, or acked without effect).
    #[arg(long, default_value = "bot.completed")]
    event: String,
    /// Prefix of the generated ids (defaults to the current time, so runs never collide).
    #[arg(long)]
    run_id: Option<String>,
    /// After sending, wait until the consumer group has acked everything.
    #[arg(long)]
    drain: bool,
    /// The Redis of `--drain` and of `--floor-server`.
    #[arg(long, default_value = "redis://127.0.0.1:6379")]
    redis_url: String,
    #[arg(long, default_value = "hookstream")]
    namespace: String,
    #[arg(long, default_value = "processors")]
    group: String,
    /// Serve a forward sink here (point the processors' FORWARD_URL at it) to measure the
    /// end-to-end latency.
    #[arg(long)]
    sink: Option<SocketAddr>,
    /// Print the summary as one JSON object.
    #[arg(long)]
    json: bool,
    /// Send nothing: serve a "null" server here until killed, which answers every request at
    /// once with a 200 and a small JSON body, like the ingress's but with no work behind it.
    /// Loadgen against it measures what the HTTP hop alone costs (the floor under any ingress).
    #[arg(long, value_name = "ADDR")]
    null_server: Option<SocketAddr>,
    /// Send nothing: serve the ingress's floor here until killed — the same stack (hyper http1,
    /// the multi-threaded runtime), the body collected, one EVALSHA of the dedup+append script
    /// through the redis crate's connection manager on `--redis-url`, a JSON answer, and nothing
    /// else (no authentication, parsing, logging or metrics). What no ingress on this stack can
    /// go below, measured in the same run.
    #[arg(long, value_name = "ADDR")]
    floor_server: Option<SocketAddr>,
}

fn now_ms() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_millis() as u64).unwrap_or(0)
}

/// A cheap deterministic hash, to pick duplicates and their originals.
fn mix(i: u64) -> u64 {
    let mut x = i.wrapping_add(0x9e37_79b9_7f4a_7c15);
    x = (x ^ (x >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    x ^ (x >> 31)
}

struct Plan {
    run: String,
    pad: String,
    args: Args,
    host: String,
}

impl Plan {
    /// Which event request `i` carries: itself, or (a duplicate) an earlier one.
    fn event_of(&self, i: usize) -> usize {
        if i > 0 && (mix(i as u64) % 10_000) < (self.args.duplicates * 10_000.0) as u64 {
            (mix(i as u64 ^ 0xabcdef) % i as u64) as usize
        } else {
            i
        }
    }

    /// Request `i`, and (only with `--sink`, which needs it) the dedup id the ingress will use.
    fn request(&self, i: usize) -> (http::Request<Full<Bytes>>, Option<String>) {
        let k = self.event_of(i);
        let body =
            format!(r#"{{"event":"{}","data":{{"bot_id":"{}-{k}","pad":"{}"}}}}"#, self.args.event, self.run, self.pad);
        let signed = match self.args.auth {
            Auth::V1 => false,
            Auth::V2 => true,
            Auth::Mixed => k % 2 == 1,
        };
        let mut req = http::Request::post("/webhooks/meeting-baas")
            .header("host", &self.host)
            .header("content-type", "application/json");
        let msg_id = format!("msg_{}_{k}", self.run);
        if signed {
            let ts = (now_ms() / 1000) as i64;
            req = req
                .header("webhook-id", &msg_id)
                .header("webhook-timestamp", ts.to_string())
                .header("webhook-signature", sign(&self.args.secret, &msg_id, ts, body.as_bytes()));
        } else {
            req = req.header("x-meeting-baas-api-key", &self.args.api_key);
        }
        let dedup = match (self.args.sink.is_some(), signed) {
            (false, _) => None,
            (true, true) => Some(msg_id),
            (true, false) => Some(format!("sha256:{}", sha_hex(body.as_bytes()))),
        };
        (req.body(Full::new(Bytes::from(body))).unwrap_or_default(), dedup)
    }
}

fn sha_hex(bytes: &[u8]) -> String {
    use sha2::Digest;
    hex::encode(sha2::Sha256::digest(bytes))
}

/// The ingress's 200 answer; only what loadgen counts.
#[derive(serde::Deserialize)]
struct Answer<'a> {
    #[serde(borrow)]
    status: std::borrow::Cow<'a, str>,
    #[serde(borrow, default)]
    id: std::borrow::Cow<'a, str>,
}

fn sign(secret: &str, id: &str, ts: i64, body: &[u8]) -> String {
    let key = BASE64.decode(secret.trim_start_matches("whsec_")).unwrap_or_default();
    let Ok(mut mac) = Hmac::<sha2::Sha256>::new_from_slice(&key) else { return String::new() };
    mac.update(format!("{id}.{ts}.").as_bytes());
    mac.update(body);
    format!("v1,{}", BASE64.encode(mac.finalize().into_bytes()))
}

#[derive(Default)]
struct WorkerReport {
    status: BTreeMap<u16, u64>,
    answers: BTreeMap<String, u64>,
    errors: u64,
    /// dedup id → stream id of accepted events (only with --sink).
    accepted_ids: Vec<(String, String)>,
}

fn new_histogram() -> Histogram<u64> {
    // 1 µs to 60 s, 3 significant digits.
    Histogram::new_with_bounds(1, 60_000_000, 3)
        .unwrap_or_else(|_| Histogram::new(3).unwrap_or_else(|_| unreachable_hist()))
}

fn unreachable_hist() -> Histogram<u64> {
    // Histogram::new(3) only fails for sigfig > 5; kept total so nothing here can panic.
    Histogram::new_with_max(1_000, 1).unwrap_or_else(|_| std::process::exit(2))
}

async fn connect(addr: &str) -> Option<http1::SendRequest<Full<Bytes>>> {
    let stream = TcpStream::connect(addr).await.ok()?;
    let _ = stream.set_nodelay(true);
    let (sender, conn) = http1::handshake(TokioIo::new(stream)).await.ok()?;
    tokio::spawn(async move {
        let _ = conn.await;
    });
    Some(sender)
}

/// Where a worker gets its next request number: a shared counter (closed loop), or the pacer
/// thread (open loop), which hands out each number at its scheduled time.
enum Source {
    Counter(Arc<AtomicUsize>),
    Paced(tokio::sync::mpsc::UnboundedReceiver<usize>),
}

/// The open loop's clock: a plain thread sleeping until each request's scheduled time (finer
/// than the async runtime's millisecond timer, whose wake-ups would release requests in bursts),
/// handing request numbers round-robin to the workers. It sleeps at least [`PACER_MIN_SLEEP`]
/// and then releases every request that has come due: at high rates that is a few requests per
/// wake-up instead of one wake-up (of this thread and of the runtime) per request, which would
/// take CPU from what is being measured. Latency counts from each scheduled time, so the wait
/// for the batch is included.
const PACER_MIN_SLEEP: Duration = Duration::from_micros(250);

fn pacer(
    rate: f64,
    requests: usize,
    start: Instant,
    deadline: Option<Instant>,
    workers: Vec<tokio::sync::mpsc::UnboundedSender<usize>>,
) {
    std::thread::spawn(move || {
        for i in 0..requests {
            let at = start + Duration::from_secs_f64(i as f64 / rate);
            if deadline.is_some_and(|d| at >= d) {
                break;
            }
            let now = Instant::now();
            if at > now {
                std::thread::sleep((at - now).max(PACER_MIN_SLEEP));
            }
            if workers[i % workers.len()].send(i).is_err() {
                break;
            }
        }
    });
}

async fn worker(
    plan: Arc<Plan>,
    mut source: Source,
    start: Instant,
    deadline: Option<Instant>,
) -> (WorkerReport, Histogram<u64>) {
    let mut report = WorkerReport::default();
    let mut hist = new_histogram();
    let addr = plan.host.clone();
    let mut sender: Option<http1::SendRequest<Full<Bytes>>> = None;
    loop {
        let (i, intended) = match &mut source {
            Source::Counter(next) => (next.fetch_add(1, Ordering::Relaxed), Instant::now()),
            Source::Paced(rx) => match rx.recv().await {
                // Latency counts from the scheduled time: a late answer is not hidden by a late send.
                Some(i) => (i, start + Duration::from_secs_f64(i as f64 / plan.args.rate.unwrap_or(1.0))),
                None => break,
            },
        };
        if i >= plan.args.requests || deadline.is_some_and(|d| Instant::now() >= d) {
            break;
        }
        if sender.as_ref().is_none_or(|s| s.is_closed()) {
            sender = connect(&addr).await;
        }
        let Some(s) = sender.as_mut() else {
            report.errors += 1;
            tokio::time::sleep(Duration::from_millis(10)).await;
            continue;
        };
        if s.ready().await.is_err() {
            report.errors += 1;
            sender = None;
            continue;
        }
        let (req, dedup) = plan.request(i);
        match s.send_request(req).await {
            Ok(resp) => {
                let status = resp.status().as_u16();
                let body = resp.into_body().collect().await.map(|b| b.to_bytes()).unwrap_or_default();
                let _ = hist.record(intended.elapsed().as_micros().max(1) as u64);
                *report.status.entry(status).or_default() += 1;
                if status == 200 {
                    let answer = serde_json::from_slice::<Answer>(&body).ok();
                    let name = answer.as_ref().map_or("?", |a| a.status.as_ref());
                    if let (Some(answer), Some(dedup)) = (answer.as_ref().filter(|a| a.status == "accepted"), dedup) {
                        report.accepted_ids.push((dedup, answer.id.to_string()));
                    }
                    match report.answers.get_mut(name) {
                        Some(n) => *n += 1,
                        None => {
                            report.answers.insert(name.to_string(), 1);
                        }
                    }
                }
            }
            Err(_) => {
                report.errors += 1;
                sender = None;
            }
        }
    }
    (report, hist)
}

type SinkLog = Arc<Mutex<Vec<(String, u64)>>>;

/// A forward target that records (x-hookstream-id, arrival ms) and answers 200; without a log,
/// the null server, which answers like the ingress (a small JSON body) and records nothing.
async fn run_sink(addr: SocketAddr, log: Option<SinkLog>) -> std::io::Result<()> {
    let listener = tokio::net::TcpListener::bind(addr).await?;
    tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else { continue };
            let log = log.clone();
            tokio::spawn(async move {
                let service = hyper::service::service_fn(move |req: hyper::Request<hyper::body::Incoming>| {
                    let log = log.clone();
                    async move {
                        let at = now_ms();
                        let id = req.headers().get("x-hookstream-id").and_then(|v| v.to_str().ok());
                        let path = req.uri().path();
                        let body = match (&log, id) {
                            // A stand-in Meeting BaaS v1 for `scripts/bench-drain`: every calendar
                            // event is upcoming, with a meeting URL and no bot (so it gets one),
                            // except those whose uuid starts with `read-` (no URL: read only).
                            (None, _)
                                if path.starts_with("/calendar_events/") && req.method() == hyper::Method::GET =>
                            {
                                if path.starts_with("/calendar_events/read-") {
                                    Bytes::from_static(
                                        br#"{"meeting_url":"","end_time":"2999-01-01T00:00:00Z","bot_param":null}"#,
                                    )
                                } else {
                                    Bytes::from_static(br#"{"meeting_url":"https://meet.example.com/x","end_time":"2999-01-01T00:00:00Z","bot_param":null}"#)
                                }
                            }
                            (None, _) if path.starts_with("/calendar_events/") => Bytes::from_static(b"[]"),
                            (None, _) => Bytes::from_static(br#"{"status":"accepted","id":"0-0"}"#),
                            (Some(log), Some(id)) => {
                                if let Ok(mut log) = log.lock() {
                                    log.push((id.to_string(), at));
                                }
                                Bytes::new()
                            }
                            (Some(_), None) => Bytes::new(),
                        };
                        let _ = req.into_body().collect().await;
                        Ok::<_, std::convert::Infallible>(hyper::Response::new(Full::new(body)))
                    }
                });
                let _ =
                    hyper::server::conn::http1::Builder::new().serve_connection(TokioIo::new(stream), service).await;
            });
        }
    });
    Ok(())
}

/// Waits until the group has no lag and nothing pending; when it got there.
async fn drain(args: &Args) -> Result<Instant, String> {
    let client = redis::Client::open(args.redis_url.as_str()).map_err(|e| e.to_string())?;
    let mut con = client.get_multiplexed_async_connection().await.map_err(|e| e.to_string())?;
    let key = format!("{{{}}}:events", args.namespace);
    let deadline = Instant::now() + Duration::from_secs(600);
    loop {
        let groups: redis::RedisResult<redis::streams::StreamInfoGroupsReply> =
            redis::cmd("XINFO").arg("GROUPS").arg(&key).query_async(&mut con).await;
        if let Ok(groups) = groups {
            if let Some(g) = groups.groups.iter().find(|g| g.name == args.group) {
                if g.pending == 0 && g.lag == Some(0) {
                    return Ok(Instant::now());
                }
            }
        }
        if Instant::now() > deadline {
            return Err("the group did not drain within 600 s".into());
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

fn percentiles(h: &Histogram<u64>, unit: f64) -> serde_json::Value {
    if h.is_empty() {
        return json!(null);
    }
    json!({
        "p50": h.value_at_quantile(0.5) as f64 / unit,
        "p90": h.value_at_quantile(0.9) as f64 / unit,
        "p99": h.value_at_quantile(0.99) as f64 / unit,
        "p99_9": h.value_at_quantile(0.999) as f64 / unit,
        "max": h.max() as f64 / unit,
    })
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> ExitCode {
    let args = Args::parse();
    let Some(host) = args.url.strip_prefix("http://").map(|h| h.trim_end_matches('/').to_string()) else {
        eprintln!("loadgen: --url must be http://host:port");
        return ExitCode::from(64);
    };
    if args.connections == 0 || !(0.0..=1.0).contains(&args.duplicates) || args.rate.is_some_and(|r| r <= 0.0) {
        eprintln!("loadgen: --connections must be > 0, --duplicates in 0..=1, --rate > 0");
        return ExitCode::from(64);
    }
    if let Some(addr) = args.floor_server {
        let url = args.redis_url.clone();
        // The ingress's runtime (multi-threaded), not loadgen's own single thread.
        let served = std::thread::spawn(move || {
            let runtime = tokio::runtime::Runtime::new().map_err(|e| e.to_string())?;
            runtime.block_on(floor::serve(addr, &url))
        });
        if let Ok(Err(e)) = served.join() {
            eprintln!("loadgen: cannot serve the floor on {addr}: {e}");
        }
        return ExitCode::FAILURE;
    }
    if let Some(addr) = args.null_server {
        if let Err(e) = run_sink(addr, None).await {
            eprintln!("loadgen: cannot serve on {addr}: {e}");
            return ExitCode::FAILURE;
        }
        std::future::pending::<()>().await;
    }
    let sink_log: SinkLog = Arc::default();
    if let Some(addr) = args.sink {
        if let Err(e) = run_sink(addr, Some(sink_log.clone())).await {
            eprintln!("loadgen: cannot serve the sink on {addr}: {e}");
            return ExitCode::FAILURE;
        }
    }
    let run = args.run_id.clone().unwrap_or_else(|| format!("r{}", now_ms()));
    let pad = "x".repeat(args.size.saturating_sub(80));
    let plan = Arc::new(Plan { run, pad, host, args: args.clone() });
    let next = Arc::new(AtomicUsize::new(0));
    let start = Instant::now();
    let start_ms = now_ms();
    let deadline = args.duration.map(|d| start + Duration::from_secs_f64(d));
    let sources: Vec<Source> = match args.rate {
        None => (0..args.connections).map(|_| Source::Counter(next.clone())).collect(),
        Some(rate) => {
            let (txs, rxs): (Vec<_>, Vec<_>) =
                (0..args.connections).map(|_| tokio::sync::mpsc::unbounded_channel::<usize>()).unzip();
            pacer(rate, args.requests, start, deadline, txs);
            rxs.into_iter().map(Source::Paced).collect()
        }
    };
    let tasks: Vec<_> =
        sources.into_iter().map(|source| tokio::spawn(worker(plan.clone(), source, start, deadline))).collect();
    let mut total = WorkerReport::default();
    let mut hist = new_histogram();
    for t in tasks {
        let Ok((r, h)) = t.await else { continue };
        for (k, v) in r.status {
            *total.status.entry(k).or_default() += v;
        }
        for (k, v) in r.answers {
            *total.answers.entry(k).or_default() += v;
        }
        total.errors += r.errors;
        total.accepted_ids.extend(r.accepted_ids);
        let _ = hist.add(&h);
    }
    let elapsed = start.elapsed().as_secs_f64();
    let sent: u64 = total.status.values().sum();
    let accepted = total.answers.get("accepted").copied().unwrap_or(0);
    let mut summary = json!({
        "requests": sent,
        "seconds": elapsed,
        "requests_per_sec": sent as f64 / elapsed,
        "accepted": accepted,
        "accepted_per_sec": accepted as f64 / elapsed,
        "answers": total.answers,
        "status": total.status.iter().map(|(k, v)| (k.to_string(), *v)).collect::<HashMap<_, _>>(),
        "errors": total.errors,
        "latency_ms": percentiles(&hist, 1000.0),
    });
    if args.drain {
        match drain(&args).await {
            Ok(done) => {
                let secs = done.duration_since(start).as_secs_f64();
                summary["drain"] = json!({"seconds": secs, "events_per_sec": accepted as f64 / secs});
            }
            Err(e) => {
                eprintln!("loadgen: {e}");
                return ExitCode::FAILURE;
            }
        }
        if args.sink.is_some() {
            let ids: HashMap<String, u64> = total
                .accepted_ids
                .iter()
                .filter_map(|(d, id)| Some((d.clone(), id.split('-').next()?.parse().ok()?)))
                .collect();
            let mut e2e = new_histogram();
            if let Ok(log) = sink_log.lock() {
                for (dedup, at) in log.iter() {
                    if let Some(id_ms) = ids.get(dedup) {
                        let _ = e2e.record(at.saturating_sub(*id_ms).max(1) * 1000);
                    }
                }
            }
            summary["end_to_end_latency_ms"] = percentiles(&e2e, 1000.0);
        }
    }
    let _ = start_ms;
    if args.json {
        println!("{summary}");
    } else {
        println!("sent {sent} requests in {elapsed:.2} s: {:.0} req/s", sent as f64 / elapsed);
        println!("answers: {}   status: {}   errors: {}", summary["answers"], summary["status"], total.errors);
        println!("latency ms: {}", summary["latency_ms"]);
        if let Some(d) = summary.get("drain") {
            println!("drain: {d}");
        }
        if let Some(l) = summary.get("end_to_end_latency_ms") {
            println!("end-to-end latency ms (entry id → forward): {l}");
        }
    }
    if sent == 0 {
        eprintln!("loadgen: nothing was sent");
        return ExitCode::FAILURE;
    }
    ExitCode::SUCCESS
}

/// The floor server (`--floor-server`): what any ingress on this stack must at least do.
mod floor {
    use bytes::Bytes;
    use http_body_util::{BodyExt, Full};
    use sha2::{Digest, Sha256};
    use std::net::SocketAddr;

    /// Serves until killed; `Err` when it cannot start.
    pub async fn serve(addr: SocketAddr, redis_url: &str) -> Result<(), String> {
        let client = redis::Client::open(redis_url).map_err(|e| e.to_string())?;
        let redis = redis::aio::ConnectionManager::new(client).await.map_err(|e| e.to_string())?;
        let script = std::sync::Arc::new(redis::Script::new(shared::append::SCRIPT));
        let listener = tokio::net::TcpListener::bind(addr).await.map_err(|e| e.to_string())?;
        loop {
            let Ok((stream, _)) = listener.accept().await else { continue };
            let (redis, script) = (redis.clone(), script.clone());
            tokio::spawn(async move {
                let service = hyper::service::service_fn(move |req: hyper::Request<hyper::body::Incoming>| {
                    let (mut redis, script) = (redis.clone(), script.clone());
                    async move {
                        let body = req.into_body().collect().await.map(|b| b.to_bytes()).unwrap_or_default();
                        let key = format!("{{floor}}:dedup:{}", hex::encode(Sha256::digest(&body)));
                        let answer: redis::RedisResult<(i64, String)> = script
                            .key(key)
                            .key("{floor}:events")
                            .arg(86_400)
                            .arg("event")
                            .arg("bot.completed")
                            .arg("source")
                            .arg("meeting-baas")
                            .arg("dedup_id")
                            .arg("floor")
                            .arg("payload")
                            .arg(body.as_ref())
                            .arg("received_at")
                            .arg("2026-12-02T00:00:00.000Z")
                            .arg("request_id")
                            .arg("floor")
                            .invoke_async(&mut redis)
                            .await;
                        let (status, text) = match answer {
                            Ok((1, id)) => (200, format!(r#"{{"status":"accepted","id":"{id}"}}"#)),
                            Ok((_, id)) => (200, format!(r#"{{"status":"duplicate","id":"{id}"}}"#)),
                            Err(_) => (503, r#"{"error":"unavailable"}"#.to_string()),
                        };
                        let mut response = hyper::Response::new(Full::new(Bytes::from(text)));
                        *response.status_mut() = hyper::StatusCode::from_u16(status).unwrap_or_default();
                        response.headers_mut().insert(
                            hyper::header::CONTENT_TYPE,
                            hyper::header::HeaderValue::from_static("application/json"),
                        );
                        Ok::<_, std::convert::Infallible>(response)
                    }
                });
                let io = hyper_util::rt::TokioIo::new(stream);
                let _ = hyper::server::conn::http1::Builder::new().serve_connection(io, service).await;
            });
        }
    }
}
