//! The store's logic over a small storage interface: grouping candles into
//! blocks, read-modify-write of a block, walking the block index for ranges.
//! [`ScyllaStore`](crate::ScyllaStore) runs it over prepared CQL statements;
//! the tests run it, and the shared conformance suite, over an in-memory
//! backend with the same row types.

use std::collections::hash_map::DefaultHasher;
use std::hash::{Hash, Hasher};
use std::sync::atomic::{AtomicI64, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

use async_trait::async_trait;
use futures_util::stream::{self, BoxStream, StreamExt};
use scylla::value::CqlTimestamp;
use tickmesh_calendar::Interval;
use tickmesh_history::{BlockKey, StoreError, StoredCandle};
use tokio::sync::Mutex;
use tracing::debug;

use crate::blocks::Block;
use crate::model::{
    BlockRow, IndexRange, IndexRow, ScaleRowKey, StoredBlockRow, block_candles, block_range,
    block_row, decode_row, group_by_block, index_row, interval_text, plan_block_update,
    scale_row_key,
};

/// Stripes of the per-process block lock.
const LOCK_STRIPES: usize = 64;

/// What the engine needs from storage; each call maps to one CQL statement
/// (or one single-partition batch).
#[async_trait]
pub(crate) trait Backend: Send + Sync {
    /// All rows of one block partition.
    async fn read_block(&self, key: &BlockKey) -> Result<Vec<StoredBlockRow>, StoreError>;
    /// Writes one block partition atomically: upserts `rows`, deletes the
    /// rows of `deletes`.
    async fn write_block(
        &self,
        key: &BlockKey,
        rows: Vec<BlockRow>,
        deletes: Vec<ScaleRowKey>,
    ) -> Result<(), StoreError>;
    /// Upserts one index row.
    async fn write_index(&self, row: IndexRow) -> Result<(), StoreError>;
    /// The block ids of the index in `range`, ascending or descending.
    async fn index_blocks(
        &self,
        range: IndexRange,
        newest_first: bool,
    ) -> Result<BoxStream<'_, Result<i64, StoreError>>, StoreError>;
}

fn now() -> CqlTimestamp {
    let ms = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis());
    CqlTimestamp(i64::try_from(ms).unwrap_or(i64::MAX))
}

fn blob_len(data: &[u8]) -> i64 {
    i64::try_from(data.len()).unwrap_or(i64::MAX)
}

pub(crate) struct Engine<B> {
    pub(crate) backend: B,
    write_concurrency: usize,
    read_concurrency: usize,
    /// Net change of stored blob bytes caused by this process.
    written_bytes: AtomicI64,
    /// Serializes read-modify-write of one block within this process.
    block_locks: Box<[Mutex<()>]>,
}

impl<B: Backend> Engine<B> {
    pub(crate) fn new(backend: B, write_concurrency: usize, read_concurrency: usize) -> Self {
        Engine {
            backend,
            write_concurrency: write_concurrency.max(1),
            read_concurrency: read_concurrency.max(1),
            written_bytes: AtomicI64::new(0),
            block_locks: (0..LOCK_STRIPES).map(|_| Mutex::new(())).collect(),
        }
    }

    fn lock_for(&self, key: &BlockKey) -> &Mutex<()> {
        let mut hasher = DefaultHasher::new();
        key.hash(&mut hasher);
        let stripe = usize::try_from(hasher.finish() % LOCK_STRIPES as u64).unwrap_or(0);
        &self.block_locks[stripe]
    }

    /// The decoded rows of one block and their blob bytes.
    async fn read_block(&self, key: &BlockKey) -> Result<(Vec<Block>, i64), StoreError> {
        let rows = self.backend.read_block(key).await?;
        let bytes = rows.iter().map(|r| blob_len(&r.data)).sum();
        let blocks = rows
            .iter()
            .map(|r| decode_row(key, r))
            .collect::<Result<_, _>>()?;
        Ok((blocks, bytes))
    }

