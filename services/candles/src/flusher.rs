//! The flusher: moves closed candles from Redis to the history store.
//!
//! The aggregator's write script queues every closed candle it writes in the
//! symbol's flush set (`<interval index>|<open s>` scored by revision). The
//! flusher, running beside the aggregator for the symbols it owns, takes up to
//! `flush_batch` of them, upserts them to the store (idempotent: a retried
//! flush rewrites the same values), and only then removes each queue entry —
//! and only if its revision is unchanged, so a late correction made during the
//! flush is flushed again. Redis candles are trimmed to the hot tail only after
//! that, and never while queued. While the store is down it retries with
//! backoff; nothing leaves Redis meanwhile. It runs every `flush_interval`, or
//! at once when `flush_threshold` candles wait.

use std::collections::BTreeSet;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use redis::Value;
use tickmesh_calendar::STORED;
use tickmesh_core::Result;
use tickmesh_history::{CandleStore as HistoryStore, StoredCandle};
use tickmesh_runtime::metrics::catalogue::{
    FLUSH_BACKLOG, FLUSH_FAILURES, FLUSH_LAST_SUCCESS, FLUSHED,
};
use tickmesh_runtime::proto_time::now_nanos;
use tickmesh_runtime::redis_conn::unavailable;
use tokio_util::sync::CancellationToken;

use crate::candle::Candle;
use crate::store::CandleStore;

/// Removes queue entries whose revision is still the one flushed.
/// KEYS: flush set. ARGV: member, revision, member, revision, …
const ACK_LUA: &str = r#"
local n = 0
for i = 1, #ARGV, 2 do
  if redis.call('ZSCORE', KEYS[1], ARGV[i]) == ARGV[i + 1] then
    redis.call('ZREM', KEYS[1], ARGV[i])
    n = n + 1
  end
end
return n
"#;

/// Trims a candle set to `keep` newest, sparing candles still queued, and
/// records the newest open time ever trimmed: queries above it need only Redis.
/// KEYS: candle set, flush set, status hash. ARGV: keep, interval index.
const TRIM_LUA: &str = r#"
local n = redis.call('ZCARD', KEYS[1])
local keep = tonumber(ARGV[1])
if n <= keep then return 0 end
local old = redis.call('ZRANGE', KEYS[1], 0, n - keep - 1, 'WITHSCORES')
local removed = 0
local newest = nil
for i = 1, #old, 2 do
  if not redis.call('ZSCORE', KEYS[2], ARGV[2] .. '|' .. old[i + 1]) then
    redis.call('ZREM', KEYS[1], old[i])
    removed = removed + 1
    newest = old[i + 1]
  end
end
if newest then
  local field = 'trimmed:' .. ARGV[2]
  local before = redis.call('HGET', KEYS[3], field)
  if not before or tonumber(before) < tonumber(newest) then
    redis.call('HSET', KEYS[3], field, newest)
  end
end
return removed
"#;

#[derive(Clone, Copy, Debug)]
pub struct FlushConfig {
    pub interval: Duration,
    pub threshold: u64,
    pub batch: usize,
    pub hot_candles: u64,
}

pub struct Flusher {
    pub redis: Arc<CandleStore>,
    pub history: Arc<dyn HistoryStore>,
    /// Symbols this instance's aggregator owns (shared with it).
    pub owned: Arc<Mutex<BTreeSet<String>>>,
    pub config: FlushConfig,
    pub shutdown: CancellationToken,
}

impl Flusher {
    pub async fn run(self) {
        let ack = redis::Script::new(ACK_LUA);
        let trim = redis::Script::new(TRIM_LUA);
        let mut backoff = Duration::from_millis(200);
        let mut last_flush = tokio::time::Instant::now();
        loop {
            tokio::select! {
                _ = tokio::time::sleep(Duration::from_millis(250)) => {}
                _ = self.shutdown.cancelled() => break,
            }
            let symbols: Vec<String> = self
                .owned
                .lock()
                .expect("owned lock")
                .iter()
                .cloned()
                .collect();
            if symbols.is_empty() {
                continue;
            }
            let due = last_flush.elapsed() >= self.config.interval;
            let backlog = match self.backlog(&symbols).await {
                Ok(b) => b,
                Err(_) => continue,
            };
            metrics::gauge!(FLUSH_BACKLOG).set(backlog as f64);
            if backlog == 0 || !(due || backlog >= self.config.threshold) {
                continue;
            }
            let started = std::time::Instant::now();
            let mut moved = 0usize;
            let mut failed = None;
            for symbol in &symbols {
                match self.flush_symbol(symbol, &ack, &trim).await {
                    Ok(n) => moved += n,
                    Err(e) => {
                        failed = Some(e);
                        break;
                    }
                }
            }
            match failed {
                None => {
                    last_flush = tokio::time::Instant::now();
                    backoff = Duration::from_millis(200);
                    metrics::counter!(FLUSHED).increment(moved as u64);
                    metrics::gauge!(FLUSH_BACKLOG).set(backlog.saturating_sub(moved as u64) as f64);
                    metrics::gauge!(FLUSH_LAST_SUCCESS).set(now_nanos() as f64 / 1e9);
                    tracing::info!(
                        candles = moved,
                        backlog_before = backlog,
                        store = self.history.name(),
                        ms = started.elapsed().as_millis() as u64,
                        "flushed closed candles to history"
                    );
                }
                Some(e) => {
                    metrics::counter!(FLUSH_FAILURES).increment(1);
                    tracing::warn!(error = %e, backlog, retry_in_ms = backoff.as_millis() as u64, "history flush failed; candles stay in redis, retrying");
                    tokio::select! {
                        _ = tokio::time::sleep(backoff) => {}
                        _ = self.shutdown.cancelled() => break,
                    }
                    backoff = (backoff * 2).min(Duration::from_secs(30));
                }
            }
        }
    }

