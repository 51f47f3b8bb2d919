//! The processor service: the read loop, the reclaimer, the trimmer and the health server, and
//! how they stop.
//!
//! Concurrency is bounded by a semaphore of `CONCURRENCY` permits: each entry's handler runs
//! under one, so one slow entry holds one permit, never the others. The permit is released when
//! the handler is done; the entry's task then waits for its batched ack (still tracked, so
//! shutdown waits for it too). The reader reads up to `BATCH_SIZE` entries at once, one batch
//! ahead of the one being handed out as permits free up, and every entry held in this process —
//! waiting or being handled — is leased by one lease task (see [`crate::stream`]), so waiting
//! never makes an entry look abandoned.

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
use std::time::{Duration, Instant};
use tokio::net::TcpListener;
use tokio::sync::{watch, OwnedSemaphorePermit, Semaphore};
use tokio::task::AbortHandle;
use tokio_util::task::TaskTracker;

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

/// Entries held by this process: since when, and (once handled) the task to abort after the
/// grace period.
#[derive(Default)]
struct InFlight {
    entries: Mutex<HashMap<String, Held>>,
}

struct Held {
    since: Instant,
    task: Option<AbortHandle>,
    /// The lease found another consumer owning it; not leased again.
    lost: bool,
}

impl InFlight {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Held>> {
        self.entries.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

struct Run {
    worker: Arc<Worker>,
    permits: Arc<Semaphore>,
    in_flight: Arc<InFlight>,
    /// Every entry task, from dispatch until its ack or dead letter is written.
    tasks: TaskTracker,
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
            redis: RedisState::default(),
        });
        Ok(Self { config, worker, reader, metrics_listener })
    }

    pub fn metrics_addr(&self) -> std::io::Result<SocketAddr> {
        self.metrics_listener.local_addr()
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
            tasks: TaskTracker::new(),
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
        let leaser = tokio::spawn(lease_loop(run.clone(), (config.claim_idle / 3).max(Duration::from_millis(10))));
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
        let reader_task = tokio::spawn(read_loop(run.clone(), reader, config.batch_size, config.block));

        shutdown.await;
        tracing::info!("shutting down: no new entries; finishing in-flight ones");
        let _ = stop_tx.send(true);
        let _ = reader_task.await;
        let _ = reclaimer.await;
        trimmer.abort();

        run.tasks.close();
        let finished = tokio::time::timeout(config.common.shutdown_grace, run.tasks.wait()).await.is_ok();
        if !finished {
            let unfinished: Vec<(String, Held)> = run.in_flight.lock().drain().collect();
            tracing::warn!(
                entries = unfinished.len(),
                "grace period over; unfinished entries stay pending and will be reclaimed"
            );
            for (_, held) in unfinished {
                if let Some(task) = held.task {
                    task.abort();
                }
            }
        }
        leaser.abort();
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

    /// Hands an entry to a task holding `permit`.
    fn dispatch(self: &Arc<Self>, entry: RawEntry, deliveries: u64, permit: OwnedSemaphorePermit) {
        let id = entry.id.clone();
        let run = self.clone();
        let task_id = id.clone();
        let mut held = self.in_flight.lock();
        let handle = self.tasks.spawn(async move {
            run.worker.clone().process(entry, deliveries, permit).await;
            run.in_flight.lock().remove(&task_id);
        });
        if let Some(h) = held.get_mut(&id) {
            h.task = Some(handle.abort_handle());
        }
    }

    /// Waits for one free permit (`None` when shutting down, even if a permit is free).
    async fn permit(&self) -> Option<OwnedSemaphorePermit> {
        let mut stop = self.stop.clone();
        tokio::select! {
            biased;
            _ = stop.wait_for(|s| *s) => None,
            permit = self.permits.clone().acquire_owned() => permit.ok(),
        }
    }

    /// Registers every entry as held, so the lease task covers it from now on. An entry this
    /// process already holds (read again through a reclaim race) is dropped.
    fn hold(&self, entries: Vec<RawEntry>) -> Vec<RawEntry> {
        let mut held = self.in_flight.lock();
        let now = Instant::now();
        entries
            .into_iter()
            .filter(|e| {
                if held.contains_key(&e.id) {
                    return false;
                }
                held.insert(e.id.clone(), Held { since: now, task: None, lost: false });
                true
            })
            .collect()
    }

    /// Lets held entries go without starting them (shutting down): they stay pending in the
    /// group, for another replica or the next start.
    fn release(&self, entries: impl IntoIterator<Item = RawEntry>) {
        let mut held = self.in_flight.lock();
        for entry in entries {
            held.remove(&entry.id);
        }
    }

    /// Dispatches held entries: looks up delivery counts for entries that were not new, then
    /// starts each as a permit frees up.
    async fn dispatch_batch(self: &Arc<Self>, entries: Vec<RawEntry>, fresh: bool) {
        if self.stopping() {
            return self.release(entries);
        }
        let counts = if fresh {
            HashMap::new()
        } else {
            let ids: Vec<&str> = entries.iter().map(|e| e.id.as_str()).collect();
            self.worker.stream.delivery_counts(&ids).await.unwrap_or_default()
        };
        let mut entries = entries.into_iter();
        while let Some(entry) = entries.next() {
            // Deliveries of a new entry: 1. Of a re-read or reclaimed one: from the PEL (it
            // defaults to "more than once" if the lookup failed, which only matters at the cap).
            let deliveries = if fresh { 1 } else { counts.get(&entry.id).copied().unwrap_or(2) };
            let Some(permit) = self.permit().await else {
                // Shutting down: what was not started stays pending, for another replica.
                self.release(std::iter::once(entry).chain(entries));
                return;
            };
            self.dispatch(entry, deliveries, permit);
        }
    }
}

