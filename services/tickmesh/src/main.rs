//! The `tickmesh` command line.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use tickmesh::{bench, dev, mesh::Mesh, replay};
use tickmesh_runtime::config::{Config, ConfigError};
use tickmesh_runtime::{shutdown, telemetry};
use tokio_util::sync::CancellationToken;

mod candles_verify;

#[derive(Parser)]
#[command(
    name = "tickmesh",
    version,
    about = "gRPC service mesh for real-time market data and the Redis-backed features around it"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(clap::Args, Clone, Default)]
struct ConfigArgs {
    /// TOML config file (also TICKMESH_CONFIG). See deploy/tickmesh.example.toml.
    #[arg(long, env = "TICKMESH_CONFIG")]
    config: Option<PathBuf>,
    /// gRPC listen address (server.listen).
    #[arg(long)]
    listen: Option<String>,
    /// Redis URL (redis.url).
    #[arg(long)]
    redis_url: Option<String>,
    /// Services to run, comma-separated, or "all" (services.enabled).
    #[arg(long)]
    services: Option<String>,
}

#[derive(Subcommand)]
enum Command {
    /// Run the services named in config (all by default) on one port.
    Serve(ConfigArgs),
    /// Run every service on 127.0.0.1:50051 with a Redis of its own and a demo feed.
    Dev {
        #[command(flatten)]
        config: ConfigArgs,
        /// Where dev mode keeps its Redis data.
        #[arg(long, default_value = ".data")]
        data_dir: PathBuf,
        /// "demo" (a deterministic random walk), "none", "fake" (a fake
        /// Binance/Bybit/Upbit on 127.0.0.1 through the real connectors) or
        /// venues to connect to: "binance:BTCUSDT,ETHUSDT;bybit/linear:BTCUSDT;upbit:KRW-BTC".
        #[arg(long, default_value = "demo")]
        feed: String,
        /// Demo trades per second per symbol.
        #[arg(long, default_value_t = 20)]
        rate: u32,
        /// With dev mode's own redis-server: acknowledge trades before Redis
        /// has fsynced them (appendfsync everysec) instead of after
        /// (marketfeed.durable_acks with appendfsync always, the default).
        /// With your own Redis (redis.url), marketfeed.durable_acks decides.
        #[arg(long)]
        no_durable_acks: bool,
    },
    /// Publish a file of trades to a running mesh.
    Replay {
        /// Binance trades/aggTrades CSV, or JSON lines of Trade.
        file: PathBuf,
        /// The mesh to publish to.
        #[arg(long, default_value = "http://127.0.0.1:50051")]
        target: String,
        /// auto, binance-trades, binance-aggtrades or jsonl.
        #[arg(long, default_value = "auto")]
        format: replay::Format,
        /// Symbol of a CSV file (default: from the file name, e.g. BTCUSDT-trades-2024-01-01.csv).
        #[arg(long)]
        symbol: Option<String>,
        /// "max", or a factor of the original pace: "1x" (real time), "10x", "0.5x".
        #[arg(long, default_value = "max")]
        speed: replay::Speed,
        /// Most trades per message.
        #[arg(long, default_value_t = 1000)]
        batch: usize,
    },
    /// Benchmarks.
    Bench {
        #[command(subcommand)]
        which: BenchCommand,
    },
    /// Check or print the effective configuration.
    Config {
        #[command(subcommand)]
        action: ConfigAction,
    },
    /// The long-term candle store.
    History {
        #[command(subcommand)]
        action: HistoryAction,
    },
    /// Candles: self-check and repair.
    Candles {
        #[command(subcommand)]
        action: CandlesAction,
    },
}

