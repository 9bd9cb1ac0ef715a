//! Who aggregates which symbol. Each symbol has a lease in Redis
//! (`<instance>#<epoch>`, with a TTL). The epoch is a fencing token: it goes
//! up at every acquisition, and the aggregator's write script refuses a
//! writer whose lease value is not the current one, so an owner that stalled
//! past its TTL cannot overwrite its successor. Live instances heartbeat into
//! a sorted set, and each takes a fair share of the symbols.

use std::time::Duration;

use tickmesh_core::Result;
use tickmesh_runtime::RedisHandle;
use tickmesh_runtime::proto_time::now_nanos;
use tickmesh_runtime::redis_conn::unavailable;

use crate::keys::CandleKeys;

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

pub struct Leases {
    redis: RedisHandle,
    keys: CandleKeys,
    pub instance: String,
    ttl: Duration,
    acquire: redis::Script,
    renew: redis::Script,
    release: redis::Script,
}

impl Leases {
    pub fn new(redis: RedisHandle, keys: CandleKeys, instance: String, ttl: Duration) -> Self {
        Self {
            redis,
            keys,
            instance,
            ttl,
            acquire: redis::Script::new(ACQUIRE_LUA),
            renew: redis::Script::new(RENEW_LUA),
            release: redis::Script::new(RELEASE_LUA),
        }
    }

    fn ttl_ms(&self) -> u64 {
        self.ttl.as_millis() as u64
    }

    /// Records this instance as alive; returns how many instances are.
    pub async fn heartbeat(&self) -> Result<usize> {
        let now_ms = now_nanos() / 1_000_000;
        let dead_before = now_ms - 3 * self.ttl_ms() as i64;
        let mut conn = self.redis.conn();
        let (live,): (usize,) = redis::pipe()
            .cmd("ZADD")
            .arg(self.keys.members())
            .arg(now_ms)
            .arg(&self.instance)
            .ignore()
            .cmd("ZREMRANGEBYSCORE")
            .arg(self.keys.members())
            .arg("-inf")
            .arg(format!("({dead_before}"))
            .ignore()
            .cmd("ZCARD")
            .arg(self.keys.members())
            .query_async(&mut conn)
            .await
            .map_err(unavailable)?;
        Ok(live.max(1))
    }

    /// Leaves the set of live instances (graceful shutdown).
    pub async fn leave(&self) {
        let mut conn = self.redis.conn();
        let _: redis::RedisResult<i64> = redis::cmd("ZREM")
            .arg(self.keys.members())
            .arg(&self.instance)
            .query_async(&mut conn)
            .await;
    }

    /// Takes the symbol's lease if nobody holds it; returns the lease value.
    pub async fn try_acquire(&self, symbol: &str) -> Result<Option<String>> {
        let mut conn = self.redis.conn();
        self.acquire
            .key(self.keys.lease(symbol))
            .key(self.keys.lease_epoch(symbol))
            .arg(&self.instance)
            .arg(self.ttl_ms())
            .invoke_async(&mut conn)
            .await
            .map_err(unavailable)
    }

    /// Extends the leases still held; returns, per lease, whether it still is.
    pub async fn renew(&self, held: &[(String, String)]) -> Result<Vec<bool>> {
        let mut out = Vec::with_capacity(held.len());
        let mut conn = self.redis.conn();
        for (symbol, value) in held {
            let ok: i64 = self
                .renew
                .key(self.keys.lease(symbol))
                .arg(value)
                .arg(self.ttl_ms())
                .invoke_async(&mut conn)
                .await
                .map_err(unavailable)?;
            out.push(ok == 1);
        }
        Ok(out)
    }

    pub async fn release(&self, symbol: &str, value: &str) {
        let mut conn = self.redis.conn();
        let _: redis::RedisResult<i64> = self
            .release
            .key(self.keys.lease(symbol))
            .arg(value)
            .invoke_async(&mut conn)
            .await;
    }
}

/// How many symbols each of `live` instances should own.
pub fn fair_share(symbols: usize, live: usize) -> usize {
    symbols.div_ceil(live.max(1))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shares() {
        assert_eq!(fair_share(10, 3), 4);
        assert_eq!(fair_share(0, 3), 0);
        assert_eq!(fair_share(5, 0), 5);
    }
}
