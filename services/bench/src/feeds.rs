//! `tickmesh bench feeds`: the venue connectors against the fake venue on
//! 127.0.0.1. Throughput from WebSocket frames to trades readable on
//! `StreamTrades`, against the same trades pushed with `PublishTrades` (the
//! way a user's own connector feeds tickmesh today) on the same Redis in the
//! same run; and the frame → readable latency at a paced rate.

use std::time::{Duration, Instant};

use anyhow::Context;
use tickmesh_api::marketfeed::market_feed_service_client::MarketFeedServiceClient;
use tickmesh_api::marketfeed::{
    PublishTradesRequest, StreamTradesRequest, StreamTradesResponse, Trade,
};
use tickmesh_fake_venue::{FakeVenue, VenueKind};
use tickmesh_runtime::feeds_config::FeedConfig;
use tickmesh_runtime::proto_time::nanos_to_timestamp;
use tokio_util::sync::CancellationToken;
use tonic::transport::Channel;

use super::{median, ms, percentile};

#[derive(Clone, Debug)]
pub struct FeedsBenchOptions {
    /// Venue symbols on the one Binance connection set.
    pub symbols: usize,
    /// Trades per round (spread over the symbols).
    pub trades: usize,
    pub rounds: usize,
    /// Trades per second of the paced latency phase (all symbols together).
    pub paced_rate: u32,
    /// Seconds of the paced latency phase.
    pub paced_seconds: u64,
    pub redis_url: Option<String>,
    /// The quote poller's full refresh against the fake broker.
    pub poller: tickmesh_poller::bench::BenchConfig,
}

#[derive(Clone, Debug, Default)]
pub struct FeedsReport {
    pub feeds_trades_per_s: f64,
    pub publish_trades_per_s: f64,
    pub latency_median: Duration,
    pub latency_p99: Duration,
}

type Client = MarketFeedServiceClient<Channel>;

fn symbol(i: usize) -> String {
    format!("B{i}USDT")
}

/// Reads `stream` until `n` trades arrived; every trade's receipt time minus
/// its venue time when `latencies` is given.
async fn read(
    stream: &mut tonic::Streaming<StreamTradesResponse>,
    n: usize,
    mut latencies: Option<&mut Vec<Duration>>,
) -> anyhow::Result<()> {
    let mut got = 0;
    while got < n {
        let message = tokio::time::timeout(Duration::from_secs(60), stream.message())
            .await
            .context("no trades for 60 s")??
            .context("the stream ended")?;
        if let Some(latencies) = latencies.as_deref_mut() {
            let now_ms = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)?
                .as_millis() as i64;
            for t in &message.trades {
                let time = t.time.as_ref().context("trade time")?;
                let sent_ms = time.seconds * 1000 + i64::from(time.nanos) / 1_000_000;
                latencies.push(Duration::from_millis((now_ms - sent_ms).max(0) as u64));
            }
        }
        got += message.trades.len();
    }
    Ok(())
}

async fn stream_from_now(
    client: &mut Client,
    symbols: &[String],
) -> anyhow::Result<tonic::Streaming<StreamTradesResponse>> {
    Ok(client
        .stream_trades(StreamTradesRequest {
            symbols: symbols.to_vec(),
            from_sequence: None,
            cursors: vec![],
        })
        .await?
        .into_inner())
}

