//! The full-refresh bench against the fake broker: a small run in the test suite, the
//! 2,500-symbol run on demand (`cargo test -p tickmesh-poller --test bench -- --ignored --nocapture`).

mod common;

use std::time::Duration;

use common::*;
use tickmesh_poller::{BenchConfig, bench_full_refresh};
use tokio_util::sync::CancellationToken;

async fn run(config: BenchConfig) -> tickmesh_poller::BenchReport {
    let server = redis().await;
    let shutdown = CancellationToken::new();
    let feed = feed(&server, &shutdown);
    let report = bench_full_refresh(feed, &config).await.expect("bench runs");
    println!("{report}");
    shutdown.cancel();
    report
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_small_full_refresh_is_near_its_floor_and_within_the_limit() {
    let report = run(BenchConfig {
        symbols: 300,
        batch_size: 30,
        requests_per_second: 20,
        cycles: 3,
        ..Default::default()
    })
    .await;
    assert_eq!(report.floor, Duration::from_millis(500));
    assert_eq!(report.refreshes.len(), 3);
    assert!(report.max_in_any_second <= 20, "{report}");
    assert_eq!(report.rate_limited, 0);
    for r in report.refreshes.iter().chain(&report.period) {
        assert!(report.ratio(*r) < 1.15, "{report}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "a 2,500-symbol run of several seconds; run on demand"]
async fn full_refresh_of_2500_symbols() {
    for (instances, burst, latency_ms) in [(1, 0, 0), (3, 0, 0), (1, 1, 0), (3, 0, 80)] {
        let report = run(BenchConfig {
            instances,
            burst,
            latency: Duration::from_millis(latency_ms),
            cycles: 3,
            ..Default::default()
        })
        .await;
        assert!(report.max_in_any_second <= 20, "{report}");
    }
}
