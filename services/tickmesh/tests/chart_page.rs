//! The chart page in a real browser: Debian's chromium driven by npm
//! playwright-core (`chart_page.mjs`) against an in-process mesh with
//! `server.chart` on and a real redis-server. It checks that the page's
//! protobuf codec matches prost byte for byte, that twelve hours of 1m
//! candles are drawn and paged in as the chart is dragged left (exactly the
//! candles GetCandles has), that a trade published over native gRPC moves
//! the live candle within a second of its acknowledgement, that the page
//! resumes its stream with the cursor after the mesh restarts, and that the
//! screenshot shows candles of both colours.
//!
//! Needs `node`, chromium (`TICKMESH_TEST_CHROMIUM`, default
//! /usr/bin/chromium) and playwright-core (`TICKMESH_TEST_NODE_MODULES`,
//! default deploy/.tools/npm/node_modules); `./deploy/test.sh` installs them
//! and sets `TICKMESH_TEST_REQUIRE_BROWSER`, without which the test skips
//! when they are missing. `TICKMESH_CHART_SCREENSHOT=path` keeps the
//! screenshot there (the README's is `services/chart/docs/chart.png`).

mod common;

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use common::*;
use prost::Message;
use prost_types::Timestamp;
use serde_json::{Value, json};
use tickmesh::demo_feed::{Walk, demo_symbols};
use tickmesh::mesh::Mesh;
use tickmesh_api::candles::candle_query_service_client::CandleQueryServiceClient;
use tickmesh_api::candles::{
    Candle, CandleOrder, GetCandlesRequest, GetCandlesResponse, SubscribeCandlesRequest,
    SubscribeCandlesResponse,
};
use tickmesh_api::marketfeed::{
    Instrument, ListInstrumentsRequest, ListInstrumentsResponse, Trade, TradingSession,
};
use tickmesh_core::decimal::format_units;
use tickmesh_runtime::proto_time::{nanos_to_timestamp, now_nanos};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader, Lines};
use tokio::net::TcpListener;
use tokio::process::{Child, ChildStdin, ChildStdout, Command};

/// Minutes of history the test publishes (one 1m candle each).
const HISTORY_MINUTES: i64 = 720;
const TRADES_PER_MINUTE: i64 = 6;
/// Candles per GetCandles page the page asks for: several pages to scroll through.
const PAGE_SIZE: usize = 100;
/// Live trades whose latency (acknowledgement to the page's state) is measured.
const LATENCY_SAMPLES: i64 = 3;

/// What drives the browser: node, chromium, and the directory holding playwright-core.
struct Tools {
    node: PathBuf,
    chromium: PathBuf,
    node_modules: PathBuf,
}

fn find_tools() -> Result<Tools, String> {
    let on_path = |name: &str| {
        std::env::var_os("PATH").and_then(|paths| {
            std::env::split_paths(&paths)
                .map(|p| p.join(name))
                .find(|p| p.is_file())
        })
    };
    let node = on_path("node").ok_or("node not found (apt-get install -y nodejs)")?;
    let chromium = std::env::var_os("TICKMESH_TEST_CHROMIUM")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/usr/bin/chromium"));
    if !chromium.is_file() {
        return Err(format!(
            "{} not found (apt-get install -y chromium)",
            chromium.display()
        ));
    }
    let node_modules = std::env::var_os("TICKMESH_TEST_NODE_MODULES")
        .map(PathBuf::from)
        .unwrap_or_else(|| repo_root().join("deploy/.tools/npm/node_modules"));
    if !node_modules.join("playwright-core/package.json").is_file() {
        return Err(format!(
            "playwright-core not found in {} (npm install --prefix deploy/.tools/npm playwright-core)",
            node_modules.display()
        ));
    }
    Ok(Tools {
        node,
        chromium,
        node_modules,
    })
}

/// The tools, or a skip (a failure when ./deploy/test.sh requires them).
fn tools_or_skip(test: &str) -> Option<Tools> {
    match find_tools() {
        Ok(tools) => Some(tools),
        Err(missing) if std::env::var_os("TICKMESH_TEST_REQUIRE_BROWSER").is_some() => {
            panic!("the browser test must run here: {missing}")
        }
        Err(missing) => {
            eprintln!("SKIPPED {test}: {missing} (./deploy/test.sh installs what it needs)");
            None
        }
    }
}

fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// `chart_page.mjs` running: commands in, events out, one JSON line each.
struct Browser {
    child: Child,
    stdin: ChildStdin,
    events: Lines<BufReader<ChildStdout>>,
}

impl Browser {
    fn start(tools: &Tools, url: &str, fixtures: &Path, screenshot: &Path) -> Browser {
        let mut child = Command::new(&tools.node)
            .arg(Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/chart_page.mjs"))
            .env("CHART_URL", url)
            .env("CHROMIUM", &tools.chromium)
            .env("NODE_MODULES", &tools.node_modules)
            .env("FIXTURES", fixtures)
            .env("SCREENSHOT", screenshot)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .kill_on_drop(true)
            .spawn()
            .expect("start node");
        let stdin = child.stdin.take().unwrap();
        let events = BufReader::new(child.stdout.take().unwrap()).lines();
        Browser {
            child,
            stdin,
            events,
        }
    }

    async fn send(&mut self, command: Value) {
        let line = format!("{command}\n");
        self.stdin.write_all(line.as_bytes()).await.unwrap();
        self.stdin.flush().await.unwrap();
    }

    /// The next event, which must be `name`.
    async fn expect(&mut self, name: &str, within: Duration) -> Value {
        let deadline = Instant::now() + within;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let line = tokio::time::timeout(left, self.events.next_line())
                .await
                .unwrap_or_else(|_| panic!("no {name:?} from the browser within {within:?}"))
                .unwrap();
            let Some(line) = line else {
                let status = self.child.wait().await.unwrap();
                panic!("the browser script ended ({status}) before {name:?}");
            };
            let Ok(event) = serde_json::from_str::<Value>(&line) else {
                eprintln!("browser: {line}");
                continue;
            };
            match event["event"].as_str() {
                Some(n) if n == name => return event,
                Some("error") => panic!("the browser script failed: {}", event["message"]),
                _ => panic!("expected {name:?} from the browser, got {event}"),
            }
        }
    }
}

fn unix_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64
}

