//! Durable snapshots of closed windows: the top of a window as it stood when
//! the window closed, kept after its Redis keys expire so "last week's top
//! 100" stays answerable.
//!
//! [`SnapshotStore`] is the interface; [`EmbeddedSnapshotStore`] keeps them in
//! one redb file (pure Rust, ACID, each write one durable transaction). A
//! snapshot is written whole and replaces any earlier one of the same window,
//! so writing it twice (two instances, a retry) is harmless.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use async_trait::async_trait;
use redb::{Database, ReadableDatabase, TableDefinition};
use serde::{Deserialize, Serialize};

const SNAPSHOTS: TableDefinition<&str, &[u8]> = TableDefinition::new("ranking_snapshots");

#[derive(Debug, thiserror::Error)]
pub enum SnapshotError {
    #[error("snapshot store unavailable: {0}")]
    Unavailable(String),
    #[error("snapshot unreadable: {0}")]
    Corrupt(String),
}

impl From<SnapshotError> for tickmesh_core::Error {
    fn from(e: SnapshotError) -> Self {
        match e {
            SnapshotError::Unavailable(m) => tickmesh_core::Error::Unavailable(m),
            SnapshotError::Corrupt(m) => tickmesh_core::Error::Internal(m),
        }
    }
}

/// One member of a snapshot, with its standing when the window closed.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SnapshotEntry {
    pub member: String,
    pub score: i64,
    pub seq: u64,
    pub rank: u64,
    /// Members with a strictly worse score in the whole window.
    pub below: u64,
    #[serde(default)]
    pub member_data: String,
}

/// The top of one closed window.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct WindowSnapshot {
    pub board_id: String,
    /// Resolved window name, e.g. "week:2026-W02".
    pub window: String,
    pub close_ns: i64,
    pub taken_ns: i64,
    /// Members in the window when it was taken (the entries are its top).
    pub total_members: u64,
    /// In rank order.
    pub entries: Vec<SnapshotEntry>,
}

#[async_trait]
pub trait SnapshotStore: Send + Sync + 'static {
    /// Stores `snapshot`, replacing an earlier one of the same board and window.
    async fn put(&self, snapshot: &WindowSnapshot) -> Result<(), SnapshotError>;
    /// The snapshot of a board's window, if one was taken.
    async fn get(
        &self,
        board_id: &str,
        window: &str,
    ) -> Result<Option<WindowSnapshot>, SnapshotError>;
}

pub struct EmbeddedSnapshotStore {
    db: Arc<Database>,
    path: PathBuf,
}

fn unavailable(e: impl std::fmt::Display) -> SnapshotError {
    SnapshotError::Unavailable(format!("embedded snapshot store: {e}"))
}

/// Board ids never contain a NUL, so this key is unambiguous.
fn key(board_id: &str, window: &str) -> String {
    format!("{board_id}\0{window}")
}

impl EmbeddedSnapshotStore {
    /// Opens (or creates) the store at `path` (a file).
    pub fn open(path: &Path) -> Result<Self, SnapshotError> {
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir).map_err(unavailable)?;
        }
        let db = Database::create(path).map_err(unavailable)?;
        let tx = db.begin_write().map_err(unavailable)?;
        tx.open_table(SNAPSHOTS).map_err(unavailable)?;
        tx.commit().map_err(unavailable)?;
        Ok(Self {
            db: Arc::new(db),
            path: path.to_path_buf(),
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }
}

#[async_trait]
impl SnapshotStore for EmbeddedSnapshotStore {
    async fn put(&self, snapshot: &WindowSnapshot) -> Result<(), SnapshotError> {
        let db = self.db.clone();
        let k = key(&snapshot.board_id, &snapshot.window);
        let bytes =
            serde_json::to_vec(snapshot).map_err(|e| SnapshotError::Corrupt(e.to_string()))?;
        tokio::task::spawn_blocking(move || {
            let tx = db.begin_write().map_err(unavailable)?;
            {
                let mut table = tx.open_table(SNAPSHOTS).map_err(unavailable)?;
                table
                    .insert(k.as_str(), bytes.as_slice())
                    .map_err(unavailable)?;
            }
            tx.commit().map_err(unavailable)
        })
        .await
        .map_err(unavailable)?
    }

    async fn get(
        &self,
        board_id: &str,
        window: &str,
    ) -> Result<Option<WindowSnapshot>, SnapshotError> {
        let db = self.db.clone();
        let k = key(board_id, window);
        tokio::task::spawn_blocking(move || {
            let tx = db.begin_read().map_err(unavailable)?;
            let table = tx.open_table(SNAPSHOTS).map_err(unavailable)?;
            match table.get(k.as_str()).map_err(unavailable)? {
                Some(bytes) => serde_json::from_slice(bytes.value())
                    .map(Some)
                    .map_err(|e| SnapshotError::Corrupt(format!("{k:?}: {e}"))),
                None => Ok(None),
            }
        })
        .await
        .map_err(unavailable)?
    }
}
