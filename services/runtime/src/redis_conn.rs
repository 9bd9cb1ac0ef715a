//! The Redis connection every service shares.
//!
//! Commands go through a lazily connected, auto-reconnecting
//! [`ConnectionManager`]: a process starts (and reports NOT_SERVING) while
//! Redis is down, and recovers by itself when Redis returns. Blocking reads
//! (`XREAD BLOCK`) get dedicated connections so they never stall other commands.

use std::sync::Arc;
use std::time::Duration;

use redis::aio::{ConnectionManager, ConnectionManagerConfig, MultiplexedConnection};
use redis::{AsyncConnectionConfig, RedisError};
use tickmesh_core::Error;

use crate::config::RedisConfig;

#[derive(Clone)]
pub struct RedisHandle {
    client: redis::Client,
    manager: ConnectionManager,
    prefix: Arc<str>,
    connect_timeout: Duration,
    response_timeout: Duration,
}

impl RedisHandle {
    /// Prepares the connection; does not wait for Redis to be up.
    pub fn new(config: &RedisConfig) -> Result<Self, Error> {
        let client = redis::Client::open(config.url.as_str())
            .map_err(|e| Error::FailedPrecondition(format!("redis.url: {e}")))?;
        let manager_config = ConnectionManagerConfig::new()
            .set_connection_timeout(Some(config.connect_timeout))
            .set_response_timeout(Some(config.response_timeout))
            .set_number_of_retries(2)
            .set_min_delay(Duration::from_millis(50))
            .set_max_delay(Duration::from_millis(500));
        let manager = ConnectionManager::new_lazy_with_config(client.clone(), manager_config)
            .map_err(|e| Error::FailedPrecondition(format!("redis: {e}")))?;
        Ok(Self {
            client,
            manager,
            prefix: Arc::from(config.key_prefix.as_str()),
            connect_timeout: config.connect_timeout,
            response_timeout: config.response_timeout,
        })
    }

    /// The shared, multiplexed connection (cheap to clone).
    pub fn conn(&self) -> ConnectionManager {
        self.manager.clone()
    }

    /// A connection of its own for blocking commands; `block` is the longest
    /// block the caller will ask for, so the response timeout leaves room for it.
    pub async fn dedicated(&self, block: Duration) -> Result<MultiplexedConnection, Error> {
        let config = AsyncConnectionConfig::new()
            .set_connection_timeout(Some(self.connect_timeout))
            .set_response_timeout(Some(block + self.response_timeout));
        self.client
            .get_multiplexed_async_connection_with_config(&config)
            .await
            .map_err(unavailable)
    }

    /// Key prefix for every key tickmesh writes.
    pub fn prefix(&self) -> &str {
        &self.prefix
    }

    /// True when Redis answers PING within the response timeout.
    pub async fn ping(&self) -> bool {
        let mut conn = self.conn();
        let cmd = redis::cmd("PING");
        let ping = cmd.query_async::<String>(&mut conn);
        matches!(
            tokio::time::timeout(self.response_timeout, ping).await,
            Ok(Ok(_))
        )
    }
}

/// A Redis failure as the domain sees it: the backend is unavailable, retry.
pub fn unavailable(error: RedisError) -> Error {
    if error.kind() == redis::ErrorKind::Server(redis::ServerErrorKind::NoScript) {
        return Error::Internal(format!("redis script: {error}"));
    }
    Error::Unavailable(format!("redis: {error}"))
}
