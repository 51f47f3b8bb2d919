//! The processor service: builds the parts, runs them as named loops, and stops them.
//!
//! ```text
//!   service (this file: the supervisor)
//!     ├─ reader         XREADGROUP own pending, then new entries ──┐
//!     ├─ reclaimer      XAUTOCLAIM abandoned entries ──────────────┤→ dispatch → worker → delivery verdict
//!     ├─ lease keeper   renews what is held, marks lost leases     │   (CONCURRENCY slots)   (ack / dead letter)
//!     ├─ tidier         trim, reap idle consumers                  │
//!     ├─ forwarder      re-appends parked entries when due ────────┘ (via the stream)
//!     └─ health         /healthz /readyz /metrics                  │
//! ```
//!
//! **Partitions.** With `PARTITIONS=P` the reader, reclaimer, lease keeper, tidier and the
//! batched acks run once per partition (each on that partition's stream, consumer group and
//! dead stream, the reader on a blocking connection of its own); the `CONCURRENCY` slots, the
//! handlers, the meeting locks and the write limiter are shared by all of them. A reader waits
//! for a free slot before it reads, and slots are granted in request order, so partitions with
//! work take turns and a busy one cannot starve the others.
//!
//! Stopping (SIGTERM/SIGINT): the grace period `SHUTDOWN_GRACE_MS` starts counting at once and
//! covers every part: the reader and the reclaimer stop taking entries, the entries read ahead
//! and not started are handed back (reclaimable by another replica at once), deliveries in
//! flight finish and write their verdicts, and whatever is still running when the grace runs
//! out is aborted and handed back too.

use crate::config::ProcessorConfig;
use crate::delivery::worker::Worker;
use crate::handlers::Registry;
use crate::intake::dispatch::Dispatcher;
use crate::outcome::retry::RetryPolicy;
use crate::stream::{RedisState, Stream};
use http::Request;
use hyper::body::Incoming;
use shared::conn::Conn;
use shared::http::ServeOptions;
use shared::layout::{Layout, LayoutError};
use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::time::Instant;

pub struct Processor {
    config: ProcessorConfig,
    reconciler: crate::reconcile::Reconciler,
    /// One per partition: what handles its entries, and its blocking-read connection.
    parts: Vec<(Arc<Worker>, Conn)>,
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
    #[error("{0}")]
    Layout(LayoutError),
}

impl BuildError {
    /// A setting to fix (exit code 64), not a failure to retry.
    pub fn is_configuration(&self) -> bool {
        // A METRICS_ADDR another process holds is a setting to change, not an outage.
        matches!(self, BuildError::Layout(_) | BuildError::Bind { .. })
    }
}

impl Processor {
    /// Binds `METRICS_ADDR` and prepares both Redis connections (made lazily: the processor
    /// starts while Redis is down and begins work when it is up). `registry` defaults to the
    /// built-in handlers.
    pub async fn build(config: ProcessorConfig, registry: Option<Registry>) -> Result<Self, BuildError> {
        Self::build_traced(config, registry, None).await
    }

