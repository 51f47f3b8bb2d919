//! The HTTP server: routes, the webhook pipeline, graceful shutdown.
//!
//! The webhook pipeline runs the checks of SPEC §3.4 in order — media type, size, authenticity,
//! envelope — and then makes exactly one Redis round trip: the dedup+append script, sent by SHA
//! over the one multiplexed connection every request shares (concurrent requests are pipelined
//! on one socket). Only a stored event, or a recognised duplicate, is answered 200.
//!
//! **Strangers and slow clients.** A request whose head already tells it is not genuine (a
//! wrong or missing API key or callback secret, incomplete signature headers) is refused before
//! any of its body is read. The head must arrive within `REQUEST_TIMEOUT_MS` (else hyper closes
//! the connection), and the body too, counted from when the server began waiting for the head
//! (else `408 request_timeout`);
//! the body is read incrementally and never past `MAX_BODY_BYTES`. At most `MAX_CONNECTIONS`
//! connections are served at once (see [`shared::http::serve`]). Each request runs on its own
//! task, so a stalled upload never delays another request.

use crate::auth::{self, Head, Verifier};
use crate::config::{IngressConfig, REPLICA_ACK_TIMEOUT};
use crate::identity;
use crate::metrics::{record, Outcome};
use crate::rejection::Rejection;
use crate::traces::{self, Context};
use bytes::Bytes;
use http::header::{HeaderValue, CONTENT_LENGTH, CONTENT_TYPE};
use http::{HeaderMap, Method, Request, Response, StatusCode};
use http_body_util::{BodyExt, LengthLimitError, Limited};
use hyper::body::Incoming;
use serde::Serialize;
use shared::append::{Appended, DedupAppend, Replicas};
use shared::conn::Conn;
use shared::entry::{self, NewEntry};
use shared::http::{json, metrics_response, ApiError, Body, RequestStarted, ServeOptions};
use shared::keys::Partitions;
use shared::layout::{Layout, LayoutError};
use shared::otel::Traces;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};
use tokio::net::TcpListener;

pub const WEBHOOK_PATH: &str = "/webhooks/meeting-baas";
pub const REQUEST_ID_HEADER: &str = "x-request-id";

/// How long one Redis command may take before the request is answered 503. A command that timed
/// out may still have been applied; the sender's retry is then answered "duplicate" with the id,
/// so nothing is lost either way.
const REDIS_RESPONSE_TIMEOUT: Duration = Duration::from_secs(5);

/// A bound, not yet serving, ingress.
pub struct Ingress {
    listener: TcpListener,
    state: Arc<State>,
}

struct State {
    /// `REDIS_URL` without its passwords, to say which Redis failed.
    redis_url: String,
    partitions: Partitions,
    layout: Layout,
    redis: Conn,
    script: DedupAppend,
    verifier: Verifier,
    dedup_ttl_secs: u64,
    max_body_bytes: usize,
    shutdown_grace: Duration,
    request_timeout: Duration,
    max_connections: usize,
    min_replicas_ack: u32,
    max_backlog: u64,
    backlog_refresh: Duration,
    /// The consumer groups' backlog as last read in the background ([`watch_backlog`]).
    backlog: AtomicU64,
    /// Spans, when tracing is on ([`crate::traces`]).
    traces: Option<Traces>,
    /// The listener's port, for the request spans.
    local_port: u16,
}

#[derive(Debug, thiserror::Error)]
pub enum BuildError {
    #[error("cannot listen on {addr}: {source}")]
    Bind { addr: SocketAddr, source: std::io::Error },
    #[error("invalid Redis settings: {0}")]
    Redis(#[from] redis::RedisError),
    #[error("{0}")]
    Layout(LayoutError),
}

impl BuildError {
    /// A setting to fix (exit code 64), not a failure to retry.
    pub fn is_configuration(&self) -> bool {
        // A LISTEN_ADDR another process holds is a setting to change, not an outage.
        matches!(self, BuildError::Layout(_) | BuildError::Bind { .. })
    }
}

impl Ingress {
    /// Binds the listener (port 0 picks a free port) and prepares the Redis connection, which is
    /// made lazily: the ingress starts while Redis is down and answers 503 until it is back.
    pub async fn build(config: IngressConfig) -> Result<Self, BuildError> {
        Self::build_traced(config, None).await
    }

