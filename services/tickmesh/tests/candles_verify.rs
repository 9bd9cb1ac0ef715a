//! Candle self-check and repair (issue 15): `tickmesh candles verify` and the
//! background check, against a real redis-server and the embedded store.
//! Candles are corrupted the ways a lost or damaged write leaves them; the
//! expected candles come from the published trades (computed here, not by
//! the aggregator's code).

mod common;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use common::*;
use tickmesh::mesh::Mesh;
use tickmesh_api::candles::candle_query_service_client::CandleQueryServiceClient;
use tickmesh_api::candles::{CandleOrder, GetAggregationStatusRequest, GetCandlesRequest};
use tickmesh_api::marketfeed::Trade;
use tickmesh_calendar::Interval;
use tickmesh_candles::candle::Candle;
use tickmesh_candles::directory::InstrumentInfo;
use tickmesh_candles::verify::{Coverage, Verifier, format_time};
use tickmesh_history::{CandleStore, EmbeddedStore};
use tickmesh_runtime::config::Config;
use tickmesh_runtime::proto_time::now_nanos;
use tokio::net::TcpListener;
use tonic::transport::Channel;

type Candles = CandleQueryServiceClient<Channel>;
type Conn = redis::aio::MultiplexedConnection;

const SYMBOL: &str = "VRFY";
const MIN_NS: i64 = 60_000_000_000;

fn verify_config(redis_url: &str) -> Config {
    let mut c = config(redis_url);
    c.candles.lease_ttl = Duration::from_secs(1);
    c.candles.close_grace = Duration::from_millis(200);
    c.candles.late_window = Duration::from_secs(60);
    c.candles.verify_interval = Duration::ZERO;
    c
}

/// The start of an hour three to four hours ago.
fn base() -> i64 {
    let hour = 60 * MIN_NS;
    (now_nanos() - 3 * hour).div_euclid(hour) * hour
}

/// Four trades in each of `minutes` (at :05 :20 :35 :50), prices in cents.
fn minute_trades(base: i64, minutes: std::ops::Range<i64>) -> Vec<(i64, i64, i64)> {
    let mut out = Vec::new();
    for m in minutes {
        for k in 0..4i64 {
            let t = base + m * MIN_NS + (5 + 15 * k) * 1_000_000_000;
            let price = 10_000 + (m * 7 + k * 3) % 11 * 25;
            let qty = 1 + (m + k) % 3;
            out.push((t, price, qty));
        }
    }
    out
}

fn to_trades(rows: &[(i64, i64, i64)], id: &str) -> Vec<Trade> {
    rows.iter()
        .enumerate()
        .map(|(i, &(t, price, qty))| {
            trade_at(
                SYMBOL,
                &format!("{id}{i}"),
                &format!("{}.{:02}", price / 100, price % 100),
                &qty.to_string(),
                t,
            )
        })
        .collect()
}

fn cents(c: i64) -> String {
    format!("{}.{:02}", c / 100, c % 100)
}

/// open s → (open, high, low, close, volume, quote volume, trades) of 1m
/// candles, by sorting and folding (every trade here is in event-time order).
type Row = (String, String, String, String, String, String, u64);
fn reference(trades: &[(i64, i64, i64)]) -> BTreeMap<i64, Row> {
    let mut sorted = trades.to_vec();
    sorted.sort_by_key(|t| t.0);
    type Acc = (i64, i64, i64, i64, i64, i64, u64);
    let mut acc: BTreeMap<i64, Acc> = BTreeMap::new();
    for (t, p, q) in sorted {
        let e = acc
            .entry(t.div_euclid(MIN_NS) * 60)
            .or_insert((p, p, p, p, 0, 0, 0));
        e.1 = e.1.max(p);
        e.2 = e.2.min(p);
        e.3 = p;
        e.4 += q;
        e.5 += p * q;
        e.6 += 1;
    }
    acc.into_iter()
        .map(|(k, (o, h, l, c, v, qv, n))| {
            (
                k,
                (
                    cents(o),
                    cents(h),
                    cents(l),
                    cents(c),
                    v.to_string(),
                    cents(qv),
                    n,
                ),
            )
        })
        .collect()
}

