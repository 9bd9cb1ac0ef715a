//! What lands in MarketFeed: the quote hash GetQuotes reads (sequence 0, no trade id, the
//! last trade's volume when the upstream gives one), and with `publish_trades` a trade for
//! each growth of the cumulative volume.

mod common;

use std::time::Duration;

use common::*;
use tickmesh_poller::Poller;
use tokio_util::sync::CancellationToken;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn polled_quotes_and_trades_from_volume_growth() {
    let server = redis().await;
    let shutdown = CancellationToken::new();
    let broker = broker(Some(20)).await;
    broker.set_auto_move(false);
    let codes = codes(1);
    broker.add_symbols(codes.iter().map(String::as_str), "71500", "100");
    broker.set_quote("100000", "71500", 1000);
    let feed = feed(&server, &shutdown);
    register(&feed, "krx:", &codes, Vec::new()).await;
    let mut s = spec(&broker, "kis", &codes);
    s.symbol_prefix = "krx:".into();
    s.publish_trades = true;
    s.requests_per_second = 5;
    let poller = Poller::start(s, feed.clone(), "i0", shutdown.clone()).unwrap();

    let quote = async || {
        feed.quotes(vec!["krx:100000".into()], Some(Duration::from_secs(60)))
            .await
            .unwrap()
            .quotes
            .first()
            .map(|v| v.quote.clone())
    };
    assert!(eventually(Duration::from_secs(2), async || quote().await.is_some()).await);
    let q = quote().await.unwrap();
    // inquire-price reports no last-trade volume: quantity "0", sequence 0, no trade id.
    assert_eq!(
        (
            q.price.as_str(),
            q.quantity.as_str(),
            q.sequence,
            q.trade_id.as_str()
        ),
        ("71500", "0", 0, "")
    );
    // The first poll only learns the cumulative volume: no trade yet.
    assert!(feed.last_trade("krx:100000").await.unwrap().is_none());

    broker.set_quote("100000", "71600", 1250);
    assert!(
        eventually(Duration::from_secs(2), async || {
            feed.last_trade("krx:100000").await.unwrap().is_some()
        })
        .await
    );
    let t = feed.last_trade("krx:100000").await.unwrap().unwrap();
    assert_eq!((t.price.as_str(), t.quantity.as_str()), ("71600", "250"));
    assert!(t.trade_id.ends_with("-v1250"), "{}", t.trade_id);
    // Polls without growth publish nothing more.
    tokio::time::sleep(Duration::from_millis(600)).await;
    assert_eq!(poller.status().trades_published, 1);
    assert!(poller.status().quotes_written >= 3);
    shutdown.cancel();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn batched_requests_carry_the_last_trade_volume() {
    let server = redis().await;
    let shutdown = CancellationToken::new();
    let broker = broker(Some(20)).await;
    broker.set_auto_move(false);
    let codes = codes(7);
    broker.add_symbols(codes.iter().map(String::as_str), "182000.5", "0.5");
    broker.set_quote("100006", "182001.0", 40);
    broker.set_quote("100006", "182001.0", 52);
    let feed = feed(&server, &shutdown);
    for code in &codes {
        feed.upsert_instrument(tickmesh_marketfeed::model::Instrument {
            symbol: code.clone(),
            venue: "test".into(),
            price_scale: 2,
            quantity_scale: 0,
            time_zone: "UTC".into(),
            sessions: Vec::new(),
            update_time_ns: 0,
        })
        .await
        .unwrap();
    }
    let mut s = spec(&broker, "kis", &codes);
    s.batch_size = 3;
    let poller = Poller::start(s, feed.clone(), "i0", shutdown.clone()).unwrap();
    assert!(
        eventually(Duration::from_secs(3), async || poller
            .status()
            .full_refreshes
            >= 1)
        .await
    );
    let read = feed.quotes(codes.clone(), None).await.unwrap();
    assert!(read.missing.is_empty());
    let last = &read.quotes[6].quote;
    // Canonical at the instrument's price scale; the batch answer's cntg_vol is the quantity.
    assert_eq!(
        (last.price.as_str(), last.quantity.as_str()),
        ("182001.00", "12")
    );
    // 7 codes in batches of at most 3: three requests per full refresh.
    let status = poller.status();
    assert!(broker.codes_quoted() >= 7);
    assert!(status.requests >= 3);
    assert!(broker.requests() * 3 >= broker.codes_quoted());
    shutdown.cancel();
}
