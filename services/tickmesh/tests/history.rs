//! The long-term tier: the flusher, a store outage, and queries across Redis
//! and the history store while data moves between them.

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use async_trait::async_trait;
use common::*;
use tickmesh::mesh::Mesh;
use tickmesh_api::candles::candle_query_service_client::CandleQueryServiceClient;
use tickmesh_api::candles::{Candle, CandleOrder, GetAggregationStatusRequest, GetCandlesRequest};
use tickmesh_calendar::Interval;
use tickmesh_history::{CandleStore, EmbeddedStore, StoreError, StoredCandle};
use tickmesh_runtime::config::Config;
use tokio::net::TcpListener;

/// The embedded store, with a switch that makes every call fail as an
/// unreachable backend would.
struct Flaky {
    inner: EmbeddedStore,
    down: AtomicBool,
    upserts: AtomicU64,
}

#[async_trait]
impl CandleStore for Flaky {
    async fn upsert(&self, candles: &[StoredCandle]) -> Result<(), StoreError> {
        if self.down.load(Ordering::SeqCst) {
            return Err(StoreError::Unavailable("test: store is down".into()));
        }
        self.upserts.fetch_add(1, Ordering::SeqCst);
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
    ) -> Result<Vec<StoredCandle>, StoreError> {
        if self.down.load(Ordering::SeqCst) {
            return Err(StoreError::Unavailable("test: store is down".into()));
        }
        self.inner
            .range(symbol, interval, from, to, newest_first, limit)
            .await
    }
    async fn size_on_disk(&self) -> Result<u64, StoreError> {
        self.inner.size_on_disk().await
    }
    fn name(&self) -> &'static str {
        "flaky"
    }
}

fn history_config(redis_url: &str) -> Config {
    let mut c = config(redis_url);
    c.candles.lease_ttl = Duration::from_secs(1);
    c.history.flush_interval = Duration::from_millis(200);
    c.history.hot_candles = 10;
    c
}

async fn start_with(config: Config, store: Arc<Flaky>) -> Mesh {
    Mesh::start_with(
        config,
        TcpListener::bind("127.0.0.1:0").await.unwrap(),
        Some(store),
    )
    .await
    .unwrap()
}

async fn status(c: &mut Candles, symbol: &str) -> tickmesh_api::candles::AggregationStatus {
    c.get_aggregation_status(GetAggregationStatusRequest {
        symbols: vec![symbol.into()],
    })
    .await
    .unwrap()
    .into_inner()
    .statuses
    .remove(0)
}

fn key(c: &Candle) -> (i64, String, String, String, String, String, u64) {
    (
        c.open_time.as_ref().unwrap().seconds,
        c.open.clone(),
        c.high.clone(),
        c.low.clone(),
        c.close.clone(),
        c.volume.clone(),
        c.trade_count,
    )
}

const MINUTE: i64 = 60_000_000_000;
const T0: i64 = 1_704_067_200_000_000_000; // 2024-01-01T00:00Z

/// Trade `i`: two per minute, distinct prices.
fn minute_trades(from: usize, to: usize) -> Vec<tickmesh_api::marketfeed::Trade> {
    (from..to)
        .flat_map(|m| {
            let t = T0 + m as i64 * MINUTE;
            [
                trade_at(
                    "BTCUSDT",
                    &format!("{m}a"),
                    &format!("{}.00", 1000 + m % 97),
                    "1",
                    t + 1,
                ),
                trade_at(
                    "BTCUSDT",
                    &format!("{m}b"),
                    &format!("{}.50", 1000 + m % 89),
                    "2",
                    t + 30_000_000_000,
                ),
            ]
        })
        .collect()
}

/// What the 1m candles must be: OHLCV per minute.
fn expected_minutes(n: usize) -> Vec<(i64, String, String, String, String, String, u64)> {
    (0..n)
        .map(|m| {
            let a = format!("{}.00", 1000 + m % 97);
            let b = format!("{}.50", 1000 + m % 89);
            let (hi, lo) = if a.parse::<f64>().unwrap() > b.parse::<f64>().unwrap() {
                (a.clone(), b.clone())
            } else {
                (b.clone(), a.clone())
            };
            (
                (T0 + m as i64 * MINUTE) / 1_000_000_000,
                a,
                hi,
                lo,
                b,
                "3.00000".to_string(),
                2,
            )
        })
        .collect()
}

