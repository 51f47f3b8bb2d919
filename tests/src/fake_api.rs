//! A fake HTTP API (Meeting BaaS, or a forward target) served in-process on a free port.
//!
//! Routes are scripted per `METHOD /path` with a closure that sees the call and how many calls
//! to that route came before it; every call is recorded for assertions. Unscripted routes
//! answer 404.

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Request, Response};
use hyper_util::rt::TokioIo;
use serde_json::json;
use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::net::TcpListener;

/// One request the fake received.
#[derive(Debug, Clone)]
pub struct Call {
    pub method: String,
    pub path: String,
    pub query: Option<String>,
    pub headers: HashMap<String, String>,
    pub body: Vec<u8>,
    pub at: Instant,
}

impl Call {
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body).unwrap_or(serde_json::Value::Null)
    }

    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).map(String::as_str)
    }
}

/// A scripted answer.
#[derive(Debug, Clone)]
pub struct Reply {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
    pub delay: Option<Duration>,
    /// The answer waits until this gate opens.
    pub gate: Option<tokio::sync::watch::Receiver<bool>>,
    /// No answer at all: the connection is closed once the call is recorded (and its route
    /// script has run, so a script may apply a write first: a write applied whose answer was
    /// lost).
    pub drop_connection: bool,
}

/// Holds scripted answers back until the test opens it (see [`Reply::held`]).
pub struct Gate(tokio::sync::watch::Sender<bool>);

impl Default for Gate {
    fn default() -> Self {
        Self::new()
    }
}

impl Gate {
    pub fn new() -> Self {
        Self(tokio::sync::watch::channel(false).0)
    }

    /// Lets every held answer go, and every later one at once.
    pub fn open(&self) {
        self.0.send_replace(true);
    }
}

impl Reply {
    pub fn json(status: u16, body: impl Into<Vec<u8>>) -> Self {
        Self {
            status,
            headers: vec![("content-type".into(), "application/json".into())],
            body: body.into(),
            delay: None,
            gate: None,
            drop_connection: false,
        }
    }

    /// Closes the connection instead of answering (see [`Reply::drop_connection`]).
    pub fn dropped() -> Self {
        Self { drop_connection: true, ..Self::status(502) }
    }

    pub fn status(status: u16) -> Self {
        Self::json(status, br#"{"error":"scripted"}"#.to_vec())
    }

    pub fn header(mut self, name: &str, value: &str) -> Self {
        self.headers.push((name.into(), value.into()));
        self
    }

    pub fn delayed(mut self, delay: Duration) -> Self {
        self.delay = Some(delay);
        self
    }

    /// Answers only once `gate` is open (the call is recorded, and counted in flight, at once).
    pub fn held(mut self, gate: &Gate) -> Self {
        self.gate = Some(gate.0.subscribe());
        self
    }
}

/// `GET` here answers the call log as JSON (`[{"method", "path", "id"}]`); not itself recorded.
pub const CALL_LOG_PATH: &str = "/_calls";

type Script = Arc<dyn Fn(&Call, usize) -> Reply + Send + Sync>;

#[derive(Default)]
struct State {
    routes: HashMap<String, Script>,
    counts: HashMap<String, usize>,
    calls: Vec<Call>,
    /// Calls received and not yet answered, now and at most.
    in_flight: usize,
    max_in_flight: usize,
}

/// The fake server; stops when dropped.
pub struct FakeApi {
    pub addr: SocketAddr,
    state: Arc<Mutex<State>>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for FakeApi {
    fn drop(&mut self) {
        self.task.abort();
    }
}

fn key(method: &str, path: &str) -> String {
    format!("{} {path}", method.to_ascii_uppercase())
}

impl FakeApi {
    pub async fn start() -> Self {
        Self::start_on("127.0.0.1:0".parse().unwrap()).await
    }

