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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_mesh_runs_on_a_live_node_candles_and_coupons_land_there() {
    let redis = redis().await;
    let mut config = config(&redis.url());
    if live_scylla(&mut config).is_none() {
        return;
    }
    config.candles.lease_ttl = Duration::from_secs(1);
    config.history.flush_interval = Duration::from_millis(200);
    config.history.hot_candles = 10;
    config.coupon.persist_interval = Duration::from_millis(20);
    config.validate().expect("valid");
    let keyspace = config.history.scylla_keyspace.clone();
    let mesh = start(config.clone()).await;
    let scylla = tickmesh::mesh::connect_scylla(&config.history)
        .await
        .expect("the schema the mesh applied");

    let outcome = tokio::spawn(run_on_live_node(mesh, scylla.clone())).await;
    scylla
        .session()
        .query_unpaged(format!("DROP KEYSPACE IF EXISTS {keyspace}"), &[])
        .await
        .expect("drop the test keyspace");
    if let Err(e) = outcome {
        std::panic::resume_unwind(e.into_panic());
    }
}

async fn run_on_live_node(mesh: Mesh, scylla: ScyllaSession) {
    const MINUTE: i64 = 60_000_000_000;
    const T0: i64 = 1_704_067_200_000_000_000; // 2024-01-01T00:00Z
    const MINUTES: usize = 150;
    let mut feed = client(&mesh).await;
    register(&mut feed, "BTCUSDT", 2, 5).await;
    let trades: Vec<_> = (0..MINUTES)
        .map(|m| {
            let price = format!("{}.00", 1000 + m % 97);
            trade_at(
                "BTCUSDT",
                &format!("t{m}"),
                &price,
                "1",
                T0 + m as i64 * MINUTE + 1,
            )
        })
        .collect();
    for chunk in trades.chunks(50) {
        assert_eq!(publish(&mut feed, chunk.to_vec()).await.rejected, 0);
    }
    let c = CandleQueryServiceClient::connect(mesh.endpoint())
        .await
        .unwrap();
    let flushed = eventually(Duration::from_secs(60), || {
        let mut c = c.clone();
        async move {
            let s = c
                .get_aggregation_status(GetAggregationStatusRequest {
                    symbols: vec!["BTCUSDT".into()],
                })
                .await
                .unwrap()
                .into_inner()
                .statuses
                .remove(0);
            s.applied_sequence >= MINUTES as u64
                && s.unflushed_candles == 0
                && s.last_flush_time.is_some()
        }
    })
    .await;
    assert!(
        flushed,
        "the flusher moved the closed candles to the live node"
    );
    let store = ScyllaStore::open(&scylla).await.expect("open");
    let m1 = Interval::parse("1m").unwrap();
    let stored = store
        .range("BTCUSDT", m1, i64::MIN, i64::MAX, false, 10_000)
        .await
        .expect("read the live node");
    assert_eq!(stored.len(), MINUTES - 1, "every closed minute is there");

    // GetCandles joins the node and the Redis tail: every minute once, in
    // both orders, over small pages.
    for order in [CandleOrder::OldestFirst, CandleOrder::NewestFirst] {
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
        let want: Vec<_> = (0..MINUTES)
            .map(|m| {
                (
                    (T0 + m as i64 * MINUTE) / 1_000_000_000,
                    format!("{}.00", 1000 + m % 97),
                )
            })
            .collect();
        assert_eq!(got, want, "{order:?}");
    }

    // CouponIssueService keeps its campaign and records there too.
    let mut coupons = CouponIssueServiceClient::connect(mesh.endpoint())
        .await
        .unwrap();
    let now = now_nanos();
    let create = tonic::Request::new(CreateCampaignRequest {
        campaign: Some(Campaign {
            id: "live".into(),
            total_stock: 3,
            per_user_limit: 1,
            start_time: Some(nanos_to_timestamp(now - 1_000_000_000)),
            end_time: Some(nanos_to_timestamp(now + 3_600_000_000_000)),
            ..Default::default()
        }),
    });
    assert!(
        coupons
            .create_campaign(create)
            .await
            .unwrap()
            .into_inner()
            .created
    );
    let mut codes = Vec::new();
    for user in ["ann", "bob"] {
        let answer = coupons
            .issue(IssueRequest {
                campaign_id: "live".into(),
                user_id: user.into(),
                request_id: format!("{user}-1"),
            })
            .await
            .unwrap()
            .into_inner();
        assert_eq!(answer.outcome, IssueOutcome::Issued as i32);
        codes.push(answer.coupon_code);
    }
    let issuances = ScyllaIssuanceStore::open(&scylla).await.expect("open");
    assert!(
        issuances.campaign("live").await.expect("read").is_some(),
        "the campaign is on the node"
    );
    let persisted = eventually(Duration::from_secs(30), || {
        let issuances = &issuances;
        async move { issuances.issuances("live").await.expect("read").len() == 2 }
    })
    .await;
    assert!(persisted, "both records reach the node");
    let records = issuances.issuances("live").await.expect("read");
    assert_eq!(
        records.iter().map(|r| r.code.clone()).collect::<Vec<_>>(),
        codes
    );
    mesh.stop().await.expect("stop");
}