    /// Closed candles waiting for the store, over `symbols`.
    pub async fn backlog(&self, symbols: &[String]) -> Result<u64> {
        let mut pipe = redis::pipe();
        for s in symbols {
            pipe.cmd("ZCARD").arg(self.redis.keys.flush(s));
        }
        let counts: Vec<u64> = pipe
            .query_async(&mut self.redis.redis.conn())
            .await
            .map_err(unavailable)?;
        Ok(counts.iter().sum())
    }

    /// Flushes everything queued for `symbol`, in batches. Returns how many candles moved.
    async fn flush_symbol(
        &self,
        symbol: &str,
        ack: &redis::Script,
        trim: &redis::Script,
    ) -> std::result::Result<usize, String> {
        let keys = &self.redis.keys;
        let mut conn = self.redis.redis.conn();
        let mut moved = 0;
        let mut touched = BTreeSet::new();
        loop {
            let queued: Vec<(String, u64)> = redis::cmd("ZRANGE")
                .arg(keys.flush(symbol))
                .arg(0)
                .arg(self.config.batch as i64 - 1)
                .arg("WITHSCORES")
                .query_async(&mut conn)
                .await
                .map_err(|e| e.to_string())?;
            if queued.is_empty() {
                break;
            }
            let mut pipe = redis::pipe();
            let mut wanted = Vec::with_capacity(queued.len());
            for (member, _) in &queued {
                let Some((index, score)) = member.split_once('|') else {
                    continue;
                };
                let Some(interval) = index
                    .parse::<usize>()
                    .ok()
                    .and_then(|i| STORED.get(i.wrapping_sub(1)))
                    .copied()
                else {
                    continue;
                };
                pipe.cmd("ZRANGEBYSCORE")
                    .arg(keys.candles(symbol, interval))
                    .arg(score)
                    .arg(score);
                wanted.push(index.parse::<usize>().unwrap_or(0));
            }
            let rows: Vec<Vec<String>> = pipe
                .query_async(&mut conn)
                .await
                .map_err(|e| e.to_string())?;
            let mut candles: Vec<StoredCandle> = Vec::with_capacity(rows.len());
            for row in rows.iter().flatten() {
                if let Some(c) = Candle::decode(row) {
                    candles.push(to_stored(symbol, &c));
                }
            }
            // The durable write first; only then does anything leave Redis.
            self.history
                .upsert(&candles)
                .await
                .map_err(|e| e.to_string())?;
            let mut call = ack.key(keys.flush(symbol));
            for (member, revision) in &queued {
                call.arg(member).arg(revision.to_string());
            }
            let _: i64 = call
                .invoke_async(&mut conn)
                .await
                .map_err(|e| e.to_string())?;
            moved += candles.len();
            touched.extend(wanted);
            let _: redis::RedisResult<Value> = redis::cmd("HSET")
                .arg(keys.status(symbol))
                .arg("last_flush_ns")
                .arg(now_nanos())
                .query_async(&mut conn)
                .await;
            if queued.len() < self.config.batch {
                break;
            }
        }
        for index in touched {
            let Some(interval) = STORED.get(index.wrapping_sub(1)).copied() else {
                continue;
            };
            let _: i64 = trim
                .key(keys.candles(symbol, interval))
                .key(keys.flush(symbol))
                .key(keys.status(symbol))
                .arg(self.config.hot_candles)
                .arg(index)
                .invoke_async(&mut conn)
                .await
                .map_err(|e| e.to_string())?;
        }
        Ok(moved)
    }
}

pub fn to_stored(symbol: &str, c: &Candle) -> StoredCandle {
    StoredCandle {
        symbol: symbol.to_string(),
        interval: c.interval,
        open_ns: c.bucket.open_ns,
        close_ns: c.bucket.close_ns,
        open: c.open,
        high: c.high,
        low: c.low,
        close: c.close,
        volume: c.volume,
        quote_volume: c.quote_volume,
        trade_count: c.trade_count,
        revision: c.revision,
        price_scale: c.price_scale,
        quantity_scale: c.quantity_scale,
    }
}

/// A stored candle as a (closed) candle again, for queries.
pub fn from_stored(c: &StoredCandle) -> Candle {
    Candle {
        interval: c.interval,
        bucket: tickmesh_calendar::Bucket {
            open_ns: c.open_ns,
            close_ns: c.close_ns,
        },
        open: c.open,
        high: c.high,
        low: c.low,
        close: c.close,
        volume: c.volume,
        quote_volume: c.quote_volume,
        trade_count: c.trade_count,
        // Rollups order parts by these; stored candles are whole buckets.
        first: (c.open_ns, 0),
        last: (c.close_ns - 1, u64::MAX),
        revision: c.revision,
        closed: true,
        price_scale: c.price_scale,
        quantity_scale: c.quantity_scale,
        updated_ns: 0,
    }
}