    /// [`Self::build`], making spans with `traces` (tracing on) or none (`None`).
    pub async fn build_traced(
        config: ProcessorConfig,
        registry: Option<Registry>,
        traces: Option<shared::otel::Traces>,
    ) -> Result<Self, BuildError> {
        let metrics_listener = TcpListener::bind(config.metrics_addr)
            .await
            .map_err(|source| BuildError::Bind { addr: config.metrics_addr, source })?;
        let target = config.common.redis_target()?;
        let commands = Conn::open(&target, config.timing.command_timeout)?;
        let partitions = config.common.partitions();
        let layout = Arc::new(Layout::new(&config.common.namespace, partitions.count()));
        layout
            .check_at_start(&mut commands.clone(), &config.common.redis_url_for_logs())
            .await
            .map_err(BuildError::Layout)?;
        let namespace = partitions.namespace().clone();
        let limiter = crate::downstream::limiter::WriteLimiter::new(
            namespace.api_writes.clone(),
            commands.clone(),
            config.api_writes_per_sec,
        )
        .with_max_pause(if config.park.enabled() {
            config.retry_max_interval
        } else {
            crate::downstream::limiter::MAX_PAUSE
        });
        let seen = crate::downstream::meeting_baas::Seen::new(commands.clone(), &config.common.namespace);
        let breakers = crate::downstream::breaker::Breakers::new(&partitions, &commands, config.breakers);
        let registry = match registry {
            Some(registry) => registry,
            None => Registry::standard(
                &config.handler_settings(),
                limiter,
                Some(seen),
                breakers,
                crate::calendars::Connections::new(commands.clone(), &namespace, !config.reconcile.interval.is_zero()),
            )?,
        };
        let reconciler = config.reconciler(commands.clone())?.with_traces(traces.clone());
        // A meeting's lock lives as long as a dead holder's entries stay unclaimed.
        let locks = crate::downstream::lock::MeetingLocks::new(namespace, commands.clone(), config.timing.lock_ttl);
        if config.api_key.is_none() {
            tracing::warn!("MEETING_BAAS_API_KEY is not set: Meeting BaaS API calls will be refused");
        }
        let _ = shared::telemetry::metrics();
        let redis = Arc::new(RedisState::new(config.common.redis_url_for_logs()));
        let mut parts = Vec::with_capacity(partitions.count());
        for keys in partitions.all() {
            let stream = Stream::new(keys.clone(), config.group.clone(), config.consumer.clone(), commands.clone());
            let worker = Arc::new(Worker {
                acker: crate::delivery::acker::Acker::spawn(stream.clone()),
                stream,
                registry: registry.clone(),
                retry: RetryPolicy {
                    initial: config.retry_initial,
                    max_interval: config.retry_max_interval,
                    max_elapsed: config.retry_max_elapsed,
                    attempt_timeout: config.handler_timeout,
                    park: config.park,
                },
                max_deliveries: config.max_deliveries,
                redis: redis.clone(),
                locks: locks.clone(),
                layout: layout.clone(),
                traces: traces.clone(),
                partitioned: partitions.count() > 1,
            });
            // The blocking reads get a connection of their own: a XREADGROUP BLOCK would
            // otherwise stall every ack queued behind it on a shared socket.
            let reader = Conn::open(&target, config.timing.reader_timeout)?;
            parts.push((worker, reader));
        }
        Ok(Self { config, reconciler, parts, metrics_listener })
    }

    pub fn metrics_addr(&self) -> std::io::Result<SocketAddr> {
        self.metrics_listener.local_addr()
    }

