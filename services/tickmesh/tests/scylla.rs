//! `history.backend = "scylla"` wiring: every service whose store lives in
//! ScyllaDB connects at start, and a cluster that cannot be reached stops
//! the start at once with an error naming the contact points. Against the
//! live CQL node named by `TICKMESH_TEST_SCYLLA` (`deploy/test.sh` starts an
//! Apache Cassandra 3.11 node and sets it, with the node's credentials in
//! `TICKMESH_TEST_SCYLLA_USERNAME` / `_PASSWORD`), a whole mesh runs on it:
//! the schema applied at start, closed candles flushed there and read back
//! across both tiers, coupon records persisted there.

mod common;

use std::io::Write;
use std::time::{Duration, Instant};

use common::*;
use tickmesh::mesh::{Mesh, scylla_needed};
use tickmesh_api::candles::candle_query_service_client::CandleQueryServiceClient;
use tickmesh_api::candles::{CandleOrder, GetAggregationStatusRequest, GetCandlesRequest};
use tickmesh_api::coupon::coupon_issue_service_client::CouponIssueServiceClient;
use tickmesh_api::coupon::{Campaign, CreateCampaignRequest, IssueOutcome, IssueRequest};
use tickmesh_calendar::Interval;
use tickmesh_coupon::IssuanceStore;
use tickmesh_history::CandleStore;
use tickmesh_runtime::config::Config;
use tickmesh_runtime::proto_time::{nanos_to_timestamp, now_nanos};
use tickmesh_scylla::{ScyllaIssuanceStore, ScyllaSession, ScyllaStore};
use tokio::net::TcpListener;

/// Nothing listens on port 1: connections are refused at once.
const UNREACHABLE: &str = "127.0.0.1:1";

fn scylla_config(services: &[&str]) -> Config {
    // Redis is connected lazily, so no redis-server is needed to fail here.
    let mut config = config("redis://127.0.0.1:1");
    config.history.backend = "scylla".into();
    config.history.scylla_contact_points = vec![UNREACHABLE.into()];
    config.services.enabled = services.iter().map(|s| s.to_string()).collect();
    config.validate().expect("a valid config");
    config
}

async fn start_error(config: Config) -> String {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let began = Instant::now();
    let result = tokio::time::timeout(Duration::from_secs(60), Mesh::start_on(config, listener))
        .await
        .expect("the start fails within a minute, it does not hang");
    let Err(e) = result else {
        panic!("started without ScyllaDB")
    };
    assert!(
        began.elapsed() < Duration::from_secs(30),
        "took {:?}",
        began.elapsed()
    );
    format!("{e:#}")
}

#[tokio::test]
async fn an_unreachable_cluster_is_a_clear_start_error_for_every_service_using_it() {
    for services in [
        &["candles"][..],
        &["ranking"],
        &["coupon"],
        &["marketfeed", "candles", "ranking", "coupon", "queue"],
    ] {
        let config = scylla_config(services);
        assert!(scylla_needed(&config, true), "{services:?}");
        let text = start_error(config).await;
        assert!(
            text.contains("ScyllaDB") && text.contains(UNREACHABLE),
            "{services:?}: {text}"
        );
        assert!(
            text.contains("history.scylla_contact_points"),
            "names the setting: {text}"
        );
        assert!(!text.contains("not available in this build"), "{text}");
    }
}

#[test]
fn only_services_with_a_store_there_connect() {
    // MarketFeed and Queue keep everything in Redis.
    assert!(!scylla_needed(
        &scylla_config(&["marketfeed", "queue"]),
        true
    ));
    // A candle store given by the caller (tests) replaces the configured one.
    assert!(!scylla_needed(&scylla_config(&["candles"]), false));
    // Stores pinned to the embedded file stay there.
    let mut pinned = scylla_config(&["ranking", "coupon"]);
    pinned.ranking.snapshot_store = "embedded".into();
    pinned.coupon.store = "embedded".into();
    assert!(!scylla_needed(&pinned, true));
    pinned.ranking.snapshot_store = "none".into();
    assert!(!scylla_needed(&pinned, true));
    // The default backend never needs ScyllaDB.
    let mut embedded = scylla_config(&["candles", "ranking", "coupon"]);
    embedded.history.backend = "embedded".into();
    assert!(!scylla_needed(&embedded, true));
}

