//! The admission logic, in one script per room and pass.
//!
//! Every instance runs [`crate::scheduler`], which calls [`Admitter::pass`]
//! for each room every `queue.admission_interval`. One pass is one Lua script
//! over the room's hash-tagged keys, so it is atomic: however many instances
//! run passes at once, they are serialized by Redis, each sees the state the
//! previous one left, and none can admit past capacity or skip anyone. In
//! order, a pass:
//!
//! 1. opens a random pre-queue room whose opening time has come: its
//!    pre-queue users, in the order of their random draw, get the next
//!    tickets, ahead of everyone who enters from then on ([`OPEN_IF_DUE`],
//!    which Enter runs too, so no one can enter ahead of the pre-queue);
//! 2. drops active sessions whose expiry has passed (`active` is scored by
//!    expiry) and waiters whose last heartbeat is older than the room's
//!    position expiry (at most 1,000 per pass) — except within a position
//!    expiry after an outage: when no pass ran for over two thirds of it
//!    and three admission intervals (Redis or every instance was down, so
//!    no heartbeat could be recorded either), the pass notes `resume_ms` and expires no place until a full
//!    position expiry later, instead of emptying the line;
//! 3. refills the room's token bucket at `admissions_per_second` (it holds
//!    at most one second's worth, at least one admission), starting at the
//!    opening time, never while the linked campaign is sold out;
//! 4. admits `min(budget, capacity − active, queue.admission_batch)` users
//!    from the head of the line (`ZPOPMIN`: lowest tickets first), each with
//!    session expiry `now + session_duration`;
//! 5. updates the measured admission rate (an exponentially weighted moving
//!    average, time constant 5 s, sampled at most every 250 ms) that
//!    estimated waits use;
//! 6. appends one entry to the room's change stream naming the admitted
//!    users and their session expiry and counting the expired places, so
//!    WatchPosition can push the admission at once, and everyone else can
//!    move up by the number admitted (they all came from the head of the
//!    line) without a read unless places expired.
//!
//! "Now" is an argument (the injected clock), never Redis's time. Units: ms,
//! and thousandths of an admission for the rate and the bucket, so every
//! number in the script is an integer far below 2^53.

use tickmesh_core::{Error, Result};
use tickmesh_runtime::RedisHandle;
use tickmesh_runtime::redis_conn::unavailable;

use crate::keys::Keys;

