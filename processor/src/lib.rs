//! The hookstream processor: consumes `{ns}:events` through a consumer group and does what each
//! event asks for — schedule or cancel Meeting BaaS recording bots, forward bot results — with
//! retries, a lease while working, reclaim of abandoned entries, and a dead stream for what
//! cannot be done. See [`stream`] for how Redis Streams are used.

//!
//! Modules, from the top down (a module uses only those below it):
//! `service` (the supervisor) → `reader`, `lease`, `housekeeping` (reclaimer, forwarder of
//! parked entries, tidier), `reconcile`, `health` (the loops) →
//! `dispatch` (slots, tasks) → `worker` (one delivery's handling: fan-out, meeting lock,
//! retries) → `delivery` (the `Delivery` and the table of what is held), `retry`, `parked` (the
//! retry set's records), `lock` (one
//! meeting at a time), `handlers/` → `breaker` (a downstream's breaker, shared through Redis),
//! `limiter` (the shared API write limit), `waits` (waits that
//! do not count against an attempt), `acker` → `stream` (commands) → `replies` (typed Redis
//! replies), used by `ops` (operator commands) too; `events` (the table of known event names)
//! and `metrics` below everything. No module imports one above it.

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
