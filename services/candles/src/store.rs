//! Candles in Redis: the aggregator's fenced, atomic write, reading state back
//! at start, and range reads for queries.

use redis::Value;
use tickmesh_calendar::{Interval, STORED};
use tickmesh_core::{Error, Result};
use tickmesh_runtime::RedisHandle;
use tickmesh_runtime::redis_conn::unavailable;

use crate::book::SymbolBook;
use crate::candle::Candle;
use crate::keys::CandleKeys;

/// KEYS: lease, applied, status, updates, then the 14 candle sets (STORED
/// order), then the flush set.
/// ARGV: lease value, applied sequence, newest event time, updates max length,
/// candles kept per interval (0: keep all; the flusher trims after flushing),
/// late corrections +, late dropped +, missed +, the number of writes the
/// book was built on, then per candle: interval index (1-14), score, member,
/// and its revision if it is closed (else "").
/// Fails unless the caller still holds the lease, and never moves the applied
/// sequence backwards, so a stale owner cannot overwrite a newer one. Fails
/// with DIVERGED unless Redis holds exactly the writes the book was built on:
/// a Redis that came back from a crash or failover with less than it had
/// acknowledged is never written over with changes computed on top of what it
/// lost (the aggregator reloads the book and replays the tick log instead).
const WRITE_LUA: &str = r#"
if redis.call('GET', KEYS[1]) ~= ARGV[1] then
  return redis.error_reply('LEASE the aggregator lease is held by another instance')
end
local writes = tonumber(redis.call('HGET', KEYS[3], 'writes') or '0')
if writes ~= tonumber(ARGV[9]) then
  return redis.error_reply('DIVERGED redis holds ' .. writes .. ' candle writes, the book was built on ' .. ARGV[9])
end
local applied = tonumber(redis.call('GET', KEYS[2]) or '0')
if tonumber(ARGV[2]) < applied then
  return redis.error_reply('STALE applied sequence ' .. applied .. ' is ahead of ' .. ARGV[2])
end
redis.call('HSET', KEYS[3], 'writes', writes + 1)
redis.call('SET', KEYS[2], ARGV[2])
redis.call('HSET', KEYS[3], 'newest_ns', ARGV[3])
if ARGV[6] ~= '0' then redis.call('HINCRBY', KEYS[3], 'late_corrections', ARGV[6]) end
if ARGV[7] ~= '0' then redis.call('HINCRBY', KEYS[3], 'late_dropped', ARGV[7]) end
if ARGV[8] ~= '0' then redis.call('HINCRBY', KEYS[3], 'missed', ARGV[8]) end
local keep = tonumber(ARGV[5])
local touched = {}
local last = ''
for i = 10, #ARGV, 4 do
  local k = KEYS[4 + tonumber(ARGV[i])]
  local score = ARGV[i + 1]
  redis.call('ZREMRANGEBYSCORE', k, score, score)
  redis.call('ZADD', k, score, ARGV[i + 2])
  touched[k] = true
  last = redis.call('XADD', KEYS[4], 'MAXLEN', '~', ARGV[4], '*', 'c', ARGV[i + 2])
  if ARGV[i + 3] ~= '' then
    redis.call('ZADD', KEYS[19], ARGV[i + 3], ARGV[i] .. '|' .. score)
  end
end
if keep > 0 then
  for k, _ in pairs(touched) do
    local n = redis.call('ZCARD', k)
    if n > keep then redis.call('ZREMRANGEBYRANK', k, 0, n - keep - 1) end
  end
end
return last
"#;

/// Limits of what Redis keeps.
#[derive(Clone, Copy, Debug)]
pub struct Retention {
    pub updates_max_len: u64,
    /// Candles the write itself trims Redis to (0: none; with a history store
    /// the flusher trims, and only what it has flushed).
    pub candles_per_interval: u64,
    /// Queue closed candles for the history store.
    pub flush_closed: bool,
}

pub struct CandleStore {
    pub redis: RedisHandle,
    pub keys: CandleKeys,
    script: redis::Script,
    retention: Retention,
}

