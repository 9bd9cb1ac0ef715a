//! The ScyllaDB [`SnapshotStore`]: closed leaderboard windows in the
//! cluster, shared by every RankingService instance.
//!
//! Table `ranking_snapshots` (`deploy/scylla/schema.cql`): one partition per
//! (board, window). A snapshot can be larger than a cell or a batch should be
//! (up to `ranking.snapshot_top` entries of up to ~1.3 KB), so it is written
//! as a *generation*: its entries as JSON arrays of up to [`CHUNK_BYTES`],
//! one row per (generation, chunk), each row also carrying the window's
//! close and taken times, member count and the number of chunks. The static
//! column `head` names the generation readers use.
//!
//! `put`: writes every chunk of a new generation, then the head (with the
//! put's time as the write timestamp), then deletes older generations. A put
//! whose head lost to a concurrent later put (two instances, a retry)
//! deletes its own generation. So the last put wins whole, as with the
//! embedded store, and a window keeps one generation.
//!
//! `get`: reads the head, then that generation's chunks (paged). A reader
//! never sees part of a snapshot: the head is written only after all its
//! chunks, and when a concurrent put deleted the generation between the two
//! reads (the chunks are missing), it reads the new head again.
//!
//! Generations are the put's time in microseconds (strictly increasing
//! within a process) times 1024 plus a random per-process number below 1024,
//! so two processes do not write the same generation even within the same
//! microsecond; the head's write timestamp is that time, so the head of the
//! newest generation wins on every replica (equal timestamps: the larger
//! value wins, which is again the newer generation).