/// The live node's settings for a fresh keyspace, or `None` (skipped, with a
/// message; a failure when `TICKMESH_TEST_REQUIRE_SCYLLA` is set).
fn live_scylla(config: &mut Config) -> Option<()> {
    let Some(node) = std::env::var("TICKMESH_TEST_SCYLLA")
        .ok()
        .filter(|v| !v.trim().is_empty())
    else {
        assert!(
            std::env::var_os("TICKMESH_TEST_REQUIRE_SCYLLA").is_none(),
            "TICKMESH_TEST_REQUIRE_SCYLLA is set but TICKMESH_TEST_SCYLLA names no node"
        );
        let _ = writeln!(
            std::io::stderr(),
            "SKIPPED the mesh on a live ScyllaDB: set TICKMESH_TEST_SCYLLA=host:9042"
        );
        return None;
    };
    let h = &mut config.history;
    h.backend = "scylla".into();
    h.scylla_contact_points = vec![node.trim().to_string()];
    h.scylla_keyspace = format!(
        "tickmesh_test_mesh_{}_{}",
        std::process::id(),
        now_nanos() % 1_000_000_000
    );
    h.scylla_replication = "'class': 'SimpleStrategy', 'replication_factor': 1".into();
    h.scylla_username = std::env::var("TICKMESH_TEST_SCYLLA_USERNAME").unwrap_or_default();
    h.scylla_password = std::env::var("TICKMESH_TEST_SCYLLA_PASSWORD").unwrap_or_default();
    h.scylla_apply_schema = true;
    Some(())
}

/// A mesh config on the live node: quick flushes, a short hot tail.
fn live_config(redis_url: &str) -> Option<Config> {
    let mut config = config(redis_url);
    live_scylla(&mut config)?;
    config.candles.lease_ttl = Duration::from_secs(1);
    config.history.flush_interval = Duration::from_millis(200);
    config.history.hot_candles = 10;
    config.coupon.persist_interval = Duration::from_millis(20);
    config.validate().expect("valid");
    Some(config)
}

const MINUTE: i64 = 60_000_000_000;
const T0: i64 = 1_704_067_200_000_000_000; // 2024-01-01T00:00Z

type Candles = CandleQueryServiceClient<tonic::transport::Channel>;
type Coupons = CouponIssueServiceClient<tonic::transport::Channel>;

fn price(m: usize) -> String {
    format!("{}.00", 1000 + m % 97)
}

/// One trade in each minute of `from..to`.
async fn publish_minutes(feed: &mut Client, from: usize, to: usize) {
    let trades: Vec<_> = (from..to)
        .map(|m| {
            trade_at(
                "BTCUSDT",
                &format!("t{m}"),
                &price(m),
                "1",
                T0 + m as i64 * MINUTE + 1,
            )
        })
        .collect();
    for chunk in trades.chunks(50) {
        assert_eq!(publish(feed, chunk.to_vec()).await.rejected, 0);
    }
}

async fn unflushed(c: &mut Candles) -> (u64, u64, bool) {
    let s = c
        .get_aggregation_status(GetAggregationStatusRequest {
            symbols: vec!["BTCUSDT".into()],
        })
        .await
        .unwrap()
        .into_inner()
        .statuses
        .remove(0);
    (
        s.applied_sequence,
        s.unflushed_candles,
        s.last_flush_time.is_some(),
    )
}

/// Waits until `applied` trades are aggregated and every closed candle is
/// in the store.
async fn wait_flushed(c: &Candles, applied: u64, wait: Duration) -> bool {
    eventually(wait, || {
        let mut c = c.clone();
        async move {
            let (seq, backlog, flushed) = unflushed(&mut c).await;
            seq >= applied && backlog == 0 && flushed
        }
    })
    .await
}

/// Every 1m candle through GetCandles, small pages, as (open s, open),
/// oldest first whatever `order`.
async fn candles(c: &Candles, order: CandleOrder) -> Vec<(i64, String)> {
    let mut c = c.clone();
    let mut got = Vec::new();
    let mut token = String::new();
    loop {
        let page = c
            .get_candles(GetCandlesRequest {
                symbol: "BTCUSDT".into(),
                interval: "1m".into(),
                page_size: 17,
                page_token: token,
                order: order as i32,
                ..Default::default()
            })
            .await
            .unwrap()
            .into_inner();
        got.extend(
            page.candles
                .iter()
                .map(|c| (c.open_time.as_ref().unwrap().seconds, c.open.clone())),
        );
        if page.next_page_token.is_empty() {
            break;
        }
        token = page.next_page_token;
    }
    if order == CandleOrder::NewestFirst {
        got.reverse();
    }
    got
}

fn want_minutes(n: usize) -> Vec<(i64, String)> {
    (0..n)
        .map(|m| ((T0 + m as i64 * MINUTE) / 1_000_000_000, price(m)))
        .collect()
}