    /// [`Self::build`], making spans with `traces` (tracing on) or none (`None`).
    pub async fn build_traced(config: IngressConfig, traces: Option<Traces>) -> Result<Self, BuildError> {
        let listener = TcpListener::bind(config.listen_addr)
            .await
            .map_err(|source| BuildError::Bind { addr: config.listen_addr, source })?;
        let redis = Conn::open(&config.common.redis_target()?, REDIS_RESPONSE_TIMEOUT)?;
        let layout = Layout::new(&config.common.namespace, config.common.partitions);
        layout
            .check_at_start(&mut redis.clone(), &config.common.redis_url_for_logs())
            .await
            .map_err(BuildError::Layout)?;
        if config.verifier.allows_unsigned() {
            tracing::warn!("ALLOW_UNSIGNED=true: every request is accepted without authentication");
        }
        let _ = shared::telemetry::metrics();
        let local_port = listener.local_addr().map(|a| a.port()).unwrap_or(config.listen_addr.port());
        Ok(Self {
            listener,
            state: Arc::new(State {
                redis_url: config.common.redis_url_for_logs(),
                partitions: config.common.partitions(),
                layout,
                redis,
                script: DedupAppend::new(),
                verifier: config.verifier,
                dedup_ttl_secs: config.dedup_ttl_secs,
                max_body_bytes: config.max_body_bytes,
                shutdown_grace: config.common.shutdown_grace,
                request_timeout: config.request_timeout,
                max_connections: config.max_connections,
                min_replicas_ack: config.min_replicas_ack,
                max_backlog: config.max_backlog,
                backlog_refresh: config.backlog_refresh,
                backlog: AtomicU64::new(0),
                traces,
                local_port,
            }),
        })
    }

    pub fn local_addr(&self) -> std::io::Result<SocketAddr> {
        self.listener.local_addr()
    }

    /// Serves until `shutdown` resolves; then stops accepting, lets in-flight requests finish
    /// (idle keep-alive connections are closed) for up to `SHUTDOWN_GRACE_MS`, and returns.
    /// Returns `true` when every connection finished within the grace period.
    pub async fn run_until(self, shutdown: impl Future<Output = ()>) -> bool {
        let Ingress { listener, state } = self;
        if let Ok(addr) = listener.local_addr() {
            tracing::info!(%addr, "ingress listening");
        }
        let options = ServeOptions {
            header_read_timeout: state.request_timeout,
            shutdown_grace: state.shutdown_grace,
            max_connections: state.max_connections,
        };
        let watcher = tokio::spawn(watch_backlog(state.clone()));
        let handler = move |req: Request<Incoming>| {
            let state = state.clone();
            async move { handle(&state, req).await }
        };
        let finished = shared::http::serve(listener, Arc::new(handler), options, shutdown).await;
        watcher.abort();
        finished
    }
}

/// Reads the backlog about once per `backlog_refresh`, never per request: the largest lag
/// (entries not yet delivered) of the consumer groups, summed over the partitions, or the
/// streams' length while no group exists yet (nothing consumes them), plus the entries parked
/// for a later retry (`{ns}:retry`, SPEC §4.3: not in the stream, still to be processed). A lag Redis cannot tell
/// (null) counts as 0: the ingress pushes back only on a backlog it knows of. Errors keep the
/// last value. The partition layout is checked again here on every tick (see [`Layout`]).
async fn watch_backlog(state: Arc<State>) {
    let mut tick = tokio::time::interval(state.backlog_refresh);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        let mut con = state.redis.clone();
        // Checked on every tick, not only at start: a repartition, or a process started with
        // another count, stops the appends here instead of splitting the events.
        if state.layout.recheck(&mut con).await.is_err() {
            continue;
        }
        if let Some((lag, parked)) = read_backlog(&state, &mut con).await {
            // The processors' lag, seen from the ingress: with no processor running, nothing
            // else exports it, and the alert "webhooks wait, nothing consumes them" needs it.
            metrics::gauge!(crate::metrics::GROUP_LAG).set(lag as f64);
            let backlog = lag + parked;
            let before = state.backlog.swap(backlog, Ordering::Relaxed);
            let (was_full, full) = (before > state.max_backlog, backlog > state.max_backlog);
            if full && !was_full {
                tracing::warn!(
                    backlog,
                    max = state.max_backlog,
                    "backlog over MAX_BACKLOG: answering 503 backlog_full"
                );
            } else if was_full && !full {
                tracing::info!(backlog, "backlog back under MAX_BACKLOG: accepting again");
            }
        }
    }
}