async fn publish_minutes(feed: &mut Client, from: usize, to: usize) {
    for chunk in minute_trades(from, to).chunks(50) {
        assert_eq!(publish(feed, chunk.to_vec()).await.rejected, 0);
    }
}

async fn wait_flushed(c: &Candles, symbol: &str, applied: u64) -> bool {
    eventually(Duration::from_secs(30), || {
        let mut c = c.clone();
        let symbol = symbol.to_string();
        async move {
            let s = status(&mut c, &symbol).await;
            s.applied_sequence >= applied && s.unflushed_candles == 0 && s.last_flush_time.is_some()
        }
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn closed_candles_move_to_the_store_and_queries_join_both_tiers() {
    let redis = redis().await;
    let store = Arc::new(Flaky {
        inner: EmbeddedStore::open(std::path::Path::new(&temp_path("h.redb"))).unwrap(),
        down: AtomicBool::new(false),
        upserts: AtomicU64::new(0),
    });
    let mesh = start_with(history_config(&redis.url()), store.clone()).await;
    let mut feed = client(&mesh).await;
    register(&mut feed, "BTCUSDT", 2, 5).await;
    let mut c = CandleQueryServiceClient::connect(mesh.endpoint())
        .await
        .unwrap();
    publish_minutes(&mut feed, 0, 300).await;
    assert!(wait_flushed(&c, "BTCUSDT", 600).await, "backlog flushed");

    // Redis keeps only the hot tail; the store has the rest.
    let m1 = Interval::parse("1m").unwrap();
    let in_store = store
        .inner
        .range("BTCUSDT", m1, i64::MIN, i64::MAX, false, 10_000)
        .await
        .unwrap();
    assert_eq!(
        in_store.len(),
        299,
        "every closed minute is in the store (the last one is still open)"
    );
    let mut redis_conn = redis.conn();
    let hot: u64 = redis::cmd("ZCARD")
        .arg("tm:{BTCUSDT}:c:1m")
        .query_async(&mut redis_conn)
        .await
        .unwrap();
    assert!(
        hot <= 11,
        "redis trimmed to the hot tail after flushing: {hot}"
    );

    // Both orders, small pages: each candle exactly once, equal to the trades.
    let want = expected_minutes(300);
    for order in [CandleOrder::OldestFirst, CandleOrder::NewestFirst] {
        let mut got: Vec<_> = pages(&mut c, "BTCUSDT", "1m", 7, order)
            .await
            .iter()
            .map(key)
            .collect();
        if order == CandleOrder::NewestFirst {
            got.reverse();
        }
        assert_eq!(got, want, "{order:?}");
    }
    // A rollup across the tiers.
    let tens = pages(&mut c, "BTCUSDT", "10m", 1000, CandleOrder::OldestFirst).await;
    assert_eq!(tens.len(), 30);
    assert!(
        tens.iter().all(|t| t.trade_count == 20),
        "every 10m candle has its 20 trades"
    );

    // With the store down, what Redis still holds is served; older candles
    // fail clearly instead of coming back incomplete.
    store.down.store(true, Ordering::SeqCst);
    let recent = c
        .get_candles(GetCandlesRequest {
            symbol: "BTCUSDT".into(),
            interval: "1m".into(),
            page_size: 5,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        recent.candles.iter().map(key).collect::<Vec<_>>(),
        want[295..].iter().rev().cloned().collect::<Vec<_>>()
    );
    let err = c
        .get_candles(GetCandlesRequest {
            symbol: "BTCUSDT".into(),
            interval: "1m".into(),
            order: CandleOrder::OldestFirst as i32,
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), tonic::Code::Unavailable, "{err:?}");
    store.down.store(false, Ordering::SeqCst);
    mesh.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_store_outage_loses_and_duplicates_nothing_and_queries_stay_correct_throughout() {
    let redis = redis().await;
    let store = Arc::new(Flaky {
        inner: EmbeddedStore::open(std::path::Path::new(&temp_path("h.redb"))).unwrap(),
        down: AtomicBool::new(true),
        upserts: AtomicU64::new(0),
    });
    let mesh = start_with(history_config(&redis.url()), store.clone()).await;
    let mut feed = client(&mesh).await;
    register(&mut feed, "BTCUSDT", 2, 5).await;
    let mut c = CandleQueryServiceClient::connect(mesh.endpoint())
        .await
        .unwrap();

    // Ingest while the store is down: the backlog grows, nothing leaves Redis,
    // queries (from Redis alone: the store is down) are complete.
    publish_minutes(&mut feed, 0, 200).await;
    assert!(
        eventually(Duration::from_secs(20), || {
            let mut c = c.clone();
            async move { status(&mut c, "BTCUSDT").await.applied_sequence >= 400 }
        })
        .await
    );
    tokio::time::sleep(Duration::from_millis(600)).await; // several failed flush attempts
    let s = status(&mut c, "BTCUSDT").await;
    assert_eq!(
        s.unflushed_candles as usize,
        199 + closed_larger(200),
        "every closed candle waits"
    );
    assert!(s.last_flush_time.is_none());
    // Nothing proves Redis complete yet (no candle was ever trimmed from it),
    // so queries need the store: they fail clearly rather than answer from
    // Redis alone.
    let err = c
        .get_candles(GetCandlesRequest {
            symbol: "BTCUSDT".into(),
            interval: "1m".into(),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), tonic::Code::Unavailable, "{err:?}");
    store.down.store(false, Ordering::SeqCst);
    // Queries while the flusher drains the backlog: each page sequence sees
    // every candle exactly once.
    let want = expected_minutes(200);
    let mut rounds = 0;
    loop {
        let mut got: Vec<_> = pages(&mut c, "BTCUSDT", "1m", 9, CandleOrder::OldestFirst)
            .await
            .iter()
            .map(key)
            .collect();
        assert_eq!(
            got.len(),
            want.len(),
            "round {rounds}: count while flushing"
        );
        assert_eq!(got, want, "round {rounds}: content while flushing");
        got.clear();
        rounds += 1;
        if status(&mut c, "BTCUSDT").await.unflushed_candles == 0 {
            break;
        }
        assert!(rounds < 500, "the backlog drains");
    }
    // More ingest after recovery; then everything is in the store once.
    publish_minutes(&mut feed, 200, 260).await;
    assert!(wait_flushed(&c, "BTCUSDT", 520).await);
    let m1 = Interval::parse("1m").unwrap();
    let stored = store
        .inner
        .range("BTCUSDT", m1, i64::MIN, i64::MAX, false, 10_000)
        .await
        .unwrap();
    let opens: Vec<i64> = stored.iter().map(|c| c.open_ns).collect();
    let mut unique = opens.clone();
    unique.dedup();
    assert_eq!(opens, unique, "no candle twice in the store");
    assert_eq!(stored.len(), 259, "no closed candle lost");
    let got: Vec<_> = pages(&mut c, "BTCUSDT", "1m", 1000, CandleOrder::OldestFirst)
        .await
        .iter()
        .map(key)
        .collect();
    assert_eq!(got, expected_minutes(260));
    mesh.stop().await.unwrap();
}

/// Closed candles of the larger intervals after `minutes` minutes from T0
/// (a Monday, the first of a month and year).
fn closed_larger(minutes: usize) -> usize {
    let m = minutes as i64;
    [3, 5, 15, 30, 60, 120, 240, 360, 720]
        .iter()
        .map(|len| ((m - 1) / len) as usize)
        .sum()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cursor_older_than_the_log_recovers_from_the_store_then_goes_live() {
    let redis = redis().await;
    let store = Arc::new(Flaky {
        inner: EmbeddedStore::open(std::path::Path::new(&temp_path("h.redb"))).unwrap(),
        down: AtomicBool::new(false),
        upserts: AtomicU64::new(0),
    });
    let mut cfg = history_config(&redis.url());
    cfg.candles.updates_max_len = 50; // below the validated minimum, on purpose
    let mesh = start_with(cfg, store.clone()).await;
    let mut feed = client(&mesh).await;
    register(&mut feed, "BTCUSDT", 2, 5).await;
    let mut c = CandleQueryServiceClient::connect(mesh.endpoint())
        .await
        .unwrap();
    publish_minutes(&mut feed, 0, 20).await;
    assert!(wait_flushed(&c, "BTCUSDT", 40).await);

    let mut s = c
        .subscribe_candles(tickmesh_api::candles::SubscribeCandlesRequest {
            symbol: "BTCUSDT".into(),
            intervals: vec!["1m".into()],
            cursor: String::new(),
            indicators: Vec::new(),
        })
        .await
        .unwrap()
        .into_inner();
    let first = s.message().await.unwrap().unwrap();
    assert!(
        first.cursor.contains('~'),
        "the cursor carries the newest candle: {}",
        first.cursor
    );
    drop(s);

    // Away for 200 minutes: the updates log wraps, old minutes leave Redis.
    publish_minutes(&mut feed, 20, 220).await;
    assert!(wait_flushed(&c, "BTCUSDT", 440).await);
    let hot: u64 = redis::cmd("ZCARD")
        .arg("tm:{BTCUSDT}:c:1m")
        .query_async(&mut redis.conn())
        .await
        .unwrap();
    assert!(
        hot < 50,
        "most minutes are only in the store now: {hot} in redis"
    );

    let mut s = c
        .subscribe_candles(tickmesh_api::candles::SubscribeCandlesRequest {
            symbol: "BTCUSDT".into(),
            intervals: vec!["1m".into()],
            cursor: first.cursor,
            indicators: Vec::new(),
        })
        .await
        .unwrap()
        .into_inner();
    let mut recovered: std::collections::BTreeMap<i64, Candle> = std::collections::BTreeMap::new();
    loop {
        let m = tokio::time::timeout(Duration::from_secs(10), s.message())
            .await
            .unwrap()
            .unwrap()
            .unwrap();
        let recovery = m.snapshot;
        for candle in m.candles {
            recovered.insert(candle.open_time.as_ref().unwrap().seconds, candle);
        }
        if !recovery {
            break;
        }
        if recovered.contains_key(&((T0 + 219 * MINUTE) / 1_000_000_000)) {
            break;
        }
    }
    let want = expected_minutes(220);
    // Everything from the minute the client had (minus the late window) on.
    for w in &want[19..] {
        let got = recovered
            .get(&w.0)
            .unwrap_or_else(|| panic!("minute {} missing from the recovery", w.0));
        assert_eq!(key(got), *w);
    }
    // And then it is live again.
    publish_minutes(&mut feed, 220, 221).await;
    let live_minute = (T0 + 220 * MINUTE) / 1_000_000_000;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    let mut seen_live = false;
    while tokio::time::Instant::now() < deadline && !seen_live {
        let m = tokio::time::timeout(Duration::from_secs(10), s.message())
            .await
            .unwrap()
            .unwrap()
            .unwrap();
        seen_live = m
            .candles
            .iter()
            .any(|c| c.open_time.as_ref().unwrap().seconds == live_minute);
    }
    assert!(seen_live, "live updates follow the recovery");
    mesh.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn history_redis_never_held_is_served_from_the_store() {
    // As after Redis lost its data, or an import straight into the store.
    let redis = redis().await;
    let store = Arc::new(Flaky {
        inner: EmbeddedStore::open(std::path::Path::new(&temp_path("h.redb"))).unwrap(),
        down: AtomicBool::new(false),
        upserts: AtomicU64::new(0),
    });
    let m1 = Interval::parse("1m").unwrap();
    let old: Vec<StoredCandle> = (0..50)
        .map(|i| StoredCandle {
            symbol: "BTCUSDT".into(),
            interval: m1,
            open_ns: T0 + i * MINUTE,
            close_ns: T0 + (i + 1) * MINUTE,
            open: 100_000 + i,
            high: 100_100 + i,
            low: 99_900 + i,
            close: 100_050 + i,
            volume: 300_000,
            quote_volume: 30_000_000_000 + i128::from(i),
            trade_count: 2,
            revision: 3,
            price_scale: 2,
            quantity_scale: 5,
        })
        .collect();
    store.inner.upsert(&old).await.unwrap();
    let mesh = start_with(history_config(&redis.url()), store.clone()).await;
    let mut feed = client(&mesh).await;
    register(&mut feed, "BTCUSDT", 2, 5).await;
    let mut c = CandleQueryServiceClient::connect(mesh.endpoint())
        .await
        .unwrap();
    let got = pages(&mut c, "BTCUSDT", "1m", 20, CandleOrder::NewestFirst).await;
    assert_eq!(got.len(), 50);
    assert_eq!(
        (
            got[0].open.as_str(),
            got[0].close.as_str(),
            got[0].revision,
            got[0].closed
        ),
        ("1000.49", "1000.99", 3, true)
    );
    mesh.stop().await.unwrap();
}
