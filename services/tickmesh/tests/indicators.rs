//! Indicators on candles end to end: GetIndicators against the batch
//! computation of `tickmesh_indicators` (itself checked against TA-Lib) over
//! the candles GetCandles returns, across pages, orders, ranges, rollups and
//! checkpoints; SubscribeCandles with indicators through revisions, late
//! corrections, a killed aggregator and a resume; the latest values in Redis.

mod common;

use std::collections::BTreeMap;
use std::time::Duration;

use common::*;
use tickmesh_api::candles::{
    Candle, CandleOrder, GetCandlesRequest, GetIndicatorsRequest, SubscribeCandlesRequest,
};
use tickmesh_api::marketfeed::Trade;
use tickmesh_candles::indicators::render::{IndicatorValue, from_pb, render};
use tickmesh_core::decimal::parse_units;
use tickmesh_indicators::{Bar, IndicatorSet, Scales, parse_indicators, session_key};
use tickmesh_runtime::proto_time::nanos_to_timestamp;
use tonic::Code;

const MINUTE: i64 = 60_000_000_000;
/// 2024-01-01T00:00Z.
const T0: i64 = 1_704_067_200_000_000_000;
const SET: [&str; 9] = [
    "sma(20)",
    "ema(12)",
    "wma(10)",
    "rsi(14)",
    "macd(12,26,9)",
    "bbands(20,2)",
    "atr(14)",
    "vwap",
    "obv",
];

async fn publish_all(client: &mut Client, trades: &[Trade]) {
    for chunk in trades.chunks(500) {
        let r = publish(client, chunk.to_vec()).await;
        assert_eq!(r.rejected, 0, "{:?}", r.rejections.first());
    }
}

/// A random walk of 1m candles (1 to 3 trades each, some minutes without
/// trades), deterministic.
fn walk(symbol: &str, minutes: i64, from_ns: i64, seed: u64) -> Vec<Trade> {
    let mut state = seed;
    let mut next = move || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        state
    };
    let mut price: i64 = 100_000; // 100.000 at scale 3
    let mut out = Vec::new();
    for m in 0..minutes {
        if next() % 11 == 0 {
            continue;
        }
        for k in 0..1 + next() % 3 {
            price = (price + (next() % 801) as i64 - 400).max(1_000);
            let qty = 1 + next() % 5_000;
            out.push(trade_at(
                symbol,
                &format!("{m}-{k}"),
                &format!("{}.{:03}", price / 1000, price % 1000),
                &format!("{}.{:02}", qty / 100, qty % 100),
                from_ns + m * MINUTE + k as i64 * 1_000_000_000,
            ));
        }
    }
    out
}

/// What the indicators crate computes over `candles` (the whole series,
/// oldest first), rendered as the service renders it.
fn expected(
    candles: &[Candle],
    indicators: &[&str],
    scales: (u32, u32),
    tz: chrono_tz::Tz,
) -> Vec<Vec<IndicatorValue>> {
    let set = IndicatorSet::new(
        parse_indicators(indicators).unwrap(),
        Scales::new(scales.0, scales.1).unwrap(),
    );
    let bars: Vec<Bar> = candles
        .iter()
        .map(|c| {
            let open_ns = c.open_time.as_ref().unwrap().seconds * 1_000_000_000;
            Bar {
                open_ns,
                high: parse_units(&c.high, scales.0).unwrap(),
                low: parse_units(&c.low, scales.0).unwrap(),
                close: parse_units(&c.close, scales.0).unwrap(),
                volume: i128::from(parse_units(&c.volume, scales.1).unwrap()),
                session: session_key(open_ns, tz),
            }
        })
        .collect();
    set.compute(&bars)
        .unwrap()
        .iter()
        .map(|r| render(&set, r))
        .collect()
}

fn values_of(c: &Candle) -> Vec<IndicatorValue> {
    c.indicators.iter().map(from_pb).collect()
}

fn open_s(c: &Candle) -> i64 {
    c.open_time.as_ref().unwrap().seconds
}

/// GetIndicators through every page.
async fn all_indicators(c: &mut Candles, mut request: GetIndicatorsRequest) -> Vec<Candle> {
    let mut out = Vec::new();
    loop {
        let page = c
            .get_indicators(request.clone())
            .await
            .unwrap()
            .into_inner();
        out.extend(page.candles);
        if page.next_page_token.is_empty() {
            return out;
        }
        request.page_token = page.next_page_token;
    }
}

