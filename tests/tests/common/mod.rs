//! Helpers for the ingress tests: an in-process ingress on port 0, signing, raw HTTP.
#![allow(dead_code)]

use ingress::{Ingress, IngressConfig};
use shared::config::Reader;
use std::collections::HashMap;
use std::net::SocketAddr;
use std::time::{SystemTime, UNIX_EPOCH};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

pub const API_KEY: &str = "test-api-key";
pub const CALLBACK_SECRET: &str = "test-callback-secret";
/// The published Standard Webhooks test secret.
pub const SECRET: &str = "whsec_C2FVsBQIhrscChlQIMV+b5sSYspob7oD";
/// A second secret, for rotation.
pub const OLD_SECRET: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";
pub const NS: &str = "hookstream";
pub const EVENTS: &str = "{hookstream}:events";

/// An ingress served in-process.
pub struct TestIngress {
    pub addr: SocketAddr,
    pub base: String,
    shutdown: Option<oneshot::Sender<()>>,
    handle: JoinHandle<bool>,
}

/// The configuration every test starts from: all three credentials, both secrets.
pub fn default_vars(redis_url: &str) -> HashMap<String, String> {
    [
        ("REDIS_URL", redis_url),
        ("LISTEN_ADDR", "127.0.0.1:0"),
        ("MEETING_BAAS_API_KEY", API_KEY),
        ("CALLBACK_SECRET", CALLBACK_SECRET),
        ("WEBHOOK_SECRETS", &format!("{SECRET},{OLD_SECRET}")),
        ("SHUTDOWN_GRACE_MS", "10000"),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v.to_string()))
    .collect()
}

pub async fn start_ingress(redis_url: &str) -> TestIngress {
    start_with(default_vars(redis_url), |_| {}).await
}

/// Starts an ingress from `vars`, after `adjust` has changed the parsed config.
pub async fn start_with(vars: HashMap<String, String>, adjust: impl FnOnce(&mut IngressConfig)) -> TestIngress {
    start_traced(vars, adjust, None).await
}

/// [`start_with`], making spans with `traces` (tracing on).
pub async fn start_traced(
    vars: HashMap<String, String>,
    adjust: impl FnOnce(&mut IngressConfig),
    traces: Option<shared::otel::Traces>,
) -> TestIngress {
    let mut config = IngressConfig::read(&Reader::new(&vars)).expect("test config is valid");
    adjust(&mut config);
    let ingress = Ingress::build_traced(config, traces).await.expect("ingress builds");
    let addr = ingress.local_addr().expect("bound");
    let (tx, rx) = oneshot::channel::<()>();
    let handle = tokio::spawn(ingress.run_until(async move {
        let _ = rx.await;
    }));
    TestIngress { addr, base: format!("http://{addr}"), shutdown: Some(tx), handle }
}

impl TestIngress {
    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    pub fn webhook_url(&self) -> String {
        self.url("/webhooks/meeting-baas")
    }

    /// Signals shutdown without waiting.
    pub fn begin_shutdown(&mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
    }

    /// Signals shutdown and waits; `true` when every connection finished within the grace period.
    pub async fn stop(mut self) -> bool {
        self.begin_shutdown();
        self.handle.await.expect("ingress task")
    }

    pub async fn join(self) -> bool {
        self.handle.await.expect("ingress task")
    }
}

pub fn now() -> i64 {
    SystemTime::now().duration_since(UNIX_EPOCH).expect("clock").as_secs() as i64
}

pub fn client() -> reqwest::Client {
    reqwest::Client::new()
}

/// POSTs `body` as JSON with the v1 API-key header.
pub async fn post_v1(ingress: &TestIngress, body: &[u8]) -> reqwest::Response {
    client()
        .post(ingress.webhook_url())
        .header("content-type", "application/json")
        .header("x-meeting-baas-api-key", API_KEY)
        .body(body.to_vec())
        .send()
        .await
        .expect("request")
}

/// POSTs `body` signed with `secret` as message `msg_id` at `timestamp`, with `prefix` headers.
pub async fn post_signed(
    ingress: &TestIngress,
    prefix: &str,
    secret: &str,
    msg_id: &str,
    timestamp: i64,
    body: &[u8],
) -> reqwest::Response {
    let signature = ingress::auth::sign(secret, msg_id, timestamp, body).expect("sign");
    client()
        .post(ingress.webhook_url())
        .header("content-type", "application/json")
        .header(format!("{prefix}-id"), msg_id)
        .header(format!("{prefix}-timestamp"), timestamp.to_string())
        .header(format!("{prefix}-signature"), signature)
        .body(body.to_vec())
        .send()
        .await
        .expect("request")
}

