//! The one test suite every [`CandleStore`] must pass. Backends call
//! [`run_all`] from their tests with a fresh, empty store (the embedded store
//! always; ScyllaDB when `TICKMESH_TEST_SCYLLA` names a node).
//!
//! Each check panics with a message naming what broke.

use tickmesh_calendar::Interval;

use crate::store::{CandleStore, StoredCandle, block_span};

const MINUTE_NS: i64 = 60_000_000_000;
/// 2024-02-28T23:00Z: one day before a leap day, so ranges cross blocks.
const T0: i64 = 1_709_161_200_000_000_000;

fn interval(text: &str) -> Interval {
    Interval::parse(text).expect("interval")
}

/// A deterministic candle `i` of `symbol` / `iv` (length `len_ns`).
pub fn candle(symbol: &str, iv: &str, i: i64, len_ns: i64) -> StoredCandle {
    let open = 6_700_000 + (i * 7919) % 5000;
    let high = open + (i * 31) % 700;
    let low = open - (i * 17) % 600;
    StoredCandle {
        symbol: symbol.into(),
        interval: interval(iv),
        open_ns: T0 + i * len_ns,
        close_ns: T0 + (i + 1) * len_ns,
        open,
        high,
        low,
        close: low + (i * 13) % (high - low + 1),
        volume: 1_000 + i128::from((i * 104_729) % 9_000_000),
        quote_volume: 67_000_000_000 + i128::from(i) * 1_234_567_891,
        trade_count: 1 + (i as u64 * 7) % 500,
        revision: 1 + (i as u64 % 3),
        price_scale: 2,
        quantity_scale: 5,
    }
}

fn series(symbol: &str, iv: &str, n: i64, len_ns: i64) -> Vec<StoredCandle> {
    (0..n).map(|i| candle(symbol, iv, i, len_ns)).collect()
}

/// Runs every check. `store` must start empty.
pub async fn run_all(store: &dyn CandleStore) {
    round_trip_is_exact(store).await;
    ranges_and_orders(store).await;
    paging_with_limits_sees_each_candle_once(store).await;
    upserts_are_idempotent(store).await;
    corrections_replace_candles(store).await;
    empty_ranges(store).await;
    many_symbols_and_intervals_stay_apart(store).await;
    extreme_values_survive(store).await;
}

async fn round_trip_is_exact(store: &dyn CandleStore) {
    // Three days of 1m candles (crossing block boundaries and the leap day).
    let candles = series("RT", "1m", 3 * 1440, MINUTE_NS);
    for chunk in candles.chunks(700) {
        store.upsert(chunk).await.expect("upsert");
    }
    let got = store
        .range("RT", interval("1m"), i64::MIN, i64::MAX, false, 10_000)
        .await
        .expect("range");
    assert_eq!(got.len(), candles.len(), "round trip: candle count");
    assert_eq!(got, candles, "round trip: every field of every candle");
}

async fn ranges_and_orders(store: &dyn CandleStore) {
    let candles = series("RO", "1h", 100, 60 * MINUTE_NS);
    store.upsert(&candles).await.expect("upsert");
    let from = candles[10].open_ns;
    let to = candles[40].open_ns;
    let asc = store
        .range("RO", interval("1h"), from, to, false, 1000)
        .await
        .expect("range");
    assert_eq!(
        asc,
        candles[10..40].to_vec(),
        "range [from, to) oldest first"
    );
    let desc = store
        .range("RO", interval("1h"), from, to, true, 1000)
        .await
        .expect("range");
    let mut want = candles[10..40].to_vec();
    want.reverse();
    assert_eq!(desc, want, "range newest first");
    // A `from` inside a candle excludes it (open times are compared).
    let mid = store
        .range("RO", interval("1h"), from + 1, to, false, 1000)
        .await
        .expect("range");
    assert_eq!(
        mid.first(),
        candles.get(11),
        "from is compared with open times"
    );
}

async fn paging_with_limits_sees_each_candle_once(store: &dyn CandleStore) {
    let candles = series("PG", "5m", 900, 5 * MINUTE_NS);
    store.upsert(&candles).await.expect("upsert");
    for newest_first in [false, true] {
        let mut seen = Vec::new();
        let (mut from, mut to) = (i64::MIN, i64::MAX);
        loop {
            let page = store
                .range("PG", interval("5m"), from, to, newest_first, 64)
                .await
                .expect("range");
            let Some(last) = page.last() else { break };
            if newest_first {
                to = last.open_ns;
            } else {
                from = last.open_ns + 1;
            }
            seen.extend(page);
        }
        let mut want = candles.clone();
        if newest_first {
            want.reverse();
        }
        assert_eq!(
            seen, want,
            "paging (newest first: {newest_first}) sees each candle exactly once"
        );
    }
}

