//! CandleQueryService end to end: real redis-server, real gRPC, the aggregator
//! consuming MarketFeed's StreamTrades.

mod common;

use std::collections::BTreeMap;
use std::time::Duration;

use common::*;
use tickmesh::mesh::Mesh;
use tickmesh_api::candles::candle_query_service_client::CandleQueryServiceClient;
use tickmesh_api::candles::{
    Candle, CandleFill, CandleOrder, GetAggregationStatusRequest, GetCandlesRequest,
    SubscribeCandlesRequest,
};
use tickmesh_api::marketfeed::Trade;
use tickmesh_runtime::proto_time::nanos_to_timestamp;
use tonic::Code;

fn ohlcv(c: &Candle) -> (i64, String, String, String, String, String, String, u64) {
    (
        c.open_time.as_ref().unwrap().seconds,
        c.open.clone(),
        c.high.clone(),
        c.low.clone(),
        c.close.clone(),
        c.volume.clone(),
        c.quote_volume.clone(),
        c.trade_count,
    )
}

fn fixture(name: &str) -> String {
    std::fs::read_to_string(
        std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../candles/tests/fixtures")
            .join(name),
    )
    .unwrap()
}

/// The fixture's trades of one symbol, in file order.
fn fixture_trades(symbol: &str) -> Vec<Trade> {
    fixture("trades.csv")
        .lines()
        .skip(1)
        .filter_map(|line| {
            let f: Vec<&str> = line.split(',').collect();
            (f[0] == symbol).then(|| trade_at(symbol, f[1], f[2], f[3], f[4].parse().unwrap()))
        })
        .collect()
}

