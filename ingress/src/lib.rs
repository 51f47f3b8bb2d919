//! The hookstream ingress: an HTTP service that takes Meeting BaaS webhooks, checks they are
//! genuine ([`auth`]), works out each event's dedup identity ([`identity`]) and appends first
//! copies to the Redis stream with the shared dedup+append script ([`server`]).
//!
//! It answers 2xx only once the event is in the stream; anything it cannot store gets a 503 with
//! `Retry-After`, so the sender tries again.

pub mod auth;
pub mod config;
pub mod identity;
pub mod metrics;
pub mod rejection;
pub mod server;
pub mod traces;

pub use config::IngressConfig;
pub use server::Ingress;
