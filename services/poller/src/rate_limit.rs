//! One rate limit for the whole mesh, per upstream app key, in Redis.
//!
//! The limiter is GCRA (the generic cell rate algorithm) as one Lua script, so every poller
//! instance sharing an app key draws from the same budget atomically, on Redis's clock. A
//! caller *reserves* a send time: the script answers how long to wait (at most the caller's
//! `max_wait`) and books that slot, or says it is further away and books nothing. Slots are
//! handed out in the order they are asked for.
//!
//! GCRA with emission interval `T` and tolerance `τ = burst × T` lets at most
//! `L / T + burst` requests into any window of length `L`. With
//! `T = (1 s + margin) / (rps − burst)` no window of `1 s + margin` holds more than `rps`
//! requests, so the upstream's count over any one second stays within `rps` even when a
//! request reaches it up to `margin` later or earlier than the slot it was given.
//!
//! After a rate-limit answer the caller [`MeshRateLimiter::penalize`]s the key, and the whole
//! mesh slows down: the next slot moves past a pause (`backoff_min`, doubled for each further
//! answer within four `backoff_min`s of the last, up to `backoff_max`), and the rate is halved
//! (down to a sixteenth), then climbs back by half the nominal rate per `recovery` without
//! further answers (additive increase, multiplicative decrease). So a limit that is lower than
//! configured is found rather than hammered, and no instance retries into a refusing upstream.

use std::time::Duration;

use tickmesh_core::Result;
use tickmesh_runtime::RedisHandle;
use tickmesh_runtime::redis_conn::unavailable;

/// The current rate factor in permille of the nominal rate, shared by both scripts:
/// `factor` was set at `since` (µs) and climbs by 500 per `recovery` µs up to 1000.
const FACTOR_LUA: &str = r#"
local function current_factor(factor, since, now, recovery)
  if not factor then return 1000 end
  local f = tonumber(factor) + (now - tonumber(since)) * 500 / recovery
  if f > 1000 then f = 1000 end
  return f
end
"#;

/// KEYS: state hash {tat, factor, since}. ARGV: interval µs, tolerance µs, max wait µs,
/// recovery µs. Returns {1, wait µs} with the slot booked, or {0, wait µs} when the next slot
/// is further than max wait. The theoretical arrival time (TAT) is µs on Redis's clock (exact
/// in a Lua double until the year 2255).
const RESERVE_LUA: &str = r#"
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local recovery = tonumber(ARGV[4])
local st = redis.call('HMGET', KEYS[1], 'tat', 'factor', 'since')
local factor = current_factor(st[2], st[3], now, recovery)
local interval = math.ceil(tonumber(ARGV[1]) * 1000 / factor)
local tolerance = math.ceil(tonumber(ARGV[2]) * 1000 / factor)
local tat = tonumber(st[1] or '0')
if tat < now then tat = now end
local at = tat - tolerance
if at < now then at = now end
local wait = at - now
if wait > tonumber(ARGV[3]) then
  return {0, wait}
end
redis.call('HSET', KEYS[1], 'tat', string.format('%d', tat + interval))
redis.call('PEXPIRE', KEYS[1], math.floor((tat + interval - now + 2 * recovery) / 1000) + 1000)
return {1, wait}
"#;

/// KEYS: state hash, strikes. ARGV: min pause µs, max pause µs, strike memory ms, recovery µs.
/// Counts a strike (forgotten after the memory), pushes the next slot to now + pause, where
/// pause = min × 2^(strikes − 1) up to max, and halves the rate factor. Returns {pause µs,
/// new factor permille}.
const PENALIZE_LUA: &str = r#"
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local recovery = tonumber(ARGV[4])
local strikes = redis.call('INCR', KEYS[2])
redis.call('PEXPIRE', KEYS[2], ARGV[3])
local pause = tonumber(ARGV[1])
local max = tonumber(ARGV[2])
for _ = 2, strikes do
  pause = pause * 2
  if pause >= max then break end
end
if pause > max then pause = max end
local st = redis.call('HMGET', KEYS[1], 'tat', 'factor', 'since')
local factor = math.floor(current_factor(st[2], st[3], now, recovery) / 2)
if factor < 62 then factor = 62 end
local tat = tonumber(st[1] or '0')
if tat < now + pause then tat = now + pause end
redis.call('HSET', KEYS[1], 'tat', string.format('%d', tat), 'factor', string.format('%d', factor),
  'since', string.format('%d', now))
redis.call('PEXPIRE', KEYS[1], math.floor((tat - now + 2 * recovery) / 1000) + 1000)
return {pause, factor}
"#;

/// What a reservation got.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Reservation {
    /// A slot is booked: send after waiting this long.
    Granted(Duration),
    /// The next free slot is this far away (further than the caller would wait); nothing booked.
    Busy(Duration),
}

/// The shape of one limit.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RateShape {
    pub requests_per_second: u32,
    pub burst: u32,
    pub jitter_margin: Duration,
    /// After a slowdown, the time to climb back by half the nominal rate.
    pub recovery: Duration,
}

impl RateShape {
    /// Time between two slots in steady state, in µs (rounded up, so never faster).
    pub fn interval_us(&self) -> u64 {
        let window_us = 1_000_000 + self.jitter_margin.as_micros() as u64;
        let per_window = u64::from(self.requests_per_second.saturating_sub(self.burst).max(1));
        window_us.div_ceil(per_window)
    }

    pub fn interval(&self) -> Duration {
        Duration::from_micros(self.interval_us())
    }