/// Twelve hours of BTCUSDT trades (the demo feed's random walk), one
/// minute after another, ending two minutes ago; and the walk, to go on.
fn history() -> (Vec<Trade>, Walk) {
    let btc = demo_symbols()
        .into_iter()
        .find(|s| s.instrument.symbol == "BTCUSDT")
        .unwrap();
    let mut walk = Walk::new(&btc, 7);
    let minute = 60_000_000_000i64;
    let this_minute = now_nanos() / minute * minute;
    let mut trades = Vec::new();
    for m in 0..HISTORY_MINUTES {
        let open = this_minute - (HISTORY_MINUTES + 1 - m) * minute;
        for k in 0..TRADES_PER_MINUTE {
            let time = open + k * (minute / TRADES_PER_MINUTE) + 1_000_000;
            trades.push(walk.next_trade(format!("h{m}-{k}"), time));
        }
    }
    (trades, walk)
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Messages encoded by prost, for the page's codec: requests it must encode
/// to the same bytes, responses it must decode to the given objects.
fn codec_fixtures() -> Value {
    let ts = |seconds, nanos| Some(Timestamp { seconds, nanos });
    let full = Candle {
        symbol: "BTCUSDT".into(),
        interval: "1m".into(),
        open_time: ts(1_767_225_600, 0),
        close_time: ts(1_767_225_660, 0),
        open: "67000.10".into(),
        high: "67100.00".into(),
        low: "66900.5".into(),
        close: "67050.25".into(),
        volume: "12.34567".into(),
        quote_volume: "827654.3210".into(),
        trade_count: 123_456_789_012,
        closed: true,
        revision: (1 << 40) + 3,
        indicators: Vec::new(),
    };
    let full_json = json!({
        "symbol": "BTCUSDT", "interval": "1m",
        "openTime": {"seconds": 1_767_225_600, "nanos": 0},
        "closeTime": {"seconds": 1_767_225_660, "nanos": 0},
        "open": "67000.10", "high": "67100.00", "low": "66900.5", "close": "67050.25",
        "volume": "12.34567", "quoteVolume": "827654.3210",
        "tradeCount": 123_456_789_012u64, "closed": true, "revision": (1u64 << 40) + 3,
    });
    let sparse = Candle {
        symbol: "X".into(),
        open_time: ts(-1, 999_999_999),
        ..Default::default()
    };
    let sparse_json = json!({
        "symbol": "X", "interval": "", "openTime": {"seconds": -1, "nanos": 999_999_999},
        "closeTime": null, "open": "", "high": "", "low": "", "close": "", "volume": "",
        "quoteVolume": "", "tradeCount": 0, "closed": false, "revision": 0,
    });
    let encode = |message: &str, value: Value, bytes: Vec<u8>| json!({"message": message, "value": value, "hex": hex(&bytes)});
    let decode = |message: &str, bytes: Vec<u8>, expect: Value| json!({"message": message, "hex": hex(&bytes), "expect": expect});
    json!({
        "encode": [
            encode(
                "ListInstrumentsRequest",
                json!({"pageSize": 1000, "pageToken": ""}),
                ListInstrumentsRequest { page_size: 1000, page_token: String::new() }.encode_to_vec(),
            ),
            encode(
                "GetCandlesRequest",
                json!({"symbol": "BTCUSDT", "interval": "1m", "pageSize": 100, "pageToken": "tok/+=", "order": 1}),
                GetCandlesRequest {
                    symbol: "BTCUSDT".into(),
                    interval: "1m".into(),
                    page_size: 100,
                    page_token: "tok/+=".into(),
                    order: 1,
                    ..Default::default()
                }
                .encode_to_vec(),
            ),
            encode(
                "GetCandlesRequest",
                json!({
                    "symbol": "005930.KS", "interval": "1d",
                    "startTime": {"seconds": -86_400, "nanos": 5},
                    "endTime": {"seconds": 1_767_225_600, "nanos": 0},
                    "pageSize": -1, "order": 2, "fill": 2,
                }),
                GetCandlesRequest {
                    symbol: "005930.KS".into(),
                    interval: "1d".into(),
                    start_time: ts(-86_400, 5),
                    end_time: ts(1_767_225_600, 0),
                    page_size: -1,
                    page_token: String::new(),
                    order: 2,
                    fill: 2,
                }
                .encode_to_vec(),
            ),
            encode(
                "SubscribeCandlesRequest",
                json!({"symbol": "BTCUSDT", "intervals": ["1m", "", "1h"], "cursor": "1733460000000-0"}),
                SubscribeCandlesRequest {
                    symbol: "BTCUSDT".into(),
                    intervals: vec!["1m".into(), String::new(), "1h".into()],
                    cursor: "1733460000000-0".into(),
                    indicators: Vec::new(),
                }
                .encode_to_vec(),
            ),
        ],
        "decode": [
            decode(
                "GetCandlesResponse",
                GetCandlesResponse { candles: vec![full.clone(), sparse], next_page_token: "next".into() }
                    .encode_to_vec(),
                json!({"candles": [full_json.clone(), sparse_json], "nextPageToken": "next"}),
            ),
            decode(
                "SubscribeCandlesResponse",
                SubscribeCandlesResponse { candles: vec![full], snapshot: true, cursor: "c-1".into() }
                    .encode_to_vec(),
                json!({"candles": [full_json], "snapshot": true, "cursor": "c-1"}),
            ),
            decode(
                "ListInstrumentsResponse",
                // Sessions and update_time are fields the page's schema skips.
                ListInstrumentsResponse {
                    instruments: vec![Instrument {
                        symbol: "005930.KS".into(),
                        venue: "krx ü".into(),
                        price_scale: 0,
                        quantity_scale: 3,
                        time_zone: "Asia/Seoul".into(),
                        sessions: vec![TradingSession {
                            days: vec![1, 2, 3, 4, 5],
                            open_time: "09:00".into(),
                            close_time: "15:30".into(),
                        }],
                        update_time: ts(1_767_225_600, 123),
                    }],
                    next_page_token: String::new(),
                }
                .encode_to_vec(),
                json!({"instruments": [{
                    "symbol": "005930.KS", "venue": "krx ü", "priceScale": 0,
                    "quantityScale": 3, "timeZone": "Asia/Seoul",
                }], "nextPageToken": ""}),
            ),
        ],
    })
}

/// Binds `addr` again once the stopped mesh has let go of it.
async fn rebind(addr: std::net::SocketAddr) -> TcpListener {
    for _ in 0..100 {
        if let Ok(listener) = TcpListener::bind(addr).await {
            return listener;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("cannot bind {addr} again");
}

fn live_trade(id: &str, units: i64) -> Trade {
    Trade {
        symbol: "BTCUSDT".into(),
        trade_id: id.into(),
        price: format_units(i128::from(units), 2),
        quantity: "0.01000".into(),
        time: Some(nanos_to_timestamp(now_nanos())),
        side: 1,
        ..Default::default()
    }
}

// A child process and two meshes: keep the servers on their own threads.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_chart_page_draws_history_and_follows_the_live_candle() {
    let test = "the_chart_page_draws_history_and_follows_the_live_candle";
    let Some(tools) = tools_or_skip(test) else {
        return;
    };
    let redis = redis().await;
    let mut config = config(&redis.url());
    config.server.chart = true;
    let mesh = start(config.clone()).await;
    let addr = mesh.addr;
    let mut feed = client(&mesh).await;
    register(&mut feed, "BTCUSDT", 2, 5).await;
    register(&mut feed, "ETHUSDT", 2, 4).await;

    let (trades, walk) = history();
    for batch in trades.chunks(2000) {
        let summary = publish(&mut feed, batch.to_vec()).await;
        assert_eq!(summary.accepted as usize, batch.len(), "{summary:?}");
    }
    let mut units = walk.units;
    let summary = publish(&mut feed, vec![live_trade("live-0", units)]).await;
    assert_eq!(summary.accepted, 1);
    let expected = HISTORY_MINUTES as usize + 1;
    let mut candles = CandleQueryServiceClient::connect(mesh.endpoint())
        .await
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    while pages(
        &mut candles,
        "BTCUSDT",
        "1m",
        1000,
        CandleOrder::NewestFirst,
    )
    .await
    .len()
        < expected
    {
        assert!(Instant::now() < deadline, "the candles were not aggregated");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    let fixtures = PathBuf::from(temp_path("codec-fixtures.json"));
    std::fs::create_dir_all(fixtures.parent().unwrap()).unwrap();
    std::fs::write(&fixtures, codec_fixtures().to_string()).unwrap();
    let screenshot = std::env::var_os("TICKMESH_CHART_SCREENSHOT")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(temp_path("chart.png")));
    let url = format!("http://{addr}/?symbol=BTCUSDT&interval=1m&page_size={PAGE_SIZE}");
    let started = Instant::now();
    let mut browser = Browser::start(&tools, &url, &fixtures, &screenshot);

    // History: the first pages fill the view, dragging loads the rest, and
    // the page ends up with exactly the candles the API has.
    let ready = browser.expect("ready", Duration::from_secs(90)).await;
    eprintln!(
        "the page was live {} ms after navigating; {} codec vectors matched prost; {} candles in \
         {} pages at first, {} drags to load all {} in {} pages ({} ms after starting chromium)",
        ready["loadedMs"],
        ready["codecVectors"],
        ready["firstCandles"],
        ready["firstPages"],
        ready["drags"],
        ready["state"]["candleCount"],
        ready["state"]["pagesLoaded"],
        started.elapsed().as_millis(),
    );
    let state = &ready["state"];
    assert!(ready["firstPages"].as_u64().unwrap() < state["pagesLoaded"].as_u64().unwrap());
    assert!(
        ready["drags"].as_u64().unwrap() >= 1,
        "older pages were loaded by scrolling"
    );
    assert_eq!(state["historyExhausted"], true);
    let api = pages(
        &mut candles,
        "BTCUSDT",
        "1m",
        1000,
        CandleOrder::NewestFirst,
    )
    .await;
    assert_eq!(state["candleCount"].as_u64().unwrap() as usize, api.len());
    assert_eq!(
        state["pagesLoaded"].as_u64().unwrap() as usize,
        api.len().div_ceil(PAGE_SIZE)
    );
    let newest = &api[0];
    assert_eq!(state["lastPrice"], newest.close.as_str());
    assert_eq!(state["last"]["close"], newest.close.as_str());
    assert_eq!(state["last"]["volume"], newest.volume.as_str());
    assert_eq!(state["last"]["revision"], newest.revision);
    assert_eq!(state["last"]["closed"], newest.closed);
    assert_eq!(state["stream"]["connects"], 1);

    // Live: a trade acknowledged over native gRPC reaches the page within a second.
    let mut latencies = Vec::new();
    for k in 1..=LATENCY_SAMPLES {
        tokio::time::sleep(Duration::from_millis(200)).await;
        // Up, down, up: a new last price each time.
        units += 111 * k * if k % 2 == 0 { -1 } else { 1 };
        let trade = live_trade(&format!("live-{k}"), units);
        let price = trade.price.clone();
        let sent_ms = unix_ms();
        let summary = publish(&mut feed, vec![trade]).await;
        assert_eq!(summary.accepted, 1);
        let acked_ms = unix_ms();
        let acked = Instant::now();
        browser
            .send(json!({"cmd": "expect_price", "price": price, "phase": "live"}))
            .await;
        let seen = browser.expect("price_seen", Duration::from_secs(30)).await;
        let observed = acked.elapsed();
        // The page's clock and the test's are the machine's: the page
        // stamps the change when it applies it. Negative: before the test
        // had read the acknowledgement.
        let updated_ms = seen["state"]["updatedAt"].as_i64().unwrap();
        let page_ms = updated_ms - acked_ms;
        eprintln!(
            "live trade {k} at {price}: acknowledged {} ms after sending; on the page {page_ms} ms \
             after the ack ({} ms after sending); the test saw it {} ms after the ack",
            acked_ms - sent_ms,
            updated_ms - sent_ms,
            observed.as_millis()
        );
        let last = &seen["state"]["last"];
        assert_eq!(last["close"], price.as_str());
        assert_eq!(last["closed"], false);
        latencies.push(page_ms);
    }
    let worst = *latencies.iter().max().unwrap();
    assert!(
        worst < 1000,
        "the live candle moved {latencies:?} ms after the acks (must be under 1000)"
    );

    // A restart: the page reconnects with backoff and resumes with its
    // cursor. Its requests fail while the mesh is down; that is expected.
    browser
        .send(json!({"cmd": "phase", "phase": "restart"}))
        .await;
    browser.expect("phase_set", Duration::from_secs(10)).await;
    mesh.stop().await.unwrap();
    browser
        .send(json!({"cmd": "wait_status", "status": "reconnecting", "phase": "restart"}))
        .await;
    browser.expect("status_seen", Duration::from_secs(30)).await;
    let mut again = config.clone();
    again.history.embedded_path = temp_path("history-after-restart.redb");
    let mesh = Mesh::start_on(again, rebind(addr).await)
        .await
        .expect("restart the mesh");
    let mut feed = client(&mesh).await;
    units += 222;
    let trade = live_trade("after-restart", units);
    let price = trade.price.clone();
    assert_eq!(publish(&mut feed, vec![trade]).await.accepted, 1);
    let restarted = Instant::now();
    browser
        .send(
            json!({"cmd": "expect_price", "price": price, "phase": "resumed", "timeoutMs": 30_000}),
        )
        .await;
    let seen = browser.expect("price_seen", Duration::from_secs(40)).await;
    let stream = &seen["state"]["stream"];
    eprintln!(
        "after the restart: the page had the new trade after {} ms; stream {stream}",
        restarted.elapsed().as_millis()
    );
    assert_eq!(stream["connects"], 2, "{stream}");
    assert_eq!(stream["lastConnect"]["resumed"], true, "{stream}");
    assert_eq!(
        stream["lastConnect"]["snapshot"], false,
        "replayed from the cursor, no snapshot needed: {stream}"
    );

    // The screenshot: the chart area shows up and down candles.
    browser
        .send(json!({"cmd": "screenshot", "phase": "screenshot"}))
        .await;
    let shot = browser.expect("screenshot", Duration::from_secs(30)).await;
    let pixels = &shot["pixels"];
    eprintln!("screenshot {}: {pixels}", shot["path"]);
    let area = pixels["area"].as_u64().unwrap();
    assert!(pixels["up"].as_u64().unwrap() > 500, "{pixels}");
    assert!(pixels["down"].as_u64().unwrap() > 500, "{pixels}");
    assert!(
        pixels["background"].as_u64().unwrap() < area * 97 / 100,
        "more than a blank chart: {pixels}"
    );

    browser
        .send(json!({"cmd": "close", "phase": "close"}))
        .await;
    let closed = browser.expect("closed", Duration::from_secs(30)).await;
    let problems: Vec<&str> = closed["problems"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|p| p.as_str())
        .filter(|p| !p.starts_with("restart:"))
        .collect();
    assert!(
        problems.is_empty(),
        "the browser reported problems: {problems:#?}"
    );
    drop(browser.stdin);
    let status = tokio::time::timeout(Duration::from_secs(30), browser.child.wait())
        .await
        .expect("the browser script exits")
        .unwrap();
    assert!(status.success(), "{status}");
    eprintln!("browser test done in {} ms", started.elapsed().as_millis());
    mesh.stop().await.unwrap();
}
