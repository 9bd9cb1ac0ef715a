//! `history.backend = "scylla"` wiring: every service whose store lives in
//! ScyllaDB connects at start, and a cluster that cannot be reached stops
//! the start at once with an error naming the contact points. (No ScyllaDB
//! runs on the build machines; the stores themselves are tested in
//! tickmesh-scylla, against a live node when TICKMESH_TEST_SCYLLA
//! is set.)

mod common;

use std::time::{Duration, Instant};

use common::*;
use tickmesh::mesh::{Mesh, scylla_needed};
use tickmesh_runtime::config::Config;
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
