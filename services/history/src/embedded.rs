//! The embedded history store: one redb database file under the data
//! directory. redb is a pure-Rust, ACID, copy-on-write B-tree with
//! checksummed pages, so a crash (even mid-write) leaves either the old or the
//! new version of every block; each upsert is one durable (fsync'd)
//! transaction. Keys are ordered so a symbol × interval's blocks are one
//! contiguous, time-ordered key range.
//!
//! A block is stored in parts that each fit one 4 KiB page with their key
//! (`block key ‖ part number`). redb gives a B-tree leaf that outgrows a page
//! the next power of two, so a whole 16 KB day block would take a 32 KB leaf
//! and double the file; in parts, the file is ~1.2× the encoded blocks after
//! [`EmbeddedStore::compact`]. Files written before parts existed hold one
//! value under the bare block key; both layouts are read, and a block is
//! rewritten in parts the next time it is upserted.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use async_trait::async_trait;
use redb::{Database, ReadableDatabase, ReadableTable, TableDefinition};
use tickmesh_calendar::Interval;
use tickmesh_candle_blocks::{Block, BlockCandle, decode, encode, merge};

use crate::block_cache::{BlockCache, DEFAULT_CAPACITY};
use crate::store::{CandleStore, StoreError, StoredCandle, block_id, group_by_block};

const BLOCKS: TableDefinition<&[u8], &[u8]> = TableDefinition::new("candle_blocks");

pub struct EmbeddedStore {
    db: Arc<Database>,
    cache: Arc<BlockCache>,
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

/// Bytes of a page a part and its key may fill (the rest is redb's page and
/// entry headers, with room to spare).
const PAGE_BUDGET: usize = 4096 - 64;
/// Smallest part, for very long symbols.
const MIN_PART: usize = 512;

fn part_key(block_key: &[u8], part: u16) -> Vec<u8> {
    let mut key = block_key.to_vec();
    key.extend_from_slice(&part.to_be_bytes());
    key
}

fn part_len(block_key: &[u8]) -> usize {
    PAGE_BUDGET
        .saturating_sub(block_key.len() + 2)
        .max(MIN_PART)
}

/// Every key of a block's parts (and a legacy whole-block key) lies in
/// `block key ..= block key ‖ FF FF`.
fn parts_range(block_key: &[u8]) -> (Vec<u8>, Vec<u8>) {
    (block_key.to_vec(), part_key(block_key, u16::MAX))
}

/// Splits a sequence of (key, value) rows, in key order or reversed, into
/// whole blocks: rows whose keys share the first `block_key_len` bytes.
/// Returns the block key and the parts' bytes joined in key order.
struct Assembler {
    block_key_len: usize,
    reversed: bool,
    current: Option<(Vec<u8>, Vec<Vec<u8>>)>,
}

impl Assembler {
    /// Adds a row; returns a block completed by it (the previous one).
    fn push(&mut self, key: &[u8], value: &[u8]) -> Option<(Vec<u8>, Vec<u8>)> {
        let block = &key[..self.block_key_len.min(key.len())];
        let done = match &mut self.current {
            Some((k, parts)) if k.as_slice() == block => {
                parts.push(value.to_vec());
                return None;
            }
            _ => self.finish(),
        };
        self.current = Some((block.to_vec(), vec![value.to_vec()]));
        done
    }

