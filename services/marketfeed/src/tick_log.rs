//! The tick log: one Redis Stream per symbol, entry id `0-<sequence>`, so a
//! sequence is its own cursor and `XRANGE` resumes anywhere the log still
//! reaches.

use std::sync::Arc;

use redis::Value;
use tickmesh_core::{Error, Result};
use tickmesh_runtime::redis_conn::unavailable;

use crate::keys::Keys;
use crate::model::TradeRecord;

/// Reads up to `count` trades of `symbol` with sequence in `from..=to`
/// (`to = None`: up to the newest).
pub async fn read_range<C: redis::aio::ConnectionLike>(
    conn: &mut C,
    keys: &Keys,
    symbol: &Arc<str>,
    from: u64,
    to: Option<u64>,
    count: usize,
) -> Result<Vec<TradeRecord>> {
    let end = to.map(|t| format!("0-{t}")).unwrap_or_else(|| "+".into());
    let reply: Value = redis::cmd("XRANGE")
        .arg(keys.tick_log(symbol))
        .arg(format!("0-{from}"))
        .arg(end)
        .arg("COUNT")
        .arg(count)
        .query_async(conn)
        .await
        .map_err(unavailable)?;
    parse_entries(symbol, reply)
}

/// The newest trade in `symbol`'s tick log, if any (a feed resumes after it).
pub async fn last_trade<C: redis::aio::ConnectionLike>(
    conn: &mut C,
    keys: &Keys,
    symbol: &Arc<str>,
) -> Result<Option<TradeRecord>> {
    let reply: Value = redis::cmd("XREVRANGE")
        .arg(keys.tick_log(symbol))
        .arg("+")
        .arg("-")
        .arg("COUNT")
        .arg(1)
        .query_async(conn)
        .await
        .map_err(unavailable)?;
    Ok(parse_entries(symbol, reply)?.pop())
}

/// The last sequence given to `symbol` (0 when it never traded).
pub async fn last_sequence<C: redis::aio::ConnectionLike>(
    conn: &mut C,
    keys: &Keys,
    symbol: &str,
) -> Result<u64> {
    let seq: Option<u64> = redis::cmd("GET")
        .arg(keys.sequence(symbol))
        .query_async(conn)
        .await
        .map_err(unavailable)?;
    Ok(seq.unwrap_or(0))
}

/// The last sequence of each of `symbols`, in order, in one round trip.
pub async fn last_sequences<C: redis::aio::ConnectionLike>(
    conn: &mut C,
    keys: &Keys,
    symbols: &[&str],
) -> Result<Vec<u64>> {
    if symbols.is_empty() {
        return Ok(Vec::new());
    }
    let mut pipe = redis::pipe();
    for symbol in symbols {
        pipe.cmd("GET").arg(keys.sequence(symbol));
    }
    let seqs: Vec<Option<u64>> = pipe.query_async(conn).await.map_err(unavailable)?;
    Ok(seqs.into_iter().map(|s| s.unwrap_or(0)).collect())
}

/// Parses an array of stream entries (`XRANGE` reply, or one key's part of `XREAD`).
pub fn parse_entries(symbol: &Arc<str>, reply: Value) -> Result<Vec<TradeRecord>> {
    let entries = match reply {
        Value::Array(entries) => entries,
        Value::Nil => return Ok(Vec::new()),
        other => return Err(malformed(&other)),
    };
    let mut out = Vec::with_capacity(entries.len());
    for entry in entries {
        let Value::Array(mut parts) = entry else {
            return Err(Error::Internal("tick log entry is not an array".into()));
        };
        if parts.len() != 2 {
            return Err(Error::Internal("tick log entry has no fields".into()));
        }
        let fields = parts.pop().expect("two parts");
        let id = parts.pop().expect("two parts");
        out.push(parse_entry(symbol, id, fields)?);
    }
    Ok(out)
}

fn parse_entry(symbol: &Arc<str>, id: Value, fields: Value) -> Result<TradeRecord> {
    let id = text(id)?;
    let sequence = id
        .strip_prefix("0-")
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| Error::Internal(format!("tick log id {id:?} is not 0-<sequence>")))?;
    let Value::Array(fields) = fields else {
        return Err(Error::Internal("tick log fields are not an array".into()));
    };
    let mut record = TradeRecord {
        symbol: symbol.clone(),
        trade_id: String::new(),
        price: String::new(),
        quantity: String::new(),
        time_ns: 0,
        side: 0,
        sequence,
        ingest_ns: 0,
        trace_parent: String::new(),
    };
    let mut it = fields.into_iter();
    while let (Some(name), Some(value)) = (it.next(), it.next()) {
        let name = text(name)?;
        let value = text(value)?;
        match name.as_str() {
            "t" => record.trade_id = value,
            "p" => record.price = value,
            "q" => record.quantity = value,
            "ts" => record.time_ns = number(&value)?,
            "s" => record.side = number(&value)? as i32,
            "it" => record.ingest_ns = number(&value)?,
            "tp" => record.trace_parent = value,
            _ => {}
        }
    }
    Ok(record)
}

fn text(value: Value) -> Result<String> {
    match value {
        Value::BulkString(bytes) => String::from_utf8(bytes)
            .map_err(|_| Error::Internal("tick log text is not utf-8".into())),
        Value::SimpleString(s) => Ok(s),
        other => Err(malformed(&other)),
    }
}

fn number(text: &str) -> Result<i64> {
    text.parse()
        .map_err(|_| Error::Internal(format!("tick log number {text:?} is malformed")))
}

fn malformed(value: &Value) -> Error {
    Error::Internal(format!("unexpected tick log reply: {value:?}"))
}
