//! `tickmesh bench ingest`: gRPC Publish against one XADD round trip per trade.

use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use anyhow::Context;
use tickmesh_api::candles::GetAggregationStatusRequest;
use tickmesh_api::candles::candle_query_service_client::CandleQueryServiceClient;
use tickmesh_api::marketfeed::market_feed_service_client::MarketFeedServiceClient;
use tickmesh_api::marketfeed::{
    GetQuotesRequest, PublishRequest, PublishTradesRequest, StreamTradesRequest, Trade,
};
use tickmesh_runtime::proto_time::now_nanos;
use tickmesh_runtime::redis_server::{Fsync, RedisServer};
use tokio_stream::wrappers::ReceiverStream;

use super::cluster::{BenchCluster, Usage};
use super::{median, ms, percentile};
use tickmesh_mesh::demo_feed::{DemoSymbol, Walk};
use tickmesh_runtime::config::RedisConfig;
use tickmesh_runtime::redis_conn::RedisHandle;

#[derive(Clone, Debug)]
pub struct IngestOptions {
    pub trades: usize,
    pub baseline_trades: usize,
    pub symbols: usize,
    pub batch: usize,
    pub publishers: usize,
    pub rounds: usize,
    /// Trades per second of the paced latency phase (well below capacity).
    pub paced_rate: usize,
    pub redis_url: Option<String>,
    /// Also measure `marketfeed.durable_acks` off and on, on redis-servers of
    /// the bench's own (AOF everysec, then appendfsync always).
    pub durable: bool,
    /// Then the same rounds on a local Redis Cluster (3 masters, 1 replica
    /// each), with the share of the commands each master served.
    pub redis_cluster: bool,
    /// Also measure metrics off and on: two `tickmesh serve` processes of
    /// this executable (see [`super::metrics_cost`]).
    pub metrics_exe: Option<std::path::PathBuf>,
}

#[derive(Clone, Debug, Default)]
pub struct IngestReport {
    pub baseline_trades_per_s: f64,
    pub tickmesh_trades_per_s: f64,
    pub latency_median: Duration,
    pub latency_p99: Duration,
    pub paced_latency_median: Duration,
    pub paced_latency_p99: Duration,
    pub quotes_2500_median: Duration,
    pub durable: Option<DurableReport>,
    pub metrics: Option<super::metrics_cost::MetricsReport>,
    pub cluster: Option<ClusterIngestReport>,
}

impl IngestReport {
    pub fn ratio(&self) -> f64 {
        self.tickmesh_trades_per_s / self.baseline_trades_per_s
    }
}

/// The same rounds with durable acks off (AOF, appendfsync everysec: what
/// `tickmesh dev` and the Kubernetes Redis run) and on (appendfsync always).
#[derive(Clone, Debug, Default)]
pub struct DurableReport {
    pub off_trades_per_s: f64,
    pub on_trades_per_s: f64,
    pub off_latency_median: Duration,
    pub off_latency_p99: Duration,
    pub on_latency_median: Duration,
    pub on_latency_p99: Duration,
}

impl DurableReport {
    /// Throughput with durable acks on over off.
    pub fn ratio(&self) -> f64 {
        self.on_trades_per_s / self.off_trades_per_s
    }
}

/// The same workload on a local Redis Cluster.
#[derive(Clone, Debug, Default)]
pub struct ClusterIngestReport {
    pub baseline_trades_per_s: f64,
    pub tickmesh_trades_per_s: f64,
    pub latency_median: Duration,
    pub latency_p99: Duration,
    pub paced_latency_median: Duration,
    pub paced_latency_p99: Duration,
    pub quotes_2500_median: Duration,
    /// Share of the commands each master processed during the Publish rounds.
    pub master_shares: Vec<f64>,
}

fn bench_symbol(i: usize) -> DemoSymbol {
    DemoSymbol {
        instrument: tickmesh_api::marketfeed::Instrument {
            symbol: format!("BENCH{i:04}"),
            price_scale: 8,
            quantity_scale: 8,
            ..Default::default()
        },
        start_units: 6_700_000_000_000,
        lot_units: 1_000_000,
    }
}