/// 1m candles as GetCandles returns them: open s → (row, revision).
async fn get_minutes(c: &mut Candles) -> BTreeMap<i64, (Row, u64)> {
    let page = c
        .get_candles(GetCandlesRequest {
            symbol: SYMBOL.into(),
            interval: "1m".into(),
            page_size: 1000,
            order: CandleOrder::OldestFirst as i32,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    page.candles
        .into_iter()
        .map(|c| {
            (
                c.open_time.as_ref().unwrap().seconds,
                (
                    (
                        c.open,
                        c.high,
                        c.low,
                        c.close,
                        c.volume,
                        c.quote_volume,
                        c.trade_count,
                    ),
                    c.revision,
                ),
            )
        })
        .collect()
}

fn rows(got: &BTreeMap<i64, (Row, u64)>) -> BTreeMap<i64, Row> {
    got.iter().map(|(k, (r, _))| (*k, r.clone())).collect()
}

async fn applied(c: &Candles, sequence: u64) -> bool {
    eventually(Duration::from_secs(20), || {
        let mut c = c.clone();
        async move {
            c.get_aggregation_status(GetAggregationStatusRequest {
                symbols: vec![SYMBOL.into()],
            })
            .await
            .map(|r| r.into_inner().statuses[0].applied_sequence >= sequence)
            .unwrap_or(false)
        }
    })
    .await
}

async fn redis_conn(url: &str) -> Conn {
    redis::Client::open(url)
        .unwrap()
        .get_multiplexed_async_connection()
        .await
        .unwrap()
}

fn key() -> String {
    format!("tm:{{{SYMBOL}}}:c:1m")
}

/// The Redis members of the 1m candle opening at `open_s`.
async fn members(conn: &mut Conn, open_s: i64) -> Vec<String> {
    redis::cmd("ZRANGEBYSCORE")
        .arg(key())
        .arg(open_s)
        .arg(open_s)
        .query_async(conn)
        .await
        .unwrap()
}

async fn status_field(conn: &mut Conn, field: &str) -> Option<i64> {
    redis::cmd("HGET")
        .arg(format!("tm:{{{SYMBOL}}}:cstat"))
        .arg(field)
        .query_async(conn)
        .await
        .unwrap()
}

/// Runs the real binary: exit code and stdout.
async fn verify_cli(redis_url: &str, args: &[&str]) -> (i32, String) {
    let (code, stdout, _) =
        verify_cli_with(redis_url, &[("TICKMESH_HISTORY_BACKEND", "none")], args).await;
    (code, stdout)
}

/// Runs the real binary with extra settings: exit code, stdout, stderr.
async fn verify_cli_with(
    redis_url: &str,
    settings: &[(&str, &str)],
    args: &[&str],
) -> (i32, String, String) {
    let out = tokio::process::Command::new(env!("CARGO_BIN_EXE_tickmesh"))
        .args(["candles", "verify", "--symbols", SYMBOL])
        .args(args)
        .env_remove("TICKMESH_CONFIG")
        .env("TICKMESH_REDIS_URL", redis_url)
        .env("TICKMESH_CANDLES_LATE_WINDOW", "60s")
        .envs(settings.iter().copied())
        .output()
        .await
        .expect("run tickmesh candles verify");
    let stdout = String::from_utf8_lossy(&out.stdout).to_string();
    let stderr = String::from_utf8_lossy(&out.stderr).to_string();
    eprintln!("{stdout}{stderr}");
    (out.status.code().unwrap_or(-1), stdout, stderr)
}

fn mismatch_lines(stdout: &str) -> Vec<String> {
    stdout
        .lines()
        .filter(|l| l.trim_start().starts_with("mismatch "))
        .map(|l| l.trim().to_string())
        .collect()
}

fn info() -> InstrumentInfo {
    InstrumentInfo {
        symbol: SYMBOL.into(),
        tz: chrono_tz::Tz::UTC,
        price_scale: 2,
        quantity_scale: 0,
        sessions: Vec::new(),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_cli_reports_corrupted_missing_and_extra_candles_and_repairs_them() {
    let redis = redis().await;
    let mut config = verify_config(&redis.url());
    config.history.backend = "none".into();
    let mesh = start(config).await;
    let mut feed = client(&mesh).await;
    register(&mut feed, SYMBOL, 2, 0).await;
    let mut candles = CandleQueryServiceClient::connect(mesh.endpoint())
        .await
        .unwrap();
    let base = base();
    // Minutes 0..20, then one trade at 25:05 so that every candle of
    // minutes 0..23 is past the late window (final).
    let mut rows_in = minute_trades(base, 0..20);
    rows_in.push((base + 25 * MIN_NS + 5_000_000_000, 10_100, 1));
    let n = rows_in.len() as u64;
    publish(&mut feed, to_trades(&rows_in, "a")).await;
    assert!(applied(&candles, n).await, "aggregator applied every trade");
    let want = reference(&rows_in);
    let before = get_minutes(&mut candles).await;
    assert_eq!(
        rows(&before),
        want,
        "the aggregator agrees with the reference"
    );

    // A clean start: nothing to report.
    let (code, out) = verify_cli(&redis.url(), &[]).await;
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("0 mismatched"), "{out}");
    assert!(
        out.contains("tick log from sequence 1: candles closing after"),
        "{out}"
    );

    // Damage: a second, wrong member at minute 3; minute 7 deleted; a
    // candle without trades at minute 22.
    let mut conn = redis_conn(&redis.url()).await;
    let (m3, m7, m22) = (
        base / 1_000_000_000 + 180,
        base / 1_000_000_000 + 420,
        base / 1_000_000_000 + 1320,
    );
    let original = Candle::decode(&members(&mut conn, m3).await[0]).unwrap();
    let mut wrong = original.clone();
    wrong.high += 1_000;
    wrong.updated_ns += 1;
    let _: i64 = redis::cmd("ZADD")
        .arg(key())
        .arg(m3)
        .arg(wrong.encode())
        .query_async(&mut conn)
        .await
        .unwrap();
    let _: i64 = redis::cmd("ZREMRANGEBYSCORE")
        .arg(key())
        .arg(m7)
        .arg(m7)
        .query_async(&mut conn)
        .await
        .unwrap();
    let mut extra = original.clone();
    extra.bucket.open_ns = m22 * 1_000_000_000;
    extra.bucket.close_ns = extra.bucket.open_ns + MIN_NS;
    let _: i64 = redis::cmd("ZADD")
        .arg(key())
        .arg(m22)
        .arg(extra.encode())
        .query_async(&mut conn)
        .await
        .unwrap();

    // verify names exactly those three.
    let (code, out) = verify_cli(&redis.url(), &[]).await;
    assert_eq!(code, 1, "mismatches left: exit status 1\n{out}");
    let t = |s: i64| format_time(s * 1_000_000_000);
    assert_eq!(
        mismatch_lines(&out),
        vec![
            format!("mismatch {SYMBOL} 1m {}: redis: 2 members", t(m3)),
            format!("mismatch {SYMBOL} 1m {}: missing", t(m7)),
            format!(
                "mismatch {SYMBOL} 1m {}: redis: candle without trades",
                t(m22)
            ),
        ],
        "{out}"
    );
    assert!(out.contains("3 mismatched, 0 repaired"), "{out}");

    // --repair fixes them; GetCandles then equals the trades again, with
    // higher revisions where something changed.
    let (code, out) = verify_cli(&redis.url(), &["--repair"]).await;
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("3 mismatched, 3 repaired"), "{out}");
    assert_eq!(mismatch_lines(&out).len(), 3, "{out}");
    assert!(
        mismatch_lines(&out)
            .iter()
            .all(|l| l.ends_with("(repaired)")),
        "{out}"
    );
    let after = get_minutes(&mut candles).await;
    assert_eq!(rows(&after), want, "repaired candles equal the trades");
    for m in [m3, m7] {
        assert!(
            after[&m].1 > before[&m].1,
            "revision went up at {m}: {} -> {}",
            before[&m].1,
            after[&m].1
        );
    }
    let m3_now = members(&mut conn, m3).await;
    assert_eq!(m3_now.len(), 1, "one member again");
    assert!(Candle::decode(&m3_now[0]).unwrap().closed);
    // The repair went through the updates log like any candle write.
    let log: Vec<redis::Value> = redis::cmd("XREVRANGE")
        .arg(format!("tm:{{{SYMBOL}}}:cupd"))
        .arg("+")
        .arg("-")
        .arg("COUNT")
        .arg(2)
        .query_async(&mut conn)
        .await
        .unwrap();
    assert_eq!(log.len(), 2, "two repaired candles were logged");

    // A second check is clean; the counters add up.
    let (code, out) = verify_cli(&redis.url(), &[]).await;
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("0 mismatched"), "{out}");
    assert_eq!(status_field(&mut conn, "verify_repaired").await, Some(3));
    assert_eq!(status_field(&mut conn, "verify_mismatches").await, Some(6));
    assert!(status_field(&mut conn, "verify_checked").await.unwrap() > 40);
    assert!(status_field(&mut conn, "verified_ns").await.unwrap() > base);
    mesh.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn history_only_corruption_is_found_and_upserted() {
    let redis = redis().await;
    let config = verify_config(&redis.url());
    let store = Arc::new(EmbeddedStore::open(std::path::Path::new(&temp_path("v.redb"))).unwrap());
    let mesh = Mesh::start_with(
        config.clone(),
        TcpListener::bind("127.0.0.1:0").await.unwrap(),
        Some(store.clone()),
    )
    .await
    .unwrap();
    let mut feed = client(&mesh).await;
    register(&mut feed, SYMBOL, 2, 0).await;
    let mut candles = CandleQueryServiceClient::connect(mesh.endpoint())
        .await
        .unwrap();
    let base = base();
    let mut rows_in = minute_trades(base, 0..12);
    rows_in.push((base + 15 * MIN_NS + 5_000_000_000, 10_100, 1));
    publish(&mut feed, to_trades(&rows_in, "h")).await;
    assert!(applied(&candles, rows_in.len() as u64).await);
    let mut conn = redis_conn(&redis.url()).await;
    let m1 = Interval::parse("1m").unwrap();
    assert!(
        eventually(Duration::from_secs(20), || {
            let store = store.clone();
            async move {
                store
                    .range(SYMBOL, m1, i64::MIN, i64::MAX, false, 100)
                    .await
                    .map(|r| r.len() >= 12)
                    .unwrap_or(false)
            }
        })
        .await,
        "closed minutes reached the store"
    );
    assert!(
        eventually(Duration::from_secs(20), || {
            let mut conn = conn.clone();
            async move {
                redis::cmd("ZCARD")
                    .arg(format!("tm:{{{SYMBOL}}}:cflush"))
                    .query_async::<u64>(&mut conn)
                    .await
                    .unwrap()
                    == 0
            }
        })
        .await,
        "flush queue drained"
    );
    let want = reference(&rows_in);
    let before = get_minutes(&mut candles).await;
    assert_eq!(rows(&before), want);

    // Minute 5: wrong in the store only (Redis still right). Minute 9: wrong
    // in the store and gone from Redis, so GetCandles serves the wrong one.
    let (m5, m9) = (base + 5 * MIN_NS, base + 9 * MIN_NS);
    let stored = |open: i64| {
        let store = store.clone();
        async move {
            store
                .range(SYMBOL, m1, open, open + 1, false, 1)
                .await
                .unwrap()
                .remove(0)
        }
    };
    let mut bad5 = stored(m5).await;
    bad5.close += 5;
    let mut bad9 = stored(m9).await;
    bad9.high += 700;
    bad9.volume += 1;
    store.upsert(&[bad5.clone(), bad9.clone()]).await.unwrap();
    let _: i64 = redis::cmd("ZREMRANGEBYSCORE")
        .arg(key())
        .arg(m9 / 1_000_000_000)
        .arg(m9 / 1_000_000_000)
        .query_async(&mut conn)
        .await
        .unwrap();
    let seen = get_minutes(&mut candles).await;
    assert_ne!(rows(&seen), want, "the damage is visible to GetCandles");

    let verifier = Verifier {
        store: mesh.candles.as_ref().unwrap().store.clone(),
        history: Some(store.clone() as Arc<dyn CandleStore>),
        flush_repairs: true,
        late_window_ns: 60_000_000_000,
        updates_max_len: 1000,
    };
    let report = verifier.verify_symbol(&info(), false).await.unwrap();
    let found: Vec<(String, i64, String)> = report
        .ranges
        .iter()
        .map(|r| (r.interval.to_string(), r.first_open_ns, r.what.clone()))
        .collect();
    assert_eq!(
        found,
        vec![
            ("1m".to_string(), m5, "history: close".to_string()),
            ("1m".to_string(), m9, "history: high, volume".to_string()),
        ],
        "{report:?}"
    );
    assert!(report.inconsistent.is_empty() && report.corrupt.is_empty());

    let report = verifier.verify_symbol(&info(), true).await.unwrap();
    assert_eq!((report.mismatched, report.repaired), (2, 2), "{report:?}");
    let after = get_minutes(&mut candles).await;
    assert_eq!(rows(&after), want, "GetCandles equals the trades again");
    assert!(after[&(m9 / 1_000_000_000)].1 > bad9.revision);
    let fixed5 = stored(m5).await;
    assert_eq!(fixed5.close, bad5.close - 5);
    assert!(fixed5.revision > bad5.revision);
    let again = verifier.verify_symbol(&info(), false).await.unwrap();
    assert_eq!(again.mismatched, 0, "{again:?}");
    // Final: 1m 0..12, 3m 0..12, 5m 0..10 (the last trade is at 15:05).
    assert_eq!(again.checked, 12 + 4 + 2, "{again:?}");
    mesh.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_background_check_repairs_a_candle_once_it_is_final() {
    let redis = redis().await;
    let mut config = verify_config(&redis.url());
    config.candles.verify_interval = Duration::from_millis(200);
    let mesh = start(config).await;
    let mut feed = client(&mesh).await;
    register(&mut feed, SYMBOL, 2, 0).await;
    let candles = CandleQueryServiceClient::connect(mesh.endpoint())
        .await
        .unwrap();
    let base = base();
    // Minutes 0..=10: candles up to minute 8 are final, 9 and 10 are not.
    let mut rows_in = minute_trades(base, 0..11);
    publish(&mut feed, to_trades(&rows_in, "b")).await;
    assert!(applied(&candles, rows_in.len() as u64).await);
    let mut conn = redis_conn(&redis.url()).await;
    assert!(
        eventually(Duration::from_secs(10), || {
            let mut conn = conn.clone();
            async move { status_field(&mut conn, "verify_checked").await.unwrap_or(0) > 0 }
        })
        .await,
        "the background check ran"
    );
    let checked_first = status_field(&mut conn, "verify_checked").await.unwrap();

    // Corrupt the closed (not yet final) minute 9 in Redis, then let time
    // move on by event time: it becomes final and is compared.
    let m9 = base / 1_000_000_000 + 540;
    let good = members(&mut conn, m9).await.remove(0);
    let mut wrong = Candle::decode(&good).unwrap();
    wrong.low -= 300;
    let _: () = redis::pipe()
        .cmd("ZREMRANGEBYSCORE")
        .arg(key())
        .arg(m9)
        .arg(m9)
        .ignore()
        .cmd("ZADD")
        .arg(key())
        .arg(m9)
        .arg(wrong.encode())
        .ignore()
        .query_async(&mut conn)
        .await
        .unwrap();
    let late = (base + 12 * MIN_NS + 5_000_000_000, 10_050, 2);
    rows_in.push(late);
    publish(&mut feed, to_trades(&[late], "late")).await;
    let want = reference(&rows_in);
    assert!(
        eventually(Duration::from_secs(10), || {
            let mut candles = candles.clone();
            let want = want.clone();
            async move { rows(&get_minutes(&mut candles).await) == want }
        })
        .await,
        "the background check repaired minute 9"
    );
    let fixed = Candle::decode(&members(&mut conn, m9).await[0]).unwrap();
    assert!(fixed.closed && fixed.revision > wrong.revision, "{fixed:?}");
    // The pass records its counts when it finishes, after the repair.
    assert!(
        eventually(Duration::from_secs(5), || {
            let mut conn = conn.clone();
            async move { status_field(&mut conn, "verify_repaired").await == Some(1) }
        })
        .await
    );
    assert_eq!(status_field(&mut conn, "verify_mismatches").await, Some(1));
    assert!(status_field(&mut conn, "verify_checked").await.unwrap() > checked_first);
    mesh.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_trimmed_tick_log_covers_only_later_candles_older_ones_are_checked_by_tiling() {
    let redis = redis().await;
    let mut config = verify_config(&redis.url());
    config.history.backend = "none".into();
    let mesh = start(config).await;
    let mut feed = client(&mesh).await;
    register(&mut feed, SYMBOL, 2, 0).await;
    let mut candles = CandleQueryServiceClient::connect(mesh.endpoint())
        .await
        .unwrap();
    let base = base();
    let mut rows_in = minute_trades(base, 0..60);
    rows_in.push((base + 65 * MIN_NS + 5_000_000_000, 10_100, 1));
    publish(&mut feed, to_trades(&rows_in, "t")).await;
    assert!(applied(&candles, rows_in.len() as u64).await);
    let want = reference(&rows_in);

    // The log loses minutes 0..10 (sequences 1..40), as tick_log_max_len would.
    let mut conn = redis_conn(&redis.url()).await;
    let _: i64 = redis::cmd("XTRIM")
        .arg(format!("tm:{{{SYMBOL}}}:trades"))
        .arg("MINID")
        .arg("0-41")
        .query_async(&mut conn)
        .await
        .unwrap();
    // Covered: candles opening after the newest of the first 100 retained
    // trades (minute 34, :50) plus the late window.
    let bound = base + 35 * MIN_NS + 50_000_000_000;
    let (code, out) = verify_cli(&redis.url(), &[]).await;
    assert_eq!(code, 0, "{out}");
    assert!(
        out.contains(&format!(
            "covered: candles opening after {}",
            format_time(bound)
        )),
        "{out}"
    );
    assert!(out.contains("tick log from 41"), "{out}");

    // A covered 1m candle and an uncovered 5m candle go wrong in Redis.
    let s = |m: i64| base / 1_000_000_000 + m * 60;
    let writer = conn.clone();
    let replace = |key: String, score: i64, member: String| {
        let mut conn = writer.clone();
        async move {
            let _: () = redis::pipe()
                .cmd("ZREMRANGEBYSCORE")
                .arg(&key)
                .arg(score)
                .arg(score)
                .ignore()
                .cmd("ZADD")
                .arg(&key)
                .arg(score)
                .arg(member)
                .ignore()
                .query_async(&mut conn)
                .await
                .unwrap();
        }
    };
    let mut m40 = Candle::decode(&members(&mut conn, s(40)).await[0]).unwrap();
    m40.high += 100;
    replace(key(), s(40), m40.encode()).await;
    let key5 = format!("tm:{{{SYMBOL}}}:c:5m");
    let five: Vec<String> = redis::cmd("ZRANGEBYSCORE")
        .arg(&key5)
        .arg(s(5))
        .arg(s(5))
        .query_async(&mut conn)
        .await
        .unwrap();
    let mut m5 = Candle::decode(&five[0]).unwrap();
    m5.volume += 3;
    replace(key5, s(5), m5.encode()).await;

    let (code, out) = verify_cli(&redis.url(), &["--repair"]).await;
    assert_eq!(code, 1, "the uncovered inconsistency is left\n{out}");
    let t = |m: i64| format_time(s(m) * 1_000_000_000);
    assert_eq!(
        mismatch_lines(&out),
        vec![format!(
            "mismatch {SYMBOL} 1m {}: redis: high (repaired)",
            t(40)
        )],
        "{out}"
    );
    let inconsistent: Vec<&str> = out
        .lines()
        .map(str::trim)
        .filter(|l| l.starts_with("inconsistent "))
        .collect();
    assert_eq!(
        inconsistent,
        vec![
            format!(
                "inconsistent {SYMBOL} 5m {}: volume vs the 1m candles (not covered by the tick log; not repaired)",
                t(5)
            ),
            format!(
                "inconsistent {SYMBOL} 15m {}: volume vs the 5m candles (not covered by the tick log; not repaired)",
                t(0)
            ),
        ],
        "{out}"
    );
    assert_eq!(
        rows(&get_minutes(&mut candles).await),
        want,
        "the covered 1m candle was repaired"
    );
    mesh.stop().await.unwrap();
}

/// The embedded store, with the blocks of one interval failing to decode
/// (as a block whose checksum no longer matches does).
struct Damaged {
    inner: EmbeddedStore,
    interval: Interval,
}

#[async_trait::async_trait]
impl CandleStore for Damaged {
    async fn upsert(
        &self,
        candles: &[tickmesh_history::StoredCandle],
    ) -> Result<(), tickmesh_history::StoreError> {
        self.inner.upsert(candles).await
    }
    async fn range(
        &self,
        symbol: &str,
        interval: Interval,
        from: i64,
        to: i64,
        newest_first: bool,
        limit: usize,
    ) -> Result<Vec<tickmesh_history::StoredCandle>, tickmesh_history::StoreError> {
        if interval == self.interval {
            return Err(tickmesh_history::StoreError::Corrupt(format!(
                "{symbol}/{interval} block 0: checksum mismatch"
            )));
        }
        self.inner
            .range(symbol, interval, from, to, newest_first, limit)
            .await
    }
    async fn size_on_disk(&self) -> Result<u64, tickmesh_history::StoreError> {
        self.inner.size_on_disk().await
    }
    fn name(&self) -> &'static str {
        "damaged"
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_history_block_that_fails_to_decode_is_reported_not_taken_for_missing_candles() {
    let redis = redis().await;
    let store = Arc::new(Damaged {
        inner: EmbeddedStore::open(std::path::Path::new(&temp_path("d.redb"))).unwrap(),
        interval: Interval::parse("5m").unwrap(),
    });
    let mesh = Mesh::start_with(
        verify_config(&redis.url()),
        TcpListener::bind("127.0.0.1:0").await.unwrap(),
        Some(store.clone()),
    )
    .await
    .unwrap();
    let mut feed = client(&mesh).await;
    register(&mut feed, SYMBOL, 2, 0).await;
    let candles = CandleQueryServiceClient::connect(mesh.endpoint())
        .await
        .unwrap();
    let base = base();
    let mut rows_in = minute_trades(base, 0..12);
    rows_in.push((base + 15 * MIN_NS + 5_000_000_000, 10_100, 1));
    publish(&mut feed, to_trades(&rows_in, "d")).await;
    assert!(applied(&candles, rows_in.len() as u64).await);
    // Redis loses the 5m candles; the store holds them but cannot read them.
    let mut conn = redis_conn(&redis.url()).await;
    let _: i64 = redis::cmd("DEL")
        .arg(format!("tm:{{{SYMBOL}}}:c:5m"))
        .query_async(&mut conn)
        .await
        .unwrap();
    let verifier = Verifier {
        store: mesh.candles.as_ref().unwrap().store.clone(),
        history: Some(store.clone() as Arc<dyn CandleStore>),
        flush_repairs: true,
        late_window_ns: 60_000_000_000,
        updates_max_len: 1000,
    };
    let report = verifier.verify_symbol(&info(), true).await.unwrap();
    assert_eq!(report.corrupt.len(), 1, "{report:?}");
    assert!(
        report.corrupt[0].starts_with("5m ") && report.corrupt[0].contains("checksum mismatch"),
        "{report:?}"
    );
    assert!(
        report.ranges.is_empty(),
        "unreadable is not missing: {report:?}"
    );
    assert!(
        report.unresolved() > 0,
        "a corrupt block is left to the operator"
    );
    mesh.stop().await.unwrap();
}

/// Redis comes back from an earlier copy (an AOF that lost its tail) and the
/// lost sequences are given to other trades: a check continuing from where
/// it was would compare with trades that no longer exist (and "repair" good
/// candles with them); it starts over instead.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_check_continues_only_on_the_tick_log_it_replayed() {
    let dir = std::path::PathBuf::from(temp_path("redis-verify"));
    let saved = std::path::PathBuf::from(temp_path("redis-verify-saved"));
    let mut redis =
        RedisServer::start_with(&dir, Some(tickmesh_runtime::redis_server::Fsync::Always))
            .await
            .unwrap();
    let mut config = verify_config(&redis.url());
    config.history.backend = "none".into();
    let mesh = start(config).await;
    let mut feed = client(&mesh).await;
    register(&mut feed, SYMBOL, 2, 0).await;
    let mut candles = CandleQueryServiceClient::connect(mesh.endpoint())
        .await
        .unwrap();
    let base = base();
    let a = minute_trades(base, 0..10);
    publish(&mut feed, to_trades(&a, "a")).await;
    assert!(applied(&candles, a.len() as u64).await);
    redis.save_data_dir(&saved).unwrap();
    // Trades that will be lost, and one that makes them final.
    let mut b = minute_trades(base, 10..20);
    b.push((base + 25 * MIN_NS, 10_000, 1));
    publish(&mut feed, to_trades(&b, "b")).await;
    let (na, nb) = (a.len() as u64, b.len() as u64);
    assert!(applied(&candles, na + nb).await);
    let verifier = Verifier {
        store: mesh.candles.as_ref().unwrap().store.clone(),
        history: None,
        flush_repairs: false,
        late_window_ns: 60_000_000_000,
        updates_max_len: 1000,
    };
    let mut progress = None;
    let first = verifier
        .pass(&info(), &mut progress, true, 100_000, false)
        .await
        .unwrap();
    assert_eq!((first.replayed, first.mismatched), (na + nb, 0));

    // Redis loses b; other trades get its sequences (more of them, so the
    // aggregator's applied sequence ends up past where the check stopped).
    redis.restart_from(&saved).await.unwrap();
    let mut c: Vec<_> = minute_trades(base, 10..21)
        .into_iter()
        .map(|(t, p, q)| (t + 1_000_000_000, p + 5, q + 1))
        .collect();
    c.push((base + 26 * MIN_NS, 10_000, 1));
    let sent = eventually(Duration::from_secs(20), || {
        let mut feed = feed.clone();
        let c = to_trades(&c, "c");
        async move {
            feed.publish_trades(tickmesh_api::marketfeed::PublishTradesRequest {
                trades: c,
                all_or_nothing: false,
            })
            .await
            .is_ok()
        }
    })
    .await;
    assert!(sent, "publish after the restart");
    let total = na + c.len() as u64;
    assert!(total > na + nb);
    assert!(applied(&candles, total).await);
    let mut truth = a.clone();
    truth.extend(c.iter().copied());
    let want = reference(&truth);
    assert!(
        eventually(Duration::from_secs(20), || {
            let mut candles = candles.clone();
            let want = want.clone();
            async move { rows(&get_minutes(&mut candles).await) == want }
        })
        .await,
        "the aggregator converged to the tick log"
    );

    let again = verifier
        .pass(&info(), &mut progress, true, 100_000, false)
        .await
        .unwrap();
    assert_eq!(again.replayed, total, "started over: {again:?}");
    assert_eq!(again.mismatched, 0, "{again:?}");
    assert_eq!(rows(&get_minutes(&mut candles).await), want);
    mesh.stop().await.unwrap();
}

/// While a running tickmesh holds the embedded store, `--redis-only` still
/// checks and repairs Redis, and the repair reaches the store through the
/// running flusher's queue.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_only_repairs_reach_the_store_through_the_flusher() {
    let redis = redis().await;
    let config = verify_config(&redis.url());
    let path = config.history.embedded_path.clone();
    let mesh = start(config).await;
    let mut feed = client(&mesh).await;
    register(&mut feed, SYMBOL, 2, 0).await;
    let mut candles = CandleQueryServiceClient::connect(mesh.endpoint())
        .await
        .unwrap();
    let base = base();
    let mut rows_in = minute_trades(base, 0..8);
    rows_in.push((base + 12 * MIN_NS, 10_000, 1));
    publish(&mut feed, to_trades(&rows_in, "r")).await;
    assert!(applied(&candles, rows_in.len() as u64).await);
    let want = reference(&rows_in);
    let mut conn = redis_conn(&redis.url()).await;
    let flush_key = format!("tm:{{{SYMBOL}}}:cflush");
    let drained = |conn: &Conn| {
        let mut conn = conn.clone();
        let key = flush_key.clone();
        async move {
            redis::cmd("ZCARD")
                .arg(key)
                .query_async::<u64>(&mut conn)
                .await
                .unwrap()
                == 0
        }
    };
    assert!(eventually(Duration::from_secs(20), || drained(&conn)).await);

    let m4 = base / 1_000_000_000 + 240;
    let mut wrong = Candle::decode(&members(&mut conn, m4).await[0]).unwrap();
    wrong.close += 25;
    let _: () = redis::pipe()
        .cmd("ZREMRANGEBYSCORE")
        .arg(key())
        .arg(m4)
        .arg(m4)
        .ignore()
        .cmd("ZADD")
        .arg(key())
        .arg(m4)
        .arg(wrong.encode())
        .ignore()
        .query_async(&mut conn)
        .await
        .unwrap();

    let embedded = [("TICKMESH_HISTORY_EMBEDDED_PATH", path.as_str())];
    let (code, _, stderr) = verify_cli_with(&redis.url(), &embedded, &[]).await;
    assert_eq!(code, 2, "the store is in use: {stderr}");
    assert!(stderr.contains("--redis-only"), "{stderr}");
    let (code, out, _) =
        verify_cli_with(&redis.url(), &embedded, &["--redis-only", "--repair"]).await;
    assert_eq!(code, 0, "{out}");
    assert_eq!(
        mismatch_lines(&out),
        vec![format!(
            "mismatch {SYMBOL} 1m {}: redis: close (repaired)",
            format_time(m4 * 1_000_000_000)
        )],
        "{out}"
    );
    assert_eq!(rows(&get_minutes(&mut candles).await), want);
    let repaired = Candle::decode(&members(&mut conn, m4).await[0]).unwrap();
    assert!(repaired.revision > wrong.revision);
    // The repair was queued and the flusher moved it to the store.
    assert!(eventually(Duration::from_secs(20), || drained(&conn)).await);
    mesh.stop().await.unwrap();
    let store = EmbeddedStore::open(std::path::Path::new(&path)).unwrap();
    let m1 = Interval::parse("1m").unwrap();
    let stored = store
        .range(
            SYMBOL,
            m1,
            m4 * 1_000_000_000,
            m4 * 1_000_000_000 + 1,
            false,
            1,
        )
        .await
        .unwrap();
    assert_eq!(stored.len(), 1);
    assert_eq!(
        (stored[0].close, stored[0].revision),
        (wrong.close - 25, repaired.revision),
        "the store holds the repaired candle"
    );
}

/// Redis lost everything (no persistence) while the store kept the history:
/// the tick log starts at sequence 1 again, but the candles from before it
/// are not "candles without trades": they end before anything this log
/// holds, so they are checked by tiling only.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn history_from_before_redis_was_emptied_is_not_taken_for_extra_candles() {
    let redis = redis().await;
    let config = verify_config(&redis.url());
    let path = config.history.embedded_path.clone();
    let base = base();
    let old = minute_trades(base, 0..10);
    {
        let mesh = start(config.clone()).await;
        let mut feed = client(&mesh).await;
        register(&mut feed, SYMBOL, 2, 0).await;
        let candles = CandleQueryServiceClient::connect(mesh.endpoint())
            .await
            .unwrap();
        publish(&mut feed, to_trades(&old, "o")).await;
        assert!(applied(&candles, old.len() as u64).await);
        let conn = redis_conn(&redis.url()).await;
        // Every old candle closed (by the clock) and in the store.
        assert!(
            eventually(Duration::from_secs(20), || {
                let mut conn = conn.clone();
                async move {
                    let open: Vec<String> = redis::cmd("ZRANGE")
                        .arg(format!("tm:{{{SYMBOL}}}:c:1h"))
                        .arg(0)
                        .arg(-1)
                        .query_async(&mut conn)
                        .await
                        .unwrap();
                    let queued: u64 = redis::cmd("ZCARD")
                        .arg(format!("tm:{{{SYMBOL}}}:cflush"))
                        .query_async(&mut conn)
                        .await
                        .unwrap();
                    open.iter()
                        .all(|m| Candle::decode(m).is_some_and(|c| c.closed))
                        && !open.is_empty()
                        && queued == 0
                }
            })
            .await
        );
        mesh.stop().await.unwrap();
    }
    let mut conn = redis_conn(&redis.url()).await;
    let _: () = redis::cmd("FLUSHALL").query_async(&mut conn).await.unwrap();

    let store = Arc::new(EmbeddedStore::open(std::path::Path::new(&path)).unwrap());
    let mesh = Mesh::start_with(
        config,
        TcpListener::bind("127.0.0.1:0").await.unwrap(),
        Some(store.clone()),
    )
    .await
    .unwrap();
    let mut feed = client(&mesh).await;
    register(&mut feed, SYMBOL, 2, 0).await;
    let candles = CandleQueryServiceClient::connect(mesh.endpoint())
        .await
        .unwrap();
    let mut new = minute_trades(base, 30..40);
    new.push((base + 45 * MIN_NS, 10_000, 1));
    publish(&mut feed, to_trades(&new, "n")).await;
    assert!(applied(&candles, new.len() as u64).await);
    let verifier = Verifier {
        store: mesh.candles.as_ref().unwrap().store.clone(),
        history: Some(store.clone() as Arc<dyn CandleStore>),
        flush_repairs: true,
        late_window_ns: 60_000_000_000,
        updates_max_len: 1000,
    };
    let report = verifier.verify_symbol(&info(), true).await.unwrap();
    assert_eq!(report.log_first, 1);
    assert!(
        report.ranges.is_empty() && report.inconsistent.is_empty(),
        "{report:?}"
    );
    assert_eq!(report.unresolved(), 0);
    // Covered as if trimmed (the 41 trades are all the sample): every final
    // candle is checked against its tiles, old and new: 3m 4 + 4, 5m 2 + 2,
    // 15m and 30m one each (from 0:00).
    assert!(
        matches!(report.coverage, Some(Coverage::OpeningAfter(_))),
        "{report:?}"
    );
    assert_eq!(report.checked, 8 + 4 + 1 + 1, "{report:?}");
    mesh.stop().await.unwrap();
}

/// While trades stream in (late ones within and beyond the late window) and
/// the flusher moves candles, the background check must find nothing: it
/// only compares candles the aggregator can no longer change.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_background_check_finds_nothing_while_trades_stream_in() {
    let redis = redis().await;
    let mut config = verify_config(&redis.url());
    config.candles.late_window = Duration::from_secs(5);
    config.candles.verify_interval = Duration::from_millis(100);
    let mesh = start(config).await;
    let mut feed = client(&mesh).await;
    let symbols = ["LIVEA", "LIVEB", "LIVEC"];
    for s in symbols {
        register(&mut feed, s, 2, 0).await;
    }
    let candles = CandleQueryServiceClient::connect(mesh.endpoint())
        .await
        .unwrap();
    let base = base();
    let mut rng = 0x2545_f491_4f6c_dd1du64;
    let mut next = move |n: u64| {
        rng ^= rng << 13;
        rng ^= rng >> 7;
        rng ^= rng << 17;
        rng % n
    };
    let per_symbol = 3_000i64;
    let mut sent = 0u64;
    for chunk in 0..(per_symbol / 100) {
        let mut batch = Vec::new();
        for s in symbols {
            for k in 0..100 {
                let i = chunk * 100 + k;
                // One trade a second of event time; some late within the
                // window, a few beyond it (dropped by both the aggregator
                // and the check).
                let late = match next(20) {
                    0 => 10_000_000_000,
                    1 | 2 => next(4_000) as i64 * 1_000_000,
                    _ => 0,
                };
                batch.push(trade_at(
                    s,
                    &format!("{s}-{i}"),
                    &format!("{}.{:02}", 100 + next(20), next(100)),
                    &(1 + next(5)).to_string(),
                    base + i * 1_000_000_000 - late,
                ));
            }
        }
        sent += batch.len() as u64 / symbols.len() as u64;
        publish(&mut feed, batch).await;
        tokio::time::sleep(Duration::from_millis(30)).await;
    }
    for s in symbols {
        let ok = eventually(Duration::from_secs(30), || {
            let mut c = candles.clone();
            async move {
                c.get_aggregation_status(GetAggregationStatusRequest {
                    symbols: vec![s.into()],
                })
                .await
                .map(|r| r.into_inner().statuses[0].applied_sequence >= sent)
                .unwrap_or(false)
            }
        })
        .await;
        assert!(ok, "{s} applied");
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    let mut conn = redis_conn(&redis.url()).await;
    let status = |conn: &mut Conn, s: &str, f: &str| {
        let mut conn = conn.clone();
        let (s, f) = (s.to_string(), f.to_string());
        async move {
            redis::cmd("HGET")
                .arg(format!("tm:{{{s}}}:cstat"))
                .arg(f)
                .query_async::<Option<u64>>(&mut conn)
                .await
                .unwrap()
                .unwrap_or(0)
        }
    };
    for s in symbols {
        assert!(
            status(&mut conn, s, "verify_checked").await > 50 * 14 / 10,
            "{s}: the check ran over the stream"
        );
        assert_eq!(status(&mut conn, s, "verify_mismatches").await, 0, "{s}");
        assert_eq!(status(&mut conn, s, "verify_repaired").await, 0, "{s}");
        let late: u64 = status(&mut conn, s, "late_dropped").await;
        assert!(late > 0, "{s}: some trades were beyond the late window");
    }
    // And a full check of everything agrees.
    let verifier = Verifier {
        store: mesh.candles.as_ref().unwrap().store.clone(),
        history: None,
        flush_repairs: true,
        late_window_ns: 5_000_000_000,
        updates_max_len: 100_000,
    };
    for s in symbols {
        let mut i = info();
        i.symbol = s.into();
        let r = verifier.verify_symbol(&i, false).await.unwrap();
        assert_eq!((r.mismatched, r.unresolved()), (0, 0), "{r:?}");
        assert!(r.checked > 50, "{r:?}");
    }
    mesh.stop().await.unwrap();
}

/// A bounded check (the background one) starts a bounded number of trades
/// back and replays at most its budget per pass: the candles it covers are
/// compared as they become final, nothing is reported falsely.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bounded_check_starts_near_the_end_and_catches_up_pass_by_pass() {
    let redis = redis().await;
    let mut config = verify_config(&redis.url());
    config.history.backend = "none".into();
    let mesh = start(config).await;
    let mut feed = client(&mesh).await;
    register(&mut feed, SYMBOL, 2, 0).await;
    let candles = CandleQueryServiceClient::connect(mesh.endpoint())
        .await
        .unwrap();
    let base = base();
    let rows_in = minute_trades(base, 0..60);
    publish(&mut feed, to_trades(&rows_in, "p")).await;
    let n = rows_in.len() as u64;
    assert!(applied(&candles, n).await);
    let verifier = Verifier {
        store: mesh.candles.as_ref().unwrap().store.clone(),
        history: None,
        flush_repairs: false,
        late_window_ns: 60_000_000_000,
        updates_max_len: 1000,
    };
    let mut progress = None;
    // A budget of 30: the check starts 30 trades back (minute 52, :35 on).
    let first = verifier
        .pass(&info(), &mut progress, true, 30, false)
        .await
        .unwrap();
    assert_eq!(first.replayed, 30);
    assert_eq!(
        first.checked, 0,
        "coverage needs 100 sampled trades: {first:?}"
    );
    // More trades arrive; each pass replays at most 30 of them.
    let more = minute_trades(base, 60..90);
    publish(&mut feed, to_trades(&more, "q")).await;
    assert!(applied(&candles, n + more.len() as u64).await);
    let mut replayed = first.replayed;
    let mut checked = 0;
    for _ in 0..10 {
        let r = verifier
            .pass(&info(), &mut progress, true, 30, false)
            .await
            .unwrap();
        assert!(r.replayed <= 30);
        assert_eq!(r.mismatched, 0, "{r:?}");
        assert!(r.inconsistent.is_empty(), "{r:?}");
        replayed += r.replayed;
        checked += r.checked;
    }
    assert_eq!(replayed, 30 + more.len() as u64, "caught up");
    // Covered from the newest of trades 211..310 (minute 77, :20) plus the
    // late window, final up to the newest (89:50) less it: 1m 79..87 (9),
    // 3m 81 and 84, 5m 80; and by tiling the 3m of 78 and the 5m of 75 that
    // hold the bound.
    assert_eq!(checked, 9 + 2 + 1 + 2);
    mesh.stop().await.unwrap();
}