/// Lua: opens a random pre-queue room when its time has come. Arguments are
/// the room, waiting, seen and pre-queue keys and now (ms).
pub const OPEN_IF_DUE: &str = r#"
local function open_if_due(room, wait, seen, pre, now)
  local m = redis.call('HMGET', room, 'method', 'opens_ms', 'shuffled')
  if m[1] ~= 'random' or m[3] == '1' or now < tonumber(m[2]) then return end
  local users = redis.call('ZRANGE', pre, 0, -1)
  local t = tonumber(redis.call('HGET', room, 'tick') or '0')
  for i, u in ipairs(users) do
    redis.call('ZADD', wait, t + i, u)
    redis.call('ZADD', seen, now, u)
  end
  redis.call('HSET', room, 'tick', t + #users, 'shuffled', '1')
  redis.call('DEL', pre)
end
"#;

const PASS: &str = r#"
local room, wait, seen, active, pre, chg = KEYS[1], KEYS[2], KEYS[3], KEYS[4], KEYS[5], KEYS[6]
local now = tonumber(ARGV[1])
local batch = tonumber(ARGV[2])
local r = redis.call('HMGET', room, 'cap', 'rate_m', 'sess_ms', 'exp_ms', 'opens_ms', 'tok', 'tok_ms', 'sold', 'ewma_m', 'ewma_ms', 'ewma_n', 'resume_ms')
if not r[1] then return {-1, 0, 0, 0} end
local cap, rate, sess, exp, opens = tonumber(r[1]), tonumber(r[2]), tonumber(r[3]), tonumber(r[4]), tonumber(r[5])
open_if_due(room, wait, seen, pre, now)

local ended = redis.call('ZREMRANGEBYSCORE', active, '-inf', now)
-- No pass for over two thirds of the position expiry (and three admission
-- intervals): Redis (or every instance) was down, and heartbeats could not
-- be recorded either. Places only expire again a full position expiry
-- after service resumed.
local resume = tonumber(r[12])
if r[7] and now - tonumber(r[7]) > math.max(exp * 2 / 3, 3 * tonumber(ARGV[4])) then
  resume = now
  redis.call('HSET', room, 'resume_ms', now)
end
local stale = {}
if not resume or now - resume >= exp then
  stale = redis.call('ZRANGEBYSCORE', seen, '-inf', '(' .. (now - exp), 'LIMIT', 0, 1000)
end
if #stale > 0 then
  redis.call('ZREM', wait, unpack(stale))
  redis.call('ZREM', seen, unpack(stale))
end

local tok = tonumber(r[6]) or 0
local last = tonumber(r[7]) or now
local admitted = {}
local expiry = now + sess
if now < opens or r[8] == '1' then
  tok = 0
else
  if now > last then tok = math.min(tok + math.floor(rate * (now - last) / 1000), math.max(1000, rate)) end
  local n = math.min(cap - redis.call('ZCARD', active), math.floor(tok / 1000), batch)
  if n > 0 then
    local popped = redis.call('ZPOPMIN', wait, n)
    for i = 1, #popped, 2 do
      redis.call('ZADD', active, expiry, popped[i])
      admitted[#admitted + 1] = popped[i]
    end
    if #admitted > 0 then
      redis.call('ZREM', seen, unpack(admitted))
      redis.call('HINCRBY', room, 'served', #admitted)
      tok = tok - 1000 * #admitted
    end
  end
end
redis.call('HSET', room, 'tok', tok, 'tok_ms', math.max(now, last))

local em, ems, en = tonumber(r[9]) or 0, tonumber(r[10]) or now, (tonumber(r[11]) or 0) + #admitted
if now - ems >= 250 then
  local dt = now - ems
  em = em + (1 - math.exp(-dt / 5000)) * (en * 1000000 / dt - em)
  redis.call('HSET', room, 'ewma_m', math.floor(em), 'ewma_ms', now, 'ewma_n', 0)
elseif #admitted > 0 or not r[10] then
  redis.call('HSET', room, 'ewma_n', en, 'ewma_ms', ems)
end

if #admitted > 0 or ended > 0 or #stale > 0 then
  redis.call('XADD', chg, 'MAXLEN', '~', ARGV[3], '*', 'k', 'a', 'i', now, 'x', expiry, 'g', #stale, 'u', table.concat(admitted, '\n'))
end
return {1, #admitted, ended, #stale}
"#;

/// What one pass did in one room.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PassOutcome {
    pub admitted: u64,
    pub sessions_ended: u64,
    pub places_expired: u64,
}

pub struct Admitter {
    redis: RedisHandle,
    keys: Keys,
    batch: u64,
    changes_max_len: u64,
    /// How often passes run (`queue.admission_interval`), in ms: a longer
    /// gap between two passes of a room is an outage.
    interval_ms: u64,
    pass: redis::Script,
}

impl Admitter {
    pub fn new(
        redis: RedisHandle,
        keys: Keys,
        batch: u64,
        changes_max_len: u64,
        interval: std::time::Duration,
    ) -> Self {
        Self {
            redis,
            keys,
            batch,
            changes_max_len,
            interval_ms: interval.as_millis() as u64,
            pass: redis::Script::new(&format!("{OPEN_IF_DUE}\n{PASS}")),
        }
    }

    /// One admission pass over `room`; `None` when the room does not exist.
    pub async fn pass(&self, room: &str, now_ms: i64) -> Result<Option<PassOutcome>> {
        let k = &self.keys;
        let r: Vec<i64> = self
            .pass
            .key(k.room(room))
            .key(k.waiting(room))
            .key(k.seen(room))
            .key(k.active(room))
            .key(k.pre_queue(room))
            .key(k.changes(room))
            .arg(now_ms)
            .arg(self.batch)
            .arg(self.changes_max_len)
            .arg(self.interval_ms)
            .invoke_async(&mut self.redis.conn())
            .await
            .map_err(unavailable)?;
        match r.as_slice() {
            [-1, ..] => Ok(None),
            [1, admitted, ended, expired] => {
                metrics::counter!(tickmesh_runtime::metrics::catalogue::QUEUE_ADMITTED)
                    .increment((*admitted).max(0) as u64);
                Ok(Some(PassOutcome {
                    admitted: *admitted as u64,
                    sessions_ended: *ended as u64,
                    places_expired: *expired as u64,
                }))
            }
            other => Err(Error::Internal(format!(
                "admission script answered {other:?}"
            ))),
        }
    }
}
