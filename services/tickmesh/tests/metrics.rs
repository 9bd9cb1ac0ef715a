//! The Prometheus endpoint (`metrics.listen`): a mesh with metrics on runs a
//! scripted workload against a real redis-server, `/metrics` is scraped over
//! HTTP before and after, and each counter and histogram must have moved by
//! exactly what the workload did. The recorder is global to the process, so
//! the tests compare deltas and run one at a time.

mod common;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::time::Duration;

use common::*;
use tickmesh_api::coupon::coupon_issue_service_client::CouponIssueServiceClient;
use tickmesh_api::coupon::{Campaign, CreateCampaignRequest, IssueOutcome, IssueRequest};
use tickmesh_api::marketfeed::{
    GetInstrumentRequest, PublishTradesRequest, StreamTradesRequest, Trade,
};
use tickmesh_api::queue::queue_service_client::QueueServiceClient;
use tickmesh_api::queue::{CreateRoomRequest, EnterRequest, Room};
use tickmesh_api::ranking::ranking_service_client::RankingServiceClient;
use tickmesh_api::ranking::{
    Board, Order, RecordEventRequest, RecordEventsRequest, ScoreOperator, UpsertBoardRequest,
    WindowKind,
};
use tickmesh_runtime::config::Config;
use tickmesh_runtime::proto_time::{nanos_to_timestamp, now_nanos};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tonic::Code;

/// One test at a time: they share the process's recorder.
static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// Users and members of the workload: none may appear in any label.
const USERS: &[&str] = &["metrics-user-ann", "metrics-user-bob", "metrics-user-cy"];

fn metrics_config(redis_url: &str) -> Config {
    let mut c = config(redis_url);
    c.metrics.listen = "127.0.0.1:0".into();
    c.metrics.symbols = vec!["MTRX".into()];
    c.coupon.store_path = temp_path("coupons.redb");
    c.coupon.persist_interval = Duration::from_millis(20);
    c.queue.admission_interval = Duration::from_millis(20);
    c.queue.token_key = "k1:0123456789abcdef0123456789abcdef".into();
    c
}

/// One scrape: the series (`name{label="value",...}`, labels sorted) and
/// their values, and the raw text.
struct Scrape {
    series: BTreeMap<String, f64>,
    text: String,
}

impl Scrape {
    /// The sum of the series of `name` whose labels include all of `labels`.
    fn value(&self, name: &str, labels: &[(&str, &str)]) -> f64 {
        self.series
            .iter()
            .filter(|(series, _)| {
                let (n, rest) = series.split_once('{').unwrap_or((series.as_str(), ""));
                n == name
                    && labels
                        .iter()
                        .all(|(k, v)| rest.contains(&format!("{k}=\"{v}\"")))
            })
            .map(|(_, v)| v)
            .sum()
    }

    fn has(&self, name: &str) -> bool {
        self.series
            .keys()
            .any(|s| s == name || s.starts_with(&format!("{name}{{")))
    }
}

async fn scrape(addr: SocketAddr) -> Scrape {
    let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    stream
        .write_all(b"GET /metrics HTTP/1.1\r\nHost: tickmesh\r\nConnection: close\r\n\r\n")
        .await
        .unwrap();
    let mut response = Vec::new();
    stream.read_to_end(&mut response).await.unwrap();
    let response = String::from_utf8(response).unwrap();
    let (head, body) = response.split_once("\r\n\r\n").unwrap();
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    assert!(
        head.to_ascii_lowercase()
            .contains("content-type: text/plain; version=0.0.4"),
        "{head}"
    );
    let mut series = BTreeMap::new();
    for line in body
        .lines()
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
    {
        let (name, value) = line.rsplit_once(' ').unwrap();
        let value: f64 = value.parse().unwrap_or_else(|_| panic!("{line}"));
        series.insert(normalize(name), value);
    }
    Scrape {
        series,
        text: body.to_string(),
    }
}

/// `name{b="2",a="1"}` → `name{a="1",b="2"}`.
fn normalize(series: &str) -> String {
    let Some((name, labels)) = series.split_once('{') else {
        return series.to_string();
    };
    let labels = labels.trim_end_matches('}');
    let mut parts: Vec<&str> = labels
        .split("\",")
        .map(|p| p.trim_end_matches('"'))
        .collect();
    parts.sort();
    let joined: Vec<String> = parts.iter().map(|p| format!("{p}\"")).collect();
    format!("{name}{{{}}}", joined.join(","))
}