/// GetCandles joins the store and the Redis tail: every minute once, in
/// both orders; the store holds every closed one.
async fn check_candles(c: &Candles, scylla: &ScyllaSession, minutes: usize) {
    for order in [CandleOrder::OldestFirst, CandleOrder::NewestFirst] {
        assert_eq!(candles(c, order).await, want_minutes(minutes), "{order:?}");
    }
    let store = ScyllaStore::open(scylla).await.expect("open");
    let m1 = Interval::parse("1m").unwrap();
    let stored = store
        .range("BTCUSDT", m1, i64::MIN, i64::MAX, false, 10_000)
        .await
        .expect("read the live node");
    // The last minute closes once no trade came for a while.
    assert!(
        stored.len() == minutes - 1 || stored.len() == minutes,
        "every closed minute is there: {}",
        stored.len()
    );
    let opens: Vec<i64> = stored.iter().map(|c| c.open_ns / 1_000_000_000).collect();
    let want: Vec<i64> = want_minutes(stored.len())
        .into_iter()
        .map(|(t, _)| t)
        .collect();
    assert_eq!(opens, want, "each once, in order");
}

async fn create_campaign(coupons: &mut Coupons, id: &str) {
    let now = now_nanos();
    let created = coupons
        .create_campaign(CreateCampaignRequest {
            campaign: Some(Campaign {
                id: id.into(),
                total_stock: 10,
                per_user_limit: 1,
                start_time: Some(nanos_to_timestamp(now - 1_000_000_000)),
                end_time: Some(nanos_to_timestamp(now + 3_600_000_000_000)),
                ..Default::default()
            }),
        })
        .await
        .unwrap()
        .into_inner();
    assert!(created.created);
}

/// Issues one coupon to each of `users`; returns the codes.
async fn issue(coupons: &mut Coupons, campaign: &str, users: &[&str]) -> Vec<String> {
    let mut codes = Vec::new();
    for user in users {
        let answer = coupons
            .issue(IssueRequest {
                campaign_id: campaign.into(),
                user_id: user.to_string(),
                request_id: format!("{user}-1"),
            })
            .await
            .unwrap()
            .into_inner();
        assert_eq!(answer.outcome, IssueOutcome::Issued as i32, "{user}");
        codes.push(answer.coupon_code);
    }
    codes
}

/// Waits until the node holds exactly the records of `codes`, in order.
async fn wait_persisted(scylla: &ScyllaSession, campaign: &str, codes: &[String], wait: Duration) {
    let issuances = ScyllaIssuanceStore::open(scylla).await.expect("open");
    let persisted = eventually(wait, || {
        let issuances = &issuances;
        async move {
            issuances
                .issuances(campaign)
                .await
                .is_ok_and(|r| r.iter().map(|r| &r.code).eq(codes.iter()))
        }
    })
    .await;
    assert!(
        persisted,
        "the node holds every record: {:?}",
        issuances.issuances(campaign).await
    );
}

