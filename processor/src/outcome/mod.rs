//! How a delivery's handling ends when it does not simply succeed: retried in place with
//! backoff ([`retry`]), or parked in Redis for a later retry ([`parking`]). (The dead letter and
//! the ack are the stream's verdict scripts, `crate::stream`.)

pub mod parking;
pub mod retry;
