//! `tickmesh replay`: publishes a file of trades to a running mesh at original
//! speed, N× speed, or as fast as possible.
//!
//! Formats:
//! - Binance public-data `trades` CSV: `id,price,qty,quote_qty,time,is_buyer_maker[,is_best_match]`
//! - Binance public-data `aggTrades` CSV: `agg_id,price,qty,first_id,last_id,time,is_buyer_maker[,is_best_match]`
//!   (trade ids become `agg-<agg_id>` so they never collide with raw trade ids)
//! - JSON lines of the API's `Trade` (`{"symbol":…,"tradeId":…,"price":"…","quantity":"…","time":"2024-01-01T00:00:00Z","side":"SIDE_BUY"}`)
//!
//! CSV timestamps may be in milliseconds or microseconds (Binance switched spot
//! files to microseconds in 2025); the unit is read off each value's size. A
//! header line, if present, is skipped. `is_buyer_maker = true` means the taker
//! sold, so the trade's side is SELL.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use serde::Deserialize;
use tickmesh_api::marketfeed::market_feed_service_client::MarketFeedServiceClient;
use tickmesh_api::marketfeed::{PublishRequest, Side, Trade};
use tickmesh_runtime::proto_time::nanos_to_timestamp;
use tokio::io::AsyncBufReadExt;
use tokio_stream::wrappers::ReceiverStream;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Format {
    Auto,
    BinanceTrades,
    BinanceAggTrades,
    JsonLines,
}

impl std::str::FromStr for Format {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        Ok(match s {
            "auto" => Format::Auto,
            "binance-trades" => Format::BinanceTrades,
            "binance-aggtrades" => Format::BinanceAggTrades,
            "jsonl" => Format::JsonLines,
            _ => {
                return Err(format!(
                    "unknown format {s:?} (auto, binance-trades, binance-aggtrades, jsonl)"
                ));
            }
        })
    }
}

/// Replay pace.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Speed {
    /// As fast as the mesh accepts.
    Max,
    /// Original inter-trade timing divided by this factor (1 = real time).
    Times(f64),
}

impl std::str::FromStr for Speed {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        if s == "max" {
            return Ok(Speed::Max);
        }
        let factor: f64 = s.strip_suffix('x').unwrap_or(s).parse().map_err(|_| {
            format!("speed {s:?} is not \"max\" or a factor like \"1x\", \"10x\", \"0.5x\"")
        })?;
        if !(factor.is_finite() && factor > 0.0) {
            return Err(format!("speed {s:?} must be a positive factor"));
        }
        Ok(Speed::Times(factor))
    }
}

#[derive(Clone, Debug)]
pub struct ReplayOptions {
    pub file: PathBuf,
    pub target: String,
    pub format: Format,
    /// Symbol for CSV files (default: from the file name, e.g. `BTCUSDT-trades-2024-01-01.csv`).
    pub symbol: Option<String>,
    pub speed: Speed,
    pub batch: usize,
}

#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ReplaySummary {
    pub read: u64,
    pub accepted: u64,
    pub duplicate: u64,
    pub rejected: u64,
    pub malformed_lines: u64,
}

/// The symbol a Binance file name implies (`BTCUSDT-trades-…` → `BTCUSDT`).
pub fn symbol_from_file_name(path: &Path) -> Option<String> {
    let name = path.file_name()?.to_str()?;
    let symbol = name.split('-').next()?;
    (!symbol.is_empty() && tickmesh_core::ids::check_symbol(symbol).is_ok() && symbol != name)
        .then(|| symbol.to_string())
}

/// Epoch nanoseconds from a Binance timestamp in ms, µs or ns.
pub fn binance_time_ns(value: i64) -> Option<i64> {
    match value {
        v if v < 0 => None,
        v if v < 100_000_000_000_000 => v.checked_mul(1_000_000),
        v if v < 100_000_000_000_000_000 => v.checked_mul(1_000),
        v => Some(v),
    }
}

