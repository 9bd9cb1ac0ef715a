//! [`IssuanceStore`] in one redb file: pure Rust, no server, each write one
//! ACID transaction made durable (fsync) before it returns.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use async_trait::async_trait;
use redb::{Database, ReadableDatabase, ReadableTable, TableDefinition};

use crate::campaign::Campaign;
use crate::store::{Issuance, IssuanceStore, PutOutcome, StoreError};

const CAMPAIGNS: TableDefinition<&str, &[u8]> = TableDefinition::new("coupon_campaigns");
const ISSUANCES: TableDefinition<(&str, u64), &[u8]> = TableDefinition::new("coupon_issuances");

pub struct EmbeddedIssuanceStore {
    db: Arc<Database>,
    path: PathBuf,
}

fn unavailable(e: impl std::fmt::Display) -> StoreError {
    StoreError::Unavailable(format!("embedded issuance store: {e}"))
}

fn corrupt(what: &str, e: impl std::fmt::Display) -> StoreError {
    StoreError::Corrupt(format!("{what}: {e}"))
}

impl EmbeddedIssuanceStore {
    /// Opens (or creates) the store at `path` (a file).
    pub fn open(path: &Path) -> Result<Self, StoreError> {
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir).map_err(unavailable)?;
        }
        let db = Database::create(path).map_err(unavailable)?;
        let tx = db.begin_write().map_err(unavailable)?;
        tx.open_table(CAMPAIGNS).map_err(unavailable)?;
        tx.open_table(ISSUANCES).map_err(unavailable)?;
        tx.commit().map_err(unavailable)?;
        Ok(Self {
            db: Arc::new(db),
            path: path.to_path_buf(),
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    async fn blocking<T: Send + 'static>(
        &self,
        f: impl FnOnce(&Database) -> Result<T, StoreError> + Send + 'static,
    ) -> Result<T, StoreError> {
        let db = self.db.clone();
        tokio::task::spawn_blocking(move || f(&db))
            .await
            .map_err(unavailable)?
    }
}

#[async_trait]
impl IssuanceStore for EmbeddedIssuanceStore {
    async fn create_campaign(&self, campaign: &Campaign) -> Result<(Campaign, bool), StoreError> {
        let campaign = campaign.clone();
        self.blocking(move |db| {
            let tx = db.begin_write().map_err(unavailable)?;
            let existing = {
                let mut table = tx.open_table(CAMPAIGNS).map_err(unavailable)?;
                let existing = match table.get(campaign.id.as_str()).map_err(unavailable)? {
                    Some(bytes) => Some(
                        serde_json::from_slice::<Campaign>(bytes.value())
                            .map_err(|e| corrupt(&campaign.id, e))?,
                    ),
                    None => None,
                };
                if existing.is_none() {
                    let bytes =
                        serde_json::to_vec(&campaign).map_err(|e| corrupt(&campaign.id, e))?;
                    table
                        .insert(campaign.id.as_str(), bytes.as_slice())
                        .map_err(unavailable)?;
                }
                existing
            };
            match existing {
                Some(stored) => Ok((stored, false)),
                None => {
                    tx.commit().map_err(unavailable)?;
                    Ok((campaign, true))
                }
            }
        })
        .await
    }

    async fn campaign(&self, id: &str) -> Result<Option<Campaign>, StoreError> {
        let id = id.to_string();
        self.blocking(move |db| {
            let tx = db.begin_read().map_err(unavailable)?;
            let table = tx.open_table(CAMPAIGNS).map_err(unavailable)?;
            match table.get(id.as_str()).map_err(unavailable)? {
                Some(bytes) => serde_json::from_slice(bytes.value())
                    .map(Some)
                    .map_err(|e| corrupt(&id, e)),
                None => Ok(None),
            }
        })
        .await
    }

    async fn list_campaigns(&self, after: &str, limit: usize) -> Result<Vec<Campaign>, StoreError> {
        let after = after.to_string();
        self.blocking(move |db| {
            let tx = db.begin_read().map_err(unavailable)?;
            let table = tx.open_table(CAMPAIGNS).map_err(unavailable)?;
            let mut out = Vec::new();
            for row in table.range(after.as_str()..).map_err(unavailable)? {
                let (k, v) = row.map_err(unavailable)?;
                if k.value() == after {
                    continue;
                }
                if out.len() == limit {
                    break;
                }
                out.push(serde_json::from_slice(v.value()).map_err(|e| corrupt(k.value(), e))?);
            }
            Ok(out)
        })
        .await
    }

    async fn put_issuances(&self, records: &[Issuance]) -> Result<PutOutcome, StoreError> {
        if records.is_empty() {
            return Ok(PutOutcome::default());
        }
        let records = records.to_vec();
        self.blocking(move |db| {
            let tx = db.begin_write().map_err(unavailable)?;
            let mut outcome = PutOutcome::default();
            {
                let mut table = tx.open_table(ISSUANCES).map_err(unavailable)?;
                for r in &records {
                    let key = (r.campaign_id.as_str(), r.seq);
                    let stored = match table.get(key).map_err(unavailable)? {
                        Some(bytes) => Some(
                            serde_json::from_slice::<Issuance>(bytes.value())
                                .map_err(|e| corrupt(&r.campaign_id, e))?,
                        ),
                        None => None,
                    };
                    match stored {
                        Some(s) if &s == r => outcome.already += 1,
                        Some(_) => outcome.conflicting.push(r.seq),
                        None => {
                            let bytes =
                                serde_json::to_vec(r).map_err(|e| corrupt(&r.campaign_id, e))?;
                            table.insert(key, bytes.as_slice()).map_err(unavailable)?;
                            outcome.written += 1;
                        }
                    }
                }
            }
            tx.commit().map_err(unavailable)?;
            Ok(outcome)
        })
        .await
    }

    async fn last_seq(&self, campaign_id: &str) -> Result<u64, StoreError> {
        let id = campaign_id.to_string();
        self.blocking(move |db| {
            let tx = db.begin_read().map_err(unavailable)?;
            let table = tx.open_table(ISSUANCES).map_err(unavailable)?;
            let last = table
                .range((id.as_str(), 0u64)..=(id.as_str(), u64::MAX))
                .map_err(unavailable)?
                .next_back();
            match last {
                Some(row) => Ok(row.map_err(unavailable)?.0.value().1),
                None => Ok(0),
            }
        })
        .await
    }

    async fn issuances(&self, campaign_id: &str) -> Result<Vec<Issuance>, StoreError> {
        let id = campaign_id.to_string();
        self.blocking(move |db| {
            let tx = db.begin_read().map_err(unavailable)?;
            let table = tx.open_table(ISSUANCES).map_err(unavailable)?;
            let mut out = Vec::new();
            for row in table
                .range((id.as_str(), 0u64)..=(id.as_str(), u64::MAX))
                .map_err(unavailable)?
            {
                let (_, v) = row.map_err(unavailable)?;
                out.push(serde_json::from_slice(v.value()).map_err(|e| corrupt(&id, e))?);
            }
            Ok(out)
        })
        .await
    }
}
