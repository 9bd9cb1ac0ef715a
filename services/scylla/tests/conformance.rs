//! The shared conformance suites against a live CQL node (ScyllaDB, or the
//! Apache Cassandra 3.11 node `deploy/test.sh` starts), run when
//! `TICKMESH_TEST_SCYLLA=host:port` names one (see `common`): the candle suite
//! (`tickmesh_history::conformance`), the ranking snapshot suite
//! (`tickmesh_ranking::snapshot_conformance`) and the coupon issuance suite
//! (`tickmesh_coupon::conformance`). Each test applies the schema to a
//! keyspace of its own and drops it at the end, even when a check fails.

mod common;

use std::sync::Arc;

use common::{live_config, with_keyspace};
use tickmesh_coupon::IssuanceStore;
use tickmesh_history::CandleStore;
use tickmesh_scylla::{ScyllaIssuanceStore, ScyllaSnapshotStore, ScyllaStore};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scylla_passes_the_candle_conformance_suite() {
    let Some(config) = live_config("candle") else {
        return;
    };
    with_keyspace(config.clone(), |_| async move {
        // The store's own connect: a session of its own, the schema checked.
        let store = ScyllaStore::connect(&config).await.expect("connect");
        assert_eq!(store.name(), "scylla");
        tickmesh_history::conformance::run_all(&store).await;
        let size = store.size_on_disk().await.expect("size");
        assert!(size > 0, "size_on_disk counts the written blocks");
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scylla_passes_the_ranking_snapshot_conformance_suite() {
    let Some(config) = live_config("ranking") else {
        return;
    };
    with_keyspace(config, |session| async move {
        let store = ScyllaSnapshotStore::open(&session).await.expect("open");
        tickmesh_ranking::snapshot_conformance::run(Arc::new(store)).await;
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scylla_passes_the_coupon_conformance_suite() {
    let Some(config) = live_config("coupon") else {
        return;
    };
    with_keyspace(config, |session| async move {
        let store = Arc::new(ScyllaIssuanceStore::open(&session).await.expect("open"));
        tickmesh_coupon::conformance::run(store.clone()).await;
        // A second instance on another session sees the same records.
        let other = ScyllaIssuanceStore::connect(session.config())
            .await
            .expect("connect");
        assert_eq!(
            other.issuances("c-a").await.expect("read"),
            store.issuances("c-a").await.expect("read")
        );
    })
    .await;
}
