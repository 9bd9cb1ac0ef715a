//! Recording events: for each board in a batch, one server-side script that
//! drops duplicate event ids, applies the board's operator to every window,
//! refuses an event whose score would leave the exact range, and writes the
//! entries — atomically, so an event counts in all windows or in none. All
//! boards of a batch go to Redis in one pipelined round trip.

use std::sync::Arc;
use std::time::Duration;

use tickmesh_core::{Error, Result};
use tickmesh_runtime::RedisHandle;

use crate::board::{Board, WindowKind};
use crate::keys::Keys;
use crate::lua;
use crate::window::{Window, window_at};

/// KEYS: seq, events, window index, changes, member data, rolling state, then
/// per window its entries (sorted set) and members (hash).
/// ARGV: now (ms), forget events before (ms), operator (i/s/b), order (h/l),
/// changes max length, rolling "from" (ms of the oldest hour in the rolling
/// window, "" without one), window count W, W × (name, expire at ms or 0,
/// close ms or 0), then per event: id, member, value (units), member data.
/// Returns per event: status (1 recorded, 0 duplicate, -1 out of range), then
/// the member's score in each window (0 unless recorded).
///
/// Events are first applied to an in-script copy of the touched members, so
/// an out-of-range event is skipped without writing, and each touched
/// (window, member) is written once however many events hit it.
const RECORD_LUA: &str = r#"
local now = tonumber(ARGV[1])
local op, order = ARGV[3], ARGV[4]
local W = tonumber(ARGV[7])
local first_event = 8 + 3 * W
redis.call('ZREMRANGEBYSCORE', KEYS[2], '-inf', '(' .. ARGV[2])
local seq = tonumber(redis.call('GET', KEYS[1]) or '0')
local state = {}
for w = 1, W do state[w] = {} end
local function current(w, member)
  local s = state[w][member]
  if s == nil then
    local e = redis.call('HGET', KEYS[6 + 2 * w], member)
    if e then
      s = {old = e, present = true, score = score_of(order, e)}
    else
      s = {present = false}
    end
    state[w][member] = s
  end
  return s
end
local out, touched, recorded = {}, {}, 0
for i = first_event, #ARGV, 4 do
  local id, member, value, data = ARGV[i], ARGV[i + 1], tonumber(ARGV[i + 2]), ARGV[i + 3]
  -- Claims the event id; given back below if the event is refused.
  if redis.call('ZADD', KEYS[2], 'NX', now, id) == 0 then
    out[#out + 1] = 0
    for w = 1, W do out[#out + 1] = 0 end
  else
    local new, ok = {}, true
    for w = 1, W do
      local s = current(w, member)
      local score, changed
      if op == 'i' then
        score = (s.present and s.score or 0) + value
        changed = (not s.present) or value ~= 0
      elseif op == 's' then
        score = value
        changed = (not s.present) or value ~= s.score
      elseif s.present and not better(order, value, s.score) then
        score, changed = s.score, false
      else
        score, changed = value, true
      end
      if score > MAX or score < -MAX then ok = false end
      new[w] = {score, changed}
    end
    if ok then
      seq = seq + 1
      recorded = recorded + 1
      if data ~= '' then redis.call('HSET', KEYS[5], member, data) end
      out[#out + 1] = 1
      for w = 1, W do
        local s = state[w][member]
        if new[w][2] then
          if not s.dirty then
            s.dirty = true
            touched[#touched + 1] = {w, member}
          end
          s.present, s.score, s.seq = true, new[w][1], seq
        end
        out[#out + 1] = s.score
      end
    else
      redis.call('ZREM', KEYS[2], id)
      out[#out + 1] = -1
      for w = 1, W do out[#out + 1] = 0 end
    end
  end
end
if recorded > 0 then
  for _, t in ipairs(touched) do
    local w, member = t[1], t[2]
    local s = state[w][member]
    if s.old then redis.call('ZREM', KEYS[5 + 2 * w], s.old) end
    local e = key_of(order, s.score) .. pad(s.seq) .. member
    redis.call('ZADD', KEYS[5 + 2 * w], 0, e)
    redis.call('HSET', KEYS[6 + 2 * w], member, e)
  end
  redis.call('SET', KEYS[1], string.format('%d', seq))
  -- A periodic window's keys get their expiry when the window first appears
  -- in the index (its first write; RemoveMember unindexes a window it empties).
  for w = 1, W do
    local base = 8 + 3 * (w - 1)
    if ARGV[base + 2] ~= '0' and redis.call('ZADD', KEYS[3], 'NX', ARGV[base + 2], ARGV[base]) == 1 then
      redis.call('PEXPIREAT', KEYS[5 + 2 * w], ARGV[base + 1])
      redis.call('PEXPIREAT', KEYS[6 + 2 * w], ARGV[base + 1])
    end
  end
  if ARGV[6] ~= '' then redis.call('HSETNX', KEYS[6], 'from', ARGV[6]) end
  if #touched > 0 then
    redis.call('XADD', KEYS[4], 'MAXLEN', '~', ARGV[5], '*', 'n', tostring(recorded))
  end
end
return out
"#;

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
    redis: RedisHandle,
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
    pub fn new(redis: RedisHandle, keys: Keys, changes_max_len: u64, dedupe_ttl: Duration) -> Self {
        Self {
            redis,
            keys,
            script: lua::script(RECORD_LUA),
            changes_max_len,
            dedupe_ttl,
        }
    }

    /// Records `events` (any mix of boards; order within a board is kept).
    pub async fn record(&self, events: &[ValidEvent], now_ns: i64) -> Result<Vec<Outcome>> {
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
        let mut pipe = redis::pipe();
        let mut windows_of = Vec::with_capacity(groups.len());
        for (board, indices) in &groups {
            let windows = write_windows(board, now_ns);
            let id = board.id.as_str();
            let cmd = pipe.cmd("EVALSHA").arg(self.script.get_hash());
            cmd.arg(6 + 2 * windows.len())
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
            cmd.arg(now_ms)
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
            windows_of.push(windows);
        }
        let mut conn = self.redis.conn();
        let replies: Vec<Vec<i64>> = lua::query_loading(&mut conn, &pipe, &[&self.script]).await?;
        let mut outcomes = vec![Outcome::Duplicate; events.len()];
        for (((_, indices), windows), reply) in groups.iter().zip(&windows_of).zip(replies) {
            let stride = windows.len() + 1;
            if reply.len() != indices.len() * stride {
                return Err(Error::Internal(format!(
                    "record script answered {} values for {} events",
                    reply.len(),
                    indices.len()
                )));
            }
            for (&i, values) in indices.iter().zip(reply.chunks(stride)) {
                outcomes[i] = match values[0] {
                    1 => Outcome::Recorded(
                        windows
                            .iter()
                            .zip(&values[1..])
                            .map(|(w, &s)| (w.name.clone(), s))
                            .collect(),
                    ),
                    0 => Outcome::Duplicate,
                    _ => Outcome::OutOfRange,
                };
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
