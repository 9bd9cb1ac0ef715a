//! `tickmesh bench history`: size at rest and speed of the long-term tier on a
//! synthetic year of 1m candles (or the 1m candles of a real trade file).

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Instant;

use anyhow::Context;
use tickmesh_api::candles::candle_query_service_client::CandleQueryServiceClient;
use tickmesh_api::candles::{CandleOrder, GetCandlesRequest};
use tickmesh_api::marketfeed::market_feed_service_client::MarketFeedServiceClient;
use tickmesh_api::marketfeed::{Instrument, UpsertInstrumentRequest};
use tickmesh_calendar::Interval;
use tickmesh_candle_blocks::{BlockCandle, decode, encode, measure, synthetic};
use tickmesh_candles::book::{BookConfig, SymbolBook};
use tickmesh_candles::candle::Tick;
use tickmesh_core::decimal::{format_units, parse_units};
use tickmesh_history::{CandleStore, EmbeddedStore, StoredCandle};

use super::ms;

#[derive(Clone, Debug)]
pub struct HistoryBenchOptions {
    /// A Binance trades CSV (or JSON lines) to take 1m candles from instead.
    pub trades: Option<PathBuf>,
    pub symbol: Option<String>,
    pub price_scale: u32,
    pub quantity_scale: u32,
    pub redis_url: Option<String>,
}

const SYMBOL: &str = "HISTBENCH";
const START: i64 = 1_704_067_200_000_000_000; // 2024-01-01T00:00Z

/// The 1m candles of a real trade file, through the aggregator's own book.
async fn candles_from_trades(
    path: &PathBuf,
    options: &HistoryBenchOptions,
) -> anyhow::Result<(Vec<BlockCandle>, u32, u32)> {
    let text = tokio::fs::read_to_string(path)
        .await
        .with_context(|| format!("reading {}", path.display()))?;
    let symbol = options
        .symbol
        .clone()
        .or_else(|| tickmesh_mesh::replay::symbol_from_file_name(path))
        .unwrap_or_else(|| "X".into());
    let (ps, qs) = (options.price_scale, options.quantity_scale);
    let mut book = SymbolBook::new(
        &symbol,
        chrono_tz::Tz::UTC,
        ps,
        qs,
        BookConfig {
            late_window_ns: 300_000_000_000,
            close_grace_ns: 0,
        },
    );
    let minute = Interval::parse("1m").expect("1m");
    let mut out: std::collections::BTreeMap<i64, BlockCandle> = std::collections::BTreeMap::new();
    for (i, line) in text.lines().enumerate() {
        let Ok(Some(t)) = tickmesh_mesh::replay::parse_csv_line(
            line,
            tickmesh_mesh::replay::Format::Auto,
            &symbol,
        ) else {
            continue;
        };
        let time = t
            .time
            .as_ref()
            .map(|ts| ts.seconds * 1_000_000_000 + i64::from(ts.nanos))
            .unwrap_or(0);
        let (Ok(price), Ok(quantity)) = (parse_units(&t.price, ps), parse_units(&t.quantity, qs))
        else {
            continue;
        };
        book.apply(
            Tick {
                time_ns: time,
                sequence: i as u64 + 1,
                price,
                quantity,
            },
            0,
        );
        if i % 1000 == 0 {
            for c in book
                .take_changes()
                .into_iter()
                .filter(|c| c.interval == minute)
            {
                out.insert(c.bucket.open_ns, to_block(&c));
            }
        }
    }
    for c in book
        .take_changes()
        .into_iter()
        .filter(|c| c.interval == minute)
    {
        out.insert(c.bucket.open_ns, to_block(&c));
    }
    Ok((out.into_values().collect(), ps, qs))
}

fn to_block(c: &tickmesh_candles::candle::Candle) -> BlockCandle {
    BlockCandle {
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
    }
}

/// The seed design's candle document.
fn json_document(c: &BlockCandle, ps: u32, qs: u32) -> String {
    format!(
        r#"{{"_id":"{SYMBOL}:1m:{}","symbol":"{SYMBOL}","interval":"1m","openTime":{},"closeTime":{},"open":"{}","high":"{}","low":"{}","close":"{}","volume":"{}","quoteVolume":"{}","trades":{}}}"#,
        c.open_ns / 1_000_000,
        c.open_ns / 1_000_000,
        c.close_ns / 1_000_000 - 1,
        format_units(i128::from(c.open), ps),
        format_units(i128::from(c.high), ps),
        format_units(i128::from(c.low), ps),
        format_units(i128::from(c.close), ps),
        format_units(c.volume, qs),
        format_units(c.quote_volume, ps + qs),
        c.trade_count
    )
}

