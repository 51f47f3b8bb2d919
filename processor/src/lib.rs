//! The hookstream processor: consumes `{ns}:events` through a consumer group and does what each
//! event asks for — schedule or cancel Meeting BaaS recording bots, forward bot results — with
//! retries, a lease while working, reclaim of abandoned entries, and a dead stream for what
//! cannot be done. See [`stream`] for how Redis Streams are used.

pub mod acker;
pub mod cli;
pub mod config;
pub mod handlers;
pub mod metrics;
pub mod ops;
pub mod retry;
pub mod service;
pub mod stream;
pub mod worker;

pub use config::ProcessorConfig;
pub use service::Processor;