/// Status and JSON body.
pub async fn answer(response: reqwest::Response) -> (u16, serde_json::Value) {
    let status = response.status().as_u16();
    let text = response.text().await.expect("body");
    let json = serde_json::from_str(&text).unwrap_or_else(|e| panic!("body is not JSON ({e}): {text}"));
    (status, json)
}

/// Asserts an error answer: status and `error` code, with a non-empty `message`.
pub async fn assert_error(response: reqwest::Response, status: u16, code: &str) -> serde_json::Value {
    assert!(response.headers().contains_key("x-request-id"), "x-request-id on every answer");
    let (got, body) = answer(response).await;
    assert_eq!((got, body["error"].as_str()), (status, Some(code)), "{body}");
    assert!(body["message"].as_str().is_some_and(|m| !m.is_empty()), "{body}");
    body
}

/// XLEN of the events stream.
pub fn xlen(redis: &hookstream_tests::RedisServer) -> u64 {
    redis::cmd("XLEN").arg(EVENTS).query(&mut redis.con()).expect("XLEN")
}

/// Number of keys in the database.
pub fn dbsize(redis: &hookstream_tests::RedisServer) -> u64 {
    redis::cmd("DBSIZE").query(&mut redis.con()).expect("DBSIZE")
}

/// The stream's entries as (id, field map).
pub fn entries(redis: &hookstream_tests::RedisServer) -> Vec<(String, HashMap<String, Vec<u8>>)> {
    let reply: redis::streams::StreamRangeReply =
        redis::cmd("XRANGE").arg(EVENTS).arg("-").arg("+").query(&mut redis.con()).expect("XRANGE");
    reply
        .ids
        .into_iter()
        .map(|e| {
            let fields =
                e.map.into_iter().map(|(k, v)| (k, redis::from_redis_value::<Vec<u8>>(v).expect("bytes"))).collect();
            (e.id, fields)
        })
        .collect()
}

/// Sends raw bytes on a new connection and reads until the server closes it (or `limit` bytes).
pub async fn raw_exchange(addr: SocketAddr, request: &[u8]) -> String {
    let mut stream = TcpStream::connect(addr).await.expect("connect");
    stream.write_all(request).await.expect("write");
    let mut out = Vec::new();
    let _ = stream.read_to_end(&mut out).await;
    String::from_utf8_lossy(&out).into_owned()
}

// ---------------------------------------------------------------------------------------------
// Processor helpers.

pub const GROUP: &str = "processors";
pub const DEAD: &str = "{hookstream}:dead";

pub struct TestProcessor {
    pub consumer: String,
    pub metrics: SocketAddr,
    shutdown: Option<oneshot::Sender<()>>,
    handle: JoinHandle<bool>,
}

impl TestProcessor {
    pub fn begin_shutdown(&mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
    }

    /// Signals shutdown and waits; `true` when nothing had to be aborted.
    pub async fn stop(mut self) -> bool {
        self.begin_shutdown();
        self.handle.await.expect("processor task")
    }

    pub async fn join(self) -> bool {
        self.handle.await.expect("processor task")
    }
}

static CONSUMERS: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);

/// Fast settings for tests: short blocks and retries; everything else at its default.
pub fn processor_vars(redis_url: &str, api_url: &str) -> HashMap<String, String> {
    let n = CONSUMERS.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
    [
        ("REDIS_URL", redis_url.to_string()),
        ("METRICS_ADDR", "127.0.0.1:0".into()),
        ("MEETING_BAAS_API_URL", api_url.to_string()),
        ("MEETING_BAAS_API_KEY", API_KEY.into()),
        ("CONSUMER_NAME", format!("test-consumer-{n}")),
        ("BLOCK_MS", "100".into()),
        ("RETRY_INITIAL_MS", "10".into()),
        ("RETRY_MAX_INTERVAL_MS", "50".into()),
        ("RETRY_MAX_ELAPSED_MS", "5000".into()),
        ("HANDLER_TIMEOUT_MS", "5000".into()),
        ("SHUTDOWN_GRACE_MS", "5000".into()),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v))
    .collect()
}

pub async fn start_processor(vars: HashMap<String, String>) -> TestProcessor {
    start_processor_with(vars, |_| {}).await
}

pub async fn start_processor_with(
    vars: HashMap<String, String>,
    adjust: impl FnOnce(&mut processor::ProcessorConfig),
) -> TestProcessor {
    start_processor_traced(vars, adjust, None).await
}