/// Trades for one round: `n` across `symbols`, ids unique to the round.
pub(crate) fn make_trades(n: usize, symbols: usize, round: usize) -> Vec<Trade> {
    let mut walks: Vec<Walk> = (0..symbols)
        .map(|i| Walk::new(&bench_symbol(i), 1 + i as u64))
        .collect();
    let base = now_nanos() - 3_600_000_000_000;
    (0..n)
        .map(|i| walks[i % symbols].next_trade(format!("r{round}-{i}"), base + i as i64 * 1000))
        .collect()
}

/// Publishes through gRPC `Publish` and measures trades/s and publish → StreamTrades latency.
pub async fn ingest(options: IngestOptions) -> anyhow::Result<IngestReport> {
    let (_own, redis_url, mesh) = super::bench_mesh(options.redis_url.clone(), "bench", |c| {
        c.marketfeed.max_batch_trades = options.batch.max(1000);
    })
    .await?;
    let endpoint = mesh.endpoint();
    println!("bench ingest: redis {redis_url}, mesh {endpoint}");
    println!(
        "  {} trades/round over {} symbols, batches of {}, {} publishers, {} rounds; baseline {} trades/round",
        options.trades,
        options.symbols,
        options.batch,
        options.publishers,
        options.rounds,
        options.baseline_trades
    );

    let redis = redis::Client::open(redis_url.as_str())?;
    let mut baseline_rates = Vec::new();
    let mut mesh_rates = Vec::new();
    let mut latencies = Vec::new();
    for round in 0..options.rounds {
        let trades = make_trades(options.baseline_trades, options.symbols, round);
        let rate = baseline_round(&redis, &trades).await?;
        baseline_rates.push(rate);

        let trades = make_trades(options.trades, options.symbols, round);
        let (rate, mut lat) = mesh_round(&endpoint, trades, &options, round, None).await?;
        mesh_rates.push(rate);
        println!(
            "  round {}: baseline {:>10.0} trades/s   tickmesh {:>10.0} trades/s",
            round + 1,
            baseline_rates[round],
            rate
        );
        latencies.append(&mut lat);
    }
    latencies.sort();
    let settled = candles_caught_up(&endpoint, options.symbols).await?;
    println!(
        "  the candle aggregator applied the rounds' last trades {:.1} s after them",
        settled.as_secs_f64()
    );
    // Paced: batches of 100 at `paced_rate`, for about 3 s, one publisher.
    let paced_batch = 100usize;
    let paced_trades = (options.paced_rate * 3).max(paced_batch);
    let paced = IngestOptions {
        batch: paced_batch,
        publishers: 1,
        ..options.clone()
    };
    let gap = Duration::from_secs_f64(paced_batch as f64 / options.paced_rate.max(1) as f64);
    let (_, mut paced_latencies) = mesh_round(
        &endpoint,
        make_trades(paced_trades, options.symbols, 999),
        &paced,
        999,
        Some(gap),
    )
    .await?;
    paced_latencies.sort();
    let quotes = quotes_latency(&endpoint).await?;
    mesh.stop().await?;
    let durable = if options.durable {
        Some(durable_comparison(&options).await?)
    } else {
        None
    };
    let metrics = match &options.metrics_exe {
        Some(exe) => Some(super::metrics_cost::metrics_comparison(&options, exe).await?),
        None => None,
    };
    let report = IngestReport {
        baseline_trades_per_s: median(baseline_rates),
        tickmesh_trades_per_s: median(mesh_rates),
        latency_median: percentile(&latencies, 0.5),
        latency_p99: percentile(&latencies, 0.99),
        paced_latency_median: percentile(&paced_latencies, 0.5),
        paced_latency_p99: percentile(&paced_latencies, 0.99),
        quotes_2500_median: quotes,
        durable,
        metrics,
        cluster: None,
    };
    println!();
    println!(
        "baseline (one XADD round trip per trade): {:>10.0} trades/s (median)",
        report.baseline_trades_per_s
    );
    println!(
        "tickmesh (gRPC Publish, batched):          {:>10.0} trades/s (median)",
        report.tickmesh_trades_per_s
    );
    println!(
        "ratio tickmesh / baseline:                  {:>10.1}x",
        report.ratio()
    );
    println!(
        "publish -> readable on StreamTrades, paced at {} trades/s: median {:.2} ms, p99 {:.2} ms ({} trades)",
        options.paced_rate,
        report.paced_latency_median.as_secs_f64() * 1e3,
        report.paced_latency_p99.as_secs_f64() * 1e3,
        paced_latencies.len()
    );
    println!(
        "publish -> readable on StreamTrades, at full speed (queueing included): median {:.2} ms, p99 {:.2} ms ({} trades)",
        report.latency_median.as_secs_f64() * 1e3,
        report.latency_p99.as_secs_f64() * 1e3,
        latencies.len()
    );
    println!(
        "GetQuotes for 2,500 symbols:                median {:.2} ms",
        report.quotes_2500_median.as_secs_f64() * 1e3
    );
    if let Some(d) = &report.durable {
        println!(
            "durable acks off (AOF everysec):          {:>10.0} trades/s (median), publish -> readable median {:.2} ms, p99 {:.2} ms",
            d.off_trades_per_s,
            d.off_latency_median.as_secs_f64() * 1e3,
            d.off_latency_p99.as_secs_f64() * 1e3
        );
        println!(
            "durable acks on (appendfsync always):     {:>10.0} trades/s (median), publish -> readable median {:.2} ms, p99 {:.2} ms",
            d.on_trades_per_s,
            d.on_latency_median.as_secs_f64() * 1e3,
            d.on_latency_p99.as_secs_f64() * 1e3
        );
        println!(
            "ratio durable on / off:                     {:>10.2}x",
            d.ratio()
        );
    }
    if let Some(m) = &report.metrics {
        let line = |name: &str, rate: f64, median: Duration, p99: Duration| {
            println!(
                "{name:<42} {rate:>10.0} trades/s (median), publish -> readable median {:.2} ms, p99 {:.2} ms",
                ms(median),
                ms(p99)
            )
        };
        line(
            "metrics off (no recorder):",
            m.off_trades_per_s,
            m.off_latency_median,
            m.off_latency_p99,
        );
        line(
            "metrics on (scraped every second):",
            m.on_trades_per_s,
            m.on_latency_median,
            m.on_latency_p99,
        );
        println!(
            "ratio metrics on / off:                     {:>10.3}x ({} scrapes, last {} bytes)",
            m.ratio(),
            m.scrapes,
            m.scrape_bytes
        );
        println!(
            "mesh CPU per trade:                         off {:.2} us, on {:.2} us ({:.3}x)",
            m.off_cpu_us_per_trade,
            m.on_cpu_us_per_trade,
            m.on_cpu_us_per_trade / m.off_cpu_us_per_trade
        );
    }
    let mut report = report;
    if options.redis_cluster {
        report.cluster = Some(cluster_comparison(&options, &report).await?);
    }
    Ok(report)
}

