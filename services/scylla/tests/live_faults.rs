//! Start-up faults against the live CQL node (see `common`): the schema
//! applied twice leaves the server's idea of it unchanged and follows the
//! detected features; a keyspace without the schema, tables of another
//! schema version, wrong or missing credentials each stop the start with an
//! error that says what is wrong.

mod common;

use std::time::Duration;

use common::{live_config, with_keyspace};
use tickmesh_scylla::{
    ScyllaConfig, ScyllaSession, ScyllaStore, ServerFeatures, TABLES, apply_schema,
};

/// The start-up error of `config` (connect must fail).
async fn connect_error(config: &ScyllaConfig) -> String {
    match tokio::time::timeout(Duration::from_secs(60), ScyllaSession::connect(config))
        .await
        .expect("fails within a minute, does not hang")
    {
        Ok(_) => panic!("connected with {config:?}"),
        Err(e) => {
            eprintln!("start-up error: {e}");
            e.to_string()
        }
    }
}

/// `(table, compression class)` of every table of the keyspace, sorted.
async fn compression(session: &ScyllaSession, keyspace: &str) -> Vec<(String, String)> {
    let rows = session
        .session()
        .query_unpaged(
            "SELECT table_name, compression FROM system_schema.tables WHERE keyspace_name = ?",
            (keyspace,),
        )
        .await
        .expect("system_schema.tables")
        .into_rows_result()
        .expect("rows");
    let mut out: Vec<(String, String)> = rows
        .rows::<(String, std::collections::HashMap<String, String>)>()
        .expect("typed")
        .map(|r| {
            let (table, options) = r.expect("row");
            (table, options.get("class").cloned().unwrap_or_default())
        })
        .collect();
    out.sort();
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_schema_follows_the_detected_server_and_applies_twice() {
    let Some(config) = live_config("schema") else {
        return;
    };
    let keyspace = config.keyspace.clone();
    with_keyspace(config.clone(), move |session| async move {
        let release: (String,) = session
            .session()
            .query_unpaged(
                "SELECT release_version FROM system.local WHERE key = 'local'",
                &[],
            )
            .await
            .expect("system.local")
            .into_rows_result()
            .expect("rows")
            .single_row()
            .expect("one row");
        let features = session.server_features().await.expect("features");
        let scylla = release.0 == "3.0.8";
        eprintln!("live node: release_version {} -> {features:?}", release.0);
        if !scylla && release.0.starts_with("3.") {
            // Apache Cassandra 3.x: neither tablets nor zstd.
            assert_eq!(features, ServerFeatures::default(), "{}", release.0);
        }
        let before = compression(&session, &keyspace).await;
        assert_eq!(before.len(), TABLES.len(), "{before:?}");
        let want = if features.zstd {
            "Zstd"
        } else {
            "LZ4Compressor"
        };
        for (table, class) in &before {
            assert!(class.contains(want), "{table}: {class}");
        }
        // A third apply, on a live keyspace with a store open: nothing changes.
        let store = ScyllaStore::open(&session).await.expect("open");
        assert_eq!(
            apply_schema(&config).await.expect("again"),
            1 + TABLES.len()
        );
        assert_eq!(compression(&session, &keyspace).await, before);
        drop(store);
        ScyllaSession::connect(&config)
            .await
            .expect("the version check still passes");
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_keyspace_without_the_schema_or_of_another_version_is_a_clear_start_error() {
    let Some(config) = live_config("faults") else {
        return;
    };
    // Nothing applied: the keyspace does not exist.
    let text = connect_error(&config).await;
    assert!(
        text.contains(&format!(
            "table {}.candle_blocks does not exist",
            config.keyspace
        )) && text.contains("apply deploy/scylla/schema.cql first"),
        "{text}"
    );
    // Every store's own connect says the same.
    let text = ScyllaStore::connect(&config)
        .await
        .err()
        .expect("no schema")
        .to_string();
    assert!(text.contains("does not exist"), "{text}");

    // A table of another schema version.
    let keyspace = config.keyspace.clone();
    let other = config.clone();
    with_keyspace(config, move |session| async move {
        session
            .session()
            .query_unpaged(
                format!(
                    "ALTER TABLE {keyspace}.coupon_issuances \
                     WITH comment = 'tickmesh schema_version=2: from the future'"
                ),
                &[],
            )
            .await
            .expect("alter the comment");
        session
            .session()
            .await_schema_agreement()
            .await
            .expect("agreement");
        let text = connect_error(&other).await;
        assert!(
            text.contains(&format!(
                "table {keyspace}.coupon_issuances is not at schema version 1"
            )) && text.contains("tickmesh schema_version=2"),
            "{text}"
        );
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wrong_or_missing_credentials_are_a_clear_start_error() {
    let Some(config) = live_config("credentials") else {
        return;
    };
    if config.username.is_none() {
        eprintln!(
            "SKIPPED scylla credential test: the node does not check passwords \
             (no TICKMESH_TEST_SCYLLA_USERNAME)"
        );
        return;
    }
    let node = config.contact_points[0].clone();
    let wrong = ScyllaConfig {
        password: Some("not-the-password".into()),
        ..config.clone()
    };
    for text in [
        connect_error(&wrong).await,
        apply_schema(&wrong).await.expect_err("wrong").to_string(),
    ] {
        assert!(
            text.contains("cannot connect to ScyllaDB at") && text.contains(&node),
            "names the contact points: {text}"
        );
        assert!(
            text.to_lowercase().contains("password") || text.contains("credentials"),
            "says the credentials are wrong: {text}"
        );
        assert!(
            !text.contains("not-the-password"),
            "never prints the password: {text}"
        );
    }
    let missing = ScyllaConfig {
        username: None,
        password: None,
        ..config
    };
    let text = connect_error(&missing).await;
    assert!(
        text.contains("cannot connect to ScyllaDB at") && text.contains(&node),
        "{text}"
    );
    assert!(
        text.to_lowercase().contains("auth"),
        "says the node wants credentials: {text}"
    );
}