    /// Runs until `shutdown` resolves: then stops reading and claiming, gives in-flight entries
    /// what is left of `SHUTDOWN_GRACE_MS` to finish, aborts the rest (they stay pending and are
    /// reclaimed by another replica), and returns `true` when nothing had to be aborted.
    pub async fn run_until(self, shutdown: impl Future<Output = ()>) -> bool {
        let Processor { config, reconciler, parts, metrics_listener } = self;
        let streams: Vec<Stream> = parts.iter().map(|(w, _)| w.stream.clone()).collect();
        tracing::info!(
            consumer = %config.consumer,
            group = %config.group,
            stream = %streams[0].keys.events,
            partitions = streams.len(),
            "processor starting"
        );
        // Redis's clock before the first entry is read; kept in step while running.
        let clock_con = parts[0].0.stream.connection();
        let _ = tokio::time::timeout(Duration::from_secs(2), crate::clock::sync(&mut clock_con.clone())).await;
        let clock = tokio::spawn(crate::clock::keep(clock_con));
        let (stop_tx, stop) = watch::channel(false);
        // The CONCURRENCY slots, shared by every partition.
        let permits = Arc::new(tokio::sync::Semaphore::new(config.concurrency));
        let dispatchers: Vec<Arc<Dispatcher>> = parts
            .iter()
            .map(|(worker, _)| Arc::new(Dispatcher::new(worker.clone(), permits.clone(), stop.clone())))
            .collect();

        let mut health =
            {
                let streams = Arc::new(streams);
                let handler = move |req: Request<Incoming>| {
                    let streams = streams.clone();
                    async move { crate::health::answer(&streams, req).await }
                };
                let options = ServeOptions {
                    header_read_timeout: Duration::from_secs(10),
                    shutdown_grace: Duration::from_secs(1),
                    max_connections: 256,
                };
                let d = dispatchers[0].clone();
                tokio::spawn(shared::http::serve(metrics_listener, Arc::new(handler), options, async move {
                    d.stopped().await
                }))
            };
        // One lock keeper: the meeting locks are shared by every partition.
        let mut lease_keepers =
            vec![tokio::spawn(crate::downstream::lock::keep(parts[0].0.locks.clone(), config.timing.renew_every))];
        // The reconciler: one pass per interval across replicas (its lease); stopped with the
        // lease keepers (a pass cut short is done again by the next holder).
        crate::metrics::reconcile_init();
        let reconciling = tokio::spawn(reconciler.run(config.consumer.clone()));
        let mut reclaimers = Vec::new();
        let mut tidiers = Vec::new();
        let mut readers = Vec::new();
        for ((worker, reader), d) in parts.into_iter().zip(&dispatchers) {
            lease_keepers.push(tokio::spawn(crate::delivery::lease::run(
                d.held.clone(),
                worker.stream.clone(),
                config.timing.renew_every,
            )));
            reclaimers.push({
                let d = d.clone();
                let (timing, batch) = (config.timing, config.batch_size);
                tokio::spawn(async move { crate::intake::reclaim::run(&d, timing, batch).await })
            });
            // Always, even with parking off: entries parked before it was turned off still come
            // back. Stopped with the tidiers (a due entry is re-appended by whoever looks next).
            tidiers.push({
                let (d, every) = (d.clone(), crate::outcome::parking::poll_every(config.park.initial));
                tokio::spawn(async move { crate::housekeeping::forward_due(&d, every).await })
            });
            tidiers.push({
                let d = d.clone();
                let retention =
                    crate::housekeeping::Retention { stream: config.stream_retention, dead: config.dead_retention };
                let (every, reap) = (config.trim_interval, config.consumer_idle_reap);
                tokio::spawn(async move { crate::housekeeping::tidy(&d, every, retention, reap).await })
            });
            readers.push({
                let d = d.clone();
                let (batch, block) = (config.batch_size, config.timing.block);
                tokio::spawn(async move { crate::intake::reader::run(&d, reader, batch, block).await })
            });
        }

        shutdown.await;
        let deadline = Instant::now() + config.common.shutdown_grace;
        tracing::info!("shutting down: no new entries; finishing in-flight ones");
        let _ = stop_tx.send(true);
        tidiers.iter().for_each(|t| t.abort());
        let finished = tokio::time::timeout_at(deadline, async {
            for task in readers.iter_mut().chain(reclaimers.iter_mut()) {
                let _ = task.await;
            }
            // Nothing new starts now: what was read ahead goes back at once, for another replica.
            for d in &dispatchers {
                d.hand_back().await;
            }
            for d in &dispatchers {
                d.tasks.close();
                d.tasks.wait().await;
            }
        })
        .await
        .is_ok();
        if !finished {
            readers.iter().chain(&reclaimers).for_each(|t| t.abort());
            let unfinished: usize = dispatchers.iter().map(|d| d.held.abort_all()).sum();
            tracing::warn!(
                entries = unfinished,
                "grace period over; unfinished entries stay pending and are handed back for another replica"
            );
            // Bounded: a silent Redis must not hold the exit up.
            let _ = tokio::time::timeout(Duration::from_millis(500), async {
                for d in &dispatchers {
                    d.hand_back().await;
                }
            })
            .await;
        }
        // A clean stop leaves no consumer behind (it would show in `processor status` until
        // reaped): removed when nothing is pending under its name. Bounded: a silent Redis must
        // not hold the exit up.
        let _ = tokio::time::timeout(Duration::from_millis(500), async {
            for d in &dispatchers {
                match crate::housekeeping::remove_own_consumer(&d.worker.stream).await {
                    Ok(true) => tracing::info!(consumer = %config.consumer, "removed this consumer from the group"),
                    Ok(false) => tracing::info!(
                        consumer = %config.consumer,
                        "this consumer still has entries pending (handed back for another replica); kept"
                    ),
                    Err(err) => tracing::debug!(error = %err, "removing this consumer failed; the reaper will"),
                }
            }
        })
        .await;
        lease_keepers.iter().for_each(|t| t.abort());
        reconciling.abort();
        clock.abort();
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
