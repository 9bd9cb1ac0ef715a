//! `tickmesh bench candles`:
//! 1. aggregation in process across all 14 intervals against a bare loop that
//!    updates one OHLC struct per trade (the memory-speed ceiling);
//! 2. gRPC Publish → candles durable in Redis against the seed design on the
//!    same Redis (per trade and interval: read the latest candle JSON from a
//!    list, update it, write it back, publish it);
//! 3. trade → subscriber latency with 1,000 SubscribeCandles streams against
//!    raw Redis PUBLISH → 1,000 subscribers.

use std::hint::black_box;
use std::time::{Duration, Instant};

use anyhow::Context;
use chrono_tz::Tz;
use serde::{Deserialize, Serialize};
use tickmesh_api::candles::candle_query_service_client::CandleQueryServiceClient;
use tickmesh_api::candles::{GetAggregationStatusRequest, SubscribeCandlesRequest};
use tickmesh_api::marketfeed::market_feed_service_client::MarketFeedServiceClient;
use tickmesh_api::marketfeed::{PublishRequest, PublishTradesRequest, Trade};
use tickmesh_calendar::STORED;
use tickmesh_candles::book::{BookConfig, SymbolBook};
use tickmesh_candles::candle::Tick;
use tickmesh_core::decimal::{format_units, parse_units};
use tickmesh_runtime::proto_time::{nanos_to_timestamp, now_nanos};
use tokio_stream::StreamExt;
use tokio_stream::wrappers::ReceiverStream;

use super::{median, ms, percentile};
use tickmesh_mesh::demo_feed::Rng;

#[derive(Clone, Debug)]
pub struct CandleBenchOptions {
    pub in_process_trades: usize,
    pub e2e_trades: usize,
    pub seed_trades: usize,
    pub symbols: usize,
    pub subscribers: usize,
    pub latency_trades: usize,
    pub rounds: usize,
    pub redis_url: Option<String>,
}

/// Deterministic ticks: a random walk, 10 ms apart (crossing minute, hour and
/// day boundaries over a million trades).
fn ticks(n: usize, seed: u64) -> Vec<Tick> {
    let mut rng = Rng::new(seed);
    let mut price: i64 = 6_700_000;
    let start = 1_704_067_200_000_000_000i64;
    (0..n)
        .map(|i| {
            price = (price + rng.below(201) as i64 - 100).max(1);
            Tick {
                time_ns: start + i as i64 * 10_000_000,
                sequence: i as u64 + 1,
                price,
                quantity: 1 + rng.below(10_0000) as i64,
            }
        })
        .collect()
}

struct Ohlc {
    open: i64,
    high: i64,
    low: i64,
    close: i64,
    volume: i128,
    count: u64,
}

fn bare_loop(ticks: &[Tick]) -> f64 {
    let started = Instant::now();
    let mut x = Ohlc {
        open: ticks[0].price,
        high: i64::MIN,
        low: i64::MAX,
        close: 0,
        volume: 0,
        count: 0,
    };
    for t in black_box(ticks) {
        x.high = x.high.max(t.price);
        x.low = x.low.min(t.price);
        x.close = t.price;
        x.volume += i128::from(t.quantity);
        x.count += 1;
    }
    black_box((x.open, x.high, x.low, x.close, x.volume, x.count));
    ticks.len() as f64 / started.elapsed().as_secs_f64()
}

fn aggregate(ticks: &[Tick], tz: Tz) -> f64 {
    let config = BookConfig {
        late_window_ns: 300_000_000_000,
        close_grace_ns: 2_000_000_000,
    };
    let mut book = SymbolBook::new("BENCH", tz, 2, 5, config);
    let started = Instant::now();
    // Batches of 500, like StreamTrades messages; each batch's changes are taken
    // (encoded for Redis in the real aggregator).
    for batch in black_box(ticks).chunks(500) {
        for t in batch {
            book.apply(*t, 0);
        }
        black_box(book.take_changes());
    }
    ticks.len() as f64 / started.elapsed().as_secs_f64()
}

