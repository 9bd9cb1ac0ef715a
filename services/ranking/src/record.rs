//! Recording events: for each board in a batch, one server-side script that
//! drops duplicate event ids, applies the board's operator to every window,
//! refuses an event whose score would leave the exact range, and writes the
//! entries — atomically, so an event counts in all windows or in none. All
//! boards of a batch go to Redis in one pipelined round trip.
//!
//! With `ranking.replica_acks` on, each board's script is followed by the
//! board's fence and `WAIT` (`tickmesh_runtime::replica_acks`), so on a Redis
//! Cluster every board's master confirms its own part; the events of a board
//! whose replicas did not confirm in time are answered UNAVAILABLE.

use std::sync::Arc;
use std::time::Duration;

use tickmesh_core::{Error, Result};
use tickmesh_runtime::replica_acks::ReplicaAcks;

use crate::board::{Board, WindowKind};
use crate::keys::Keys;
use crate::lua;
use crate::window::{Window, window_at};

/// KEYS: seq, legacy events (sorted set), window index, changes, member data,
/// rolling state, then per window its entries (sorted set) and members
/// (hash), then the [`DEDUPE_PERIODS`] event-id hashes, the current period's
/// first.
/// ARGV: expire at (ms) of the current period's event-id hash, forget legacy
/// events before (ms), operator (i/s/b), order (h/l),
/// changes max length, rolling "from" (ms of the oldest hour in the rolling
/// window, "" without one), window count W, W × (name, expire at ms or 0,
/// close ms or 0), then per event: id, member, value (units), member data.
/// Returns per event: status (1 recorded, 0 duplicate, -1 out of range), then
/// the member's score in each window (0 unless recorded).
///
/// Event ids are remembered in hashes per dedupe period (`dedupe_ttl` /
/// [`DEDUPE_SLICES`]); an event is checked against the current period and the
/// [`DEDUPE_SLICES`] before it, so an id is remembered for at least
/// `dedupe_ttl` and at most a slice longer, and a period's ids go when its
/// hash expires — no sorted set to insert into and trim.
///
/// The script reads first, decides, then writes: one HMGET per dedupe period
/// finds the event ids seen before, one HMGET per window reads the touched members' entries,
/// the events are applied in order to that in-script copy (so an
/// out-of-range event is skipped without writing anything, and each touched
/// (window, member) is written once however many events hit it), and the
/// writes go out as one multi-member ZREM / ZADD / HSET per window. A batch
/// of N events therefore costs a fixed number of commands, not N times as
/// many: under load, group commit makes the batches and this makes them cheap.
const RECORD_LUA: &str = r#"
local op, order = ARGV[3], ARGV[4]
local W = tonumber(ARGV[7])
local first_event = 8 + 3 * W
local unpack = unpack
-- Redis and Lua cap the arguments of one call; larger lists go in chunks.
local CHUNK = 2000
local function each_chunk(list, step, fn)
  local n = #list
  local i = 1
  while i <= n do
    local j = math.min(n, i + CHUNK * step - 1)
    fn(unpack(list, i, j))
    i = j + 1
  end
