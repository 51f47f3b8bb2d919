//! The hookstream processor: consumes `{ns}:events` through a consumer group and does what each
//! event asks for — schedule or cancel Meeting BaaS recording bots, forward bot results — with
//! retries, a lease while working, reclaim of abandoned entries, and a dead stream for what
//! cannot be done. See [`stream`] for how Redis Streams are used.

//!
//! Modules, from the top down, in the order one entry flows (a module uses only those below it;
//! docs/design.md, "The processor's layers"): `service` (the supervisor), `cli` → `housekeeping`
//! (tidier, forwarder of parked entries), `health` → `intake` (reader, reclaim, dispatch),
//! `ops` (operator commands) → `config` (assembled here, each part given its own settings) →
//! `delivery` (the `Delivery`, its lease, the acker, the worker), `reconcile` (settings, pass,
//! runner) → `outcome` (in-place retry, parking) → `handlers` (the decisions) → `downstream`
//! (API client, breaker, limiter, meeting lock, waits) → `traces`, `http` (a downstream call),
//! `stream` (commands) → `replies`, `clock`, `timing`, `metrics`, `events` below everything.

pub mod calendars;
pub mod cli;
pub mod clock;
pub mod config;
pub mod delivery;
pub mod downstream;
pub mod events;
pub mod handlers;
pub mod health;
pub mod housekeeping;
pub mod http;
pub mod intake;
pub mod metrics;
pub mod ops;
pub mod outcome;
pub mod reconcile;
pub mod replies;
pub mod service;
pub mod stream;
pub mod timing;
pub mod traces;

pub use config::ProcessorConfig;
pub use service::Processor;
