//! The rate limit holds for the whole mesh: several users of one app key, each with its own
//! Redis connection like separate processes, never send the broker more than its limit in any
//! one-second window, and together come close to it.

mod common;

use std::sync::Arc;
use std::time::Duration;

use common::*;
use tickmesh_poller::Poller;
use tickmesh_poller::rate_limit::{MeshRateLimiter, RateShape, limit_id};
use tickmesh_poller::upstream::Upstream;
use tokio_util::sync::CancellationToken;

const LIMIT: u32 = 10;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_limiter_users_never_exceed_the_brokers_limit_and_use_most_of_it() {
    let server = redis().await;
    let shutdown = CancellationToken::new();
    let broker = broker(Some(LIMIT)).await;
    broker.add_symbol("005930", "71500", "100");
    let id = limit_id(&broker.base_url(), &broker.app_key());
    let shape = RateShape {
        requests_per_second: LIMIT,
        burst: 1,
        jitter_margin: Duration::from_millis(25),
        recovery: Duration::from_secs(60),
    };
    let run_for = Duration::from_millis(2500);
    let started = tokio::time::Instant::now();
    let mut users = Vec::new();
    for _ in 0..3 {
        // Each user has its own connection, as separate poller processes would.
        let limiter = MeshRateLimiter::new(
            feed(&server, &shutdown).redis().clone(),
            &id,
            shape,
            Duration::from_millis(200),
            Duration::from_secs(2),
        );
        let upstream = Arc::new(Upstream::new(
            &broker.base_url(),
            &broker.app_key(),
            &broker.app_secret(),
            Duration::from_secs(2),
        ));
        users.push(tokio::spawn(async move {
            let mut sent = 0;
            while started.elapsed() < run_for {
                let deadline = tokio::time::Instant::now() + Duration::from_secs(1);
                if limiter.acquire_by(deadline).await.unwrap() {
                    upstream
                        .quotes(&["005930".to_string()], true)
                        .await
                        .expect("the broker answers within its limit");
                    sent += 1;
                }
            }
            sent
        }));
    }
    let mut per_user = Vec::new();
    for u in users {
        per_user.push(u.await.unwrap());
    }
    let most = broker.max_in_any_window(Duration::from_secs(1));
    assert!(most <= LIMIT as usize, "{most} requests in one second");
    assert_eq!(broker.rate_limited(), 0);
    // 9 steady slots per 1.025 s plus a burst of 2 at the start: about 24 in 2.5 s.
    let total: u64 = per_user.iter().sum();
    assert!(total >= 21, "only {total} requests in 2.5 s ({per_user:?})");
    assert!(
        per_user.iter().all(|&n| n >= 3),
        "every user gets slots: {per_user:?}"
    );
    assert_eq!(broker.requests(), total);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_poller_instances_share_the_limit_and_the_full_refresh() {
    let server = redis().await;
    let shutdown = CancellationToken::new();
    let broker = broker(Some(LIMIT)).await;
    let codes = codes(12);
    broker.add_symbols(codes.iter().map(String::as_str), "71500", "100");
    let first = feed(&server, &shutdown);
    register(&first, "", &codes, Vec::new()).await;
    let mut s = spec(&broker, "kis", &codes);
    s.requests_per_second = LIMIT;
    let pollers: Vec<Arc<Poller>> = (0..3)
        .map(|n| {
            let feed = if n == 0 {
                first.clone()
            } else {
                feed(&server, &shutdown)
            };
            Poller::start(s.clone(), feed, &format!("i{n}"), shutdown.clone()).unwrap()
        })
        .collect();
    tokio::time::sleep(Duration::from_millis(3000)).await;
    shutdown.cancel();

    let most = broker.max_in_any_window(Duration::from_secs(1));
    assert!(most <= LIMIT as usize, "{most} requests in one second");
    assert_eq!(broker.rate_limited(), 0);
    let statuses: Vec<_> = pollers.iter().map(|p| p.status()).collect();
    let total: u64 = statuses.iter().map(|s| s.requests).sum();
    assert!(total >= 25, "only {total} requests in 3 s: {statuses:#?}");
    // Every instance takes part in the shared refresh; how evenly depends on scheduling (an
    // instance that starts late on a loaded machine gets fewer slots), so only its presence is
    // asserted.
    assert!(
        statuses.iter().all(|s| s.requests >= 1),
        "each instance takes part: {statuses:#?}"
    );
    // One full refresh of 12 codes is about 1.2 s for the mesh, not per instance: in 3 s the
    // instances finished at least two between them.
    let refreshes: u64 = statuses.iter().map(|s| s.full_refreshes).sum();
    assert!(refreshes >= 2, "{statuses:#?}");
    let quotes = first.quotes(codes.clone(), None).await.unwrap();
    assert!(quotes.missing.is_empty(), "{:?}", quotes.missing);
}
