//! The issuance log to the durable store: a killed worker's entries are
//! taken over and stored once, Redis losing the campaign's state is
//! recovered from the durable records, and the store conformance suite.

mod common;

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use common::*;
use tickmesh_coupon::clock::ManualClock;
use tickmesh_coupon::persist::GROUP;
use tickmesh_coupon::service::Outcome;

#[tokio::test]
async fn embedded_store_passes_the_conformance_suite() {
    tickmesh_coupon::conformance::run(store()).await;
}

#[tokio::test]
async fn the_embedded_store_keeps_records_across_reopening() {
    use tickmesh_coupon::embedded_store::EmbeddedIssuanceStore;
    use tickmesh_coupon::store::{Issuance, IssuanceStore};
    let path = temp_path("reopen.redb");
    let record = Issuance {
        campaign_id: "c".into(),
        seq: 1,
        user_id: "u".into(),
        code: "C-1".into(),
        request_id: "r".into(),
        issued_ms: 5,
    };
    {
        let s = EmbeddedIssuanceStore::open(&path).unwrap();
        s.put_issuances(std::slice::from_ref(&record))
            .await
            .unwrap();
    }
    let s = EmbeddedIssuanceStore::open(&path).unwrap();
    assert_eq!(s.issuances("c").await.unwrap(), vec![record]);
}

/// A worker that read entries and died before acknowledging them: another
/// worker claims them after `claim_after` and stores each once, also when
/// some of them had already reached the store.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_workers_entries_are_claimed_and_stored_once() {
    let redis = redis().await;
    let clock = ManualClock::new(T0_MS * 1_000_000);
    let store = store();
    let (c, _stop) = instance(&redis, store.clone(), clock, config());
    c.create_campaign(campaign("k", 100, 1)).await.unwrap();
    let dead = c.persister("dead");
    // The dead worker persisted the first 10 before dying without XACK…
    for u in 0..10 {
        c.issue("k", &format!("u{u}"), &format!("r{u}"))
            .await
            .unwrap();
    }
    assert_eq!(dead.persist_campaign("k").await.unwrap(), 10);
    for u in 10..50 {
        c.issue("k", &format!("u{u}"), &format!("r{u}"))
            .await
            .unwrap();
    }
    // …and took 40 more, which it never stored or acknowledged.
    let mut conn = conn(&redis).await;
    let _: redis::Value = redis::cmd("XREADGROUP")
        .arg("GROUP")
        .arg(GROUP)
        .arg("dead")
        .arg("COUNT")
        .arg(1000)
        .arg("STREAMS")
        .arg(c.keys().log("k"))
        .arg(">")
        .query_async(&mut conn)
        .await
        .unwrap();
    // Pretend it also re-stored entries already there (a crash after the
    // store write, before XACK): redelivery must not duplicate them.
    let live = c.persister("live");
    assert_eq!(
        live.persist_campaign("k").await.unwrap(),
        0,
        "not idle long enough yet"
    );
    tokio::time::sleep(Duration::from_millis(350)).await;
    assert_eq!(live.persist_campaign("k").await.unwrap(), 40);
    let records = store.issuances("k").await.unwrap();
    assert_eq!(
        records.iter().map(|r| r.seq).collect::<Vec<_>>(),
        (1..=50).collect::<Vec<_>>()
    );
    let pending: (i64, redis::Value, redis::Value, redis::Value) = redis::cmd("XPENDING")
        .arg(c.keys().log("k"))
        .arg(GROUP)
        .query_async(&mut conn)
        .await
        .unwrap();
    assert_eq!(pending.0, 0);
    let len: i64 = redis::cmd("XLEN")
        .arg(c.keys().log("k"))
        .query_async(&mut conn)
        .await
        .unwrap();
    assert!(len <= 1, "persisted entries are trimmed ({len} left)");
}

