//! Recording and reading against a real redis-server: idempotence, exact
//! concurrent sums, operators, ties, percentiles, paging, neighbours, removal
//! and bad input.

mod common;

use std::collections::HashMap;

use common::*;
use tickmesh_core::Error;
use tickmesh_ranking::board::{Operator, Order, TieBreak, WindowKind};
use tickmesh_ranking::record::Outcome;
use tickmesh_ranking::score::MAX_SCORE_UNITS;

const NOW: &str = "2030-03-04T10:20:00Z";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_retried_event_counts_once_even_when_retries_race() {
    let h = harness(ns(NOW)).await;
    let all = [
        WindowKind::AllTime,
        WindowKind::Daily,
        WindowKind::Rolling24h,
    ];
    h.ranking
        .upsert_board(board("orders", Operator::Increment, &all))
        .await
        .unwrap();
    let mut tasks = Vec::new();
    for _ in 0..20 {
        let r = h.ranking.clone();
        tasks.push(tokio::spawn(async move {
            r.record(vec![inc("orders", "sku-1", "3", "order-42")])
                .await
                .unwrap()
                .remove(0)
        }));
    }
    let mut recorded = 0;
    for t in tasks {
        if matches!(t.await.unwrap(), Outcome::Recorded(_)) {
            recorded += 1;
        }
    }
    assert_eq!(recorded, 1, "exactly one of the racing retries is recorded");
    for window in ["all", "day", "24h"] {
        assert_eq!(
            top(&h, "orders", window).await,
            vec![t("sku-1", 3, 1)],
            "{window}"
        );
    }
    // Within a batch too, and a later retry.
    let out = h
        .ranking
        .record(vec![
            inc("orders", "sku-1", "3", "order-42"),
            inc("orders", "sku-2", "1", "order-43"),
            inc("orders", "sku-2", "1", "order-43"),
        ])
        .await
        .unwrap();
    assert_eq!(out[0], Outcome::Duplicate);
    assert!(matches!(out[1], Outcome::Recorded(_)));
    assert_eq!(out[2], Outcome::Duplicate);
    assert_eq!(
        top(&h, "orders", "all").await,
        vec![t("sku-1", 3, 1), t("sku-2", 1, 2)]
    );
}

/// The largest batch allowed (10,000 events) in one call: every multi-member
/// command of the script is split under Redis's argument limits, repeated
/// members and ids inside the batch are applied in order, and the sums are exact.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_maximal_batch_is_recorded_exactly() {
    let h = harness(ns(NOW)).await;
    let windows = [WindowKind::AllTime, WindowKind::Daily, WindowKind::Hourly];
    h.ranking
        .upsert_board(board("big", Operator::Increment, &windows))
        .await
        .unwrap();
    const EVENTS: usize = 10_000;
    const MEMBERS: usize = 4_500;
    let mut expected: HashMap<String, i64> = HashMap::new();
    let mut events = Vec::with_capacity(EVENTS);
    for i in 0..EVENTS {
        // Every 10th event repeats the id before it: a duplicate.
        let id = if i % 10 == 9 { i - 1 } else { i };
        let member = format!("m{}", (i * 7919) % MEMBERS);
        let delta = (i % 5 + 1) as i64;
        if i % 10 != 9 {
            *expected.entry(member.clone()).or_default() += delta;
        }
        events.push(inc("big", &member, &delta.to_string(), &format!("b{id}")));
    }
    let out = h.ranking.record(events).await.unwrap();
    assert_eq!(
        out.iter().filter(|o| **o == Outcome::Duplicate).count(),
        EVENTS / 10
    );
    for window in ["all", "day", "hour"] {
        let mut got: HashMap<String, i64> = HashMap::new();
        let mut token = String::new();
        loop {
            let view = h.ranking.top("big", window, 1_000, &token).await.unwrap();
            for e in &view.entries {
                got.insert(e.member.clone(), e.score);
            }
            if view.next_page_token.is_empty() {
                break;
            }
            token = view.next_page_token;
        }
        assert_eq!(got, expected, "{window}");
    }
}

