//! `tickmesh candles verify`: recompute candles from the tick log, compare
//! them with Redis and the history store, and repair them with `--repair`
//! (see `tickmesh_candles::verify`).

use std::collections::HashMap;
use std::sync::Arc;

use anyhow::Context;
use tickmesh_candles::directory::InstrumentInfo;
use tickmesh_candles::keys::CandleKeys;
use tickmesh_candles::store::{CandleStore, Retention};
use tickmesh_candles::verify::{Coverage, MismatchRange, SymbolReport, Verifier, format_time};
use tickmesh_core::time_zone::parse_time_zone;
use tickmesh_marketfeed::keys::Keys;
use tickmesh_marketfeed::model::Instrument;
use tickmesh_runtime::RedisHandle;
use tickmesh_runtime::config::Config;

pub struct VerifyOptions {
    /// Only these symbols (default: every instrument).
    pub symbols: Vec<String>,
    pub repair: bool,
    /// Do not open the history store (it may be in use by a running tickmesh).
    pub redis_only: bool,
}

/// Mismatches were left: the command exits with status 1.
#[derive(Debug)]
pub struct Unresolved(pub u64);

impl std::fmt::Display for Unresolved {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} mismatched candles left (--repair fixes those the tick log covers)",
            self.0
        )
    }
}

impl std::error::Error for Unresolved {}

pub async fn run(config: Config, options: VerifyOptions) -> anyhow::Result<()> {
    let redis = RedisHandle::new(&config.redis).map_err(|e| anyhow::anyhow!("{e}"))?;
    let has_history = config.history.backend != "none";
    let history = if has_history && !options.redis_only {
        tickmesh::mesh::open_history(&config.history, None)
            .await
            .context("a running tickmesh holds the embedded store: stop it first, or verify with --redis-only")?
    } else {
        None
    };
    let instruments = instruments(&redis).await?;
    let symbols: Vec<String> = if options.symbols.is_empty() {
        let mut all: Vec<String> = instruments.keys().cloned().collect();
        all.sort();
        all
    } else {
        options.symbols.clone()
    };
    let store = Arc::new(CandleStore::new(
        redis.clone(),
        CandleKeys::new(redis.prefix()),
        Retention {
            updates_max_len: config.candles.updates_max_len,
            candles_per_interval: 0,
            flush_closed: has_history,
        },
    ));
    let verifier = Verifier {
        store,
        history,
        flush_repairs: has_history,
        late_window_ns: i64::try_from(config.candles.late_window.as_nanos()).unwrap_or(i64::MAX),
        updates_max_len: config.candles.updates_max_len,
    };
    let mut totals = SymbolReport::default();
    let mut left = 0;
    for symbol in &symbols {
        let info = instruments
            .get(symbol)
            .with_context(|| format!("unknown instrument {symbol:?}"))?;
        let report = verifier
            .verify_symbol(info, options.repair)
            .await
            .map_err(|e| anyhow::anyhow!("verifying {symbol}: {e}"))?;
        print_report(&report);
        totals.checked += report.checked;
        totals.mismatched += report.mismatched;
        totals.repaired += report.repaired;
        left += report.unresolved();
    }
    println!(
        "total: {} symbols, {} candles checked, {} mismatched, {} repaired, {} left",
        symbols.len(),
        totals.checked,
        totals.mismatched,
        totals.repaired,
        left
    );
    if left > 0 {
        return Err(Unresolved(left).into());
    }
    Ok(())
}

/// Every instrument as the candle service sees it, from MarketFeed's hash.
async fn instruments(redis: &RedisHandle) -> anyhow::Result<HashMap<String, InstrumentInfo>> {
    let all: HashMap<String, String> = redis::cmd("HGETALL")
        .arg(Keys::new(redis.prefix()).instruments())
        .query_async(&mut redis.conn())
        .await
        .context("reading the instruments from redis")?;
    let mut out = HashMap::new();
    for (symbol, json) in all {
        let i: Instrument = serde_json::from_str(&json)
            .with_context(|| format!("instrument {symbol:?} in redis is unreadable"))?;
        let zone = if i.time_zone.is_empty() {
            "UTC"
        } else {
            i.time_zone.as_str()
        };
        let tz = parse_time_zone(zone)
            .map_err(|e| anyhow::anyhow!("instrument {symbol:?}: time zone: {e}"))?;
        out.insert(
            symbol.clone(),
            InstrumentInfo {
                symbol,
                tz,
                price_scale: i.price_scale,
                quantity_scale: i.quantity_scale,
                sessions: Vec::new(),
            },
        );
    }
    Ok(out)
}

fn print_report(r: &SymbolReport) {
    let coverage = match r.coverage {
        Some(Coverage::ClosingAfter(t)) => format!(
            "tick log from sequence 1: candles closing after {} covered",
            format_time(t)
        ),
        Some(Coverage::OpeningAfter(t)) => {
            format!("covered: candles opening after {}", format_time(t))
        }
        None => "tick log empty: nothing covered".to_string(),
    };
    println!(
        "{}: {} candles checked, {} mismatched, {} repaired (applied sequence {}, tick log from {}, {} trades replayed; {coverage})",
        r.symbol, r.checked, r.mismatched, r.repaired, r.applied_sequence, r.log_first, r.replayed
    );
    for m in &r.ranges {
        println!(
            "  mismatch {} {} {}: {}{}",
            r.symbol,
            m.interval,
            span(m),
            m.what,
            if m.repaired { " (repaired)" } else { "" }
        );
    }
    for m in &r.inconsistent {
        println!(
            "  inconsistent {} {} {}: {} (not covered by the tick log; not repaired)",
            r.symbol,
            m.interval,
            span(m),
            m.what
        );
    }
    for c in &r.corrupt {
        println!("  corrupt {} history {c}", r.symbol);
    }
}

fn span(m: &MismatchRange) -> String {
    if m.candles == 1 {
        format_time(m.first_open_ns)
    } else {
        format!(
            "{}..{} ({} candles)",
            format_time(m.first_open_ns),
            format_time(m.last_open_ns),
            m.candles
        )
    }
}
