//! The calls that leave hookstream and what guards them: the Meeting BaaS API client
//! ([`meeting_baas`]), each downstream's breaker ([`breaker`]), the shared API write limit
//! ([`limiter`]), one meeting at a time ([`lock`]), and the waits that are not an attempt's own
//! time ([`waits`]). The HTTP client and how a failed call is classified are `crate::http`.

pub mod breaker;
pub mod limiter;
pub mod lock;
pub mod meeting_baas;
pub mod waits;