pub async fn history(options: HistoryBenchOptions) -> anyhow::Result<()> {
    let (candles, ps, qs, what) = match &options.trades {
        Some(path) => {
            let (c, ps, qs) = candles_from_trades(path, &options).await?;
            (c, ps, qs, format!("1m candles of {}", path.display()))
        }
        None => (
            synthetic::year_of_minutes(7, START),
            2,
            5,
            "a synthetic year of 1m candles (random walk, daily volume cycle)".to_string(),
        ),
    };
    anyhow::ensure!(!candles.is_empty(), "no candles to measure");
    let n = candles.len() as f64;
    println!("bench history: {what}: {} candles", candles.len());

    // Encoded blocks, one per UTC day.
    let minute = Interval::parse("1m").expect("1m");
    let blocks = measure::daily_blocks(&candles, ps, qs);
    let started = Instant::now();
    let encoded = blocks.iter().map(encode).collect::<Result<Vec<_>, _>>()?;
    let encode_time = started.elapsed();
    let block_bytes: usize = encoded.iter().map(Vec::len).sum();
    let started = Instant::now();
    for (bytes, block) in encoded.iter().zip(&blocks) {
        anyhow::ensure!(&decode(bytes)? == block, "a block did not round-trip");
    }
    let decode_time = started.elapsed();
    let mut json_bytes = 0usize;
    let mut json_zstd = 0usize;
    for block in &blocks {
        let text: String = block
            .candles
            .iter()
            .map(|c| json_document(c, ps, qs) + "\n")
            .collect();
        json_bytes += text.len() - block.candles.len();
        json_zstd += zstd::bulk::compress(text.as_bytes(), 3)?.len();
    }

    // The embedded store, written in flusher-sized batches.
    let dir = std::env::temp_dir().join(format!("tickmesh-bench-history-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let path = dir.join("history.redb");
    let store = Arc::new(EmbeddedStore::open(&path)?);
    let stored: Vec<StoredCandle> = candles
        .iter()
        .map(|c| StoredCandle::from_block(SYMBOL, minute, ps, qs, c))
        .collect();
    let started = Instant::now();
    // Whole days per write, as the flusher does once a day's candles closed.
    let mut batch = Vec::new();
    for c in &stored {
        batch.push(c.clone());
        if batch.len() >= 5_000 {
            store.upsert(&batch).await?;
            batch.clear();
        }
    }
    store.upsert(&batch).await?;
    let write_time = started.elapsed();
    let at_rest = store.size_on_disk().await?;
    drop(store);
    let (_, compacted) = EmbeddedStore::compact(&path)?;
    let store = Arc::new(EmbeddedStore::open(&path)?);

    // Straight from the store, in the flusher's and queries' read size.
    let started = Instant::now();
    let (mut from, mut read) = (i64::MIN, 0);
    loop {
        let got = store
            .range(SYMBOL, minute, from, i64::MAX, false, 1001)
            .await?;
        let Some(last) = got.last() else { break };
        from = last.open_ns + 1;
        read += got.len();
    }
    let store_read = started.elapsed();
    anyhow::ensure!(
        read == candles.len(),
        "store gave back {read} of {} candles",
        candles.len()
    );

    println!();
    println!("size per 1m candle:");
    println!(
        "  seed design, one JSON document per candle: {:>8.1} bytes",
        json_bytes as f64 / n
    );
    println!(
        "  the same JSON, zstd-compressed per day:    {:>8.1} bytes",
        json_zstd as f64 / n
    );
    println!(
        "  tickmesh encoded blocks (one per day):     {:>8.2} bytes  (encoded in {:.0} ms, decoded in {:.0} ms)",
        block_bytes as f64 / n,
        ms(encode_time),
        ms(decode_time)
    );
    for (field, bytes) in measure::field_breakdown(&candles, ps, qs) {
        println!("    {field:>9}: {bytes:.3} bytes");
    }
    println!(
        "  tickmesh embedded store file at rest:      {:>8.2} bytes  ({} bytes, as written)",
        at_rest as f64 / n,
        at_rest
    );
    println!(
        "  the same file after `history compact`:     {:>8.2} bytes  ({} bytes)",
        compacted as f64 / n,
        compacted
    );
    println!();
    println!(
        "writes: {:.0} candles/s into the embedded store ({} candles in {:.0} ms, batches of 5,000)",
        n / write_time.as_secs_f64(),
        candles.len(),
        ms(write_time)
    );
    println!(
        "store reads: all {} candles oldest first, 1,001 at a time: {:.0} ms ({:.0} candles/s)",
        read,
        ms(store_read),
        n / store_read.as_secs_f64()
    );

    // Reads through GetCandles: a mesh whose history is this store.
    let (_redis, _url, mesh) =
        super::bench_mesh_with(options.redis_url.clone(), "benchh", Some(store.clone())).await?;
    let mut feed = MarketFeedServiceClient::connect(mesh.endpoint()).await?;
    feed.upsert_instrument(UpsertInstrumentRequest {
        instrument: Some(Instrument {
            symbol: SYMBOL.into(),
            price_scale: ps,
            quantity_scale: qs,
            time_zone: "UTC".into(),
            ..Default::default()
        }),
    })
    .await?;
    let mut client = CandleQueryServiceClient::connect(mesh.endpoint())
        .await?
        .max_decoding_message_size(64 << 20);
    let request = |token: String, order: CandleOrder| GetCandlesRequest {
        symbol: SYMBOL.into(),
        interval: "1m".into(),
        page_size: 1000,
        page_token: token,
        order: order as i32,
        ..Default::default()
    };
    let mut recent = Vec::new();
    for _ in 0..11 {
        let started = Instant::now();
        let page = client
            .get_candles(request(String::new(), CandleOrder::NewestFirst))
            .await?
            .into_inner();
        anyhow::ensure!(
            page.candles.len() == 1000.min(candles.len()),
            "got {} candles",
            page.candles.len()
        );
        recent.push(started.elapsed());
    }
    recent.sort();
    let started = Instant::now();
    let mut token = String::new();
    let mut total = 0;
    loop {
        let page = client
            .get_candles(request(token, CandleOrder::OldestFirst))
            .await?
            .into_inner();
        total += page.candles.len();
        if page.next_page_token.is_empty() {
            break;
        }
        token = page.next_page_token;
    }
    let full = started.elapsed();
    anyhow::ensure!(
        total == candles.len(),
        "read {total} of {} candles",
        candles.len()
    );
    println!(
        "reads through GetCandles: 1,000 recent candles: median {:.1} ms; all {} candles oldest first in pages of 1,000: {:.0} ms ({:.0} candles/s)",
        ms(recent[recent.len() / 2]),
        total,
        ms(full),
        total as f64 / full.as_secs_f64()
    );
    mesh.stop().await?;
    let _ = std::fs::remove_dir_all(&dir);
    Ok(())
}