/// [`start_processor_with`], making spans with `traces` (tracing on).
pub async fn start_processor_traced(
    vars: HashMap<String, String>,
    adjust: impl FnOnce(&mut processor::ProcessorConfig),
    traces: Option<shared::otel::Traces>,
) -> TestProcessor {
    // RUST_LOG=debug shows the processor's logs when a test fails.
    if std::env::var_os("RUST_LOG").is_some() {
        std::mem::forget(shared::telemetry::init_logging(shared::config::LogFormat::Text));
    }
    let mut config = processor::ProcessorConfig::read(&Reader::new(&vars)).expect("test config is valid");
    adjust(&mut config);
    let consumer = config.consumer.clone();
    let p = processor::Processor::build_traced(config, None, traces).await.expect("processor builds");
    let metrics = p.metrics_addr().expect("bound");
    let (tx, rx) = oneshot::channel::<()>();
    let handle = tokio::spawn(p.run_until(async move {
        let _ = rx.await;
    }));
    TestProcessor { consumer, metrics, shutdown: Some(tx), handle }
}

/// Appends an entry as the ingress would (same fields), with `dedup_id`.
pub fn add_event(redis: &hookstream_tests::RedisServer, event: &str, payload: &[u8], dedup_id: &str) -> String {
    redis::cmd("XADD")
        .arg(EVENTS)
        .arg("*")
        .arg("event")
        .arg(event)
        .arg("source")
        .arg("meeting-baas")
        .arg("dedup_id")
        .arg(dedup_id)
        .arg("payload")
        .arg(payload)
        .arg("received_at")
        .arg("2026-05-20T08:41:17.000Z")
        .arg("request_id")
        .arg("test-request")
        .query(&mut redis.con())
        .expect("XADD")
}

/// Appends a fixture under its file name as the dedup id.
pub fn add_fixture(redis: &hookstream_tests::RedisServer, name: &str) -> String {
    let json = hookstream_tests::fixture_json(name);
    let event = json["event"].as_str().expect("fixture has an event").to_string();
    add_event(redis, &event, &hookstream_tests::fixture(name), name)
}

/// The group's pending count and lag (entries not yet delivered).
pub fn group_state(redis: &hookstream_tests::RedisServer) -> Option<(u64, u64)> {
    let info: redis::streams::StreamInfoGroupsReply =
        redis::cmd("XINFO").arg("GROUPS").arg(EVENTS).query(&mut redis.con()).ok()?;
    let g = info.groups.into_iter().find(|g| g.name == GROUP)?;
    Some((g.pending as u64, g.lag.unwrap_or(u64::MAX as usize) as u64))
}

/// Waits until the group has delivered and acked everything.
pub async fn all_acked(redis: &hookstream_tests::RedisServer) {
    hookstream_tests::eventually("every entry acked", || async { (group_state(redis) == Some((0, 0))).then_some(()) })
        .await;
}

pub fn xlen_dead(redis: &hookstream_tests::RedisServer) -> u64 {
    redis::cmd("XLEN").arg(DEAD).query(&mut redis.con()).expect("XLEN")
}

/// The dead stream's entries as (id, field → text).
pub fn dead_entries(redis: &hookstream_tests::RedisServer) -> Vec<(String, HashMap<String, String>)> {
    let reply: redis::streams::StreamRangeReply =
        redis::cmd("XRANGE").arg(DEAD).arg("-").arg("+").query(&mut redis.con()).expect("XRANGE");
    reply
        .ids
        .into_iter()
        .map(|e| {
            let fields = e
                .map
                .into_iter()
                .map(|(k, v)| {
                    (k, String::from_utf8_lossy(&redis::from_redis_value::<Vec<u8>>(v).unwrap()).into_owned())
                })
                .collect();
            (e.id, fields)
        })
        .collect()
}

/// Waits until the dead stream holds `n` entries, and returns them.
pub async fn dead_after(redis: &hookstream_tests::RedisServer, n: u64) -> Vec<(String, HashMap<String, String>)> {
    hookstream_tests::eventually("dead-lettered", || async { (xlen_dead(redis) >= n).then_some(()) }).await;
    dead_entries(redis)
}

/// Adds `consumer` to the group with nothing pending (XGROUP CREATECONSUMER).
pub fn create_consumer(redis: &hookstream_tests::RedisServer, consumer: &str) {
    let _: i64 = redis::cmd("XGROUP")
        .arg("CREATECONSUMER")
        .arg(EVENTS)
        .arg(GROUP)
        .arg(consumer)
        .query(&mut redis.con())
        .unwrap();
}

/// A consumer that takes up to `count` new entries and never acks them (it "crashed").
pub fn ghost_read(redis: &hookstream_tests::RedisServer, consumer: &str, count: usize) -> usize {
    let reply: redis::streams::StreamReadReply = redis::cmd("XREADGROUP")
        .arg("GROUP")
        .arg(GROUP)
        .arg(consumer)
        .arg("COUNT")
        .arg(count)
        .arg("STREAMS")
        .arg(EVENTS)
        .arg(">")
        .query(&mut redis.con())
        .unwrap();
    reply.keys.iter().map(|k| k.ids.len()).sum()
}

