//! Reading a window: pages of the top, a member's neighbourhood, and ranks of
//! members, each one script so the numbers of one answer agree.
//!
//! Ranks: with "earlier first" a member's rank is its position + 1 (`ZRANK`
//! of its entry, ties already ordered by sequence). With "shared rank" it is
//! 1 + the members with a strictly better score (`ZLEXCOUNT` below the
//! score's 17-character key), so equal scores share a rank: 1, 1, 3.

use redis::Value;
use tickmesh_core::{Error, Result};
use tickmesh_runtime::RedisHandle;

use crate::board::{Board, TieBreak};
use crate::keys::Keys;
use crate::lua;
use crate::score::{SCORE_KEY_LEN, decode_entry};

/// KEYS: entries, members, member data. ARGV: member ("" for a page from an
/// offset), offset or radius, count (pages only).
/// Returns {total, start, first shared rank, entries, member data}, or
/// {total, -1} when the member is not in the window.
const PAGE_LUA: &str = r#"
local total = redis.call('ZCARD', KEYS[1])
local start, stop
if ARGV[1] ~= '' then
  local e = redis.call('HGET', KEYS[2], ARGV[1])
  if not e then return {total, -1} end
  local pos = redis.call('ZRANK', KEYS[1], e)
  local radius = tonumber(ARGV[2])
  start = pos - radius
  if start < 0 then start = 0 end
  stop = pos + radius
else
  start = tonumber(ARGV[2])
  stop = start + tonumber(ARGV[3]) - 1
end
local items = {}
if stop >= start then items = redis.call('ZRANGE', KEYS[1], start, stop) end
local first = 0
if #items > 0 then
  first = 1 + redis.call('ZLEXCOUNT', KEYS[1], '-', '(' .. string.sub(items[1], 1, 17))
end
local data = {}
for i, e in ipairs(items) do data[i] = redis.call('HGET', KEYS[3], member_of(e)) or '' end
return {total, start, first, items, data}
"#;