    fn finish(&mut self) -> Option<(Vec<u8>, Vec<u8>)> {
        let (key, mut parts) = self.current.take()?;
        if self.reversed {
            parts.reverse();
        }
        Some((key, parts.concat()))
    }
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
            cache: Arc::new(BlockCache::new(DEFAULT_CAPACITY)),
            path: path.to_path_buf(),
        })
    }

    /// Compacts the database file at `path` in place, returning its size
    /// before and after. Needs the file to itself: fails while a tickmesh
    /// process has the store open.
    pub fn compact(path: &Path) -> Result<(u64, u64), StoreError> {
        let size = |p: &Path| std::fs::metadata(p).map(|m| m.len()).map_err(unavailable);
        let before = size(path)?;
        let mut db = Database::open(path).map_err(unavailable)?;
        while db.compact().map_err(unavailable)? {}
        drop(db);
        Ok((before, size(path)?))
    }

    fn upsert_blocking(db: &Database, candles: &[StoredCandle]) -> Result<(), StoreError> {
        let tx = db.begin_write().map_err(unavailable)?;
        {
            let mut table = tx.open_table(BLOCKS).map_err(unavailable)?;
            for (key, group) in group_by_block(candles) {
                let prefix = series_prefix(&key.symbol, key.interval);
                let k = block_key(&prefix, key.block);
                let (ps, qs) = (group[0].price_scale, group[0].quantity_scale);
                let (lo, hi) = parts_range(&k);
                let mut old_keys = Vec::new();
                let mut stored = Vec::new();
                for row in table
                    .range(lo.as_slice()..=hi.as_slice())
                    .map_err(unavailable)?
                {
                    let (rk, rv) = row.map_err(unavailable)?;
                    old_keys.push(rk.value().to_vec());
                    stored.extend_from_slice(rv.value());
                }
                let mut block = match (!old_keys.is_empty()).then_some(stored) {
                    Some(bytes) => decode(&bytes).map_err(|e| {
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
                for old in &old_keys {
                    table.remove(old.as_slice()).map_err(unavailable)?;
                }
                for (i, part) in bytes.chunks(part_len(&k)).enumerate() {
                    let part_no = u16::try_from(i).map_err(|_| {
                        StoreError::Corrupt(format!(
                            "{}/{} block {}: {} bytes is too large",
                            key.symbol,
                            key.interval,
                            key.block,
                            bytes.len()
                        ))
                    })?;
                    table
                        .insert(part_key(&k, part_no).as_slice(), part)
                        .map_err(unavailable)?;
                }
            }
        }
        tx.commit().map_err(unavailable)
    }

    #[allow(clippy::too_many_arguments)]
    fn range_blocking(
        db: &Database,
        cache: &BlockCache,
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
        let hi = part_key(
            &block_key(&prefix, block_id(interval, to_ns.saturating_sub(1))),
            u16::MAX,
        );
        let tx = db.begin_read().map_err(unavailable)?;
        let table = tx.open_table(BLOCKS).map_err(unavailable)?;
        let range = table
            .range(lo.as_slice()..=hi.as_slice())
            .map_err(unavailable)?;
        let mut out = Vec::new();
        let mut handle = |key: &[u8], bytes: &[u8]| -> Result<bool, StoreError> {
            let block = cache
                .decode(key, bytes)
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
        let mut blocks = Assembler {
            block_key_len: lo.len(),
            reversed: newest_first,
            current: None,
        };
        let rows: Box<dyn Iterator<Item = _>> = if newest_first {
            Box::new(range.rev())
        } else {
            Box::new(range)
        };
        for row in rows {
            let (k, v) = row.map_err(unavailable)?;
            if let Some((key, bytes)) = blocks.push(k.value(), v.value())
                && handle(&key, &bytes)?
            {
                return Ok(out);
            }
        }
        if let Some((key, bytes)) = blocks.finish() {
            handle(&key, &bytes)?;
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
        let (db, cache) = (self.db.clone(), self.cache.clone());
        let symbol = symbol.to_string();
        tokio::task::spawn_blocking(move || {
            Self::range_blocking(
                &db,
                &cache,
                &symbol,
                interval,
                from_ns,
                to_ns,
                newest_first,
                limit,
            )
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

#[cfg(test)]
mod tests {
    use super::*;
    use tickmesh_candle_blocks::synthetic;

    const DAY_NS: i64 = 86_400_000_000_000;

    fn day(days: u32) -> Vec<StoredCandle> {
        let minute = Interval::parse("1m").expect("1m");
        synthetic::days_of_minutes(3, 20_000 * DAY_NS, days)
            .iter()
            .map(|c| StoredCandle::from_block("BTCUSDT", minute, 2, 5, c))
            .collect()
    }

    fn temp(name: &str) -> PathBuf {
        let dir =
            std::env::temp_dir().join(format!("tickmesh-embedded-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        dir.join("history.redb")
    }

    #[tokio::test]
    async fn blocks_are_stored_in_page_sized_parts() {
        let path = temp("parts");
        let store = EmbeddedStore::open(&path).expect("open");
        let candles = day(2);
        store.upsert(&candles).await.expect("upsert");
        let tx = store.db.begin_read().expect("read");
        let table = tx.open_table(BLOCKS).expect("table");
        let rows: Vec<(Vec<u8>, usize)> = table
            .iter()
            .expect("iter")
            .map(|r| {
                let (k, v) = r.expect("row");
                (k.value().to_vec(), v.value().len())
            })
            .collect();
        assert!(
            rows.len() > 2,
            "two day blocks of ~16 KB are several parts each"
        );
        assert!(
            rows.iter().all(|(k, v)| k.len() + v <= PAGE_BUDGET),
            "every part fits a page with its key"
        );
        let back = store
            .range(
                "BTCUSDT",
                candles[0].interval,
                i64::MIN,
                i64::MAX,
                false,
                usize::MAX,
            )
            .await
            .expect("range");
        assert_eq!(back, candles);
        let newest = store
            .range("BTCUSDT", candles[0].interval, i64::MIN, i64::MAX, true, 3)
            .await
            .expect("range");
        let tail: Vec<_> = candles.iter().rev().take(3).cloned().collect();
        assert_eq!(newest, tail, "newest first joins parts in key order too");
    }

    #[tokio::test]
    async fn whole_block_values_of_older_files_are_read_and_rewritten_in_parts() {
        let path = temp("legacy");
        let store = EmbeddedStore::open(&path).expect("open");
        let candles = day(1);
        let interval = candles[0].interval;
        let block = Block {
            price_scale: 2,
            quantity_scale: 5,
            candles: candles.iter().map(|c| c.to_block()).collect(),
        };
        let key = block_key(
            &series_prefix("BTCUSDT", interval),
            block_id(interval, candles[0].open_ns),
        );
        let tx = store.db.begin_write().expect("write");
        tx.open_table(BLOCKS)
            .expect("table")
            .insert(key.as_slice(), encode(&block).expect("encode").as_slice())
            .expect("insert");
        tx.commit().expect("commit");

        let all = || store.range("BTCUSDT", interval, i64::MIN, i64::MAX, false, usize::MAX);
        assert_eq!(all().await.expect("range"), candles, "legacy value read");
        let mut corrected = candles[10].clone();
        corrected.close += 1;
        corrected.high = corrected.high.max(corrected.close);
        corrected.revision += 1;
        store
            .upsert(std::slice::from_ref(&corrected))
            .await
            .expect("upsert");
        let mut expected = candles.clone();
        expected[10] = corrected;
        assert_eq!(all().await.expect("range"), expected);
        let tx = store.db.begin_read().expect("read");
        let legacy = tx
            .open_table(BLOCKS)
            .expect("table")
            .get(key.as_slice())
            .expect("get")
            .is_some();
        assert!(!legacy, "the whole-block value was replaced by parts");
    }

    #[tokio::test]
    async fn compaction_keeps_every_candle() {
        let path = temp("compact");
        let candles = day(3);
        {
            let store = EmbeddedStore::open(&path).expect("open");
            for chunk in candles.chunks(700) {
                store.upsert(chunk).await.expect("upsert");
            }
        }
        let (before, after) = EmbeddedStore::compact(&path).expect("compact");
        assert!(after <= before, "{after} > {before}");
        let store = EmbeddedStore::open(&path).expect("reopen");
        let back = store
            .range(
                "BTCUSDT",
                candles[0].interval,
                i64::MIN,
                i64::MAX,
                false,
                usize::MAX,
            )
            .await
            .expect("range");
        assert_eq!(back, candles);
        assert!(
            EmbeddedStore::compact(&path).is_err(),
            "compaction refuses a store that is open"
        );
    }
}