    /// Read-modify-write of one block.
    ///
    /// Concurrency: exactly one writer per symbol exists cluster-wide (the
    /// aggregator/flusher holds a lease), so reading the block, merging and
    /// writing it back cannot lose a concurrent update from another process;
    /// the striped lock covers concurrent upserts of one block inside this
    /// process. Reads and writes are LOCAL_QUORUM, so the read sees the last
    /// acknowledged write.
    async fn upsert_block(
        &self,
        key: BlockKey,
        candles: Vec<&StoredCandle>,
    ) -> Result<(), StoreError> {
        let _guard = self.lock_for(&key).lock().await;
        let (existing, old_bytes) = self.read_block(&key).await?;
        let plan = plan_block_update(existing, &candles);
        let updated_at = now();
        let rows = plan
            .write
            .iter()
            .map(|b| block_row(&key, b, updated_at))
            .collect::<Result<Vec<_>, _>>()?;
        let deletes = plan
            .delete
            .iter()
            .map(|&(p, q)| scale_row_key(&key, p, q))
            .collect::<Result<Vec<_>, _>>()?;
        let new_bytes: i64 = rows.iter().map(|r| blob_len(&r.data)).sum();
        self.backend.write_block(&key, rows, deletes).await?;
        // The index row after the block: an index entry means the block exists.
        self.backend
            .write_index(index_row(&key, plan.candle_count(), updated_at)?)
            .await?;
        self.written_bytes
            .fetch_add(new_bytes - old_bytes, Ordering::Relaxed);
        debug!(
            symbol = %key.symbol, interval = %key.interval, block = key.block,
            candles = plan.candle_count(), bytes = new_bytes, "block written"
        );
        Ok(())
    }

    /// Groups candles by block and rewrites each touched block, up to
    /// `write_concurrency` blocks at a time. Blocks are different partitions,
    /// so their writes are concurrent statements, not a multi-partition batch.
    /// All or nothing per block; on error some blocks may be written and the
    /// caller retries the whole call (writes are idempotent).
    pub(crate) async fn upsert(&self, candles: &[StoredCandle]) -> Result<(), StoreError> {
        if candles.is_empty() {
            return Ok(());
        }
        // The futures are built up front (a closure inside the stream would
        // trip the compiler's Send check of the async_trait future).
        let writes: Vec<_> = group_by_block(candles)
            .into_iter()
            .map(|(key, group)| self.upsert_block(key, group))
            .collect();
        let results: Vec<Result<(), StoreError>> = stream::iter(writes)
            .buffer_unordered(self.write_concurrency)
            .collect()
            .await;
        results.into_iter().collect()
    }

    /// Walks the block index between the blocks of `from_ns` and `to_ns - 1`
    /// in the requested order, fetching up to `read_concurrency` blocks ahead,
    /// and stops at `limit` candles.
    pub(crate) async fn range(
        &self,
        symbol: &str,
        interval: Interval,
        from_ns: i64,
        to_ns: i64,
        newest_first: bool,
        limit: usize,
    ) -> Result<Vec<StoredCandle>, StoreError> {
        let Some((first, last)) = block_range(interval, from_ns, to_ns) else {
            return Ok(Vec::new());
        };
        if limit == 0 {
            return Ok(Vec::new());
        }
        let bounds = IndexRange {
            symbol: symbol.to_string(),
            interval: interval_text(interval),
            first,
            last,
        };
        let ids = self.backend.index_blocks(bounds, newest_first).await?;
        let mut blocks = ids
            .map(|id| async move {
                let key = BlockKey {
                    symbol: symbol.to_string(),
                    interval,
                    block: id?,
                };
                let (rows, _) = self.read_block(&key).await?;
                Ok::<_, StoreError>(block_candles(&key, &rows))
            })
            .buffered(self.read_concurrency);
        let mut out = Vec::new();
        while let Some(candles) = blocks.next().await {
            let mut candles: Vec<StoredCandle> = candles?
                .into_iter()
                .filter(|c| from_ns <= c.open_ns && c.open_ns < to_ns)
                .collect();
            if newest_first {
                candles.reverse();
            }
            for c in candles {
                out.push(c);
                if out.len() == limit {
                    return Ok(out);
                }
            }
        }
        Ok(out)
    }

    /// See [`ScyllaStore`](crate::ScyllaStore)'s `size_on_disk`.
    pub(crate) fn written_bytes(&self) -> u64 {
        u64::try_from(self.written_bytes.load(Ordering::Relaxed)).unwrap_or(0)
    }
}

