//! The processor service: builds the parts, runs them as named loops, and stops them.
//!
//! ```text
//!   service (this file: the supervisor)
//!     ├─ reader         XREADGROUP own pending, then new entries ──┐
//!     ├─ reclaimer      XAUTOCLAIM abandoned entries ──────────────┤→ dispatch → worker → delivery verdict
//!     ├─ lease keeper   renews what is held, marks lost leases     │   (CONCURRENCY slots)   (ack / dead letter)
//!     ├─ tidier         trim, reap idle consumers                  │
//!     └─ health         /healthz /readyz /metrics                  │
//! ```
//!
//! Stopping (SIGTERM/SIGINT): the grace period `SHUTDOWN_GRACE_MS` starts counting at once and
//! covers every part: the reader and the reclaimer stop taking entries, deliveries in flight
//! finish and write their verdicts, and whatever is still running when the grace runs out is
//! aborted — it stays pending in the group and another replica reclaims it.

use crate::config::ProcessorConfig;
use crate::dispatch::Dispatcher;
use crate::handlers::Registry;
use crate::retry::RetryPolicy;
use crate::stream::{RedisState, Stream};
use crate::worker::Worker;
use http::Request;
use hyper::body::Incoming;
use shared::conn::Conn;
use shared::http::ServeOptions;
use shared::keys::Keys;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::time::Instant;

pub struct Processor {
    config: ProcessorConfig,
    worker: Arc<Worker>,
    reader: Conn,
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

impl Processor {
    /// Binds `METRICS_ADDR` and prepares both Redis connections (made lazily: the processor
    /// starts while Redis is down and begins work when it is up). `registry` defaults to the
    /// built-in handlers.
    pub async fn build(config: ProcessorConfig, registry: Option<Registry>) -> Result<Self, BuildError> {
        let metrics_listener = TcpListener::bind(config.metrics_addr)
            .await
            .map_err(|source| BuildError::Bind { addr: config.metrics_addr, source })?;
        let client = shared::conn::client(&config.common.redis_url)?;
        let commands = Conn::new(client.clone(), config.command_timeout)?;
        // The blocking reads get a connection of their own: a XREADGROUP BLOCK would otherwise
        // stall every ack queued behind it on a shared socket.
        let reader = Conn::new(client, config.block + crate::reader::BLOCK_MARGIN)?;
        let keys = Keys::new(&config.common.namespace);
        let limiter =
            crate::limiter::WriteLimiter::new(keys.api_writes.clone(), commands.clone(), config.api_writes_per_sec);
        let registry = match registry {
            Some(registry) => registry,
            None => Registry::standard(&config, limiter)?,
        };
        // A meeting's lock lives as long as a dead holder's entries stay unclaimed.
        let locks = crate::lock::MeetingLocks::new(keys.clone(), commands.clone(), config.claim_idle);
        if config.api_key.is_none() {
            tracing::warn!("MEETING_BAAS_API_KEY is not set: Meeting BaaS API calls will be refused");
        }
        let _ = shared::telemetry::metrics();
        let stream = Stream::new(keys, config.group.clone(), config.consumer.clone(), commands);
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
            locks,
        });
        Ok(Self { config, worker, reader, metrics_listener })
    }

    pub fn metrics_addr(&self) -> std::io::Result<SocketAddr> {
        self.metrics_listener.local_addr()
    }

    /// Runs until `shutdown` resolves: then stops reading and claiming, gives in-flight entries
    /// what is left of `SHUTDOWN_GRACE_MS` to finish, aborts the rest (they stay pending and are
    /// reclaimed by another replica), and returns `true` when nothing had to be aborted.
    pub async fn run_until(self, shutdown: impl Future<Output = ()>) -> bool {
        let Processor { config, worker, reader, metrics_listener } = self;
        tracing::info!(consumer = %config.consumer, group = %config.group, stream = %worker.stream.keys.events, "processor starting");
        let (stop_tx, stop) = watch::channel(false);
        let dispatcher = Arc::new(Dispatcher::new(worker.clone(), config.concurrency, config.claim_idle, stop));

        let mut health =
            {
                let stream = worker.stream.clone();
                let handler = move |req: Request<Incoming>| {
                    let stream = stream.clone();
                    async move { crate::health::answer(&stream, req).await }
                };
                let options = ServeOptions {
                    header_read_timeout: Duration::from_secs(10),
                    shutdown_grace: Duration::from_secs(1),
                    max_connections: 256,
                };
                let d = dispatcher.clone();
                tokio::spawn(shared::http::serve(metrics_listener, Arc::new(handler), options, async move {
                    d.stopped().await
                }))
            };
        let lease_keeper = tokio::spawn(crate::lease::run(
            dispatcher.held.clone(),
            worker.stream.clone(),
            worker.locks.clone(),
            (config.claim_idle / 3).max(Duration::from_millis(10)),
        ));
        let mut reclaimer = {
            let d = dispatcher.clone();
            let (idle, batch) = (config.claim_idle, config.batch_size);
            tokio::spawn(async move { crate::housekeeping::reclaim(&d, idle, batch).await })
        };
        let tidier = {
            let d = dispatcher.clone();
            let ops =
                crate::ops::Ops::new(worker.stream.keys.clone(), config.group.clone(), worker.stream.connection());
            let (every, retention, reap) = (config.trim_interval, config.stream_retention, config.consumer_idle_reap);
            tokio::spawn(async move { crate::housekeeping::tidy(&d, ops, every, retention, reap).await })
        };
        let mut reader_task = {
            let d = dispatcher.clone();
            let (batch, block) = (config.batch_size, config.block);
            tokio::spawn(async move { crate::reader::run(&d, reader, batch, block).await })
        };

        shutdown.await;
        let deadline = Instant::now() + config.common.shutdown_grace;
        tracing::info!("shutting down: no new entries; finishing in-flight ones");
        let _ = stop_tx.send(true);
        tidier.abort();
        let finished = tokio::time::timeout_at(deadline, async {
            let _ = (&mut reader_task).await;
            let _ = (&mut reclaimer).await;
            dispatcher.tasks.close();
            dispatcher.tasks.wait().await;
        })
        .await
        .is_ok();
        if !finished {
            reader_task.abort();
            reclaimer.abort();
            let unfinished = dispatcher.held.abort_all();
            tracing::warn!(
                entries = unfinished,
                "grace period over; unfinished entries stay pending and will be reclaimed"
            );
        }
        lease_keeper.abort();
        if tokio::time::timeout_at(deadline.max(Instant::now() + Duration::from_millis(100)), &mut health)
            .await
            .is_err()
        {
            health.abort();
        }
        tracing::info!("processor stopped");
        finished
    }
}
