//! The shared `CandleStore` conformance suite against a live ScyllaDB node,
//! run only when `TICKMESH_TEST_SCYLLA=host:port` names one.

use std::io::Write;
use std::time::{SystemTime, UNIX_EPOCH};

use tickmesh_history::CandleStore;
use tickmesh_history_scylla::{ScyllaConfig, ScyllaStore, apply_schema};

const SKIPPED: &str =
    "SKIPPED scylla conformance: set TICKMESH_TEST_SCYLLA=host:9042 to run it against a live node";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scylla_passes_the_conformance_suite() {
    let Some(node) = std::env::var("TICKMESH_TEST_SCYLLA")
        .ok()
        .filter(|v| !v.trim().is_empty())
    else {
        // Straight to stderr: the test harness captures print!/eprint!, and
        // a skip must be visible in a normal `cargo test` run.
        let _ = writeln!(std::io::stderr(), "{SKIPPED}");
        return;
    };
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("clock")
        .subsec_nanos();
    let config = ScyllaConfig {
        contact_points: vec![node.trim().to_string()],
        keyspace: format!("tickmesh_test_{}_{nanos}", std::process::id()),
        replication: "'class': 'SimpleStrategy', 'replication_factor': 1".to_string(),
        ..ScyllaConfig::default()
    };
    assert_eq!(apply_schema(&config).await.expect("apply schema"), 3);
    assert_eq!(
        apply_schema(&config).await.expect("apply schema again"),
        3,
        "applying twice is harmless"
    );
    let store = ScyllaStore::connect(&config).await.expect("connect");
    assert_eq!(store.name(), "scylla");
    // Drop the keyspace even when a check panics.
    let outcome = tokio::spawn({
        let config = config.clone();
        async move {
            let store = ScyllaStore::connect(&config).await.expect("connect");
            tickmesh_history::conformance::run_all(&store).await;
            store.size_on_disk().await.expect("size")
        }
    })
    .await;
    store
        .session()
        .query_unpaged(format!("DROP KEYSPACE IF EXISTS {}", config.keyspace), &[])
        .await
        .expect("drop the test keyspace");
    match outcome {
        Ok(size) => assert!(size > 0, "size_on_disk counts the written blocks"),
        Err(e) => std::panic::resume_unwind(e.into_panic()),
    }
}