/// Creates the consumer group at id 0 (MKSTREAM), as a processor would.
pub fn create_group(redis: &hookstream_tests::RedisServer) {
    let _: () = redis::cmd("XGROUP")
        .arg("CREATE")
        .arg(EVENTS)
        .arg(GROUP)
        .arg("0")
        .arg("MKSTREAM")
        .query(&mut redis.con())
        .unwrap();
}

// ---------------------------------------------------------------------------------------------
// Metrics.

/// The value of one sample in Prometheus text, e.g. `hookstream_processor_entries_total` with
/// labels `{outcome="acked"}`; 0 when the series is absent (a counter not yet incremented).
pub fn metric(text: &str, name: &str, labels: &str) -> f64 {
    let series = format!("{name}{labels}");
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .find_map(|l| {
            let (key, value) = l.rsplit_once(' ')?;
            (key == series).then(|| value.parse::<f64>().ok()).flatten()
        })
        .unwrap_or(0.0)
}

/// GETs a `/metrics` page.
pub async fn scrape(url: &str) -> String {
    reqwest::get(url).await.expect("scrape").text().await.expect("metrics text")
}

/// A self-healing connection to the test's Redis, as the processor makes them.
pub fn conn(redis: &hookstream_tests::RedisServer) -> shared::conn::Conn {
    let client = shared::conn::client(&redis.url()).expect("client");
    shared::conn::Conn::new(client, std::time::Duration::from_secs(5)).expect("conn")
}

/// Sends one signed webhook until it is accepted, as a real sender retries a 503 (while Redis
/// fails over: a cluster's primary, or a Sentinel's); the tries it took. Any answer but 200 and
/// 503 fails the test.
pub async fn deliver(client: &reqwest::Client, url: &str, msg_id: &str, body: &[u8]) -> u32 {
    let mut tries = 0;
    loop {
        tries += 1;
        let ts = now();
        let signature = ingress::auth::sign(SECRET, msg_id, ts, body).expect("sign");
        let sent = client
            .post(url)
            .header("content-type", "application/json")
            .header("svix-id", msg_id)
            .header("svix-timestamp", ts.to_string())
            .header("svix-signature", signature)
            .body(body.to_vec())
            .timeout(std::time::Duration::from_secs(10))
            .send()
            .await;
        if let Ok(r) = sent {
            if r.status().as_u16() == 200 {
                return tries;
            }
            assert_eq!(r.status().as_u16(), 503, "only 503 while Redis fails over");
        }
        assert!(tries < 2000, "webhook {msg_id} never accepted");
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
}

/// A v1 `calendar.sync_events` body about the meetings `uuids`.
pub fn sync_body(uuids: &[String]) -> Vec<u8> {
    serde_json::to_vec(&serde_json::json!({
        "event": "calendar.sync_events",
        "data": {"calendar_id": "c", "last_updated_ts": "t", "affected_event_uuids": uuids},
    }))
    .unwrap()
}

/// `n` meeting uuids `<prefix>-0000`, `<prefix>-0001`, …
pub fn uuids(prefix: &str, n: usize) -> Vec<String> {
    (0..n).map(|i| format!("{prefix}-{i:04}")).collect()
}

/// A load of `n` signed webhooks (`<prefix>_<i>`) sent by `senders` concurrent senders through
/// a failover, each retrying a 503 ([`deliver`]): the ids accepted so far, and the senders
/// (each answering the tries it took).
pub struct Load {
    pub accepted: std::sync::Arc<std::sync::Mutex<Vec<String>>>,
    senders: Vec<tokio::task::JoinHandle<u32>>,
}

impl Load {
    pub fn start(url: String, prefix: &str, n: usize, senders: usize) -> Self {
        let accepted = std::sync::Arc::new(std::sync::Mutex::new(Vec::<String>::new()));
        let body = std::sync::Arc::new(hookstream_tests::fixture("meeting-baas/v2/bot_status_change.json"));
        let senders = (0..senders)
            .map(|s| {
                let (accepted, body, url, prefix, step) =
                    (accepted.clone(), body.clone(), url.clone(), prefix.to_string(), senders);
                tokio::spawn(async move {
                    let client = reqwest::Client::new();
                    let mut tries = 0;
                    for i in (s..n).step_by(step) {
                        let id = format!("{prefix}_{i}");
                        tries += deliver(&client, &url, &id, &body).await;
                        accepted.lock().expect("accepted").push(id);
                    }
                    tries
                })
            })
            .collect();
        Self { accepted, senders }
    }

    /// How many are accepted so far.
    pub fn accepted(&self) -> usize {
        self.accepted.lock().expect("accepted").len()
    }

    /// Waits for every sender; the tries they took in all.
    pub async fn finish(self) -> u32 {
        let mut tries = 0;
        for sender in self.senders {
            tries += sender.await.expect("sender");
        }
        tries
    }
}