pub async fn candles(options: CandleBenchOptions) -> anyhow::Result<()> {
    println!("bench candles ({} rounds, medians)", options.rounds);

    // 1. In process.
    let data = ticks(options.in_process_trades, 7);
    let (mut bare, mut utc, mut seoul) = (Vec::new(), Vec::new(), Vec::new());
    for _ in 0..options.rounds {
        bare.push(bare_loop(&data));
        utc.push(aggregate(&data, Tz::UTC));
        seoul.push(aggregate(&data, Tz::Asia__Seoul));
    }
    let (bare, utc, seoul) = (median(bare), median(utc), median(seoul));
    println!();
    println!(
        "1. aggregation in process, {} trades, all 14 intervals",
        options.in_process_trades
    );
    println!("   bare loop (one OHLC struct per trade): {bare:>14.0} trades/s (the ceiling)");
    println!(
        "   tickmesh, UTC instrument:              {utc:>14.0} trades/s = {:.1}% of the ceiling",
        100.0 * utc / bare
    );
    println!(
        "   tickmesh, Asia/Seoul instrument:       {seoul:>14.0} trades/s = {:.1}% of the ceiling",
        100.0 * seoul / bare
    );

    // 2 and 3 need Redis and a mesh.
    let (_own, redis_url, mesh) = super::bench_mesh(options.redis_url.clone(), "benchc", |c| {
        c.candles.lease_ttl = Duration::from_secs(3);
    })
    .await?;
    let endpoint = mesh.endpoint();
    let redis = redis::Client::open(redis_url.as_str())?;

    let (mut ours, mut seed) = (Vec::new(), Vec::new());
    for round in 0..options.rounds {
        ours.push(end_to_end(&endpoint, &options, round).await?);
        seed.push(seed_design(&redis, options.seed_trades, round).await?);
    }
    let (ours, seed) = (median(ours), median(seed));
    println!();
    println!("2. end to end: gRPC Publish -> candles durable in Redis (all 14 intervals)");
    println!(
        "   seed design (read-modify-write JSON per trade and interval, then PUBLISH): {seed:>10.0} trades/s"
    );
    println!(
        "   tickmesh ({} trades over {} symbols, 2 publishers):                     {ours:>10.0} trades/s",
        options.e2e_trades, options.symbols
    );
    println!("   ratio: {:.0}x", ours / seed);

    let (ours, raw) = latency(&endpoint, &redis, &options).await?;
    println!();
    println!(
        "3. trade -> subscriber latency, {} subscribers, {} trades",
        options.subscribers, options.latency_trades
    );
    println!(
        "   raw Redis PUBLISH -> {} subscribers: median {:.2} ms, p99 {:.2} ms",
        options.subscribers,
        ms(raw.0),
        ms(raw.1)
    );
    println!(
        "   tickmesh PublishTrades -> SubscribeCandles: median {:.2} ms, p99 {:.2} ms",
        ms(ours.0),
        ms(ours.1)
    );
    mesh.stop().await?;
    Ok(())
}

/// A trade of `price` cents and 0.01 quantity.
pub(crate) fn trade(symbol: &str, id: String, price: i64, time_ns: i64) -> Trade {
    Trade {
        symbol: symbol.into(),
        trade_id: id,
        price: format_units(i128::from(price), 2),
        quantity: "0.01000000".into(),
        time: Some(nanos_to_timestamp(time_ns)),
        ..Default::default()
    }
}

