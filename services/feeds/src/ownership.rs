//! One owner per (feed, symbol): a lease in Redis with a TTL, renewed by the
//! owner and taken by another instance when it lapses (the owner died). The
//! epoch in the value changes at every acquisition, so a stalled owner that
//! comes back cannot renew its successor's lease.

use std::time::Duration;

use tickmesh_core::Result;
use tickmesh_runtime::RedisHandle;
use tickmesh_runtime::redis_conn::unavailable;

const ACQUIRE_LUA: &str = r#"
if redis.call('EXISTS', KEYS[1]) == 1 then return false end
local epoch = redis.call('INCR', KEYS[2])
local value = ARGV[1] .. '#' .. epoch
redis.call('SET', KEYS[1], value, 'PX', ARGV[2])
return value
"#;

const RENEW_LUA: &str = r#"
if redis.call('GET', KEYS[1]) == ARGV[1] then
  redis.call('PEXPIRE', KEYS[1], ARGV[2])
  return 1
end
return 0
"#;

const RELEASE_LUA: &str = r#"
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
"#;

pub struct FeedLeases {
    redis: RedisHandle,
    feed: String,
    pub instance: String,
    ttl: Duration,
}

impl FeedLeases {
    pub fn new(redis: RedisHandle, feed: &str, instance: String, ttl: Duration) -> Self {
        Self {
            redis,
            feed: feed.to_string(),
            instance,
            ttl,
        }
    }

    fn key(&self, symbol: &str) -> String {
        format!(
            "{}:feeds:{{{}:{symbol}}}:lease",
            self.redis.prefix(),
            self.feed
        )
    }

    fn epoch_key(&self, symbol: &str) -> String {
        format!(
            "{}:feeds:{{{}:{symbol}}}:epoch",
            self.redis.prefix(),
            self.feed
        )
    }

    /// Takes the symbol if nobody holds it; the lease value when taken.
    pub async fn try_acquire(&self, symbol: &str) -> Result<Option<String>> {
        redis::Script::new(ACQUIRE_LUA)
            .key(self.key(symbol))
            .key(self.epoch_key(symbol))
            .arg(&self.instance)
            .arg(self.ttl.as_millis() as u64)
            .invoke_async(&mut self.redis.conn())
            .await
            .map_err(unavailable)
    }

    /// Extends a held lease; false when it is no longer ours.
    pub async fn renew(&self, symbol: &str, value: &str) -> Result<bool> {
        let kept: i64 = redis::Script::new(RENEW_LUA)
            .key(self.key(symbol))
            .arg(value)
            .arg(self.ttl.as_millis() as u64)
            .invoke_async(&mut self.redis.conn())
            .await
            .map_err(unavailable)?;
        Ok(kept == 1)
    }

    /// The current owner's instance name, if any.
    pub async fn owner(&self, symbol: &str) -> Result<Option<String>> {
        let value: Option<String> = redis::cmd("GET")
            .arg(self.key(symbol))
            .query_async(&mut self.redis.conn())
            .await
            .map_err(unavailable)?;
        Ok(value.map(|v| v.rsplit_once('#').map(|(i, _)| i.to_string()).unwrap_or(v)))
    }

    pub async fn release(&self, symbol: &str, value: &str) {
        let _: redis::RedisResult<i64> = redis::Script::new(RELEASE_LUA)
            .key(self.key(symbol))
            .arg(value)
            .invoke_async(&mut self.redis.conn())
            .await;
    }
}
