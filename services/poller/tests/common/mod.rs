//! Shared test harness: a real redis-server per test, MarketFeed instances on it, the fake
//! broker on 127.0.0.1, and a spec with quick timings.
#![allow(dead_code)]

use std::sync::Arc;
use std::time::Duration;

use tickmesh_fake_venue::broker::{BrokerConfig, FakeBroker};
use tickmesh_marketfeed::MarketFeed;
use tickmesh_marketfeed::model::{Instrument, TradingSession};
use tickmesh_poller::PollerSpec;
use tickmesh_runtime::RedisHandle;
use tickmesh_runtime::config::{MarketFeedConfig, RedisConfig};
pub use tickmesh_runtime::redis_server::RedisServer;
use tokio_util::sync::CancellationToken;

pub async fn redis() -> RedisServer {
    RedisServer::start_ephemeral()
        .await
        .expect("start redis-server (apt-get install -y redis-server)")
}

/// One MarketFeed instance on `server` (call again for another instance on the same Redis).
pub fn feed(server: &RedisServer, shutdown: &CancellationToken) -> Arc<MarketFeed> {
    let redis = RedisHandle::new(&RedisConfig {
        url: server.url(),
        response_timeout: Duration::from_secs(2),
        connect_timeout: Duration::from_millis(500),
        ..Default::default()
    })
    .expect("redis handle");
    MarketFeed::new(MarketFeedConfig::default(), redis, shutdown.clone())
}

pub async fn broker(requests_per_second: Option<u32>) -> FakeBroker {
    FakeBroker::start(BrokerConfig {
        requests_per_second,
        ..Default::default()
    })
    .await
    .expect("start the fake broker")
}

/// `n` six-digit codes from 100000.
pub fn codes(n: usize) -> Vec<String> {
    (0..n).map(|i| format!("{:06}", 100_000 + i)).collect()
}

/// KRX regular hours: Monday to Friday 09:00-15:30 Asia/Seoul.
pub fn krx_sessions() -> Vec<TradingSession> {
    vec![TradingSession {
        days: vec![1, 2, 3, 4, 5],
        open_minute: 9 * 60,
        close_minute: 15 * 60 + 30,
    }]
}

/// Registers the codes (with `prefix`) as Korean equities (scales 0/0, Asia/Seoul).
pub async fn register(
    feed: &MarketFeed,
    prefix: &str,
    codes: &[String],
    sessions: Vec<TradingSession>,
) {
    for code in codes {
        feed.upsert_instrument(Instrument {
            symbol: format!("{prefix}{code}"),
            venue: "krx".into(),
            price_scale: 0,
            quantity_scale: 0,
            time_zone: "Asia/Seoul".into(),
            sessions: sessions.clone(),
            update_time_ns: 0,
        })
        .await
        .expect("register instrument");
    }
}

/// A spec against `broker` with test timings.
pub fn spec(broker: &FakeBroker, name: &str, codes: &[String]) -> PollerSpec {
    let mut spec = PollerSpec::new(
        name,
        &broker.base_url(),
        &broker.app_key(),
        &broker.app_secret(),
        codes.to_vec(),
    );
    spec.requests_per_second = 20;
    spec.burst = 0;
    spec.backoff_min = Duration::from_millis(200);
    spec.backoff_max = Duration::from_secs(2);
    spec.request_timeout = Duration::from_secs(2);
    spec
}

/// Polls `check` every 10 ms until it holds or `within` passes.
pub async fn eventually(within: Duration, mut check: impl AsyncFnMut() -> bool) -> bool {
    let end = tokio::time::Instant::now() + within;
    loop {
        if check().await {
            return true;
        }
        if tokio::time::Instant::now() >= end {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}
