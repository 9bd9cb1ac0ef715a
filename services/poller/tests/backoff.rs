//! Rate-limit answers slow the poller down instead of being retried into: a broker whose real
//! limit is lower than configured refuses a few requests, then no more.

mod common;

use std::time::Duration;

use common::*;
use tickmesh_poller::Poller;
use tokio_util::sync::CancellationToken;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lower_real_limit_is_found_without_hammering() {
    let server = redis().await;
    let shutdown = CancellationToken::new();
    // Configured for 20 per second, the broker allows only 4.
    let broker = broker(Some(4)).await;
    let codes = codes(5);
    broker.add_symbols(codes.iter().map(String::as_str), "71500", "100");
    let feed = feed(&server, &shutdown);
    register(&feed, "", &codes, Vec::new()).await;
    let s = spec(&broker, "kis", &codes);
    let backoff_min = s.backoff_min;
    let poller = Poller::start(s, feed, "i0", shutdown.clone()).unwrap();
    tokio::time::sleep(Duration::from_millis(4500)).await;
    shutdown.cancel();

    let arrivals = broker.arrivals();
    let refused: Vec<Duration> = arrivals.iter().filter(|a| a.1).map(|a| a.0).collect();
    let status = poller.status();
    assert!(
        !refused.is_empty() && refused.len() <= 4,
        "refused {refused:?}; {status:#?}"
    );
    assert_eq!(status.rate_limited, refused.len() as u64);
    // After each refusal nothing new goes out for the pause (only a request already booked
    // within the next slot may still arrive).
    for &r in &refused {
        let soon = arrivals
            .iter()
            .filter(|a| a.0 > r + Duration::from_millis(60) && a.0 < r + backoff_min)
            .count();
        assert_eq!(
            soon, 0,
            "requests right after the refusal at {r:?}: {arrivals:?}"
        );
    }
    // Settled below the real limit: the last two seconds saw no refusal, and still requests.
    let last = refused.last().copied().unwrap_or_default();
    assert!(
        last < Duration::from_millis(2500),
        "still refused at {last:?}"
    );
    let late = arrivals
        .iter()
        .filter(|a| a.0 >= Duration::from_millis(2500))
        .count();
    assert!(late >= 3, "the poller went quiet: {arrivals:?}");
}
