//! `tickmesh bench indicators`:
//! 1. live: the CPU a serving process spends per candle update it sends to
//!    SubscribeCandles clients with five indicators, against the same
//!    subscriptions without indicators. Each round measures both at once:
//!    two `tickmesh serve` children that do not aggregate (so their CPU is
//!    the subscriptions' alone) get the same updates of the same symbols,
//!    one serving them with indicators and the other without, and swap
//!    roles every round; the figure is the median of the rounds' ratios.
//!    Both children share the last CPU, and this process (which aggregates,
//!    publishes and runs the clients) the others, so the clients' work does
//!    not land on the measured core. A run measuring the modes one after
//!    the other saw CPU per update drift by up to 40% between rounds.
//! 2. history: GetIndicators of 1,000 candles × five indicators against
//!    GetCandles of the same page (median latency), with the series'
//!    checkpoints in Redis and without them (the whole series read from its
//!    first candle).

use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::Context;
use tickmesh_api::candles::candle_query_service_client::CandleQueryServiceClient;
use tickmesh_api::candles::{GetCandlesRequest, GetIndicatorsRequest, SubscribeCandlesRequest};
use tickmesh_api::marketfeed::market_feed_service_client::MarketFeedServiceClient;
use tickmesh_api::marketfeed::{PublishTradesRequest, Trade};
use tickmesh_mesh::demo_feed::Rng;
use tickmesh_runtime::proto_time::now_nanos;

use super::candles::trade;
use super::metrics_cost::{Activity, MeshProcess, spawn_serve};
use super::{bench_mesh, median, ms};

/// The five indicators of the bench.
pub const FIVE: [&str; 5] = [
    "sma(20)",
    "ema(12)",
    "rsi(14)",
    "macd(12,26,9)",
    "bbands(20,2)",
];
const MINUTE: i64 = 60_000_000_000;

#[derive(Clone, Debug)]
pub struct IndicatorBenchOptions {
    /// Symbols subscribed in each live round (one subscription each).
    pub symbols: usize,
    /// Trades per symbol in each live round (about one candle update each).
    pub updates: usize,
    pub rounds: usize,
    /// Candles of the history series (GetIndicators pages are 1,000).
    pub history_candles: usize,
    /// Queries timed per kind.
    pub queries: usize,
    pub redis_url: Option<String>,
    /// Both processes without indicators (an A/A check of the method).
    pub aa: bool,
}

#[derive(Clone, Debug, Default)]
pub struct IndicatorReport {
    pub none_cpu_us_per_update: f64,
    pub five_cpu_us_per_update: f64,
    pub updates_per_round: u64,
    pub get_candles: Duration,
    pub get_indicators: Duration,
    pub get_indicators_cold: Duration,
    /// Median over the rounds of (with five) / (without) in the same round.
    pub paired_ratio: f64,
}

impl IndicatorReport {
    /// CPU per update with five indicators over without: the median of
    /// the rounds' ratios (both modes measured at once in each round).
    pub fn live_ratio(&self) -> f64 {
        self.paired_ratio
    }
}

async fn publish(
    client: &mut MarketFeedServiceClient<tonic::transport::Channel>,
    trades: Vec<Trade>,
) -> anyhow::Result<()> {
    for chunk in trades.chunks(5_000) {
        let r = client
            .publish_trades(PublishTradesRequest {
                trades: chunk.to_vec(),
                all_or_nothing: true,
            })
            .await?
            .into_inner();
        anyhow::ensure!(r.rejected == 0, "bench trades rejected: {:?}", r.rejections);
    }
    Ok(())
}