#[cfg(test)]
mod tests {
    use std::collections::{BTreeMap, BTreeSet};
    use std::sync::Mutex as StdMutex;
    use std::sync::atomic::AtomicUsize;

    use tickmesh_history::CandleStore;
    use tickmesh_history::conformance::{candle, run_all};

    use super::*;

    type Partition = (String, String, i64);
    /// The rows of one block partition by (price_scale, quantity_scale).
    type Rows = BTreeMap<(i32, i32), BlockRow>;

    /// Tables as maps, keyed like the CQL tables; a single-partition write is
    /// applied under one lock, like a replica applies one mutation.
    #[derive(Default)]
    struct Memory {
        blocks: StdMutex<BTreeMap<Partition, Rows>>,
        index: StdMutex<BTreeMap<(String, String), BTreeMap<i64, IndexRow>>>,
        /// Fail the n-th index write (1-based), to check error paths.
        fail_index_write: AtomicUsize,
        index_writes: AtomicUsize,
    }

    #[async_trait]
    impl Backend for Memory {
        async fn read_block(&self, key: &BlockKey) -> Result<Vec<StoredBlockRow>, StoreError> {
            let blocks = self.blocks.lock().expect("lock");
            let partition = (key.symbol.clone(), interval_text(key.interval), key.block);
            Ok(blocks
                .get(&partition)
                .map(|rows| {
                    rows.values()
                        .map(|r| StoredBlockRow {
                            price_scale: r.price_scale,
                            quantity_scale: r.quantity_scale,
                            data: r.data.clone(),
                        })
                        .collect()
                })
                .unwrap_or_default())
        }

        async fn write_block(
            &self,
            key: &BlockKey,
            rows: Vec<BlockRow>,
            deletes: Vec<ScaleRowKey>,
        ) -> Result<(), StoreError> {
            let mut blocks = self.blocks.lock().expect("lock");
            let partition = (key.symbol.clone(), interval_text(key.interval), key.block);
            let entry = blocks.entry(partition.clone()).or_default();
            for d in deletes {
                assert_eq!(
                    (d.symbol, d.interval, d.block),
                    partition,
                    "a delete stays in the partition"
                );
                entry.remove(&(d.price_scale, d.quantity_scale));
            }
            for r in rows {
                assert_eq!(
                    (r.symbol.clone(), r.interval.clone(), r.block),
                    partition,
                    "a row stays in the partition"
                );
                entry.insert((r.price_scale, r.quantity_scale), r);
            }
            Ok(())
        }

        async fn write_index(&self, row: IndexRow) -> Result<(), StoreError> {
            let n = self.index_writes.fetch_add(1, Ordering::SeqCst) + 1;
            if n == self.fail_index_write.load(Ordering::SeqCst) {
                return Err(StoreError::Unavailable(
                    "injected index write failure".into(),
                ));
            }
            let mut index = self.index.lock().expect("lock");
            index
                .entry((row.symbol.clone(), row.interval.clone()))
                .or_default()
                .insert(row.block, row);
            Ok(())
        }

