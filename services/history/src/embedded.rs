//! The embedded history store: one redb database file under the data
//! directory. redb is a pure-Rust, ACID, copy-on-write B-tree with
//! checksummed pages, so a crash (even mid-write) leaves either the old or the
//! new version of every block; each upsert is one durable (fsync'd)
//! transaction. Keys are ordered so a symbol × interval's blocks are one
//! contiguous, time-ordered key range.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use async_trait::async_trait;
use redb::{Database, ReadableDatabase, ReadableTable, TableDefinition};
use tickmesh_calendar::Interval;
use tickmesh_candle_blocks::{Block, BlockCandle, decode, encode, merge};

use crate::store::{CandleStore, StoreError, StoredCandle, block_id, group_by_block};

const BLOCKS: TableDefinition<&[u8], &[u8]> = TableDefinition::new("candle_blocks");

pub struct EmbeddedStore {
    db: Arc<Database>,
    path: PathBuf,
}

fn unavailable(e: impl std::fmt::Display) -> StoreError {
    StoreError::Unavailable(format!("embedded store: {e}"))
}

/// `symbol \0 interval \0 block` with the block as an order-preserving big-endian number.
fn series_prefix(symbol: &str, interval: Interval) -> Vec<u8> {
    let mut key = Vec::with_capacity(symbol.len() + 16);
    key.extend_from_slice(symbol.as_bytes());
    key.push(0);
    key.extend_from_slice(interval.to_string().as_bytes());
    key.push(0);
    key
}

fn block_key(prefix: &[u8], block: i64) -> Vec<u8> {
    let mut key = prefix.to_vec();
    key.extend_from_slice(&((block as u64) ^ (1 << 63)).to_be_bytes());
    key
}

impl EmbeddedStore {
    /// Opens (or creates) the store at `path` (a file).
    pub fn open(path: &Path) -> Result<Self, StoreError> {
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir).map_err(unavailable)?;
        }
        let db = Database::create(path).map_err(unavailable)?;
        let tx = db.begin_write().map_err(unavailable)?;
        tx.open_table(BLOCKS).map_err(unavailable)?;
        tx.commit().map_err(unavailable)?;
        Ok(Self {
            db: Arc::new(db),
            path: path.to_path_buf(),
        })
    }

    fn upsert_blocking(db: &Database, candles: &[StoredCandle]) -> Result<(), StoreError> {
        let tx = db.begin_write().map_err(unavailable)?;
        {
            let mut table = tx.open_table(BLOCKS).map_err(unavailable)?;
            for (key, group) in group_by_block(candles) {
                let prefix = series_prefix(&key.symbol, key.interval);
                let k = block_key(&prefix, key.block);
                let (ps, qs) = (group[0].price_scale, group[0].quantity_scale);
                let mut block = match table.get(k.as_slice()).map_err(unavailable)? {
                    Some(bytes) => decode(bytes.value()).map_err(|e| {
                        StoreError::Corrupt(format!(
                            "{}/{} block {}: {e}",
                            key.symbol, key.interval, key.block
                        ))
                    })?,
                    None => Block {
                        price_scale: ps,
                        quantity_scale: qs,
                        candles: Vec::new(),
                    },
                };
                if block.candles.is_empty() {
                    (block.price_scale, block.quantity_scale) = (ps, qs);
                }
                if group.iter().any(|c| {
                    (c.price_scale, c.quantity_scale) != (block.price_scale, block.quantity_scale)
                }) {
                    return Err(StoreError::Corrupt(format!(
                        "{}/{}: candles at scales other than the block's ({}/{}); an instrument's scales changed",
                        key.symbol, key.interval, block.price_scale, block.quantity_scale
                    )));
                }
                let updates: Vec<BlockCandle> = group.iter().map(|c| c.to_block()).collect();
                merge(&mut block.candles, &updates);
                let bytes = encode(&block).map_err(|e| StoreError::Corrupt(e.to_string()))?;
                table
                    .insert(k.as_slice(), bytes.as_slice())
                    .map_err(unavailable)?;
            }
        }
        tx.commit().map_err(unavailable)
    }

    fn range_blocking(
        db: &Database,
        symbol: &str,
        interval: Interval,
        from_ns: i64,
        to_ns: i64,
        newest_first: bool,
        limit: usize,
    ) -> Result<Vec<StoredCandle>, StoreError> {
        if limit == 0 || from_ns >= to_ns {
            return Ok(Vec::new());
        }
        let prefix = series_prefix(symbol, interval);
        let lo = block_key(&prefix, block_id(interval, from_ns));
        let hi = block_key(&prefix, block_id(interval, to_ns.saturating_sub(1)));
        let tx = db.begin_read().map_err(unavailable)?;
        let table = tx.open_table(BLOCKS).map_err(unavailable)?;
        let range = table
            .range(lo.as_slice()..=hi.as_slice())
            .map_err(unavailable)?;
        let mut out = Vec::new();
        let mut handle = |bytes: &[u8]| -> Result<bool, StoreError> {
            let block = decode(bytes)
                .map_err(|e| StoreError::Corrupt(format!("{symbol}/{interval}: {e}")))?;
            let mut inside: Vec<&BlockCandle> = block
                .candles
                .iter()
                .filter(|c| c.open_ns >= from_ns && c.open_ns < to_ns)
                .collect();
            if newest_first {
                inside.reverse();
            }
            for c in inside {
                out.push(StoredCandle::from_block(
                    symbol,
                    interval,
                    block.price_scale,
                    block.quantity_scale,
                    c,
                ));
                if out.len() == limit {
                    return Ok(true);
                }
            }
            Ok(false)
        };
        if newest_first {
            for item in range.rev() {
                let (_, v) = item.map_err(unavailable)?;
                if handle(v.value())? {
                    break;
                }
            }
        } else {
            for item in range {
                let (_, v) = item.map_err(unavailable)?;
                if handle(v.value())? {
                    break;
                }
            }
        }
        Ok(out)
    }
}

#[async_trait]
impl CandleStore for EmbeddedStore {
    async fn upsert(&self, candles: &[StoredCandle]) -> Result<(), StoreError> {
        if candles.is_empty() {
            return Ok(());
        }
        let db = self.db.clone();
        let candles = candles.to_vec();
        tokio::task::spawn_blocking(move || Self::upsert_blocking(&db, &candles))
            .await
            .map_err(unavailable)?
    }

    async fn range(
        &self,
        symbol: &str,
        interval: Interval,
        from_ns: i64,
        to_ns: i64,
        newest_first: bool,
        limit: usize,
    ) -> Result<Vec<StoredCandle>, StoreError> {
        let db = self.db.clone();
        let symbol = symbol.to_string();
        tokio::task::spawn_blocking(move || {
            Self::range_blocking(&db, &symbol, interval, from_ns, to_ns, newest_first, limit)
        })
        .await
        .map_err(unavailable)?
    }

    async fn size_on_disk(&self) -> Result<u64, StoreError> {
        std::fs::metadata(&self.path)
            .map(|m| m.len())
            .map_err(unavailable)
    }

    fn name(&self) -> &'static str {
        "embedded"
    }
}