    /// Serves on `addr` (the compose end-to-end test serves on 0.0.0.0 in a container).
    pub async fn start_on(addr: SocketAddr) -> Self {
        let listener = TcpListener::bind(addr).await.unwrap();
        let addr = listener.local_addr().unwrap();
        let state = Arc::new(Mutex::new(State::default()));
        let shared = state.clone();
        let task = tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else { continue };
                let state = shared.clone();
                tokio::spawn(async move {
                    let service = service_fn(move |req| answer(state.clone(), req));
                    let _ = http1::Builder::new().serve_connection(TokioIo::new(stream), service).await;
                });
            }
        });
        Self { addr, state, task }
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Scripts `METHOD path` with a closure of (call, index of this call on the route).
    pub fn route(&self, method: &str, path: &str, script: impl Fn(&Call, usize) -> Reply + Send + Sync + 'static) {
        self.state.lock().unwrap().routes.insert(key(method, path), Arc::new(script));
    }

    /// Scripts `METHOD path` to answer `reply` every time.
    pub fn always(&self, method: &str, path: &str, reply: Reply) {
        self.route(method, path, move |_, _| reply.clone());
    }

    /// Scripts `METHOD path` to answer `replies` in turn, the last one from then on.
    pub fn sequence(&self, method: &str, path: &str, replies: Vec<Reply>) {
        self.route(method, path, move |_, n| replies[n.min(replies.len() - 1)].clone());
    }

    /// Every call so far.
    pub fn calls(&self) -> Vec<Call> {
        self.state.lock().unwrap().calls.clone()
    }

    /// Calls to `METHOD path`.
    pub fn calls_to(&self, method: &str, path: &str) -> Vec<Call> {
        self.calls().into_iter().filter(|c| c.method == method && c.path == path).collect()
    }

    /// The most calls that were being answered at the same moment (received, reply not yet
    /// sent): how many requests the client had in flight at once.
    pub fn max_in_flight(&self) -> usize {
        self.state.lock().unwrap().max_in_flight
    }

    /// Calls received and not yet answered (a client that gave up no longer counts).
    pub fn in_flight(&self) -> usize {
        self.state.lock().unwrap().in_flight
    }

    /// `METHOD path` of every call, in order.
    pub fn log(&self) -> Vec<String> {
        self.calls().iter().map(|c| key(&c.method, &c.path)).collect()
    }
}