async fn publish_all(client: &mut Client, trades: &[Trade], batch: usize) {
    for chunk in trades.chunks(batch) {
        let r = publish(client, chunk.to_vec()).await;
        assert_eq!(r.rejected, 0, "{:?}", r.rejections.first());
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn published_trades_become_the_reference_candles_through_the_whole_pipeline() {
    let redis = redis().await;
    let mesh = start(candle_config(&redis.url())).await;
    let mut feed = client(&mesh).await;
    let mut candles = candles_client(&mesh).await;
    register_zone(&mut feed, "NYSE.X", 2, 0, "America/New_York").await;
    let trades = fixture_trades("NYSE.X");
    publish_all(&mut feed, &trades, 250).await;
    assert!(
        applied(&candles, "NYSE.X", trades.len() as u64).await,
        "aggregation caught up"
    );

    let expected: Vec<serde_json::Value> =
        serde_json::from_str(&fixture("expected_candles.json")).unwrap();
    for interval in [
        "1m", "3m", "5m", "15m", "30m", "1h", "2h", "4h", "6h", "12h", "1d", "1w", "1M", "1Y",
    ] {
        let got: Vec<_> = all_candles(&mut candles, "NYSE.X", interval, 1000)
            .await
            .iter()
            .map(ohlcv)
            .collect();
        let want: Vec<_> = expected
            .iter()
            .filter(|e| e["symbol"] == "NYSE.X" && e["interval"] == interval)
            .map(|e| {
                (
                    e["open_time_ns"]
                        .as_i64()
                        .unwrap()
                        .div_euclid(1_000_000_000),
                    e["open"].as_str().unwrap().to_string(),
                    e["high"].as_str().unwrap().to_string(),
                    e["low"].as_str().unwrap().to_string(),
                    e["close"].as_str().unwrap().to_string(),
                    e["volume"].as_str().unwrap().to_string(),
                    e["quote_volume"].as_str().unwrap().to_string(),
                    e["trade_count"].as_u64().unwrap(),
                )
            })
            .collect();
        assert_eq!(got.len(), want.len(), "{interval}: candle count");
        assert_eq!(got, want, "{interval}");
    }
    mesh.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pages_orders_rollups_and_fill() {
    let redis = redis().await;
    let mesh = start(candle_config(&redis.url())).await;
    let mut feed = client(&mesh).await;
    let mut candles = candles_client(&mesh).await;
    register(&mut feed, "BTCUSDT", 2, 5).await;
    let minute = 60_000_000_000i64;
    let t0 = 1_704_067_200_000_000_000i64; // 2024-01-01T00:00Z
    // Trades in minutes 0..30 except 3, 4 and 17.
    let mut trades = Vec::new();
    for m in (0..30).filter(|m| ![3, 4, 17].contains(m)) {
        trades.push(trade_at(
            "BTCUSDT",
            &format!("{m}a"),
            &format!("{}.00", 100 + m),
            "1",
            t0 + m * minute + 1_000,
        ));
        trades.push(trade_at(
            "BTCUSDT",
            &format!("{m}b"),
            &format!("{}.50", 100 + m),
            "2",
            t0 + m * minute + 30_000_000_000,
        ));
    }
    publish_all(&mut feed, &trades, 100).await;
    assert!(applied(&candles, "BTCUSDT", trades.len() as u64).await);

    // Newest first is the default; pages join without gap or duplicate.
    let mut seen = Vec::new();
    let mut token = String::new();
    loop {
        let page = candles
            .get_candles(GetCandlesRequest {
                symbol: "BTCUSDT".into(),
                interval: "1m".into(),
                page_size: 7,
                page_token: token,
                ..Default::default()
            })
            .await
            .unwrap()
            .into_inner();
        seen.extend(
            page.candles
                .iter()
                .map(|c| c.open_time.as_ref().unwrap().seconds),
        );
        if page.next_page_token.is_empty() {
            break;
        }
        token = page.next_page_token;
    }
    let mut want: Vec<i64> = (0..30)
        .filter(|m| ![3, 4, 17].contains(m))
        .map(|m| (t0 + m * minute) / 1_000_000_000)
        .collect();
    want.reverse();
    assert_eq!(seen, want);

    // Range: candles that close after start and open before end.
    let page = candles
        .get_candles(GetCandlesRequest {
            symbol: "BTCUSDT".into(),
            interval: "1m".into(),
            start_time: Some(nanos_to_timestamp(t0 + 5 * minute + 1)),
            end_time: Some(nanos_to_timestamp(t0 + 8 * minute)),
            order: CandleOrder::OldestFirst as i32,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        page.candles
            .iter()
            .map(|c| c.open_time.as_ref().unwrap().seconds)
            .collect::<Vec<_>>(),
        (5..8)
            .map(|m| (t0 + m * minute) / 1_000_000_000)
            .collect::<Vec<_>>()
    );

    // 10m rolled up from 5m equals the fold of the 1m candles.
    let ones = all_candles(&mut candles, "BTCUSDT", "1m", 1000).await;
    let tens = all_candles(&mut candles, "BTCUSDT", "10m", 1000).await;
    assert_eq!(tens.len(), 3);
    for ten in &tens {
        let start = ten.open_time.as_ref().unwrap().seconds;
        let parts: Vec<&Candle> = ones
            .iter()
            .filter(|c| (start..start + 600).contains(&c.open_time.as_ref().unwrap().seconds))
            .collect();
        assert_eq!(ten.open, parts[0].open);
        assert_eq!(ten.close, parts.last().unwrap().close);
        assert_eq!(
            ten.trade_count,
            parts.iter().map(|c| c.trade_count).sum::<u64>()
        );
        assert_eq!(
            ten.high,
            parts
                .iter()
                .map(|c| c.high.clone())
                .max_by(|a, b| a
                    .parse::<f64>()
                    .unwrap()
                    .total_cmp(&b.parse::<f64>().unwrap()))
                .unwrap()
        );
        assert_eq!(ten.close_time.as_ref().unwrap().seconds - start, 600);
        assert_eq!(ten.interval, "10m");
    }

    // Fill: minutes 3, 4 and 17 come back flat at the previous close.
    let filled = candles
        .get_candles(GetCandlesRequest {
            symbol: "BTCUSDT".into(),
            interval: "1m".into(),
            end_time: Some(nanos_to_timestamp(t0 + 30 * minute)),
            order: CandleOrder::OldestFirst as i32,
            fill: CandleFill::PreviousClose as i32,
            page_size: 1000,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(filled.candles.len(), 30);
    let m3 = &filled.candles[3];
    assert_eq!(
        (
            m3.open.as_str(),
            m3.close.as_str(),
            m3.volume.as_str(),
            m3.trade_count
        ),
        ("102.50", "102.50", "0.00000", 0)
    );
    assert_eq!(filled.candles[17].close, "116.50");
    // And newest first, paged, gives the same 30 in reverse.
    let mut newest = Vec::new();
    let mut token = String::new();
    loop {
        let page = candles
            .get_candles(GetCandlesRequest {
                symbol: "BTCUSDT".into(),
                interval: "1m".into(),
                end_time: Some(nanos_to_timestamp(t0 + 30 * minute)),
                fill: CandleFill::PreviousClose as i32,
                page_size: 4,
                page_token: token,
                ..Default::default()
            })
            .await
            .unwrap()
            .into_inner();
        newest.extend(page.candles);
        if page.next_page_token.is_empty() {
            break;
        }
        token = page.next_page_token;
    }
    newest.reverse();
    assert_eq!(
        newest.iter().map(ohlcv).collect::<Vec<_>>(),
        filled.candles.iter().map(ohlcv).collect::<Vec<_>>()
    );
    mesh.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_candle_requests_are_refused_with_the_reason() {
    let redis = redis().await;
    let mesh = start(candle_config(&redis.url())).await;
    let mut feed = client(&mesh).await;
    let mut c = candles_client(&mesh).await;
    register(&mut feed, "BTCUSDT", 2, 5).await;
    let req = |interval: &str| GetCandlesRequest {
        symbol: "BTCUSDT".into(),
        interval: interval.into(),
        ..Default::default()
    };
    for (bad, field) in [
        (req("7m"), "interval"),
        (req("1x"), "interval"),
        (req(""), "interval"),
    ] {
        let s = c.get_candles(bad).await.unwrap_err();
        assert_eq!(s.code(), Code::InvalidArgument);
        assert!(s.message().contains(field), "{s:?}");
    }
    let mut r = req("1m");
    r.start_time = Some(nanos_to_timestamp(2_000_000_000_000_000_000));
    r.end_time = Some(nanos_to_timestamp(1_000_000_000_000_000_000));
    assert!(
        c.get_candles(r)
            .await
            .unwrap_err()
            .message()
            .contains("start_time")
    );
    let mut r = req("1m");
    r.page_size = 5000;
    assert!(
        c.get_candles(r)
            .await
            .unwrap_err()
            .message()
            .contains("page_size")
    );
    let mut r = req("1m");
    r.page_token = "00ff".into();
    assert!(
        c.get_candles(r)
            .await
            .unwrap_err()
            .message()
            .contains("page_token")
    );
    let mut r = req("1m");
    r.symbol = "NOPE".into();
    assert_eq!(c.get_candles(r).await.unwrap_err().code(), Code::NotFound);
    let s = c
        .subscribe_candles(SubscribeCandlesRequest {
            symbol: "BTCUSDT".into(),
            intervals: vec!["10m".into()],
            cursor: String::new(),
            indicators: Vec::new(),
        })
        .await
        .unwrap_err();
    assert!(s.message().contains("intervals[0]"), "{s:?}");
    let s = c
        .subscribe_candles(SubscribeCandlesRequest {
            symbol: "BTCUSDT".into(),
            intervals: vec!["1m".into()],
            cursor: "yesterday".into(),
            indicators: Vec::new(),
        })
        .await
        .unwrap_err();
    assert!(s.message().contains("cursor"), "{s:?}");
    mesh.stop().await.unwrap();
}

async fn next_message(
    s: &mut tonic::Streaming<tickmesh_api::candles::SubscribeCandlesResponse>,
) -> tickmesh_api::candles::SubscribeCandlesResponse {
    tokio::time::timeout(Duration::from_secs(10), s.message())
        .await
        .expect("a message in time")
        .unwrap()
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn live_updates_on_another_instance_and_resume_from_a_cursor() {
    let redis = redis().await;
    let a = start(candle_config(&redis.url())).await;
    // B serves queries and subscriptions only.
    let mut b_config = candle_config(&redis.url());
    b_config.candles.aggregate = false;
    let b = start(b_config).await;
    let mut feed = client(&a).await;
    register(&mut feed, "BTCUSDT", 2, 5).await;
    let mut on_b = candles_client(&b).await;
    let minute = 60_000_000_000i64;
    let t0 = 1_704_067_200_000_000_000i64;
    publish_all(
        &mut feed,
        &[trade_at("BTCUSDT", "1", "100.00", "1", t0)],
        10,
    )
    .await;
    assert!(applied(&on_b, "BTCUSDT", 1).await);

    let mut s = on_b
        .subscribe_candles(SubscribeCandlesRequest {
            symbol: "BTCUSDT".into(),
            intervals: vec!["1m".into(), "1h".into()],
            cursor: String::new(),
            indicators: Vec::new(),
        })
        .await
        .unwrap()
        .into_inner();
    let snapshot = next_message(&mut s).await;
    assert!(snapshot.snapshot);
    assert_eq!(snapshot.candles.len(), 2);
    // 100 -> 150 -> 90 in half a second: the high is 150 however updates are coalesced.
    publish_all(
        &mut feed,
        &[
            trade_at("BTCUSDT", "2", "150.00", "1", t0 + 100_000_000),
            trade_at("BTCUSDT", "3", "90.00", "1", t0 + 500_000_000),
        ],
        10,
    )
    .await;
    let mut latest: BTreeMap<(String, i64), Candle> = BTreeMap::new();
    let mut cursor = String::new();
    while latest
        .get(&("1m".to_string(), t0 / 1_000_000_000))
        .is_none_or(|c| c.trade_count < 3)
    {
        let m = next_message(&mut s).await;
        cursor = m.cursor.clone();
        for c in m.candles {
            latest.insert(
                (c.interval.clone(), c.open_time.as_ref().unwrap().seconds),
                c,
            );
        }
    }
    let m1 = &latest[&("1m".to_string(), t0 / 1_000_000_000)];
    assert_eq!(
        (
            m1.high.as_str(),
            m1.low.as_str(),
            m1.close.as_str(),
            m1.closed
        ),
        ("150.00", "90.00", "90.00", false)
    );
    drop(s);

    // Missed while away: the next minute opens, which closes minute 0.
    publish_all(
        &mut feed,
        &[trade_at("BTCUSDT", "4", "95.00", "1", t0 + minute)],
        10,
    )
    .await;
    assert!(applied(&on_b, "BTCUSDT", 4).await);
    let mut s = on_b
        .subscribe_candles(SubscribeCandlesRequest {
            symbol: "BTCUSDT".into(),
            intervals: vec!["1m".into()],
            cursor: cursor.clone(),
            indicators: Vec::new(),
        })
        .await
        .unwrap()
        .into_inner();
    let m = next_message(&mut s).await;
    assert!(!m.snapshot, "resumed, not restarted");
    let closing = m
        .candles
        .iter()
        .find(|c| c.open_time.as_ref().unwrap().seconds == t0 / 1_000_000_000)
        .expect("the closing update of minute 0");
    assert!(closing.closed);
    assert!(closing.revision > m1.revision);
    assert_eq!(closing.trade_count, 3);
    let opened = m
        .candles
        .iter()
        .find(|c| c.open_time.as_ref().unwrap().seconds == (t0 + minute) / 1_000_000_000)
        .expect("minute 1");
    assert_eq!((opened.open.as_str(), opened.closed), ("95.00", false));
    assert!(
        m.candles.iter().all(|c| c.interval == "1m"),
        "only the intervals asked for"
    );
    a.stop().await.unwrap();
    b.stop().await.unwrap();
}

/// OHLCV of every stored interval, for comparing runs.
async fn snapshot_all(
    c: &mut Candles,
    symbol: &str,
) -> Vec<(
    String,
    Vec<(i64, String, String, String, String, String, String, u64)>,
)> {
    let mut out = Vec::new();
    for interval in ["1m", "5m", "1h", "1d", "1w", "1M", "1Y"] {
        out.push((
            interval.to_string(),
            all_candles(c, symbol, interval, 1000)
                .await
                .iter()
                .map(ohlcv)
                .collect(),
        ));
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killing_the_aggregator_mid_stream_gives_the_same_candles_as_an_uninterrupted_run() {
    let trades = fixture_trades("BTCUSDT");
    // Uninterrupted run.
    let clean_redis = redis().await;
    let clean = start(candle_config(&clean_redis.url())).await;
    let mut feed = client(&clean).await;
    register(&mut feed, "BTCUSDT", 2, 5).await;
    publish_all(&mut feed, &trades, 100).await;
    let mut c = candles_client(&clean).await;
    assert!(applied(&c, "BTCUSDT", trades.len() as u64).await);
    let want = snapshot_all(&mut c, "BTCUSDT").await;
    clean.stop().await.unwrap();

    // The same trades, with the aggregator process killed three times.
    let redis = redis().await;
    let mut mesh = start(candle_config(&redis.url())).await;
    let mut feed = client(&mesh).await;
    register(&mut feed, "BTCUSDT", 2, 5).await;
    let parts: Vec<&[Trade]> = trades.chunks(trades.len() / 4 + 1).collect();
    for (i, part) in parts.iter().enumerate() {
        publish_all(&mut feed, part, 100).await;
        if i + 1 < parts.len() {
            // Let it get part of the way, then kill it without any goodbye.
            tokio::time::sleep(Duration::from_millis(30 * i as u64 + 10)).await;
            mesh.abort();
            tokio::time::sleep(Duration::from_millis(100)).await;
            mesh = start(candle_config(&redis.url())).await;
            feed = client(&mesh).await;
        }
    }
    let mut c = candles_client(&mesh).await;
    assert!(
        applied(&c, "BTCUSDT", trades.len() as u64).await,
        "the restarted aggregator catches up (after the dead lease expires)"
    );
    let got = snapshot_all(&mut c, "BTCUSDT").await;
    for ((interval, g), (_, w)) in got.iter().zip(&want) {
        assert_eq!(g, w, "{interval}: no trade lost or counted twice");
    }
    mesh.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn another_instance_takes_over_when_the_owner_dies() {
    let redis = redis().await;
    let a = start(candle_config(&redis.url())).await;
    let mut feed = client(&a).await;
    register(&mut feed, "BTCUSDT", 2, 5).await;
    let mut ca = candles_client(&a).await;
    let t0 = 1_704_067_200_000_000_000i64;
    publish_all(
        &mut feed,
        &[trade_at("BTCUSDT", "1", "100.00", "1", t0)],
        10,
    )
    .await;
    assert!(applied(&ca, "BTCUSDT", 1).await);
    let owner_a = ca
        .get_aggregation_status(GetAggregationStatusRequest {
            symbols: vec!["BTCUSDT".into()],
        })
        .await
        .unwrap()
        .into_inner()
        .statuses[0]
        .owner
        .clone();
    assert!(!owner_a.is_empty());

    let b = start(candle_config(&redis.url())).await;
    a.abort(); // dies holding the lease
    let mut feed = client(&b).await;
    publish_all(
        &mut feed,
        &[trade_at("BTCUSDT", "2", "110.00", "1", t0 + 1_000)],
        10,
    )
    .await;
    let mut cb = candles_client(&b).await;
    assert!(
        applied(&cb, "BTCUSDT", 2).await,
        "B takes the symbol once A's lease expires"
    );
    let status = cb
        .get_aggregation_status(GetAggregationStatusRequest {
            symbols: vec!["BTCUSDT".into()],
        })
        .await
        .unwrap()
        .into_inner()
        .statuses[0]
        .clone();
    assert_ne!(status.owner, owner_a);
    assert!(!status.owner.is_empty());
    let m1 = all_candles(&mut cb, "BTCUSDT", "1m", 10).await;
    assert_eq!(
        (m1.len(), m1[0].trade_count, m1[0].high.as_str()),
        (1, 2, "110.00")
    );
    b.stop().await.unwrap();
}

/// A client with a small HTTP/2 window, so not reading stalls the server quickly.
async fn narrow_client(mesh: &Mesh) -> Candles {
    let channel = tonic::transport::Endpoint::from_shared(mesh.endpoint())
        .unwrap()
        .initial_stream_window_size(65_535)
        .initial_connection_window_size(65_535)
        .connect()
        .await
        .unwrap();
    CandleQueryServiceClient::new(channel)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_subscriber_is_caught_up_from_the_log_and_ends_with_the_final_candles() {
    let redis = redis().await;
    let mut cfg = candle_config(&redis.url());
    cfg.candles.live_buffer = 4;
    let mesh = start(cfg).await;
    let service = mesh.candles.clone().unwrap();
    let mut feed = client(&mesh).await;
    register(&mut feed, "BTCUSDT", 2, 5).await;
    publish_all(
        &mut feed,
        &[trade_at(
            "BTCUSDT",
            "first",
            "100.00",
            "1",
            1_704_067_200_000_000_000,
        )],
        10,
    )
    .await;
    let mut c = candles_client(&mesh).await;
    assert!(applied(&c, "BTCUSDT", 1).await);

    let mut slow = narrow_client(&mesh).await;
    let mut s = slow
        .subscribe_candles(SubscribeCandlesRequest {
            symbol: "BTCUSDT".into(),
            intervals: vec!["1m".into(), "1h".into()],
            cursor: String::new(),
            indicators: Vec::new(),
        })
        .await
        .unwrap()
        .into_inner();
    // Many minutes of trades in small batches while the subscriber reads nothing.
    let minute = 60_000_000_000i64;
    let t0 = 1_704_067_200_000_000_000i64;
    let trades: Vec<Trade> = (0..3000)
        .map(|i| {
            trade_at(
                "BTCUSDT",
                &i.to_string(),
                &format!("{}.00", 100 + i % 37),
                "1",
                t0 + 1 + (i as i64) * minute / 20,
            )
        })
        .collect();
    publish_all(&mut feed, &trades, 10).await;
    assert!(applied(&c, "BTCUSDT", 3001).await);

    let mut latest: BTreeMap<(String, i64), Candle> = BTreeMap::new();
    let want_1m = all_candles(&mut c, "BTCUSDT", "1m", 1000).await;
    let last_open = want_1m.last().unwrap().open_time.as_ref().unwrap().seconds;
    while latest
        .get(&("1m".to_string(), last_open))
        .is_none_or(|c| c.trade_count < want_1m.last().unwrap().trade_count)
    {
        let m = next_message(&mut s).await;
        for c in m.candles {
            latest.insert(
                (c.interval.clone(), c.open_time.as_ref().unwrap().seconds),
                c,
            );
        }
    }
    assert!(
        service.lag_recoveries() > 0,
        "the subscriber fell behind the bounded buffer and was served from the log"
    );
    let got_1m: Vec<_> = latest
        .iter()
        .filter(|((i, _), _)| i == "1m")
        .map(|(_, c)| ohlcv(c))
        .collect();
    assert_eq!(
        got_1m,
        want_1m.iter().map(ohlcv).collect::<Vec<_>>(),
        "every 1m candle arrives in its final state"
    );
    let closed = latest
        .iter()
        .filter(|((i, _), c)| i == "1m" && c.closed)
        .count();
    assert_eq!(
        closed,
        want_1m.len() - 1,
        "every finished minute's closing update arrived"
    );
    mesh.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_subscriber_that_leaves_ends_its_task_and_an_expired_cursor_gets_a_snapshot() {
    let redis = redis().await;
    let mut cfg = candle_config(&redis.url());
    cfg.candles.updates_max_len = 20; // below the validated minimum, on purpose
    let mesh = start(cfg).await;
    let service = mesh.candles.clone().unwrap();
    let mut feed = client(&mesh).await;
    register(&mut feed, "BTCUSDT", 2, 5).await;
    let t0 = 1_704_067_200_000_000_000i64;
    publish_all(
        &mut feed,
        &[trade_at("BTCUSDT", "1", "100.00", "1", t0)],
        10,
    )
    .await;
    let mut c = candles_client(&mesh).await;
    assert!(applied(&c, "BTCUSDT", 1).await);

    let mut s = c
        .subscribe_candles(SubscribeCandlesRequest {
            symbol: "BTCUSDT".into(),
            intervals: vec!["1m".into()],
            cursor: String::new(),
            indicators: Vec::new(),
        })
        .await
        .unwrap()
        .into_inner();
    let first = next_message(&mut s).await;
    assert!(
        eventually(Duration::from_secs(3), || async {
            service.live_symbols() == 1
        })
        .await
    );
    drop(s);
    assert!(
        eventually(Duration::from_secs(5), || async {
            service.live_symbols() == 0
        })
        .await,
        "the subscription task ends when the client leaves"
    );

    // Far more updates than the log keeps: the old cursor cannot be replayed.
    let minute = 60_000_000_000i64;
    for i in 1..=200 {
        publish_all(
            &mut feed,
            &[trade_at(
                "BTCUSDT",
                &format!("x{i}"),
                "101.00",
                "1",
                t0 + i * minute,
            )],
            10,
        )
        .await;
    }
    assert!(applied(&c, "BTCUSDT", 201).await);
    let mut s = c
        .subscribe_candles(SubscribeCandlesRequest {
            symbol: "BTCUSDT".into(),
            intervals: vec!["1m".into()],
            cursor: first.cursor,
            indicators: Vec::new(),
        })
        .await
        .unwrap()
        .into_inner();
    let m = next_message(&mut s).await;
    assert!(m.snapshot, "a fresh snapshot instead of a silent gap");
    assert!(
        m.candles.len() > 100,
        "with the candles changed since the cursor: {}",
        m.candles.len()
    );
    assert!(!m.cursor.is_empty());
    mesh.stop().await.unwrap();
}
