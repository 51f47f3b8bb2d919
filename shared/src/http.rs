//! The small HTTP server both binaries run (the ingress's webhook API, the processor's health
//! and metrics endpoints): JSON answers, and a serve loop with keep-alive, a header-read timeout
//! and graceful shutdown.
//!
//! Every body is JSON (`/metrics` aside); errors are
//! `{"error": "<snake_case code>", "message": "<human sentence>"}`.

use bytes::Bytes;
use http::header::{HeaderValue, ALLOW, CONTENT_TYPE, RETRY_AFTER};
use http::{Request, Response, StatusCode};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::server::graceful::GracefulShutdown;
use serde::Serialize;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;
use tokio::net::TcpListener;

pub type Body = Full<Bytes>;

/// Seconds a sender should wait before retrying after a 503.
pub const RETRY_AFTER_SECS: u32 = 5;

/// An error answer.
#[derive(Debug, Clone)]
pub struct ApiError {
    pub status: StatusCode,
    pub code: &'static str,
    pub message: String,
    pub allow: Option<&'static str>,
}

#[derive(Serialize)]
struct ErrorBody<'a> {
    error: &'a str,
    message: &'a str,
}

impl ApiError {
    pub fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        Self { status, code, message: message.into(), allow: None }
    }

    pub fn not_found(method: &http::Method, path: &str) -> Self {
        Self::new(StatusCode::NOT_FOUND, "not_found", format!("no route for {method} {path}"))
    }

    pub fn method_not_allowed(method: &http::Method, path: &str, allow: &'static str) -> Self {
        Self {
            allow: Some(allow),
            ..Self::new(
                StatusCode::METHOD_NOT_ALLOWED,
                "method_not_allowed",
                format!("{path} does not accept {method}; allowed: {allow}"),
            )
        }
    }

    pub fn unavailable(message: impl Into<String>) -> Self {
        Self::new(StatusCode::SERVICE_UNAVAILABLE, "unavailable", message)
    }

    pub fn into_response(self) -> Response<Body> {
        let mut response = json(self.status, &ErrorBody { error: self.code, message: &self.message });
        if let Some(allow) = self.allow {
            response.headers_mut().insert(ALLOW, HeaderValue::from_static(allow));
        }
        if self.status == StatusCode::SERVICE_UNAVAILABLE {
            response.headers_mut().insert(RETRY_AFTER, HeaderValue::from(RETRY_AFTER_SECS));
        }
        response
    }
}

/// A JSON answer.
pub fn json<T: Serialize>(status: StatusCode, body: &T) -> Response<Body> {
    // Serialising these plain structs cannot fail; the fallback keeps the answer JSON anyway.
    let bytes = serde_json::to_vec(body).unwrap_or_else(|_| br#"{"error":"internal"}"#.to_vec());
    let mut response = Response::new(Full::new(Bytes::from(bytes)));
    *response.status_mut() = status;
    response.headers_mut().insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    response
}

/// `GET /metrics`: the Prometheus text of this process.
pub fn metrics_response() -> Response<Body> {
    let mut response = Response::new(Full::new(Bytes::from(crate::telemetry::metrics().render())));
    response.headers_mut().insert(CONTENT_TYPE, HeaderValue::from_static("text/plain; version=0.0.4; charset=utf-8"));
    response
}

/// A request extension set by [`serve`]: when the server began waiting for this request's
/// head — the connection's accept, or the end of the answer before it on a keep-alive
/// connection, which is also when the head-read timeout starts. A deadline for the whole
/// request (head and body) counts from here. Also the client's address (the connection's peer),
/// for traces.
#[derive(Debug, Clone, Copy)]
pub struct RequestStarted(pub std::time::Instant, pub std::net::SocketAddr);

/// Serving limits.
#[derive(Debug, Clone, Copy)]
pub struct ServeOptions {
    /// How long a client may take to send its request head (then the connection is closed).
    pub header_read_timeout: Duration,
    /// How long in-flight requests may take to finish after shutdown starts.
    pub shutdown_grace: Duration,
    /// Connections served at once; further ones wait in the listen backlog until one closes.
    pub max_connections: usize,
}

/// Serves HTTP/1.1 (keep-alive on) with `handler` until `shutdown` resolves; then stops
/// accepting, closes idle connections, lets in-flight requests finish within
/// `shutdown_grace`, and returns `true` when all of them did.
///
/// At most `max_connections` connections are served at once: the loop takes a slot before it
/// accepts, so further clients wait in the kernel's listen backlog (their connect succeeds,
/// their request is read once a slot frees) instead of each costing a task and buffers.
pub async fn serve<H, Fut>(
    listener: TcpListener,
    handler: Arc<H>,
    options: ServeOptions,
    shutdown: impl Future<Output = ()>,
) -> bool
where
    H: Fn(Request<Incoming>) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Response<Body>> + Send + 'static,
{
    let graceful = GracefulShutdown::new();
    let mut http = http1::Builder::new();
    http.timer(TokioTimer::new()).header_read_timeout(options.header_read_timeout).keep_alive(true);
    tokio::pin!(shutdown);
    let slots = Arc::new(tokio::sync::Semaphore::new(options.max_connections.max(1)));
    loop {
        let slot = tokio::select! {
            _ = &mut shutdown => break,
            slot = slots.clone().acquire_owned() => match slot {
                Ok(slot) => slot,
                Err(_) => break,
            },
        };
        tokio::select! {
            _ = &mut shutdown => break,
            accepted = listener.accept() => {
                let (stream, peer) = match accepted {
                    Ok(conn) => conn,
                    Err(err) => {
                        // E.g. out of file descriptors: wait a moment instead of spinning.
                        tracing::warn!(error = %err, "accept failed");
                        tokio::time::sleep(Duration::from_millis(100)).await;
                        continue;
                    }
                };
                let _ = stream.set_nodelay(true);
                let handler = handler.clone();
                // When this connection began waiting for its next request head.
                let waiting_since = Arc::new(std::sync::Mutex::new(std::time::Instant::now()));
                let service = service_fn(move |mut req: Request<Incoming>| {
                    let since = *waiting_since.lock().unwrap_or_else(|p| p.into_inner());
                    req.extensions_mut().insert(RequestStarted(since, peer));
                    let answer = handler(req);
                    let waiting_since = waiting_since.clone();
                    async move {
                        let response = answer.await;
                        *waiting_since.lock().unwrap_or_else(|p| p.into_inner()) = std::time::Instant::now();
                        Ok::<_, std::convert::Infallible>(response)
                    }
                });
                let conn = graceful.watch(http.serve_connection(TokioIo::new(stream), service));
                tokio::spawn(async move {
                    if let Err(err) = conn.await {
                        tracing::debug!(error = %err, "connection ended with an error");
                    }
                    drop(slot);
                });
            }
        }
    }
    drop(listener);
    tracing::info!(open_connections = graceful.count(), "stopped accepting; finishing in-flight requests");
    match tokio::time::timeout(options.shutdown_grace, graceful.shutdown()).await {
        Ok(()) => true,
        Err(_) => {
            tracing::warn!(grace = ?options.shutdown_grace, "grace period over with requests still in flight");
            false
        }
    }
}