#[derive(Subcommand)]
enum CandlesAction {
    /// Recompute candles from the tick log and compare them with Redis and
    /// the history store; exits 1 when mismatches are left.
    Verify {
        #[command(flatten)]
        config: ConfigArgs,
        /// Only these symbols, comma-separated (default: every instrument).
        #[arg(long, value_delimiter = ',')]
        symbols: Vec<String>,
        /// Fix the mismatched candles the tick log covers.
        #[arg(long)]
        repair: bool,
        /// Leave the history store out (e.g. while a running tickmesh holds
        /// the embedded store); repairs are still queued for its flusher.
        #[arg(long)]
        redis_only: bool,
    },
}

#[derive(Subcommand)]
enum BenchCommand {
    /// Issue throughput and latency against redis-benchmark EVALSHA of the same script and a lock-based design.
    Coupon {
        /// Issue calls per round.
        #[arg(long, default_value_t = 50_000)]
        calls: usize,
        /// Concurrent callers (and redis-benchmark clients, and lock-based workers).
        #[arg(long, default_value_t = 64)]
        concurrency: usize,
        /// Calls of the lock-based baseline per round (it is slow).
        #[arg(long, default_value_t = 5_000)]
        lock_calls: usize,
        #[arg(long, default_value_t = 3)]
        rounds: usize,
        /// Use this Redis instead of starting one.
        #[arg(long)]
        redis_url: Option<String>,
        /// Then Issue over many campaigns on the single node and on a local
        /// Redis Cluster (3 masters x 1 replica; replica acks default and
        /// off), with each master's share of the commands.
        #[arg(long)]
        redis_cluster: bool,
    },
    /// Enter/s, admissions/s and admission → WatchPosition push latency with every waiter watching, against raw redis-benchmark ZADD / ZRANK.
    Queue {
        /// Users who enter and watch, per round.
        #[arg(long, default_value_t = 10_000)]
        waiters: usize,
        /// Concurrent Enter callers (and redis-benchmark clients).
        #[arg(long, default_value_t = 64)]
        concurrency: usize,
        /// The room's admissions per second.
        #[arg(long, default_value_t = 2_000.0)]
        rate: f64,
        #[arg(long, default_value_t = 3)]
        rounds: usize,
        /// Use this Redis instead of starting one.
        #[arg(long)]
        redis_url: Option<String>,
    },
    /// RecordEvent throughput and GetTop(100) latency against raw redis-benchmark ZINCRBY / ZREVRANGE.
    Ranking {
        /// RecordEvent calls per round.
        #[arg(long, default_value_t = 50_000)]
        events: usize,
        /// Concurrent callers (and redis-benchmark clients).
        #[arg(long, default_value_t = 50)]
        concurrency: usize,
        /// Events per RecordEvents call in the batched phase.
        #[arg(long, default_value_t = 100)]
        batch: usize,
        /// Distinct members.
        #[arg(long, default_value_t = 100_000)]
        members: usize,
        /// GetTop(100) calls for the latency figures.
        #[arg(long, default_value_t = 2_000)]
        top_reads: usize,
        #[arg(long, default_value_t = 3)]
        rounds: usize,
        /// Windows of the bench board, comma-separated: all, hour, day, week, month, 24h.
        #[arg(
            long,
            default_value = "all,hour,day,week,month,24h",
            value_delimiter = ','
        )]
        windows: Vec<String>,
        /// Use this Redis instead of starting one.
        #[arg(long)]
        redis_url: Option<String>,
    },
    /// History tier: bytes per candle at rest, write throughput, GetCandles read times.
    History {
        /// Take the 1m candles of this Binance trades CSV instead of a synthetic year.
        #[arg(long)]
        trades: Option<PathBuf>,
        /// Symbol of the trade file (default: from its name).
        #[arg(long)]
        symbol: Option<String>,
        /// Price decimals of the trade file's instrument.
        #[arg(long, default_value_t = 8)]
        price_scale: u32,
        /// Quantity decimals of the trade file's instrument.
        #[arg(long, default_value_t = 8)]
        quantity_scale: u32,
        /// Use this Redis instead of starting one.
        #[arg(long)]
        redis_url: Option<String>,
    },
    /// Candle aggregation in process, end to end against the seed design, and subscriber latency.
    Candles {
        #[arg(long, default_value_t = 1_000_000)]
        in_process_trades: usize,
        #[arg(long, default_value_t = 100_000)]
        e2e_trades: usize,
        #[arg(long, default_value_t = 1_000)]
        seed_trades: usize,
        #[arg(long, default_value_t = 10)]
        symbols: usize,
        #[arg(long, default_value_t = 1_000)]
        subscribers: usize,
        #[arg(long, default_value_t = 100)]
        latency_trades: usize,
        #[arg(long, default_value_t = 3)]
        rounds: usize,
        /// Use this Redis instead of starting one.
        #[arg(long)]
        redis_url: Option<String>,
    },
    /// Indicators: CPU per live candle update with five indicators against none, and GetIndicators of 1,000 candles x 5 against GetCandles.
    Indicators {
        /// Symbols subscribed per round (one SubscribeCandles stream each).
        #[arg(long, default_value_t = 50)]
        symbols: usize,
        /// Trades per symbol per round (about one candle update each).
        #[arg(long, default_value_t = 200)]
        updates: usize,
        /// Rounds; each measures both modes at once, on two serving processes whose roles swap every round.
        #[arg(long, default_value_t = 8)]
        rounds: usize,
        /// 1m candles of the GetIndicators series.
        #[arg(long, default_value_t = 5_000)]
        history_candles: usize,
        /// Queries timed per kind.
        #[arg(long, default_value_t = 30)]
        queries: usize,
        /// Use this Redis instead of starting one.
        #[arg(long)]
        redis_url: Option<String>,
        /// Serve both processes' subscriptions without indicators: an A/A check of the method (the ratio should be near 0%).
        #[arg(long)]
        aa: bool,
    },
    /// Venue connectors against the fake venue: WebSocket frames → StreamTrades throughput (against PublishTrades in the same run) and latency.
    Feeds {
        /// Venue symbols on the one Binance connection set.
        #[arg(long, default_value_t = 10)]
        symbols: usize,
        /// Trades per round.
        #[arg(long, default_value_t = 200_000)]
        trades: usize,
        #[arg(long, default_value_t = 3)]
        rounds: usize,
        /// Trades per second of the paced latency phase.
        #[arg(long, default_value_t = 2_000)]
        paced_rate: u32,
        /// Seconds of the paced latency phase.
        #[arg(long, default_value_t = 3)]
        paced_seconds: u64,
        /// Poller: symbols of the full refresh.
        #[arg(long, default_value_t = 2_500)]
        poller_symbols: usize,
        /// Poller: symbols per upstream request.
        #[arg(long, default_value_t = 50)]
        poller_batch: usize,
        /// Poller: the upstream's limit (requests per second, for the whole mesh).
        #[arg(long, default_value_t = 20)]
        poller_rps: u32,
        /// Poller: instances sharing the limit and the refresh.
        #[arg(long, default_value_t = 3)]
        poller_instances: usize,
        /// Use this Redis instead of starting one.
        #[arg(long)]
        redis_url: Option<String>,
    },
    /// Ingest throughput and publish→stream latency against one XADD per trade.
    Ingest {
        #[arg(long, default_value_t = 200_000)]
        trades: usize,
        #[arg(long, default_value_t = 20_000)]
        baseline_trades: usize,
        #[arg(long, default_value_t = 10)]
        symbols: usize,
        #[arg(long, default_value_t = 1000)]
        batch: usize,
        #[arg(long, default_value_t = 2)]
        publishers: usize,
        #[arg(long, default_value_t = 3)]
        rounds: usize,
        /// Trades per second of the paced latency phase.
        #[arg(long, default_value_t = 10_000)]
        paced_rate: usize,
        /// Use this Redis instead of starting one.
        #[arg(long)]
        redis_url: Option<String>,
        /// Skip the durable acks off/on comparison (which always runs on
        /// redis-servers of its own: AOF everysec, then appendfsync always).
        #[arg(long)]
        skip_durable: bool,
        /// Then the same rounds on a local Redis Cluster (3 masters x 1
        /// replica), with each master's share of the commands.
        #[arg(long)]
        redis_cluster: bool,
        /// Skip the metrics off/on comparison (two `tickmesh serve`
        /// processes of this binary, one scraped every second).
        #[arg(long)]
        skip_metrics: bool,
    },
}