/// KEYS: entries, members, member data. ARGV: members.
/// Returns {total, then per member: entry ("" when absent), position, members
/// strictly better, members strictly worse, member data}.
const RANKS_LUA: &str = r#"
local total = redis.call('ZCARD', KEYS[1])
local out = {total}
for i = 1, #ARGV do
  local e = redis.call('HGET', KEYS[2], ARGV[i])
  if e then
    local key = string.sub(e, 1, 17)
    out[#out + 1] = e
    out[#out + 1] = redis.call('ZRANK', KEYS[1], e)
    out[#out + 1] = redis.call('ZLEXCOUNT', KEYS[1], '-', '(' .. key)
    out[#out + 1] = redis.call('ZLEXCOUNT', KEYS[1], '[' .. key .. ':', '+')
    out[#out + 1] = redis.call('HGET', KEYS[3], ARGV[i]) or ''
  else
    out[#out + 1] = ''
    out[#out + 1] = 0
    out[#out + 1] = 0
    out[#out + 1] = 0
    out[#out + 1] = ''
  end
end
return out
"#;

/// A ranked member as read.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Ranked {
    pub member: String,
    pub score: i64,
    pub seq: u64,
    pub rank: u64,
    pub member_data: String,
}

/// A page of a window.
#[derive(Clone, Debug, Default)]
pub struct Page {
    pub total: u64,
    /// Position of the first entry (0-based).
    pub start: u64,
    pub entries: Vec<Ranked>,
}

/// A member's standing in a window.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Standing {
    pub entry: Ranked,
    pub total: u64,
    /// Members with a strictly worse score.
    pub below: u64,
}

pub struct Reader {
    redis: RedisHandle,
    keys: Keys,
    page: redis::Script,
    ranks: redis::Script,
}

impl Reader {
    pub fn new(redis: RedisHandle, keys: Keys) -> Self {
        Self {
            redis,
            keys,
            page: lua::script(PAGE_LUA),
            ranks: lua::script(RANKS_LUA),
        }
    }

    fn invoke(&self, script: &redis::Script, board: &Board, window: &str) -> redis::Pipeline {
        let mut pipe = redis::pipe();
        pipe.cmd("EVALSHA")
            .arg(script.get_hash())
            .arg(3)
            .arg(self.keys.entries(&board.id, window))
            .arg(self.keys.members(&board.id, window))
            .arg(self.keys.member_data(&board.id));
        pipe
    }

    /// `count` entries from position `offset`.
    pub async fn top(&self, board: &Board, window: &str, offset: u64, count: u64) -> Result<Page> {
        let mut pipe = self.invoke(&self.page, board, window);
        pipe.arg("").arg(offset).arg(count);
        let page = self.run_page(board, pipe).await?;
        Ok(page.unwrap_or_default())
    }

    /// The member and `radius` entries above and below; `None` when the member
    /// is not in the window.
    pub async fn around(
        &self,
        board: &Board,
        window: &str,
        member: &str,
        radius: u64,
    ) -> Result<Option<Page>> {
        let mut pipe = self.invoke(&self.page, board, window);
        pipe.arg(member).arg(radius).arg(0);
        self.run_page(board, pipe).await
    }

    async fn run_page(&self, board: &Board, pipe: redis::Pipeline) -> Result<Option<Page>> {
        let mut conn = self.redis.conn();
        let (reply,): (Vec<Value>,) = lua::query_loading(&mut conn, &pipe, &[&self.page]).await?;
        let bad = || Error::Internal("page script answered an unexpected shape".into());
        let total = int(reply.first().ok_or_else(bad)?)? as u64;
        let start = int(reply.get(1).ok_or_else(bad)?)?;
        if start < 0 {
            return Ok(None);
        }
        let first_shared = int(reply.get(2).ok_or_else(bad)?)? as u64;
        let items = strings(reply.get(3).ok_or_else(bad)?)?;
        let data = strings(reply.get(4).ok_or_else(bad)?)?;
        let mut entries: Vec<Ranked> = Vec::with_capacity(items.len());
        for (i, (item, member_data)) in items.iter().zip(data).enumerate() {
            let d = decode_entry(board.order, item)
                .ok_or_else(|| Error::Internal(format!("unreadable entry {item:?}")))?;
            let position_rank = start as u64 + i as u64 + 1;
            let rank = match board.tie_break {
                TieBreak::EarlierFirst => position_rank,
                TieBreak::SharedRank => match entries.last() {
                    None => first_shared,
                    Some(prev) if prev.score == d.score => prev.rank,
                    Some(_) => position_rank,
                },
            };
            entries.push(Ranked {
                member: d.member,
                score: d.score,
                seq: d.seq,
                rank,
                member_data,
            });
        }
        Ok(Some(Page {
            total,
            start: start as u64,
            entries,
        }))
    }

    /// The standing of each member (`None` when not in the window), and the
    /// window's size.
    pub async fn ranks(
        &self,
        board: &Board,
        window: &str,
        members: &[String],
    ) -> Result<(u64, Vec<Option<Standing>>)> {
        let mut pipe = self.invoke(&self.ranks, board, window);
        for m in members {
            pipe.arg(m);
        }
        let mut conn = self.redis.conn();
        let (reply,): (Vec<Value>,) = lua::query_loading(&mut conn, &pipe, &[&self.ranks]).await?;
        if reply.len() != 1 + 5 * members.len() {
            return Err(Error::Internal(
                "ranks script answered an unexpected shape".into(),
            ));
        }
        let total = int(&reply[0])? as u64;
        let mut out = Vec::with_capacity(members.len());
        for chunk in reply[1..].chunks(5) {
            let entry = string(&chunk[0])?;
            if entry.is_empty() {
                out.push(None);
                continue;
            }
            let d = decode_entry(board.order, &entry)
                .ok_or_else(|| Error::Internal(format!("unreadable entry {entry:?}")))?;
            let position = int(&chunk[1])? as u64;
            let better = int(&chunk[2])? as u64;
            let worse = int(&chunk[3])? as u64;
            let rank = match board.tie_break {
                TieBreak::EarlierFirst => position + 1,
                TieBreak::SharedRank => better + 1,
            };
            out.push(Some(Standing {
                entry: Ranked {
                    member: d.member,
                    score: d.score,
                    seq: d.seq,
                    rank,
                    member_data: string(&chunk[4])?,
                },
                total,
                below: worse,
            }));
        }
        Ok((total, out))
    }

    /// Members strictly worse than each distinct score of `entries` (for snapshots).
    pub async fn below_counts(
        &self,
        board: &Board,
        window: &str,
        scores: &[i64],
    ) -> Result<Vec<u64>> {
        if scores.is_empty() {
            return Ok(Vec::new());
        }
        let key = self.keys.entries(&board.id, window);
        let mut pipe = redis::pipe();
        for &s in scores {
            let score_key = crate::score::score_key(board.order, s);
            debug_assert_eq!(score_key.len(), SCORE_KEY_LEN);
            pipe.cmd("ZLEXCOUNT")
                .arg(&key)
                .arg(format!("[{score_key}:"))
                .arg("+");
        }
        let mut conn = self.redis.conn();
        pipe.query_async(&mut conn)
            .await
            .map_err(tickmesh_runtime::redis_conn::unavailable)
    }
}

fn int(v: &Value) -> Result<i64> {
    match v {
        Value::Int(n) => Ok(*n),
        other => Err(Error::Internal(format!("expected a number, got {other:?}"))),
    }
}

fn string(v: &Value) -> Result<String> {
    match v {
        Value::BulkString(b) => Ok(String::from_utf8_lossy(b).into_owned()),
        Value::SimpleString(s) => Ok(s.clone()),
        Value::Nil => Ok(String::new()),
        other => Err(Error::Internal(format!("expected a string, got {other:?}"))),
    }
}

fn strings(v: &Value) -> Result<Vec<String>> {
    match v {
        Value::Array(items) => items.iter().map(string).collect(),
        other => Err(Error::Internal(format!("expected a list, got {other:?}"))),
    }
}
