//! Symbols clients read are refreshed before the others; the full refresh still reaches all.

mod common;

use std::time::Duration;

use common::*;
use tickmesh_poller::Poller;
use tokio_util::sync::CancellationToken;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_touched_symbol_is_refreshed_first_and_the_full_refresh_covers_all() {
    let server = redis().await;
    let shutdown = CancellationToken::new();
    let broker = broker(Some(10)).await;
    let codes = codes(30);
    broker.add_symbols(codes.iter().map(String::as_str), "71500", "100");
    let feed = feed(&server, &shutdown);
    register(&feed, "", &codes, Vec::new()).await;
    let mut s = spec(&broker, "kis", &codes);
    s.requests_per_second = 10;
    let poller = Poller::start(s, feed.clone(), "i0", shutdown.clone()).unwrap();
    // The last code in refresh order is read by a client.
    assert!(poller.touch("100029"));
    assert!(!poller.touch("999999"));
    assert!(
        eventually(Duration::from_millis(600), async || {
            feed.quotes(vec!["100029".into()], None)
                .await
                .unwrap()
                .missing
                .is_empty()
        })
        .await,
        "the touched code was not polled first: {:#?}",
        poller.status()
    );
    // At about 10 requests per second, half of them the refresh's, the refresh is still
    // among the first codes.
    let early = feed.quotes(codes.clone(), None).await.unwrap();
    assert!(
        early.missing.len() >= 20,
        "{} polled",
        30 - early.missing.len()
    );
    assert!(poller.status().hot_codes >= 1);

    // A full refresh reaches every code (30 codes at about 10 per second).
    assert!(
        eventually(Duration::from_secs(6), async || poller
            .status()
            .full_refreshes
            >= 1)
        .await,
        "{:#?}",
        poller.status()
    );
    let all = feed.quotes(codes.clone(), None).await.unwrap();
    assert!(all.missing.is_empty(), "{:?}", all.missing);
    let took = poller.status().last_full_refresh.unwrap();
    assert!(took >= Duration::from_secs(2), "{took:?}");
    shutdown.cancel();
}
