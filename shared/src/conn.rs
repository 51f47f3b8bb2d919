//! How hookstream connects to Redis.
//!
//! A [`ConnectionManager`] is one multiplexed connection that every task shares (concurrent
//! commands are pipelined on one socket) and that reconnects by itself. It is created lazily, so
//! a service starts even while Redis is down and serves again when Redis is back, without a
//! restart. Waits are bounded: a connection attempt gives up after [`CONNECT_TIMEOUT`], and a
//! reconnect makes only a couple of quick attempts, so a request that arrives while Redis is down
//! fails fast (the ingress answers 503) instead of hanging.

use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use redis::{Client, RedisResult};
use std::time::Duration;

/// How long one TCP connect to Redis may take.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(1);

/// Opens a client for `url` (checked here, so a bad URL stops start-up).
pub fn client(url: &str) -> RedisResult<Client> {
    Client::open(url)
}

/// A shared, lazily connecting, self-healing connection.
///
/// `response_timeout` bounds every command; pass `None` only for connections that run blocking
/// commands (XREADGROUP BLOCK), which must never share a socket with other work.
pub fn manager(client: Client, response_timeout: Option<Duration>) -> RedisResult<ConnectionManager> {
    let config = ConnectionManagerConfig::new()
        .set_connection_timeout(Some(CONNECT_TIMEOUT))
        .set_response_timeout(response_timeout)
        .set_number_of_retries(1)
        .set_min_delay(Duration::from_millis(50))
        .set_max_delay(Duration::from_millis(500));
    ConnectionManager::new_lazy_with_config(client, config)
}