/// The worker stops visiting a campaign once it has ended and every entry of
/// its log is durable, but not before: entries a dead consumer holds keep it
/// visited until they are claimed and stored. A running campaign stays visited.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ended_campaigns_are_visited_until_settled_then_skipped() {
    let redis = redis().await;
    let clock = ManualClock::new(T0_MS * 1_000_000);
    let store = store();
    let (c, _stop) = instance(&redis, store.clone(), clock.clone(), config());
    let (ended, _) = c.create_campaign(campaign("ends", 100, 1)).await.unwrap();
    let mut long = campaign("runs", 100, 1);
    long.end_ms = Some(T0_MS + 30 * 86_400_000);
    let (running, _) = c.create_campaign(long).await.unwrap();
    for u in 0..5 {
        c.issue("ends", &format!("u{u}"), &format!("r{u}"))
            .await
            .unwrap();
    }
    // A consumer that dies holding two entries.
    let mut conn = conn(&redis).await;
    let live = c.persister("live");
    assert_eq!(live.persist_campaign("ends").await.unwrap(), 5);
    for u in 5..7 {
        c.issue("ends", &format!("u{u}"), &format!("r{u}"))
            .await
            .unwrap();
    }
    let _: redis::Value = redis::cmd("XREADGROUP")
        .arg("GROUP")
        .arg(GROUP)
        .arg("dead")
        .arg("COUNT")
        .arg(10)
        .arg("STREAMS")
        .arg(c.keys().log("ends"))
        .arg(">")
        .query_async(&mut conn)
        .await
        .unwrap();

    let campaigns = vec![Arc::new(ended.clone()), Arc::new(running)];
    let mut settled = HashSet::new();
    // Ended, but only just: other instances may still be issuing.
    clock.set((ended.end_ms + 1_000) * 1_000_000);
    assert_eq!(live.pass(&campaigns, &mut settled).await, 2);
    assert!(settled.is_empty());
    // Long enough after the end, but the dead consumer's entries are pending.
    clock.advance(Duration::from_secs(60));
    assert_eq!(live.pass(&campaigns, &mut settled).await, 2);
    assert!(
        settled.is_empty(),
        "pending entries keep the campaign visited"
    );
    tokio::time::sleep(Duration::from_millis(350)).await;
    assert_eq!(live.pass(&campaigns, &mut settled).await, 2);
    assert_eq!(
        store
            .issuances("ends")
            .await
            .unwrap()
            .iter()
            .map(|r| r.seq)
            .collect::<Vec<_>>(),
        (1..=7).collect::<Vec<_>>()
    );
    // Nothing left anywhere: settled, and skipped from now on.
    assert_eq!(live.pass(&campaigns, &mut settled).await, 2);
    assert_eq!(settled, HashSet::from(["ends".to_string()]));
    assert_eq!(live.pass(&campaigns, &mut settled).await, 1);
}

/// Redis restarts without persistence mid-campaign: the campaign is rebuilt
/// from the durable records before anything else is issued, so stock,
/// per-user limits, codes and request-id answers all still hold.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn losing_redis_rebuilds_the_campaign_from_durable_records() {
    let mut redis = redis().await;
    let clock = ManualClock::new(T0_MS * 1_000_000);
    let store = store();
    let (c, _stop) = instance(&redis, store.clone(), clock, config());
    c.create_campaign(campaign("r", 100, 2)).await.unwrap();
    let mut first_codes = Vec::new();
    for u in 0..40 {
        let a = c
            .issue("r", &format!("u{u}"), &format!("a{u}"))
            .await
            .unwrap();
        assert_eq!(a.outcome, Outcome::Issued);
        first_codes.push(a.code);
    }
    for u in 0..20 {
        let b = c
            .issue("r", &format!("u{u}"), &format!("b{u}"))
            .await
            .unwrap();
        assert_eq!(b.outcome, Outcome::Issued);
    }
    let worker = c.persister("w");
    assert_eq!(worker.persist_campaign("r").await.unwrap(), 60);

    redis.restart().await.unwrap(); // no persistence: every key is gone
    let mut conn = conn(&redis).await;
    let keys: Vec<String> = redis::cmd("KEYS")
        .arg("*")
        .query_async(&mut conn)
        .await
        .unwrap();
    assert!(keys.is_empty());

    // Everything answered before is answered the same after.
    let retry = retry_issue(&c, "u0", "a0").await;
    assert_eq!(
        (retry.outcome, &retry.code),
        (Outcome::Issued, &first_codes[0])
    );
    let held = retry_issue(&c, "u1", "c1").await;
    assert_eq!(
        (held.outcome, &held.code),
        (Outcome::AlreadyIssued, &first_codes[1])
    );
    assert_eq!(held.remaining, 40);
    let one_more = retry_issue(&c, "u30", "c30").await;
    assert_eq!(one_more.outcome, Outcome::Issued);
    assert!(
        one_more.code.ends_with("-61"),
        "sequence continues: {}",
        one_more.code
    );
    let mut issued = 1;
    for u in 100..200 {
        let r = c
            .issue("r", &format!("u{u}"), &format!("n{u}"))
            .await
            .unwrap();
        if r.outcome == Outcome::Issued {
            issued += 1;
        }
    }
    assert_eq!(issued, 40, "exactly the stock left after the rebuild");
    assert_eq!(persist_after_restart(&worker, "r").await, 40);
    let records = store.issuances("r").await.unwrap();
    assert_eq!(records.len(), 100);
    let codes: HashSet<_> = records.iter().map(|r| r.code.as_str()).collect();
    assert_eq!(codes.len(), 100);
}