pub async fn feeds(options: FeedsBenchOptions) -> anyhow::Result<FeedsReport> {
    anyhow::ensure!(options.symbols >= 1 && options.trades >= options.symbols);
    let venue = FakeVenue::start()
        .await
        .context("starting the fake venue")?;
    let symbols: Vec<String> = (0..options.symbols).map(symbol).collect();
    for s in &symbols {
        venue.add_symbol(VenueKind::Binance, s, "0.01", "0.00001", "100.00");
    }
    let feed = FeedConfig {
        venue: "binance".into(),
        symbols: symbols.clone(),
        ws_url: venue.ws_base(VenueKind::Binance),
        rest_url: venue.rest_base(VenueKind::Binance),
        ..FeedConfig::default()
    };
    let (_own, redis_url, mesh) =
        super::bench_mesh(options.redis_url.clone(), "bench-feeds:", |c| {
            c.feeds = vec![feed];
        })
        .await?;
    println!(
        "bench feeds: redis {redis_url}, mesh {}, fake venue on 127.0.0.1",
        mesh.endpoint()
    );
    for s in &symbols {
        anyhow::ensure!(
            venue
                .wait_subscribed(VenueKind::Binance, s, Duration::from_secs(30))
                .await,
            "the feed never subscribed to {s}"
        );
    }
    let mut client = MarketFeedServiceClient::connect(mesh.endpoint())
        .await?
        .max_decoding_message_size(64 << 20);
    let per_symbol = options.trades / options.symbols;
    let total = per_symbol * options.symbols;
    // Warm up: one trade per symbol through each path (instruments, dedupe
    // keys, the stream tailer).
    let mut warm = stream_from_now(&mut client, &symbols).await?;
    for s in &symbols {
        venue.trade(VenueKind::Binance, s, 1);
    }
    read(&mut warm, symbols.len(), None).await?;
    drop(warm);

    let mut feed_rates = Vec::new();
    let mut publish_rates = Vec::new();
    for round in 0..options.rounds {
        // Feeds: the fake venue sends one WebSocket frame per trade.
        let mut stream = stream_from_now(&mut client, &symbols).await?;
        let started = Instant::now();
        for s in &symbols {
            venue.trade(VenueKind::Binance, s, per_symbol);
        }
        let made_in = started.elapsed();
        if let Err(e) = read(&mut stream, total, None).await {
            let quotes = client
                .get_quotes(tickmesh_api::marketfeed::GetQuotesRequest {
                    symbols: symbols.clone(),
                    ..Default::default()
                })
                .await?
                .into_inner();
            let logged: Vec<(String, u64)> = quotes
                .quotes
                .iter()
                .map(|q| (q.symbol.clone(), q.sequence))
                .collect();
            let status = mesh.feeds.as_ref().map(|f| f.status()).unwrap_or_default();
            let received: Vec<(String, u64, String)> = status
                .iter()
                .map(|s| (s.symbol.clone(), s.received, format!("{:?}", s.state)))
                .collect();
            anyhow::bail!(
                "{e}: round {}: tick log sequences {logged:?}; feed received {received:?}; expected {} per symbol beyond the warm-up and earlier rounds",
                round + 1,
                per_symbol
            );
        }
        let feeds_rate = total as f64 / started.elapsed().as_secs_f64();
        println!(
            "  round {}: the fake venue made the trades in {:.0} ms (in this process, on the same cores)",
            round + 1,
            ms(made_in)
        );
        drop(stream);

        // Baseline: the same number of trades through PublishTrades in
        // batches of 1,000, read back the same way.
        let trades: Vec<Trade> = (0..total)
            .map(|i| Trade {
                symbol: symbols[i % symbols.len()].clone(),
                trade_id: format!("p{round}-{i}"),
                price: "100.01".into(),
                quantity: "0.5".into(),
                time: Some(nanos_to_timestamp(
                    tickmesh_runtime::proto_time::now_nanos() + i as i64,
                )),
                side: 1,
                ..Default::default()
            })
            .collect();
        let mut stream = stream_from_now(&mut client, &symbols).await?;
        let started = Instant::now();
        let mut publishers = tokio::task::JoinSet::new();
        for part in trades.chunks(trades.len().div_ceil(2).max(1)) {
            let mut c = client.clone();
            let part = part.to_vec();
            publishers.spawn(async move {
                let mut accepted = 0usize;
                for batch in part.chunks(1000) {
                    let r = c
                        .publish_trades(PublishTradesRequest {
                            trades: batch.to_vec(),
                            ..Default::default()
                        })
                        .await?
                        .into_inner();
                    anyhow::ensure!(
                        r.rejected == 0,
                        "PublishTrades rejected {}: {:?}",
                        r.rejected,
                        r.rejections.first()
                    );
                    accepted += r.accepted as usize;
                }
                anyhow::Ok(accepted)
            });
        }
        let published = async {
            let mut accepted = 0;
            while let Some(r) = publishers.join_next().await {
                accepted += r.context("publisher")?.context("PublishTrades")?;
            }
            anyhow::Ok(accepted)
        };
        let (read, accepted) = tokio::join!(read(&mut stream, total, None), published);
        let accepted = accepted?;
        if let Err(e) = read {
            let quotes = client
                .get_quotes(tickmesh_api::marketfeed::GetQuotesRequest {
                    symbols: symbols.clone(),
                    ..Default::default()
                })
                .await?
                .into_inner();
            let logged: Vec<u64> = quotes.quotes.iter().map(|q| q.sequence).collect();
            anyhow::bail!(
                "{e}: round {} PublishTrades: {accepted} of {total} accepted; tick log sequences {logged:?}",
                round + 1
            );
        }
        let publish_rate = total as f64 / started.elapsed().as_secs_f64();
        drop(stream);
        println!(
            "  round {}: feeds {:>9.0} trades/s   PublishTrades {:>9.0} trades/s   ratio {:.2}",
            round + 1,
            feeds_rate,
            publish_rate,
            feeds_rate / publish_rate
        );
        feed_rates.push(feeds_rate);
        publish_rates.push(publish_rate);
    }

    // Paced: the venue trades at `paced_rate`; each trade's time is when the
    // venue made it, just before the frame went out.
    let stream = stream_from_now(&mut client, &symbols).await?;
    let (made_tx, made_rx) = tokio::sync::oneshot::channel::<usize>();
    // Read while the venue trades, so each receipt time is when it arrived.
    let reader = tokio::spawn(async move {
        let mut stream = stream;
        let mut latencies = Vec::new();
        let mut made_rx = made_rx;
        let mut made = None;
        loop {
            if made.is_some_and(|m| latencies.len() >= m) {
                return anyhow::Ok(latencies);
            }
            tokio::select! {
                m = &mut made_rx, if made.is_none() => made = Some(m?),
                r = read(&mut stream, 1, Some(&mut latencies)) => r?,
            }
        }
    });
    let before: usize = symbols
        .iter()
        .map(|s| venue.produced(VenueKind::Binance, s).len())
        .sum();
    let pacing = CancellationToken::new();
    let per_symbol_rate = (options.paced_rate / options.symbols as u32).max(1);
    venue.generate(VenueKind::Binance, per_symbol_rate, pacing.clone());
    tokio::time::sleep(Duration::from_secs(options.paced_seconds)).await;
    pacing.cancel();
    tokio::time::sleep(Duration::from_millis(150)).await;
    let made: usize = symbols
        .iter()
        .map(|s| venue.produced(VenueKind::Binance, s).len())
        .sum::<usize>()
        - before;
    let _ = made_tx.send(made);
    let mut latencies = reader.await??;
    latencies.sort_unstable();

    let report = FeedsReport {
        feeds_trades_per_s: median(feed_rates),
        publish_trades_per_s: median(publish_rates),
        latency_median: percentile(&latencies, 0.5),
        latency_p99: percentile(&latencies, 0.99),
    };
    println!();
    println!(
        "feeds, {} symbols on one connection set, {} trades per round, median of {} rounds:",
        options.symbols, total, options.rounds
    );
    println!(
        "  WebSocket frames -> readable on StreamTrades: {:.0} trades/s (target >= 50,000)",
        report.feeds_trades_per_s
    );
    println!(
        "  PublishTrades (batches of 1,000, 2 callers) -> readable, same run: {:.0} trades/s; feeds / PublishTrades = {:.2}",
        report.publish_trades_per_s,
        report.feeds_trades_per_s / report.publish_trades_per_s
    );
    println!(
        "  frame -> readable latency at {} trades/s ({} trades, ms resolution of venue time): median {:.1} ms, p99 {:.1} ms",
        options.paced_rate,
        latencies.len(),
        ms(report.latency_median),
        ms(report.latency_p99)
    );
    println!();
    let p = &options.poller;
    println!(
        "poller full refresh: {} symbols, {} per request, {} requests/s, {} instance(s), fake broker on 127.0.0.1 enforcing the limit:",
        p.symbols, p.batch_size, p.requests_per_second, p.instances
    );
    let feed = mesh.marketfeed.clone().context("marketfeed")?;
    let poller = tickmesh_poller::bench::bench_full_refresh(feed, p).await?;
    println!("{poller}");
    mesh.stop().await?;
    venue.shutdown();
    Ok(report)
}
