//! Shared test harness: a real redis-server per test (free port, never one
//! left running), in-process meshes on port 0, and small helpers.
#![allow(dead_code)]

use std::time::Duration;

use tickmesh::mesh::Mesh;
use tickmesh_api::marketfeed::market_feed_service_client::MarketFeedServiceClient;
use tickmesh_api::marketfeed::{
    Instrument, PublishTradesRequest, PublishTradesResponse, StreamTradesResponse, Trade,
    UpsertInstrumentRequest,
};
use tickmesh_runtime::config::Config;
use tickmesh_runtime::proto_time::{nanos_to_timestamp, now_nanos};
pub use tickmesh_runtime::redis_cluster::RedisCluster;
pub use tickmesh_runtime::redis_server::RedisServer;
use tokio::net::TcpListener;
use tonic::transport::Channel;

pub type Client = MarketFeedServiceClient<Channel>;

pub mod slot_audit;

/// A test's redis-server, with every command the services send it audited
/// for Redis Cluster (see [`slot_audit`]): a test ends with a panic naming
/// each command that would cross hash slots. `TICKMESH_TEST_SLOT_AUDIT=0`
/// turns the audit off.
///
/// With `TICKMESH_TEST_REDIS=cluster` it is a real local Redis Cluster
/// instead (3 masters, each with a replica), and [`AuditedRedis::url`] is its
/// `redis+cluster://` URL: the same tests run on both topologies. A test that
/// manages the single server itself (kills, restarts, data directories)
/// panics there, saying so.
pub struct AuditedRedis {
    server: Option<RedisServer>,
    cluster: Option<RedisCluster>,
    audit: Option<slot_audit::SlotAudit>,
}

impl std::ops::Deref for AuditedRedis {
    type Target = RedisServer;
    fn deref(&self) -> &RedisServer {
        self.server
            .as_ref()
            .expect("this test manages a single redis-server; it does not run on a cluster")
    }
}

impl std::ops::DerefMut for AuditedRedis {
    fn deref_mut(&mut self) -> &mut RedisServer {
        self.server
            .as_mut()
            .expect("this test manages a single redis-server; it does not run on a cluster")
    }
}

/// True when the tests run on a Redis Cluster (`TICKMESH_TEST_REDIS=cluster`).
pub fn on_cluster() -> bool {
    std::env::var("TICKMESH_TEST_REDIS").as_deref() == Ok("cluster")
}

impl AuditedRedis {
    /// The URL services connect to: the server's, or the cluster's seed nodes.
    pub fn url(&self) -> String {
        match (&self.server, &self.cluster) {
            (Some(server), _) => server.url(),
            (None, Some(cluster)) => cluster.url(),
            (None, None) => unreachable!("a server or a cluster"),
        }
    }

    /// A connection of the test's own, routed by key on a cluster.
    pub fn conn(&self) -> tickmesh_runtime::RedisConn {
        tickmesh_runtime::RedisHandle::new(&config(&self.url()).redis)
            .expect("a valid redis url")
            .conn()
    }

    /// The cluster, when the tests run on one.
    pub fn cluster(&mut self) -> Option<&mut RedisCluster> {
        self.cluster.as_mut()
    }

    /// Commands audited so far and the ones that would cross slots.
    pub fn slot_report(&self) -> (u64, Vec<String>) {
        self.audit.as_ref().map(|a| a.report()).unwrap_or_default()
    }

    /// Forgets the violations seen so far (a test that crosses slots on purpose).
    pub fn forgive_slots(&self) {
        if let Some(a) = &self.audit {
            a.forgive();
        }
    }
}

impl Drop for AuditedRedis {
    fn drop(&mut self) {
        if std::thread::panicking() {
            return;
        }
        let (commands, violations) = self.slot_report();
        if !violations.is_empty() {
            let mut unique: Vec<&String> = violations.iter().collect();
            unique.sort();
            unique.dedup();
            panic!(
                "{} of {commands} Redis commands would cross hash slots on a Redis Cluster:\n  {}",
                violations.len(),
                unique
                    .iter()
                    .take(20)
                    .map(|v| v.as_str())
                    .collect::<Vec<_>>()
                    .join("\n  ")
            );
        }
    }
}