/// The backlog over every partition (see [`watch_backlog`]): the lag (the largest group's,
/// summed over partitions, plus the entries of partitions no group reads) and the parked
/// entries; `None` when Redis fails.
async fn read_backlog(state: &State, con: &mut Conn) -> Option<(u64, u64)> {
    let mut lag_by_group: std::collections::HashMap<String, u64> = std::collections::HashMap::new();
    let mut unconsumed = 0u64; // entries of partitions without any group
    let mut parked = 0u64;
    for keys in state.partitions.all() {
        parked += redis::cmd("ZCARD").arg(&keys.retry).query_async::<u64>(con).await.ok()?;
        let groups = shared::groups::groups(con, &keys.events).await.ok()?;
        if groups.is_empty() {
            // No group yet (or no stream: XLEN answers 0): every entry is unconsumed.
            unconsumed += redis::cmd("XLEN").arg(&keys.events).query_async::<u64>(con).await.ok()?;
        }
        for group in groups {
            *lag_by_group.entry(group.name).or_default() += group.lag.unwrap_or(0) as u64;
        }
    }
    Some((lag_by_group.values().map(|lag| lag + unconsumed).max().unwrap_or(unconsumed), parked))
}

/// The caller's `x-request-id` when it is a sane token, else a new one.
fn request_id(headers: &HeaderMap) -> HeaderValue {
    headers
        .get(REQUEST_ID_HEADER)
        .filter(|v| !v.is_empty() && v.len() <= 128 && v.as_bytes().iter().all(|b| b.is_ascii_graphic()))
        .cloned()
        .unwrap_or_else(new_request_id)
}

/// A new request id: 32 hex digits, a random per-process prefix and a counter. Unique, cheap
/// (no system call per request, unlike a random UUID), and not meant to be unguessable.
fn new_request_id() -> HeaderValue {
    use std::sync::atomic::AtomicU64;
    use std::sync::OnceLock;
    static PREFIX: OnceLock<u64> = OnceLock::new();
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let prefix = *PREFIX.get_or_init(|| uuid::Uuid::new_v4().as_u64_pair().0);
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    HeaderValue::from_str(&format!("{prefix:016x}{n:016x}")).unwrap_or_else(|_| HeaderValue::from_static("unknown"))
}

async fn handle(state: &State, req: Request<Incoming>) -> Response<Body> {
    let request_id = request_id(req.headers());
    let method = req.method().clone();
    let mut response = match req.uri().path() {
        WEBHOOK_PATH if method == Method::POST => webhook(state, req, &request_id).await,
        WEBHOOK_PATH => ApiError::method_not_allowed(&method, WEBHOOK_PATH, "POST").into_response(),
        path @ ("/healthz" | "/readyz" | "/metrics") if method != Method::GET && method != Method::HEAD => {
            ApiError::method_not_allowed(&method, path, "GET, HEAD").into_response()
        }
        "/healthz" => json(StatusCode::OK, &Status { status: "ok" }),
        "/readyz" => readyz(state).await,
        "/metrics" => metrics_response(),
        path => ApiError::not_found(&method, path).into_response(),
    };
    response.headers_mut().insert(REQUEST_ID_HEADER, request_id);
    response
}