use std::hash::{BuildHasher, RandomState};
use std::sync::atomic::{AtomicI64, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

use async_trait::async_trait;
use futures_util::stream::{self, StreamExt, TryStreamExt};
use scylla::statement::prepared::PreparedStatement;
use scylla::{DeserializeRow, SerializeRow};
use tickmesh_ranking::snapshot::{SnapshotEntry, SnapshotError, SnapshotStore, WindowSnapshot};
use tracing::{debug, info};

use crate::config::ScyllaConfig;
use crate::schema::SNAPSHOTS_TABLE;
use crate::session::{Kind, ScyllaSession};

/// Target size of one chunk's JSON (a chunk holds at least one entry, so it
/// may exceed this by one entry, ~1.3 KB at most).
pub const CHUNK_BYTES: usize = 64 * 1024;
/// Reads of a window that keeps being replaced underneath before giving up.
const READ_ATTEMPTS: usize = 5;
/// Generations per microsecond (the random part of a generation is below).
const GENERATION_SALTS: i64 = 1024;

/// A row of `ranking_snapshots` (without the static head), bound and read
/// by column name.
#[derive(Clone, Debug, PartialEq, Eq, SerializeRow, DeserializeRow)]
pub(crate) struct ChunkRow {
    pub board_id: String,
    pub window_name: String,
    pub generation: i64,
    pub chunk: i32,
    pub chunks: i32,
    pub close_ns: i64,
    pub taken_ns: i64,
    pub total_members: i64,
    pub entries_json: String,
}

/// Bound values of the head write (named markers).
#[derive(Clone, Debug, PartialEq, Eq, SerializeRow)]
pub(crate) struct HeadRow {
    pub board_id: String,
    pub window_name: String,
    pub head: i64,
    pub write_time: i64,
}

/// Bound values naming one window's partition.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, SerializeRow)]
pub(crate) struct WindowKey {
    pub board_id: String,
    pub window_name: String,
}

/// Bound values naming one generation (or, for the range delete, the
/// generations below it).
#[derive(Clone, Debug, PartialEq, Eq, SerializeRow)]
pub(crate) struct GenerationKey {
    pub board_id: String,
    pub window_name: String,
    pub generation: i64,
}

fn corrupt(what: &str, e: impl std::fmt::Display) -> SnapshotError {
    SnapshotError::Corrupt(format!("{what}: {e}"))
}

fn unavailable(what: &str, e: impl std::fmt::Display) -> SnapshotError {
    SnapshotError::Unavailable(format!("{what}: {e}"))
}

fn from_history(e: tickmesh_history::StoreError) -> SnapshotError {
    match e {
        tickmesh_history::StoreError::Unavailable(m) => SnapshotError::Unavailable(m),
        tickmesh_history::StoreError::Corrupt(m) => SnapshotError::Corrupt(m),
    }
}

fn window_what(key: &WindowKey) -> String {
    format!("snapshot of {:?} {:?}", key.board_id, key.window_name)
}

/// The entries as JSON arrays of about `chunk_bytes` each; always at least
/// one chunk (`[]` for no entries), so a stored generation has rows.
pub(crate) fn chunk_entries(
    entries: &[SnapshotEntry],
    chunk_bytes: usize,
) -> Result<Vec<String>, serde_json::Error> {
    let mut chunks = Vec::new();
    let mut current = String::from("[");
    for entry in entries {
        let json = serde_json::to_string(entry)?;
        if current.len() > 1 && current.len() + json.len() + 2 > chunk_bytes {
            current.push(']');
            chunks.push(std::mem::replace(&mut current, String::from("[")));
        }
        if current.len() > 1 {
            current.push(',');
        }
        current.push_str(&json);
    }
    current.push(']');
    chunks.push(current);
    Ok(chunks)
}

/// The rows of one generation of `snapshot`.
pub(crate) fn chunk_rows(
    snapshot: &WindowSnapshot,
    generation: i64,
    chunk_bytes: usize,
) -> Result<Vec<ChunkRow>, SnapshotError> {
    let key = WindowKey {
        board_id: snapshot.board_id.clone(),
        window_name: snapshot.window.clone(),
    };
    let what = window_what(&key);
    let total_members = i64::try_from(snapshot.total_members).map_err(|_| {
        corrupt(
            &what,
            format!(
                "total_members {} does not fit a CQL bigint",
                snapshot.total_members
            ),
        )
    })?;
    let chunks = chunk_entries(&snapshot.entries, chunk_bytes).map_err(|e| corrupt(&what, e))?;
    let count = i32::try_from(chunks.len())
        .map_err(|_| corrupt(&what, format!("{} chunks", chunks.len())))?;
    Ok(chunks
        .into_iter()
        .enumerate()
        .map(|(i, entries_json)| ChunkRow {
            board_id: key.board_id.clone(),
            window_name: key.window_name.clone(),
            generation,
            // i < count, which fits an i32.
            chunk: i as i32,
            chunks: count,
            close_ns: snapshot.close_ns,
            taken_ns: snapshot.taken_ns,
            total_members,
            entries_json,
        })
        .collect())
}

/// The snapshot the rows of one generation hold, or `None` when rows are
/// missing (a concurrent put deleted the generation while it was read).
pub(crate) fn assemble(
    key: &WindowKey,
    mut rows: Vec<ChunkRow>,
) -> Result<Option<WindowSnapshot>, SnapshotError> {
    let what = window_what(key);
    rows.sort_by_key(|r| r.chunk);
    let Some(first) = rows.first() else {
        return Ok(None);
    };
    let complete = usize::try_from(first.chunks).is_ok_and(|n| n == rows.len())
        && rows
            .iter()
            .enumerate()
            .all(|(i, r)| usize::try_from(r.chunk).is_ok_and(|c| c == i));
    if !complete {
        return Ok(None);
    }
    let total_members = u64::try_from(first.total_members).map_err(|_| {
        corrupt(
            &what,
            format!("negative total_members {}", first.total_members),
        )
    })?;
    let mut entries = Vec::new();
    for row in &rows {
        let chunk: Vec<SnapshotEntry> = serde_json::from_str(&row.entries_json)
            .map_err(|e| corrupt(&format!("{what}, chunk {}", row.chunk), e))?;
        entries.extend(chunk);
    }
    Ok(Some(WindowSnapshot {
        board_id: key.board_id.clone(),
        window: key.window_name.clone(),
        close_ns: first.close_ns,
        taken_ns: first.taken_ns,
        total_members,
        entries,
    }))
}

fn system_micros() -> i64 {
    let us = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_micros());
    i64::try_from(us).unwrap_or(i64::MAX)
}

/// Makes generations: see the module docs.
pub(crate) struct Generations {
    last_micros: AtomicI64,
    salt: i64,
    now_micros: fn() -> i64,
}