async fn answer(
    state: Arc<Mutex<State>>,
    req: Request<Incoming>,
) -> Result<Response<Full<Bytes>>, Box<dyn std::error::Error + Send + Sync>> {
    let method = req.method().to_string();
    let path = req.uri().path().to_string();
    let query = req.uri().query().map(str::to_string);
    let headers = req
        .headers()
        .iter()
        .map(|(k, v)| (k.as_str().to_string(), String::from_utf8_lossy(v.as_bytes()).into_owned()))
        .collect();
    let body = req.into_body().collect().await.map(|b| b.to_bytes().to_vec()).unwrap_or_default();
    if method == "GET" && path == CALL_LOG_PATH {
        // The call log, for a test that runs this server in another process.
        let log: Vec<serde_json::Value> = state
            .lock()
            .unwrap()
            .calls
            .iter()
            .map(|c| serde_json::json!({"method": c.method, "path": c.path, "id": c.headers.get("x-hookstream-id")}))
            .collect();
        return Ok(Response::new(Full::new(Bytes::from(serde_json::to_vec(&log).unwrap()))));
    }
    let call = Call { method: method.clone(), path: path.clone(), query, headers, body, at: Instant::now() };
    let reply = {
        let mut state = state.lock().unwrap();
        let k = key(&method, &path);
        let n = *state.counts.get(&k).unwrap_or(&0);
        state.counts.insert(k.clone(), n + 1);
        state.calls.push(call.clone());
        state.in_flight += 1;
        state.max_in_flight = state.max_in_flight.max(state.in_flight);
        match state.routes.get(&k).cloned() {
            Some(script) => script(&call, n),
            None => Reply::json(404, br#"{"error":"not found"}"#.to_vec()),
        }
    };
    // Counted out of flight when answered, or when the client gave up (the future is dropped).
    struct Answered(Arc<Mutex<State>>);
    impl Drop for Answered {
        fn drop(&mut self) {
            let mut state = self.0.lock().unwrap_or_else(|p| p.into_inner());
            state.in_flight -= 1;
        }
    }
    let answered = Answered(state.clone());
    if let Some(delay) = reply.delay {
        tokio::time::sleep(delay).await;
    }
    if let Some(mut gate) = reply.gate.clone() {
        let _ = gate.wait_for(|open| *open).await;
    }
    drop(answered);
    if reply.drop_connection {
        // hyper closes the connection without a response when the service fails.
        return Err("the fake API drops this connection".into());
    }
    let mut response = Response::new(Full::new(Bytes::from(reply.body)));
    *response.status_mut() = hyper::StatusCode::from_u16(reply.status).unwrap();
    for (k, v) in reply.headers {
        response.headers_mut().insert(
            hyper::header::HeaderName::from_bytes(k.as_bytes()).unwrap(),
            hyper::header::HeaderValue::from_str(&v).unwrap(),
        );
    }
    Ok(response)
}

/// A v1 API for `uuids` that answers 503 to everything while `down` is set; otherwise every
/// event is upcoming and a POST schedules its bot (counted per meeting). `calls_while_down`
/// counts the calls that reached it during the outage.
pub struct FlakyV1 {
    pub api: FakeApi,
    pub down: Arc<AtomicBool>,
    pub bots: Arc<Mutex<HashMap<String, usize>>>,
    pub calls_while_down: Arc<AtomicUsize>,
}

pub async fn flaky_v1(uuids: &[String]) -> FlakyV1 {
    let api = FakeApi::start().await;
    let down = Arc::new(AtomicBool::new(true));
    let bots: Arc<Mutex<HashMap<String, usize>>> = Arc::default();
    let calls_while_down = Arc::new(AtomicUsize::new(0));
    let upcoming = crate::fixture_json("meeting-baas/api/v1_calendar_event_upcoming.json");
    for uuid in uuids {
        let (d, c, b, u, event) =
            (down.clone(), calls_while_down.clone(), bots.clone(), uuid.clone(), upcoming.clone());
        api.route("GET", &format!("/calendar_events/{uuid}"), move |_, _| {
            if d.load(Ordering::SeqCst) {
                c.fetch_add(1, Ordering::SeqCst);
                return Reply::status(503);
            }
            let mut e = event.clone();
            e["uuid"] = json!(u);
            if b.lock().unwrap().contains_key(&u) {
                e["bot_param"] = json!({"bot_name": "hookstream recorder"});
            }
            Reply::json(200, serde_json::to_vec(&e).unwrap())
        });
        let (d, c, b, u) = (down.clone(), calls_while_down.clone(), bots.clone(), uuid.clone());
        api.route("POST", &format!("/calendar_events/{uuid}/bot"), move |_, _| {
            if d.load(Ordering::SeqCst) {
                c.fetch_add(1, Ordering::SeqCst);
                return Reply::status(503);
            }
            *b.lock().unwrap().entry(u.clone()).or_default() += 1;
            Reply::json(200, crate::fixture("meeting-baas/api/v1_schedule_response.json"))
        });
    }
    FlakyV1 { api, down, bots, calls_while_down }
}

/// A v2 bot that ended, as Meeting BaaS lists it (`GET /v2/bots`) and resends its final webhook.
#[derive(Debug, Clone)]
pub struct EndedBot {
    pub bot_id: String,
    /// `completed` or `failed`.
    pub status: &'static str,
    /// RFC 3339 UTC, seconds (`2026-12-07T10:00:00Z`).
    pub ended_at: String,
}

impl EndedBot {
    /// A bot that ended `ago` before now.
    pub fn ended(bot_id: &str, status: &'static str, ago: Duration) -> Self {
        let ended = std::time::SystemTime::now() - ago;
        let secs = ended.duration_since(std::time::UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0);
        Self { bot_id: bot_id.to_string(), status, ended_at: rfc3339(secs) }
    }

    /// Its final webhook (`bot.completed` / `bot.failed`), the fixture with its id.
    pub fn final_webhook(&self) -> Vec<u8> {
        let (event, fixture) = match self.status {
            "failed" => ("bot.failed", "meeting-baas/v2/bot_failed.json"),
            _ => ("bot.completed", "meeting-baas/v2/bot_completed.json"),
        };
        let mut body = crate::fixture_json(fixture);
        body["event"] = json!(event);
        body["data"]["bot_id"] = json!(self.bot_id);
        serde_json::to_vec(&body).unwrap()
    }
}

/// `secs` (Unix) as RFC 3339 UTC with seconds, as the API writes times.
fn rfc3339(secs: u64) -> String {
    let (days, rem) = (secs / 86_400, secs % 86_400);
    // Civil date from days since 1970-01-01 (Howard Hinnant's algorithm).
    let z = days as i64 + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1_460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!("{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}Z", rem / 3_600, (rem % 3_600) / 60, rem % 60)
}

/// What [`FakeApi::serve_results`] saw.
#[derive(Clone, Default)]
pub struct Results {
    /// The bots whose final webhook was asked for again, in order.
    pub resent: Arc<Mutex<Vec<String>>>,
}

impl FakeApi {
    /// Serves Meeting BaaS's side of results (SPEC §4.5): `GET /v2/bots` lists `bots` with the
    /// filters hookstream sends (`status`, `ended_after`), in pages of `limit` (a cursor is the
    /// offset); `POST /v2/bots/{bot_id}/resend-webhook` answers 200 and, as Meeting BaaS does,
    /// sends the bot's final webhook again — a new message id, newly signed with `secret` — to
    /// `ingress` (the webhook URL). An unknown bot is a 404.
    pub fn serve_results(&self, bots: Vec<EndedBot>, ingress: String, secret: String) -> Results {
        let results = Results::default();
        let listed = bots.clone();
        self.route("GET", "/v2/bots", move |call, _| {
            let query = call.query.clone().unwrap_or_default();
            let param =
                |name: &str| query.split('&').find_map(|p| p.strip_prefix(&format!("{name}="))).map(percent_decode);
            let statuses = param("status").unwrap_or_default();
            let after = param("ended_after").unwrap_or_default();
            let limit: usize = param("limit").and_then(|l| l.parse().ok()).unwrap_or(50);
            let offset: usize = param("cursor").and_then(|c| c.parse().ok()).unwrap_or(0);
            let matching: Vec<&EndedBot> = listed
                .iter()
                .filter(|b| statuses.is_empty() || statuses.split(',').any(|s| s == b.status))
                .filter(|b| b.ended_at.as_str() > after.as_str())
                .collect();
            let page: Vec<serde_json::Value> = matching
                .iter()
                .skip(offset)
                .take(limit)
                .map(
                    |b| json!({"bot_id": b.bot_id, "status": b.status, "ended_at": b.ended_at, "bot_name": "recorder"}),
                )
                .collect();
            let next = (offset + limit < matching.len()).then(|| (offset + limit).to_string());
            Reply::json(200, serde_json::to_vec(&json!({"success": true, "data": page, "cursor": next})).unwrap())
        });
        for bot in bots {
            let (resent, ingress, secret) = (results.resent.clone(), ingress.clone(), secret.clone());
            self.route("POST", &format!("/v2/bots/{}/resend-webhook", bot.bot_id), move |_, n| {
                resent.lock().unwrap().push(bot.bot_id.clone());
                let (body, ingress, secret) = (bot.final_webhook(), ingress.clone(), secret.clone());
                let id = format!("msg_resent_{}_{n}", bot.bot_id);
                tokio::spawn(async move {
                    let ts = crate::unix_now();
                    let _ = reqwest::Client::new()
                        .post(&ingress)
                        .header("content-type", "application/json")
                        .header("webhook-id", &id)
                        .header("webhook-timestamp", ts.to_string())
                        .header("webhook-signature", crate::sign_webhook(&secret, &id, ts, &body))
                        .body(body)
                        .send()
                        .await;
                });
                Reply::json(200, crate::fixture("meeting-baas/api/v2_resend_webhook.json"))
            });
        }
        results
    }
}

/// `%XX` escapes decoded (query values hookstream sends: `,` and `:` may be escaped).
fn percent_decode(value: &str) -> String {
    let bytes = value.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' && i + 2 < bytes.len() {
            if let Ok(b) = u8::from_str_radix(&value[i + 1..i + 3], 16) {
                out.push(b);
                i += 3;
                continue;
            }
        }
        out.push(if bytes[i] == b'+' { b' ' } else { bytes[i] });
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}
