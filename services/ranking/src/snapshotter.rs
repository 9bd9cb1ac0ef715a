//! Copying closed windows to the snapshot store.
//!
//! The record script indexes every periodic window it writes by its close
//! time. Once a window is closed (plus a grace period for in-flight writes),
//! any instance reads its top N with each member's rank and the count of
//! members below, stores that, and marks the window snapshotted. Snapshots
//! replace each other whole, so two instances doing the same window is
//! harmless. Index entries are dropped once the window's keys have expired.
//!
//! A window whose snapshot is already in the store is only marked: nothing
//! reaches a window after it closed (plus the grace), so the first snapshot
//! is final, and a second one could only be poorer — from a Redis that came
//! back with less than it had (an AOF that lost its tail, a replica that was
//! behind), which lost the mark and the window's last events with it.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use redis::AsyncCommands;
use tickmesh_core::Result;
use tickmesh_runtime::RedisHandle;
use tickmesh_runtime::redis_conn::unavailable;

use crate::board::Board;
use crate::keys::Keys;
use crate::read::Reader;
use crate::snapshot::{SnapshotEntry, SnapshotStore, WindowSnapshot};

pub struct Snapshotter {
    pub redis: RedisHandle,
    pub keys: Keys,
    pub store: Arc<dyn SnapshotStore>,
    /// Members kept per snapshot.
    pub top: u64,
    /// Wait after a window closes before copying it.
    pub grace: Duration,
}

impl Snapshotter {
    /// Snapshots every closed, not yet snapshotted window of `board`; returns
    /// the names of the windows written.
    pub async fn run(&self, reader: &Reader, board: &Board, now_ns: i64) -> Result<Vec<String>> {
        let id = board.id.as_str();
        let now_ms = now_ns.div_euclid(1_000_000);
        let index = self.keys.window_index(id);
        let done = self.keys.snapshotted(id);
        let mut conn = self.redis.conn();

        let longest = board
            .windows
            .iter()
            .filter(|k| k.is_periodic())
            .map(|&k| board.key_retention(k))
            .max()
            .unwrap_or_default();
        let gone_before = now_ms - longest.as_millis() as i64;
        let gone: Vec<String> = conn
            .zrangebyscore(&index, "-inf", format!("({gone_before}"))
            .await
            .map_err(unavailable)?;
        if !gone.is_empty() {
            let mut pipe = redis::pipe();
            pipe.zrem(&index, &gone)
                .ignore()
                .srem(&done, &gone)
                .ignore();
            let () = pipe.query_async(&mut conn).await.map_err(unavailable)?;
        }

        let closed_before = now_ms - self.grace.as_millis() as i64;
        let closed: Vec<(String, i64)> = conn
            .zrangebyscore_withscores(&index, "-inf", closed_before)
            .await
            .map_err(unavailable)?;
        if closed.is_empty() {
            return Ok(Vec::new());
        }
        let names: Vec<&String> = closed.iter().map(|(n, _)| n).collect();
        let taken: Vec<bool> = redis::cmd("SMISMEMBER")
            .arg(&done)
            .arg(&names)
            .query_async(&mut conn)
            .await
            .map_err(unavailable)?;
        let mut written = Vec::new();
        for ((window, close_ms), taken) in closed.into_iter().zip(taken) {
            if taken {
                continue;
            }
            if self.store.get(id, &window).await?.is_some() {
                let _: i64 = conn.sadd(&done, &window).await.map_err(unavailable)?;
                tracing::info!(board = %id, window = %window, "closed window already snapshotted (redis had lost the mark); the stored snapshot is kept");
                continue;
            }
            let page = reader.top(board, &window, 0, self.top).await?;
            let mut distinct: Vec<i64> = page.entries.iter().map(|e| e.score).collect();
            distinct.dedup();
            let below: HashMap<i64, u64> = distinct
                .iter()
                .copied()
                .zip(reader.below_counts(board, &window, &distinct).await?)
                .collect();
            let snapshot = WindowSnapshot {
                board_id: board.id.clone(),
                window: window.clone(),
                close_ns: close_ms.saturating_mul(1_000_000),
                taken_ns: now_ns,
                total_members: page.total,
                entries: page
                    .entries
                    .into_iter()
                    .map(|e| SnapshotEntry {
                        below: below[&e.score],
                        member: e.member,
                        score: e.score,
                        seq: e.seq,
                        rank: e.rank,
                        member_data: e.member_data,
                    })
                    .collect(),
            };
            self.store.put(&snapshot).await?;
            let _: i64 = conn.sadd(&done, &window).await.map_err(unavailable)?;
            tracing::info!(board = %id, window = %window, members = snapshot.total_members, kept = snapshot.entries.len(), "closed window snapshotted");
            written.push(window);
        }
        Ok(written)
    }
}
