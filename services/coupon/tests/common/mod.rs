//! Shared harness: a real redis-server per test, coupon services on it with
//! a manual clock and one embedded store they share (as instances of one
//! deployment share the store).
#![allow(dead_code)]

use std::sync::Arc;
use std::time::Duration;

use tickmesh_coupon::Coupons;
use tickmesh_coupon::campaign::NewCampaign;
use tickmesh_coupon::clock::ManualClock;
use tickmesh_coupon::embedded_store::EmbeddedIssuanceStore;
use tickmesh_coupon::store::IssuanceStore;
use tickmesh_runtime::RedisHandle;
use tickmesh_runtime::config::{CouponConfig, RedisConfig};
pub use tickmesh_runtime::redis_server::RedisServer;
use tokio_util::sync::CancellationToken;

/// 2026-01-05T00:00:00Z.
pub const T0_MS: i64 = 1_767_571_200_000;

pub async fn redis() -> RedisServer {
    RedisServer::start_ephemeral()
        .await
        .expect("start redis-server (apt-get install -y redis-server)")
}

pub fn temp_path(name: &str) -> std::path::PathBuf {
    static N: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
    let n = N.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    std::env::temp_dir()
        .join(format!("tickmesh-coupon-test-{}-{n}", std::process::id()))
        .join(name)
}

pub fn store() -> Arc<dyn IssuanceStore> {
    Arc::new(EmbeddedIssuanceStore::open(&temp_path("coupon.redb")).unwrap())
}

pub fn config() -> CouponConfig {
    CouponConfig {
        persist_interval: Duration::from_millis(20),
        claim_after: Duration::from_millis(300),
        watch_interval: Duration::from_millis(50),
        campaign_refresh: Duration::from_millis(200),
        ..Default::default()
    }
}

/// One service instance: its own Redis connection, the shared store and clock.
pub fn instance(
    redis: &RedisServer,
    store: Arc<dyn IssuanceStore>,
    clock: Arc<ManualClock>,
    config: CouponConfig,
) -> (Arc<Coupons>, CancellationToken) {
    let redis_config = RedisConfig {
        url: redis.url(),
        key_prefix: "t".into(),
        connect_timeout: Duration::from_millis(500),
        response_timeout: Duration::from_secs(2),
        ..Default::default()
    };
    let handle = RedisHandle::new(&redis_config).unwrap();
    let shutdown = CancellationToken::new();
    let coupons = Coupons::new(config, handle, store, clock, shutdown.clone());
    (coupons, shutdown)
}

/// A campaign open from T0 for an hour.
pub fn campaign(id: &str, stock: i64, per_user: i32) -> NewCampaign {
    NewCampaign {
        id: id.into(),
        total_stock: stock,
        per_user_limit: per_user,
        start_ms: Some(T0_MS),
        end_ms: Some(T0_MS + 3_600_000),
        ..Default::default()
    }
}

pub async fn conn(redis: &RedisServer) -> redis::aio::MultiplexedConnection {
    redis::Client::open(redis.url())
        .unwrap()
        .get_multiplexed_async_connection()
        .await
        .unwrap()
}

/// Polls until `check` holds or `wait` passes.
pub async fn eventually<F, Fut>(wait: Duration, mut check: F) -> bool
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = tokio::time::Instant::now() + wait;
    while tokio::time::Instant::now() < deadline {
        if check().await {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    false
}

/// A server keeping its data in a fresh directory with `appendfsync always`,
/// so a copy of the directory taken while it runs holds every write answered
/// before it (see `RedisServer::save_data_dir` / `restart_from`).
pub async fn persistent_redis(name: &str) -> (RedisServer, std::path::PathBuf) {
    let dir = temp_path(name);
    let server = RedisServer::start_with(
        &dir.join("data"),
        Some(tickmesh_runtime::redis_server::Fsync::Always),
    )
    .await
    .expect("start redis-server (apt-get install -y redis-server)");
    (server, dir)
}