fn request(
    symbol: &str,
    interval: &str,
    indicators: &[&str],
    page_size: i32,
    oldest_first: bool,
) -> GetIndicatorsRequest {
    GetIndicatorsRequest {
        symbol: symbol.into(),
        interval: interval.into(),
        indicators: indicators.iter().map(|s| s.to_string()).collect(),
        page_size,
        order: if oldest_first {
            CandleOrder::OldestFirst
        } else {
            CandleOrder::NewestFirst
        } as i32,
        ..Default::default()
    }
}

/// Asserts the pages carry the same candles as GetCandles with the values
/// the batch computation gives at each.
fn assert_aligned(got: &[Candle], series: &[Candle], want: &[Vec<IndicatorValue>], what: &str) {
    let index: BTreeMap<i64, usize> = series
        .iter()
        .enumerate()
        .map(|(i, c)| (open_s(c), i))
        .collect();
    for c in got {
        let i = *index
            .get(&open_s(c))
            .unwrap_or_else(|| panic!("{what}: candle {} not in GetCandles", open_s(c)));
        let mut bare = c.clone();
        bare.indicators.clear();
        assert_eq!(bare, series[i], "{what}: the candle itself");
        assert_eq!(
            values_of(c),
            want[i],
            "{what}: values at candle {i} ({})",
            open_s(c)
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn get_indicators_gives_the_values_of_the_whole_series_on_every_page_order_and_range() {
    let redis = redis().await;
    let mesh = start(candle_config(&redis.url())).await;
    let mut feed = client(&mesh).await;
    let mut candles = candles_client(&mesh).await;
    register_zone(&mut feed, "SYN", 3, 2, "America/New_York").await;
    let trades = walk("SYN", 2_600, T0, 0x9e37_79b9_7f4a_7c15);
    publish_all(&mut feed, &trades).await;
    assert!(applied(&candles, "SYN", trades.len() as u64).await);
    let tz: chrono_tz::Tz = "America/New_York".parse().unwrap();
    // The newest candle closes by the clock (close grace) soon after.
    assert!(
        eventually(Duration::from_secs(10), || {
            let mut c = candles.clone();
            async move {
                let newest = c
                    .get_candles(GetCandlesRequest {
                        symbol: "SYN".into(),
                        interval: "1Y".into(),
                        page_size: 1,
                        ..Default::default()
                    })
                    .await
                    .unwrap()
                    .into_inner()
                    .candles;
                newest.first().is_some_and(|c| c.closed)
            }
        })
        .await
    );

    // The flusher moves closed candles to the history store and trims Redis
    // to its hot candles: the series spans both tiers.
    let mut conn = redis.conn();
    assert!(
        eventually(Duration::from_secs(20), || {
            let mut conn = conn.clone();
            async move {
                let hot: u64 = redis::cmd("ZCARD")
                    .arg("tm:{SYN}:c:1m")
                    .query_async(&mut conn)
                    .await
                    .unwrap();
                hot <= 1_440
            }
        })
        .await,
        "Redis trimmed to its hot candles"
    );
    let series = all_candles(&mut candles, "SYN", "1m", 1000).await;
    assert!(series.len() > 2_000, "{} candles", series.len());
    let want = expected(&series, &SET, (3, 2), tz);
    // Warm-up is explicit: the first candle has no SMA(20), the 20th has.
    assert!(want[0][0].warming_up && want[0][0].outputs[0].1.is_none());
    assert!(!want[19][0].warming_up && want[19][0].outputs[0].1.is_some());

    // Oldest first, pages of 700: every candle once, in order.
    let got = all_indicators(&mut candles, request("SYN", "1m", &SET, 700, true)).await;
    assert_eq!(got.len(), series.len());
    assert_aligned(&got, &series, &want, "oldest first");
    // Newest first, pages of 333: the same values, reversed.
    let got = all_indicators(&mut candles, request("SYN", "1m", &SET, 333, false)).await;
    assert_eq!(got.len(), series.len());
    assert!(open_s(&got[0]) > open_s(&got[1]));
    assert_aligned(&got, &series, &want, "newest first");

    // A range in the middle gives the values of the whole series there, not
    // a series that starts at the range.
    let mut ranged = request("SYN", "1m", &SET, 1000, true);
    ranged.start_time = Some(nanos_to_timestamp(T0 + 1_500 * MINUTE));
    ranged.end_time = Some(nanos_to_timestamp(T0 + 1_700 * MINUTE));
    let got = all_indicators(&mut candles, ranged).await;
    assert!(got.len() > 150, "{}", got.len());
    assert!(
        got.iter().all(|c| !c.indicators[1].warming_up),
        "ema is warm in the middle of the series"
    );
    assert_aligned(&got, &series, &want, "range");

    // Checkpoints every 1,000 final candles were kept, and used values equal
    // fresh ones: drop them, bump the epoch, query again.
    let set_key =
        IndicatorSet::new(parse_indicators(&SET).unwrap(), Scales::new(3, 2).unwrap()).key();
    let set_id = format!(
        "{:016x}",
        tickmesh_core::page_token::fingerprint(&[&set_key])
    );
    let ck = format!("tm:{{SYN}}:ind:1m:{set_id}:ck");
    let kept: u64 = redis::cmd("ZCARD")
        .arg(&ck)
        .query_async(&mut conn)
        .await
        .unwrap();
    assert_eq!(
        kept,
        series.len() as u64 / 1000,
        "one checkpoint per 1,000 final candles"
    );
    let ttl: i64 = redis::cmd("TTL")
        .arg(&ck)
        .query_async(&mut conn)
        .await
        .unwrap();
    assert!(ttl > 6 * 24 * 3600, "checkpoints expire when unused: {ttl}");
    let _: i64 = redis::cmd("HINCRBY")
        .arg("tm:{SYN}:cstat")
        .arg("ind_epoch")
        .arg(1)
        .query_async(&mut conn)
        .await
        .unwrap();
    let mut tail = request("SYN", "1m", &SET, 500, false);
    tail.end_time = Some(nanos_to_timestamp(T0 + 2_300 * MINUTE));
    let got = all_indicators(&mut candles, tail.clone()).await;
    assert_aligned(&got, &series, &want, "after an epoch bump");
    let members: Vec<String> = redis::cmd("ZRANGE")
        .arg(&ck)
        .arg(0)
        .arg(-1)
        .query_async(&mut conn)
        .await
        .unwrap();
    assert!(
        !members.is_empty() && members.iter().all(|m| m.starts_with("1|")),
        "stale checkpoints replaced"
    );
    let _: i64 = redis::cmd("DEL")
        .arg(&ck)
        .query_async(&mut conn)
        .await
        .unwrap();
    let again = all_indicators(&mut candles, tail).await;
    assert_eq!(
        again, got,
        "without checkpoints, from the first candle: the same"
    );

    // A rolled-up interval (not stored) and a day interval, with VWAP's
    // sessions at New York midnight.
    for interval in ["10m", "1h", "1d"] {
        let series = all_candles(&mut candles, "SYN", interval, 1000).await;
        let want = expected(&series, &SET, (3, 2), tz);
        let got = all_indicators(&mut candles, request("SYN", interval, &SET, 100, false)).await;
        assert_eq!(got.len(), series.len(), "{interval}");
        assert_aligned(&got, &series, &want, interval);
    }

    // The first page newest first keeps the newest candle's values as the
    // set's latest in Redis, with the revisions they were computed from.
    let mut newest = candles
        .get_indicators(request("SYN", "1m", &["sma(20)", "obv"], 10, false))
        .await
        .unwrap()
        .into_inner()
        .candles;
    newest.truncate(1);
    assert_eq!(open_s(&newest[0]), open_s(series.last().unwrap()));
    let small = IndicatorSet::new(
        parse_indicators(&["sma(20)", "obv"]).unwrap(),
        Scales::new(3, 2).unwrap(),
    );
    let small_id = format!(
        "{:016x}",
        tickmesh_core::page_token::fingerprint(&[&small.key()])
    );
    let stored: BTreeMap<String, String> = redis::cmd("HGETALL")
        .arg(format!("tm:{{SYN}}:ind:1m:{small_id}:last"))
        .query_async(&mut conn)
        .await
        .unwrap();
    assert_eq!(stored["open_s"], open_s(&newest[0]).to_string());
    assert_eq!(stored["revision"], newest[0].revision.to_string());
    let stored_values: Vec<IndicatorValue> = serde_json::from_str(&stored["values"]).unwrap();
    assert_eq!(stored_values, values_of(&newest[0]));
    assert!(
        stored["basis"].starts_with(&format!("{}:{},", open_s(&newest[0]), newest[0].revision)),
        "{}",
        stored["basis"]
    );
    let again = candles
        .get_indicators(request("SYN", "1m", &["sma(20)", "obv"], 1, false))
        .await
        .unwrap()
        .into_inner()
        .candles;
    assert_eq!(again, newest, "answered from the latest values");
    mesh.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_indicator_requests_are_refused_with_the_field_and_reason() {
    let redis = redis().await;
    let mesh = start(candle_config(&redis.url())).await;
    let mut feed = client(&mesh).await;
    let mut candles = candles_client(&mesh).await;
    register(&mut feed, "BTCUSDT", 3, 2).await;
    let trades = walk("BTCUSDT", 30, T0, 7);
    publish_all(&mut feed, &trades).await;
    assert!(applied(&candles, "BTCUSDT", trades.len() as u64).await);
    let refused = |indicators: &[&str]| request("BTCUSDT", "1m", indicators, 10, false);
    for (indicators, field, reason) in [
        (vec![], "indicators", "at least one"),
        (
            vec!["sma(20)", "foo(3)"],
            "indicators[1]",
            "unknown indicator",
        ),
        (vec!["sma(1)"], "indicators[0]", "period"),
        (vec!["macd(26,12,9)"], "indicators[0]", "less than"),
        (vec!["bbands(20,0)"], "indicators[0]", ""),
        (vec!["sma(x)"], "indicators[0]", ""),
    ] {
        let err = candles
            .get_indicators(refused(&indicators))
            .await
            .unwrap_err();
        assert_eq!(err.code(), Code::InvalidArgument, "{indicators:?}");
        let details =
            tonic_types::StatusExt::get_details_bad_request(&err).expect("field violations");
        let v = details
            .field_violations
            .iter()
            .find(|v| v.field == field)
            .unwrap_or_else(|| panic!("{indicators:?}: no violation on {field}: {err:?}"));
        assert!(
            v.description.to_lowercase().contains(reason),
            "{indicators:?}: {}",
            v.description
        );
    }
    let many: Vec<String> = (2..20).map(|n| format!("sma({n})")).collect();
    let many: Vec<&str> = many.iter().map(String::as_str).collect();
    let err = candles.get_indicators(refused(&many)).await.unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument);
    // A token of one indicator set does not page another.
    let page = candles
        .get_indicators(refused(&["sma(5)"]))
        .await
        .unwrap()
        .into_inner();
    assert!(!page.next_page_token.is_empty());
    let mut other = refused(&["sma(6)"]);
    other.page_token = page.next_page_token.clone();
    let err = candles.get_indicators(other).await.unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument);
    assert!(err.message().contains("page_token"), "{}", err.message());
    // Bad interval and indicators together: both reported.
    let mut both = refused(&["nope"]);
    both.interval = "7x".into();
    let err = candles.get_indicators(both).await.unwrap_err();
    assert!(
        err.message().contains("interval") && err.message().contains("indicators[0]"),
        "{}",
        err.message()
    );
    // SubscribeCandles checks them the same way.
    let err = candles
        .subscribe_candles(SubscribeCandlesRequest {
            symbol: "BTCUSDT".into(),
            intervals: vec!["1m".into()],
            cursor: String::new(),
            indicators: vec!["rsi(0)".into()],
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument);
    assert!(err.message().contains("indicators[0]"), "{}", err.message());
    mesh.stop().await.unwrap();
}

async fn next_message(
    s: &mut tonic::Streaming<tickmesh_api::candles::SubscribeCandlesResponse>,
) -> Option<tickmesh_api::candles::SubscribeCandlesResponse> {
    tokio::time::timeout(Duration::from_secs(10), s.message())
        .await
        .ok()
        .and_then(|m| m.ok().flatten())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn live_values_are_revised_with_the_candle_final_on_close_and_survive_a_killed_aggregator() {
    const LIVE: [&str; 5] = ["sma(5)", "ema(3)", "rsi(3)", "vwap", "obv"];
    let redis = redis().await;
    let a = start(candle_config(&redis.url())).await;
    // B serves subscriptions only; A aggregates until it is killed, then C.
    let mut b_config = candle_config(&redis.url());
    b_config.candles.aggregate = false;
    let b = start(b_config).await;
    let mut feed = client(&b).await;
    register(&mut feed, "LIVE", 3, 3).await;
    let mut on_b = candles_client(&b).await;
    let history = walk("LIVE", 40, T0, 11);
    publish_all(&mut feed, &history).await;
    assert!(applied(&on_b, "LIVE", history.len() as u64).await);

    let start_series = all_candles(&mut on_b, "LIVE", "1m", 1000).await;
    let subscribe = |cursor: String| SubscribeCandlesRequest {
        symbol: "LIVE".into(),
        intervals: vec!["1m".into()],
        cursor,
        indicators: LIVE.iter().map(|s| s.to_string()).collect(),
    };
    let mut s = on_b
        .subscribe_candles(subscribe(String::new()))
        .await
        .unwrap()
        .into_inner();
    let snapshot = next_message(&mut s).await.expect("snapshot");
    assert!(snapshot.snapshot);
    // Every state of every candle received, in order.
    let mut seen: Vec<Candle> = snapshot.candles.clone();
    let mut cursor = snapshot.cursor.clone();
    let seq = std::sync::atomic::AtomicU64::new(history.len() as u64);
    let live_trade = |m: i64, k: i64, price: &str| {
        seq.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        trade_at(
            "LIVE",
            &format!("live-{m}-{k}"),
            price,
            "1.5",
            T0 + m * MINUTE + k * 1_000_000_000,
        )
    };
    // Minute 40 revised three times, then minute 41 opens (minute 40 closes).
    for (k, price) in [(0, "101.00"), (1, "109.00"), (2, "95.50")] {
        publish_all(&mut feed, &[live_trade(40, k, price)]).await;
        assert!(
            applied(
                &on_b,
                "LIVE",
                seq.load(std::sync::atomic::Ordering::Relaxed)
            )
            .await
        );
    }
    publish_all(&mut feed, &[live_trade(41, 0, "96.00")]).await;
    // A late trade corrects the closed minute 40 (inside the late window).
    publish_all(&mut feed, &[live_trade(40, 30, "120.00")]).await;
    assert!(
        applied(
            &on_b,
            "LIVE",
            seq.load(std::sync::atomic::Ordering::Relaxed)
        )
        .await
    );
    // The aggregator dies holding the lease; C takes over; more minutes.
    a.abort();
    let c = start(candle_config(&redis.url())).await;
    for m in 42..46 {
        publish_all(
            &mut feed,
            &[
                live_trade(m, 0, &format!("{}.25", 90 + m)),
                live_trade(m, 5, &format!("{}.75", 91 + m)),
            ],
        )
        .await;
    }
    assert!(
        applied(
            &on_b,
            "LIVE",
            seq.load(std::sync::atomic::Ordering::Relaxed)
        )
        .await
    );
    // Read until minute 45 has both its trades.
    while !seen
        .iter()
        .any(|c| open_s(c) == (T0 + 45 * MINUTE) / 1_000_000_000 && c.trade_count == 2)
    {
        let m = next_message(&mut s).await.expect("live updates");
        cursor = m.cursor.clone();
        seen.extend(m.candles);
    }
    drop(s);
    // Missed while away, then resumed with the cursor.
    publish_all(
        &mut feed,
        &[live_trade(46, 0, "88.00"), live_trade(47, 0, "87.00")],
    )
    .await;
    assert!(
        applied(
            &on_b,
            "LIVE",
            seq.load(std::sync::atomic::Ordering::Relaxed)
        )
        .await
    );
    let mut s = on_b
        .subscribe_candles(subscribe(cursor))
        .await
        .unwrap()
        .into_inner();
    // Until minute 47 is closed by the clock (close grace).
    while !seen
        .iter()
        .any(|c| open_s(c) == (T0 + 47 * MINUTE) / 1_000_000_000 && c.closed)
    {
        let m = next_message(&mut s).await.expect("resumed updates");
        assert!(!m.snapshot, "resumed from the cursor");
        seen.extend(m.candles);
    }

    // Every state sent carries the values of exactly that state, over the
    // states of the earlier candles sent before it (the history as stored at
    // the start).
    let series = all_candles(&mut on_b, "LIVE", "1m", 1000).await;
    let mut known: BTreeMap<i64, Candle> = start_series
        .iter()
        .map(|c| (open_s(c), c.clone()))
        .collect();
    let mut revisions: BTreeMap<i64, Vec<u64>> = BTreeMap::new();
    for state in &seen {
        assert_eq!(
            state.indicators.len(),
            LIVE.len(),
            "every candle carries the set"
        );
        let mut this = state.clone();
        this.indicators.clear();
        let mut prefix: Vec<Candle> = known
            .range(..open_s(state))
            .map(|(_, c)| c.clone())
            .collect();
        prefix.push(this.clone());
        let want = expected(&prefix, &LIVE, (3, 3), chrono_tz::Tz::UTC);
        assert_eq!(
            values_of(state),
            *want.last().unwrap(),
            "candle {} at revision {}",
            open_s(state),
            state.revision
        );
        if known
            .get(&open_s(state))
            .is_none_or(|k| k.revision <= state.revision)
        {
            known.insert(open_s(state), this);
        }
        revisions
            .entry(open_s(state))
            .or_default()
            .push(state.revision);
    }
    let m40 = (T0 + 40 * MINUTE) / 1_000_000_000;
    assert!(
        revisions[&m40].len() >= 4,
        "minute 40 revised live and corrected: {:?}",
        revisions[&m40]
    );
    // The last state of each candle has the values GetIndicators gives.
    let got = all_indicators(&mut on_b, request("LIVE", "1m", &LIVE, 1000, true)).await;
    let by_open: BTreeMap<i64, &Candle> = got.iter().map(|c| (open_s(c), c)).collect();
    let mut last: BTreeMap<i64, &Candle> = BTreeMap::new();
    for state in &seen {
        last.insert(open_s(state), state);
    }
    assert_eq!(
        last.len(),
        series.len() - start_series.len() + 1,
        "every live candle sent"
    );
    for (open, state) in &last {
        assert!(state.closed, "{open} closed");
        assert_eq!(
            state.revision, by_open[open].revision,
            "{open}: newest state"
        );
        assert_eq!(
            values_of(state),
            values_of(by_open[open]),
            "final values of {open}"
        );
    }
    let corrected = last[&m40];
    assert!(
        corrected.closed && corrected.high == "120.000",
        "the late trade is in: {corrected:?}"
    );
    assert_eq!(values_of(corrected), values_of(by_open[&m40]));
    b.stop().await.unwrap();
    c.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_newest_values_follow_a_late_correction_of_an_older_candle() {
    let redis = redis().await;
    let mesh = start(candle_config(&redis.url())).await;
    let mut feed = client(&mesh).await;
    let mut candles = candles_client(&mesh).await;
    register(&mut feed, "CORR", 3, 2).await;
    let trades = walk("CORR", 12, T0, 5);
    publish_all(&mut feed, &trades).await;
    assert!(applied(&candles, "CORR", trades.len() as u64).await);
    let set = ["obv", "sma(3)"];
    let newest = |page_size: i32| request("CORR", "1m", &set, page_size, false);
    // A page of 10 keeps the newest values as the set's latest; a page of 1
    // is then answered from them.
    let ten = candles
        .get_indicators(newest(10))
        .await
        .unwrap()
        .into_inner()
        .candles;
    let one = candles
        .get_indicators(newest(1))
        .await
        .unwrap()
        .into_inner()
        .candles;
    assert_eq!(one[0], ten[0]);
    // A late trade corrects the candle before the newest: the newest candle's
    // revision stays, its OBV and SMA change.
    let before = &ten[1];
    let late = trade_at(
        "CORR",
        "late-1",
        "150.000",
        "99.00",
        before.open_time.as_ref().unwrap().seconds * 1_000_000_000 + 30_000_000_000,
    );
    publish_all(&mut feed, &[late]).await;
    assert!(applied(&candles, "CORR", trades.len() as u64 + 1).await);
    let fresh = candles
        .get_indicators(newest(2))
        .await
        .unwrap()
        .into_inner()
        .candles;
    assert!(
        fresh[1].revision > before.revision,
        "the older candle was corrected"
    );
    assert_eq!(
        fresh[0].revision, ten[0].revision,
        "the newest candle did not change"
    );
    assert_ne!(values_of(&fresh[0]), values_of(&ten[0]), "its values did");
    let one = candles
        .get_indicators(newest(1))
        .await
        .unwrap()
        .into_inner()
        .candles;
    assert_eq!(
        values_of(&one[0]),
        values_of(&fresh[0]),
        "not the stale latest values"
    );
    mesh.stop().await.unwrap();
}

/// A candle's new revision that leaves its bar as it was (it closes with no
/// trade after its last state) changes no newer candle's values, so the
/// stream re-sends none; one that moves its close (a late trade) re-sends the
/// newer candle with its revised values. The states are written straight to
/// the updates log, in the order an aggregator may write them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_closing_revision_with_the_same_bar_resends_no_newer_candle() {
    use tickmesh_candles::candle::Candle as Stored;
    let redis = redis().await;
    let mut config = candle_config(&redis.url());
    config.candles.aggregate = false;
    let mesh = start(config).await;
    let mut feed = client(&mesh).await;
    register(&mut feed, "SAME", 2, 2).await;
    let mut on = candles_client(&mesh).await;
    let mut s = on
        .subscribe_candles(SubscribeCandlesRequest {
            symbol: "SAME".into(),
            intervals: vec!["1m".into()],
            cursor: String::new(),
            indicators: vec!["sma(2)".into()],
        })
        .await
        .unwrap()
        .into_inner();
    assert!(next_message(&mut s).await.expect("snapshot").snapshot);

    let interval = tickmesh_calendar::Interval::parse("1m").unwrap();
    let state = |minute: i64, close: i64, revision: u64, closed: bool| {
        let open_ns = T0 + minute * MINUTE;
        Stored {
            interval,
            bucket: interval.bucket(open_ns, chrono_tz::Tz::UTC),
            open: close,
            high: close,
            low: close,
            close,
            volume: 100,
            quote_volume: i128::from(close) * 100,
            trade_count: 1,
            first: (open_ns + 1_000_000_000, revision),
            last: (open_ns + 1_000_000_000, revision),
            revision,
            closed,
            price_scale: 2,
            quantity_scale: 2,
            updated_ns: 0,
        }
    };
    let conn = redis.conn();
    let log = |states: Vec<Stored>| {
        let mut conn = conn.clone();
        async move {
            for c in states {
                let _: String = redis::cmd("XADD")
                    .arg("tm:{SAME}:cupd")
                    .arg("*")
                    .arg("c")
                    .arg(c.encode())
                    .query_async(&mut conn)
                    .await
                    .unwrap();
            }
        }
    };
    let sma = |c: &Candle| c.indicators[0].outputs[0].value.clone();
    let key = |c: &Candle| (open_s(c), c.revision);
    let (x, y) = (
        (T0 + 10 * MINUTE) / 1_000_000_000,
        (T0 + 11 * MINUTE) / 1_000_000_000,
    );

    // Minute 10 opens, minute 11 opens, then minute 10's closing state
    // (same bar, next revision) arrives after it.
    log(vec![
        state(10, 10_000, 1, false),
        state(11, 10_100, 1, false),
        state(10, 10_000, 2, true),
    ])
    .await;
    let mut got: Vec<Candle> = Vec::new();
    while !got.iter().any(|c| key(c) == (x, 2)) {
        let m = next_message(&mut s).await.expect("updates");
        if m.candles.iter().any(|c| key(c) == (x, 2)) {
            assert_eq!(
                m.candles.last().map(key),
                Some((x, 2)),
                "no newer candle re-sent after a closing revision with the same bar"
            );
        }
        got.extend(m.candles);
    }
    assert_eq!(
        got.iter().map(key).collect::<Vec<_>>(),
        vec![(x, 1), (y, 1), (x, 2)]
    );
    assert_eq!(sma(&got[1]).as_deref(), Some("100.5000000000"));

    // A late trade moves minute 10's close: minute 11 follows with new values.
    log(vec![state(10, 9_000, 3, true)]).await;
    let m = next_message(&mut s).await.expect("the correction");
    assert_eq!(
        m.candles.iter().map(key).collect::<Vec<_>>(),
        vec![(x, 3), (y, 1)],
        "the corrected candle, then the newer one it changed"
    );
    assert_eq!(sma(&m.candles[1]).as_deref(), Some("95.5000000000"));
    drop(conn);
    mesh.stop().await.unwrap();
}
