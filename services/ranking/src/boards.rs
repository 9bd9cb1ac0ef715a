//! Board definitions: one Redis hash (id → JSON) every instance reads, cached
//! in each instance. The cache is refreshed on a timer and on a miss, so a
//! board created on another instance is usable at once and a changed one
//! within `ranking.board_refresh`. A refresh writes back the cached boards
//! Redis lost. With `ranking.replica_acks` on, an upsert answers once its
//! write is on that many replicas (`WAIT` right after it, on the connection
//! that wrote).

use std::collections::HashMap;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use redis::AsyncCommands;
use tickmesh_core::{Error, Result, page_token};
use tickmesh_runtime::RedisHandle;
use tickmesh_runtime::redis_conn::unavailable;
use tickmesh_runtime::replica_acks::ReplicaAcks;
use tokio_util::sync::CancellationToken;

use crate::board::Board;
use crate::keys::Keys;

pub const DEFAULT_PAGE_SIZE: usize = 100;
pub const MAX_PAGE_SIZE: usize = 1000;
const PAGE_KIND: &str = "boards";

pub struct BoardBook {
    redis: RedisHandle,
    keys: Keys,
    cache: RwLock<HashMap<String, Arc<Board>>>,
    acks: Arc<ReplicaAcks>,
}

impl BoardBook {
    /// A book whose upserts answer without waiting for replicas.
    pub fn new(redis: RedisHandle, keys: Keys) -> Self {
        let acks = Arc::new(ReplicaAcks::off(redis.clone(), "ranking.replica_acks"));
        Self::with_acks(redis, keys, acks)
    }

    /// A book whose upserts wait for replicas as `acks` says.
    pub fn with_acks(redis: RedisHandle, keys: Keys, acks: Arc<ReplicaAcks>) -> Self {
        Self {
            redis,
            keys,
            cache: RwLock::new(HashMap::new()),
            acks,
        }
    }

    /// Validates and stores `board`; returns it as stored and whether it is new.
    pub async fn upsert(&self, mut board: Board, now_ns: i64) -> Result<(Board, bool)> {
        Error::check(board.normalize("board."))?;
        board.update_time_ns = now_ns;
        let json = encode(&board)?;
        let key = self.keys.boards();
        // HSETNX first: of two concurrent creations, exactly one wins and the
        // other is checked against it like any update. Each write carries
        // its own WAIT (when on): the write and the WAIT must share the
        // connection (the boards hash has no slot of its own for a fence).
        let mut pipe = redis::pipe();
        pipe.hset_nx(&key, &board.id, &json);
        self.acks.wait(&mut pipe);
        let mut replies = self.acks.query(&pipe, &[]).await?;
        let created = matches!(replies.first(), Some(redis::Value::Int(1)));
        if !created {
            let stored = self.get(&board.id).await?;
            let changed = board.immutable_changes(&stored);
            if !changed.is_empty() {
                return Err(Error::FailedPrecondition(format!(
                    "board {:?} exists and its {} cannot change (stored scores would be reordered or reinterpreted); create a new board instead",
                    board.id,
                    changed.join(", ")
                )));
            }
            let mut pipe = redis::pipe();
            pipe.hset(&key, &board.id, &json);
            self.acks.wait(&mut pipe);
            replies = self.acks.query(&pipe, &[]).await?;
        }
        self.cache_put(Arc::new(board.clone()));
        if let Some(wait) = replies.get(1) {
            self.acks.check(
                wait,
                &format!("board {:?}", board.id),
                "upserting the same board again is safe",
            )?;
        }
        Ok((board, created))
    }

    /// The stored definition (read from Redis, not the cache).
    pub async fn get(&self, id: &str) -> Result<Board> {
        let mut conn = self.redis.conn();
        let json: Option<String> = conn
            .hget(self.keys.boards(), id)
            .await
            .map_err(unavailable)?;
        let json = json.ok_or_else(|| Error::NotFound(format!("board {id:?}")))?;
        decode(&json)
    }

    /// The board for serving a call: from the cache, else Redis.
    pub async fn resolve(&self, id: &str) -> Result<Arc<Board>> {
        if let Some(b) = self.cache.read().expect("board cache lock").get(id) {
            return Ok(b.clone());
        }
        let board = Arc::new(self.get(id).await?);
        self.cache_put(board.clone());
        Ok(board)
    }