/// Durable acks off and on, round by round (MarketFeed only, no candle
/// aggregator) on two redis-servers of its own with AOF in a temporary
/// directory: off on `appendfsync everysec`, on on
/// `appendfsync always` (Redis before 7.2 has no WAITAOF; on 7.2+ the mesh
/// would use WAITAOF on the same server).
async fn durable_comparison(options: &IngestOptions) -> anyhow::Result<DurableReport> {
    let dir = std::env::temp_dir().join(format!("tickmesh-bench-durable-{}", std::process::id()));
    std::fs::remove_dir_all(&dir).ok();
    let everysec = RedisServer::start_with(&dir.join("everysec"), Some(Fsync::EverySec)).await?;
    let always = RedisServer::start_with(&dir.join("always"), Some(Fsync::Always)).await?;
    let batch = options.batch.max(1000);
    // MarketFeed alone: the other mesh's candle aggregator catching up on
    // its last round would otherwise take CPU from this one's round.
    let (_, _, off) = super::bench_mesh(Some(everysec.url()), "bench-off", |c| {
        c.services.enabled = vec!["marketfeed".into()];
        c.marketfeed.max_batch_trades = batch;
    })
    .await?;
    let (_, _, on) = super::bench_mesh(Some(always.url()), "bench-on", |c| {
        c.services.enabled = vec!["marketfeed".into()];
        c.marketfeed.max_batch_trades = batch;
        c.marketfeed.durable_acks = true;
    })
    .await?;
    let mode = on
        .marketfeed
        .as_ref()
        .context("marketfeed enabled")?
        .durable_ack_mode()
        .await
        .map_err(|e| anyhow::anyhow!("{e}"))?
        .context("durable acks on")?;
    println!();
    println!(
        "durable acks: off on {} (appendfsync everysec), on on {} ({})",
        everysec.url(),
        always.url(),
        mode.describe()
    );
    let (mut off_rates, mut on_rates) = (Vec::new(), Vec::new());
    let (mut off_latencies, mut on_latencies) = (Vec::new(), Vec::new());
    for round in 0..options.rounds {
        // Alternate which goes first so neither always gets the warmer CPU.
        for first_off in [round % 2 == 0, round % 2 != 0] {
            let (mesh, rates, latencies) = if first_off {
                (&off, &mut off_rates, &mut off_latencies)
            } else {
                (&on, &mut on_rates, &mut on_latencies)
            };
            let trades = make_trades(options.trades, options.symbols, 2000 + round);
            let (rate, mut lat) = mesh_round(&mesh.endpoint(), trades, options, 2000 + round, None)
                .await
                .with_context(|| {
                    format!(
                        "durable acks {}, round {}",
                        if first_off { "off" } else { "on" },
                        round + 1
                    )
                })?;
            rates.push(rate);
            latencies.append(&mut lat);
        }
        println!(
            "  round {}: durable acks off {:>10.0} trades/s   on {:>10.0} trades/s",
            round + 1,
            off_rates[round],
            on_rates[round]
        );
    }
    off_latencies.sort();
    on_latencies.sort();
    off.stop().await?;
    on.stop().await?;
    drop((everysec, always));
    std::fs::remove_dir_all(&dir).ok();
    Ok(DurableReport {
        off_trades_per_s: median(off_rates),
        on_trades_per_s: median(on_rates),
        off_latency_median: percentile(&off_latencies, 0.5),
        off_latency_p99: percentile(&off_latencies, 0.99),
        on_latency_median: percentile(&on_latencies, 0.5),
        on_latency_p99: percentile(&on_latencies, 0.99),
    })
}

