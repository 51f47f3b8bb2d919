//! The HTTP server under the simulator and the tests' fake APIs, served in-process on a port.
//!
//! Routes are scripted per `METHOD /path` with a closure that sees the call and how many calls
//! to that route came before it; every call, and the answer it got, is recorded for
//! assertions. A call no script names goes to the fallback (the simulated Meeting BaaS API,
//! [`crate::api`], once one is installed); without one it answers 404. So a test can run the
//! simulator and still script one route to misbehave.

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Request, Response};
use hyper_util::rt::TokioIo;
use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};
use tokio::net::TcpListener;

/// One request the server received.
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

    /// The query parameter `name`, percent-decoded (the first, when it repeats).
    pub fn param(&self, name: &str) -> Option<String> {
        let query = self.query.as_deref()?;
        let url = reqwest::Url::parse(&format!("http://x/?{query}")).ok()?;
        url.query_pairs().find(|(k, _)| k == name).map(|(_, v)| v.into_owned())
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

    /// A JSON value as the body.
    pub fn value(status: u16, body: &serde_json::Value) -> Self {
        Self::json(status, body.to_string().into_bytes())
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

/// `GET` here answers the call log as JSON (`[{"method", "path", "id", "status"}]`); not itself
/// recorded.
pub const CALL_LOG_PATH: &str = "/_calls";

type Script = Arc<dyn Fn(&Call, usize) -> Reply + Send + Sync>;
/// What answers a call no script names: `None` is a 404.
pub type Fallback = Arc<dyn Fn(&Call) -> Option<Reply> + Send + Sync>;

#[derive(Default)]
struct State {
    routes: HashMap<String, Script>,
    fallback: Option<Fallback>,
    counts: HashMap<String, usize>,
    calls: Vec<Call>,
    /// The status and body each call was answered with (same order as `calls`; a dropped
    /// connection is recorded with the status it would have had).
    answers: Vec<(u16, Vec<u8>)>,
    /// Calls received and not yet answered, now and at most.
    in_flight: usize,
    max_in_flight: usize,
}

/// A poisoned lock (a script panicked) still holds a usable log.
fn lock(state: &Mutex<State>) -> MutexGuard<'_, State> {
    state.lock().unwrap_or_else(|p| p.into_inner())
}

/// The server; stops when dropped.
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
    /// Serves on a free loopback port.
    ///
    /// # Panics
    /// When no loopback port can be bound (a test's environment is broken).
    pub async fn start() -> Self {
        Self::bind(SocketAddr::from(([127, 0, 0, 1], 0))).await.expect("bind a loopback port")
    }

    /// Serves on `addr` (the simulator binary listens on 0.0.0.0 in a container).
    ///
    /// # Panics
    /// When `addr` cannot be bound; [`FakeApi::bind`] returns the error instead.
    pub async fn start_on(addr: SocketAddr) -> Self {
        Self::bind(addr).await.expect("bind the fake API's address")
    }

    /// Serves on `addr`.
    pub async fn bind(addr: SocketAddr) -> std::io::Result<Self> {
        let listener = TcpListener::bind(addr).await?;
        let addr = listener.local_addr()?;
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
        Ok(Self { addr, state, task })
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Scripts `METHOD path` with a closure of (call, index of this call on the route).
    pub fn route(&self, method: &str, path: &str, script: impl Fn(&Call, usize) -> Reply + Send + Sync + 'static) {
        lock(&self.state).routes.insert(key(method, path), Arc::new(script));
    }

    /// Removes the script of `METHOD path` (the fallback answers it again).
    pub fn unroute(&self, method: &str, path: &str) {
        lock(&self.state).routes.remove(&key(method, path));
    }

    /// Scripts `METHOD path` to answer `reply` every time.
    pub fn always(&self, method: &str, path: &str, reply: Reply) {
        self.route(method, path, move |_, _| reply.clone());
    }

    /// Scripts `METHOD path` to answer `replies` in turn, the last one from then on.
    pub fn sequence(&self, method: &str, path: &str, replies: Vec<Reply>) {
        self.route(method, path, move |_, n| {
            replies.get(n.min(replies.len().saturating_sub(1))).cloned().unwrap_or_else(|| Reply::status(500))
        });
    }

    /// Answers every call no script names.
    pub fn fallback(&self, answer: Fallback) {
        lock(&self.state).fallback = Some(answer);
    }

    /// Every call so far.
    pub fn calls(&self) -> Vec<Call> {
        lock(&self.state).calls.clone()
    }

    /// Every call so far with the status and body it was answered with.
    pub fn answered(&self) -> Vec<(Call, u16, Vec<u8>)> {
        let state = lock(&self.state);
        state.calls.iter().cloned().zip(state.answers.iter().cloned()).map(|(c, (s, b))| (c, s, b)).collect()
    }

    /// Calls to `METHOD path`.
    pub fn calls_to(&self, method: &str, path: &str) -> Vec<Call> {
        self.calls().into_iter().filter(|c| c.method == method && c.path == path).collect()
    }

    /// The most calls that were being answered at the same moment (received, reply not yet
    /// sent): how many requests the client had in flight at once.
    pub fn max_in_flight(&self) -> usize {
        lock(&self.state).max_in_flight
    }

    /// Calls received and not yet answered (a client that gave up no longer counts).
    pub fn in_flight(&self) -> usize {
        lock(&self.state).in_flight
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
        let state = lock(&state);
        let log: Vec<serde_json::Value> = state
            .calls
            .iter()
            .zip(&state.answers)
            .map(|(c, (status, _))| {
                serde_json::json!({"method": c.method, "path": c.path, "id": c.headers.get("x-hookstream-id"),
                    "event": c.headers.get("x-hookstream-event"), "status": status})
            })
            .collect();
        return Ok(Response::new(Full::new(Bytes::from(serde_json::Value::from(log).to_string()))));
    }
    let call = Call { method: method.clone(), path: path.clone(), query, headers, body, at: Instant::now() };
    // The script runs outside the lock (the simulator's scripts take locks of their own), so
    // the call is counted first and recorded with its answer after.
    let (script, fallback, n) = {
        let mut state = lock(&state);
        let k = key(&method, &path);
        let n = *state.counts.get(&k).unwrap_or(&0);
        state.counts.insert(k.clone(), n + 1);
        state.in_flight += 1;
        state.max_in_flight = state.max_in_flight.max(state.in_flight);
        (state.routes.get(&k).cloned(), state.fallback.clone(), n)
    };
    let reply = match (script, fallback) {
        (Some(script), _) => script(&call, n),
        (None, Some(fallback)) => fallback(&call).unwrap_or_else(not_found),
        (None, None) => not_found(),
    };
    {
        let mut state = lock(&state);
        state.calls.push(call);
        state.answers.push((reply.status, reply.body.clone()));
    }
    // Counted out of flight when answered, or when the client gave up (the future is dropped).
    struct Answered(Arc<Mutex<State>>);
    impl Drop for Answered {
        fn drop(&mut self) {
            lock(&self.0).in_flight -= 1;
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
    *response.status_mut() = hyper::StatusCode::from_u16(reply.status)?;
    for (k, v) in reply.headers {
        response
            .headers_mut()
            .insert(hyper::header::HeaderName::from_bytes(k.as_bytes())?, hyper::header::HeaderValue::from_str(&v)?);
    }
    Ok(response)
}

fn not_found() -> Reply {
    Reply::json(404, br#"{"error":"not found"}"#.to_vec())
}