    /// One page of boards in id order.
    pub async fn list(&self, page_size: i32, token: &str) -> Result<(Vec<Board>, String)> {
        let size = match page_size {
            0 => DEFAULT_PAGE_SIZE,
            n if n < 0 => return Err(Error::invalid("page_size", "must not be negative")),
            n if n as usize > MAX_PAGE_SIZE => {
                return Err(Error::invalid(
                    "page_size",
                    format!("must be at most {MAX_PAGE_SIZE}"),
                ));
            }
            n => n as usize,
        };
        let after = if token.is_empty() {
            None
        } else {
            Some(
                page_token::decode(token, PAGE_KIND, 0)
                    .map_err(|r| Error::invalid("page_token", r))?,
            )
        };
        let all = self.all().await?;
        let mut ids: Vec<&String> = all
            .keys()
            .filter(|id| after.as_ref().is_none_or(|a| id.as_str() > a.as_str()))
            .collect();
        ids.sort();
        let more = ids.len() > size;
        ids.truncate(size);
        let page = ids
            .iter()
            .map(|id| decode(&all[*id]))
            .collect::<Result<Vec<_>>>()?;
        let next = match (more, page.last()) {
            (true, Some(last)) => page_token::encode(PAGE_KIND, 0, &last.id),
            _ => String::new(),
        };
        Ok((page, next))
    }

    async fn all(&self) -> Result<HashMap<String, String>> {
        let mut conn = self.redis.conn();
        conn.hgetall(self.keys.boards()).await.map_err(unavailable)
    }

    /// Reloads every definition from Redis; returns them. A board this
    /// instance caches that Redis no longer has was lost by Redis (a restart
    /// that lost its last writes or everything; boards are never deleted):
    /// it is written back rather than forgotten, so it stays usable and its
    /// durable snapshots reachable.
    pub async fn refresh(&self) -> Result<Vec<Arc<Board>>> {
        let mut all = self.all().await?;
        let lost: Vec<Arc<Board>> = self
            .cache
            .read()
            .expect("board cache lock")
            .values()
            .filter(|b| !all.contains_key(&b.id))
            .cloned()
            .collect();
        if !lost.is_empty() {
            let mut conn = self.redis.conn();
            let key = self.keys.boards();
            for board in lost {
                // HSETNX: if another instance wrote it back (or it was created) meanwhile, keep that.
                let restored: bool = conn
                    .hset_nx(&key, &board.id, encode(&board)?)
                    .await
                    .map_err(unavailable)?;
                if restored {
                    tracing::warn!(board = %board.id, "board definition missing from redis (redis lost data); written back from this instance's cache");
                }
                let stored: Option<String> =
                    conn.hget(&key, &board.id).await.map_err(unavailable)?;
                if let Some(json) = stored {
                    all.insert(board.id.clone(), json);
                }
            }
        }
        let mut fresh = HashMap::new();
        for (id, json) in all {
            match decode(&json) {
                Ok(b) => {
                    fresh.insert(id, Arc::new(b));
                }
                Err(e) => tracing::warn!(board = %id, error = %e, "skipping unreadable board"),
            }
        }
        let boards = fresh.values().cloned().collect();
        *self.cache.write().expect("board cache lock") = fresh;
        Ok(boards)
    }

    /// Refreshes the cache every `every` until shutdown.
    pub fn spawn_refresh(self: Arc<Self>, every: Duration, shutdown: CancellationToken) {
        tokio::spawn(async move {
            loop {
                if let Err(e) = self.refresh().await {
                    tracing::debug!(error = %e, "board refresh failed; keeping the cache");
                }
                tokio::select! {
                    _ = shutdown.cancelled() => break,
                    _ = tokio::time::sleep(every) => {}
                }
            }
        });
    }

    fn cache_put(&self, board: Arc<Board>) {
        self.cache
            .write()
            .expect("board cache lock")
            .insert(board.id.clone(), board);
    }
}

fn encode(board: &Board) -> Result<String> {
    serde_json::to_string(board).map_err(|e| Error::Internal(e.to_string()))
}

fn decode(json: &str) -> Result<Board> {
    serde_json::from_str(json)
        .map_err(|e| Error::Internal(format!("stored board is unreadable: {e}")))
}
