//! `tickmesh bench …`: measurements against a baseline taken in the same run
//! on the same Redis, reported as medians over rounds (these machines are
//! noisy; compare ratios, not absolute numbers).

pub mod candles;
pub mod cluster;
pub mod coupon;
pub mod feeds;
pub mod history;
pub mod indicators;
pub mod ingest;
pub mod metrics_cost;
pub mod queue;
pub mod ranking;
pub mod redis_benchmark;

pub use ingest::{IngestOptions, IngestReport, ingest};

use std::time::Duration;

use tickmesh_runtime::config::Config;
use tickmesh_runtime::redis_server::RedisServer;
use tokio::net::TcpListener;

use tickmesh_mesh::mesh::Mesh;

/// A Redis (the given one, or a fresh `redis-server`) and a mesh on it with
/// auto-registration, under key prefix `prefix`. Keep the server alive while
/// measuring.
pub async fn bench_mesh(
    redis_url: Option<String>,
    prefix: &str,
    tune: impl FnOnce(&mut Config),
) -> anyhow::Result<(Option<RedisServer>, String, Mesh)> {
    bench_mesh_tuned(redis_url, prefix, tune, None).await
}

/// [`bench_mesh`] with a given history store.
pub async fn bench_mesh_with(
    redis_url: Option<String>,
    prefix: &str,
    history: Option<std::sync::Arc<dyn tickmesh_history::CandleStore>>,
) -> anyhow::Result<(Option<RedisServer>, String, Mesh)> {
    bench_mesh_tuned(redis_url, prefix, |_| {}, history).await
}

async fn bench_mesh_tuned(
    redis_url: Option<String>,
    prefix: &str,
    tune: impl FnOnce(&mut Config),
    history: Option<std::sync::Arc<dyn tickmesh_history::CandleStore>>,
) -> anyhow::Result<(Option<RedisServer>, String, Mesh)> {
    let own = match &redis_url {
        Some(_) => None,
        None => Some(RedisServer::start_ephemeral().await?),
    };
    let url = redis_url.unwrap_or_else(|| own.as_ref().expect("own redis").url());
    let mut config = Config::default();
    config.redis.url = url.clone();
    config.redis.key_prefix = prefix.into();
    config.marketfeed.auto_register_instruments = true;
    config.history.embedded_path = std::env::temp_dir()
        .join(format!("tickmesh-bench-{}-{prefix}", std::process::id()))
        .join("history.redb")
        .display()
        .to_string();
    tune(&mut config);
    let mesh = Mesh::start_with(config, TcpListener::bind("127.0.0.1:0").await?, history).await?;
    Ok((own, url, mesh))
}

pub fn median(mut values: Vec<f64>) -> f64 {
    values.sort_by(|a, b| a.total_cmp(b));
    values[values.len() / 2]
}

/// The `p` quantile of sorted durations (nearest rank).
pub fn percentile(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let rank = ((sorted.len() - 1) as f64 * p).round() as usize;
    sorted[rank]
}

pub fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}
