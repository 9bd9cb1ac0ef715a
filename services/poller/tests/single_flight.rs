//! `fetch_now`: concurrent askers share one upstream request; a deadline it cannot meet gives
//! None at once, and the answer is still stored when it comes.

mod common;

use std::sync::Arc;
use std::time::Duration;

use common::*;
use tickmesh_poller::Poller;
use tokio_util::sync::CancellationToken;

/// A poller over `codes` that did its first full refresh and then waits an hour for the next.
async fn settled(
    feed: Arc<tickmesh_marketfeed::MarketFeed>,
    broker: &tickmesh_fake_venue::broker::FakeBroker,
    codes: &[String],
    shutdown: &CancellationToken,
) -> Arc<Poller> {
    let mut s = spec(broker, "kis", codes);
    s.refresh_interval = Duration::from_secs(3600);
    let poller = Poller::start(s, feed, "i0", shutdown.clone()).unwrap();
    assert!(
        eventually(Duration::from_secs(3), async || poller
            .status()
            .full_refreshes
            == 1)
        .await
    );
    tokio::time::sleep(Duration::from_millis(100)).await;
    broker.reset_stats();
    poller
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fifty_concurrent_askers_make_one_upstream_request() {
    let server = redis().await;
    let shutdown = CancellationToken::new();
    let broker = broker(Some(20)).await;
    let codes = codes(5);
    broker.add_symbols(codes.iter().map(String::as_str), "71500", "100");
    let feed = feed(&server, &shutdown);
    register(&feed, "", &codes, Vec::new()).await;
    let poller = settled(feed.clone(), &broker, &codes, &shutdown).await;
    broker.set_latency(Duration::from_millis(100));

    let deadline = tokio::time::Instant::now() + Duration::from_secs(2);
    let askers: Vec<_> = (0..50)
        .map(|_| {
            let p = poller.clone();
            tokio::spawn(async move { p.fetch_now("100002", deadline).await })
        })
        .collect();
    let mut answers = Vec::new();
    for a in askers {
        answers.push(a.await.unwrap().expect("an answer within the deadline"));
    }
    assert_eq!(broker.requests(), 1);
    assert!(answers.iter().all(|a| *a == answers[0]));
    assert_eq!(answers[0].symbol, "100002");
    assert_eq!(
        Some(answers[0].price.clone()),
        broker.quote("100002").map(|q| q.price)
    );
    let stored = feed.quotes(vec!["100002".into()], None).await.unwrap();
    assert_eq!(stored.quotes[0].quote.time_ns, answers[0].time_ns);
    assert_eq!(poller.status().fetches, 1);
    // Unknown symbols get no fetch.
    assert!(poller.fetch_now("999999", deadline).await.is_none());
    assert_eq!(broker.requests(), 1);
    shutdown.cancel();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_missed_deadline_answers_none_at_once_and_the_quote_still_lands() {
    let server = redis().await;
    let shutdown = CancellationToken::new();
    let broker = broker(Some(20)).await;
    let codes = codes(2);
    broker.add_symbols(codes.iter().map(String::as_str), "71500", "100");
    let feed = feed(&server, &shutdown);
    register(&feed, "", &codes, Vec::new()).await;
    let poller = settled(feed.clone(), &broker, &codes, &shutdown).await;
    let before = feed
        .quotes(vec!["100001".into()], None)
        .await
        .unwrap()
        .quotes[0]
        .quote
        .time_ns;
    broker.set_latency(Duration::from_millis(400));

    let asked = tokio::time::Instant::now();
    let got = poller
        .fetch_now("100001", asked + Duration::from_millis(100))
        .await;
    assert!(got.is_none());
    assert!(
        asked.elapsed() < Duration::from_millis(250),
        "{:?}",
        asked.elapsed()
    );
    assert!(
        eventually(Duration::from_secs(2), async || {
            feed.quotes(vec!["100001".into()], None)
                .await
                .unwrap()
                .quotes[0]
                .quote
                .time_ns
                > before
        })
        .await
    );
    assert_eq!(broker.requests(), 1);
    shutdown.cancel();
}