#[derive(Subcommand)]
enum HistoryAction {
    /// Apply deploy/scylla/schema.cql to the ScyllaDB cluster in config (idempotent).
    ApplySchema(ConfigArgs),
    /// Compact the embedded store file (history.embedded_path) in place,
    /// giving free pages back to the file system. Stop tickmesh first.
    Compact(ConfigArgs),
}

#[derive(Subcommand)]
enum ConfigAction {
    /// Validate and exit (0 when valid).
    Check(ConfigArgs),
    /// Print the effective configuration (admin token masked).
    Print(ConfigArgs),
}

fn load(args: &ConfigArgs) -> Result<Config, ConfigError> {
    load_over(Config::default(), args)
}

/// Dev mode's defaults, under the file, the environment and the flags.
fn load_dev(args: &ConfigArgs) -> Result<Config, ConfigError> {
    load_over(dev::defaults(), args)
}

fn load_over(base: Config, args: &ConfigArgs) -> Result<Config, ConfigError> {
    Config::load_over(base, args.config.as_deref(), std::env::vars(), |c| {
        if let Some(listen) = &args.listen {
            c.server.listen = listen.clone();
        }
        if let Some(url) = &args.redis_url {
            c.redis.url = url.clone();
        }
        if let Some(services) = &args.services {
            c.services.enabled = services
                .split(',')
                .map(|s| s.trim().to_string())
                .filter(|s| !s.is_empty())
                .collect();
        }
        Ok(())
    })
}