        async fn index_blocks(
            &self,
            range: IndexRange,
            newest_first: bool,
        ) -> Result<BoxStream<'_, Result<i64, StoreError>>, StoreError> {
            let index = self.index.lock().expect("lock");
            let mut ids: Vec<i64> = index
                .get(&(range.symbol, range.interval))
                .map(|rows| {
                    rows.range(range.first..=range.last)
                        .map(|(id, _)| *id)
                        .collect()
                })
                .unwrap_or_default();
            if newest_first {
                ids.reverse();
            }
            Ok(stream::iter(ids.into_iter().map(Ok)).boxed())
        }
    }

    struct MemoryStore(Engine<Memory>);

    #[async_trait]
    impl CandleStore for MemoryStore {
        async fn upsert(&self, candles: &[StoredCandle]) -> Result<(), StoreError> {
            self.0.upsert(candles).await
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
            self.0
                .range(symbol, interval, from_ns, to_ns, newest_first, limit)
                .await
        }

        async fn size_on_disk(&self) -> Result<u64, StoreError> {
            Ok(self.0.written_bytes())
        }

        fn name(&self) -> &'static str {
            "scylla-logic-in-memory"
        }
    }

    fn store() -> MemoryStore {
        MemoryStore(Engine::new(Memory::default(), 32, 4))
    }

    const MINUTE_NS: i64 = 60_000_000_000;

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn the_store_logic_passes_the_conformance_suite() {
        let store = store();
        run_all(&store).await;
        let size = store.size_on_disk().await.expect("size");
        let blobs: u64 = store
            .0
            .backend
            .blocks
            .lock()
            .expect("lock")
            .values()
            .flat_map(|p| p.values())
            .map(|r| r.data.len() as u64)
            .sum();
        assert_eq!(size, blobs, "size_on_disk is the net blob bytes written");
        // Every index row points at a written block, with its candle count.
        let blocks = store.0.backend.blocks.lock().expect("lock");
        for ((symbol, interval), rows) in store.0.backend.index.lock().expect("lock").iter() {
            for (id, row) in rows {
                let partition = blocks
                    .get(&(symbol.clone(), interval.clone(), *id))
                    .expect("indexed block exists");
                let count: i32 = partition.values().map(|r| r.candle_count).sum();
                assert_eq!(row.candle_count, count, "{symbol} {interval} {id}");
            }
        }
    }

    #[tokio::test]
    async fn a_candle_moving_to_other_scales_leaves_one_row() {
        let store = store();
        let c = candle("MV", "1m", 0, MINUTE_NS);
        store
            .upsert(std::slice::from_ref(&c))
            .await
            .expect("upsert");
        let mut moved = c.clone();
        moved.price_scale = 8;
        store
            .upsert(std::slice::from_ref(&moved))
            .await
            .expect("upsert");
        let got = store
            .range("MV", c.interval, i64::MIN, i64::MAX, false, 10)
            .await
            .expect("range");
        assert_eq!(got, vec![moved]);
        let blocks = store.0.backend.blocks.lock().expect("lock");
        assert_eq!(
            blocks.values().map(|p| p.len()).sum::<usize>(),
            1,
            "the emptied scale row was deleted"
        );
    }

    #[tokio::test]
    async fn a_failed_write_is_reported_and_a_retry_completes_it() {
        let store = store();
        let candles: Vec<StoredCandle> = (0..3000)
            .map(|i| candle("FW", "1m", i, MINUTE_NS))
            .collect();
        store.0.backend.fail_index_write.store(2, Ordering::SeqCst);
        let err = store
            .upsert(&candles)
            .await
            .expect_err("the injected failure surfaces");
        assert!(err.to_string().contains("injected"), "{err}");
        store.upsert(&candles).await.expect("retry");
        let got = store
            .range("FW", candles[0].interval, i64::MIN, i64::MAX, false, 10_000)
            .await
            .expect("range");
        assert_eq!(got, candles, "the retry wrote everything exactly once");
    }

    #[tokio::test]
    async fn limits_stop_early_in_both_orders() {
        let store = store();
        let candles: Vec<StoredCandle> = (0..5000)
            .map(|i| candle("LM", "1m", i, MINUTE_NS))
            .collect();
        store.upsert(&candles).await.expect("upsert");
        let iv = candles[0].interval;
        let asc = store
            .range("LM", iv, i64::MIN, i64::MAX, false, 3)
            .await
            .expect("range");
        assert_eq!(asc, candles[..3].to_vec());
        let desc = store
            .range("LM", iv, i64::MIN, i64::MAX, true, 3)
            .await
            .expect("range");
        assert_eq!(
            desc,
            candles[4997..].iter().rev().cloned().collect::<Vec<_>>()
        );
        // A range inside one block, and one ending exactly on a block boundary.
        let (a, b) = (candles[100].open_ns, candles[200].open_ns);
        assert_eq!(
            store
                .range("LM", iv, a, b, false, 1000)
                .await
                .expect("range"),
            candles[100..200].to_vec()
        );
        let ids: BTreeSet<i64> = candles
            .iter()
            .map(|c| tickmesh_history::block_id(iv, c.open_ns))
            .collect();
        assert!(ids.len() >= 4, "the series spans several blocks");
    }
}