/// Why a write failed.
#[derive(Debug)]
pub enum WriteError {
    /// This instance no longer holds the symbol's lease.
    LeaseLost(String),
    /// Redis holds other writes than the book was built on (it lost some in a
    /// crash or failover): the book must be reloaded.
    Diverged(String),
    Other(Error),
}

impl CandleStore {
    pub fn new(redis: RedisHandle, keys: CandleKeys, retention: Retention) -> Self {
        Self {
            redis,
            keys,
            script: redis::Script::new(WRITE_LUA),
            retention,
        }
    }

    /// Writes the changes of several books in one pipelined round trip; each
    /// book's part is one atomic, fenced script. Returns per book the outcome.
    pub async fn write(
        &self,
        books: &mut [(&mut SymbolBook, String)],
    ) -> Result<Vec<std::result::Result<(), WriteError>>> {
        let mut pipe = redis::pipe();
        for (book, lease_value) in books.iter_mut() {
            let symbol = book.symbol.clone();
            let changes = book.take_changes();
            let counters = std::mem::take(&mut book.pending);
            let cmd = pipe
                .cmd("EVALSHA")
                .arg(self.script.get_hash())
                .arg(5 + STORED.len());
            cmd.arg(self.keys.lease(&symbol))
                .arg(self.keys.applied(&symbol))
                .arg(self.keys.status(&symbol))
                .arg(self.keys.updates(&symbol));
            for interval in STORED {
                cmd.arg(self.keys.candles(&symbol, interval));
            }
            cmd.arg(self.keys.flush(&symbol));
            cmd.arg(lease_value.as_str())
                .arg(book.applied_sequence)
                .arg(book.newest_ns)
                .arg(self.retention.updates_max_len)
                .arg(self.retention.candles_per_interval)
                .arg(counters.late_corrections)
                .arg(counters.late_dropped)
                .arg(counters.missed)
                .arg(book.writes);
            let now = tickmesh_runtime::proto_time::now_nanos();
            for mut candle in changes {
                candle.updated_ns = now;
                let index = STORED
                    .iter()
                    .position(|i| *i == candle.interval)
                    .expect("stored interval")
                    + 1;
                let flush = if candle.closed && self.retention.flush_closed {
                    candle.revision.to_string()
                } else {
                    String::new()
                };
                cmd.arg(index)
                    .arg(candle.score())
                    .arg(candle.encode())
                    .arg(flush);
            }
        }
        pipe.ignore_errors();
        let mut conn = self.redis.conn();
        let mut replies: Vec<redis::RedisResult<Value>> = match pipe
            .query_async::<Vec<redis::RedisResult<Value>>>(&mut conn)
            .await
        {
            Ok(r) => r,
            Err(e) => return Err(unavailable(e)),
        };
        if replies.iter().any(|r| matches!(r, Err(e) if e.kind() == redis::ErrorKind::Server(redis::ServerErrorKind::NoScript))) {
            // Redis lost its scripts (restart): none ran; load and resend.
            self.script.prepare_invoke().load_async(&mut conn).await.map_err(unavailable)?;
            replies = pipe.query_async(&mut conn).await.map_err(unavailable)?;
        }
        Ok(replies
            .into_iter()
            .zip(books.iter_mut())
            .map(|(r, (book, _))| match r {
                Ok(_) => {
                    book.writes += 1;
                    Ok(())
                }
                Err(e) if e.code() == Some("LEASE") || e.code() == Some("STALE") => {
                    Err(WriteError::LeaseLost(e.to_string()))
                }
                Err(e) if e.code() == Some("DIVERGED") => Err(WriteError::Diverged(e.to_string())),
                Err(e) => Err(WriteError::Other(unavailable(e))),
            })
            .collect())
    }