/// Scrapes until `check` holds (scrape-time gauges and background workers
/// take a moment), returning the last scrape.
async fn scrape_until(addr: SocketAddr, what: &str, check: impl Fn(&Scrape) -> bool) -> Scrape {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(15);
    loop {
        let s = scrape(addr).await;
        if check(&s) {
            return s;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

fn rpc<'a>(method: &'a str, code: &'a str) -> [(&'a str, &'a str); 3] {
    [
        ("rpc_system", "grpc"),
        ("rpc_method", method),
        ("rpc_grpc_status_code", code),
    ]
}

const RPC: &str = "rpc_server_requests_total";
const RPC_COUNT: &str = "rpc_server_duration_seconds_count";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_scripted_workload_moves_each_metric_by_exactly_its_amount() {
    let _serial = SERIAL.lock().await;
    let redis = redis().await;
    let mesh = start(metrics_config(&redis.url())).await;
    let addr = mesh.metrics_addr.expect("metrics are on");
    let before = scrape(addr).await;
    let delta = |after: &Scrape, name: &str, labels: &[(&str, &str)]| {
        after.value(name, labels) - before.value(name, labels)
    };

    // MarketFeed: 10 accepted, then 3 of them again (duplicates) and one
    // with a price that is no number (rejected).
    let mut feed = client(&mesh).await;
    register(&mut feed, "MTRX", 2, 0).await;
    let first = publish(&mut feed, trades("MTRX", "m", 10)).await;
    assert_eq!(first.accepted, 10);
    let mut again = trades("MTRX", "m", 3);
    again.push(Trade {
        price: "lots".into(),
        ..trade("MTRX", "bad-1", "1", "1")
    });
    let second = publish(&mut feed, again).await;
    assert_eq!((second.duplicate, second.rejected), (3, 1));
    // Calls that fail with known codes: NOT_FOUND and INVALID_ARGUMENT.
    let missing = feed
        .get_instrument(GetInstrumentRequest {
            symbol: "NOPE".into(),
        })
        .await
        .unwrap_err();
    assert_eq!(missing.code(), Code::NotFound);
    let empty = feed
        .publish_trades(PublishTradesRequest {
            trades: vec![],
            all_or_nothing: false,
        })
        .await
        .unwrap_err();
    assert_eq!(empty.code(), Code::InvalidArgument);

    // A coupon campaign of 2: issued, already issued, issued, sold out.
    let mut coupon = CouponIssueServiceClient::connect(mesh.endpoint())
        .await
        .unwrap();
    let now = now_nanos();
    coupon
        .create_campaign(CreateCampaignRequest {
            campaign: Some(Campaign {
                id: "metrics-sale".into(),
                total_stock: 2,
                per_user_limit: 1,
                start_time: Some(nanos_to_timestamp(now - 1_000_000_000)),
                end_time: Some(nanos_to_timestamp(now + 3_600_000_000_000)),
                ..Default::default()
            }),
        })
        .await
        .unwrap();
    let mut outcomes = Vec::new();
    for (user, request) in [
        (USERS[0], "r1"),
        (USERS[0], "r2"),
        (USERS[1], "r3"),
        (USERS[2], "r4"),
    ] {
        let answer = coupon
            .issue(IssueRequest {
                campaign_id: "metrics-sale".into(),
                user_id: user.into(),
                request_id: request.into(),
            })
            .await
            .unwrap()
            .into_inner();
        outcomes.push(answer.outcome());
    }
    assert_eq!(
        outcomes,
        [
            IssueOutcome::Issued,
            IssueOutcome::AlreadyIssued,
            IssueOutcome::Issued,
            IssueOutcome::SoldOut
        ]
    );

    // Ranking: two events recorded, one sent twice (a duplicate).
    let mut ranking = RankingServiceClient::connect(mesh.endpoint())
        .await
        .unwrap();
    ranking
        .upsert_board(UpsertBoardRequest {
            board: Some(Board {
                id: "metrics-board".into(),
                order: Order::HigherFirst as i32,
                operator: ScoreOperator::Increment as i32,
                windows: vec![WindowKind::AllTime as i32],
                time_zone: "UTC".into(),
                ..Default::default()
            }),
        })
        .await
        .unwrap();
    let event = |member: &str, id: &str| RecordEventRequest {
        board_id: "metrics-board".into(),
        member: member.into(),
        delta: "5".into(),
        event_id: id.into(),
        ..Default::default()
    };
    let recorded = ranking
        .record_events(RecordEventsRequest {
            events: vec![
                event(USERS[0], "e1"),
                event(USERS[1], "e2"),
                event(USERS[0], "e1"),
            ],
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!((recorded.recorded, recorded.duplicate), (2, 1));

    // Queue: one room, one user in line (admitted by the next pass).
    let mut queue = QueueServiceClient::connect(mesh.endpoint()).await.unwrap();
    queue
        .create_room(CreateRoomRequest {
            room: Some(Room {
                id: "metrics-room".into(),
                capacity: 10,
                admissions_per_second: 50.0,
                session_duration: Some(prost_types::Duration {
                    seconds: 60,
                    nanos: 0,
                }),
                ..Default::default()
            }),
        })
        .await
        .unwrap();
    queue
        .enter(EnterRequest {
            room_id: "metrics-room".into(),
            user_id: USERS[2].into(),
        })
        .await
        .unwrap();

    // Background work lands: candles applied, the queue pass, issuances durable.
    let after = scrape_until(
        addr,
        "the aggregator, the queue and the persist worker",
        |s| {
            delta(s, "candles_trades_applied_total", &[]) >= 10.0
                && s.value("candles_aggregation_lag_trades", &[("symbol", "MTRX")]) == 0.0
                && s.has("candles_aggregation_lag_trades")
                && delta(s, "queue_admitted_total", &[]) >= 1.0
                && delta(s, "coupon_persisted_total", &[]) >= 2.0
                && s.value("coupon_persist_backlog_entries", &[]) == 0.0
                && s.has("coupon_persist_backlog_entries")
        },
    )
    .await;

    // MarketFeed counters.
    for (outcome, n) in [("accepted", 10.0), ("duplicate", 3.0), ("rejected", 1.0)] {
        assert_eq!(
            delta(&after, "marketfeed_trades_total", &[("outcome", outcome)]),
            n,
            "{outcome}"
        );
    }
    // RPCs by method and code, with one latency sample per unary call.
    for (method, code, n) in [
        ("UpsertInstrument", "0", 1.0),
        ("PublishTrades", "0", 2.0),
        ("PublishTrades", "3", 1.0),
        ("GetInstrument", "5", 1.0),
        ("Issue", "0", 4.0),
        ("CreateCampaign", "0", 1.0),
        ("RecordEvents", "0", 1.0),
        ("UpsertBoard", "0", 1.0),
        ("CreateRoom", "0", 1.0),
        ("Enter", "0", 1.0),
    ] {
        assert_eq!(delta(&after, RPC, &rpc(method, code)), n, "{method} {code}");
        assert_eq!(
            delta(&after, RPC_COUNT, &rpc(method, code)),
            n,
            "{method} {code} latency samples"
        );
        assert_eq!(
            delta(
                &after,
                "rpc_server_duration_seconds_bucket",
                &[
                    ("rpc_method", method),
                    ("rpc_grpc_status_code", code),
                    ("le", "+Inf")
                ]
            ),
            n,
            "{method} {code} +Inf bucket"
        );
    }
    // The service label is the full gRPC name.
    let not_found = [
        ("rpc_service", "tickmesh.marketfeed.v1.MarketFeedService"),
        ("rpc_method", "GetInstrument"),
        ("rpc_grpc_status_code", "5"),
    ];
    assert_eq!(delta(&after, RPC, &not_found), 1.0);
    // Coupons, ranking, queue.
    for (outcome, n) in [("issued", 2.0), ("already_issued", 1.0), ("sold_out", 1.0)] {
        assert_eq!(
            delta(&after, "coupon_issue_total", &[("outcome", outcome)]),
            n,
            "{outcome}"
        );
    }
    assert_eq!(delta(&after, "coupon_persisted_total", &[]), 2.0);
    for (outcome, n) in [("recorded", 2.0), ("duplicate", 1.0)] {
        assert_eq!(
            delta(&after, "ranking_events_total", &[("outcome", outcome)]),
            n,
            "{outcome}"
        );
    }
    assert_eq!(delta(&after, "queue_admitted_total", &[]), 1.0);
    assert_eq!(after.value("queue_rooms", &[]), 1.0);
    assert_eq!(
        after.value("queue_waiting_users", &[]) + after.value("queue_active_users", &[]),
        1.0
    );
    // Candles: every trade applied once; its ingest-to-candle time observed.
    assert_eq!(delta(&after, "candles_trades_applied_total", &[]), 10.0);
    assert!(delta(&after, "candles_ingest_to_candle_seconds_count", &[]) >= 1.0);
    assert_eq!(
        after.value("candles_aggregation_lag_seconds", &[("symbol", "MTRX")]),
        0.0
    );
    // The aggregator's own StreamTrades is a live stream.
    assert!(
        after.value(
            "rpc_server_active_streams",
            &[("rpc_method", "StreamTrades")]
        ) >= 1.0
    );
    // Redis commands were timed, by name.
    assert!(
        delta(
            &after,
            "redis_command_duration_seconds_count",
            &[("command", "EVALSHA")]
        ) > 0.0
    );
    assert!(
        after
            .series
            .keys()
            .filter(|s| s.starts_with("redis_command_duration_seconds_count{"))
            .all(|s| s.contains("command=\"")),
    );

    // Closed candles reach the history store.
    let flushed = scrape_until(addr, "the flusher", |s| {
        delta(s, "candles_flushed_total", &[]) > 0.0
            && s.value("candles_flush_last_success_timestamp_seconds", &[]) > 0.0
    })
    .await;
    assert!(
        delta(
            &flushed,
            "history_store_duration_seconds_count",
            &[("op", "upsert")]
        ) > 0.0
    );
    assert_eq!(delta(&flushed, "history_store_errors_total", &[]), 0.0);
    assert_eq!(delta(&flushed, "candles_flush_failures_total", &[]), 0.0);

    // No label carries a user (nor any other per-user value), and every
    // metric has its HELP line.
    for user in USERS {
        assert!(!flushed.text.contains(user), "{user} appears in /metrics");
    }
    for series in flushed.series.keys() {
        let labels = series.split_once('{').map(|(_, l)| l).unwrap_or("");
        assert!(!labels.contains("user"), "{series}");
    }
    for m in tickmesh_runtime::metrics::catalogue::CATALOGUE {
        if flushed.has(m.name) || flushed.has(&format!("{}_count", m.name)) {
            assert!(
                flushed.text.contains(&format!("# HELP {} ", m.name)),
                "{} has no HELP line",
                m.name
            );
        }
    }
    mesh.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn streams_are_counted_while_open_and_lagged_clients_while_caught_up() {
    let _serial = SERIAL.lock().await;
    let redis = redis().await;
    let mut cfg = metrics_config(&redis.url());
    cfg.services.enabled = vec!["marketfeed".into()];
    // A tiny live buffer, so a client that does not read certainly lags.
    cfg.marketfeed.live_buffer = 4;
    cfg.marketfeed.stream_batch_max = 50;
    let mesh = start(cfg).await;
    let addr = mesh.metrics_addr.expect("metrics are on");
    let mut p = client(&mesh).await;
    register(&mut p, "BTCUSDT", 2, 5).await;
    let before = scrape(addr).await;
    let live = |s: &Scrape| {
        (
            s.value(
                "rpc_server_active_streams",
                &[("rpc_method", "StreamTrades")],
            ),
            s.value("stream_subscribers", &[("stream", "trades")]),
        )
    };
    let (streams_before, subscribers_before) = live(&before);

    // A small HTTP/2 window, so not reading stalls the server quickly.
    let channel = tonic::transport::Endpoint::from_shared(mesh.endpoint())
        .unwrap()
        .initial_stream_window_size(65_535)
        .initial_connection_window_size(65_535)
        .connect()
        .await
        .unwrap();
    let mut c =
        tickmesh_api::marketfeed::market_feed_service_client::MarketFeedServiceClient::new(channel);
    let mut s = c
        .stream_trades(StreamTradesRequest {
            symbols: vec!["BTCUSDT".into()],
            from_sequence: None,
            cursors: vec![],
        })
        .await
        .unwrap()
        .into_inner();
    let open = scrape_until(addr, "the stream to be counted", |s| {
        live(s) == (streams_before + 1.0, subscribers_before + 1.0)
    })
    .await;
    assert_eq!(
        open.value("stream_followed_topics", &[("stream", "trades")]),
        1.0
    );

    let recoveries_before = mesh.marketfeed.as_ref().unwrap().lag_recoveries();
    for i in 0..200 {
        publish(&mut p, trades("BTCUSDT", &format!("b{i}-"), 100)).await;
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    let (got, gaps) = collect(&mut s, 20_000, Duration::from_secs(30)).await;
    assert_eq!((got.len(), gaps.len()), (20_000, 0));
    let lag = |s: &Scrape, name: &str| {
        s.value(name, &[("stream", "trades")]) - before.value(name, &[("stream", "trades")])
    };
    // The counters move after the catch-up's last send, a moment after the
    // client has its trades.
    let lagged = scrape_until(addr, "the catch-ups to be counted", |s| {
        lag(s, "stream_lagged_total") > 0.0
            && lag(s, "stream_caught_up_total") == lag(s, "stream_lagged_total")
    })
    .await;
    let recoveries = mesh.marketfeed.as_ref().unwrap().lag_recoveries() - recoveries_before;
    assert_eq!(lag(&lagged, "stream_lagged_total"), recoveries as f64);

    // The client leaves: the stream ends CANCELLED, its lifetime observed.
    drop(s);
    drop(c);
    let closed = scrape_until(addr, "the stream to end", |s| {
        live(s) == (streams_before, subscribers_before)
    })
    .await;
    let stream_labels = rpc("StreamTrades", "1");
    assert_eq!(
        closed.value(RPC, &stream_labels) - before.value(RPC, &stream_labels),
        1.0
    );
    assert_eq!(
        closed.value("rpc_server_stream_duration_seconds_count", &stream_labels)
            - before.value("rpc_server_stream_duration_seconds_count", &stream_labels),
        1.0
    );
    // Streams are not unary latency samples.
    assert_eq!(
        closed.value(RPC_COUNT, &[("rpc_method", "StreamTrades")]),
        0.0
    );
    mesh.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_failures_are_counted_by_command_and_kind() {
    if on_cluster() {
        eprintln!("skipped on a Redis Cluster: the test stops its single redis-server");
        return;
    }
    let _serial = SERIAL.lock().await;
    let mut redis = redis().await;
    let mut cfg = metrics_config(&redis.url());
    cfg.services.enabled = vec!["marketfeed".into()];
    let mesh = start(cfg).await;
    let addr = mesh.metrics_addr.expect("metrics are on");
    let mut feed = client(&mesh).await;
    register(&mut feed, "MTRX", 2, 0).await;
    let before = scrape(addr).await;
    redis.kill().await;
    let failed = feed
        .publish_trades(PublishTradesRequest {
            trades: trades("MTRX", "down", 1),
            all_or_nothing: false,
        })
        .await
        .unwrap_err();
    assert_eq!(failed.code(), Code::Unavailable);
    let after = scrape(addr).await;
    let errors = |s: &Scrape| s.value("redis_command_errors_total", &[]);
    assert!(errors(&after) > errors(&before), "redis errors counted");
    for series in after
        .series
        .keys()
        .filter(|s| s.starts_with("redis_command_errors_total{"))
    {
        assert!(
            ["io", "timeout", "server", "other"]
                .iter()
                .any(|k| series.contains(&format!("kind=\"{k}\""))),
            "{series}"
        );
    }
    assert_eq!(
        after.value(RPC, &rpc("PublishTrades", "14"))
            - before.value(RPC, &rpc("PublishTrades", "14")),
        1.0
    );
    mesh.abort();
}

#[tokio::test]
async fn metrics_are_off_unless_listen_is_set() {
    let redis = redis().await;
    let mesh = start(config(&redis.url())).await;
    assert_eq!(mesh.metrics_addr, None);
    mesh.stop().await.unwrap();
}

/// Every metric the Grafana dashboard queries is one tickmesh exports.
#[test]
fn the_dashboard_queries_only_exported_metrics() {
    use tickmesh_runtime::metrics::catalogue::{CATALOGUE, Kind};
    let path =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../deploy/grafana/tickmesh.json");
    let dashboard: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
    let families = [
        "rpc_",
        "redis_",
        "stream_",
        "marketfeed_",
        "candles_",
        "history_",
        "ranking_",
        "coupon_",
        "queue_",
        "feed_",
        "poller_",
        "tickmesh_",
    ];
    let exported = |name: &str| {
        CATALOGUE.iter().any(|m| {
            m.name == name
                || (m.kind == Kind::Histogram
                    && ["_bucket", "_count", "_sum"]
                        .iter()
                        .any(|suffix| name == format!("{}{suffix}", m.name)))
        })
    };
    let mut queried = 0;
    for panel in dashboard["panels"].as_array().unwrap() {
        for target in panel["targets"].as_array().into_iter().flatten() {
            let expr = target["expr"].as_str().unwrap();
            // A metric name is the identifier before a selector's `{`.
            for before in expr.split('{') {
                let token = before
                    .rsplit(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
                    .next()
                    .unwrap_or("");
                if families.iter().any(|f| token.starts_with(f)) {
                    assert!(
                        exported(token),
                        "the dashboard queries {token}, which is not exported"
                    );
                    queried += 1;
                }
            }
        }
    }
    assert!(queried > 20);
}
