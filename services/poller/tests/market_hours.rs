//! Outside its market's hours a symbol is polled once (for its last price) and then left
//! alone; it is polled again when the market opens. The clock is passed in.

mod common;

use std::sync::Arc;
use std::time::Duration;

use chrono::{TimeZone, Utc};
use common::*;
use tickmesh_poller::Poller;
use tickmesh_runtime::clock::ManualClock;
use tokio_util::sync::CancellationToken;

fn utc(y: i32, mo: u32, d: u32, h: u32, mi: u32) -> i64 {
    Utc.with_ymd_and_hms(y, mo, d, h, mi, 0)
        .unwrap()
        .timestamp_nanos_opt()
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idles_outside_hours_and_on_holidays_and_polls_when_open() {
    let server = redis().await;
    let shutdown = CancellationToken::new();
    let broker = broker(None).await;
    let codes = codes(3);
    broker.add_symbols(codes.iter().map(String::as_str), "71500", "100");
    let feed = feed(&server, &shutdown);
    register(&feed, "krx:", &codes, krx_sessions()).await;
    let mut s = spec(&broker, "kis", &codes);
    s.symbol_prefix = "krx:".into();
    s.holidays = vec!["2024-03-12".into()];
    // Saturday 2024-03-09 10:00 in Seoul.
    let clock = ManualClock::new(utc(2024, 3, 9, 1, 0));
    let poller =
        Poller::start_with_clock(s, feed.clone(), "i0", shutdown.clone(), clock.clone()).unwrap();

    // Closed: one poll per code for its last price, then nothing.
    assert!(eventually(Duration::from_secs(3), async || broker.codes_quoted() == 3).await);
    tokio::time::sleep(Duration::from_millis(700)).await;
    assert_eq!(broker.requests(), 3);
    assert_eq!(poller.status().open_symbols, 0);
    let symbols: Vec<String> = codes.iter().map(|c| format!("krx:{c}")).collect();
    assert!(
        feed.quotes(symbols.clone(), None)
            .await
            .unwrap()
            .missing
            .is_empty()
    );

    // Monday 10:00: open, the full refresh runs.
    clock.set(utc(2024, 3, 11, 1, 0));
    assert!(eventually(Duration::from_secs(3), async || broker.requests() >= 12).await);
    assert_eq!(poller.status().open_symbols, 3);

    // Monday 15:31: closed; one last poll each, then quiet again.
    clock.set(utc(2024, 3, 11, 6, 31));
    assert!(
        eventually(Duration::from_secs(2), async || poller
            .status()
            .open_symbols
            == 0)
        .await
    );
    tokio::time::sleep(Duration::from_millis(500)).await;
    let after_close = broker.requests();
    tokio::time::sleep(Duration::from_millis(700)).await;
    assert_eq!(broker.requests(), after_close);

    // Tuesday 10:00 is a holiday: still quiet.
    clock.set(utc(2024, 3, 12, 1, 0));
    tokio::time::sleep(Duration::from_millis(700)).await;
    assert_eq!(broker.requests(), after_close);
    assert_eq!(poller.status().open_symbols, 0);
    // Reads of a closed symbol neither poll it nor fetch it.
    assert!(poller.touch("krx:100000"));
    let deadline = tokio::time::Instant::now() + Duration::from_millis(300);
    assert!(poller.fetch_now("krx:100000", deadline).await.is_none());
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(broker.requests(), after_close);

    // Wednesday 09:00: open again.
    clock.set(utc(2024, 3, 13, 0, 0));
    assert!(
        eventually(Duration::from_secs(3), async || broker.requests()
            > after_close + 3)
        .await
    );
    let _: Arc<Poller> = poller;
}
