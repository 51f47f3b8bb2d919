//! The processor service: the read loop, the reclaimer, the trimmer and the health server, and
//! how they stop.
//!
//! Concurrency is bounded by a semaphore of `CONCURRENCY` permits: an entry is read (or
//! reclaimed) only when a permit is free, so no entry sits delivered-but-unhandled in memory,
//! and one slow entry holds one permit, never the others.

use crate::config::ProcessorConfig;
use crate::handlers::Registry;
use crate::retry::{reconnect_backoff, RetryPolicy};
use crate::stream::{is_nogroup, RawEntry, Stream};
use crate::worker::{RedisState, Worker};
use backoff::backoff::Backoff;
use http::{Method, Request, Response, StatusCode};
use hyper::body::Incoming;
use redis::aio::ConnectionManager;
use shared::http::{json, metrics_response, ApiError, Body, ServeOptions};
use shared::keys::Keys;
use std::collections::HashMap;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::net::TcpListener;
use tokio::sync::{watch, OwnedSemaphorePermit, Semaphore};
use tokio::task::AbortHandle;

/// How long one command on the shared (non-blocking) connection may take.
const COMMAND_TIMEOUT: Duration = Duration::from_secs(10);

pub struct Processor {
    config: ProcessorConfig,
    worker: Arc<Worker>,
    reader: ConnectionManager,
    metrics_listener: TcpListener,
}