impl Generations {
    pub(crate) fn new(now_micros: fn() -> i64) -> Self {
        let random = RandomState::new().hash_one(std::process::id());
        Generations {
            last_micros: AtomicI64::new(0),
            salt: (random % GENERATION_SALTS as u64) as i64,
            now_micros,
        }
    }

    /// The next generation and its write time (microseconds), both strictly
    /// increasing within this process.
    pub(crate) fn next(&self) -> (i64, i64) {
        let now = (self.now_micros)();
        let previous = self
            .last_micros
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |last| {
                Some(now.max(last + 1))
            })
            .unwrap_or(now);
        let micros = now.max(previous + 1);
        (micros.saturating_mul(GENERATION_SALTS) + self.salt, micros)
    }
}

/// What the store needs from the table; each call is one statement (or one
/// paged read).
#[async_trait]
pub(crate) trait SnapshotBackend: Send + Sync {
    async fn write_chunk(&self, row: ChunkRow) -> Result<(), SnapshotError>;
    /// Sets the head with `write_time` as the cell's write timestamp.
    async fn set_head(&self, row: HeadRow) -> Result<(), SnapshotError>;
    /// Deletes the generations below `key.generation` (one range tombstone).
    async fn delete_older(&self, key: GenerationKey) -> Result<(), SnapshotError>;
    async fn delete_generation(&self, key: GenerationKey) -> Result<(), SnapshotError>;
    async fn head(&self, key: &WindowKey) -> Result<Option<i64>, SnapshotError>;
    /// The rows of one generation, by chunk.
    async fn chunks(&self, key: GenerationKey) -> Result<Vec<ChunkRow>, SnapshotError>;
}

/// The store's logic over a [`SnapshotBackend`].
pub(crate) struct SnapshotEngine<B> {
    pub(crate) backend: B,
    generations: Generations,
    chunk_bytes: usize,
    write_concurrency: usize,
}

impl<B: SnapshotBackend> SnapshotEngine<B> {
    pub(crate) fn new(
        backend: B,
        generations: Generations,
        chunk_bytes: usize,
        write_concurrency: usize,
    ) -> Self {
        SnapshotEngine {
            backend,
            generations,
            chunk_bytes: chunk_bytes.max(1),
            write_concurrency: write_concurrency.max(1),
        }
    }

    pub(crate) async fn put(&self, snapshot: &WindowSnapshot) -> Result<(), SnapshotError> {
        let (generation, write_time) = self.generations.next();
        let rows = chunk_rows(snapshot, generation, self.chunk_bytes)?;
        let chunks = rows.len();
        let writes: Vec<_> = rows
            .into_iter()
            .map(|row| self.backend.write_chunk(row))
            .collect();
        stream::iter(writes)
            .buffer_unordered(self.write_concurrency)
            .try_collect::<Vec<()>>()
            .await?;
        let key = WindowKey {
            board_id: snapshot.board_id.clone(),
            window_name: snapshot.window.clone(),
        };
        let generation_key = GenerationKey {
            board_id: key.board_id.clone(),
            window_name: key.window_name.clone(),
            generation,
        };
        // Only now may readers find it.
        self.backend
            .set_head(HeadRow {
                board_id: key.board_id.clone(),
                window_name: key.window_name.clone(),
                head: generation,
                write_time,
            })
            .await?;
        self.backend.delete_older(generation_key.clone()).await?;
        if self.backend.head(&key).await? != Some(generation) {
            // A concurrent later put won; this generation is garbage.
            self.backend.delete_generation(generation_key).await?;
            debug!(board = %key.board_id, window = %key.window_name, "snapshot superseded by a concurrent put");
            return Ok(());
        }
        debug!(board = %key.board_id, window = %key.window_name, generation, chunks, "snapshot written");
        Ok(())
    }

    pub(crate) async fn get(
        &self,
        board_id: &str,
        window: &str,
    ) -> Result<Option<WindowSnapshot>, SnapshotError> {
        let key = WindowKey {
            board_id: board_id.to_string(),
            window_name: window.to_string(),
        };
        for _ in 0..READ_ATTEMPTS {
            let Some(generation) = self.backend.head(&key).await? else {
                return Ok(None);
            };
            let rows = self
                .backend
                .chunks(GenerationKey {
                    board_id: key.board_id.clone(),
                    window_name: key.window_name.clone(),
                    generation,
                })
                .await?;
            if let Some(snapshot) = assemble(&key, rows)? {
                return Ok(Some(snapshot));
            }
        }
        Err(SnapshotError::Unavailable(format!(
            "the {} was replaced {READ_ATTEMPTS} times while being read; retry",
            window_what(&key)
        )))
    }
}