/// The seed design: every trade its own XADD round trip.
async fn baseline_round(redis: &redis::Client, trades: &[Trade]) -> anyhow::Result<f64> {
    let mut conn = redis.get_multiplexed_async_connection().await?;
    baseline_on(&mut conn, trades).await
}

/// [`baseline_round`] on a given connection (a cluster's routes by key).
async fn baseline_on(
    conn: &mut impl redis::aio::ConnectionLike,
    trades: &[Trade],
) -> anyhow::Result<f64> {
    let started = Instant::now();
    for t in trades {
        let ts = t
            .time
            .as_ref()
            .map(|t| t.seconds * 1_000_000_000 + i64::from(t.nanos))
            .unwrap_or(0);
        let _: String = redis::cmd("XADD")
            .arg(format!("baseline:{{{}}}:trades", t.symbol))
            .arg("*")
            .arg("t")
            .arg(&t.trade_id)
            .arg("p")
            .arg(&t.price)
            .arg("q")
            .arg(&t.quantity)
            .arg("ts")
            .arg(ts)
            .arg("s")
            .arg(t.side)
            .query_async(conn)
            .await?;
    }
    Ok(trades.len() as f64 / started.elapsed().as_secs_f64())
}

/// The rounds, the paced phase and GetQuotes again on a local Redis Cluster
/// (3 masters x 1 replica), the XADD baseline through a cluster connection
/// (routed by key); then single node and cluster side by side, and what each
/// master served.
async fn cluster_comparison(
    options: &IngestOptions,
    single: &IngestReport,
) -> anyhow::Result<ClusterIngestReport> {
    let cluster = BenchCluster::start().await?;
    let (_, url, mesh) = super::bench_mesh(Some(cluster.url().into()), "bench-cluster", |c| {
        c.marketfeed.max_batch_trades = options.batch.max(1000);
    })
    .await?;
    let endpoint = mesh.endpoint();
    println!();
    println!(
        "bench ingest on a Redis Cluster: {}, mesh {endpoint}",
        cluster.describe()
    );
    let config = RedisConfig {
        url,
        ..Default::default()
    };
    let handle = RedisHandle::new(&config).map_err(|e| anyhow::anyhow!("{e}"))?;
    let mut conn = handle.conn();
    let mut usage = Usage::default();
    let (mut baseline_rates, mut mesh_rates, mut latencies) = (Vec::new(), Vec::new(), Vec::new());
    for round in 0..options.rounds {
        let trades = make_trades(options.baseline_trades, options.symbols, 3000 + round);
        baseline_rates.push(baseline_on(&mut conn, &trades).await?);
        let trades = make_trades(options.trades, options.symbols, 3000 + round);
        let meter = cluster.start_round().await?;
        let (rate, mut lat) = mesh_round(&endpoint, trades, options, 3000 + round, None)
            .await
            .with_context(|| format!("cluster round {}", round + 1))?;
        meter.stop(&cluster, &mut usage).await?;
        mesh_rates.push(rate);
        println!(
            "  round {}: baseline {:>10.0} trades/s   tickmesh {:>10.0} trades/s",
            round + 1,
            baseline_rates[round],
            rate
        );
        latencies.append(&mut lat);
    }
    latencies.sort();
    let settled = candles_caught_up(&endpoint, options.symbols).await?;
    println!(
        "  the candle aggregator applied the rounds' last trades {:.1} s after them",
        settled.as_secs_f64()
    );
    let paced_batch = 100usize;
    let paced = IngestOptions {
        batch: paced_batch,
        publishers: 1,
        ..options.clone()
    };
    let gap = Duration::from_secs_f64(paced_batch as f64 / options.paced_rate.max(1) as f64);
    let (_, mut paced_latencies) = mesh_round(
        &endpoint,
        make_trades(
            (options.paced_rate * 3).max(paced_batch),
            options.symbols,
            3999,
        ),
        &paced,
        3999,
        Some(gap),
    )
    .await?;
    paced_latencies.sort();
    let quotes = quotes_latency(&endpoint).await?;
    mesh.stop().await?;
    let report = ClusterIngestReport {
        baseline_trades_per_s: median(baseline_rates),
        tickmesh_trades_per_s: median(mesh_rates),
        latency_median: percentile(&latencies, 0.5),
        latency_p99: percentile(&latencies, 0.99),
        paced_latency_median: percentile(&paced_latencies, 0.5),
        paced_latency_p99: percentile(&paced_latencies, 0.99),
        quotes_2500_median: quotes,
        master_shares: usage.shares(),
    };
    println!();
    println!(
        "single node vs Redis Cluster ({} masters x {} replica), same workload, medians of {} rounds:",
        super::cluster::MASTERS,
        super::cluster::REPLICAS,
        options.rounds
    );
    println!("                                                 single node       cluster");
    let row = |name: &str, a: String, b: String| println!("  {name:<45} {a:>13} {b:>13}");
    let per_s = |v: f64| format!("{v:.0}/s");
    let millis = |d: Duration| format!("{:.2} ms", ms(d));
    row(
        "baseline (one XADD round trip per trade)",
        per_s(single.baseline_trades_per_s),
        per_s(report.baseline_trades_per_s),
    );
    row(
        "tickmesh (gRPC Publish, batched) trades",
        per_s(single.tickmesh_trades_per_s),
        per_s(report.tickmesh_trades_per_s),
    );
    row(
        "publish -> readable, full speed, median",
        millis(single.latency_median),
        millis(report.latency_median),
    );
    row(
        "publish -> readable, full speed, p99",
        millis(single.latency_p99),
        millis(report.latency_p99),
    );
    row(
        &format!(
            "publish -> readable, paced {}/s, median",
            options.paced_rate
        ),
        millis(single.paced_latency_median),
        millis(report.paced_latency_median),
    );
    row(
        "GetQuotes for 2,500 symbols, median",
        millis(single.quotes_2500_median),
        millis(report.quotes_2500_median),
    );
    println!(
        "  cluster / single node: {:.2}x (tickmesh), {:.2}x (baseline)",
        report.tickmesh_trades_per_s / single.tickmesh_trades_per_s,
        report.baseline_trades_per_s / single.baseline_trades_per_s
    );
    let symbols: Vec<String> = (0..options.symbols)
        .map(|i| bench_symbol(i).instrument.symbol)
        .collect();
    let keys = cluster.key_counts(symbols.iter().map(String::as_str));
    println!(
        "  per master during the Publish rounds (keys = the {} symbols' hash tags; commands from INFO total_commands_processed; all nodes share this machine's cores):",
        options.symbols
    );
    usage.print(&cluster, &keys, report.tickmesh_trades_per_s, "trades");
    Ok(report)
}