#[derive(Serialize)]
struct Status {
    status: &'static str,
}

#[derive(Serialize)]
struct Stored<'a> {
    status: &'static str,
    id: &'a str,
}

async fn readyz(state: &State) -> Response<Body> {
    let mut con = state.redis.clone();
    match redis::cmd("PING").query_async::<String>(&mut con).await {
        Ok(_) => json(StatusCode::OK, &Status { status: "ready" }),
        Err(err) => ApiError::unavailable(format!("Redis does not answer PING: {err}")).into_response(),
    }
}

/// `application/json`, any case, optionally with parameters (`; charset=utf-8`).
fn is_json(headers: &HeaderMap) -> bool {
    headers
        .get(CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .is_some_and(|media| media.trim().eq_ignore_ascii_case("application/json"))
}

fn unix_now() -> i64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_secs() as i64).unwrap_or(0)
}

async fn webhook(state: &State, req: Request<Incoming>, request_id: &HeaderValue) -> Response<Body> {
    let started = Instant::now();
    let rid = request_id.to_str().unwrap_or("");
    let span = state.traces.as_ref().map(|t| {
        let peer = req.extensions().get::<RequestStarted>().map(|s| s.1);
        traces::request(t, req.headers(), req.uri().path(), WEBHOOK_PATH, peer, state.local_port, rid)
    });
    let (outcome, response) = match accept(state, req, rid, span.as_ref()).await {
        Ok(appended) => {
            let (outcome, status) = match appended {
                Appended::Accepted(_) => (Outcome::Accepted, "accepted"),
                Appended::Duplicate(_) => (Outcome::Duplicate, "duplicate"),
            };
            (outcome, json(StatusCode::OK, &Stored { status, id: appended.id() }))
        }
        Err(rejection) => {
            let outcome = rejection.outcome();
            if outcome == Outcome::Unavailable {
                tracing::warn!(request_id = rid, outcome = outcome.as_str(), redis_url = %state.redis_url, "{rejection}");
            } else {
                tracing::info!(
                    request_id = rid,
                    outcome = outcome.as_str(),
                    status = rejection.status().as_u16(),
                    "{rejection}"
                );
            }
            (outcome, rejection.into_response())
        }
    };
    record(outcome, started);
    if let Some(span) = &span {
        traces::answered(span, response.status(), outcome);
    }
    response
}

