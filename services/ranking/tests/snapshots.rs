//! Closed windows: their keys really expire (TTL = close + retention), their
//! top is snapshotted durably first, and reads of an expired window come from
//! the snapshot, also after a restart.

mod common;

use std::sync::Arc;
use std::time::Duration;

use common::*;
use redis::AsyncCommands;
use tickmesh_ranking::board::{Operator, TieBreak, WindowKind};
use tickmesh_ranking::clock::ManualClock;
use tickmesh_ranking::keys::Keys;
use tickmesh_ranking::snapshot::EmbeddedSnapshotStore;
use tickmesh_runtime::proto_time::now_nanos;
use tokio_util::sync::CancellationToken;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_expired_window_is_answered_from_its_durable_snapshot() {
    let redis = RedisServer::start_ephemeral().await.unwrap();
    let dir = temp_dir();
    let path = dir.join("ranking.redb");
    // Redis expires keys by its own clock, so this test lives near real time:
    // an hour that closed 1-2 h ago, with a retention that ends 3 s from now.
    let real = now_nanos();
    let close = real.div_euclid(HOUR_NS) * HOUR_NS - HOUR_NS;
    let retention_secs = ((real - close) / 1_000_000_000 + 3) as u64;
    let clock = ManualClock::new(close - 30 * 60 * 1_000_000_000);
    let shutdown = CancellationToken::new();
    let ranking = ranking_on(&redis.url(), &path, clock.clone(), shutdown.clone());
    let mut b = board(
        "snap",
        Operator::Increment,
        &[WindowKind::AllTime, WindowKind::Hourly],
    );
    b.retention_secs = retention_secs;
    b.tie_break = TieBreak::SharedRank;
    ranking.upsert_board(b).await.unwrap();
    for (i, (m, d)) in [("a", "5"), ("b", "7"), ("c", "7"), ("d", "1")]
        .iter()
        .enumerate()
    {
        ranking
            .record(vec![inc("snap", m, d, &i.to_string())])
            .await
            .unwrap();
    }
    let hour = ranking.top("snap", "hour", 10, "").await.unwrap().window;
    let live = ranking.top("snap", &hour, 10, "").await.unwrap();
    assert!(!live.from_snapshot);

    // The keys carry their expiry: close + retention.
    let keys = Keys::new("tm");
    let mut conn = redis::Client::open(redis.url())
        .unwrap()
        .get_multiplexed_async_connection()
        .await
        .unwrap();
    let expire_ms: i64 = redis::cmd("PEXPIRETIME")
        .arg(keys.entries("snap", &hour))
        .query_async(&mut conn)
        .await
        .unwrap();
    assert_eq!(expire_ms, close / 1_000_000 + retention_secs as i64 * 1000);
    let all_ttl: i64 = conn.pttl(keys.entries("snap", "all")).await.unwrap();
    assert_eq!(all_ttl, -1, "the all-time window never expires");

    // Not closed yet (grace): nothing to snapshot.
    clock.set(close);
    assert!(ranking.maintain().await.unwrap().is_empty());
    clock.set(close + 2_000_000_000);
    let written = ranking.maintain().await.unwrap();
    assert_eq!(written, vec![("snap".to_string(), hour.clone())]);
    assert!(
        ranking.maintain().await.unwrap().is_empty(),
        "snapshotted once"
    );

    // Wait for Redis to expire the window for real.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(15);
    loop {
        let exists: bool = conn.exists(keys.entries("snap", &hour)).await.unwrap();
        if !exists {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the window did not expire"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let from_snapshot = ranking.top("snap", &hour, 10, "").await.unwrap();
    assert!(from_snapshot.from_snapshot);
    assert_eq!(from_snapshot.total, 4);
    assert_eq!(
        from_snapshot.entries.iter().map(triple).collect::<Vec<_>>(),
        live.entries.iter().map(triple).collect::<Vec<_>>()
    );
    assert_eq!(
        from_snapshot.entries.iter().map(triple).collect::<Vec<_>>(),
        vec![t("b", 7, 1), t("c", 7, 1), t("a", 5, 3), t("d", 1, 4)]
    );
    let c = ranking.rank("snap", &hour, "c").await.unwrap();
    assert!(c.from_snapshot);
    assert_eq!(
        (c.standing.entry.rank, c.standing.below, c.standing.total),
        (1, 2, 4)
    );
    let (_, _, around) = ranking.around("snap", &hour, "a", 1).await.unwrap();
    assert_eq!(around.entries.len(), 3);

    // Durable: a new process (store reopened) still answers.
    drop(ranking);
    shutdown.cancel();
    let again = ranking_on(&redis.url(), &path, clock.clone(), CancellationToken::new());
    let view = again.top("snap", &hour, 2, "").await.unwrap();
    assert!(view.from_snapshot);
    assert_eq!(
        view.entries.iter().map(triple).collect::<Vec<_>>(),
        vec![t("b", 7, 1), t("c", 7, 1)]
    );
    let next = again
        .top("snap", &hour, 2, &view.next_page_token)
        .await
        .unwrap();
    assert_eq!(
        next.entries.iter().map(triple).collect::<Vec<_>>(),
        vec![t("a", 5, 3), t("d", 1, 4)]
    );
    assert!(next.next_page_token.is_empty());
    let _ = std::fs::remove_dir_all(dir);
}

#[tokio::test]
async fn the_embedded_store_passes_the_conformance_suite() {
    let dir = temp_dir();
    let store = Arc::new(EmbeddedSnapshotStore::open(&dir.join("s.redb")).unwrap());
    tickmesh_ranking::snapshot_conformance::run(store).await;
    let _ = std::fs::remove_dir_all(dir);
}

/// Redis comes back with less than it had (an AOF that lost its tail, a
/// replica that was behind): a closed window's keys hold fewer events than
/// the snapshot already taken of it, and the mark that it was snapshotted is
/// gone. The durable snapshot must not be replaced by the poorer copy: it is
/// what reads answer from once the keys expire.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_snapshot_is_not_replaced_by_a_window_redis_lost_events_of() {
    let dir = temp_dir();
    let mut redis = RedisServer::start_with(
        &dir.join("redis"),
        Some(tickmesh_runtime::redis_server::Fsync::Always),
    )
    .await
    .unwrap();
    let path = dir.join("ranking.redb");
    // Near real time, so Redis does not expire the keys by its own clock.
    let close = now_nanos().div_euclid(HOUR_NS) * HOUR_NS;
    let clock = ManualClock::new(close - 30 * 60 * 1_000_000_000);
    let shutdown = CancellationToken::new();
    let ranking = ranking_on(&redis.url(), &path, clock.clone(), shutdown.clone());
    ranking
        .upsert_board(board(
            "lost",
            Operator::Increment,
            &[WindowKind::AllTime, WindowKind::Hourly],
        ))
        .await
        .unwrap();
    for (i, m) in ["a", "b", "c", "d", "e"].iter().enumerate() {
        if i == 3 {
            redis.save_data_dir(&dir.join("at-3")).unwrap();
        }
        ranking
            .record(vec![inc("lost", m, &(10 - i).to_string(), &i.to_string())])
            .await
            .unwrap();
    }
    let hour = ranking.top("lost", "hour", 10, "").await.unwrap().window;
    clock.set(close + 2_000_000_000);
    assert_eq!(
        ranking.maintain().await.unwrap(),
        vec![("lost".to_string(), hour.clone())]
    );

    redis.restart_from(&dir.join("at-3")).await.unwrap();
    let mut again = None;
    for _ in 0..100 {
        if let Ok(w) = ranking.maintain().await {
            again = Some(w);
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(
        again.expect("redis did not come back"),
        Vec::<(String, String)>::new(),
        "the window already has its snapshot"
    );
    // The keys expire (here: now).
    let keys = Keys::new("tm");
    let mut conn = redis::Client::open(redis.url())
        .unwrap()
        .get_multiplexed_async_connection()
        .await
        .unwrap();
    let _: i64 = conn
        .del(&[keys.entries("lost", &hour), keys.members("lost", &hour)])
        .await
        .unwrap();
    let view = ranking.top("lost", &hour, 10, "").await.unwrap();
    assert!(view.from_snapshot);
    assert_eq!(view.total, 5);
    assert_eq!(
        view.entries.iter().map(triple).collect::<Vec<_>>(),
        vec![
            t("a", 10, 1),
            t("b", 9, 2),
            t("c", 8, 3),
            t("d", 7, 4),
            t("e", 6, 5)
        ]
    );
    shutdown.cancel();
    let _ = std::fs::remove_dir_all(dir);
}

/// Redis restarts empty: board definitions live only there, but every
/// instance caches them. A board still cached is written back (boards are
/// never deleted), so it stays usable and its closed windows are still
/// answered from their durable snapshots, also on an instance that never
/// cached it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_board_redis_lost_is_written_back_and_its_snapshots_still_answer() {
    let close = now_nanos().div_euclid(HOUR_NS) * HOUR_NS;
    let mut h = harness(close - 30 * 60 * 1_000_000_000).await;
    h.ranking
        .upsert_board(board(
            "gone",
            Operator::Increment,
            &[WindowKind::AllTime, WindowKind::Hourly],
        ))
        .await
        .unwrap();
    for (i, m) in ["a", "b"].iter().enumerate() {
        h.ranking
            .record(vec![inc("gone", m, &(5 - i).to_string(), &i.to_string())])
            .await
            .unwrap();
    }
    let hour = h.ranking.top("gone", "hour", 10, "").await.unwrap().window;
    h.clock.set(close + 2_000_000_000);
    assert_eq!(h.ranking.maintain().await.unwrap().len(), 1);

    h.redis.restart().await.unwrap(); // no persistence: every key is gone
    let mut maintained = false;
    for _ in 0..100 {
        if h.ranking.maintain().await.is_ok() {
            maintained = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(maintained, "redis did not come back");
    assert_eq!(h.ranking.get_board("gone").await.unwrap().id, "gone");
    let other = ranking_on(
        &h.redis.url(),
        &temp_dir().join("other.redb"),
        h.clock.clone(),
        h.shutdown.clone(),
    );
    assert_eq!(other.get_board("gone").await.unwrap().id, "gone");
    let view = h.ranking.top("gone", &hour, 10, "").await.unwrap();
    assert!(view.from_snapshot);
    assert_eq!(
        view.entries.iter().map(triple).collect::<Vec<_>>(),
        vec![t("a", 5, 1), t("b", 4, 2)]
    );
    h.ranking
        .record(vec![inc("gone", "c", "1", "after")])
        .await
        .unwrap();
    assert_eq!(top(&h, "gone", "all").await, vec![t("c", 1, 1)]);
}
