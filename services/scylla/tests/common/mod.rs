//! The live CQL node of the ScyllaDB tests: `TICKMESH_TEST_SCYLLA=host:port`
//! names it (`deploy/test.sh` starts one, Apache Cassandra 3.11, and sets
//! it), with `TICKMESH_TEST_SCYLLA_USERNAME` / `_PASSWORD` when the node
//! checks passwords. Without it the tests skip with a message, unless
//! `TICKMESH_TEST_REQUIRE_SCYLLA` is set (as in `deploy/test.sh`): then a
//! missing node fails them.
#![allow(dead_code)]

use std::future::Future;
use std::io::Write;
use std::time::{SystemTime, UNIX_EPOCH};

use tickmesh_scylla::{ScyllaConfig, ScyllaSession, TABLES, apply_schema};

/// A fresh keyspace name on the live node, or `None` after printing why
/// `suite` is skipped.
pub fn live_config(suite: &str) -> Option<ScyllaConfig> {
    let Some(node) = std::env::var("TICKMESH_TEST_SCYLLA")
        .ok()
        .filter(|v| !v.trim().is_empty())
    else {
        assert!(
            std::env::var_os("TICKMESH_TEST_REQUIRE_SCYLLA").is_none(),
            "TICKMESH_TEST_REQUIRE_SCYLLA is set but TICKMESH_TEST_SCYLLA names no node: \
             the scylla {suite} tests must run here"
        );
        // Straight to stderr: the test harness captures print!/eprint!, and
        // a skip must be visible in a normal `cargo test` run.
        let _ = writeln!(
            std::io::stderr(),
            "SKIPPED scylla {suite} tests: set TICKMESH_TEST_SCYLLA=host:9042 to run them \
             against a live node"
        );
        return None;
    };
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("clock")
        .subsec_nanos();
    let env = |name: &str| std::env::var(name).ok().filter(|v| !v.is_empty());
    Some(ScyllaConfig {
        contact_points: vec![node.trim().to_string()],
        keyspace: format!("tickmesh_test_{suite}_{}_{nanos}", std::process::id()),
        replication: "'class': 'SimpleStrategy', 'replication_factor': 1".to_string(),
        username: env("TICKMESH_TEST_SCYLLA_USERNAME"),
        password: env("TICKMESH_TEST_SCYLLA_PASSWORD"),
        ..ScyllaConfig::default()
    })
}

/// Applies the schema (twice: the second run must be harmless), runs
/// `suite` on a session in a task of its own, then drops the keyspace and
/// re-raises the suite's panic, if any.
pub async fn with_keyspace<F, Fut>(config: ScyllaConfig, suite: F)
where
    F: FnOnce(ScyllaSession) -> Fut,
    Fut: Future<Output = ()> + Send + 'static,
{
    let statements = 1 + TABLES.len();
    assert_eq!(
        apply_schema(&config).await.expect("apply schema"),
        statements
    );
    assert_eq!(
        apply_schema(&config).await.expect("apply schema again"),
        statements,
        "applying twice is harmless"
    );
    let session = ScyllaSession::connect(&config).await.expect("connect");
    let outcome = tokio::spawn(suite(session.clone())).await;
    session
        .session()
        .query_unpaged(format!("DROP KEYSPACE IF EXISTS {}", config.keyspace), &[])
        .await
        .expect("drop the test keyspace");
    if let Err(e) = outcome {
        std::panic::resume_unwind(e.into_panic());
    }
}