    fn tolerance_us(&self) -> u64 {
        u64::from(self.burst) * self.interval_us()
    }
}

/// What a rate-limit answer did to the mesh.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Slowdown {
    /// Nothing is sent for this long.
    pub pause: Duration,
    /// The rate from now on, in permille of the nominal rate (climbing back over time).
    pub rate_permille: u32,
}

/// The mesh-wide limiter of one upstream app key.
#[derive(Clone)]
pub struct MeshRateLimiter {
    redis: RedisHandle,
    state_key: String,
    strikes_key: String,
    shape: RateShape,
    backoff_min: Duration,
    backoff_max: Duration,
    reserve: redis::Script,
    penalize: redis::Script,
}

/// A stable short id of an upstream app key (FNV-1a 64 of the base URL and the key), so the
/// Redis key names the limit without spelling the app key out.
pub fn limit_id(base_url: &str, app_key: &str) -> String {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for b in base_url
        .trim_end_matches('/')
        .bytes()
        .chain([b'\n'])
        .chain(app_key.bytes())
    {
        hash ^= u64::from(b);
        hash = hash.wrapping_mul(0x0000_0100_0000_01b3);
    }
    format!("{hash:016x}")
}

impl MeshRateLimiter {
    /// The limiter of `limit_id` (see [`limit_id`]); its keys live under
    /// `<prefix>:poller:{<limit_id>}:`.
    pub fn new(
        redis: RedisHandle,
        limit_id: &str,
        shape: RateShape,
        backoff_min: Duration,
        backoff_max: Duration,
    ) -> Self {
        let base = format!("{}:poller:{{{limit_id}}}", redis.prefix());
        Self {
            state_key: format!("{base}:rate"),
            strikes_key: format!("{base}:strikes"),
            redis,
            shape,
            backoff_min,
            backoff_max,
            reserve: redis::Script::new(&format!("{FACTOR_LUA}{RESERVE_LUA}")),
            penalize: redis::Script::new(&format!("{FACTOR_LUA}{PENALIZE_LUA}")),
        }
    }

    pub fn shape(&self) -> RateShape {
        self.shape
    }

    /// Books the next slot if it is at most `max_wait` away.
    pub async fn reserve(&self, max_wait: Duration) -> Result<Reservation> {
        let mut conn = self.redis.conn();
        let (granted, wait_us): (i64, i64) = self
            .reserve
            .key(&self.state_key)
            .arg(self.shape.interval_us())
            .arg(self.shape.tolerance_us())
            .arg(max_wait.as_micros() as u64)
            .arg(self.recovery_us())
            .invoke_async(&mut conn)
            .await
            .map_err(unavailable)?;
        let wait = Duration::from_micros(wait_us.max(0) as u64);
        Ok(if granted == 1 {
            Reservation::Granted(wait)
        } else {
            Reservation::Busy(wait)
        })
    }

    /// Waits for a slot and then until it comes, giving up (with nothing booked) when the
    /// slot would be later than `deadline`. True when the caller may send now.
    pub async fn acquire_by(&self, deadline: tokio::time::Instant) -> Result<bool> {
        let left = deadline.saturating_duration_since(tokio::time::Instant::now());
        match self.reserve(left).await? {
            Reservation::Granted(wait) => {
                tokio::time::sleep(wait).await;
                Ok(true)
            }
            Reservation::Busy(_) => Ok(false),
        }
    }

    fn recovery_us(&self) -> u64 {
        (self.shape.recovery.as_micros() as u64).max(1)
    }

    /// Records a rate-limit answer: the whole mesh pauses and slows down.
    pub async fn penalize(&self) -> Result<Slowdown> {
        let mut conn = self.redis.conn();
        let (pause_us, factor): (i64, i64) = self
            .penalize
            .key(&self.state_key)
            .key(&self.strikes_key)
            .arg(self.backoff_min.as_micros() as u64)
            .arg(self.backoff_max.as_micros() as u64)
            .arg((self.backoff_min.as_millis() as u64 * 4).max(1))
            .arg(self.recovery_us())
            .invoke_async(&mut conn)
            .await
            .map_err(unavailable)?;
        Ok(Slowdown {
            pause: Duration::from_micros(pause_us.max(0) as u64),
            rate_permille: factor.clamp(0, 1000) as u32,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_interval_keeps_the_budget_over_one_second_and_the_margin() {
        let shape = RateShape {
            requests_per_second: 20,
            burst: 0,
            jitter_margin: Duration::from_millis(20),
            recovery: Duration::from_secs(60),
        };
        assert_eq!(shape.interval_us(), 51_000);
        let burst = RateShape { burst: 2, ..shape };
        // 18 steady slots per 1.02 s, plus 2 back to back: still 20 in any 1.02 s.
        assert_eq!(burst.interval_us(), 56_667);
        assert_eq!(burst.tolerance_us(), 113_334);
    }

    #[test]
    fn limit_ids_are_stable_and_tell_keys_apart() {
        let a = limit_id("https://openapi.koreainvestment.com:9443", "key-a");
        assert_eq!(
            a,
            limit_id("https://openapi.koreainvestment.com:9443/", "key-a")
        );
        assert_ne!(
            a,
            limit_id("https://openapi.koreainvestment.com:9443", "key-b")
        );
        assert_ne!(
            a,
            limit_id("https://openapivts.koreainvestment.com:29443", "key-a")
        );
        assert_eq!(a.len(), 16);
    }
}