#[derive(Debug, thiserror::Error)]
pub enum BuildError {
    #[error("cannot listen on METRICS_ADDR {addr}: {source}")]
    Bind { addr: SocketAddr, source: std::io::Error },
    #[error("invalid Redis settings: {0}")]
    Redis(#[from] redis::RedisError),
    #[error("cannot build the HTTP client: {0}")]
    Http(#[from] reqwest::Error),
}

/// Entries being handled in this process, with the handles to abort them after the grace.
#[derive(Default)]
struct InFlight {
    tasks: Mutex<HashMap<String, AbortHandle>>,
}

impl InFlight {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, AbortHandle>> {
        self.tasks.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

struct Run {
    worker: Arc<Worker>,
    permits: Arc<Semaphore>,
    in_flight: Arc<InFlight>,
    stop: watch::Receiver<bool>,
}

impl Processor {
    /// Binds `METRICS_ADDR` and prepares both Redis connections (made lazily: the processor
    /// starts while Redis is down and begins work when it is up). `registry` defaults to the
    /// built-in handlers.
    pub async fn build(config: ProcessorConfig, registry: Option<Registry>) -> Result<Self, BuildError> {
        let metrics_listener = TcpListener::bind(config.metrics_addr)
            .await
            .map_err(|source| BuildError::Bind { addr: config.metrics_addr, source })?;
        let client = shared::conn::client(&config.common.redis_url)?;
        let commands = shared::conn::manager(client.clone(), Some(COMMAND_TIMEOUT))?;
        // The blocking reads get a connection of their own, with no response timeout: a
        // XREADGROUP BLOCK would otherwise stall every ack queued behind it on a shared socket.
        let reader = shared::conn::manager(client, None)?;
        let registry = match registry {
            Some(registry) => registry,
            None => Registry::standard(&config)?,
        };
        if config.api_key.is_none() {
            tracing::warn!("MEETING_BAAS_API_KEY is not set: Meeting BaaS API calls will be refused");
        }
        let _ = shared::telemetry::metrics();
        let stream =
            Stream::new(Keys::new(&config.common.namespace), config.group.clone(), config.consumer.clone(), commands);
        let worker = Arc::new(Worker {
            acker: crate::acker::Acker::spawn(stream.clone()),
            stream,
            registry,
            retry: RetryPolicy {
                initial: config.retry_initial,
                max_interval: config.retry_max_interval,
                max_elapsed: config.retry_max_elapsed,
                attempt_timeout: config.handler_timeout,
            },
            max_deliveries: config.max_deliveries,
            lease_every: (config.claim_idle / 3).max(Duration::from_millis(10)),
            redis: RedisState::default(),
        });
        Ok(Self { config, worker, reader, metrics_listener })
    }

    pub fn metrics_addr(&self) -> std::io::Result<SocketAddr> {
        self.metrics_listener.local_addr()
    }

    pub fn consumer(&self) -> &str {
        &self.config.consumer
    }

    /// Runs until `shutdown` resolves: then stops reading and claiming, gives in-flight entries
    /// `SHUTDOWN_GRACE_MS` to finish, aborts the rest (they stay pending and are reclaimed by
    /// another replica), and returns `true` when nothing had to be aborted.
    pub async fn run_until(self, shutdown: impl Future<Output = ()>) -> bool {
        let Processor { config, worker, reader, metrics_listener } = self;
        tracing::info!(consumer = %config.consumer, group = %config.group, stream = %worker.stream.keys.events, "processor starting");
        let (stop_tx, stop) = watch::channel(false);
        let run = Arc::new(Run {
            worker: worker.clone(),
            permits: Arc::new(Semaphore::new(config.concurrency)),
            in_flight: Arc::new(InFlight::default()),
            stop,
        });

        let health = {
            let stream = worker.stream.clone();
            let handler = move |req: Request<Incoming>| {
                let stream = stream.clone();
                async move { health(&stream, req).await }
            };
            let options =
                ServeOptions { header_read_timeout: Duration::from_secs(10), shutdown_grace: Duration::from_secs(1) };
            let mut stop = run.stop.clone();
            tokio::spawn(shared::http::serve(metrics_listener, Arc::new(handler), options, async move {
                let _ = stop.wait_for(|s| *s).await;
            }))
        };
        let reclaimer = tokio::spawn(reclaim_loop(run.clone(), config.claim_idle, config.batch_size));
        let ops = crate::ops::Ops::new(worker.stream.keys.clone(), config.group.clone(), worker.stream.connection());
        let trimmer = tokio::spawn(trim_loop(
            run.clone(),
            ops,
            config.trim_interval,
            config.stream_retention,
            config.consumer_idle_reap,
            config.consumer.clone(),
        ));
        let reader_task =
            tokio::spawn(read_loop(run.clone(), reader, config.batch_size, config.block, config.concurrency));

        shutdown.await;
        tracing::info!("shutting down: no new entries; finishing in-flight ones");
        let _ = stop_tx.send(true);
        let _ = reader_task.await;
        let _ = reclaimer.await;
        trimmer.abort();

        let all = u32::try_from(config.concurrency).unwrap_or(u32::MAX);
        let finished = tokio::time::timeout(config.common.shutdown_grace, run.permits.acquire_many(all)).await.is_ok();
        if !finished {
            let unfinished: Vec<(String, AbortHandle)> = run.in_flight.lock().drain().collect();
            tracing::warn!(
                entries = unfinished.len(),
                "grace period over; unfinished entries stay pending and will be reclaimed"
            );
            for (_, task) in unfinished {
                task.abort();
            }
        }
        let _ = health.await;
        tracing::info!("processor stopped");
        finished
    }
}

impl Run {
    fn stopping(&self) -> bool {
        *self.stop.borrow()
    }

    /// Waits `delay`, or less if shutdown starts; `false` when shutting down.
    async fn pause(&self, delay: Duration) -> bool {
        let mut stop = self.stop.clone();
        tokio::select! {
            _ = tokio::time::sleep(delay) => !self.stopping(),
            _ = stop.wait_for(|s| *s) => false,
        }
    }

    /// Hands an entry to a task holding `permit`. An entry already being handled in this
    /// process (read again through a reclaim race) is skipped.
    fn dispatch(self: &Arc<Self>, entry: RawEntry, deliveries: u64, permit: OwnedSemaphorePermit) {
        let mut tasks = self.in_flight.lock();
        if tasks.contains_key(&entry.id) {
            return;
        }
        let id = entry.id.clone();
        let run = self.clone();
        let task_id = id.clone();
        let handle = tokio::spawn(async move {
            run.worker.clone().process(entry, deliveries).await;
            run.in_flight.lock().remove(&task_id);
            drop(permit);
        });
        tasks.insert(id, handle.abort_handle());
    }

    /// Waits for one free permit (`None` when shutting down).
    async fn permit(&self) -> Option<OwnedSemaphorePermit> {
        self.permits_many(1).await
    }

    /// Waits for `n` free permits, held as one (`None` when shutting down).
    async fn permits_many(&self, n: usize) -> Option<OwnedSemaphorePermit> {
        let mut stop = self.stop.clone();
        let n = u32::try_from(n).unwrap_or(1).max(1);
        tokio::select! {
            permit = self.permits.clone().acquire_many_owned(n) => permit.ok(),
            _ = stop.wait_for(|s| *s) => None,
        }
    }

    /// Dispatches a batch, looking up delivery counts for entries that were not new.
    /// `held` carries one or more permits; each entry takes one of them, and entries beyond
    /// them wait for a free one.
    async fn dispatch_batch(self: &Arc<Self>, entries: Vec<RawEntry>, fresh: bool, held: OwnedSemaphorePermit) {
        let mut held = Some(held);
        let counts = if fresh {
            HashMap::new()
        } else {
            let ids: Vec<&str> = entries.iter().map(|e| e.id.as_str()).collect();
            self.worker.stream.delivery_counts(&ids).await.unwrap_or_default()
        };
        for entry in entries {
            // Deliveries of a new entry: 1. Of a re-read or reclaimed one: from the PEL (it
            // defaults to "more than once" if the lookup failed, which only matters at the cap).
            let deliveries = if fresh { 1 } else { counts.get(&entry.id).copied().unwrap_or(2) };
            let one = match held.as_mut() {
                Some(h) if h.num_permits() > 1 => h.split(1),
                _ => held.take(),
            };
            let permit = match one {
                Some(p) => p,
                None => match self.permits.clone().acquire_owned().await {
                    Ok(p) => p,
                    Err(_) => return,
                },
            };
            self.dispatch(entry, deliveries, permit);
        }
    }
}

/// Reads this consumer's own pending entries first (id `0`), then new ones (`>`).
///
/// While the stream has a backlog (the last read came back full), it waits until half the
/// permits are free and reads that many at once: fewer, larger reads (and acks) under load.
/// Otherwise it holds a single permit while a blocking read waits for new entries, so the
/// reclaimer is never starved of permits.
async fn read_loop(run: Arc<Run>, mut reader: ConnectionManager, batch: usize, block: Duration, concurrency: usize) {
    let mut backlog = false;
    let stream = run.worker.stream.clone();
    let mut backoff = reconnect_backoff();
    let mut pending_from: Option<String> = Some("0".into());
    let mut group_checked = false;
    while !run.stopping() {
        if !group_checked {
            match stream.ensure_group().await {
                Ok(()) => group_checked = true,
                Err(err) => {
                    run.worker.redis.failed("creating the consumer group", &err);
                    if !run.pause(backoff.next_backoff().unwrap_or(Duration::from_secs(5))).await {
                        break;
                    }
                    continue;
                }
            }
        }
        let want = if backlog { (concurrency / 2).clamp(1, batch) } else { 1 };
        let Some(permit) = run.permits_many(want).await else { break };
        // Read as many entries as there are free permits (those held included).
        let count = (want + run.permits.available_permits()).min(batch);
        let (from, block_for) = match &pending_from {
            Some(id) => (id.clone(), None),
            None => (">".to_string(), Some(block)),
        };
        let mut stop = run.stop.clone();
        let read = tokio::select! {
            read = stream.read(&mut reader, &from, count, block_for) => read,
            _ = stop.wait_for(|s| *s) => break,
        };
        match read {
            Ok(entries) => {
                run.worker.redis.ok();
                backoff.reset();
                backlog = entries.len() == count;
                if let Some(cursor) = pending_from.as_mut() {
                    match entries.last() {
                        Some(last) => *cursor = last.id.clone(),
                        None => {
                            pending_from = None;
                            continue;
                        }
                    }
                }
                if !entries.is_empty() {
                    run.dispatch_batch(entries, pending_from.is_none(), permit).await;
                }
            }
            Err(err) if is_nogroup(&err) => {
                tracing::warn!(group = %stream.group, "consumer group missing; recreating it");
                group_checked = false;
            }
            Err(err) => {
                run.worker.redis.failed("reading the stream", &err);
                drop(permit);
                if !run.pause(backoff.next_backoff().unwrap_or(Duration::from_secs(5))).await {
                    break;
                }
            }
        }
    }
}

/// Takes over entries idle longer than `CLAIM_IDLE_MS` in any consumer, following the
/// XAUTOCLAIM cursor to the end of the pending list on each pass.
async fn reclaim_loop(run: Arc<Run>, claim_idle: Duration, batch: usize) {
    let every = (claim_idle / 2).clamp(Duration::from_millis(20), Duration::from_secs(30));
    while run.pause(every).await {
        let mut cursor = "0-0".to_string();
        loop {
            let free = run.permits.available_permits().min(batch);
            if free == 0 {
                break;
            }
            match run.worker.stream.autoclaim(claim_idle, &cursor, free).await {
                Ok((next, claimed, deleted)) => {
                    run.worker.redis.ok();
                    for id in &deleted {
                        tracing::warn!(stream_id = %id, "a pending entry was deleted from the stream before it was processed");
                    }
                    if !claimed.is_empty() {
                        metrics::counter!("hookstream_processor_entries_total", "outcome" => "reclaimed")
                            .increment(claimed.len() as u64);
                        tracing::info!(entries = claimed.len(), "reclaimed idle entries");
                        let Some(permit) = run.permit().await else { return };
                        run.dispatch_batch(claimed, false, permit).await;
                    }
                    if next == "0-0" || run.stopping() {
                        break;
                    }
                    cursor = next;
                }
                Err(err) if is_nogroup(&err) => break, // the read loop recreates the group
                Err(err) => {
                    run.worker.redis.failed("reclaiming", &err);
                    break;
                }
            }
        }
    }
}

/// Housekeeping: trims processed entries, and removes consumers that are long gone (idle past
/// `CONSUMER_IDLE_REAP_SECS` with nothing pending; one with pending entries is never removed).
async fn trim_loop(
    run: Arc<Run>,
    ops: crate::ops::Ops,
    every: Duration,
    retention: Duration,
    reap_after: Duration,
    me: String,
) {
    while run.pause(every).await {
        match run.worker.stream.trim(retention).await {
            Ok(0) => {}
            Ok(n) => tracing::debug!(entries = n, "trimmed the stream"),
            Err(err) => tracing::debug!(error = %err, "trim failed; will try again"),
        }
        match ops.reap_consumers(reap_after, &me).await {
            Ok(reaped) => {
                for name in reaped {
                    tracing::info!(consumer = %name, "removed an idle consumer with nothing pending");
                }
            }
            Err(err) => tracing::debug!(error = %err, "reaping consumers failed; will try again"),
        }
    }
}

fn set_gauges(g: &crate::stream::Gauges) {
    metrics::gauge!("hookstream_stream_length").set(g.stream_length as f64);
    metrics::gauge!("hookstream_dead_length").set(g.dead_length as f64);
    metrics::gauge!("hookstream_group_pending").set(g.group_pending as f64);
    metrics::gauge!("hookstream_group_lag").set(g.group_lag as f64);
}

#[derive(serde::Serialize)]
struct Status {
    status: &'static str,
}

async fn health(stream: &Stream, req: Request<Incoming>) -> Response<Body> {
    let method = req.method();
    let path = req.uri().path();
    match path {
        "/healthz" | "/readyz" | "/metrics" if method != Method::GET && method != Method::HEAD => {
            ApiError::method_not_allowed(method, path, "GET, HEAD").into_response()
        }
        "/healthz" => json(StatusCode::OK, &Status { status: "ok" }),
        "/readyz" => match stream.gauges().await {
            Ok(_) => json(StatusCode::OK, &Status { status: "ready" }),
            Err(err) => ApiError::unavailable(format!("Redis does not answer: {err}")).into_response(),
        },
        "/metrics" => {
            // The gauges are read when scraped, so they are never stale.
            if let Ok(gauges) = stream.gauges().await {
                set_gauges(&gauges);
            }
            metrics_response()
        }
        _ => ApiError::not_found(method, path).into_response(),
    }
}