/// The checks of SPEC §3.4, in order, then the dedup+append script.
async fn accept(
    state: &State,
    req: Request<Incoming>,
    request_id: &str,
    span: Option<&Context>,
) -> Result<Appended, Rejection> {
    let (parts, body) = req.into_parts();
    if !is_json(&parts.headers) {
        return Err(Rejection::UnsupportedMediaType);
    }
    let limit = state.max_body_bytes;
    let declared = parts.headers.get(CONTENT_LENGTH).and_then(|v| v.to_str().ok()).and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|len| len > limit as u64) {
        return Err(Rejection::TooLarge { limit });
    }
    // A stranger is refused before any of its body is read (or buffered).
    let head = state.verifier.verify_head(&parts.headers)?;
    // Reading stops at the limit (a body that grows past it is never buffered beyond it) and
    // REQUEST_TIMEOUT_MS after the server began waiting for this request's head: head and body
    // together get that long, and a stalled upload holds nothing for ever.
    let started = parts.extensions.get::<RequestStarted>().map_or_else(std::time::Instant::now, |s| s.0);
    let deadline = tokio::time::Instant::from_std(started + state.request_timeout);
    let body: Bytes = match tokio::time::timeout_at(deadline, Limited::new(body, limit).collect()).await {
        Err(_) => return Err(Rejection::Timeout { ms: state.request_timeout.as_millis() }),
        Ok(Ok(collected)) => collected.to_bytes(),
        Ok(Err(err)) if err.downcast_ref::<LengthLimitError>().is_some() => return Err(Rejection::TooLarge { limit }),
        Ok(Err(err)) => return Err(Rejection::Invalid(format!("the body could not be read: {err}"))),
    };
    if head == Head::Signed {
        state.verifier.verify_body(&parts.headers, &body, unix_now())?;
    }
    let envelope = identity::envelope(&body).map_err(|err| Rejection::Invalid(err.to_string()))?;
    let backlog = state.backlog.load(Ordering::Relaxed);
    if backlog > state.max_backlog {
        return Err(Rejection::BacklogFull { backlog, max: state.max_backlog });
    }
    let dedup_id = identity::dedup_identity(auth::message_id(&parts.headers), &envelope, &body);
    let received_at = entry::timestamp_now();
    let (keys, dedup_key) = state.partitions.of(&dedup_id);
    let events = &keys.events;
    // The producer span's context is what the entry carries to the processor.
    let send = span.zip(state.traces.as_ref()).map(|(span, t)| {
        let partition = (state.partitions.count() > 1).then_some(keys.partition);
        traces::send(t, span, events, partition, &envelope.event)
    });
    let trace = send.as_ref().map(shared::otel::inject);
    let new_entry = NewEntry {
        event: &envelope.event,
        source: entry::SOURCE_MEETING_BAAS,
        dedup_id: &dedup_id,
        payload: &body,
        received_at: &received_at,
        request_id,
        trace: trace.as_ref().map(|(parent, state)| (parent.as_str(), state.as_str())),
    };
    let appended = append(state, &dedup_key, events, &new_entry).await;
    if let Some(send) = &send {
        traces::sent(send, &appended);
    }
    let appended = appended?;
    let outcome = match appended {
        Appended::Accepted(_) => Outcome::Accepted,
        Appended::Duplicate(_) => Outcome::Duplicate,
    };
    tracing::info!(
        request_id,
        stream_id = appended.id(),
        event = %envelope.event,
        dedup_id = %dedup_id,
        outcome = outcome.as_str(),
        "webhook"
    );
    Ok(appended)
}

/// The layout check (once), then the dedup+append script — with `WAIT` behind it when
/// `MIN_REPLICAS_ACK` asks for replicas.
async fn append(state: &State, dedup_key: &str, events: &str, new_entry: &NewEntry<'_>) -> Result<Appended, Rejection> {
    let mut con = state.redis.clone();
    if !state.layout.checked() {
        state.layout.ensure(&mut con).await.map_err(|err| match err {
            LayoutError::Redis(err) => Rejection::Unavailable(err),
            refusal => Rejection::Misconfigured(refusal.to_string()),
        })?;
    }
    let appended = if state.min_replicas_ack == 0 {
        state.script.run(&mut con, dedup_key, events, state.dedup_ttl_secs, new_entry).await?
    } else {
        // Durable beyond the primary: 200 only once enough replicas have the event (or, for a
        // duplicate, its first copy). Otherwise 503, and the sender's retry finds it again.
        let wanted = state.min_replicas_ack;
        let (appended, got) = state
            .script
            .run_replicated(
                &mut con,
                dedup_key,
                events,
                state.dedup_ttl_secs,
                new_entry,
                Replicas { count: wanted, timeout: REPLICA_ACK_TIMEOUT },
            )
            .await?;
        if got < wanted {
            return Err(Rejection::NotReplicated { wanted, got });
        }
        appended
    };
    Ok(appended)
}
