//! Redis over TLS, on a single node and on a Redis Cluster: real
//! `redis-server`s that listen on a TLS port only (`--port 0`), with a
//! throwaway private CA, client certificates required
//! (`tls-auth-clients yes`) and an ACL user instead of the default one.

mod common;

use std::collections::BTreeSet;
use std::time::Duration;

use common::*;
use tickmesh::mesh::Mesh;
use tickmesh_api::marketfeed::{GetQuotesRequest, StreamTradesRequest};
use tickmesh_runtime::config::Config;
use tickmesh_runtime::redis_cluster::key_slot;
use tickmesh_runtime::redis_server::{ServerOptions, ServerTls};
use tickmesh_runtime::test_certs::TestCerts;

const USER: &str = "tickmesh";
const PASSWORD: &str = "tls-test-password";

/// TLS only, client certificates required, every client AUTHs as [`USER`].
fn locked_down(certs: &TestCerts) -> ServerOptions {
    ServerOptions {
        tls: Some(ServerTls::from_certs(certs, true)),
        user: Some((USER.into(), PASSWORD.into())),
        default_user_off: true,
    }
}

/// `rediss://127.0.0.1:p` as `rediss://USER:PASSWORD@127.0.0.1:p`.
fn with_user(url: &str) -> String {
    url.replacen("://", &format!("://{USER}:{PASSWORD}@"), 1)
}

/// A test config that trusts `certs`' CA and presents its client certificate.
fn tls_config(redis_url: &str, certs: &TestCerts) -> Config {
    let mut c = config(redis_url);
    c.redis.tls_ca_file = certs.ca_file().display().to_string();
    c.redis.tls_cert_file = certs.client_cert_file().display().to_string();
    c.redis.tls_key_file = certs.client_key_file().display().to_string();
    c
}

