//! Writing trades: for each symbol in a batch, one server-side script that
//! drops duplicates, gives sequence numbers, appends to the tick log, updates
//! the quote and trims the dedupe window — atomically, so a trade is either
//! fully stored with its sequence or not at all. All symbols of a batch go to
//! Redis in one pipelined round trip.

use std::collections::HashMap;
use std::sync::Arc;

use redis::Value;
use tickmesh_core::{Error, Result};
use tickmesh_runtime::RedisHandle;
use tickmesh_runtime::redis_conn::unavailable;

use crate::durable::{self, DurableAcks, NotConfirmed};
use crate::keys::Keys;
use crate::model::ValidTrade;

/// KEYS: seq, ids, trades, quote.
/// ARGV: max log length, dedupe window, ingest time, traceparent of the
/// publishing call ("" when not traced), then per trade: id, price, quantity,
/// time (20-digit zero-padded nanoseconds), side.
/// Returns the sequence of each trade (0 for a duplicate), then the symbol's
/// last sequence. Times are compared as padded strings because Lua numbers are
/// doubles and would round nanoseconds.
const INGEST_LUA: &str = r#"
local maxlen = ARGV[1]
local window = tonumber(ARGV[2])
local ingest = ARGV[3]
local tp = ARGV[4]
local seq = tonumber(redis.call('GET', KEYS[1]) or '0')
local quote_time = redis.call('HGET', KEYS[4], 'tk') or ''
local best, best_seq = nil, nil
local out = {}
for i = 5, #ARGV, 5 do
  local id = ARGV[i]
  if redis.call('ZSCORE', KEYS[2], id) then
    out[#out + 1] = 0
  else
    seq = seq + 1
    local s = string.format('%d', seq)
    redis.call('ZADD', KEYS[2], s, id)
    if tp == '' then
      redis.call('XADD', KEYS[3], 'MAXLEN', '~', maxlen, '0-' .. s,
        't', id, 'p', ARGV[i + 1], 'q', ARGV[i + 2], 'ts', ARGV[i + 3], 's', ARGV[i + 4], 'it', ingest)
    else
      redis.call('XADD', KEYS[3], 'MAXLEN', '~', maxlen, '0-' .. s,
        't', id, 'p', ARGV[i + 1], 'q', ARGV[i + 2], 'ts', ARGV[i + 3], 's', ARGV[i + 4], 'it', ingest,
        'tp', tp)
    end
    if ARGV[i + 3] >= quote_time then
      quote_time = ARGV[i + 3]
      best, best_seq = i, s
    end
    out[#out + 1] = seq
  end
end
if best then
  redis.call('HSET', KEYS[4], 'p', ARGV[best + 1], 'q', ARGV[best + 2], 'tk', ARGV[best + 3],
    's', ARGV[best + 4], 't', ARGV[best], 'seq', best_seq, 'it', ingest)
end
redis.call('SET', KEYS[1], string.format('%d', seq))
local n = redis.call('ZCARD', KEYS[2])
if n > window then
  redis.call('ZREMRANGEBYRANK', KEYS[2], 0, n - window - 1)
end
out[#out + 1] = seq
return out
"#;

/// Zero-padded nanoseconds: sorts as text in time order (for times ≥ 1970).
pub fn padded_time(ns: i64) -> String {
    format!("{ns:020}")
}

pub struct Ingestor {
    redis: RedisHandle,
    keys: Keys,
    script: redis::Script,
    tick_log_max_len: u64,
    dedupe_window: u64,
    /// `marketfeed.durable_acks`: a write succeeds only once Redis confirms
    /// it durable.
    durable: Option<Arc<DurableAcks>>,
}

/// What happened to the trades of one write.
#[derive(Debug, Default)]
pub struct WriteOutcome {
    /// Per input trade: its new sequence, or `None` for a duplicate.
    pub sequences: Vec<Option<u64>>,
    /// Last sequence of each symbol written.
    pub last_sequences: HashMap<String, u64>,
}

impl Ingestor {
    pub fn new(
        redis: RedisHandle,
        keys: Keys,
        tick_log_max_len: u64,
        dedupe_window: u64,
        durable: Option<Arc<DurableAcks>>,
    ) -> Self {
        Self {
            redis,
            keys,
            script: redis::Script::new(INGEST_LUA),
            tick_log_max_len,
            dedupe_window,
            durable,
        }
    }

    /// Stores `trades` (any mix of symbols; order within a symbol is kept).
    pub async fn write(&self, trades: &[ValidTrade], ingest_ns: i64) -> Result<WriteOutcome> {
        let mut by_symbol: Vec<(&str, Vec<usize>)> = Vec::new();
        let mut slot: HashMap<&str, usize> = HashMap::new();
        for (i, t) in trades.iter().enumerate() {
            let at = *slot.entry(t.symbol.as_str()).or_insert_with(|| {
                by_symbol.push((t.symbol.as_str(), Vec::new()));
                by_symbol.len() - 1
            });
            by_symbol[at].1.push(i);
        }
        if by_symbol.is_empty() {
            return Ok(WriteOutcome::default());
        }

        let ingest = ingest_ns.to_string();
        // Stored with each trade so consumers (the candle aggregator) continue
        // the publisher's trace.
        let traceparent = tickmesh_runtime::telemetry::current_traceparent().unwrap_or_default();
        let mut pipe = redis::pipe();
        for (symbol, indices) in &by_symbol {
            let cmd = pipe
                .cmd("EVALSHA")
                .arg(self.script.get_hash())
                .arg(4)
                .arg(self.keys.sequence(symbol))
                .arg(self.keys.trade_ids(symbol))
                .arg(self.keys.tick_log(symbol))
                .arg(self.keys.quote(symbol))
                .arg(self.tick_log_max_len)
                .arg(self.dedupe_window)
                .arg(&ingest)
                .arg(&traceparent);
            for &i in indices {
                let t = &trades[i];
                cmd.arg(&t.trade_id)
                    .arg(&t.price)
                    .arg(&t.quantity)
                    .arg(padded_time(t.time_ns))
                    .arg(t.side);
            }
        }

        let replies = match &self.durable {
            None => run_pipeline(&self.script, &pipe, &mut self.redis.conn())
                .await
                .map_err(unavailable)?,
            Some(durable) => self.run_durable(durable, pipe, by_symbol.len()).await?,
        };
        let replies = replies
            .into_iter()
            .map(redis::from_redis_value::<Vec<i64>>)
            .collect::<std::result::Result<Vec<_>, _>>()
            .map_err(|e| Error::Internal(format!("ingest script reply: {e}")))?;

        let mut outcome = WriteOutcome {
            sequences: vec![None; trades.len()],
            last_sequences: HashMap::with_capacity(by_symbol.len()),
        };
        for ((symbol, indices), reply) in by_symbol.iter().zip(replies) {
            if reply.len() != indices.len() + 1 {
                return Err(Error::Internal(format!(
                    "ingest script answered {} values for {} trades",
                    reply.len(),
                    indices.len()
                )));
            }
            for (&i, &seq) in indices.iter().zip(&reply) {
                outcome.sequences[i] = (seq > 0).then_some(seq as u64);
            }
            outcome
                .last_sequences
                .insert(symbol.to_string(), reply[indices.len()] as u64);
        }
        Ok(outcome)
    }

    /// Runs the scripts of `pipe` (`scripts` of them) followed by what
    /// confirms them durable in the server's mode; answers the scripts'
    /// replies only once confirmed.
    async fn run_durable(
        &self,
        durable: &DurableAcks,
        mut pipe: redis::Pipeline,
        scripts: usize,
    ) -> Result<Vec<Value>> {
        let mode = durable.mode().await?;
        if self.redis.is_cluster() {
            return self.run_durable_on_cluster(durable, mode, &pipe).await;
        }
        durable::append_confirmation(&mut pipe, mode, durable.timeout());
        let result = if mode.blocks() {
            // WAIT/WAITAOF block their connection: one of this write's own.
            let mut held = durable.hold().await?;
            let result = run_pipeline(&self.script, &pipe, &mut held.conn).await;
            if result.is_ok() {
                durable.give_back(held);
            }
            result
        } else {
            run_pipeline(&self.script, &pipe, &mut self.redis.conn()).await
        };
        let mut replies = match result {
            Ok(r) => r,
            Err(e) => {
                // Whatever happened (a restart, a failover, a setting changed),
                // the next write asks the server again.
                durable.forget().await;
                tracing::warn!(error = %e, "durable ingest write failed");
                return Err(durable::not_durable(&format!("redis: {e}")));
            }
        };
        if replies.len() != scripts + durable::confirmation_replies(mode) {
            durable.forget().await;
            return Err(Error::Internal(format!(
                "durable ingest pipeline answered {} values for {scripts} scripts",
                replies.len()
            )));
        }
        let confirmation = replies.split_off(scripts);
        match durable::check_confirmation(mode, &confirmation) {
            Ok(()) => Ok(replies),
            Err(NotConfirmed::Timeout(reason)) => {
                tracing::warn!(%reason, timeout_ms = durable.timeout().as_millis() as u64, "durable ack not confirmed in time");
                Err(durable::not_durable(&reason))
            }
            Err(NotConfirmed::ModeChanged(reason)) => {
                tracing::error!(%reason, mode = %mode.describe(), "durable acks: the server no longer offers the detected mode");
                durable.forget().await;
                Err(durable::not_durable(&reason))
            }
        }
    }
}

impl Ingestor {
    /// [`Self::run_durable`] on a Redis Cluster: WAIT/WAITAOF count the
    /// writes of one node's connection, so the scripts are grouped by hash
    /// slot and each group is sent with its own confirmation (to its slot's
    /// master), concurrently; the call is acknowledged only when every group
    /// is confirmed.
    async fn run_durable_on_cluster(
        &self,
        durable: &DurableAcks,
        mode: durable::AckMode,
        pipe: &redis::Pipeline,
    ) -> Result<Vec<Value>> {
        let groups = tickmesh_runtime::redis_slots::group_by_slot(pipe);
        let commands: Vec<&redis::Cmd> = pipe.cmd_iter().collect();
        let held = durable.hold().await?;
        let sends = groups.iter().map(|indices| {
            let mut part = redis::pipe();
            for &i in indices {
                part.add_command(commands[i].clone());
            }
            durable::append_confirmation(&mut part, mode, durable.timeout());
            let mut conn = held.conn.clone();
            async move { run_pipeline(&self.script, &part, &mut conn).await }
        });
        let answers = match futures_util::future::try_join_all(sends).await {
            Ok(a) => a,
            Err(e) => {
                durable.forget().await;
                tracing::warn!(error = %e, "durable ingest write failed");
                return Err(durable::not_durable(&format!("redis: {e}")));
            }
        };
        let mut replies: Vec<Option<Value>> = vec![None; commands.len()];
        for (indices, mut answer) in groups.iter().zip(answers) {
            if answer.len() != indices.len() + durable::confirmation_replies(mode) {
                durable.forget().await;
                return Err(Error::Internal(format!(
                    "durable ingest pipeline answered {} values for {} scripts",
                    answer.len(),
                    indices.len()
                )));
            }
            let confirmation = answer.split_off(indices.len());
            if let Err(not) = durable::check_confirmation(mode, &confirmation) {
                let reason = match not {
                    NotConfirmed::Timeout(r) => r,
                    NotConfirmed::ModeChanged(r) => {
                        durable.forget().await;
                        r
                    }
                };
                tracing::warn!(%reason, "durable ack not confirmed on a cluster master");
                return Err(durable::not_durable(&reason));
            }
            for (&i, value) in indices.iter().zip(answer) {
                replies[i] = Some(value);
            }
        }
        durable.give_back(held);
        Ok(replies
            .into_iter()
            .map(|v| v.unwrap_or(Value::Nil))
            .collect())
    }
}

/// Sends `pipe`; when Redis lost its script cache (restart, failover) no
/// script of the pipeline ran, so the script is loaded and the pipeline sent
/// again.
async fn run_pipeline(
    script: &redis::Script,
    pipe: &redis::Pipeline,
    conn: &mut impl redis::aio::ConnectionLike,
) -> redis::RedisResult<Vec<Value>> {
    match pipe.query_async(conn).await {
        Err(e) if e.kind() == redis::ErrorKind::Server(redis::ServerErrorKind::NoScript) => {
            script.prepare_invoke().load_async(conn).await?;
            pipe.query_async(conn).await
        }
        other => other,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn padded_times_sort_as_text() {
        let a = padded_time(999_999_999_999_999_999);
        let b = padded_time(1_000_000_000_000_000_000);
        assert_eq!(a.len(), 20);
        assert!(a < b);
        assert!(padded_time(0) < padded_time(1));
    }
}