/// Leases every entry held longer than `every` (see [`crate::stream`]), every `every`, until
/// aborted; it runs through the shutdown grace period too.
async fn lease_loop(run: Arc<Run>, every: Duration) {
    let mut tick = tokio::time::interval(every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        let due: Vec<String> = run
            .in_flight
            .lock()
            .iter()
            .filter(|(_, h)| !h.lost && h.since.elapsed() >= every)
            .map(|(id, _)| id.clone())
            .collect();
        if due.is_empty() {
            continue;
        }
        let ids: Vec<&str> = due.iter().map(String::as_str).collect();
        match run.worker.stream.lease(&ids).await {
            Ok(lost) => {
                let mut held = run.in_flight.lock();
                for id in lost {
                    tracing::warn!(stream_id = %id, "lease lost: another consumer owns the entry now");
                    if let Some(h) = held.get_mut(&id) {
                        h.lost = true;
                    }
                }
            }
            Err(err) => tracing::debug!(error = %err, "lease refresh failed; will try again"),
        }
    }
}

/// Reads this consumer's own pending entries first (id `0`), then new ones (`>`), up to
/// `BATCH_SIZE` at a time, one batch ahead: the next batch is read while the last one is being
/// handed out, so handlers do not sit idle during a read's round trip. At most two batches are
/// held unstarted (one waiting, one being handed out), leased like every held entry.
async fn read_loop(run: Arc<Run>, reader: ConnectionManager, batch: usize, block: Duration) {
    let (tx, mut rx) = tokio::sync::mpsc::channel::<(Vec<RawEntry>, bool)>(1);
    let dispatcher = async {
        while let Some((entries, fresh)) = rx.recv().await {
            run.dispatch_batch(entries, fresh).await;
        }
    };
    tokio::join!(read_batches(&run, reader, batch, block, tx), dispatcher);
}

/// The reading half of [`read_loop`]: sends each batch, already held, to the dispatcher.
async fn read_batches(
    run: &Arc<Run>,
    mut reader: ConnectionManager,
    batch: usize,
    block: Duration,
    batches: tokio::sync::mpsc::Sender<(Vec<RawEntry>, bool)>,
) {
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
        let (from, block_for) = match &pending_from {
            Some(id) => (id.clone(), None),
            None => (">".to_string(), Some(block)),
        };
        let mut stop = run.stop.clone();
        // Read only when the dispatcher has room for the batch: one waits while one is handed out.
        let room = tokio::select! {
            room = batches.reserve() => room,
            _ = stop.wait_for(|s| *s) => break,
        };
        let Ok(room) = room else { break };
        let read = tokio::select! {
            read = stream.read(&mut reader, &from, batch, block_for) => read,
            _ = stop.wait_for(|s| *s) => break,
        };
        match read {
            Ok(entries) => {
                run.worker.redis.ok();
                backoff.reset();
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
                    room.send((run.hold(entries), pending_from.is_none()));
                }
            }
            Err(err) if is_nogroup(&err) => {
                tracing::warn!(group = %stream.group, "consumer group missing; recreating it");
                group_checked = false;
            }
            Err(err) => {
                run.worker.redis.failed("reading the stream", &err);
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
                        crate::metrics::entries(crate::metrics::Entry::Reclaimed, claimed.len() as u64);
                        tracing::info!(entries = claimed.len(), "reclaimed idle entries");
                        let claimed = run.hold(claimed);
                        run.dispatch_batch(claimed, false).await;
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
