//! WatchTop under a burst: coalesced, exact at the end, quiet when nothing
//! changes, gone when the client goes away.

mod common;

use std::time::Duration;

use common::*;
use tickmesh_ranking::board::{Operator, WindowKind};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn watch_top_coalesces_a_burst_and_ends_with_the_exact_top() {
    let h = harness(ns("2030-06-01T08:00:00Z")).await;
    h.ranking
        .upsert_board(board(
            "w",
            Operator::Increment,
            &[WindowKind::AllTime, WindowKind::Daily],
        ))
        .await
        .unwrap();
    let mut rx = h.ranking.watch_top("w", "day", 3).await.unwrap();
    let first = rx.recv().await.unwrap().unwrap();
    assert!(first.entries.is_empty() && first.total == 0);
    assert_eq!(first.window, "day:2030-06-01");

    // 4 tasks × 50 batches × 25 events = 5000 events.
    let mut tasks = Vec::new();
    for task in 0..4 {
        let r = h.ranking.clone();
        tasks.push(tokio::spawn(async move {
            for batch in 0..50 {
                let events = (0..25)
                    .map(|i| {
                        let n = task * 10_000 + batch * 100 + i;
                        inc(
                            "w",
                            &format!("m{}", n % 10),
                            &(n % 7 + 1).to_string(),
                            &format!("e{n}"),
                        )
                    })
                    .collect();
                r.record(events).await.unwrap();
            }
        }));
    }
    let mut messages = 1;
    let collector = async {
        let mut last = first.clone();
        for t in tasks {
            t.await.unwrap();
        }
        let expected: Vec<_> = top(&h, "w", "day").await.into_iter().take(3).collect();
        loop {
            if last.entries.iter().map(triple).collect::<Vec<_>>() == expected && last.total == 10 {
                return last;
            }
            last = tokio::time::timeout(Duration::from_secs(5), rx.recv())
                .await
                .expect("an update within 5 s")
                .unwrap()
                .unwrap();
            messages += 1;
        }
    };
    let last = collector.await;
    assert_eq!(last.entries.len(), 3);
    assert!(
        messages < 500,
        "5000 events became {messages} messages: coalesced"
    );
    // Nothing changes: nothing is sent.
    assert!(
        tokio::time::timeout(Duration::from_millis(400), rx.recv())
            .await
            .is_err(),
        "no message without a change"
    );
    // A change outside the top N that changes the total is sent; one inside too.
    h.ranking
        .record(vec![inc("w", "newcomer", "1", "x1")])
        .await
        .unwrap();
    let m = tokio::time::timeout(Duration::from_secs(5), rx.recv())
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert_eq!(m.total, 11);

    // The client goes away: the watcher ends and the board is no longer followed.
    assert_eq!(h.ranking.watched_boards(), 1);
    drop(rx);
    h.ranking
        .record(vec![inc("w", "newcomer", "1", "x2")])
        .await
        .unwrap();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    while h.ranking.watched_boards() != 0 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "watcher still running"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_watched_calendar_window_moves_on_to_the_next_period() {
    let h = harness(ns("2030-06-01T08:59:59Z")).await;
    h.ranking
        .upsert_board(board("hw", Operator::Increment, &[WindowKind::Hourly]))
        .await
        .unwrap();
    h.ranking
        .record(vec![inc("hw", "a", "1", "1")])
        .await
        .unwrap();
    let mut rx = h.ranking.watch_top("hw", "hour", 3).await.unwrap();
    let first = rx.recv().await.unwrap().unwrap();
    assert_eq!(
        (first.window.as_str(), first.total),
        ("hour:2030-06-01T08", 1)
    );
    h.clock.advance(Duration::from_secs(1));
    let next = tokio::time::timeout(Duration::from_secs(5), rx.recv())
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert_eq!(
        (next.window.as_str(), next.total),
        ("hour:2030-06-01T09", 0)
    );
}