/// mimalloc instead of glibc's malloc: the ingest, feed and stream paths
/// allocate many small strings and buffers per trade, and glibc's malloc took
/// about a third of the CPU of `bench feeds` (perf); see README "Benchmarks".
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[tokio::main]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    match run(cli).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) if e.is::<candles_verify::Unresolved>() => {
            eprintln!("tickmesh: {e}");
            ExitCode::from(1)
        }
        Err(e) => {
            eprintln!("tickmesh: error: {e:#}");
            ExitCode::from(2)
        }
    }
}

async fn run(cli: Cli) -> anyhow::Result<()> {
    match cli.command {
        Command::Serve(args) => {
            let config = load(&args)?;
            anyhow::ensure!(
                !config.services.is_enabled("queue") || !config.queue.token_key.is_empty(),
                "invalid setting `queue.token_key`: the queue service needs a key to sign tokens, \"<key id>:<secret>\" with a secret of at least 32 bytes (e.g. TICKMESH_QUEUE_TOKEN_KEY=k1:$(openssl rand -hex 32)); or leave queue out of services.enabled"
            );
            let _telemetry = telemetry::init(&config.telemetry)?;
            let token = CancellationToken::new();
            shutdown::cancel_on_signal(token.clone());
            let mesh = Mesh::start(config).await?;
            let stop = mesh.shutdown.clone();
            tokio::spawn(async move {
                token.cancelled().await;
                stop.cancel();
            });
            mesh.wait().await
        }
        Command::Dev {
            config,
            data_dir,
            feed,
            rate,
            no_durable_acks,
        } => {
            let feed = dev::DevFeed::parse(&feed)?;
            let config = load_dev(&config)?;
            let _telemetry = telemetry::init(&config.telemetry)?;
            let token = CancellationToken::new();
            shutdown::cancel_on_signal(token.clone());
            dev::run(
                config,
                dev::DevOptions {
                    data_dir,
                    feed,
                    rate,
                    durable_acks: !no_durable_acks,
                },
                token,
            )
            .await
        }
        Command::Replay {
            file,
            target,
            format,
            symbol,
            speed,
            batch,
        } => {
            anyhow::ensure!(
                (1..=100_000).contains(&batch),
                "--batch must be between 1 and 100000"
            );
            let started = std::time::Instant::now();
            let summary = replay::run(replay::ReplayOptions {
                file,
                target,
                format,
                symbol,
                speed,
                batch,
            })
            .await?;
            println!(
                "replayed {} trades in {:.1} s: {} accepted, {} duplicate, {} rejected, {} malformed lines skipped",
                summary.read,
                started.elapsed().as_secs_f64(),
                summary.accepted,
                summary.duplicate,
                summary.rejected,
                summary.malformed_lines
            );
            Ok(())
        }
        Command::Bench { which } => match which {
            BenchCommand::Coupon {
                calls,
                concurrency,
                lock_calls,
                rounds,
                redis_url,
                redis_cluster,
            } => {
                anyhow::ensure!(
                    [calls, concurrency, lock_calls, rounds]
                        .iter()
                        .all(|n| *n >= 1),
                    "every count must be at least 1"
                );
                bench::coupon::coupon(bench::coupon::CouponBenchOptions {
                    calls,
                    concurrency,
                    lock_calls,
                    rounds,
                    redis_url,
                    redis_cluster,
                })
                .await?;
                Ok(())
            }
            BenchCommand::Queue {
                waiters,
                concurrency,
                rate,
                rounds,
                redis_url,
            } => {
                anyhow::ensure!(
                    [waiters, concurrency, rounds].iter().all(|n| *n >= 1),
                    "every count must be at least 1"
                );
                anyhow::ensure!(
                    rate > 0.0 && rate <= 100_000.0,
                    "--rate must be more than 0 and at most 100000"
                );
                bench::queue::queue(bench::queue::QueueBenchOptions {
                    waiters,
                    concurrency,
                    rate,
                    rounds,
                    redis_url,
                })
                .await?;
                Ok(())
            }
            BenchCommand::Ranking {
                events,
                concurrency,
                batch,
                members,
                top_reads,
                rounds,
                windows,
                redis_url,
            } => {
                anyhow::ensure!(
                    [events, concurrency, batch, members, top_reads, rounds]
                        .iter()
                        .all(|n| *n >= 1),
                    "every count must be at least 1"
                );
                anyhow::ensure!(
                    batch <= 10_000,
                    "--batch is at most 10000 (ranking.max_batch_events)"
                );
                bench::ranking::ranking(bench::ranking::RankingBenchOptions {
                    events,
                    concurrency,
                    batch,
                    members,
                    top_reads,
                    rounds,
                    windows,
                    redis_url,
                })
                .await?;
                Ok(())
            }
            BenchCommand::History {
                trades,
                symbol,
                price_scale,
                quantity_scale,
                redis_url,
            } => {
                anyhow::ensure!(
                    price_scale <= 18 && quantity_scale <= 18,
                    "scales are at most 18"
                );
                bench::history::history(bench::history::HistoryBenchOptions {
                    trades,
                    symbol,
                    price_scale,
                    quantity_scale,
                    redis_url,
                })
                .await
            }
            BenchCommand::Candles {
                in_process_trades,
                e2e_trades,
                seed_trades,
                symbols,
                subscribers,
                latency_trades,
                rounds,
                redis_url,
            } => {
                anyhow::ensure!(
                    [
                        in_process_trades,
                        e2e_trades,
                        seed_trades,
                        symbols,
                        subscribers,
                        latency_trades,
                        rounds
                    ]
                    .iter()
                    .all(|n| *n >= 1),
                    "every count must be at least 1"
                );
                bench::candles::candles(bench::candles::CandleBenchOptions {
                    in_process_trades,
                    e2e_trades,
                    seed_trades,
                    symbols,
                    subscribers,
                    latency_trades,
                    rounds,
                    redis_url,
                })
                .await
            }
            BenchCommand::Indicators {
                symbols,
                updates,
                rounds,
                history_candles,
                queries,
                redis_url,
                aa,
            } => {
                anyhow::ensure!(
                    [symbols, updates, rounds, queries].iter().all(|n| *n >= 1)
                        && history_candles >= 2_000,
                    "every count must be at least 1, and history_candles at least 2000"
                );
                bench::indicators::indicators(
                    bench::indicators::IndicatorBenchOptions {
                        symbols,
                        updates,
                        rounds,
                        history_candles,
                        queries,
                        redis_url,
                        aa,
                    },
                    &std::env::current_exe()?,
                )
                .await?;
                Ok(())
            }
            BenchCommand::Feeds {
                symbols,
                trades,
                rounds,
                paced_rate,
                paced_seconds,
                poller_symbols,
                poller_batch,
                poller_rps,
                poller_instances,
                redis_url,
            } => {
                anyhow::ensure!(
                    symbols >= 1 && trades >= symbols && rounds >= 1 && paced_rate >= 1,
                    "--symbols, --rounds and --paced-rate must be at least 1 and --trades at least --symbols"
                );
                bench::feeds::feeds(bench::feeds::FeedsBenchOptions {
                    symbols,
                    trades,
                    rounds,
                    paced_rate,
                    paced_seconds,
                    redis_url,
                    poller: tickmesh_poller::bench::BenchConfig {
                        symbols: poller_symbols,
                        batch_size: poller_batch,
                        requests_per_second: poller_rps,
                        instances: poller_instances,
                        ..Default::default()
                    },
                })
                .await?;
                Ok(())
            }
            BenchCommand::Ingest {
                trades,
                baseline_trades,
                symbols,
                batch,
                publishers,
                rounds,
                paced_rate,
                redis_url,
                skip_durable,
                redis_cluster,
                skip_metrics,
            } => {
                anyhow::ensure!(
                    symbols >= 1
                        && batch >= 1
                        && publishers >= 1
                        && rounds >= 1
                        && trades >= 1
                        && paced_rate >= 1,
                    "every count must be at least 1"
                );
                bench::ingest(bench::IngestOptions {
                    trades,
                    baseline_trades,
                    symbols,
                    batch,
                    publishers,
                    rounds,
                    paced_rate,
                    redis_url,
                    durable: !skip_durable,
                    redis_cluster,
                    metrics_exe: if skip_metrics {
                        None
                    } else {
                        Some(std::env::current_exe()?)
                    },
                })
                .await?;
                Ok(())
            }
        },
        Command::History { action } => match action {
            HistoryAction::ApplySchema(args) => {
                let config = load(&args)?;
                let scylla = tickmesh::mesh::scylla_config(&config.history);
                let applied = tickmesh_scylla::apply_schema(&scylla).await?;
                println!(
                    "applied {applied} statements of deploy/scylla/schema.cql to keyspace {}",
                    scylla.keyspace
                );
                Ok(())
            }
            HistoryAction::Compact(args) => {
                let config = load(&args)?;
                let path = std::path::Path::new(&config.history.embedded_path);
                let (before, after) = anyhow::Context::with_context(
                    tickmesh_history::EmbeddedStore::compact(path),
                    || {
                        format!(
                            "compacting {} (history.embedded_path; is tickmesh still running?)",
                            path.display()
                        )
                    },
                )?;
                println!("compacted {}: {before} -> {after} bytes", path.display());
                Ok(())
            }
        },
        Command::Candles { action } => match action {
            CandlesAction::Verify {
                config,
                symbols,
                repair,
                redis_only,
            } => {
                let config = load(&config)?;
                candles_verify::run(
                    config,
                    candles_verify::VerifyOptions {
                        symbols,
                        repair,
                        redis_only,
                    },
                )
                .await
            }
        },
        Command::Config { action } => match action {
            ConfigAction::Check(args) => {
                load(&args)?;
                println!("configuration is valid");
                Ok(())
            }
            ConfigAction::Print(args) => {
                print!("{}", load(&args)?.to_toml_masked());
                Ok(())
            }
        },
    }
}