pub async fn redis() -> AuditedRedis {
    if on_cluster() {
        let cluster = RedisCluster::start(3, 1, Duration::from_millis(1000))
            .await
            .expect("start a local Redis Cluster (apt-get install -y redis-server redis-tools)");
        // The cluster itself refuses commands that cross slots.
        return AuditedRedis {
            server: None,
            cluster: Some(cluster),
            audit: None,
        };
    }
    let server = RedisServer::start_ephemeral()
        .await
        .expect("start redis-server (apt-get install -y redis-server)");
    let audit = if std::env::var("TICKMESH_TEST_SLOT_AUDIT").as_deref() == Ok("0") {
        None
    } else {
        Some(
            slot_audit::SlotAudit::attach(server.port())
                .await
                .expect("MONITOR on the test's redis-server"),
        )
    };
    AuditedRedis {
        server: Some(server),
        cluster: None,
        audit,
    }
}

/// Test config against `redis_url`: quick health checks, a test key prefix.
pub fn config(redis_url: &str) -> Config {
    let mut c = Config::default();
    c.redis.url = redis_url.to_string();
    c.redis.health_interval = Duration::from_millis(100);
    c.redis.response_timeout = Duration::from_secs(2);
    c.redis.connect_timeout = Duration::from_millis(500);
    c.server.grace_period = Duration::from_secs(2);
    c.server.listen = "127.0.0.1:0".into();
    c.marketfeed.instrument_refresh = Duration::from_millis(200);
    c.history.embedded_path = temp_path("history.redb");
    c.history.flush_interval = Duration::from_millis(300);
    c
}

/// A fresh path under the temp dir, unique in this test run.
pub fn temp_path(name: &str) -> String {
    static N: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
    let n = N.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    std::env::temp_dir()
        .join(format!("tickmesh-test-{}-{n}", std::process::id()))
        .join(name)
        .display()
        .to_string()
}

pub async fn start(config: Config) -> Mesh {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    Mesh::start_on(config, listener).await.expect("start mesh")
}

pub async fn client(mesh: &Mesh) -> Client {
    MarketFeedServiceClient::connect(mesh.endpoint())
        .await
        .expect("connect")
        .max_decoding_message_size(64 << 20)
        .max_encoding_message_size(64 << 20)
}

pub fn instrument(symbol: &str, price_scale: u32, quantity_scale: u32) -> Instrument {
    Instrument {
        symbol: symbol.into(),
        venue: "test".into(),
        price_scale,
        quantity_scale,
        time_zone: "UTC".into(),
        ..Default::default()
    }
}

pub async fn register(client: &mut Client, symbol: &str, price_scale: u32, quantity_scale: u32) {
    client
        .upsert_instrument(UpsertInstrumentRequest {
            instrument: Some(instrument(symbol, price_scale, quantity_scale)),
        })
        .await
        .expect("register instrument");
}

/// A trade a minute ago.
pub fn trade(symbol: &str, id: &str, price: &str, quantity: &str) -> Trade {
    trade_at(symbol, id, price, quantity, now_nanos() - 60_000_000_000)
}

pub fn trade_at(symbol: &str, id: &str, price: &str, quantity: &str, time_ns: i64) -> Trade {
    Trade {
        symbol: symbol.into(),
        trade_id: id.into(),
        price: price.into(),
        quantity: quantity.into(),
        time: Some(nanos_to_timestamp(time_ns)),
        side: 1,
        ..Default::default()
    }
}

pub async fn publish(client: &mut Client, trades: Vec<Trade>) -> PublishTradesResponse {
    client
        .publish_trades(PublishTradesRequest {
            trades,
            all_or_nothing: false,
        })
        .await
        .expect("publish")
        .into_inner()
}

