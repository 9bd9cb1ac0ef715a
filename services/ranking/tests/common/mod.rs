//! Shared harness: a real redis-server per test, a Ranking on it with a
//! manual clock, and an embedded snapshot store in a fresh directory.
#![allow(dead_code)]

use std::sync::Arc;
use std::time::Duration;

use tickmesh_ranking::Ranking;
use tickmesh_ranking::board::{Board, Operator, Order, TieBreak, WindowKind};
use tickmesh_ranking::clock::ManualClock;
use tickmesh_ranking::read::Ranked;
use tickmesh_ranking::service::RawEvent;
use tickmesh_ranking::snapshot::{EmbeddedSnapshotStore, SnapshotStore};
use tickmesh_runtime::RedisHandle;
use tickmesh_runtime::config::{RankingConfig, RedisConfig};
pub use tickmesh_runtime::redis_server::RedisServer;
use tokio_util::sync::CancellationToken;

pub const HOUR_NS: i64 = 3_600_000_000_000;

pub struct Harness {
    pub redis: RedisServer,
    pub ranking: Arc<Ranking>,
    pub clock: Arc<ManualClock>,
    pub snapshot_path: std::path::PathBuf,
    pub shutdown: CancellationToken,
}

impl Drop for Harness {
    fn drop(&mut self) {
        self.shutdown.cancel();
    }
}

pub fn ns(rfc3339: &str) -> i64 {
    chrono::DateTime::parse_from_rfc3339(rfc3339)
        .unwrap()
        .timestamp_nanos_opt()
        .unwrap()
}

pub fn temp_dir() -> std::path::PathBuf {
    static N: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
    let n = N.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    std::env::temp_dir().join(format!("tickmesh-ranking-test-{}-{n}", std::process::id()))
}

pub fn redis_handle(url: &str) -> RedisHandle {
    RedisHandle::new(&RedisConfig {
        url: url.into(),
        ..Default::default()
    })
    .unwrap()
}

pub fn config() -> RankingConfig {
    RankingConfig {
        watch_interval: Duration::from_millis(50),
        snapshot_grace: Duration::from_secs(1),
        ..Default::default()
    }
}

/// A harness whose clock starts at `now_ns`.
pub async fn harness(now_ns: i64) -> Harness {
    let redis = RedisServer::start_ephemeral()
        .await
        .expect("start redis-server (apt-get install -y redis-server)");
    let dir = temp_dir();
    let snapshot_path = dir.join("ranking.redb");
    let clock = ManualClock::new(now_ns);
    let shutdown = CancellationToken::new();
    let ranking = ranking_on(
        &redis.url(),
        &snapshot_path,
        clock.clone(),
        shutdown.clone(),
    );
    Harness {
        redis,
        ranking,
        clock,
        snapshot_path,
        shutdown,
    }
}

pub fn ranking_on(
    url: &str,
    snapshot_path: &std::path::Path,
    clock: Arc<ManualClock>,
    shutdown: CancellationToken,
) -> Arc<Ranking> {
    let store: Arc<dyn SnapshotStore> =
        Arc::new(EmbeddedSnapshotStore::open(snapshot_path).unwrap());
    Ranking::new(config(), redis_handle(url), Some(store), clock, shutdown)
}

pub fn board(id: &str, operator: Operator, windows: &[WindowKind]) -> Board {
    Board {
        id: id.into(),
        display_name: String::new(),
        order: Order::HigherFirst,
        operator,
        windows: windows.to_vec(),
        time_zone: "UTC".into(),
        retention_secs: 0,
        tie_break: TieBreak::EarlierFirst,
        score_scale: 0,
        update_time_ns: 0,
    }
}

pub fn inc(board: &str, member: &str, delta: &str, event_id: &str) -> RawEvent {
    RawEvent {
        board_id: board.into(),
        member: member.into(),
        delta: delta.into(),
        event_id: event_id.into(),
        ..Default::default()
    }
}

pub fn scored(board: &str, member: &str, score: &str, event_id: &str) -> RawEvent {
    RawEvent {
        board_id: board.into(),
        member: member.into(),
        score: score.into(),
        event_id: event_id.into(),
        ..Default::default()
    }
}

/// (member, score, rank) of a whole window.
pub async fn top(h: &Harness, board: &str, window: &str) -> Vec<(String, i64, u64)> {
    let view = h.ranking.top(board, window, 1000, "").await.unwrap();
    view.entries.iter().map(triple).collect()
}

pub fn triple(e: &Ranked) -> (String, i64, u64) {
    (e.member.clone(), e.score, e.rank)
}

pub fn t(member: &str, score: i64, rank: u64) -> (String, i64, u64) {
    (member.to_string(), score, rank)
}