    /// Reads back a symbol's state: applied sequence, newest event time and
    /// the candles within `horizon_ns` of it (at least the newest per interval).
    pub async fn load(&self, book: &mut SymbolBook, late_window_ns: i64) -> Result<()> {
        let symbol = book.symbol.clone();
        let mut conn = self.redis.conn();
        let (applied, (newest, writes)): (Option<u64>, (Option<i64>, Option<u64>)) = redis::pipe()
            .cmd("GET")
            .arg(self.keys.applied(&symbol))
            .cmd("HMGET")
            .arg(self.keys.status(&symbol))
            .arg("newest_ns")
            .arg("writes")
            .query_async(&mut conn)
            .await
            .map_err(unavailable)?;
        let newest = newest.unwrap_or(i64::MIN);
        let horizon_s = newest
            .saturating_sub(late_window_ns)
            .div_euclid(1_000_000_000);
        let mut pipe = redis::pipe();
        for interval in STORED {
            // The newest candle, and every one that may still take a late trade.
            pipe.cmd("ZREVRANGE")
                .arg(self.keys.candles(&symbol, interval))
                .arg(0)
                .arg(0);
            pipe.cmd("ZRANGEBYSCORE")
                .arg(self.keys.candles(&symbol, interval))
                .arg(horizon_s.saturating_sub(interval_upper_bound_s(interval)))
                .arg("+inf");
        }
        let rows: Vec<Vec<String>> = pipe.query_async(&mut conn).await.map_err(unavailable)?;
        let mut candles: Vec<Candle> = Vec::new();
        for member in rows.into_iter().flatten() {
            let candle = Candle::decode(&member).ok_or_else(|| {
                Error::Internal(format!("unreadable candle in redis: {member:?}"))
            })?;
            if !candles.contains(&candle) {
                candles.push(candle);
            }
        }
        candles.sort_by_key(|c| c.bucket.open_ns);
        book.restore(applied.unwrap_or(0), newest, candles);
        book.writes = writes.unwrap_or(0);
        Ok(())
    }

    /// For each of `symbols`: the number of candle writes Redis holds (see
    /// the write script's DIVERGED check) and the last sequence of its tick log.
    pub async fn progress(&self, symbols: &[&str]) -> Result<Vec<(u64, u64)>> {
        let mut pipe = redis::pipe();
        for symbol in symbols {
            pipe.cmd("HGET").arg(self.keys.status(symbol)).arg("writes");
            pipe.cmd("GET").arg(self.keys.tick_sequence(symbol));
        }
        let values: Vec<Option<u64>> = pipe
            .query_async(&mut self.redis.conn())
            .await
            .map_err(unavailable)?;
        Ok(values
            .chunks(2)
            .map(|p| (p[0].unwrap_or(0), p.get(1).copied().flatten().unwrap_or(0)))
            .collect())
    }

    /// Up to `limit` candles of a stored interval with scores in `[min, max]`
    /// (Redis score syntax: "(" for exclusive, "-inf"/"+inf"), in the order asked.
    pub async fn range(
        &self,
        symbol: &str,
        interval: Interval,
        min: &str,
        max: &str,
        newest_first: bool,
        limit: usize,
    ) -> Result<Vec<Candle>> {
        let mut conn = self.redis.conn();
        let key = self.keys.candles(symbol, interval);
        let mut cmd = if newest_first {
            let mut c = redis::cmd("ZREVRANGEBYSCORE");
            c.arg(&key).arg(max).arg(min);
            c
        } else {
            let mut c = redis::cmd("ZRANGEBYSCORE");
            c.arg(&key).arg(min).arg(max);
            c
        };
        cmd.arg("LIMIT").arg(0).arg(limit);
        let members: Vec<String> = cmd.query_async(&mut conn).await.map_err(unavailable)?;
        members
            .iter()
            .map(|m| {
                Candle::decode(m)
                    .ok_or_else(|| Error::Internal(format!("unreadable candle in redis: {m:?}")))
            })
            .collect()
    }
}

/// The longest a candle of `interval` can be, in seconds (a conservative
/// bound used to find candles whose end lies after a horizon).
pub fn interval_upper_bound_s(interval: Interval) -> i64 {
    use tickmesh_calendar::Unit;
    let n = i64::from(interval.count);
    match interval.unit {
        Unit::Minute => 60 * n,
        Unit::Hour => 3600 * n,
        Unit::Day => 90_000 * n,
        Unit::Week => 7 * 90_000 * n,
        Unit::Month => 32 * 90_000 * n,
        Unit::Year => 367 * 90_000 * n,
    }
}