/// `n` trades of `symbol` with ids `{prefix}{i}`.
pub fn trades(symbol: &str, prefix: &str, n: usize) -> Vec<Trade> {
    let base = now_nanos() - 3_600_000_000_000;
    (0..n)
        .map(|i| {
            trade_at(
                symbol,
                &format!("{prefix}{i}"),
                &format!("{}.5", 100 + i % 50),
                "1",
                base + i as i64,
            )
        })
        .collect()
}

/// Reads stream messages until `n` trades arrived (or `wait` passes).
pub async fn collect(
    stream: &mut tonic::Streaming<StreamTradesResponse>,
    n: usize,
    wait: Duration,
) -> (Vec<Trade>, Vec<tickmesh_api::marketfeed::SequenceGap>) {
    let mut trades = Vec::new();
    let mut gaps = Vec::new();
    let deadline = tokio::time::Instant::now() + wait;
    while trades.len() < n {
        match tokio::time::timeout_at(deadline, stream.message()).await {
            Ok(Ok(Some(m))) => {
                trades.extend(m.trades);
                gaps.extend(m.gaps);
            }
            _ => break,
        }
    }
    (trades, gaps)
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
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    false
}

/// CandleQueryService clients of the tests.
pub type Candles =
    tickmesh_api::candles::candle_query_service_client::CandleQueryServiceClient<Channel>;

/// Test config for the candle suites: short leases, quick closing by the clock.
pub fn candle_config(redis_url: &str) -> Config {
    let mut c = config(redis_url);
    c.candles.lease_ttl = Duration::from_secs(1);
    c.candles.close_grace = Duration::from_millis(200);
    c
}

pub async fn candles_client(mesh: &Mesh) -> Candles {
    Candles::connect(mesh.endpoint())
        .await
        .unwrap()
        .max_decoding_message_size(64 << 20)
}

/// Waits (up to 30 s) until the aggregator has applied `sequence` for `symbol`.
pub async fn applied(c: &Candles, symbol: &str, sequence: u64) -> bool {
    eventually(Duration::from_secs(30), || {
        let mut c = c.clone();
        let symbol = symbol.to_string();
        async move {
            c.get_aggregation_status(tickmesh_api::candles::GetAggregationStatusRequest {
                symbols: vec![symbol],
            })
            .await
            .map(|r| r.into_inner().statuses[0].applied_sequence >= sequence)
            .unwrap_or(false)
        }
    })
    .await
}

/// Registers an instrument with a time zone.
pub async fn register_zone(client: &mut Client, symbol: &str, ps: u32, qs: u32, zone: &str) {
    client
        .upsert_instrument(UpsertInstrumentRequest {
            instrument: Some(Instrument {
                symbol: symbol.into(),
                price_scale: ps,
                quantity_scale: qs,
                time_zone: zone.into(),
                ..Default::default()
            }),
        })
        .await
        .unwrap();
}

/// Every candle of an interval, oldest first, through all pages.
pub async fn all_candles(
    c: &mut Candles,
    symbol: &str,
    interval: &str,
    page_size: i32,
) -> Vec<tickmesh_api::candles::Candle> {
    pages(
        c,
        symbol,
        interval,
        page_size,
        tickmesh_api::candles::CandleOrder::OldestFirst,
    )
    .await
}

/// Every candle of an interval in `order`, through all pages of `size`.
pub async fn pages(
    c: &mut Candles,
    symbol: &str,
    interval: &str,
    size: i32,
    order: tickmesh_api::candles::CandleOrder,
) -> Vec<tickmesh_api::candles::Candle> {
    let mut out = Vec::new();
    let mut token = String::new();
    loop {
        let page = c
            .get_candles(tickmesh_api::candles::GetCandlesRequest {
                symbol: symbol.into(),
                interval: interval.into(),
                page_size: size,
                page_token: token,
                order: order as i32,
                ..Default::default()
            })
            .await
            .unwrap()
            .into_inner();
        out.extend(page.candles);
        if page.next_page_token.is_empty() {
            return out;
        }
        token = page.next_page_token;
    }
}