pub(crate) async fn mesh_round(
    endpoint: &str,
    trades: Vec<Trade>,
    options: &IngestOptions,
    round: usize,
    pace: Option<Duration>,
) -> anyhow::Result<(f64, Vec<Duration>)> {
    let total = trades.len();
    let symbols: Vec<String> = (0..options.symbols)
        .map(|i| bench_symbol(i).instrument.symbol)
        .collect();
    // Register the symbols (auto-registration) before streaming them.
    let mut client = MarketFeedServiceClient::connect(endpoint.to_string()).await?;
    client
        .publish_trades(PublishTradesRequest {
            trades: make_trades(options.symbols, options.symbols, 1_000_000 + round),
            all_or_nothing: true,
        })
        .await?;

    let batches: Vec<Vec<Trade>> = trades.chunks(options.batch).map(|c| c.to_vec()).collect();
    let sent_at: Arc<Vec<OnceLock<Instant>>> =
        Arc::new((0..batches.len()).map(|_| OnceLock::new()).collect());

    // Subscriber on its own connection.
    let mut sub = MarketFeedServiceClient::connect(endpoint.to_string())
        .await?
        .max_decoding_message_size(64 << 20);
    let mut stream = sub
        .stream_trades(StreamTradesRequest {
            symbols,
            ..Default::default()
        })
        .await?
        .into_inner();
    let batch = options.batch;
    let prefix = format!("r{round}-");
    let sent = sent_at.clone();
    let reader = tokio::spawn(async move {
        let mut latencies = Vec::with_capacity(total);
        let mut ended = String::new();
        while latencies.len() < total {
            let message =
                match tokio::time::timeout(Duration::from_secs(60), stream.message()).await {
                    Ok(Ok(Some(m))) => m,
                    Ok(Ok(None)) => {
                        ended = "the stream ended".into();
                        break;
                    }
                    Ok(Err(status)) => {
                        ended = format!("the stream failed: {status}");
                        break;
                    }
                    Err(_) => {
                        ended = "no trade for 60 s".into();
                        break;
                    }
                };
            let now = Instant::now();
            for t in message.trades {
                let Some(i) = t
                    .trade_id
                    .strip_prefix(&prefix)
                    .and_then(|s| s.parse::<usize>().ok())
                else {
                    continue;
                };
                if let Some(at) = sent[i / batch].get() {
                    latencies.push(now.duration_since(*at));
                }
            }
        }
        (latencies, ended)
    });
    tokio::time::sleep(Duration::from_millis(200)).await;

    let started = Instant::now();
    let mut tasks = Vec::new();
    let batches = Arc::new(batches);
    for p in 0..options.publishers {
        let endpoint = endpoint.to_string();
        let batches = batches.clone();
        let sent_at = sent_at.clone();
        let publishers = options.publishers;
        tasks.push(tokio::spawn(async move {
            let mut client = MarketFeedServiceClient::connect(endpoint)
                .await?
                .max_encoding_message_size(64 << 20);
            let (tx, rx) = tokio::sync::mpsc::channel::<PublishRequest>(4);
            let call = tokio::spawn(async move { client.publish(ReceiverStream::new(rx)).await });
            let mut ticker = pace.map(tokio::time::interval);
            for (i, b) in batches
                .iter()
                .enumerate()
                .filter(|(i, _)| i % publishers == p)
            {
                if let Some(t) = ticker.as_mut() {
                    t.tick().await;
                }
                let _ = sent_at[i].set(Instant::now());
                if tx.send(PublishRequest { trades: b.clone() }).await.is_err() {
                    break;
                }
            }
            drop(tx);
            let summary = call.await??.into_inner();
            anyhow::Ok(summary.accepted)
        }));
    }
    let mut accepted = 0;
    for t in tasks {
        accepted += t.await.context("publisher")??;
    }
    let elapsed = started.elapsed();
    anyhow::ensure!(
        accepted as usize == total,
        "accepted {accepted} of {total} trades"
    );
    let (latencies, ended) = reader.await?;
    anyhow::ensure!(
        latencies.len() == total,
        "StreamTrades delivered {} of {total} trades ({ended})",
        latencies.len()
    );
    Ok((total as f64 / elapsed.as_secs_f64(), latencies))
}