async fn upserts_are_idempotent(store: &dyn CandleStore) {
    let candles = series("ID", "1m", 300, MINUTE_NS);
    store.upsert(&candles).await.expect("upsert");
    store.upsert(&candles).await.expect("upsert again");
    store
        .upsert(&candles[100..200])
        .await
        .expect("upsert part again");
    let got = store
        .range("ID", interval("1m"), i64::MIN, i64::MAX, false, 10_000)
        .await
        .expect("range");
    assert_eq!(
        got, candles,
        "writing the same candles again changes nothing"
    );
}

async fn corrections_replace_candles(store: &dyn CandleStore) {
    let mut candles = series("CR", "1m", 50, MINUTE_NS);
    store.upsert(&candles).await.expect("upsert");
    // A late trade raised the high of candle 20 and added volume.
    candles[20].high += 1000;
    candles[20].volume += 5;
    candles[20].quote_volume += 5 * i128::from(candles[20].high);
    candles[20].trade_count += 1;
    candles[20].revision += 1;
    store.upsert(&candles[20..21]).await.expect("correction");
    let got = store
        .range("CR", interval("1m"), i64::MIN, i64::MAX, false, 10_000)
        .await
        .expect("range");
    assert_eq!(
        got, candles,
        "a corrected candle replaces the old one, nothing else changes"
    );
}

async fn empty_ranges(store: &dyn CandleStore) {
    let got = store
        .range("NOTHING", interval("1m"), i64::MIN, i64::MAX, false, 10)
        .await
        .expect("range");
    assert!(got.is_empty(), "unknown symbol: empty");
    let candles = series("EM", "1m", 10, MINUTE_NS);
    store.upsert(&candles).await.expect("upsert");
    let far = T0 + 400 * block_span(interval("1m"));
    assert!(
        store
            .range("EM", interval("1m"), far, far + MINUTE_NS * 10, false, 10)
            .await
            .expect("range")
            .is_empty(),
        "range with no candles"
    );
    assert!(
        store
            .range("EM", interval("1m"), T0, T0, false, 10)
            .await
            .expect("range")
            .is_empty(),
        "empty [from, from)"
    );
    assert!(
        store
            .range("EM", interval("1m"), i64::MIN, i64::MAX, false, 0)
            .await
            .expect("range")
            .is_empty(),
        "limit 0"
    );
    assert!(store.upsert(&[]).await.is_ok(), "upserting nothing");
}

async fn many_symbols_and_intervals_stay_apart(store: &dyn CandleStore) {
    let mut all = Vec::new();
    for s in 0..40 {
        all.extend(series(&format!("MS{s:02}"), "1m", 30, MINUTE_NS));
        all.extend(series(&format!("MS{s:02}"), "1d", 5, 1440 * MINUTE_NS));
    }
    store.upsert(&all).await.expect("upsert");
    for s in [0, 17, 39] {
        let symbol = format!("MS{s:02}");
        let minutes = store
            .range(&symbol, interval("1m"), i64::MIN, i64::MAX, false, 1000)
            .await
            .expect("range");
        assert_eq!(minutes, series(&symbol, "1m", 30, MINUTE_NS), "{symbol} 1m");
        let days = store
            .range(&symbol, interval("1d"), i64::MIN, i64::MAX, false, 1000)
            .await
            .expect("range");
        assert_eq!(
            days,
            series(&symbol, "1d", 5, 1440 * MINUTE_NS),
            "{symbol} 1d"
        );
    }
}

async fn extreme_values_survive(store: &dyn CandleStore) {
    let mut c = candle("EX", "1M", 0, 29 * 1440 * MINUTE_NS);
    c.open = 1;
    c.low = 1;
    c.high = i64::MAX / 2;
    c.close = i64::MAX / 3;
    c.volume = i128::from(i64::MAX) * 1000;
    c.quote_volume = i128::MAX / 7;
    c.trade_count = u64::MAX / 5;
    c.revision = u64::MAX / 9;
    c.price_scale = 18;
    c.quantity_scale = 0;
    // A series keeps its instrument's scales (a block holds one pair).
    let mut zero = candle("EX", "1M", 1, 29 * 1440 * MINUTE_NS);
    zero.volume = 0;
    zero.quote_volume = 0;
    zero.price_scale = 18;
    zero.quantity_scale = 0;
    store
        .upsert(&[c.clone(), zero.clone()])
        .await
        .expect("upsert");
    let got = store
        .range("EX", interval("1M"), i64::MIN, i64::MAX, false, 10)
        .await
        .expect("range");
    assert_eq!(got, vec![c, zero], "extreme and zero values round trip");
}
