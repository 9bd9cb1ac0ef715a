//! Time windows with a manual clock: boundaries in the board's time zone, the
//! rolling 24 h window as hours pass (against a reference), rank movement.

mod common;

use std::collections::HashMap;
use std::time::Duration;

use common::*;
use tickmesh_core::Error;
use tickmesh_ranking::board::{Operator, WindowKind};
use tickmesh_ranking::boards::BoardBook;
use tickmesh_ranking::clock::Clock;
use tickmesh_ranking::keys::Keys;
use tickmesh_ranking::record::Outcome;

fn windows_of(outcome: &Outcome) -> Vec<String> {
    match outcome {
        Outcome::Recorded(scores) => scores.iter().map(|(w, _)| w.clone()).collect(),
        other => panic!("not recorded: {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn windows_close_at_the_boards_local_midnight_and_monday() {
    // 2030-01-06 is a Sunday; 15:00 UTC is midnight in Seoul.
    let h = harness(ns("2030-01-06T14:59:59Z")).await;
    let mut b = board(
        "kr",
        Operator::Increment,
        &[
            WindowKind::AllTime,
            WindowKind::Hourly,
            WindowKind::Daily,
            WindowKind::Weekly,
            WindowKind::Monthly,
        ],
    );
    b.time_zone = "Asia/Seoul".into();
    h.ranking.upsert_board(b).await.unwrap();
    let before = h
        .ranking
        .record(vec![inc("kr", "sunday", "1", "a")])
        .await
        .unwrap();
    assert_eq!(
        windows_of(&before[0]),
        vec![
            "all",
            "hour:2030-01-06T23",
            "day:2030-01-06",
            "week:2030-W01",
            "month:2030-01"
        ]
    );
    h.clock.advance(Duration::from_secs(1));
    let after = h
        .ranking
        .record(vec![inc("kr", "monday", "1", "b")])
        .await
        .unwrap();
    assert_eq!(
        windows_of(&after[0]),
        vec![
            "all",
            "hour:2030-01-07T00",
            "day:2030-01-07",
            "week:2030-W02",
            "month:2030-01"
        ]
    );
    let members = |v: Vec<(String, i64, u64)>| v.into_iter().map(|e| e.0).collect::<Vec<_>>();
    assert_eq!(members(top(&h, "kr", "day").await), vec!["monday"]);
    assert_eq!(members(top(&h, "kr", "day:-1").await), vec!["sunday"]);
    assert_eq!(
        members(top(&h, "kr", "day:2030-01-06").await),
        vec!["sunday"]
    );
    assert_eq!(members(top(&h, "kr", "week").await), vec!["monday"]);
    assert_eq!(
        members(top(&h, "kr", "week:2030-W01").await),
        vec!["sunday"]
    );
    assert_eq!(members(top(&h, "kr", "hour:-1").await), vec!["sunday"]);
    assert_eq!(
        members(top(&h, "kr", "month").await),
        vec!["sunday", "monday"]
    );
    assert_eq!(
        members(top(&h, "kr", "all").await),
        vec!["sunday", "monday"]
    );
    // The same instants in a UTC board are one day.
    h.ranking
        .upsert_board(board("utc", Operator::Increment, &[WindowKind::Daily]))
        .await
        .unwrap();
    h.ranking
        .record(vec![inc("utc", "x", "1", "c")])
        .await
        .unwrap();
    assert_eq!(top(&h, "utc", "day").await.len(), 1);
    let view = h.ranking.top("utc", "day", 10, "").await.unwrap();
    assert_eq!(view.window, "day:2030-01-06");
}

/// Reference rolling window: per member, the operator over the events of the
/// last 24 hour buckets.
fn reference(events: &[(i64, &str, i64)], hour: i64, best: bool) -> HashMap<String, i64> {
    let mut out: HashMap<String, i64> = HashMap::new();
    for &(h, m, v) in events {
        if h > hour - 24 && h <= hour {
            out.entry(m.to_string())
                .and_modify(|s| *s = if best { (*s).max(v) } else { *s + v })
                .or_insert(v);
        }
    }
    out
}

/// A board keeping the all-time and rolling 24 h windows.
async fn upsert_rolling_board(h: &Harness, id: &str, operator: Operator) {
    h.ranking
        .upsert_board(board(
            id,
            operator,
            &[WindowKind::AllTime, WindowKind::Rolling24h],
        ))
        .await
        .unwrap();
}

async fn rolling_matches_reference_as_hours_pass(operator: Operator) {
    let start = ns("2030-05-01T00:10:00Z");
    let h = harness(start).await;
    let id = "roll";
    upsert_rolling_board(&h, id, operator).await;
    let best = operator == Operator::Best;
    let members = ["ann", "bob", "cy", "dee", "eve"];
    let mut events: Vec<(i64, &str, i64)> = Vec::new();
    let mut n = 0u64;
    // Hours 0..=40, then a jump of 30 hours (a rebuild), then a few more.
    let hours: Vec<i64> = (0..=40).chain([70, 71, 72, 95]).collect();
    for &hour in &hours {
        h.clock.set(start + hour * HOUR_NS);
        // Some hours have no events at all.
        if hour % 7 != 3 {
            for k in 0..(hour % 4 + 1) {
                n += 1;
                let m = members[((hour * 3 + k) % 5) as usize];
                // Deterministic, mixed-sign values (zero included).
                let v = ((n * 7919) % 23) as i64 - 8;
                events.push((hour, m, v));
                let e = if best {
                    scored(id, m, &v.to_string(), &format!("e{n}"))
                } else {
                    inc(id, m, &v.to_string(), &format!("e{n}"))
                };
                h.ranking.record(vec![e]).await.unwrap();
            }
        }
        // Half the time the maintenance task rolls first, else the read does.
        if hour % 2 == 0 {
            h.ranking.maintain().await.unwrap();
        }
        let got: HashMap<String, i64> = top(&h, id, "24h")
            .await
            .into_iter()
            .map(|(m, s, _)| (m, s))
            .collect();
        assert_eq!(
            got,
            reference(&events, hour, best),
            "{operator:?} at hour {hour}"
        );
        // The listing is in rank order: scores never get better down the list.
        let listed = top(&h, id, "24h").await;
        assert!(
            listed
                .windows(2)
                .all(|w| w[0].1 >= w[1].1 && w[0].2 < w[1].2)
        );
        // Ten minutes later, inside the same hour, nothing changes.
        h.clock.set(start + hour * HOUR_NS + 10 * 60_000_000_000);
        let again: HashMap<String, i64> = top(&h, id, "24h")
            .await
            .into_iter()
            .map(|(m, s, _)| (m, s))
            .collect();
        assert_eq!(again, got);
    }
    // The all-time window saw everything.
    let all: HashMap<String, i64> = top(&h, id, "all")
        .await
        .into_iter()
        .map(|(m, s, _)| (m, s))
        .collect();
    let mut expected: HashMap<String, i64> = HashMap::new();
    for &(_, m, v) in &events {
        expected
            .entry(m.to_string())
            .and_modify(|s| *s = if best { (*s).max(v) } else { *s + v })
            .or_insert(v);
    }
    assert_eq!(all, expected);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rolling_24h_sums_the_last_24_hours_as_hours_pass() {
    rolling_matches_reference_as_hours_pass(Operator::Increment).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rolling_24h_keeps_the_best_of_the_last_24_hours_as_hours_pass() {
    rolling_matches_reference_as_hours_pass(Operator::Best).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rank_movement_is_against_the_previous_period() {
    let h = harness(ns("2030-02-10T12:00:00Z")).await;
    h.ranking
        .upsert_board(board("mv", Operator::Increment, &[WindowKind::Daily]))
        .await
        .unwrap();
    for (i, (m, d)) in [("a", "10"), ("b", "5"), ("c", "1")].iter().enumerate() {
        h.ranking
            .record(vec![inc("mv", m, d, &format!("d1-{i}"))])
            .await
            .unwrap();
    }
    h.clock.advance(Duration::from_secs(86_400));
    for (i, (m, d)) in [("c", "20"), ("a", "3"), ("new", "1")].iter().enumerate() {
        h.ranking
            .record(vec![inc("mv", m, d, &format!("d2-{i}"))])
            .await
            .unwrap();
    }
    let c = h.ranking.rank("mv", "day", "c").await.unwrap();
    assert_eq!((c.standing.entry.rank, c.previous_rank), (1, Some(3)));
    let a = h.ranking.rank("mv", "day", "a").await.unwrap();
    assert_eq!((a.standing.entry.rank, a.previous_rank), (2, Some(1)));
    let new = h.ranking.rank("mv", "day", "new").await.unwrap();
    assert_eq!((new.standing.entry.rank, new.previous_rank), (3, None));
    assert!(matches!(
        h.ranking.rank("mv", "day", "b").await,
        Err(Error::NotFound(_))
    ));
    let b = h.ranking.rank("mv", "day:-1", "b").await.unwrap();
    assert_eq!((b.standing.entry.rank, b.previous_rank), (2, None));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rolling_window_added_later_starts_from_the_hours_already_kept() {
    let start = ns("2030-07-01T00:30:00Z");
    let h = harness(start).await;
    h.ranking
        .upsert_board(board("late", Operator::Increment, &[WindowKind::Hourly]))
        .await
        .unwrap();
    // Hour 0: 5, hour 1: 7 — before the board has a rolling window.
    h.ranking
        .record(vec![inc("late", "m", "5", "a")])
        .await
        .unwrap();
    h.clock.set(start + HOUR_NS);
    h.ranking
        .record(vec![inc("late", "m", "7", "b")])
        .await
        .unwrap();
    h.ranking
        .upsert_board(board(
            "late",
            Operator::Increment,
            &[WindowKind::Rolling24h],
        ))
        .await
        .unwrap();
    assert_eq!(top(&h, "late", "24h").await, vec![t("m", 12, 1)]);
    h.clock.set(start + 2 * HOUR_NS);
    h.ranking
        .record(vec![inc("late", "m", "1", "c")])
        .await
        .unwrap();
    h.ranking.maintain().await.unwrap(); // the second build, once caches have settled
    assert_eq!(top(&h, "late", "24h").await, vec![t("m", 13, 1)]);
    // Hour 0 leaves the window at hour 24, hour 1 at hour 25: never negative.
    h.clock.set(start + 24 * HOUR_NS);
    assert_eq!(top(&h, "late", "24h").await, vec![t("m", 8, 1)]);
    h.clock.set(start + 25 * HOUR_NS);
    assert_eq!(top(&h, "late", "24h").await, vec![t("m", 1, 1)]);
    h.clock.set(start + 26 * HOUR_NS);
    assert!(top(&h, "late", "24h").await.is_empty());
}

/// The process adding a rolling window died after storing the board and
/// before building the window (or Redis lost the build): the window is
/// built from the hour buckets all the same — by the client's retry of the
/// upsert, or else by the next catch-up — and never goes negative as the
/// hours roll off.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rolling_window_whose_build_was_lost_is_built() {
    for retried in [true, false] {
        let start = ns("2030-07-01T00:30:00Z");
        let h = harness(start).await;
        let id = if retried { "retry" } else { "heal" };
        h.ranking
            .upsert_board(board(id, Operator::Increment, &[WindowKind::Hourly]))
            .await
            .unwrap();
        h.ranking
            .record(vec![inc(id, "m", "5", "a")])
            .await
            .unwrap();
        h.clock.set(start + HOUR_NS);
        h.ranking
            .record(vec![inc(id, "m", "7", "b")])
            .await
            .unwrap();
        // What the dying upsert did: store the definition, nothing more.
        let rolling = board(id, Operator::Increment, &[WindowKind::Rolling24h]);
        BoardBook::new(redis_handle(&h.redis.url()), Keys::new("tm"))
            .upsert(rolling.clone(), h.clock.now_ns())
            .await
            .unwrap();
        if retried {
            h.ranking.upsert_board(rolling).await.unwrap();
        } else {
            h.ranking.maintain().await.unwrap(); // what every instance does each second
        }
        assert_eq!(top(&h, id, "24h").await, vec![t("m", 12, 1)], "{id}");
        h.clock.set(start + 2 * HOUR_NS);
        h.ranking
            .record(vec![inc(id, "m", "1", "c")])
            .await
            .unwrap();
        h.ranking.maintain().await.unwrap();
        assert_eq!(top(&h, id, "24h").await, vec![t("m", 13, 1)], "{id}");
        h.clock.set(start + 24 * HOUR_NS);
        assert_eq!(top(&h, id, "24h").await, vec![t("m", 8, 1)], "{id}");
        h.clock.set(start + 25 * HOUR_NS);
        assert_eq!(top(&h, id, "24h").await, vec![t("m", 1, 1)], "{id}");
        h.clock.set(start + 26 * HOUR_NS);
        assert!(top(&h, id, "24h").await.is_empty(), "{id}");
    }
}

/// An hour bucket larger than one roll-off chunk (500 members) leaves the
/// rolling window completely, while the later hour and the all-time window
/// keep what they hold.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_large_hour_rolls_off_in_chunks() {
    let start = ns("2030-08-01T00:05:00Z");
    let h = harness(start).await;
    for (id, operator) in [("sum", Operator::Increment), ("best", Operator::Best)] {
        upsert_rolling_board(&h, id, operator).await;
    }
    let members = 1_234;
    for (id, event) in [
        ("sum", inc as fn(&str, &str, &str, &str) -> _),
        ("best", scored),
    ] {
        for chunk in (0..members).collect::<Vec<_>>().chunks(400) {
            let events = chunk
                .iter()
                .map(|i| {
                    event(
                        id,
                        &format!("m{i}"),
                        &(i % 7 + 1).to_string(),
                        &format!("h0-{i}"),
                    )
                })
                .collect();
            h.ranking.record(events).await.unwrap();
        }
        h.clock.set(start + HOUR_NS);
        let events = (0..10)
            .map(|i| event(id, &format!("m{i}"), "100", &format!("h1-{i}")))
            .collect();
        h.ranking.record(events).await.unwrap();
        let before = h.ranking.top(id, "24h", 10, "").await.unwrap();
        assert_eq!(before.total, members as u64, "{id}");
        h.clock.set(start);
    }
    // Hour 0 leaves the window at hour 24.
    h.clock.set(start + 24 * HOUR_NS);
    let expected: Vec<(String, i64, u64)> = (0..10)
        .map(|i| (format!("m{i}"), 100, i as u64 + 1))
        .collect();
    assert_eq!(top(&h, "sum", "24h").await, expected);
    assert_eq!(top(&h, "best", "24h").await, expected);
    // All-time keeps hour 0: m0 has 1 + 100 (sum) and 100 (best).
    let m0 = h.ranking.rank("sum", "all", "m0").await.unwrap();
    assert_eq!(m0.standing.entry.score, 101);
    let m999 = h.ranking.rank("best", "all", "m999").await.unwrap();
    assert_eq!(m999.standing.entry.score, 999 % 7 + 1);
}