/// Waits until the mesh's candle aggregator has applied every trade of the
/// bench symbols, and says how long that took. It follows the trades through
/// its own StreamTrades, which falls behind during the full-speed rounds: the
/// paced phase measures live delivery, not the aggregator catching up beside it.
async fn candles_caught_up(endpoint: &str, symbols: usize) -> anyhow::Result<Duration> {
    let mut client = CandleQueryServiceClient::connect(endpoint.to_string()).await?;
    let names: Vec<String> = (0..symbols)
        .map(|i| bench_symbol(i).instrument.symbol)
        .collect();
    let started = Instant::now();
    loop {
        let mut pending = 0;
        for chunk in names.chunks(1000) {
            let reply = client
                .get_aggregation_status(GetAggregationStatusRequest {
                    symbols: chunk.to_vec(),
                })
                .await?
                .into_inner();
            pending += reply.statuses.iter().map(|s| s.pending_trades).sum::<u64>();
        }
        if pending == 0 {
            return Ok(started.elapsed());
        }
        anyhow::ensure!(
            started.elapsed() < Duration::from_secs(300),
            "the candle aggregator still had {pending} trades to apply after 300 s"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// GetQuotes for 2,500 symbols (a Korean equities desk's watch list).
async fn quotes_latency(endpoint: &str) -> anyhow::Result<Duration> {
    let mut client = MarketFeedServiceClient::connect(endpoint.to_string())
        .await?
        .max_decoding_message_size(64 << 20);
    let symbols: Vec<String> = (0..2500).map(|i| format!("KRX{i:04}")).collect();
    let now = now_nanos();
    for chunk in symbols.chunks(500) {
        let trades = chunk
            .iter()
            .map(|s| Trade {
                symbol: s.clone(),
                trade_id: format!("q-{now}"),
                price: "71000".into(),
                quantity: "10".into(),
                time: Some(tickmesh_runtime::proto_time::nanos_to_timestamp(now)),
                ..Default::default()
            })
            .collect();
        client
            .publish_trades(PublishTradesRequest {
                trades,
                all_or_nothing: true,
            })
            .await?;
    }
    let mut times = Vec::new();
    for _ in 0..21 {
        let started = Instant::now();
        let reply = client
            .get_quotes(GetQuotesRequest {
                symbols: symbols.clone(),
                stale_after: None,
            })
            .await?
            .into_inner();
        times.push(started.elapsed());
        anyhow::ensure!(
            reply.quotes.len() == 2500,
            "got {} quotes",
            reply.quotes.len()
        );
    }
    times.sort();
    Ok(times[times.len() / 2])
}