async fn retry_issue(
    c: &Arc<tickmesh_coupon::Coupons>,
    user: &str,
    request: &str,
) -> tickmesh_coupon::service::IssueAnswer {
    for _ in 0..100 {
        match c.issue("r", user, request).await {
            Ok(a) => return a,
            Err(_) => tokio::time::sleep(Duration::from_millis(50)).await,
        }
    }
    panic!("redis did not come back")
}

/// Two instances notice the lost state at once: one rebuilds, the other
/// waits for it, and neither issues from a half-built state.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_rebuilds_build_once() {
    let mut redis = redis().await;
    let clock = ManualClock::new(T0_MS * 1_000_000);
    let store = store();
    let (a, _s1) = instance(&redis, store.clone(), clock.clone(), config());
    let (b, _s2) = instance(&redis, store.clone(), clock, config());
    a.create_campaign(campaign("cc", 2000, 1)).await.unwrap();
    for u in 0..1500 {
        a.issue("cc", &format!("u{u}"), &format!("r{u}"))
            .await
            .unwrap();
    }
    a.persister("w").persist_campaign("cc").await.unwrap();
    redis.restart().await.unwrap();
    // Reconnect both instances without touching the campaign.
    for c in [&a, &b] {
        while !matches!(
            c.issue("warm-up", "u", "r").await,
            Err(tickmesh_core::Error::NotFound(_))
        ) {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
    let mut tasks = Vec::new();
    for i in 0..40 {
        let c = if i % 2 == 0 { a.clone() } else { b.clone() };
        tasks.push(tokio::spawn(async move {
            let mut out = Vec::new();
            for u in (i..1500).step_by(40).take(5) {
                out.push(
                    c.issue("cc", &format!("u{u}"), &format!("x{u}"))
                        .await
                        .unwrap(),
                );
            }
            out
        }));
    }
    for t in tasks {
        for answer in t.await.unwrap() {
            assert_eq!(answer.outcome, Outcome::AlreadyIssued, "{answer:?}");
        }
    }
    assert_eq!(b.get_campaign("cc").await.unwrap().remaining, 500);
}

/// Redis comes back with less than it had acknowledged (an AOF that lost its
/// tail, a failover to a replica that was behind): the campaign state is
/// older than the durable records. Nothing may be issued from it: a user the
/// store knows is answered with the coupon they hold, the sequence (and so
/// the codes) continues after the durable records, and the stock counts them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_coming_back_behind_the_durable_records_rebuilds_before_issuing() {
    let (mut redis, dir) = persistent_redis("behind").await;
    let clock = ManualClock::new(T0_MS * 1_000_000);
    let store = store();
    let (c, _stop) = instance(&redis, store.clone(), clock, config());
    c.create_campaign(campaign("b", 20, 1)).await.unwrap();
    let mut codes = Vec::new();
    for u in 0..10 {
        if u == 5 {
            redis.save_data_dir(&dir.join("at-5")).unwrap();
        }
        let a = c
            .issue("b", &format!("u{u}"), &format!("a{u}"))
            .await
            .unwrap();
        assert_eq!(a.outcome, Outcome::Issued);
        codes.push(a.code);
    }
    let worker = c.persister("w");
    assert_eq!(worker.persist_campaign("b").await.unwrap(), 10);

    // Back with the state after 5 issuances; the store holds 10.
    redis.restart_from(&dir.join("at-5")).await.unwrap();
    let held = retry_issue_in(&c, "b", "u7", "again7").await;
    assert_eq!(
        (held.outcome, &held.code),
        (Outcome::AlreadyIssued, &codes[7]),
        "u7 holds a durable coupon"
    );
    let retry = retry_issue_in(&c, "b", "u8", "a8").await;
    assert_eq!(
        (retry.outcome, &retry.code),
        (Outcome::Issued, &codes[8]),
        "a durable request id gets its answer again"
    );
    let fresh = retry_issue_in(&c, "b", "u10", "a10").await;
    assert_eq!(fresh.outcome, Outcome::Issued);
    assert!(
        fresh.code.ends_with("-11"),
        "the sequence continues after the durable records: {}",
        fresh.code
    );
    assert_eq!(fresh.remaining, 9);
    assert_eq!(c.get_campaign("b").await.unwrap().remaining, 9);
    assert_eq!(c.issuance("b", "u9").await.unwrap(), vec![codes[9].clone()]);
    let mut issued = 1;
    for u in 11..40 {
        let r = c
            .issue("b", &format!("u{u}"), &format!("a{u}"))
            .await
            .unwrap();
        if r.outcome == Outcome::Issued {
            issued += 1;
        }
    }
    assert_eq!(issued, 10, "exactly the stock the durable records left");
    persist_after_restart(&worker, "b").await;
    let records = store.issuances("b").await.unwrap();
    assert_eq!(
        records.iter().map(|r| r.seq).collect::<Vec<_>>(),
        (1..=20).collect::<Vec<_>>()
    );
    let users: HashSet<_> = records.iter().map(|r| r.user_id.as_str()).collect();
    assert_eq!(users.len(), 20, "one coupon per user");
    for (u, code) in codes.iter().enumerate() {
        let r = &records[u];
        assert_eq!((&r.user_id, &r.code), (&format!("u{u}"), code));
    }

    // Behind again, now read first: reads answer from the durable records too.
    redis.restart_from(&dir.join("at-5")).await.unwrap();
    let mut view = None;
    for _ in 0..100 {
        if let Ok(v) = c.get_campaign("b").await {
            view = Some(v);
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let view = view.expect("redis did not come back");
    assert_eq!(view.remaining, 0, "sold out by the durable records");
    assert_eq!(
        c.issuance("b", &records[19].user_id).await.unwrap(),
        vec![records[19].code.clone()]
    );
    let late = c.issue("b", "u99", "a99").await.unwrap();
    assert_eq!(late.outcome, Outcome::SoldOut);
}

/// A restart that kept every write: the state is confirmed against the
/// durable records once and then used as it is (no rebuild, nothing issued
/// twice, the sequence continues).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restart_that_kept_everything_continues_where_it_was() {
    let (mut redis, _dir) = persistent_redis("kept").await;
    let clock = ManualClock::new(T0_MS * 1_000_000);
    let store = store();
    let (c, _stop) = instance(&redis, store.clone(), clock, config());
    c.create_campaign(campaign("k", 10, 1)).await.unwrap();
    let mut codes = Vec::new();
    for u in 0..6 {
        codes.push(
            c.issue("k", &format!("u{u}"), &format!("a{u}"))
                .await
                .unwrap()
                .code,
        );
    }
    // Some persisted, some only in Redis's log.
    let worker = c.persister("w");
    let mut conn = conn(&redis).await;
    assert_eq!(worker.persist_campaign("k").await.unwrap(), 6);
    for u in 6..8 {
        codes.push(
            c.issue("k", &format!("u{u}"), &format!("a{u}"))
                .await
                .unwrap()
                .code,
        );
    }
    // A field only Redis has: still there after the restart if the state
    // was confirmed as it is rather than rebuilt.
    let _: i64 = redis::cmd("HSET")
        .arg(c.keys().state("k"))
        .arg("marker")
        .arg("kept")
        .query_async(&mut conn)
        .await
        .unwrap();
    drop(conn);
    redis.restart().await.unwrap();
    let again = retry_issue_in(&c, "k", "u7", "a7").await;
    assert_eq!((again.outcome, &again.code), (Outcome::Issued, &codes[7]));
    let next = retry_issue_in(&c, "k", "u8", "a8").await;
    assert!(next.code.ends_with("-9"), "{}", next.code);
    assert_eq!(next.remaining, 1);
    conn = common::conn(&redis).await;
    let lock: bool = redis::cmd("EXISTS")
        .arg(c.keys().rebuild_lock("k"))
        .query_async(&mut conn)
        .await
        .unwrap();
    assert!(!lock, "the check released its lock");
    let marker: Option<String> = redis::cmd("HGET")
        .arg(c.keys().state("k"))
        .arg("marker")
        .query_async(&mut conn)
        .await
        .unwrap();
    assert_eq!(marker.as_deref(), Some("kept"), "confirmed, not rebuilt");
    assert_eq!(persist_after_restart(&worker, "k").await, 3);
    assert_eq!(store.issuances("k").await.unwrap().len(), 9);
}

async fn retry_issue_in(
    c: &Arc<tickmesh_coupon::Coupons>,
    campaign: &str,
    user: &str,
    request: &str,
) -> tickmesh_coupon::service::IssueAnswer {
    for _ in 0..100 {
        match c.issue(campaign, user, request).await {
            Ok(a) => return a,
            Err(_) => tokio::time::sleep(Duration::from_millis(50)).await,
        }
    }
    panic!("redis did not come back")
}

/// A persist pass after Redis restarted: the worker's first command on the
/// shared connection fails (it reconnects), as a pass does; the next pass
/// persists.
async fn persist_after_restart(
    worker: &tickmesh_coupon::persist::Persister,
    campaign: &str,
) -> usize {
    for _ in 0..100 {
        match worker.persist_campaign(campaign).await {
            Ok(n) => return n,
            Err(_) => tokio::time::sleep(Duration::from_millis(50)).await,
        }
    }
    panic!("redis did not come back")
}
