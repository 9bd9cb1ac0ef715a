//! Repairs found by [`crate::verify`], and its counters.
//!
//! A Redis repair is one atomic script that changes a candle slot only if it
//! still holds exactly the members the verifier compared (compare and set),
//! so it never overwrites a write it has not seen. The new candle goes into
//! the candle updates log like any write (SubscribeCandles shows it) and into
//! the flush queue, so the flusher moves it to the history store. A candle
//! the history store alone holds is upserted there. Revisions only go up:
//! a repaired candle gets the highest revision either tier had (and at least
//! its trade count + 1, the most the aggregator gives a candle whose earlier
//! versions are lost), plus one.
//!
//! The verifier only repairs final candles (past the late window), which the
//! aggregator no longer writes, so the script does not take part in the
//! aggregator's fencing (lease, applied sequence, write count).

use tickmesh_calendar::STORED;
use tickmesh_core::{Error, Result};
use tickmesh_history::CandleStore as HistoryStore;
use tickmesh_runtime::proto_time::now_nanos;
use tickmesh_runtime::redis_conn::unavailable;

use crate::candle::Candle;
use crate::flusher::to_stored;
use crate::store::CandleStore;
use crate::verify::SymbolReport;

/// What to do with a Redis candle slot.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Fix {
    /// Replace whatever is there (or nothing) with the recomputed candle.
    Put,
    /// Remove the members (a candle without trades).
    Remove,
}

/// KEYS: candle set, updates log, flush set.
/// ARGV: score, n, the n members expected at the score (in ZRANGEBYSCORE
/// order), the new member ("" to remove), updates max length, flush member
/// ("" for none), flush score (revision).
/// Returns 1 when it replaced the slot, 0 when the slot had changed.
const REPAIR_LUA: &str = r#"
local cur = redis.call('ZRANGEBYSCORE', KEYS[1], ARGV[1], ARGV[1])
local n = tonumber(ARGV[2])
if #cur ~= n then return 0 end
for i = 1, n do
  if cur[i] ~= ARGV[2 + i] then return 0 end
end
local new = ARGV[n + 3]
redis.call('ZREMRANGEBYSCORE', KEYS[1], ARGV[1], ARGV[1])
if new ~= '' then
  redis.call('ZADD', KEYS[1], ARGV[1], new)
  redis.call('XADD', KEYS[2], 'MAXLEN', '~', ARGV[n + 4], '*', 'c', new)
  if ARGV[n + 5] ~= '' then
    redis.call('ZADD', KEYS[3], ARGV[n + 6], ARGV[n + 5])
  end
end
return 1
"#;

/// Replaces the slot of `STORED[index]` at `score` (open time in s) if it
/// still holds exactly `old`. `put`: the new candle (`None`: remove).
/// `flush`: queue it for the history store. False when the slot changed.
#[allow(clippy::too_many_arguments)]
pub async fn redis(
    store: &CandleStore,
    symbol: &str,
    index: usize,
    score: i64,
    old: &[String],
    put: Option<&Candle>,
    flush: bool,
    updates_max_len: u64,
) -> Result<bool> {
    let keys = &store.keys;
    let script = redis::Script::new(REPAIR_LUA);
    let mut call = script.prepare_invoke();
    call.key(keys.candles(symbol, STORED[index]))
        .key(keys.updates(symbol))
        .key(keys.flush(symbol))
        .arg(score)
        .arg(old.len());
    for m in old {
        call.arg(m);
    }
    let (member, revision) = match put {
        Some(c) => (c.encode(), c.revision.to_string()),
        None => (String::new(), String::new()),
    };
    let queue = if flush && put.is_some() {
        format!("{}|{score}", index + 1)
    } else {
        String::new()
    };
    call.arg(member)
        .arg(updates_max_len)
        .arg(queue)
        .arg(revision);
    let done: i64 = call
        .invoke_async(&mut store.redis.conn())
        .await
        .map_err(unavailable)?;
    if done == 0 {
        tracing::info!(
            symbol,
            interval = %STORED[index],
            open_s = score,
            "candle changed while being verified; not repaired"
        );
    }
    Ok(done == 1)
}

/// Upserts the recomputed candle into the history store.
pub async fn history(store: &dyn HistoryStore, symbol: &str, candle: &Candle) -> Result<()> {
    store
        .upsert(&[to_stored(symbol, candle)])
        .await
        .map_err(|e| Error::Unavailable(e.to_string()))
}

/// Adds a check's counts to the symbol's status hash and stamps when it finished.
pub async fn record(store: &CandleStore, symbol: &str, report: &SymbolReport) -> Result<()> {
    let key = store.keys.status(symbol);
    let mut pipe = redis::pipe();
    let mismatches = report.mismatched
        + report.inconsistent.iter().map(|r| r.candles).sum::<u64>()
        + report.corrupt.len() as u64;
    for (field, n) in [
        ("verify_checked", report.checked),
        ("verify_mismatches", mismatches),
        ("verify_repaired", report.repaired),
    ] {
        pipe.cmd("HINCRBY").arg(&key).arg(field).arg(n).ignore();
    }
    if report.repaired > 0 {
        // Candles were rewritten: indicator checkpoints taken over them are stale.
        pipe.cmd("HINCRBY")
            .arg(&key)
            .arg(crate::indicators::series::EPOCH_FIELD)
            .arg(1)
            .ignore();
    }
    pipe.cmd("HSET")
        .arg(&key)
        .arg("verified_ns")
        .arg(now_nanos())
        .ignore();
    pipe.query_async::<()>(&mut store.redis.conn())
        .await
        .map_err(unavailable)
}
