//! Issue on a real redis-server: every outcome in the script's order,
//! request-id replay, bad input that writes nothing, and contention from
//! many tasks on two service instances.

mod common;

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use common::*;
use tickmesh_core::Error;
use tickmesh_coupon::campaign::{CampaignState, NewCampaign};
use tickmesh_coupon::clock::ManualClock;
use tickmesh_coupon::service::Outcome;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn outcomes_in_order_and_request_id_replay() {
    let redis = redis().await;
    let clock = ManualClock::new((T0_MS - 1000) * 1_000_000);
    let (c, _stop) = instance(&redis, store(), clock.clone(), config());
    let (created, fresh) = c.create_campaign(campaign("sale", 3, 0)).await.unwrap();
    assert!(fresh);
    assert_eq!(created.per_user_limit, 1);
    // The same definition again is no change; another one is refused.
    assert!(!c.create_campaign(campaign("sale", 3, 0)).await.unwrap().1);
    assert!(matches!(
        c.create_campaign(campaign("sale", 4, 0)).await,
        Err(Error::FailedPrecondition(_))
    ));

    let early = c.issue("sale", "u1", "r1").await.unwrap();
    assert_eq!(early.outcome, Outcome::NotStarted);
    assert!(
        c.issuance("sale", "u1").await.unwrap().is_empty(),
        "nothing written"
    );

    clock.set(T0_MS * 1_000_000);
    let first = c.issue("sale", "u1", "r1").await.unwrap();
    assert_eq!(first.outcome, Outcome::Issued);
    assert_eq!(first.remaining, 2);
    assert!(
        first.code.ends_with("-1") && first.code.len() == 16,
        "{}",
        first.code
    );
    // A retry of the same request gets the same answer, and takes no stock.
    assert_eq!(c.issue("sale", "u1", "r1").await.unwrap(), first);
    // Another request of the same user: the coupon it holds.
    let again = c.issue("sale", "u1", "r2").await.unwrap();
    assert_eq!(again.outcome, Outcome::AlreadyIssued);
    assert_eq!(again.code, first.code);
    // Someone else's request id is refused, not answered with their coupon.
    match c.issue("sale", "u2", "r1").await {
        Err(Error::InvalidArgument(v)) => assert_eq!(v[0].field, "request_id"),
        other => panic!("{other:?}"),
    }
    let b = c.issue("sale", "u2", "r3").await.unwrap();
    let last = c.issue("sale", "u3", "r4").await.unwrap();
    assert_eq!(
        (b.outcome, last.outcome),
        (Outcome::Issued, Outcome::Issued)
    );
    assert_eq!(last.remaining, 0);
    let codes: HashSet<_> = [&first.code, &b.code, &last.code].into_iter().collect();
    assert_eq!(codes.len(), 3);
    let sold = c.issue("sale", "u4", "r5").await.unwrap();
    assert_eq!((sold.outcome, sold.code.as_str()), (Outcome::SoldOut, ""));
    let view = c.get_campaign("sale").await.unwrap();
    assert_eq!((view.remaining, view.issued), (0, 3));
    assert_eq!(view.state, CampaignState::SoldOut);
    assert_eq!(view.sold_out_ms, Some(T0_MS));
    assert_eq!(
        c.issuance("sale", "u2").await.unwrap(),
        vec![b.code.clone()]
    );

    // After the end: new requests are ENDED, answered ones keep their answer.
    c.create_campaign(campaign("later", 5, 0)).await.unwrap();
    clock.set((T0_MS + 3_600_000) * 1_000_000);
    assert_eq!(
        c.issue("later", "u1", "x").await.unwrap().outcome,
        Outcome::Ended
    );
    assert_eq!(
        c.get_campaign("later").await.unwrap().state,
        CampaignState::Ended
    );
    assert_eq!(c.issue("sale", "u1", "r1").await.unwrap(), first);

    assert!(matches!(
        c.issue("nope", "u1", "r1").await,
        Err(Error::NotFound(_))
    ));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn per_user_limits_above_one_hand_out_distinct_codes() {
    let redis = redis().await;
    let clock = ManualClock::new(T0_MS * 1_000_000);
    let (c, _stop) = instance(&redis, store(), clock, config());
    c.create_campaign(campaign("multi", 10, 2)).await.unwrap();
    let a = c.issue("multi", "u", "1").await.unwrap();
    let b = c.issue("multi", "u", "2").await.unwrap();
    let third = c.issue("multi", "u", "3").await.unwrap();
    assert_eq!((a.outcome, b.outcome), (Outcome::Issued, Outcome::Issued));
    assert_ne!(a.code, b.code);
    assert_eq!(third.outcome, Outcome::AlreadyIssued);
    assert_eq!(third.code, a.code);
    assert_eq!(
        c.issuance("multi", "u").await.unwrap(),
        vec![a.code, b.code]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_input_names_fields_and_writes_nothing() {
    let redis = redis().await;
    let clock = ManualClock::new(T0_MS * 1_000_000);
    let store = store();
    let (c, _stop) = instance(&redis, store.clone(), clock, config());
    let bad = NewCampaign {
        id: "bad".into(),
        total_stock: -1,
        per_user_limit: 1,
        start_ms: Some(T0_MS),
        end_ms: Some(T0_MS - 1),
        ..Default::default()
    };
    match c.create_campaign(bad).await {
        Err(Error::InvalidArgument(v)) => {
            let fields: Vec<_> = v.iter().map(|v| v.field.as_str()).collect();
            assert_eq!(fields, ["campaign.total_stock", "campaign.end_time"]);
        }
        other => panic!("{other:?}"),
    }
    let zero = NewCampaign {
        total_stock: 0,
        ..campaign("bad", 1, 1)
    };
    assert!(matches!(
        c.create_campaign(zero).await,
        Err(Error::InvalidArgument(_))
    ));
    assert!(store.campaign("bad").await.unwrap().is_none());
    let mut conn = conn(&redis).await;
    let keys: Vec<String> = redis::cmd("KEYS")
        .arg("*")
        .query_async(&mut conn)
        .await
        .unwrap();
    assert!(keys.is_empty(), "{keys:?}");

    c.create_campaign(campaign("ok", 5, 1)).await.unwrap();
    let long = "x".repeat(300);
    for (campaign, user, request, field) in [
        ("ok", "", "r", "user_id"),
        ("ok", long.as_str(), "r", "user_id"),
        ("ok", "u", &long[..129], "request_id"),
        ("ok", "u", "", "request_id"),
        ("{ok}", "u", "r", "campaign_id"),
    ] {
        match c.issue(campaign, user, request).await {
            Err(Error::InvalidArgument(v)) => assert_eq!(v[0].field, field),
            other => panic!("{field}: {other:?}"),
        }
    }
    assert_eq!(c.get_campaign("ok").await.unwrap().remaining, 5);
}

/// Thousands of concurrent calls from many tasks on two instances, with
/// retries of the same request id racing each other: exactly `stock`
/// coupons, at most one per user, unique codes, every ISSUED answer durable.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn contention_on_two_instances_issues_exactly_the_stock() {
    const STOCK: i64 = 300;
    const USERS: usize = 1500;
    const TASKS: usize = 60;
    let redis = redis().await;
    let clock = ManualClock::new(T0_MS * 1_000_000);
    let store = store();
    let (a, stop_a) = instance(&redis, store.clone(), clock.clone(), config());
    let (b, stop_b) = instance(&redis, store.clone(), clock.clone(), config());
    a.create_campaign(campaign("flash", STOCK, 1))
        .await
        .unwrap();
    a.spawn_workers("a", None).unwrap();
    b.spawn_workers("b", None).unwrap();

    let mut tasks = Vec::new();
    for t in 0..TASKS {
        let instances = [a.clone(), b.clone()];
        tasks.push(tokio::spawn(async move {
            let mut answers = Vec::new();
            for u in (t..USERS).step_by(TASKS) {
                let user = format!("user-{u}");
                // Each user presses twice (two request ids), and each press
                // is retried once on the other instance at the same time.
                for press in 0..2 {
                    let request = format!("req-{u}-{press}");
                    let (x, y) = tokio::join!(
                        instances[u % 2].issue("flash", &user, &request),
                        instances[(u + 1) % 2].issue("flash", &user, &request),
                    );
                    let (x, y) = (x.unwrap(), y.unwrap());
                    // One request id, one answer (the remaining stock of
                    // ALREADY_ISSUED and SOLD_OUT is the stock at the time).
                    assert_eq!((x.outcome, &x.code), (y.outcome, &y.code));
                    if x.outcome == Outcome::Issued {
                        assert_eq!(x, y);
                    }
                    answers.push((user.clone(), request, x));
                }
            }
            answers
        }));
    }
    let mut issued: HashMap<String, String> = HashMap::new();
    let mut per_user: HashMap<String, HashSet<String>> = HashMap::new();
    for t in tasks {
        for (user, request, answer) in t.await.unwrap() {
            match answer.outcome {
                Outcome::Issued => {
                    issued.insert(request, answer.code.clone());
                    per_user.entry(user).or_default().insert(answer.code);
                }
                Outcome::AlreadyIssued => {
                    per_user.entry(user).or_default().insert(answer.code);
                }
                Outcome::SoldOut => {}
                other => panic!("unexpected {other:?}"),
            }
        }
    }
    let codes: HashSet<&String> = issued.values().collect();
    assert_eq!(issued.len(), STOCK as usize, "exactly the stock issued");
    assert_eq!(codes.len(), STOCK as usize, "codes unique");
    assert!(
        per_user.values().all(|c| c.len() == 1),
        "one coupon per user"
    );
    assert_eq!(a.get_campaign("flash").await.unwrap().remaining, 0);

    let durable = store.clone();
    assert!(
        eventually(Duration::from_secs(10), || {
            let durable = durable.clone();
            async move { durable.issuances("flash").await.unwrap().len() == STOCK as usize }
        })
        .await,
        "every issuance reaches the durable store"
    );
    let records = store.issuances("flash").await.unwrap();
    let by_request: HashMap<&str, &str> = records
        .iter()
        .map(|r| (r.request_id.as_str(), r.code.as_str()))
        .collect();
    for (request, code) in &issued {
        assert_eq!(
            by_request.get(request.as_str()),
            Some(&code.as_str()),
            "{request}"
        );
    }
    assert_eq!(
        records.iter().map(|r| r.seq).collect::<Vec<_>>(),
        (1..=STOCK as u64).collect::<Vec<_>>()
    );
    // The log keeps nothing once everything is durable.
    let mut conn = conn(&redis).await;
    let left: i64 = redis::cmd("XLEN")
        .arg(a.keys().log("flash"))
        .query_async(&mut conn)
        .await
        .unwrap();
    assert!(left <= 1, "{left} entries left in the log");
    stop_a.cancel();
    stop_b.cancel();
    let _ = Arc::strong_count(&a);
}

/// An answer recalled from an earlier issuance (a retried request, a user at
/// the limit) writes to Redis too, so the `WAIT` of `coupon.replica_acks`
/// after it covers that issuance even when it was made over another
/// connection: `WAIT` counts only the writes of the connection it runs on,
/// and a replica that has a later write has every earlier one.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_recalled_answer_writes_so_a_replica_wait_covers_the_issuance() {
    let redis = redis().await;
    let clock = ManualClock::new(T0_MS * 1_000_000);
    let (c, _stop) = instance(&redis, store(), clock.clone(), config());
    c.create_campaign(campaign("recall", 5, 0)).await.unwrap();
    let first = c.issue("recall", "u1", "r1").await.unwrap();
    assert_eq!(first.outcome, Outcome::Issued);
    let mut conn = conn(&redis).await;
    // Writes the server made (its dirty counter; what a replica is sent).
    let offset = async |conn: &mut redis::aio::MultiplexedConnection| -> u64 {
        let info: String = redis::cmd("INFO")
            .arg("persistence")
            .query_async(conn)
            .await
            .unwrap();
        info.lines()
            .find_map(|l| l.strip_prefix("rdb_changes_since_last_save:"))
            .unwrap()
            .trim()
            .parse()
            .unwrap()
    };
    let before = offset(&mut conn).await;
    assert_eq!(c.issue("recall", "u1", "r1").await.unwrap(), first);
    let after_replay = offset(&mut conn).await;
    assert!(
        after_replay > before,
        "a replayed request writes ({before} -> {after_replay})"
    );
    let again = c.issue("recall", "u1", "r2").await.unwrap();
    assert_eq!(again.outcome, Outcome::AlreadyIssued);
    assert!(
        offset(&mut conn).await > after_replay,
        "an ALREADY_ISSUED answer writes"
    );
    // And neither took stock.
    assert_eq!(c.get_campaign("recall").await.unwrap().remaining, 4);
}