/// The CQL text of every statement, by keyspace (unit-tested).
pub(crate) fn statement_texts(ks: &str) -> [(&'static str, String); 6] {
    let t = SNAPSHOTS_TABLE;
    let columns = "board_id, window_name, generation, chunk, chunks, close_ns, taken_ns, \
                   total_members, entries_json";
    let window = "board_id = :board_id AND window_name = :window_name";
    [
        (
            "insert_chunk",
            format!(
                "INSERT INTO {ks}.{t} ({columns}) VALUES (:board_id, :window_name, :generation, \
                 :chunk, :chunks, :close_ns, :taken_ns, :total_members, :entries_json)"
            ),
        ),
        (
            "set_head",
            format!("UPDATE {ks}.{t} USING TIMESTAMP :write_time SET head = :head WHERE {window}"),
        ),
        (
            "delete_older",
            format!("DELETE FROM {ks}.{t} WHERE {window} AND generation < :generation"),
        ),
        (
            "delete_generation",
            format!("DELETE FROM {ks}.{t} WHERE {window} AND generation = :generation"),
        ),
        (
            "select_head",
            format!("SELECT head FROM {ks}.{t} WHERE {window} LIMIT 1"),
        ),
        (
            "select_chunks",
            format!("SELECT {columns} FROM {ks}.{t} WHERE {window} AND generation = :generation"),
        ),
    ]
}

struct Statements {
    insert_chunk: PreparedStatement,
    set_head: PreparedStatement,
    delete_older: PreparedStatement,
    delete_generation: PreparedStatement,
    select_head: PreparedStatement,
    select_chunks: PreparedStatement,
}

impl Statements {
    async fn prepare(session: &ScyllaSession) -> Result<Statements, SnapshotError> {
        let mut prepared = Vec::new();
        for (name, text) in statement_texts(&session.config().keyspace) {
            // Upserts, deletes by key and reads: safe to run twice.
            prepared.push(
                session
                    .prepare(name, &text, Kind::Plain)
                    .await
                    .map_err(from_history)?,
            );
        }
        let [
            insert_chunk,
            set_head,
            delete_older,
            delete_generation,
            select_head,
            select_chunks,
        ] = <[PreparedStatement; 6]>::try_from(prepared)
            .map_err(|_| unavailable("prepare", "statement count"))?;
        Ok(Statements {
            insert_chunk,
            set_head,
            delete_older,
            delete_generation,
            select_head,
            select_chunks,
        })
    }
}

/// Prepared statements over a shared session.
pub(crate) struct ScyllaSnapshotBackend {
    session: ScyllaSession,
    statements: Statements,
}

impl ScyllaSnapshotBackend {
    async fn run(
        &self,
        statement: &PreparedStatement,
        values: impl scylla::serialize::row::SerializeRow,
        what: impl FnOnce() -> String,
    ) -> Result<(), SnapshotError> {
        self.session
            .session()
            .execute_unpaged(statement, values)
            .await
            .map_err(|e| unavailable(&what(), e))?;
        Ok(())
    }
}

#[async_trait]
impl SnapshotBackend for ScyllaSnapshotBackend {
    async fn write_chunk(&self, row: ChunkRow) -> Result<(), SnapshotError> {
        let what = format!(
            "cannot write chunk {} of the snapshot of {:?} {:?}",
            row.chunk, row.board_id, row.window_name
        );
        self.run(&self.statements.insert_chunk, row, || what).await
    }

    async fn set_head(&self, row: HeadRow) -> Result<(), SnapshotError> {
        let what = format!(
            "cannot publish the snapshot of {:?} {:?}",
            row.board_id, row.window_name
        );
        self.run(&self.statements.set_head, row, || what).await
    }

    async fn delete_older(&self, key: GenerationKey) -> Result<(), SnapshotError> {
        let what = format!(
            "cannot delete older snapshots of {:?} {:?}",
            key.board_id, key.window_name
        );
        self.run(&self.statements.delete_older, key, || what).await
    }

    async fn delete_generation(&self, key: GenerationKey) -> Result<(), SnapshotError> {
        let what = format!(
            "cannot delete a superseded snapshot of {:?} {:?}",
            key.board_id, key.window_name
        );
        self.run(&self.statements.delete_generation, key, || what)
            .await
    }

    async fn head(&self, key: &WindowKey) -> Result<Option<i64>, SnapshotError> {
        let what = format!("cannot read the {}", window_what(key));
        let row = self
            .session
            .session()
            .execute_unpaged(&self.statements.select_head, key)
            .await
            .map_err(|e| unavailable(&what, e))?
            .into_rows_result()
            .map_err(|e| unavailable(&what, e))?
            .maybe_first_row::<(Option<i64>,)>()
            .map_err(|e| corrupt(&what, e))?;
        Ok(row.and_then(|(head,)| head))
    }

    /// Paged (`page_size` rows per page).
    async fn chunks(&self, key: GenerationKey) -> Result<Vec<ChunkRow>, SnapshotError> {
        let what = format!(
            "cannot read the snapshot of {:?} {:?}",
            key.board_id, key.window_name
        );
        self.session
            .collect_rows(&self.statements.select_chunks, key, &what)
            .await
            .map_err(from_history)
    }
}

/// Closed ranking windows in ScyllaDB (see the module docs).
pub struct ScyllaSnapshotStore {
    engine: SnapshotEngine<ScyllaSnapshotBackend>,
}

impl ScyllaSnapshotStore {
    /// Connects a session of its own (see [`ScyllaSession::connect`]) and
    /// prepares the store's statements.
    pub async fn connect(config: &ScyllaConfig) -> Result<ScyllaSnapshotStore, SnapshotError> {
        let session = ScyllaSession::connect(config).await.map_err(from_history)?;
        ScyllaSnapshotStore::open(&session).await
    }

    /// Prepares the store's statements on a shared session.
    pub async fn open(session: &ScyllaSession) -> Result<ScyllaSnapshotStore, SnapshotError> {
        let statements = Statements::prepare(session).await?;
        info!(keyspace = %session.config().keyspace, "scylla ranking snapshot store ready");
        let engine = SnapshotEngine::new(
            ScyllaSnapshotBackend {
                session: session.clone(),
                statements,
            },
            Generations::new(system_micros),
            CHUNK_BYTES,
            session.config().write_concurrency,
        );
        Ok(ScyllaSnapshotStore { engine })
    }
}

#[async_trait]
impl SnapshotStore for ScyllaSnapshotStore {
    /// The chunks of a new generation, then the head, then the older
    /// generations deleted (see the module docs).
    async fn put(&self, snapshot: &WindowSnapshot) -> Result<(), SnapshotError> {
        self.engine.put(snapshot).await
    }

    /// The head, then its generation's chunks (paged).
    async fn get(
        &self,
        board_id: &str,
        window: &str,
    ) -> Result<Option<WindowSnapshot>, SnapshotError> {
        self.engine.get(board_id, window).await
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;
    use std::sync::atomic::AtomicUsize;
    use std::sync::{Arc, Mutex};

    use super::*;

    #[derive(Default)]
    struct Partition {
        /// (write time, value): the newest write time wins, then the larger value.
        head: Option<(i64, i64)>,
        rows: BTreeMap<(i64, i32), ChunkRow>,
    }

    /// The table as a map, one lock per statement like one mutation.
    #[derive(Default)]
    struct Memory {
        partitions: Mutex<BTreeMap<WindowKey, Partition>>,
        /// Reads of chunks that come back empty, as if a concurrent put had
        /// just deleted the generation.
        lose_chunk_reads: AtomicUsize,
    }

    fn window_of(board_id: &str, window_name: &str) -> WindowKey {
        WindowKey {
            board_id: board_id.into(),
            window_name: window_name.into(),
        }
    }

    #[async_trait]
    impl SnapshotBackend for Memory {
        async fn write_chunk(&self, row: ChunkRow) -> Result<(), SnapshotError> {
            let mut partitions = self.partitions.lock().expect("lock");
            partitions
                .entry(window_of(&row.board_id, &row.window_name))
                .or_default()
                .rows
                .insert((row.generation, row.chunk), row);
            Ok(())
        }

        async fn set_head(&self, row: HeadRow) -> Result<(), SnapshotError> {
            let mut partitions = self.partitions.lock().expect("lock");
            let p = partitions
                .entry(window_of(&row.board_id, &row.window_name))
                .or_default();
            let new = (row.write_time, row.head);
            if p.head.is_none_or(|old| new > old) {
                p.head = Some(new);
            }
            Ok(())
        }

        async fn delete_older(&self, key: GenerationKey) -> Result<(), SnapshotError> {
            let mut partitions = self.partitions.lock().expect("lock");
            if let Some(p) = partitions.get_mut(&window_of(&key.board_id, &key.window_name)) {
                p.rows.retain(|(g, _), _| *g >= key.generation);
            }
            Ok(())
        }

        async fn delete_generation(&self, key: GenerationKey) -> Result<(), SnapshotError> {
            let mut partitions = self.partitions.lock().expect("lock");
            if let Some(p) = partitions.get_mut(&window_of(&key.board_id, &key.window_name)) {
                p.rows.retain(|(g, _), _| *g != key.generation);
            }
            Ok(())
        }

        async fn head(&self, key: &WindowKey) -> Result<Option<i64>, SnapshotError> {
            let partitions = self.partitions.lock().expect("lock");
            Ok(partitions
                .get(key)
                .and_then(|p| p.head)
                .map(|(_, value)| value))
        }

        async fn chunks(&self, key: GenerationKey) -> Result<Vec<ChunkRow>, SnapshotError> {
            if self
                .lose_chunk_reads
                .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
                .is_ok()
            {
                return Ok(Vec::new());
            }
            let partitions = self.partitions.lock().expect("lock");
            Ok(partitions
                .get(&window_of(&key.board_id, &key.window_name))
                .map(|p| {
                    p.rows
                        .range((key.generation, i32::MIN)..=(key.generation, i32::MAX))
                        .map(|(_, r)| r.clone())
                        .collect()
                })
                .unwrap_or_default())
        }
    }

    #[async_trait]
    impl<B: SnapshotBackend> SnapshotBackend for Arc<B> {
        async fn write_chunk(&self, row: ChunkRow) -> Result<(), SnapshotError> {
            self.as_ref().write_chunk(row).await
        }
        async fn set_head(&self, row: HeadRow) -> Result<(), SnapshotError> {
            self.as_ref().set_head(row).await
        }
        async fn delete_older(&self, key: GenerationKey) -> Result<(), SnapshotError> {
            self.as_ref().delete_older(key).await
        }
        async fn delete_generation(&self, key: GenerationKey) -> Result<(), SnapshotError> {
            self.as_ref().delete_generation(key).await
        }
        async fn head(&self, key: &WindowKey) -> Result<Option<i64>, SnapshotError> {
            self.as_ref().head(key).await
        }
        async fn chunks(&self, key: GenerationKey) -> Result<Vec<ChunkRow>, SnapshotError> {
            self.as_ref().chunks(key).await
        }
    }

    struct MemoryStore(SnapshotEngine<Arc<Memory>>);

    #[async_trait]
    impl SnapshotStore for MemoryStore {
        async fn put(&self, snapshot: &WindowSnapshot) -> Result<(), SnapshotError> {
            self.0.put(snapshot).await
        }
        async fn get(
            &self,
            board_id: &str,
            window: &str,
        ) -> Result<Option<WindowSnapshot>, SnapshotError> {
            self.0.get(board_id, window).await
        }
    }

    /// Small chunks, so every snapshot of the suite spans several.
    fn store_on(memory: Arc<Memory>, now_micros: fn() -> i64) -> MemoryStore {
        MemoryStore(SnapshotEngine::new(
            memory,
            Generations::new(now_micros),
            1024,
            8,
        ))
    }

    fn snapshot(board: &str, window: &str, members: usize, data: &str) -> WindowSnapshot {
        WindowSnapshot {
            board_id: board.into(),
            window: window.into(),
            close_ns: 1_700_000_000_000_000_000,
            taken_ns: 1_700_000_002_000_000_000,
            total_members: members as u64 * 3,
            entries: (0..members)
                .map(|i| SnapshotEntry {
                    member: format!("member-{i}"),
                    score: 1_000_000 - i as i64,
                    seq: i as u64,
                    rank: i as u64 + 1,
                    below: (members * 3 - i - 1) as u64,
                    member_data: data.into(),
                })
                .collect(),
        }
    }

    fn generations(memory: &Memory) -> Vec<i64> {
        let partitions = memory.partitions.lock().expect("lock");
        let mut out: Vec<i64> = partitions
            .values()
            .flat_map(|p| p.rows.keys().map(|(g, _)| *g))
            .collect();
        out.dedup();
        out
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn the_store_logic_passes_the_snapshot_conformance_suite() {
        let store = Arc::new(store_on(Arc::default(), system_micros));
        tickmesh_ranking::snapshot_conformance::run(store).await;
    }

    #[tokio::test]
    async fn a_replaced_snapshot_leaves_one_generation() {
        let memory = Arc::new(Memory::default());
        let store = store_on(memory.clone(), system_micros);
        let big = snapshot("b", "week:2026-W02", 300, "d");
        store.put(&big).await.expect("put");
        let chunks = memory
            .partitions
            .lock()
            .expect("lock")
            .values()
            .next()
            .expect("p")
            .rows
            .len();
        assert!(chunks > 5, "{chunks} chunks of 1 KiB");
        let small = snapshot("b", "week:2026-W02", 2, "");
        store.put(&small).await.expect("put");
        assert_eq!(
            store.get("b", "week:2026-W02").await.expect("get"),
            Some(small)
        );
        assert_eq!(
            generations(&memory).len(),
            1,
            "the older generation is deleted"
        );
    }

    #[tokio::test]
    async fn of_two_puts_the_later_wins_whole_and_the_loser_cleans_up() {
        fn ahead() -> i64 {
            system_micros() + 60_000_000
        }
        let memory = Arc::new(Memory::default());
        // An instance whose clock is a minute ahead puts first; an instance
        // with the right clock puts later but with an older time: its head
        // loses, and it deletes its own generation.
        let fast = store_on(memory.clone(), ahead);
        let slow = store_on(memory.clone(), system_micros);
        let first = snapshot("b", "day:2026-01-05", 50, "first");
        let second = snapshot("b", "day:2026-01-05", 60, "second");
        fast.put(&first).await.expect("put");
        slow.put(&second).await.expect("put");
        assert_eq!(
            slow.get("b", "day:2026-01-05").await.expect("get"),
            Some(first.clone()),
            "the newest write time wins, whole"
        );
        assert_eq!(generations(&memory).len(), 1, "the loser's rows are gone");
        // Concurrent puts from two instances: one of them, whole.
        let a = snapshot("b", "day:2026-01-06", 40, "a");
        let b = snapshot("b", "day:2026-01-06", 70, "b");
        let (ra, rb) = tokio::join!(fast.put(&a), slow.put(&b));
        ra.expect("put a");
        rb.expect("put b");
        let got = fast.get("b", "day:2026-01-06").await.expect("get");
        assert!(got == Some(a) || got == Some(b), "{got:?}");
    }

    #[tokio::test]
    async fn a_read_racing_a_replacement_reads_again() {
        let memory = Arc::new(Memory::default());
        let store = store_on(memory.clone(), system_micros);
        let s = snapshot("b", "month:2026-01", 10, "x");
        store.put(&s).await.expect("put");
        memory.lose_chunk_reads.store(2, Ordering::SeqCst);
        assert_eq!(store.get("b", "month:2026-01").await.expect("get"), Some(s));
        memory
            .lose_chunk_reads
            .store(READ_ATTEMPTS, Ordering::SeqCst);
        let err = store.get("b", "month:2026-01").await.expect_err("gave up");
        assert!(err.to_string().contains("retry"), "{err}");
    }

    #[test]
    fn chunks_split_at_entry_boundaries_and_read_back() {
        let s = snapshot("b", "w", 100, "é");
        let chunks = chunk_entries(&s.entries, 500).expect("json");
        assert!(chunks.len() > 10, "{}", chunks.len());
        let mut back = Vec::new();
        for c in &chunks {
            assert!(c.len() <= 500 + 200, "{}", c.len());
            back.extend(serde_json::from_str::<Vec<SnapshotEntry>>(c).expect("a JSON array"));
        }
        assert_eq!(back, s.entries);
        assert_eq!(chunk_entries(&[], 500).expect("json"), ["[]"]);
        // An entry larger than the target is a chunk of its own.
        let huge = snapshot("b", "w", 3, &"x".repeat(2000));
        assert_eq!(chunk_entries(&huge.entries, 500).expect("json").len(), 3);
    }

    #[test]
    fn rows_round_trip_and_incomplete_generations_are_none() {
        let s = snapshot("board/1:x", "hour:2026-11-01T01.2", 50, "data");
        let rows = chunk_rows(&s, 77, 600).expect("rows");
        assert!(rows.len() > 2);
        assert!(
            rows.iter()
                .all(|r| r.generation == 77 && r.chunks as usize == rows.len())
        );
        let key = window_of("board/1:x", "hour:2026-11-01T01.2");
        let mut shuffled = rows.clone();
        shuffled.reverse();
        assert_eq!(assemble(&key, shuffled).expect("ok"), Some(s.clone()));
        let mut missing = rows.clone();
        missing.remove(1);
        assert_eq!(assemble(&key, missing).expect("ok"), None);
        assert_eq!(assemble(&key, Vec::new()).expect("ok"), None);
        let mut broken = rows.clone();
        broken[0].entries_json = "[{".into();
        let err = assemble(&key, broken).expect_err("bad json").to_string();
        assert!(
            err.contains("chunk 0") && err.contains("board/1:x"),
            "{err}"
        );
        let too_many = WindowSnapshot {
            total_members: u64::MAX,
            ..s
        };
        let err = chunk_rows(&too_many, 1, 600)
            .expect_err("u64::MAX")
            .to_string();
        assert!(err.contains("total_members"), "{err}");
    }

    #[test]
    fn generations_increase_and_carry_their_time() {
        fn stuck() -> i64 {
            1_000
        }
        let g = Generations::new(stuck);
        let (a, ta) = g.next();
        let (b, tb) = g.next();
        assert_eq!((ta, tb), (1_000, 1_001), "strictly increasing time");
        assert!(b > a);
        assert_eq!(a / GENERATION_SALTS, ta);
        assert_eq!(
            b % GENERATION_SALTS,
            a % GENERATION_SALTS,
            "one salt per store"
        );
        let now = Generations::new(system_micros).next();
        assert!(now.0 > 0 && now.0 / GENERATION_SALTS == now.1);
    }

    #[test]
    fn statements_name_their_table_and_bind_the_partition_key() {
        let texts = statement_texts("ks");
        let names: Vec<_> = texts.iter().map(|(n, _)| *n).collect();
        assert_eq!(
            names,
            [
                "insert_chunk",
                "set_head",
                "delete_older",
                "delete_generation",
                "select_head",
                "select_chunks"
            ]
        );
        for (name, text) in &texts {
            assert!(text.contains("ks.ranking_snapshots "), "{name}: {text}");
            // Every partition key column is bound, so routing is token-aware.
            assert!(
                text.contains(":board_id") && text.contains(":window_name"),
                "{name}: {text}"
            );
            assert!(!text.contains('?'), "named markers only: {text}");
        }
        let by_name = |n: &str| &texts.iter().find(|(name, _)| *name == n).expect(n).1;
        assert!(by_name("set_head").contains("USING TIMESTAMP :write_time SET head = :head"));
        assert!(by_name("delete_older").ends_with("AND generation < :generation"));
        assert!(by_name("delete_generation").ends_with("AND generation = :generation"));
        assert!(by_name("select_head").ends_with("LIMIT 1"));
        // The derives bind and read by name: the fields are the columns.
        for column in [
            "board_id",
            "window_name",
            "generation",
            "chunk",
            "chunks",
            "close_ns",
            "taken_ns",
            "total_members",
            "entries_json",
        ] {
            assert!(
                by_name("insert_chunk").contains(&format!(":{column}")),
                "{column}"
            );
            assert!(by_name("select_chunks").contains(column), "{column}");
        }
    }
}