/// Publishes `per_symbol` trades of each symbol through the mesh and reads
/// them back: the latest quote of each, and every trade from sequence 1.
async fn publish_and_read_back(mesh: &Mesh, symbols: &[&str], per_symbol: usize) {
    let mut c = client(mesh).await;
    for symbol in symbols {
        register(&mut c, symbol, 2, 5).await;
    }
    let batch: Vec<_> = symbols
        .iter()
        .flat_map(|s| trades(s, "t", per_symbol))
        .collect();
    let published = publish(&mut c, batch).await;
    assert_eq!(
        published.accepted as usize,
        symbols.len() * per_symbol,
        "{published:?}"
    );

    let quotes = c
        .get_quotes(GetQuotesRequest {
            symbols: symbols.iter().map(|s| s.to_string()).collect(),
            stale_after: None,
        })
        .await
        .expect("GetQuotes")
        .into_inner();
    let quoted: BTreeSet<String> = quotes.quotes.iter().map(|q| q.symbol.clone()).collect();
    assert_eq!(
        quoted,
        symbols
            .iter()
            .map(|s| s.to_string())
            .collect::<BTreeSet<_>>()
    );

    let mut stream = c
        .stream_trades(StreamTradesRequest {
            symbols: symbols.iter().map(|s| s.to_string()).collect(),
            from_sequence: Some(1),
            cursors: vec![],
        })
        .await
        .expect("StreamTrades")
        .into_inner();
    let (got, gaps) = collect(
        &mut stream,
        symbols.len() * per_symbol,
        Duration::from_secs(5),
    )
    .await;
    assert!(gaps.is_empty(), "{gaps:?}");
    assert_eq!(got.len(), symbols.len() * per_symbol);
    for symbol in symbols {
        let ids: Vec<&str> = got
            .iter()
            .filter(|t| t.symbol == *symbol)
            .map(|t| t.trade_id.as_str())
            .collect();
        let expected: Vec<String> = (0..per_symbol).map(|i| format!("t{i}")).collect();
        assert_eq!(ids, expected, "{symbol}: in sequence order");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_mesh_on_a_tls_only_redis_with_a_private_ca_and_an_acl_user() {
    let certs = TestCerts::generate().await.expect("a test CA (openssl)");
    let server = RedisServer::start_ephemeral_with(locked_down(&certs))
        .await
        .expect("redis-server with TLS (apt-get install -y redis-server)");

    // The server has no plain-TCP listener, and its TLS port does not
    // answer a client that speaks plain TCP.
    let mut admin = server
        .client()
        .unwrap()
        .get_multiplexed_async_connection()
        .await
        .expect("the harness's own TLS connection");
    let port: Vec<String> = redis::cmd("CONFIG")
        .arg("GET")
        .arg("port")
        .query_async(&mut admin)
        .await
        .unwrap();
    assert_eq!(port, ["port", "0"]);
    let plain =
        redis::Client::open(with_user(&format!("redis://127.0.0.1:{}", server.port()))).unwrap();
    let attempt = tokio::time::timeout(Duration::from_secs(2), async {
        let mut conn = plain.get_multiplexed_async_connection().await?;
        redis::cmd("PING").query_async::<String>(&mut conn).await
    })
    .await;
    assert!(
        !matches!(attempt, Ok(Ok(_))),
        "plain TCP reached the TLS port: {attempt:?}"
    );

    let config = tls_config(&with_user(&server.url()), &certs);
    config.validate().expect("the TLS settings are valid");
    let mesh = start(config).await;
    publish_and_read_back(&mesh, &["BTCUSDT", "ETHUSDT"], 3).await;

    // Every connection the mesh holds is the ACL user's (the default user
    // is off: nothing else could have worked). One that has sent no command
    // yet (`cmd=NULL`: a connection being opened, before its AUTH) counts
    // as the default user's for a moment.
    let clients: String = redis::cmd("CLIENT")
        .arg("LIST")
        .query_async(&mut admin)
        .await
        .unwrap();
    let working: Vec<&str> = clients
        .lines()
        .filter(|l| !l.contains(" cmd=NULL "))
        .collect();
    assert!(working.len() > 1, "{clients}");
    assert!(
        working.iter().all(|l| l.contains(&format!("user={USER} "))),
        "{clients}"
    );
    mesh.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_mesh_on_a_tls_redis_cluster_publishes_and_reads_across_slots() {
    let certs = TestCerts::generate().await.expect("a test CA (openssl)");
    // tls-cluster and tls-replication: the bus and the replicas speak TLS too.
    let cluster = RedisCluster::start_with(3, 1, Duration::from_millis(1000), locked_down(&certs))
        .await
        .expect("a local Redis Cluster over TLS (apt-get install -y redis-server)");

    let symbols = [
        "BTCUSDT", "ETHUSDT", "SOLUSDT", "XRPUSDT", "ADAUSDT", "DOGEUSDT",
    ];
    let mut masters = BTreeSet::new();
    for symbol in symbols {
        masters.insert(
            cluster
                .master_of(&format!("{{{symbol}}}"))
                .await
                .unwrap()
                .port,
        );
    }
    assert!(
        masters.len() >= 2,
        "the symbols' slots {:?} should span masters",
        symbols.map(|s| key_slot(format!("{{{s}}}")))
    );

    // Seeds as `redis.cluster_nodes`, credentials in each.
    let mut config = tls_config("redis://unused:1", &certs);
    config.redis.cluster_nodes = cluster.urls().iter().map(|u| with_user(u)).collect();
    config.validate().expect("the TLS settings are valid");
    let mesh = start(config).await;
    publish_and_read_back(&mesh, &symbols, 4).await;

    // The `rediss+cluster://user:password@h1:p1,…` form reaches it too.
    let mut config = tls_config(&with_user(&cluster.url()), &certs);
    config.redis.key_prefix = "tm2".into();
    config.validate().expect("the TLS settings are valid");
    let second = start(config).await;
    let mut c = client(&second).await;
    register(&mut c, "BTCUSDT", 2, 5).await;
    assert_eq!(publish(&mut c, trades("BTCUSDT", "u", 2)).await.accepted, 2);
    second.stop().await.unwrap();
    mesh.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_tls_handshake_stops_the_start_naming_tls_and_the_server() {
    let certs = TestCerts::generate().await.expect("a test CA (openssl)");
    let other = TestCerts::generate().await.expect("another CA");
    let server = RedisServer::start_ephemeral_with(locked_down(&certs))
        .await
        .expect("redis-server with TLS");
    let url = with_user(&server.url());
    let addr = format!("rediss://127.0.0.1:{}", server.port());

    async fn start_error(config: Config) -> String {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let started = tokio::time::Instant::now();
        let result = Mesh::start_on(config, listener).await;
        assert!(
            started.elapsed() < Duration::from_secs(5),
            "failing took {:?}",
            started.elapsed()
        );
        match result {
            Ok(mesh) => {
                mesh.abort();
                panic!("the mesh started");
            }
            Err(e) => {
                eprintln!("the start failed as it should: {e:#}");
                format!("{e:#}")
            }
        }
    }

    // A CA that did not sign the server's certificate.
    let mut wrong_ca = tls_config(&url, &certs);
    wrong_ca.redis.tls_ca_file = other.ca_file().display().to_string();
    let e = start_error(wrong_ca).await;
    assert!(
        e.contains("TLS") && e.contains(&addr) && e.contains("redis.tls_ca_file"),
        "{e}"
    );
    assert!(!e.contains(PASSWORD), "{e}");

    // The right CA, but no client certificate for `tls-auth-clients yes`.
    let mut no_client_cert = tls_config(&url, &certs);
    no_client_cert.redis.tls_cert_file.clear();
    no_client_cert.redis.tls_key_file.clear();
    let e = start_error(no_client_cert).await;
    assert!(
        e.contains("TLS") && e.contains(&addr) && e.contains("redis.tls_cert_file"),
        "{e}"
    );

    // A server that is down is not a TLS failure: the mesh starts and waits.
    let mut down = tls_config("rediss://127.0.0.1:1", &certs);
    down.redis.connect_timeout = Duration::from_millis(200);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    Mesh::start_on(down, listener)
        .await
        .expect("starts while Redis is down")
        .stop()
        .await
        .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn credentials_redis_refuses_stop_the_start_naming_the_server() {
    // Plain TCP, every client AUTHs as USER.
    let server = RedisServer::start_ephemeral_with(ServerOptions {
        tls: None,
        user: Some((USER.into(), PASSWORD.into())),
        default_user_off: true,
    })
    .await
    .expect("redis-server with an ACL user");
    let addr = format!("127.0.0.1:{}", server.port());
    for (url, says) in [
        (
            format!("redis://{USER}:not-the-password@{addr}"),
            "authentication failed",
        ),
        (format!("redis://{addr}"), "NOAUTH"),
    ] {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let e = match Mesh::start_on(config(&url), listener).await {
            Ok(mesh) => {
                mesh.abort();
                panic!("the mesh started with {url}");
            }
            Err(e) => format!("{e:#}"),
        };
        assert!(
            e.contains("refused this process's credentials")
                && e.contains(says)
                && e.contains(&addr)
                && e.contains("redis.url"),
            "{e}"
        );
        assert!(!e.contains("not-the-password"), "{e}");
    }
    // The right ones: it starts and works.
    let mesh = start(config(&format!("redis://{USER}:{PASSWORD}@{addr}"))).await;
    let mut c = client(&mesh).await;
    register(&mut c, "AUTHUSDT", 2, 3).await;
    assert_eq!(
        publish(&mut c, trades("AUTHUSDT", "a", 2)).await.accepted,
        2
    );
    mesh.stop().await.unwrap();
}