/// Runs `body` on a mesh started with `config` and a session of its own on
/// the same keyspace, then drops the keyspace (even when `body` panicked)
/// and re-raises the panic.
async fn on_live_mesh<F, Fut>(config: Config, body: F)
where
    F: FnOnce(Mesh, ScyllaSession) -> Fut,
    Fut: std::future::Future<Output = ()> + Send + 'static,
{
    let keyspace = config.history.scylla_keyspace.clone();
    let mesh = start(config.clone()).await;
    let scylla = tickmesh::mesh::connect_scylla(&config.history)
        .await
        .expect("the schema the mesh applied");
    let outcome = tokio::spawn(body(mesh, scylla.clone())).await;
    scylla
        .session()
        .query_unpaged(format!("DROP KEYSPACE IF EXISTS {keyspace}"), &[])
        .await
        .expect("drop the test keyspace");
    if let Err(e) = outcome {
        std::panic::resume_unwind(e.into_panic());
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_mesh_runs_on_a_live_node_candles_and_coupons_land_there() {
    let redis = redis().await;
    let Some(config) = live_config(&redis.url()) else {
        return;
    };
    on_live_mesh(config, |mesh, scylla| async move {
        let mut feed = client(&mesh).await;
        register(&mut feed, "BTCUSDT", 2, 5).await;
        publish_minutes(&mut feed, 0, 150).await;
        let c = CandleQueryServiceClient::connect(mesh.endpoint())
            .await
            .unwrap();
        assert!(
            wait_flushed(&c, 150, Duration::from_secs(60)).await,
            "the flusher moved the closed candles to the live node"
        );
        check_candles(&c, &scylla, 150).await;

        // CouponIssueService keeps its campaign and records there too.
        let mut coupons = CouponIssueServiceClient::connect(mesh.endpoint())
            .await
            .unwrap();
        create_campaign(&mut coupons, "live").await;
        let codes = issue(&mut coupons, "live", &["ann", "bob"]).await;
        let issuances = ScyllaIssuanceStore::open(&scylla).await.expect("open");
        assert!(
            issuances.campaign("live").await.expect("read").is_some(),
            "the campaign is on the node"
        );
        wait_persisted(&scylla, "live", &codes, Duration::from_secs(30)).await;
        mesh.stop().await.expect("stop");
    })
    .await;
}

/// A CQL node of the test's own (`deploy/tools.sh`), stopped and restarted
/// on its data; stopped for good when dropped.
struct OwnNode {
    port: u16,
}

impl OwnNode {
    fn tools(command: &str, port: u16) -> std::process::Output {
        let tools = concat!(env!("CARGO_MANIFEST_DIR"), "/../../deploy/tools.sh");
        std::process::Command::new("bash")
            .arg("-c")
            .arg(format!("source {tools} && {command} {port}"))
            .env("CQL_NODE_KEEP_DATA", "1")
            .env("CQL_NODE_DATA", format!("/tmp/tickmesh-cql-outage-{port}"))
            .output()
            .expect("bash")
    }

    fn start() -> OwnNode {
        let tools = concat!(env!("CARGO_MANIFEST_DIR"), "/../../deploy/tools.sh");
        let out = std::process::Command::new("bash")
            .arg("-c")
            .arg(format!("source {tools} && free_cql_port"))
            .output()
            .expect("bash");
        let port: u16 = String::from_utf8_lossy(&out.stdout)
            .trim()
            .parse()
            .expect("a free port");
        let node = OwnNode { port };
        node.up();
        node
    }

    fn up(&self) {
        let out = Self::tools("ensure_cql_node", self.port);
        assert!(
            out.status.success(),
            "the test's CQL node did not start: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }

    fn down(&self) {
        let out = Self::tools("stop_cql_node", self.port);
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

impl Drop for OwnNode {
    fn drop(&mut self) {
        let _ = std::process::Command::new("bash")
            .arg("-c")
            .arg(format!(
                "source {}/../../deploy/tools.sh && stop_cql_node {}",
                env!("CARGO_MANIFEST_DIR"),
                self.port
            ))
            .env(
                "CQL_NODE_DATA",
                format!("/tmp/tickmesh-cql-outage-{}", self.port),
            )
            .output();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_node_stopped_during_flushes_and_coupon_persistence_loses_nothing() {
    let redis = redis().await;
    // Runs where a live node runs (the install is there), on a node of its
    // own: the shared one must stay up for the other tests.
    let Some(mut config) = live_config(&redis.url()) else {
        return;
    };
    let node = OwnNode::start();
    config.history.scylla_contact_points = vec![format!("127.0.0.1:{}", node.port)];
    config.history.scylla_username.clear();
    config.history.scylla_password.clear();
    let node = std::sync::Arc::new(node);
    let handle = node.clone();
    on_live_mesh(config, |mesh, scylla| async move {
        let mut feed = client(&mesh).await;
        register(&mut feed, "BTCUSDT", 2, 5).await;
        let c = CandleQueryServiceClient::connect(mesh.endpoint())
            .await
            .unwrap();
        let mut coupons = CouponIssueServiceClient::connect(mesh.endpoint())
            .await
            .unwrap();
        publish_minutes(&mut feed, 0, 60).await;
        assert!(wait_flushed(&c, 60, Duration::from_secs(60)).await);
        create_campaign(&mut coupons, "outage").await;
        let mut codes = issue(&mut coupons, "outage", &["ann", "bob"]).await;
        wait_persisted(&scylla, "outage", &codes, Duration::from_secs(30)).await;

        // The node stops; ingest and issuance go on in Redis.
        let began = Instant::now();
        tokio::task::block_in_place(|| handle.down());
        eprintln!("node stopped in {:?}", began.elapsed());
        publish_minutes(&mut feed, 60, 150).await;
        codes.extend(issue(&mut coupons, "outage", &["cat", "dan", "eve"]).await);
        let backlog = eventually(Duration::from_secs(20), || {
            let mut c = c.clone();
            async move {
                let (seq, backlog, _) = unflushed(&mut c).await;
                seq >= 150 && backlog >= 80
            }
        })
        .await;
        assert!(
            backlog,
            "closed candles wait in Redis while the node is down"
        );
        tokio::time::sleep(Duration::from_secs(1)).await; // failed flush attempts

        // It comes back on its data: the flusher and the persist worker
        // resume; nothing is lost, nothing doubled.
        let began = Instant::now();
        tokio::task::block_in_place(|| handle.up());
        eprintln!("node back in {:?}", began.elapsed());
        assert!(
            wait_flushed(&c, 150, Duration::from_secs(90)).await,
            "the flusher resumed: {:?}",
            unflushed(&mut c.clone()).await
        );
        eprintln!("backlog flushed {:?} after the restart", began.elapsed());
        check_candles(&c, &scylla, 150).await;
        wait_persisted(&scylla, "outage", &codes, Duration::from_secs(60)).await;
        mesh.stop().await.expect("stop");
    })
    .await;
    drop(node);
}