pub async fn indicators(
    options: IndicatorBenchOptions,
    exe: &Path,
) -> anyhow::Result<IndicatorReport> {
    let (_redis, url, mesh) = bench_mesh(options.redis_url.clone(), "bench-ind", |c| {
        c.candles.close_grace = Duration::from_millis(200);
    })
    .await?;
    let endpoint = mesh.endpoint();
    let dir = std::env::temp_dir().join(format!("tickmesh-bench-ind-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    let mut servers = Vec::new();
    for name in ["a", "b"] {
        servers.push(
            spawn_serve(
                exe,
                &url,
                "bench-ind",
                &[
                    ("TICKMESH_SERVICES_ENABLED", "marketfeed,candles".into()),
                    ("TICKMESH_CANDLES_AGGREGATE", "false".into()),
                    (
                        "TICKMESH_HISTORY_EMBEDDED_PATH",
                        dir.join(format!("serve-{name}.redb")).display().to_string(),
                    ),
                ],
            )
            .await
            .context("a serving process")?,
        );
    }
    let pinned = pin(&servers);
    println!();
    println!(
        "indicators: {} symbols x {} trades per round, {} rounds; each round both modes at once on two serving processes that do not aggregate ({} and {}, roles swapped every round{}), aggregation here on {endpoint}",
        options.symbols,
        options.updates,
        options.rounds,
        servers[0].endpoint,
        servers[1].endpoint,
        if pinned {
            "; both on the last CPU, this process on the others"
        } else {
            ""
        }
    );
    if options.aa {
        println!("   A/A check: neither process serves indicators");
    }
    let mut report = IndicatorReport::default();
    let (mut none, mut five, mut ratios) = (Vec::new(), Vec::new(), Vec::new());
    for round in 0..options.rounds {
        let with = round % 2;
        let [
            (none_us, none_updates, none_act),
            (five_us, five_updates, five_act),
        ] = live_round(&endpoint, &servers, &options, round, with).await?;
        report.updates_per_round = five_updates;
        let (n, f) = (none_us / none_updates as f64, five_us / five_updates as f64);
        let line = |updates: u64, act: Activity| {
            format!(
                "{updates} updates, {:.2} system calls, {:.2} context switches per update, {} MiB resident",
                act.syscalls as f64 / updates as f64,
                act.switches as f64 / updates as f64,
                act.rss_kib / 1024
            )
        };
        println!(
            "   round {round}: {n:.1} µs CPU per update without indicators, {f:.1} µs with five ({:+.1}%)\n      without ({}): {}\n      with five ({}): {}",
            (f / n - 1.0) * 100.0,
            ["a", "b"][1 - with],
            line(none_updates, none_act),
            ["a", "b"][with],
            line(five_updates, five_act),
        );
        none.push(n);
        five.push(f);
        ratios.push(f / n);
    }
    report.none_cpu_us_per_update = median(none);
    report.five_cpu_us_per_update = median(five);
    report.paired_ratio = median(ratios);
    println!(
        "   CPU per candle update, median: {:.1} µs without indicators, {:.1} µs with {}; median of the rounds' ratios {:+.1}%",
        report.none_cpu_us_per_update,
        report.five_cpu_us_per_update,
        FIVE.join(", "),
        (report.paired_ratio - 1.0) * 100.0
    );
    drop(servers);

    let (candles, warm, cold) = history(&endpoint, &url, &options).await?;
    report.get_candles = candles;
    report.get_indicators = warm;
    report.get_indicators_cold = cold;
    println!(
        "   1,000 candles, median of {}: GetCandles {:.2} ms, GetIndicators x5 {:.2} ms ({:.2}x) with checkpoints, {:.2} ms reading the {}-candle series from its first candle",
        options.queries,
        ms(candles),
        ms(warm),
        warm.as_secs_f64() / candles.as_secs_f64(),
        ms(cold),
        options.history_candles
    );
    mesh.stop().await?;
    Ok(report)
}

/// Pins the serving processes to the last CPU and this process (and what it
/// starts later) to the others, so the clients' and the aggregator's work
/// does not share a core with what is measured. Needs `taskset` and two CPUs.
fn pin(servers: &[MeshProcess]) -> bool {
    let cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
    if cpus < 2 {
        return false;
    }
    let taskset = |cpus: String, pid: u32| {
        std::process::Command::new("taskset")
            .args(["-a", "-p", "-c", &cpus, &pid.to_string()])
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .status()
            .is_ok_and(|s| s.success())
    };
    let last = (cpus - 1).to_string();
    let others = format!("0-{}", cpus - 2);
    servers.iter().all(|s| taskset(last.clone(), s.pid())) && taskset(others, std::process::id())
}

/// One round: fresh symbols with 60 warm-up candles, one subscription each on
/// both serving processes (with five indicators on `servers[with]`, without
/// on the other), then `updates` trades per symbol 10 s apart (an update of
/// the open candle each, a new candle every sixth). Returns, without
/// indicators and then with, the serving process's CPU (µs) over the
/// updates, the candle updates its clients got, and its activity.
async fn live_round(
    endpoint: &str,
    servers: &[MeshProcess],
    options: &IndicatorBenchOptions,
    round: usize,
    with: usize,
) -> anyhow::Result<[(f64, u64, Activity); 2]> {
    let symbols: Vec<String> = (0..options.symbols)
        .map(|i| format!("IND{round}X{i}"))
        .collect();
    let mut feed = MarketFeedServiceClient::connect(endpoint.to_string())
        .await?
        .max_encoding_message_size(64 << 20);
    let base = (now_nanos() / MINUTE - 24 * 60) * MINUTE;
    let mut rng = Rng::new(round as u64);
    let mut price: Vec<i64> = vec![6_700_000; symbols.len()];
    let mut step = |i: usize, rng: &mut Rng| {
        price[i] = (price[i] + rng.below(2001) as i64 - 1000).max(100);
        price[i]
    };
    // Warm-up history: one trade a minute for an hour.
    let mut warm = Vec::new();
    for m in 0..60 {
        for (i, s) in symbols.iter().enumerate() {
            warm.push(trade(
                s,
                format!("w{m}"),
                step(i, &mut rng),
                base + m * MINUTE,
            ));
        }
    }
    publish(&mut feed, warm).await?;
    super::candles::wait_applied(endpoint, &symbols, 60).await?;

    let last_price = 1; // 0.01: no walk reaches it; marks the last trade.
    let mut receivers: [Vec<_>; 2] = [Vec::new(), Vec::new()];
    for (k, server) in servers.iter().enumerate() {
        let channel = tonic::transport::Endpoint::from_shared(server.endpoint.clone())?
            .connect()
            .await?;
        for s in &symbols {
            let mut c = CandleQueryServiceClient::new(channel.clone());
            let mut stream = c
                .subscribe_candles(SubscribeCandlesRequest {
                    symbol: s.clone(),
                    intervals: vec!["1m".into()],
                    cursor: String::new(),
                    indicators: if k == with && !options.aa {
                        FIVE.iter().map(|s| s.to_string()).collect()
                    } else {
                        Vec::new()
                    },
                })
                .await?
                .into_inner();
            stream.message().await?.context("snapshot")?; // snapshot
            receivers[k].push(tokio::spawn(async move {
                let mut updates = 0u64;
                let mut last_close = String::new();
                loop {
                    let m = tokio::time::timeout(Duration::from_secs(60), stream.message())
                        .await
                        .with_context(|| {
                            format!(
                                "no update within 60 s after {updates} (last close {last_close})"
                            )
                        })??
                        .context("stream ended")?;
                    updates += m.candles.len() as u64;
                    if let Some(c) = m.candles.last() {
                        last_close = format!(
                            "{} {}",
                            c.close,
                            c.open_time.as_ref().map_or(0, |t| t.seconds)
                        );
                    }
                    if m.candles
                        .iter()
                        .any(|c| c.close.trim_end_matches('0') == "0.01")
                    {
                        return anyhow::Ok(updates);
                    }
                }
            }));
        }
    }
    let before: Vec<(Duration, Activity)> =
        servers.iter().map(|s| (s.cpu(), s.activity())).collect();
    let start = base + 60 * MINUTE;
    for k in 0..options.updates {
        let last = k + 1 == options.updates;
        let batch: Vec<Trade> = symbols
            .iter()
            .enumerate()
            .map(|(i, s)| {
                let p = if last { last_price } else { step(i, &mut rng) };
                trade(s, format!("u{k}"), p, start + k as i64 * 10_000_000_000)
            })
            .collect();
        publish(&mut feed, batch).await?;
        // Paced: about one write (one update) per symbol per batch.
        tokio::time::sleep(Duration::from_millis(4)).await;
    }
    let mut out = [(0.0, 0, Activity::default()); 2];
    for (k, receivers) in receivers.into_iter().enumerate() {
        let mut updates = 0;
        for r in receivers {
            updates += r.await??;
        }
        let cpu = servers[k].cpu().saturating_sub(before[k].0);
        // Index 0: without indicators, 1: with.
        out[usize::from(k == with)] = (
            cpu.as_secs_f64() * 1e6,
            updates,
            servers[k].activity().since(before[k].1),
        );
    }
    Ok(out)
}

/// GetCandles and GetIndicators (warm and cold) of the newest 1,000 candles
/// of a series of `history_candles` 1m candles: medians.
async fn history(
    endpoint: &str,
    redis_url: &str,
    options: &IndicatorBenchOptions,
) -> anyhow::Result<(Duration, Duration, Duration)> {
    let symbol = "INDHIST".to_string();
    let mut feed = MarketFeedServiceClient::connect(endpoint.to_string())
        .await?
        .max_encoding_message_size(64 << 20);
    let n = options.history_candles;
    let base = (now_nanos() / MINUTE - n as i64 - 10) * MINUTE;
    let mut rng = Rng::new(77);
    let mut price = 6_700_000i64;
    let trades: Vec<Trade> = (0..n)
        .map(|m| {
            price = (price + rng.below(2001) as i64 - 1000).max(100);
            trade(&symbol, format!("{m}"), price, base + m as i64 * MINUTE)
        })
        .collect();
    publish(&mut feed, trades).await?;
    super::candles::wait_applied(endpoint, std::slice::from_ref(&symbol), n as u64).await?;
    let mut c = CandleQueryServiceClient::connect(endpoint.to_string())
        .await?
        .max_decoding_message_size(64 << 20);
    let page = GetCandlesRequest {
        symbol: symbol.clone(),
        interval: "1m".into(),
        page_size: 1000,
        ..Default::default()
    };
    let ind = GetIndicatorsRequest {
        symbol: symbol.clone(),
        interval: "1m".into(),
        indicators: FIVE.iter().map(|s| s.to_string()).collect(),
        page_size: 1000,
        ..Default::default()
    };
    // Once to write the checkpoints (and check the page).
    let first = c.get_indicators(ind.clone()).await?.into_inner();
    anyhow::ensure!(first.candles.len() == 1000, "a page of 1,000");
    anyhow::ensure!(
        first
            .candles
            .iter()
            .all(|c| c.indicators.len() == FIVE.len()),
        "five values on every candle"
    );
    let redis = redis::Client::open(redis_url)?;
    let mut conn = redis.get_multiplexed_async_connection().await?;
    let checkpoints: Vec<String> = redis::cmd("KEYS")
        .arg("bench-ind:{INDHIST}:ind:*:ck")
        .query_async(&mut conn)
        .await?;
    anyhow::ensure!(!checkpoints.is_empty(), "checkpoints were written");
    let (mut candles, mut warm, mut cold) = (Vec::new(), Vec::new(), Vec::new());
    for _ in 0..options.queries {
        let t = Instant::now();
        c.get_candles(page.clone()).await?;
        candles.push(t.elapsed().as_secs_f64());
        let t = Instant::now();
        c.get_indicators(ind.clone()).await?;
        warm.push(t.elapsed().as_secs_f64());
        let _: () = redis::cmd("DEL")
            .arg(&checkpoints)
            .query_async(&mut conn)
            .await?;
        let t = Instant::now();
        c.get_indicators(ind.clone()).await?;
        cold.push(t.elapsed().as_secs_f64());
    }
    Ok((
        Duration::from_secs_f64(median(candles)),
        Duration::from_secs_f64(median(warm)),
        Duration::from_secs_f64(median(cold)),
    ))
}
