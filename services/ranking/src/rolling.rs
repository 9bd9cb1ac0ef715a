//! The rolling 24 h window, kept incrementally.
//!
//! Every event updates the rolling window like any other window (in the same
//! script), so reads are as cheap as for a fixed window. What the sliding
//! window needs on top is the *roll-off*: when an hour bucket leaves the last
//! 24, its contribution is taken out again, member by member:
//!
//! - increment: the bucket's score is subtracted from the rolling score; a
//!   member left at 0 with no event in a later bucket is removed;
//! - best: a member whose rolling entry *is* the leaving bucket's entry gets
//!   the best entry of the later buckets instead (or is removed).
//!
//! The rolling state hash holds `from` (open time, ms, of the oldest bucket
//! still counted) and, while a bucket is being rolled off in chunks, a
//! `cursor` (the last entry processed). Each chunk is one script that checks
//! `from` first, so any number of instances can roll concurrently and every
//! bucket is taken out exactly once. Reads of the rolling window catch up
//! first; a background task does it for every board each maintenance tick.
//!
//! Hour buckets of a rolling board are kept 26 h after they close, so the
//! roll-off always finds them. If no instance ran for longer than that, the
//! rolling window is rebuilt from the last 24 buckets instead (logged).
//!
//! A rolling window added to a board that already has hour buckets is built
//! from them (a rebuild, and a second one once every instance's board cache
//! knows about it). Every rebuild marks the state `built` in the same
//! script, and a catch-up that finds a rolling board without the mark builds
//! it: so an upsert that stored the board and died before building the
//! window (or a Redis that came back without the build) is repaired, rather
//! than leaving a window that misses those hours and goes below zero when
//! they roll off.

use std::time::Duration;

use tickmesh_calendar::{Bucket, Interval, Unit};
use tickmesh_core::Result;
use tickmesh_runtime::RedisHandle;
use tickmesh_runtime::redis_conn::unavailable;

use crate::board::WindowKind;
use crate::board::{Board, Operator};
use crate::keys::Keys;
use crate::lua;
use crate::record::order_code;
use crate::window::{Window, window_at};

/// Hour buckets summed into the rolling window, the current one included.
pub const ROLLING_HOURS: usize = 24;
/// Entries of a leaving bucket handled per script call.
const CHUNK: usize = 500;
/// Beyond this lag the leaving buckets may have expired: rebuild instead.
const MAX_ROLL_LAG_HOURS: i64 = 25;

/// KEYS: rolling state, rolling entries, rolling members, leaving bucket's
/// entries, leaving bucket's members, changes, then the members hashes of the
/// later buckets (newest first).
/// ARGV: from (ms) expected, next from (ms), operator, order, chunk size,
/// changes max length.
/// Returns {status, from}: 0 nothing done (`from` moved already), 1 the bucket
/// is rolled off, 2 a chunk was done and more remain.
const ROLL_OFF_LUA: &str = r#"
local from = redis.call('HGET', KEYS[1], 'from')
if from ~= ARGV[1] then return {0, from or ''} end
local op, order, chunk = ARGV[3], ARGV[4], tonumber(ARGV[5])
local cursor = redis.call('HGET', KEYS[1], 'cursor')
local low = '-'
if cursor then low = '(' .. cursor end
local batch = redis.call('ZRANGE', KEYS[4], low, '+', 'BYLEX', 'LIMIT', 0, chunk)
local changed = false
for _, eb in ipairs(batch) do
  local member = member_of(eb)
  local er = redis.call('HGET', KEYS[3], member)
  if er then
    local replacement = er
    if op == 'i' then
      local s = score_of(order, er) - score_of(order, eb)
      local keep = s ~= 0
      if not keep then
        for j = 7, #KEYS do
          if redis.call('HEXISTS', KEYS[j], member) == 1 then keep = true break end
        end
      end
      if keep then replacement = key_of(order, s) .. string.sub(er, 18) else replacement = nil end
    elseif er == eb then
      replacement = nil
      for j = 7, #KEYS do
        local e = redis.call('HGET', KEYS[j], member)
        if e and (replacement == nil or e < replacement) then replacement = e end
      end
    end
    if replacement ~= er then
      changed = true
      redis.call('ZREM', KEYS[2], er)
      if replacement then
        redis.call('ZADD', KEYS[2], 0, replacement)
        redis.call('HSET', KEYS[3], member, replacement)
      else
        redis.call('HDEL', KEYS[3], member)
      end
    end
  end
end
if changed then
  redis.call('XADD', KEYS[6], 'MAXLEN', '~', ARGV[6], '*', 'roll', ARGV[1])
end
if #batch < chunk then
  redis.call('HSET', KEYS[1], 'from', ARGV[2])
  redis.call('HDEL', KEYS[1], 'cursor')
  return {1, ARGV[2]}