/// An event id is a duplicate for the whole `dedupe_ttl` (1 day) across the
/// dedupe periods it is kept in, and counts again once it is well past it;
/// ids an earlier version kept in one sorted set are still honoured.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn event_ids_are_remembered_for_the_dedupe_ttl_then_forgotten() {
    let h = harness(ns(NOW)).await;
    h.ranking
        .upsert_board(board("orders", Operator::Increment, &[WindowKind::AllTime]))
        .await
        .unwrap();
    let record = |id: &'static str| {
        let r = h.ranking.clone();
        async move {
            r.record(vec![inc("orders", "sku-1", "1", id)])
                .await
                .unwrap()
                .remove(0)
        }
    };
    assert!(matches!(record("e1").await, Outcome::Recorded(_)));
    // An id as an earlier version remembered it: the legacy sorted set.
    let keys = tickmesh_ranking::keys::Keys::new("tm");
    let mut conn = redis::Client::open(h.redis.url())
        .unwrap()
        .get_multiplexed_async_connection()
        .await
        .unwrap();
    let _: i64 = redis::cmd("ZADD")
        .arg(keys.events("orders"))
        .arg(ns(NOW) / 1_000_000)
        .arg("legacy-1")
        .query_async(&mut conn)
        .await
        .unwrap();
    for step_h in [0, 5, 7, 13, 23] {
        h.clock.set(ns(NOW) + step_h * 3_600_000_000_000);
        assert_eq!(record("e1").await, Outcome::Duplicate, "{step_h} h later");
        assert_eq!(
            record("legacy-1").await,
            Outcome::Duplicate,
            "{step_h} h later"
        );
    }
    h.clock.set(ns(NOW) + 24 * 3_600_000_000_000 - 1_000_000);
    assert_eq!(record("e1").await, Outcome::Duplicate, "just inside a day");
    // A day and a dedupe period (6 h) later both are forgotten: new events.
    h.clock.set(ns(NOW) + 30 * 3_600_000_000_000 + 1_000_000);
    assert!(matches!(record("e1").await, Outcome::Recorded(_)));
    assert!(matches!(record("legacy-1").await, Outcome::Recorded(_)));
    assert_eq!(top(&h, "orders", "all").await, vec![t("sku-1", 3, 1)]);
    // The legacy set emptied itself and is gone.
    let exists: i64 = redis::cmd("EXISTS")
        .arg(keys.events("orders"))
        .query_async(&mut conn)
        .await
        .unwrap();
    assert_eq!(exists, 0);
    // Every period hash carries an expiry.
    let period_keys: Vec<String> = redis::cmd("KEYS")
        .arg("tm:rank:{orders}:ev:*")
        .query_async(&mut conn)
        .await
        .unwrap();
    assert!(!period_keys.is_empty());
    for k in period_keys {
        let ttl: i64 = redis::cmd("PTTL")
            .arg(&k)
            .query_async(&mut conn)
            .await
            .unwrap();
        assert!(ttl > 0, "{k} has no expiry");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_increments_from_many_tasks_sum_exactly() {
    let h = harness(ns(NOW)).await;
    let mut b = board(
        "revenue",
        Operator::Increment,
        &[
            WindowKind::AllTime,
            WindowKind::Hourly,
            WindowKind::Weekly,
            WindowKind::Rolling24h,
        ],
    );
    b.score_scale = 2;
    h.ranking.upsert_board(b).await.unwrap();
    let members = ["a", "b", "c", "d", "e"];
    let mut expected: HashMap<&str, i64> = HashMap::new();
    let mut tasks = Vec::new();
    for task in 0..32 {
        let mut events = Vec::new();
        for i in 0..50 {
            let member = members[(task + i) % members.len()];
            // Cents that floats would get wrong when summed: 0.10, 0.20, 1234567.89, -0.07
            let (text, cents) = match i % 4 {
                0 => ("0.10", 10),
                1 => ("0.20", 20),
                2 => ("1234567.89", 123_456_789),
                _ => ("-0.07", -7),
            };
            *expected.entry(member).or_default() += cents;
            events.push(inc("revenue", member, text, &format!("t{task}-e{i}")));
        }
        let r = h.ranking.clone();
        tasks.push(tokio::spawn(async move {
            // One at a time, to interleave many scripts from many tasks.
            for e in events {
                r.record(vec![e]).await.unwrap();
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    for window in ["all", "hour", "week", "24h"] {
        let got: HashMap<String, i64> = top(&h, "revenue", window)
            .await
            .into_iter()
            .map(|(m, s, _)| (m, s))
            .collect();
        for (m, cents) in &expected {
            assert_eq!(got[*m], *cents, "{window} {m}");
        }
    }
    let view = h.ranking.top("revenue", "", 1, "").await.unwrap();
    assert_eq!(view.total, 5);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scores_are_exact_up_to_2_pow_53_and_refused_beyond_writing_nothing() {
    let h = harness(ns(NOW)).await;
    h.ranking
        .upsert_board(board(
            "big",
            Operator::Increment,
            &[WindowKind::AllTime, WindowKind::Daily],
        ))
        .await
        .unwrap();
    let near = (MAX_SCORE_UNITS - 1).to_string();
    h.ranking
        .record(vec![inc("big", "m", &near, "e1")])
        .await
        .unwrap();
    h.ranking
        .record(vec![inc("big", "m", "1", "e2")])
        .await
        .unwrap();
    assert_eq!(
        top(&h, "big", "all").await,
        vec![t("m", MAX_SCORE_UNITS, 1)]
    );
    // One more would pass 2^53 - 1: refused, nothing written, the id not used up.
    let e = h
        .ranking
        .record_one(inc("big", "m", "1", "e3"))
        .await
        .unwrap_err();
    assert!(
        matches!(&e, Error::InvalidArgument(v) if v[0].field == "delta"),
        "{e}"
    );
    assert_eq!(
        top(&h, "big", "day").await,
        vec![t("m", MAX_SCORE_UNITS, 1)]
    );
    let out = h
        .ranking
        .record(vec![inc("big", "m", "-5", "e3")])
        .await
        .unwrap();
    assert!(matches!(out[0], Outcome::Recorded(_)), "e3 was not used up");
    assert_eq!(
        top(&h, "big", "all").await,
        vec![t("m", MAX_SCORE_UNITS - 5, 1)]
    );
    // In a batch, the refused event is skipped alone.
    let out = h
        .ranking
        .record(vec![
            inc("big", "m", "5", "e4"),
            inc("big", "n", "-9007199254740991", "e5"),
            inc("big", "n", "-1", "e6"),
        ])
        .await
        .unwrap();
    assert!(matches!(out[0], Outcome::Recorded(_)));
    assert!(matches!(out[1], Outcome::Recorded(_)));
    assert_eq!(out[2], Outcome::OutOfRange);
    assert_eq!(
        top(&h, "big", "all").await,
        vec![t("m", MAX_SCORE_UNITS, 1), t("n", -MAX_SCORE_UNITS, 2)]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn set_and_best_operators_and_lower_is_better() {
    let h = harness(ns(NOW)).await;
    let mut best = board(
        "fastest-sellout",
        Operator::Best,
        &[WindowKind::AllTime, WindowKind::Daily],
    );
    best.order = Order::LowerFirst;
    best.score_scale = 3;
    h.ranking.upsert_board(best).await.unwrap();
    for (i, (member, secs)) in [
        ("concert-a", "12.5"),
        ("concert-b", "9.250"),
        ("concert-a", "20"),
        ("concert-c", "9.25"),
    ]
    .iter()
    .enumerate()
    {
        h.ranking
            .record(vec![scored(
                "fastest-sellout",
                member,
                secs,
                &format!("e{i}"),
            )])
            .await
            .unwrap();
    }
    // Best keeps the lowest time; b reached 9.250 before c.
    assert_eq!(
        top(&h, "fastest-sellout", "all").await,
        vec![
            t("concert-b", 9250, 1),
            t("concert-c", 9250, 2),
            t("concert-a", 12500, 3)
        ]
    );
    h.ranking
        .upsert_board(board("level", Operator::Set, &[WindowKind::AllTime]))
        .await
        .unwrap();
    h.ranking
        .record(vec![scored("level", "p", "7", "1")])
        .await
        .unwrap();
    h.ranking
        .record(vec![scored("level", "p", "3", "2")])
        .await
        .unwrap();
    h.ranking
        .record(vec![scored("level", "q", "-4", "3")])
        .await
        .unwrap();
    assert_eq!(
        top(&h, "level", "").await,
        vec![t("p", 3, 1), t("q", -4, 2)]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ties_are_broken_by_the_board_rule_deterministically() {
    let h = harness(ns(NOW)).await;
    let mut earlier = board("earlier", Operator::Increment, &[WindowKind::AllTime]);
    let mut shared = earlier.clone();
    shared.id = "shared".into();
    shared.tie_break = TieBreak::SharedRank;
    earlier.tie_break = TieBreak::EarlierFirst;
    h.ranking.upsert_board(earlier).await.unwrap();
    h.ranking.upsert_board(shared).await.unwrap();
    for b in ["earlier", "shared"] {
        // "zed" reaches 10 first, then "abe" (alphabetical order would say otherwise),
        // then "mia" passes 10 on the way to 11 and comes back: she reached 10 last.
        let events = [
            ("zed", "10"),
            ("abe", "4"),
            ("abe", "6"),
            ("mia", "11"),
            ("mia", "-1"),
            ("top", "12"),
            ("low", "1"),
        ];
        for (i, (m, d)) in events.iter().enumerate() {
            h.ranking
                .record(vec![inc(b, m, d, &format!("{b}{i}"))])
                .await
                .unwrap();
        }
    }
    assert_eq!(
        top(&h, "earlier", "all").await,
        vec![
            t("top", 12, 1),
            t("zed", 10, 2),
            t("abe", 10, 3),
            t("mia", 10, 4),
            t("low", 1, 5)
        ]
    );
    assert_eq!(
        top(&h, "shared", "all").await,
        vec![
            t("top", 12, 1),
            t("zed", 10, 2),
            t("abe", 10, 2),
            t("mia", 10, 2),
            t("low", 1, 5)
        ]
    );
    // Ranks agree with the listing, pages starting inside a tie too.
    let r = h.ranking.rank("shared", "", "mia").await.unwrap();
    assert_eq!(r.standing.entry.rank, 2);
    let page = h.ranking.top("shared", "all", 2, "").await.unwrap();
    let page2 = h
        .ranking
        .top("shared", "all", 2, &page.next_page_token)
        .await
        .unwrap();
    assert_eq!(
        page2.entries.iter().map(triple).collect::<Vec<_>>(),
        vec![t("abe", 10, 2), t("mia", 10, 2)]
    );
    let r = h.ranking.rank("earlier", "", "mia").await.unwrap();
    assert_eq!(r.standing.entry.rank, 4);
    // A zero increment does not change when "abe" reached 10.
    h.ranking
        .record(vec![inc("earlier", "abe", "0", "z")])
        .await
        .unwrap();
    assert_eq!(
        h.ranking
            .rank("earlier", "", "abe")
            .await
            .unwrap()
            .standing
            .entry
            .rank,
        3
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn percentile_members_below_and_neighbours() {
    let h = harness(ns(NOW)).await;
    let mut b = board("p", Operator::Increment, &[WindowKind::AllTime]);
    b.tie_break = TieBreak::SharedRank;
    h.ranking.upsert_board(b).await.unwrap();
    for (i, (m, d)) in [("a", "40"), ("b", "30"), ("c", "30"), ("d", "10")]
        .iter()
        .enumerate()
    {
        h.ranking
            .record(vec![inc("p", m, d, &i.to_string())])
            .await
            .unwrap();
    }
    let expect = [
        ("a", 1, 3, "75.0000"),
        ("b", 2, 1, "25.0000"),
        ("c", 2, 1, "25.0000"),
        ("d", 4, 0, "0.0000"),
    ];
    for (m, rank, below, pct) in expect {
        let r = h.ranking.rank("p", "", m).await.unwrap();
        assert_eq!(r.standing.entry.rank, rank, "{m}");
        assert_eq!(r.standing.below, below, "{m}");
        assert_eq!(r.standing.total, 4);
        assert_eq!(
            tickmesh_ranking::score::percentile(r.standing.below, r.standing.total),
            pct
        );
        assert_eq!(r.previous_rank, None, "all-time has no previous window");
    }
    let (_, _, page) = h.ranking.around("p", "", "c", 1).await.unwrap();
    assert_eq!(
        page.entries.iter().map(triple).collect::<Vec<_>>(),
        vec![t("b", 30, 2), t("c", 30, 2), t("d", 10, 4)]
    );
    let (_, _, page) = h.ranking.around("p", "", "a", 100).await.unwrap();
    assert_eq!(page.entries.len(), 4);
    let view = h
        .ranking
        .ranks(
            "p",
            "",
            vec!["d".into(), "nobody".into(), "a".into(), "d".into()],
        )
        .await
        .unwrap();
    assert_eq!(
        view.entries.iter().map(triple).collect::<Vec<_>>(),
        vec![t("a", 40, 1), t("d", 10, 4)]
    );
    assert_eq!(view.missing, vec!["nobody".to_string()]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pages_cover_the_window_once_and_members_can_be_removed() {
    let h = harness(ns(NOW)).await;
    h.ranking
        .upsert_board(board(
            "pg",
            Operator::Increment,
            &[WindowKind::AllTime, WindowKind::Hourly],
        ))
        .await
        .unwrap();
    let events = (0..25)
        .map(|i| {
            inc(
                "pg",
                &format!("m{i:02}"),
                &(i + 1).to_string(),
                &format!("e{i}"),
            )
        })
        .collect();
    h.ranking.record(events).await.unwrap();
    let mut seen = Vec::new();
    let mut token = String::new();
    loop {
        let page = h.ranking.top("pg", "", 10, &token).await.unwrap();
        seen.extend(page.entries.iter().map(|e| (e.member.clone(), e.rank)));
        if page.next_page_token.is_empty() {
            break;
        }
        token = page.next_page_token;
    }
    let expected: Vec<_> = (0..25)
        .rev()
        .map(|i| (format!("m{i:02}"), 25 - i as u64))
        .collect();
    assert_eq!(seen, expected);
    // A token of another query is refused.
    let page = h.ranking.top("pg", "", 10, "").await.unwrap();
    let e = h
        .ranking
        .top("pg", "hour", 10, &page.next_page_token)
        .await
        .unwrap_err();
    assert!(
        matches!(&e, Error::InvalidArgument(v) if v[0].field == "page_token"),
        "{e}"
    );

    assert_eq!(h.ranking.remove_member("pg", "m24").await.unwrap(), 2);
    assert_eq!(h.ranking.remove_member("pg", "m24").await.unwrap(), 0);
    assert_eq!(top(&h, "pg", "hour").await[0], t("m23", 24, 1));
    assert!(matches!(
        h.ranking.rank("pg", "", "m24").await,
        Err(Error::NotFound(_))
    ));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_input_is_refused_naming_the_field_and_writes_nothing() {
    let h = harness(ns(NOW)).await;
    h.ranking
        .upsert_board(board("ok", Operator::Increment, &[WindowKind::AllTime]))
        .await
        .unwrap();
    let field_of = |e: Error| match e {
        Error::InvalidArgument(v) => v.into_iter().map(|v| v.field).collect::<Vec<_>>().join(","),
        other => format!("not invalid: {other}"),
    };
    assert!(matches!(
        h.ranking.record(vec![inc("nope", "m", "1", "e")]).await,
        Err(Error::NotFound(_))
    ));
    for (event, field) in [
        (inc("ok", "m", "NaN", "e"), "delta"),
        (inc("ok", "m", "inf", "e"), "delta"),
        (inc("ok", "m", "1e5", "e"), "delta"),
        (inc("ok", "m", "99999999999999999", "e"), "delta"),
        (inc("ok", "", "1", "e"), "member"),
        (inc("ok", "m", "1", ""), "event_id"),
        (inc("{x}", "m", "1", "e"), "board_id"),
        (scored("ok", "m", "5", "e"), "score"),
    ] {
        assert_eq!(
            field_of(h.ranking.record(vec![event]).await.unwrap_err()),
            field
        );
    }
    // A batch with one bad event records none of it.
    let e = h
        .ranking
        .record(vec![inc("ok", "m", "1", "a"), inc("ok", "m", "x", "b")])
        .await
        .unwrap_err();
    assert_eq!(field_of(e), "events[1].delta");
    assert!(top(&h, "ok", "").await.is_empty(), "nothing was written");
    assert!(
        h.ranking
            .record(vec![inc("ok", "m", "1", "a")])
            .await
            .is_ok(),
        "a was not used up"
    );

    assert_eq!(
        field_of(h.ranking.top("ok", "day", 10, "").await.unwrap_err()),
        "window"
    );
    assert_eq!(
        field_of(h.ranking.top("ok", "fortnight", 10, "").await.unwrap_err()),
        "window"
    );
    assert_eq!(
        field_of(h.ranking.top("ok", "", -1, "").await.unwrap_err()),
        "page_size"
    );
    assert_eq!(
        field_of(h.ranking.top("ok", "", 1001, "").await.unwrap_err()),
        "page_size"
    );
    assert_eq!(
        field_of(h.ranking.top("ok", "", 10, "garbage").await.unwrap_err()),
        "page_token"
    );
    assert_eq!(
        field_of(h.ranking.around("ok", "", "m", 101).await.unwrap_err()),
        "radius"
    );
    assert_eq!(
        field_of(h.ranking.around("ok", "", "m", -1).await.unwrap_err()),
        "radius"
    );
    assert!(matches!(
        h.ranking.top("missing", "", 10, "").await,
        Err(Error::NotFound(_))
    ));

    let mut bad = board("bad", Operator::Set, &[WindowKind::Rolling24h]);
    bad.time_zone = "Mars/Olympus".into();
    assert_eq!(
        field_of(h.ranking.upsert_board(bad).await.unwrap_err()),
        "board.windows,board.time_zone"
    );
    let mut changed = board("ok", Operator::Best, &[WindowKind::AllTime]);
    changed.order = Order::LowerFirst;
    assert!(matches!(
        h.ranking.upsert_board(changed).await,
        Err(Error::FailedPrecondition(m)) if m.contains("order, operator")
    ));
    // Windows may change: add a daily window.
    let (b, created) = h
        .ranking
        .upsert_board(board(
            "ok",
            Operator::Increment,
            &[WindowKind::AllTime, WindowKind::Daily],
        ))
        .await
        .unwrap();
    assert!(!created);
    assert_eq!(b.windows, vec![WindowKind::AllTime, WindowKind::Daily]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_calls_sharing_a_script_call_each_get_their_own_outcomes() {
    let h = harness(ns(NOW)).await;
    h.ranking
        .upsert_board(board("gc", Operator::Increment, &[WindowKind::AllTime]))
        .await
        .unwrap();
    h.ranking
        .upsert_board(board(
            "gc2",
            Operator::Increment,
            &[WindowKind::AllTime, WindowKind::Daily],
        ))
        .await
        .unwrap();
    let mut tasks = Vec::new();
    for i in 0..200i64 {
        let r = h.ranking.clone();
        tasks.push(tokio::spawn(async move {
            let b = if i % 2 == 0 { "gc" } else { "gc2" };
            let out = r
                .record(vec![
                    inc(b, &format!("m{i}"), &i.to_string(), &format!("e{i}")),
                    inc(b, &format!("m{i}"), "1", &format!("e{i}")),
                ])
                .await
                .unwrap();
            (i, out)
        }));
    }
    for t in tasks {
        let (i, out) = t.await.unwrap();
        let windows = if i % 2 == 0 { 1 } else { 2 };
        assert_eq!(
            out,
            vec![
                Outcome::Recorded(
                    [("all".to_string(), i)]
                        .into_iter()
                        .chain((windows == 2).then(|| ("day:2030-03-04".to_string(), i)))
                        .collect()
                ),
                Outcome::Duplicate
            ],
            "call {i}"
        );
    }
    assert_eq!(h.ranking.top("gc", "", 1, "").await.unwrap().total, 100);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn window_keys_expire_after_close_plus_retention_also_when_refilled() {
    let h = harness(ns(NOW)).await;
    let mut b = board(
        "ttl",
        Operator::Increment,
        &[WindowKind::AllTime, WindowKind::Daily],
    );
    b.retention_secs = 7200;
    h.ranking.upsert_board(b).await.unwrap();
    let keys = tickmesh_ranking::keys::Keys::new("tm");
    let mut conn = redis::Client::open(h.redis.url())
        .unwrap()
        .get_multiplexed_async_connection()
        .await
        .unwrap();
    // 2030-03-05T00:00Z + 2 h.
    let expected = ns("2030-03-05T02:00:00Z") / 1_000_000;
    let expiry = |key: String| {
        let mut conn = conn.clone();
        async move {
            redis::cmd("PEXPIRETIME")
                .arg(key)
                .query_async::<i64>(&mut conn)
                .await
                .unwrap()
        }
    };
    h.ranking
        .record(vec![inc("ttl", "m", "1", "a")])
        .await
        .unwrap();
    let day = keys.entries("ttl", "day:2030-03-04");
    assert_eq!(expiry(day.clone()).await, expected);
    assert_eq!(
        expiry(keys.members("ttl", "day:2030-03-04")).await,
        expected
    );
    assert_eq!(expiry(keys.entries("ttl", "all")).await, -1);
    assert_eq!(h.ranking.remove_member("ttl", "m").await.unwrap(), 2);
    assert_eq!(expiry(day.clone()).await, -2, "emptied: gone");
    h.ranking
        .record(vec![inc("ttl", "m", "1", "b")])
        .await
        .unwrap();
    assert_eq!(expiry(day).await, expected, "refilled: expires again");
    let _: () = redis::cmd("PING").query_async(&mut conn).await.unwrap();
}
