//! The full refresh, shared by every instance of a poller: one cursor in Redis over the list
//! of symbols that are open now (the same list on every instance, in spec order). An instance
//! about to send claims the next codes; so N instances split one full refresh instead of each
//! doing its own, and the refresh time is the mesh's, not an instance's.
//!
//! A cycle starts at position 0 and ends when its last code is claimed; a claim never crosses
//! into the next cycle. The next cycle begins no sooner than `refresh_interval` after the
//! previous one began.

use std::time::Duration;

use tickmesh_core::Result;
use tickmesh_runtime::RedisHandle;
use tickmesh_runtime::redis_conn::unavailable;

/// KEYS: cursor hash {pos, cycle, started (ms)}. ARGV: list length, most to claim, refresh
/// interval ms. Returns {1, start, count, cycle, started ms, last (1/0)} for a claim, or
/// {0, wait ms, 0, cycle, started ms, 0} while the next cycle may not begin yet.
const CLAIM_LUA: &str = r#"
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local n = tonumber(ARGV[1])
local want = tonumber(ARGV[2])
local interval = tonumber(ARGV[3])
local pos = tonumber(redis.call('HGET', KEYS[1], 'pos') or '-1')
local cycle = tonumber(redis.call('HGET', KEYS[1], 'cycle') or '0')
local started = tonumber(redis.call('HGET', KEYS[1], 'started') or '0')
if pos < 0 or pos >= n then
  if pos >= 0 and now < started + interval then
    return {0, started + interval - now, 0, cycle, started, 0}
  end
  pos = 0
  cycle = cycle + 1
  started = now
  redis.call('HSET', KEYS[1], 'cycle', string.format('%d', cycle), 'started', string.format('%d', started))
end
local take = want
if take > n - pos then take = n - pos end
redis.call('HSET', KEYS[1], 'pos', string.format('%d', pos + take))
local last = 0
if pos + take >= n then last = 1 end
return {1, pos, take, cycle, started, last}
"#;

/// What a claim got.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Claim {
    /// Positions `start .. start + count` of the open list, in cycle `cycle` (which began at
    /// `started_ms` on Redis's clock); `last` when they end the cycle.
    Codes {
        start: usize,
        count: usize,
        cycle: u64,
        started_ms: i64,
        last: bool,
    },
    /// The next cycle may begin in this long.
    Wait(Duration),
}

pub struct RefreshCursor {
    redis: RedisHandle,
    key: String,
    script: redis::Script,
}

impl RefreshCursor {
    /// The cursor of poller `name`, under the same hash tag as its rate limit (`limit_id`), so
    /// a Redis Cluster keeps a poller's keys in one slot.
    pub fn new(redis: RedisHandle, limit_id: &str, name: &str) -> Self {
        Self {
            key: format!("{}:poller:{{{limit_id}}}:cursor:{name}", redis.prefix()),
            redis,
            script: redis::Script::new(CLAIM_LUA),
        }
    }

    /// Claims up to `want` codes of an open list of `len`.
    pub async fn claim(
        &self,
        len: usize,
        want: usize,
        refresh_interval: Duration,
    ) -> Result<Claim> {
        if len == 0 || want == 0 {
            return Ok(Claim::Wait(Duration::ZERO));
        }
        let mut conn = self.redis.conn();
        let reply: (i64, i64, i64, i64, i64, i64) = self
            .script
            .key(&self.key)
            .arg(len)
            .arg(want)
            .arg(refresh_interval.as_millis() as u64)
            .invoke_async(&mut conn)
            .await
            .map_err(unavailable)?;
        let (claimed, start, count, cycle, started_ms, last) = reply;
        Ok(if claimed == 1 {
            Claim::Codes {
                start: start.max(0) as usize,
                count: count.max(0) as usize,
                cycle: cycle.max(0) as u64,
                started_ms,
                last: last == 1,
            }
        } else {
            Claim::Wait(Duration::from_millis(start.max(0) as u64))
        })
    }
}