end
local first_period = 7 + 2 * W
-- Which event ids were seen already (one read per dedupe period).
local ids = {}
for i = first_event, #ARGV, 4 do ids[#ids + 1] = ARGV[i] end
local seen_before = {}
local function mark_seen(cmd, key)
  for c = 1, #ids, CHUNK do
    local part = redis.call(cmd, key, unpack(ids, c, math.min(#ids, c + CHUNK - 1)))
    for k = 1, #part do
      if part[k] then seen_before[ids[c + k - 1]] = true end
    end
  end
end
for k = first_period, #KEYS do mark_seen('HMGET', KEYS[k]) end
-- Ids an earlier version kept in one sorted set, until it empties.
if redis.call('EXISTS', KEYS[2]) == 1 then
  redis.call('ZREMRANGEBYSCORE', KEYS[2], '-inf', '(' .. ARGV[2])
  mark_seen('ZMSCORE', KEYS[2])
end
-- The touched members' current entries in every window (one read per window).
local members, member_index = {}, {}
for i = first_event, #ARGV, 4 do
  local m = ARGV[i + 1]
  if not member_index[m] then
    members[#members + 1] = m
    member_index[m] = #members
  end
end
-- Per window: each touched member's entry (absent: nil), score, the
-- sequence of its score, and whether it changed.
local olds, scores, seqs, dirty = {}, {}, {}, {}
for w = 1, W do
  local o, sc = {}, {}
  for c = 1, #members, CHUNK do
    local got = redis.call('HMGET', KEYS[6 + 2 * w], unpack(members, c, math.min(#members, c + CHUNK - 1)))
    for k = 1, #got do
      local e = got[k]
      if e then
        local m = members[c + k - 1]
        o[m] = e
        sc[m] = score_of(order, e)
      end
    end
  end
  olds[w], scores[w], seqs[w], dirty[w] = o, sc, {}, {}
end
local seq = tonumber(redis.call('GET', KEYS[1]) or '0')
local out, touched, claimed, data = {}, {}, {}, {}
local claimed_now, touched_set = {}, {}
local new_score, new_changed = {}, {}
local n, nclaimed = 0, 0
for i = first_event, #ARGV, 4 do
  local id, member, value, d = ARGV[i], ARGV[i + 1], tonumber(ARGV[i + 2]), ARGV[i + 3]
  if seen_before[id] or claimed_now[id] then
    n = n + 1
    out[n] = 0
    for w = 1, W do n = n + 1; out[n] = 0 end
  else
    local ok = true
    for w = 1, W do
      local cur = scores[w][member]
      local score, changed
      if op == 'i' then
        score = (cur or 0) + value
        changed = cur == nil or value ~= 0
      elseif op == 's' then
        score = value
        changed = cur == nil or value ~= cur
      elseif cur ~= nil and not better(order, value, cur) then
        score, changed = cur, false
      else
        score, changed = value, true
      end
      if score > MAX or score < -MAX then ok = false end
      new_score[w] = score
      new_changed[w] = changed
    end
    n = n + 1
    if ok then
      seq = seq + 1
      claimed_now[id] = true
      claimed[nclaimed + 1] = id
      claimed[nclaimed + 2] = '1'
      nclaimed = nclaimed + 2
      if d ~= '' then data[#data + 1] = member; data[#data + 1] = d end
      out[n] = 1
      for w = 1, W do
        if new_changed[w] then
          scores[w][member] = new_score[w]
          seqs[w][member] = seq
          dirty[w][member] = true
          if not touched_set[member] then
            touched_set[member] = true
            touched[#touched + 1] = member
          end
        end
        n = n + 1
        out[n] = scores[w][member]
      end
    else
      out[n] = -1
      for w = 1, W do n = n + 1; out[n] = 0 end
    end
  end
end
if nclaimed > 0 then
  each_chunk(claimed, 2, function(...) redis.call('HSET', KEYS[first_period], ...) end)
  redis.call('PEXPIREAT', KEYS[first_period], ARGV[1])
  if #data > 0 then
    each_chunk(data, 2, function(...) redis.call('HSET', KEYS[5], ...) end)
  end
  -- Member by member, so an entry's text is built once for every window
  -- that holds the same score and sequence.
  local removed, added, fields = {}, {}, {}
  for w = 1, W do removed[w], added[w], fields[w] = {}, {}, {} end
  for _, member in ipairs(touched) do
    local last_score, last_seq, last_entry
    for w = 1, W do
      if dirty[w][member] then
        local old = olds[w][member]
        if old then
          local r = removed[w]
          r[#r + 1] = old
        end
        local s, q = scores[w][member], seqs[w][member]
        if s ~= last_score or q ~= last_seq then
          last_score, last_seq = s, q
          last_entry = key_of(order, s) .. pad(q) .. member
        end
        local a, f = added[w], fields[w]
        a[#a + 1] = '0'
        a[#a + 1] = last_entry
        f[#f + 1] = member
        f[#f + 1] = last_entry
      end
    end
  end
  for w = 1, W do
    if #removed[w] > 0 then
      each_chunk(removed[w], 1, function(...) redis.call('ZREM', KEYS[5 + 2 * w], ...) end)
    end
    if #added[w] > 0 then
      each_chunk(added[w], 2, function(...) redis.call('ZADD', KEYS[5 + 2 * w], ...) end)
      each_chunk(fields[w], 2, function(...) redis.call('HSET', KEYS[6 + 2 * w], ...) end)
    end
  end
  redis.call('SET', KEYS[1], string.format('%d', seq))
  for w = 1, W do
    local base = 8 + 3 * (w - 1)
    if ARGV[base + 2] ~= '0' and redis.call('ZADD', KEYS[3], 'NX', ARGV[base + 2], ARGV[base]) == 1 then
      redis.call('PEXPIREAT', KEYS[5 + 2 * w], ARGV[base + 1])
      redis.call('PEXPIREAT', KEYS[6 + 2 * w], ARGV[base + 1])
    end
  end
  if ARGV[6] ~= '' then redis.call('HSETNX', KEYS[6], 'from', ARGV[6]) end
  if #touched > 0 then
    redis.call('XADD', KEYS[4], 'MAXLEN', '~', ARGV[5], '*', 'n', tostring(#claimed / 2))
  end
end
return out
"#;

/// Dedupe periods per `dedupe_ttl`: ids are kept at most a quarter longer.
pub const DEDUPE_SLICES: i64 = 4;
/// Event-id hashes each event is checked against: the current one and the
/// `DEDUPE_SLICES` before it.
pub const DEDUPE_PERIODS: usize = DEDUPE_SLICES as usize + 1;

/// The dedupe periods around one moment.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DedupePeriods {
    /// Length of one period (ms).
    pub span_ms: i64,
    /// The current period's number.
    pub current: i64,
}

impl DedupePeriods {
    pub fn at(now_ms: i64, dedupe_ttl: Duration) -> Self {
        let ttl_ms = (dedupe_ttl.as_millis() as i64).max(1);
        let span_ms = (ttl_ms + DEDUPE_SLICES - 1) / DEDUPE_SLICES;
        Self {
            span_ms,
            current: now_ms.div_euclid(span_ms),
        }
    }

    /// The periods an event id is looked up in, the current one first.
    pub fn checked(&self) -> impl Iterator<Item = i64> + '_ {
        (0..DEDUPE_PERIODS as i64).map(|back| self.current - back)
    }

    /// When the current period's hash may go: once it is no longer checked.
    /// An id recorded at any moment of the period is therefore found for at
    /// least `DEDUPE_SLICES` × span ≥ `dedupe_ttl`.
    pub fn expire_at_ms(&self) -> i64 {
        (self.current + DEDUPE_PERIODS as i64) * self.span_ms
    }
}

/// One validated event, with its board.
#[derive(Clone, Debug)]
pub struct ValidEvent {
    pub board: Arc<Board>,
    pub member: String,
    /// Delta (increment) or score (set, best), in units.
    pub value: i64,
    pub event_id: String,
    pub member_data: String,
}

/// What happened to one event.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// Recorded; the member's score in each window afterwards.
    Recorded(Vec<(String, i64)>),
    Duplicate,
    /// A score would have left ±2^53 - 1; nothing of the event was written.
    OutOfRange,
}

pub struct Recorder {
    acks: Arc<ReplicaAcks>,
    keys: Keys,
    script: redis::Script,
    changes_max_len: u64,
    dedupe_ttl: Duration,
}

/// The windows an event recorded at `now_ns` goes to.
pub fn write_windows(board: &Board, now_ns: i64) -> Vec<Window> {
    board
        .windows
        .iter()
        .map(|&kind| window_at(kind, now_ns, board.tz()))
        .collect()
}

/// Open time (ms) of the oldest hour bucket of the rolling window at `now_ns`.
pub fn rolling_from_ms(board: &Board, now_ns: i64) -> i64 {
    crate::rolling::oldest_bucket(board, now_ns)
        .open_ns
        .div_euclid(1_000_000)
}

impl Recorder {
    pub fn new(
        acks: Arc<ReplicaAcks>,
        keys: Keys,
        changes_max_len: u64,
        dedupe_ttl: Duration,
    ) -> Self {
        Self {
            acks,
            keys,
            script: lua::script(RECORD_LUA),
            changes_max_len,
            dedupe_ttl,
        }
    }

    /// Records `events` (any mix of boards; order within a board is kept).
    /// Each event's answer is its outcome, or UNAVAILABLE when its board's
    /// write was not confirmed by enough replicas (`ranking.replica_acks`).
    pub async fn record(&self, events: &[ValidEvent], now_ns: i64) -> Result<Vec<Result<Outcome>>> {
        let mut groups: Vec<(&Board, Vec<usize>)> = Vec::new();
        for (i, e) in events.iter().enumerate() {
            match groups.iter_mut().find(|(b, _)| b.id == e.board.id) {
                Some((_, v)) => v.push(i),
                None => groups.push((&e.board, vec![i])),
            }
        }
        if groups.is_empty() {
            return Ok(Vec::new());
        }
        let now_ms = now_ns.div_euclid(1_000_000);
        let forget_before = now_ms - self.dedupe_ttl.as_millis() as i64;
        let dedupe = DedupePeriods::at(now_ms, self.dedupe_ttl);
        let mut pipe = redis::pipe();
        let mut windows_of = Vec::with_capacity(groups.len());
        for (board, indices) in &groups {
            let windows = write_windows(board, now_ns);
            let id = board.id.as_str();
            let cmd = pipe.cmd("EVALSHA").arg(self.script.get_hash());
            cmd.arg(6 + 2 * windows.len() + DEDUPE_PERIODS)
                .arg(self.keys.sequence(id))
                .arg(self.keys.events(id))
                .arg(self.keys.window_index(id))
                .arg(self.keys.changes(id))
                .arg(self.keys.member_data(id))
                .arg(self.keys.rolling_state(id));
            for w in &windows {
                cmd.arg(self.keys.entries(id, &w.name))
                    .arg(self.keys.members(id, &w.name));
            }
            for period in dedupe.checked() {
                cmd.arg(self.keys.event_period(id, period));
            }
            cmd.arg(dedupe.expire_at_ms())
                .arg(forget_before)
                .arg(board.operator.script_code())
                .arg(order_code(board))
                .arg(self.changes_max_len)
                .arg(if board.keeps(WindowKind::Rolling24h) {
                    rolling_from_ms(board, now_ns).to_string()
                } else {
                    String::new()
                })
                .arg(windows.len());
            for w in &windows {
                let (expire_at, close) = match w.close_ns() {
                    Some(close_ns) => {
                        let close_ms = close_ns.div_euclid(1_000_000);
                        let keep = board.key_retention(w.kind).as_millis() as i64;
                        (close_ms.saturating_add(keep), close_ms)
                    }
                    None => (0, 0),
                };
                cmd.arg(&w.name).arg(expire_at).arg(close);
            }
            for &i in indices {
                let e = &events[i];
                cmd.arg(&e.event_id)
                    .arg(&e.member)
                    .arg(e.value)
                    .arg(&e.member_data);
            }
            self.acks.fence(&mut pipe, &self.keys.ack_fence(id));
            windows_of.push(windows);
        }
        let replies = self.acks.query(&pipe, &[&self.script]).await?;
        let per_board = 1 + self.acks.replies();
        if replies.len() != groups.len() * per_board {
            return Err(Error::Internal(format!(
                "record pipeline answered {} replies for {} boards",
                replies.len(),
                groups.len()
            )));
        }
        let mut outcomes: Vec<Result<Outcome>> = Vec::with_capacity(events.len());
        outcomes.resize_with(events.len(), || Ok(Outcome::Duplicate));
        let mut replies = replies.into_iter();
        for ((board, indices), windows) in groups.iter().zip(&windows_of) {
            let script_reply = replies.next().unwrap_or(redis::Value::Nil);
            let fence = replies.by_ref().take(per_board - 1).last();
            let unconfirmed = match &fence {
                None => None,
                Some(wait) => match self.acks.check(
                    wait,
                    &format!("events of board {:?}", board.id),
                    "retrying with the same event ids is safe (each is counted once)",
                ) {
                    Ok(()) => None,
                    Err(Error::Unavailable(message)) => Some(message),
                    Err(other) => return Err(other),
                },
            };
            let reply: Vec<i64> = redis::from_redis_value(script_reply)
                .map_err(|e| Error::Internal(format!("record script answered: {e}")))?;
            let stride = windows.len() + 1;
            if reply.len() != indices.len() * stride {
                return Err(Error::Internal(format!(
                    "record script answered {} values for {} events",
                    reply.len(),
                    indices.len()
                )));
            }
            for (&i, values) in indices.iter().zip(reply.chunks(stride)) {
                if let Some(message) = &unconfirmed {
                    outcomes[i] = Err(Error::Unavailable(message.clone()));
                    continue;
                }
                outcomes[i] = Ok(match values[0] {
                    1 => Outcome::Recorded(
                        windows
                            .iter()
                            .zip(&values[1..])
                            .map(|(w, &s)| (w.name.clone(), s))
                            .collect(),
                    ),
                    0 => Outcome::Duplicate,
                    _ => Outcome::OutOfRange,
                });
            }
        }
        Ok(outcomes)
    }
}

pub fn order_code(board: &Board) -> &'static str {
    match board.order {
        crate::board::Order::HigherFirst => "h",
        crate::board::Order::LowerFirst => "l",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An id recorded at any moment is looked up for at least `dedupe_ttl`
    /// after it, and its period's hash lives until then, but not past
    /// `dedupe_ttl` plus one period.
    #[test]
    fn an_event_id_is_remembered_for_at_least_the_dedupe_ttl() {
        let ttl = Duration::from_secs(24 * 3600);
        let ttl_ms = ttl.as_millis() as i64;
        for recorded in [0, 1, 21_599_999, 21_600_000, 1_767_571_234_567] {
            let at = DedupePeriods::at(recorded, ttl);
            assert_eq!(at.span_ms, ttl_ms / 4);
            assert!(at.expire_at_ms() >= recorded + ttl_ms);
            assert!(at.expire_at_ms() <= recorded + ttl_ms + 2 * at.span_ms);
            for later in [
                recorded,
                recorded + 1,
                recorded + ttl_ms - 1,
                recorded + ttl_ms,
            ] {
                let then = DedupePeriods::at(later, ttl);
                assert!(
                    then.checked().any(|p| p == at.current),
                    "recorded at {recorded}, checked at {later}"
                );
                assert!(later < at.expire_at_ms());
            }
        }
    }

    #[test]
    fn tiny_ttls_still_make_periods() {
        let at = DedupePeriods::at(10, Duration::from_millis(1));
        assert_eq!(at.span_ms, 1);
        assert_eq!(at.checked().collect::<Vec<_>>(), vec![10, 9, 8, 7, 6]);
    }
}