end
redis.call('HSET', KEYS[1], 'cursor', batch[#batch])
return {2, ARGV[1]}
"#;

/// KEYS: rolling state, rolling entries, rolling members, changes, then the
/// members hashes of the buckets of the window.
/// ARGV: from (ms), operator, order, changes max length.
const REBUILD_LUA: &str = r#"
local op, order = ARGV[2], ARGV[3]
redis.call('DEL', KEYS[2], KEYS[3])
local acc = {}
for j = 5, #KEYS do
  local all = redis.call('HGETALL', KEYS[j])
  for k = 1, #all, 2 do
    local member, e = all[k], all[k + 1]
    local cur = acc[member]
    if op == 'i' then
      if cur then
        cur.score = cur.score + score_of(order, e)
        if seq_of(e) > cur.seq then cur.seq = seq_of(e) end
      else
        acc[member] = {score = score_of(order, e), seq = seq_of(e)}
      end
    elseif cur == nil or e < cur.entry then
      acc[member] = {entry = e}
    end
  end
end
for member, v in pairs(acc) do
  local e = v.entry
  if e == nil then
    local s = v.score
    if s > MAX then s = MAX elseif s < -MAX then s = -MAX end
    e = key_of(order, s) .. pad(v.seq) .. member
  end
  redis.call('ZADD', KEYS[2], 0, e)
  redis.call('HSET', KEYS[3], member, e)
end
redis.call('HSET', KEYS[1], 'from', ARGV[1], 'built', '1')
redis.call('HDEL', KEYS[1], 'cursor')
redis.call('XADD', KEYS[4], 'MAXLEN', '~', ARGV[4], '*', 'rebuild', ARGV[1])
return 1
"#;

const HOUR: Interval = Interval::new(Unit::Hour, 1);

/// The oldest hour bucket of the rolling window at `now_ns`.
pub fn oldest_bucket(board: &Board, now_ns: i64) -> Bucket {
    let tz = board.tz();
    let mut b = HOUR.bucket(now_ns, tz);
    for _ in 1..ROLLING_HOURS {
        b = HOUR.prev(b, tz);
    }
    b
}

pub struct Roller {
    redis: RedisHandle,
    keys: Keys,
    roll_off: redis::Script,
    rebuild: redis::Script,
    changes_max_len: u64,
    /// How long until every instance's board cache knows a changed board.
    settle: Duration,
}

impl Roller {
    pub fn new(redis: RedisHandle, keys: Keys, changes_max_len: u64, settle: Duration) -> Self {
        Self {
            redis,
            keys,
            roll_off: lua::script(ROLL_OFF_LUA),
            rebuild: lua::script(REBUILD_LUA),
            changes_max_len,
            settle,
        }
    }

    /// The board no longer keeps a rolling window: adding one again builds it.
    pub async fn removed(&self, board: &Board) -> Result<()> {
        let mut conn = self.redis.conn();
        let _: i64 = redis::cmd("HDEL")
            .arg(self.keys.rolling_state(&board.id))
            .arg("built")
            .query_async(&mut conn)
            .await
            .map_err(unavailable)?;
        Ok(())
    }

    /// Takes every hour bucket older than the last 24 out of the board's
    /// rolling window. Returns how many buckets were rolled off.
    pub async fn catch_up(&self, board: &Board, now_ns: i64) -> Result<usize> {
        if !board.keeps(WindowKind::Rolling24h) || board.operator == Operator::Set {
            return Ok(0);
        }
        let tz = board.tz();
        let oldest = oldest_bucket(board, now_ns);
        let oldest_ms = oldest.open_ns.div_euclid(1_000_000);
        let id = board.id.as_str();
        let mut conn = self.redis.conn();
        let (rebuild_at, built): (Option<i64>, bool) = redis::pipe()
            .hget(self.keys.rolling_state(id), "rebuild_at")
            .hexists(self.keys.rolling_state(id), "built")
            .query_async(&mut conn)
            .await
            .map_err(unavailable)?;
        if !built {
            self.added(board, now_ns, now_ns.saturating_add(self.settle_ns()))
                .await?;
            tracing::warn!(board = %id, "rolling window had no build on record (an upsert that did not finish, or redis lost it); built it from the hour buckets");
            return Ok(1);
        }
        if rebuild_at.is_some_and(|at| at <= now_ns.div_euclid(1_000_000)) {
            self.rebuild(board, now_ns).await?;
            let _: i64 = redis::cmd("HDEL")
                .arg(self.keys.rolling_state(id))
                .arg("rebuild_at")
                .query_async(&mut conn)
                .await
                .map_err(unavailable)?;
            tracing::info!(board = %id, "rolling window rebuilt after it was added to the board");
            return Ok(1);
        }
        let mut rolled = 0;
        loop {
            let from: Option<i64> = redis::cmd("HGET")
                .arg(self.keys.rolling_state(id))
                .arg("from")
                .query_async(&mut conn)
                .await
                .map_err(unavailable)?;
            let Some(from_ms) = from else {
                return Ok(rolled); // nothing recorded yet
            };
            if from_ms >= oldest_ms {
                return Ok(rolled);
            }
            let leaving = HOUR.bucket(from_ms.saturating_mul(1_000_000), tz);
            if (oldest.open_ns - leaving.open_ns) / 3_600_000_000_000 > MAX_ROLL_LAG_HOURS {
                tracing::warn!(board = %id, "rolling window fell behind further than its hour buckets are kept; rebuilding it from the last 24 hours");
                self.rebuild(board, now_ns).await?;
                return Ok(rolled + 1);
            }
            let leaving_window = window_at(WindowKind::Hourly, leaving.open_ns, tz);
            // Every later bucket that still counts, newest first.
            let current = window_at(WindowKind::Hourly, now_ns, tz);
            let mut later: Vec<Window> = Vec::new();
            let mut w = current;
            while w.bucket.expect("hourly").open_ns > leaving.open_ns {
                let prev = crate::window::previous(&w, tz).expect("hourly");
                later.push(w);
                w = prev;
            }
            let next_ms = HOUR.next(leaving, tz).open_ns.div_euclid(1_000_000);
            loop {
                let mut pipe = redis::pipe();
                let cmd = pipe.cmd("EVALSHA").arg(self.roll_off.get_hash());
                cmd.arg(6 + later.len())
                    .arg(self.keys.rolling_state(id))
                    .arg(self.keys.entries(id, "24h"))
                    .arg(self.keys.members(id, "24h"))
                    .arg(self.keys.entries(id, &leaving_window.name))
                    .arg(self.keys.members(id, &leaving_window.name))
                    .arg(self.keys.changes(id));
                for w in &later {
                    cmd.arg(self.keys.members(id, &w.name));
                }
                cmd.arg(from_ms)
                    .arg(next_ms)
                    .arg(board.operator.script_code())
                    .arg(order_code(board))
                    .arg(CHUNK)
                    .arg(self.changes_max_len);
                let ((status, _),): ((i64, String),) =
                    lua::query_loading(&mut conn, &pipe, &[&self.roll_off]).await?;
                match status {
                    2 => continue,
                    1 => {
                        rolled += 1;
                        tracing::debug!(board = %id, bucket = %leaving_window.name, "hour rolled off the rolling window");
                        break;
                    }
                    _ => break, // another instance moved on
                }
            }
        }
    }

    fn settle_ns(&self) -> i64 {
        i64::try_from(self.settle.as_nanos()).unwrap_or(i64::MAX / 4)
    }

    /// A rolling window was just added to `board`: builds it from the hour
    /// buckets now, and once more at `again_at_ns`, when every instance's board
    /// cache knows about it (until then another instance may still write the
    /// hour buckets without the rolling window).
    pub async fn added(&self, board: &Board, now_ns: i64, again_at_ns: i64) -> Result<()> {
        self.rebuild(board, now_ns).await?;
        let mut conn = self.redis.conn();
        let _: i64 = redis::cmd("HSET")
            .arg(self.keys.rolling_state(&board.id))
            .arg("rebuild_at")
            .arg(again_at_ns.div_euclid(1_000_000))
            .query_async(&mut conn)
            .await
            .map_err(unavailable)?;
        Ok(())
    }

    /// Recomputes the rolling window from the last 24 hour buckets.
    pub async fn rebuild(&self, board: &Board, now_ns: i64) -> Result<()> {
        let tz = board.tz();
        let id = board.id.as_str();
        let mut w = window_at(WindowKind::Hourly, now_ns, tz);
        let mut buckets = Vec::with_capacity(ROLLING_HOURS);
        for _ in 0..ROLLING_HOURS {
            let prev = crate::window::previous(&w, tz).expect("hourly");
            buckets.push(w);
            w = prev;
        }
        let from_ms = oldest_bucket(board, now_ns).open_ns.div_euclid(1_000_000);
        let mut pipe = redis::pipe();
        let cmd = pipe.cmd("EVALSHA").arg(self.rebuild.get_hash());
        cmd.arg(4 + buckets.len())
            .arg(self.keys.rolling_state(id))
            .arg(self.keys.entries(id, "24h"))
            .arg(self.keys.members(id, "24h"))
            .arg(self.keys.changes(id));
        for b in &buckets {
            cmd.arg(self.keys.members(id, &b.name));
        }
        cmd.arg(from_ms)
            .arg(board.operator.script_code())
            .arg(order_code(board))
            .arg(self.changes_max_len);
        let mut conn = self.redis.conn();
        let _: (i64,) = lua::query_loading(&mut conn, &pipe, &[&self.rebuild]).await?;
        Ok(())
    }
}