/// Parses one CSV line; `Ok(None)` for a header or blank line.
pub fn parse_csv_line(line: &str, format: Format, symbol: &str) -> Result<Option<Trade>, String> {
    let line = line.trim();
    if line.is_empty() {
        return Ok(None);
    }
    let cols: Vec<&str> = line.split(',').map(str::trim).collect();
    if cols[0].parse::<u64>().is_err() {
        return Ok(None); // header
    }
    let format = match format {
        Format::Auto if cols.len() == 8 => Format::BinanceAggTrades,
        Format::Auto if cols.len() == 6 || cols.len() == 7 => Format::BinanceTrades,
        Format::Auto => {
            return Err(format!(
                "{} columns is neither a trades (6-7) nor an aggTrades (8) line",
                cols.len()
            ));
        }
        f => f,
    };
    let (id, time_col, maker_col) = match format {
        Format::BinanceTrades if cols.len() >= 6 => (cols[0].to_string(), cols[4], cols[5]),
        Format::BinanceAggTrades if cols.len() >= 7 => {
            (format!("agg-{}", cols[0]), cols[5], cols[6])
        }
        _ => return Err(format!("too few columns ({}) for {format:?}", cols.len())),
    };
    let time: i64 = time_col
        .parse()
        .map_err(|_| format!("time {time_col:?} is not an integer"))?;
    let time_ns = binance_time_ns(time).ok_or_else(|| format!("time {time} is out of range"))?;
    let side = match maker_col.to_ascii_lowercase().as_str() {
        "true" => Side::Sell,
        "false" => Side::Buy,
        other => return Err(format!("is_buyer_maker {other:?} is not true/false")),
    };
    Ok(Some(Trade {
        symbol: symbol.to_string(),
        trade_id: id,
        price: cols[1].to_string(),
        quantity: cols[2].to_string(),
        time: Some(nanos_to_timestamp(time_ns)),
        side: side as i32,
        ..Default::default()
    }))
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct JsonTrade {
    symbol: Option<String>,
    #[serde(alias = "trade_id")]
    trade_id: String,
    price: serde_json::Value,
    quantity: serde_json::Value,
    time: serde_json::Value,
    #[serde(default)]
    side: serde_json::Value,
}

fn decimal_text(value: serde_json::Value, field: &str) -> Result<String, String> {
    match value {
        serde_json::Value::String(s) => Ok(s),
        other => Err(format!(
            "{field} must be a decimal string like \"1.25\", not {other} (JSON numbers are not exact)"
        )),
    }
}

/// Parses one JSON line of the API's `Trade`.
pub fn parse_json_line(line: &str, default_symbol: Option<&str>) -> Result<Option<Trade>, String> {
    let line = line.trim();
    if line.is_empty() {
        return Ok(None);
    }
    let t: JsonTrade = serde_json::from_str(line).map_err(|e| e.to_string())?;
    let symbol = t
        .symbol
        .or_else(|| default_symbol.map(String::from))
        .ok_or("no symbol (give one per line or --symbol)")?;
    let time_ns = match t.time {
        serde_json::Value::String(s) => chrono::DateTime::parse_from_rfc3339(&s)
            .map_err(|e| format!("time {s:?}: {e}"))?
            .timestamp_nanos_opt()
            .ok_or("time out of range")?,
        serde_json::Value::Number(n) => {
            binance_time_ns(n.as_i64().ok_or("time must be an integer")?)
                .ok_or("time out of range")?
        }
        other => {
            return Err(format!(
                "time {other} is not an RFC 3339 string or epoch integer"
            ));
        }
    };
    let side = match &t.side {
        serde_json::Value::Null => Side::Unspecified,
        serde_json::Value::String(s) => match s.as_str() {
            "SIDE_BUY" | "BUY" | "buy" => Side::Buy,
            "SIDE_SELL" | "SELL" | "sell" => Side::Sell,
            "SIDE_UNSPECIFIED" | "" => Side::Unspecified,
            other => return Err(format!("side {other:?} is not SIDE_BUY/SIDE_SELL")),
        },
        serde_json::Value::Number(n) => Side::try_from(n.as_i64().unwrap_or(-1) as i32)
            .map_err(|_| format!("side {n} is not a Side"))?,
        other => return Err(format!("side {other} is not a Side")),
    };
    Ok(Some(Trade {
        symbol,
        trade_id: t.trade_id,
        price: decimal_text(t.price, "price")?,
        quantity: decimal_text(t.quantity, "quantity")?,
        time: Some(nanos_to_timestamp(time_ns)),
        side: side as i32,
        ..Default::default()
    }))
}

/// Replays the file; returns what the mesh said about it.
pub async fn run(options: ReplayOptions) -> anyhow::Result<ReplaySummary> {
    let format = match options.format {
        Format::Auto
            if options
                .file
                .extension()
                .is_some_and(|e| e == "jsonl" || e == "json") =>
        {
            Format::JsonLines
        }
        f => f,
    };
    let symbol = options
        .symbol
        .clone()
        .or_else(|| symbol_from_file_name(&options.file));
    if format != Format::JsonLines && symbol.is_none() {
        bail!(
            "cannot tell the symbol from the file name {}; pass --symbol",
            options.file.display()
        );
    }
    let file = tokio::fs::File::open(&options.file)
        .await
        .with_context(|| format!("opening {}", options.file.display()))?;
    let mut lines = tokio::io::BufReader::new(file).lines();

    let mut client = MarketFeedServiceClient::connect(options.target.clone())
        .await
        .with_context(|| format!("connecting to {}", options.target))?
        .max_encoding_message_size(64 * 1024 * 1024);
    let (tx, rx) = tokio::sync::mpsc::channel::<PublishRequest>(16);
    let call = tokio::spawn(async move { client.publish(ReceiverStream::new(rx)).await });

    let mut summary = ReplaySummary::default();
    let mut batch: Vec<Trade> = Vec::with_capacity(options.batch);
    let started = Instant::now();
    let mut first_time: Option<i64> = None;
    let mut line_no = 0u64;
    // Trades within this much replay time go out together.
    let window_ns: i64 = 10_000_000;
    let mut batch_start: Option<i64> = None;
    while let Some(line) = lines.next_line().await? {
        line_no += 1;
        let parsed = match format {
            Format::JsonLines => parse_json_line(&line, symbol.as_deref()),
            f => parse_csv_line(&line, f, symbol.as_deref().unwrap_or_default()),
        };
        let trade = match parsed {
            Ok(Some(t)) => t,
            Ok(None) => continue,
            Err(reason) => {
                summary.malformed_lines += 1;
                if summary.malformed_lines <= 10 {
                    eprintln!("{}:{line_no}: skipped: {reason}", options.file.display());
                }
                continue;
            }
        };
        summary.read += 1;
        let t = trade
            .time
            .as_ref()
            .map(|ts| ts.seconds * 1_000_000_000 + i64::from(ts.nanos))
            .unwrap_or(0);
        if let Speed::Times(factor) = options.speed {
            let origin = *first_time.get_or_insert(t);
            let start = *batch_start.get_or_insert(t);
            if !batch.is_empty() && (t - start) as f64 / factor > window_ns as f64 {
                tx.send(PublishRequest {
                    trades: std::mem::take(&mut batch),
                })
                .await
                .ok();
                batch_start = Some(t);
            }
            let due = Duration::from_nanos((((t - origin).max(0)) as f64 / factor) as u64);
            if let Some(wait) = due.checked_sub(started.elapsed()) {
                if !batch.is_empty() {
                    tx.send(PublishRequest {
                        trades: std::mem::take(&mut batch),
                    })
                    .await
                    .ok();
                    batch_start = Some(t);
                }
                tokio::time::sleep(wait).await;
            }
        }
        batch.push(trade);
        if batch.len() >= options.batch
            && tx
                .send(PublishRequest {
                    trades: std::mem::take(&mut batch),
                })
                .await
                .is_err()
        {
            break;
        }
    }
    if !batch.is_empty() {
        tx.send(PublishRequest { trades: batch }).await.ok();
    }
    drop(tx);
    let response = call
        .await
        .context("publish task")?
        .context("publish")?
        .into_inner();
    summary.accepted = response.accepted;
    summary.duplicate = response.duplicate;
    summary.rejected = response.rejected;
    for r in response.rejections.iter().take(10) {
        eprintln!(
            "rejected trade {} ({}): {} {}",
            r.trade_id, r.symbol, r.field, r.reason
        );
    }
    Ok(summary)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn binance_trades_ms_and_us() {
        let ms = parse_csv_line(
            "5000001,42000.01000000,0.00100000,42.00001000,1704067200123,true,true",
            Format::Auto,
            "BTCUSDT",
        )
        .unwrap()
        .unwrap();
        assert_eq!(ms.trade_id, "5000001");
        assert_eq!(ms.price, "42000.01000000");
        assert_eq!(ms.side, Side::Sell as i32);
        let ts = ms.time.unwrap();
        assert_eq!((ts.seconds, ts.nanos), (1_704_067_200, 123_000_000));

        let us = parse_csv_line(
            "7,1.5,2,3,1735689600123456,false,true",
            Format::BinanceTrades,
            "X",
        )
        .unwrap()
        .unwrap();
        let ts = us.time.unwrap();
        assert_eq!((ts.seconds, ts.nanos), (1_735_689_600, 123_456_000));
        assert_eq!(us.side, Side::Buy as i32);
    }

    #[test]
    fn binance_agg_trades_and_headers() {
        assert_eq!(
            parse_csv_line(
                "agg_trade_id,price,quantity,first_trade_id,last_trade_id,transact_time,is_buyer_maker",
                Format::Auto,
                "X"
            ),
            Ok(None)
        );
        let t = parse_csv_line(
            "26129,0.01633102,4.70443515,27781,27781,1498793709153,true,true",
            Format::Auto,
            "ETHBTC",
        )
        .unwrap()
        .unwrap();
        assert_eq!(t.trade_id, "agg-26129");
        assert_eq!(t.quantity, "4.70443515");
        assert!(parse_csv_line("1,2,3", Format::Auto, "X").is_err());
        assert!(parse_csv_line("1,2,3,4,notatime,true", Format::Auto, "X").is_err());
    }

    #[test]
    fn json_lines() {
        let t = parse_json_line(r#"{"symbol":"BTCUSDT","tradeId":"9","price":"1.50","quantity":"2","time":"2024-01-01T00:00:00.5Z","side":"SIDE_BUY"}"#, None)
            .unwrap()
            .unwrap();
        assert_eq!(
            (t.symbol.as_str(), t.trade_id.as_str(), t.side),
            ("BTCUSDT", "9", Side::Buy as i32)
        );
        assert_eq!(t.time.unwrap().nanos, 500_000_000);
        assert!(
            parse_json_line(
                r#"{"tradeId":"9","price":1.5,"quantity":"2","time":0}"#,
                Some("X")
            )
            .unwrap_err()
            .contains("decimal string")
        );
    }

    #[test]
    fn file_names_and_speeds() {
        assert_eq!(
            symbol_from_file_name(Path::new("/d/BTCUSDT-trades-2024-01-01.csv")),
            Some("BTCUSDT".into())
        );
        assert_eq!(symbol_from_file_name(Path::new("trades.csv")), None);
        assert_eq!("max".parse::<Speed>(), Ok(Speed::Max));
        assert_eq!("10x".parse::<Speed>(), Ok(Speed::Times(10.0)));
        assert!("-1x".parse::<Speed>().is_err());
    }
}