pub(crate) async fn wait_applied(
    endpoint: &str,
    symbols: &[String],
    want: u64,
) -> anyhow::Result<()> {
    let mut c = CandleQueryServiceClient::connect(endpoint.to_string()).await?;
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let statuses = c
            .get_aggregation_status(GetAggregationStatusRequest {
                symbols: symbols.to_vec(),
            })
            .await?
            .into_inner()
            .statuses;
        if statuses
            .iter()
            .all(|s| s.applied_sequence >= want && !s.owner.is_empty())
        {
            return Ok(());
        }
        anyhow::ensure!(
            Instant::now() < deadline,
            "aggregation did not catch up: {statuses:?}"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

async fn end_to_end(
    endpoint: &str,
    options: &CandleBenchOptions,
    round: usize,
) -> anyhow::Result<f64> {
    let symbols: Vec<String> = (0..options.symbols)
        .map(|i| format!("CB{round}X{i}"))
        .collect();
    let mut client = MarketFeedServiceClient::connect(endpoint.to_string())
        .await?
        .max_encoding_message_size(64 << 20);
    let base = now_nanos() - 86_400_000_000_000;
    // Register the symbols and let the aggregator take them before timing.
    let first: Vec<Trade> = symbols
        .iter()
        .map(|s| trade(s, "registration".into(), 6_700_000, base))
        .collect();
    client
        .publish_trades(PublishTradesRequest {
            trades: first,
            all_or_nothing: true,
        })
        .await?;
    wait_applied(endpoint, &symbols, 1).await?;

    let per_symbol = options.e2e_trades / symbols.len();
    let mut rng = Rng::new(round as u64 + 11);
    let mut all = Vec::with_capacity(per_symbol * symbols.len());
    for k in 0..per_symbol {
        for s in &symbols {
            all.push(trade(
                s,
                format!("{k}"),
                6_700_000 + rng.below(2000) as i64,
                base + 1 + k as i64 * 10_000_000,
            ));
        }
    }
    let started = Instant::now();
    let mut tasks = Vec::new();
    for part in all.chunks(all.len().div_ceil(2)) {
        let part = part.to_vec();
        let endpoint = endpoint.to_string();
        tasks.push(tokio::spawn(async move {
            let mut client = MarketFeedServiceClient::connect(endpoint)
                .await?
                .max_encoding_message_size(64 << 20);
            let (tx, rx) = tokio::sync::mpsc::channel(4);
            let call = tokio::spawn(async move { client.publish(ReceiverStream::new(rx)).await });
            for batch in part.chunks(1000) {
                tx.send(PublishRequest {
                    trades: batch.to_vec(),
                })
                .await
                .ok();
            }
            drop(tx);
            call.await??;
            anyhow::Ok(())
        }));
    }
    for t in tasks {
        t.await??;
    }
    wait_applied(endpoint, &symbols, per_symbol as u64 + 1).await?;
    Ok((per_symbol * symbols.len()) as f64 / started.elapsed().as_secs_f64())
}

/// The seed design's candle as JSON.
#[derive(Serialize, Deserialize)]
struct SeedCandle {
    interval: String,
    open_time: i64,
    open: String,
    high: String,
    low: String,
    close: String,
    volume: String,
    trades: u64,
}

async fn seed_design(redis: &redis::Client, n: usize, round: usize) -> anyhow::Result<f64> {
    let mut conn = redis.get_multiplexed_async_connection().await?;
    let data = ticks(n, round as u64 + 3);
    let started = Instant::now();
    for t in &data {
        for interval in STORED {
            let key = format!("seed:{round}:candles:{interval}");
            let open_time = interval.bucket(t.time_ns, Tz::UTC).open_ns;
            let last: Option<String> = redis::cmd("LINDEX")
                .arg(&key)
                .arg(-1)
                .query_async(&mut conn)
                .await?;
            let price = format_units(i128::from(t.price), 2);
            let mut candle = last.and_then(|j| serde_json::from_str::<SeedCandle>(&j).ok());
            let replace = match candle.as_mut() {
                Some(c) if c.open_time == open_time => {
                    let p = t.price;
                    if p > parse_units(&c.high, 2)? {
                        c.high = price.clone();
                    }
                    if p < parse_units(&c.low, 2)? {
                        c.low = price.clone();
                    }
                    c.close = price.clone();
                    c.volume = format_units(i128::from(parse_units(&c.volume, 5)? + t.quantity), 5);
                    c.trades += 1;
                    true
                }
                _ => {
                    candle = Some(SeedCandle {
                        interval: interval.to_string(),
                        open_time,
                        open: price.clone(),
                        high: price.clone(),
                        low: price.clone(),
                        close: price,
                        volume: format_units(i128::from(t.quantity), 5),
                        trades: 1,
                    });
                    false
                }
            };
            let json = serde_json::to_string(candle.as_ref().expect("set"))?;
            if replace {
                let _: () = redis::cmd("LSET")
                    .arg(&key)
                    .arg(-1)
                    .arg(&json)
                    .query_async(&mut conn)
                    .await?;
            } else {
                let _: () = redis::cmd("RPUSH")
                    .arg(&key)
                    .arg(&json)
                    .query_async(&mut conn)
                    .await?;
            }
            let _: () = redis::cmd("PUBLISH")
                .arg(format!("seed:{interval}"))
                .arg(&json)
                .query_async(&mut conn)
                .await?;
        }
    }
    Ok(n as f64 / started.elapsed().as_secs_f64())
}

type Latency = (Duration, Duration);

async fn latency(
    endpoint: &str,
    redis: &redis::Client,
    options: &CandleBenchOptions,
) -> anyhow::Result<(Latency, Latency)> {
    let n = options.latency_trades;
    let symbol = "LATENCY".to_string();
    let mut client = MarketFeedServiceClient::connect(endpoint.to_string()).await?;
    // A fixed past minute: trade k makes the candle's trade count k.
    let minute = (now_nanos() / 60_000_000_000 - 10) * 60_000_000_000;
    client
        .publish_trades(PublishTradesRequest {
            trades: vec![trade(&symbol, "1".into(), 10_000, minute)],
            all_or_nothing: true,
        })
        .await?;
    wait_applied(endpoint, std::slice::from_ref(&symbol), 1).await?;

    // Subscribers spread over a few connections (1,024 streams per connection at most).
    let mut channels = Vec::new();
    for _ in 0..8 {
        channels.push(
            tonic::transport::Endpoint::from_shared(endpoint.to_string())?
                .connect()
                .await?,
        );
    }
    let (ready_tx, mut ready_rx) = tokio::sync::mpsc::channel::<()>(options.subscribers);
    let mut receivers = Vec::new();
    for i in 0..options.subscribers {
        let mut c = CandleQueryServiceClient::new(channels[i % channels.len()].clone());
        let ready = ready_tx.clone();
        let symbol = symbol.clone();
        receivers.push(tokio::spawn(async move {
            let mut seen: Vec<Option<Instant>> = vec![None; n + 2];
            let mut stream = c
                .subscribe_candles(SubscribeCandlesRequest {
                    symbol,
                    intervals: vec!["1m".into()],
                    cursor: String::new(),
                    indicators: Vec::new(),
                })
                .await?
                .into_inner();
            stream.message().await?; // snapshot
            ready.send(()).await.ok();
            while let Ok(Ok(Some(m))) =
                tokio::time::timeout(Duration::from_secs(10), stream.message()).await
            {
                let at = Instant::now();
                for c in m.candles {
                    let upto = (c.trade_count as usize).min(n + 1);
                    for slot in seen.iter_mut().take(upto + 1) {
                        slot.get_or_insert(at);
                    }
                }
                if seen[n + 1].is_some() {
                    break;
                }
            }
            anyhow::Ok(seen)
        }));
    }
    drop(ready_tx);
    for _ in 0..options.subscribers {
        ready_rx
            .recv()
            .await
            .context("a subscriber failed to start")?;
    }
    let mut sent = vec![Instant::now(); n + 2];
    for (k, slot) in sent.iter_mut().enumerate().skip(2) {
        *slot = Instant::now();
        client
            .publish_trades(PublishTradesRequest {
                trades: vec![trade(
                    &symbol,
                    k.to_string(),
                    10_000 + k as i64,
                    minute + k as i64,
                )],
                all_or_nothing: true,
            })
            .await?;
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let mut ours = Vec::new();
    for r in receivers {
        let seen = r.await??;
        for k in 2..=n + 1 {
            if let Some(at) = seen[k] {
                ours.push(at.saturating_duration_since(sent[k]));
            }
        }
    }
    anyhow::ensure!(
        ours.len() == options.subscribers * n,
        "got {} of {} updates",
        ours.len(),
        options.subscribers * n
    );
    ours.sort();

    // Raw Redis pub/sub with the same fan-out.
    let mut subs = Vec::new();
    let (ready_tx, mut ready_rx) = tokio::sync::mpsc::channel::<()>(options.subscribers);
    for _ in 0..options.subscribers {
        let mut pubsub = redis.get_async_pubsub().await?;
        pubsub.subscribe("bench-raw").await?;
        let ready = ready_tx.clone();
        subs.push(tokio::spawn(async move {
            ready.send(()).await.ok();
            let mut seen: Vec<Option<Instant>> = vec![None; n];
            let mut messages = pubsub.on_message();
            while let Ok(Some(msg)) =
                tokio::time::timeout(Duration::from_secs(10), messages.next()).await
            {
                let k: usize = msg.get_payload().unwrap_or(0);
                if k < n {
                    seen[k] = Some(Instant::now());
                }
                if k + 1 == n {
                    break;
                }
            }
            seen
        }));
    }
    drop(ready_tx);
    for _ in 0..options.subscribers {
        ready_rx.recv().await;
    }
    let mut conn = redis.get_multiplexed_async_connection().await?;
    let mut sent = Vec::with_capacity(n);
    for k in 0..n {
        sent.push(Instant::now());
        let _: i64 = redis::cmd("PUBLISH")
            .arg("bench-raw")
            .arg(k)
            .query_async(&mut conn)
            .await?;
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let mut raw = Vec::new();
    for s in subs {
        for (k, at) in s.await?.into_iter().enumerate() {
            if let Some(at) = at {
                raw.push(at.saturating_duration_since(sent[k]));
            }
        }
    }
    raw.sort();
    Ok((
        (percentile(&ours, 0.5), percentile(&ours, 0.99)),
        (percentile(&raw, 0.5), percentile(&raw, 0.99)),
    ))
}
