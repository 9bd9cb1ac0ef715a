//! Pure mapping between candles, blocks and the bound values of statements.
//! Nothing here talks to the cluster, so all of it is unit-tested.

use std::collections::{BTreeMap, BTreeSet};

use scylla::value::CqlTimestamp;
use scylla::{DeserializeRow, SerializeRow};
use tickmesh_calendar::Interval;
use tickmesh_history::{BlockKey, StoreError, StoredCandle, block_id};

use crate::blocks::{self, Block, BlockCandle};

/// Bound values of the block write (`INSERT INTO candle_blocks …`). Bound by
/// column name, so a mismatch with the prepared statement is a type-check
/// error, never a silently swapped value.
#[derive(Clone, Debug, PartialEq, Eq, SerializeRow)]
pub struct BlockRow {
    pub symbol: String,
    pub interval: String,
    pub block: i64,
    pub price_scale: i32,
    pub quantity_scale: i32,
    pub data: Vec<u8>,
    pub candle_count: i32,
    pub updated_at: CqlTimestamp,
}

/// Bound values of the index write (`INSERT INTO candle_block_index …`).
#[derive(Clone, Debug, PartialEq, Eq, SerializeRow)]
pub struct IndexRow {
    pub symbol: String,
    pub interval: String,
    pub block: i64,
    pub candle_count: i32,
    pub updated_at: CqlTimestamp,
}

/// Bound values selecting one block partition.
#[derive(Clone, Debug, PartialEq, Eq, SerializeRow)]
pub struct PartitionKey {
    pub symbol: String,
    pub interval: String,
    pub block: i64,
}

/// Bound values deleting the row of one scale pair of a block (when all its
/// candles moved to another scale pair).
#[derive(Clone, Debug, PartialEq, Eq, SerializeRow)]
pub struct ScaleRowKey {
    pub symbol: String,
    pub interval: String,
    pub block: i64,
    pub price_scale: i32,
    pub quantity_scale: i32,
}

/// Bound values of the index range read (named markers `:first`, `:last`).
#[derive(Clone, Debug, PartialEq, Eq, SerializeRow)]
pub struct IndexRange {
    pub symbol: String,
    pub interval: String,
    pub first: i64,
    pub last: i64,
}

/// A row of `SELECT price_scale, quantity_scale, data FROM candle_blocks`.
#[derive(Clone, Debug, PartialEq, Eq, DeserializeRow)]
pub struct StoredBlockRow {
    pub price_scale: i32,
    pub quantity_scale: i32,
    pub data: Vec<u8>,
}

/// The text kept in the `interval` column ("1m", "4h", "1M").
pub fn interval_text(interval: Interval) -> String {
    interval.to_string()
}

fn scale_to_cql(what: &str, key: &BlockKey, scale: u32) -> Result<i32, StoreError> {
    i32::try_from(scale).map_err(|_| {
        StoreError::Corrupt(format!(
            "{} {} block {}: {what} {scale} does not fit a CQL int",
            key.symbol, key.interval, key.block
        ))
    })
}

/// The partition key values of `key`.
pub fn partition_key(key: &BlockKey) -> PartitionKey {
    PartitionKey {
        symbol: key.symbol.clone(),
        interval: interval_text(key.interval),
        block: key.block,
    }
}

/// The bound values of writing `block` as the row of its scale pair in the
/// partition of `key`.
pub fn block_row(
    key: &BlockKey,
    block: &Block,
    updated_at: CqlTimestamp,
) -> Result<BlockRow, StoreError> {
    let data = blocks::encode(block).map_err(|e| {
        StoreError::Corrupt(format!(
            "{} {} block {}: cannot encode: {e}",
            key.symbol, key.interval, key.block
        ))
    })?;
    Ok(BlockRow {
        symbol: key.symbol.clone(),
        interval: interval_text(key.interval),
        block: key.block,
        price_scale: scale_to_cql("price_scale", key, block.price_scale)?,
        quantity_scale: scale_to_cql("quantity_scale", key, block.quantity_scale)?,
        data,
        candle_count: candle_count(key, block.candles.len())?,
        updated_at,
    })
}

fn candle_count(key: &BlockKey, n: usize) -> Result<i32, StoreError> {
    i32::try_from(n).map_err(|_| {
        StoreError::Corrupt(format!(
            "{} {} block {}: {n} candles",
            key.symbol, key.interval, key.block
        ))
    })
}

/// The bound values of the index row of `key` holding `candles` candles.
pub fn index_row(
    key: &BlockKey,
    candles: usize,
    updated_at: CqlTimestamp,
) -> Result<IndexRow, StoreError> {
    Ok(IndexRow {
        symbol: key.symbol.clone(),
        interval: interval_text(key.interval),
        block: key.block,
        candle_count: candle_count(key, candles)?,
        updated_at,
    })
}

/// The key of the row of one scale pair of `key`.
pub fn scale_row_key(
    key: &BlockKey,
    price_scale: u32,
    quantity_scale: u32,
) -> Result<ScaleRowKey, StoreError> {
    Ok(ScaleRowKey {
        symbol: key.symbol.clone(),
        interval: interval_text(key.interval),
        block: key.block,
        price_scale: scale_to_cql("price_scale", key, price_scale)?,
        quantity_scale: scale_to_cql("quantity_scale", key, quantity_scale)?,
    })
}

/// Decodes a stored row, checking that the blob agrees with its key columns.
pub fn decode_row(key: &BlockKey, row: &StoredBlockRow) -> Result<Block, StoreError> {
    let corrupt = |what: String| {
        StoreError::Corrupt(format!(
            "{} {} block {}: {what}",
            key.symbol, key.interval, key.block
        ))
    };
    let block = blocks::decode(&row.data).map_err(|e| corrupt(format!("cannot decode: {e}")))?;
    let scales = (
        i64::from(block.price_scale),
        i64::from(block.quantity_scale),
    );
    if scales != (i64::from(row.price_scale), i64::from(row.quantity_scale)) {
        return Err(corrupt(format!(
            "blob scales {scales:?} differ from the row's ({}, {})",
            row.price_scale, row.quantity_scale
        )));
    }
    Ok(block)
}

pub fn to_block_candle(c: &StoredCandle) -> BlockCandle {
    c.to_block()
}

/// A stored candle of block `key`; symbol and interval come from the key,
/// the scales from the block.
pub fn to_stored(key: &BlockKey, block: &Block, c: &BlockCandle) -> StoredCandle {
    StoredCandle::from_block(
        &key.symbol,
        key.interval,
        block.price_scale,
        block.quantity_scale,
        c,
    )
}

/// The candles of the rows of one block partition, oldest first.
pub fn block_candles(key: &BlockKey, rows: &[Block]) -> Vec<StoredCandle> {
    let mut out: Vec<StoredCandle> = rows
        .iter()
        .flat_map(|b| b.candles.iter().map(move |c| to_stored(key, b, c)))
        .collect();
    out.sort_by_key(|c| c.open_ns);
    out
}

pub use tickmesh_history::group_by_block;

/// The block ids that can hold candles opening in `[from_ns, to_ns)`, first
/// and last inclusive; `None` when the range is empty.
pub fn block_range(interval: Interval, from_ns: i64, to_ns: i64) -> Option<(i64, i64)> {
    // `to_ns > from_ns >= i64::MIN`, so `to_ns - 1` cannot overflow.
    (from_ns < to_ns).then(|| (block_id(interval, from_ns), block_id(interval, to_ns - 1)))
}

/// What an upsert does to one block partition.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct BlockPlan {
    /// Rows to write, one per scale pair that still has candles.
    pub write: Vec<Block>,
    /// Scale pairs whose rows lost all their candles (to another scale pair).
    pub delete: Vec<(u32, u32)>,
}

impl BlockPlan {
    /// Candles in the block after the update.
    pub fn candle_count(&self) -> usize {
        self.write.iter().map(|b| b.candles.len()).sum()
    }
}

/// Merges `new` candles (all of one block; the last of equal open times wins)
/// into the `existing` rows of the block. A candle replaces the candle with the
/// same open time whatever its scales; a block row holds one scale pair, so a
/// candle published at other scales moves to (or creates) that pair's row.
pub fn plan_block_update(existing: Vec<Block>, new: &[&StoredCandle]) -> BlockPlan {
    let mut latest: BTreeMap<i64, &StoredCandle> = BTreeMap::new();
    for c in new {
        latest.insert(c.open_ns, c);
    }
    let mut incoming: BTreeMap<(u32, u32), Vec<BlockCandle>> = BTreeMap::new();
    for c in latest.values() {
        // Sorted by open time, as `merge` expects.
        incoming
            .entry((c.price_scale, c.quantity_scale))
            .or_default()
            .push(to_block_candle(c));
    }
    let mut rows: BTreeMap<(u32, u32), Block> = existing
        .into_iter()
        .map(|b| ((b.price_scale, b.quantity_scale), b))
        .collect();
    let existed: BTreeSet<(u32, u32)> = rows.keys().copied().collect();
    for (scales, block) in rows.iter_mut() {
        block.candles.retain(|c| match latest.get(&c.open_ns) {
            Some(n) => (n.price_scale, n.quantity_scale) == *scales,
            None => true,
        });
    }
    for (scales, candles) in incoming {
        let block = rows.entry(scales).or_insert_with(|| Block {
            price_scale: scales.0,
            quantity_scale: scales.1,
            candles: Vec::new(),
        });
        blocks::merge(&mut block.candles, &candles);
    }
    // Every non-empty row is written (the whole block, normally one row):
    // writes are idempotent and a block of several scale pairs is rare.
    let mut plan = BlockPlan::default();
    for (scales, block) in rows {
        if !block.candles.is_empty() {
            plan.write.push(block);
        } else if existed.contains(&scales) {
            plan.delete.push(scales);
        }
    }
    plan
}

#[cfg(test)]
mod tests {
    use super::*;
    use tickmesh_history::block_span;
    use tickmesh_history::conformance::candle;

    const MINUTE_NS: i64 = 60_000_000_000;
    const DAY_NS: i64 = 86_400_000_000_000;

    fn iv(text: &str) -> Interval {
        Interval::parse(text).expect("interval")
    }

    fn key(symbol: &str, interval: &str, block: i64) -> BlockKey {
        BlockKey {
            symbol: symbol.into(),
            interval: iv(interval),
            block,
        }
    }

    fn sample_block() -> Block {
        let c = |i: i64| to_block_candle(&candle("BTCUSDT", "1m", i, MINUTE_NS));
        Block {
            price_scale: 2,
            quantity_scale: 8,
            candles: vec![c(0), c(1), c(2)],
        }
    }

    #[test]
    fn block_row_values() {
        let k = key("BTCUSDT", "1m", 19_782);
        let block = sample_block();
        let row = block_row(&k, &block, CqlTimestamp(1_709_161_200_123)).expect("row");
        assert_eq!(row.symbol, "BTCUSDT");
        assert_eq!(row.interval, "1m");
        assert_eq!(row.block, 19_782);
        assert_eq!(row.price_scale, 2);
        assert_eq!(row.quantity_scale, 8);
        assert_eq!(row.candle_count, 3);
        assert_eq!(row.updated_at, CqlTimestamp(1_709_161_200_123));
        assert_eq!(
            row.data,
            blocks::encode(&block).expect("encode"),
            "data is the encoded block"
        );
        assert_eq!(
            blocks::decode(&row.data).expect("decode"),
            block,
            "and decodes back"
        );
        let stored = StoredBlockRow {
            price_scale: 2,
            quantity_scale: 8,
            data: row.data.clone(),
        };
        assert_eq!(decode_row(&k, &stored).expect("decode row"), block);
        let wrong = StoredBlockRow {
            price_scale: 3,
            ..stored
        };
        assert!(
            matches!(decode_row(&k, &wrong), Err(StoreError::Corrupt(_))),
            "scales are checked"
        );
        let garbage = StoredBlockRow {
            price_scale: 2,
            quantity_scale: 8,
            data: vec![1, 2, 3],
        };
        assert!(matches!(
            decode_row(&k, &garbage),
            Err(StoreError::Corrupt(_))
        ));
    }

    #[test]
    fn other_row_values() {
        let k = key("ETH-USD", "4h", -3);
        let index = index_row(&k, 6, CqlTimestamp(5)).expect("index");
        assert_eq!(
            index,
            IndexRow {
                symbol: "ETH-USD".into(),
                interval: "4h".into(),
                block: -3,
                candle_count: 6,
                updated_at: CqlTimestamp(5)
            }
        );
        assert_eq!(
            partition_key(&key("X", "1M", 0)),
            PartitionKey {
                symbol: "X".into(),
                interval: "1M".into(),
                block: 0
            }
        );
        assert_eq!(scale_row_key(&k, 18, 0).expect("key").price_scale, 18);
        let huge = Block {
            price_scale: u32::MAX,
            ..sample_block()
        };
        assert!(
            block_row(&k, &huge, CqlTimestamp(0)).is_err(),
            "scales beyond a CQL int are refused"
        );
    }

    #[test]
    fn candle_conversion_round_trips() {
        let c = candle("SOLUSDT", "1h", 7, 60 * MINUTE_NS);
        let k = BlockKey::of(&c);
        let block = Block {
            price_scale: c.price_scale,
            quantity_scale: c.quantity_scale,
            candles: vec![],
        };
        assert_eq!(to_stored(&k, &block, &to_block_candle(&c)), c);
    }

    #[test]
    fn grouping_follows_block_id_across_a_utc_day() {
        // 2024-02-28T23:58Z .. 2024-02-29T00:02Z: the day boundary splits the block.
        let t0 = 1_709_164_680_000_000_000;
        assert_eq!(
            t0 % DAY_NS,
            23 * 3_600_000_000_000 + 58 * MINUTE_NS,
            "starts at 23:58 UTC"
        );
        let mut candles = Vec::new();
        for i in 0..4 {
            let mut c = candle("A", "1m", 0, MINUTE_NS);
            c.open_ns = t0 + i * MINUTE_NS;
            c.close_ns = c.open_ns + MINUTE_NS;
            candles.push(c);
        }
        let mut hourly = candle("A", "1h", 0, 60 * MINUTE_NS);
        hourly.open_ns = t0 - 58 * MINUTE_NS; // 23:00Z
        candles.push(hourly);
        candles.push(candle("B", "1m", 0, MINUTE_NS));
        let groups = group_by_block(&candles);
        let day = t0.div_euclid(DAY_NS);
        let keys: Vec<_> = groups.keys().cloned().collect();
        assert_eq!(
            keys,
            vec![
                key("A", "1m", day),
                key("A", "1m", day + 1),
                key("A", "1h", day),
                key("B", "1m", day)
            ]
        );
        assert_eq!(groups[&key("A", "1m", day)].len(), 2, "23:58 and 23:59");
        assert_eq!(groups[&key("A", "1m", day + 1)].len(), 2, "00:00 and 00:01");
        for (k, cs) in &groups {
            for c in cs {
                assert_eq!(
                    block_id(c.interval, c.open_ns),
                    k.block,
                    "each candle lands in its block_id"
                );
                assert_eq!((&c.symbol, c.interval), (&k.symbol, k.interval));
            }
        }
        // Within a block, input order is kept.
        let mut pre_epoch = candle("P", "1d", 0, DAY_NS);
        pre_epoch.open_ns = -DAY_NS; // 1969-12-31: block -1, not 0
        assert_eq!(BlockKey::of(&pre_epoch).block, -1);
    }

    #[test]
    fn ranges_to_block_ids() {
        let m = iv("1m");
        assert_eq!(block_range(m, 0, DAY_NS), Some((0, 0)), "to is exclusive");
        assert_eq!(block_range(m, 0, DAY_NS + 1), Some((0, 1)));
        assert_eq!(block_range(m, -1, 1), Some((-1, 0)));
        assert_eq!(block_range(m, 5, 5), None, "empty [from, from)");
        assert_eq!(block_range(m, 6, 5), None);
        let span = block_span(m);
        assert_eq!(
            block_range(m, i64::MIN, i64::MAX),
            Some((i64::MIN.div_euclid(span), (i64::MAX - 1).div_euclid(span)))
        );
        assert_eq!(
            block_range(m, i64::MIN, i64::MIN + 1),
            Some((i64::MIN.div_euclid(span), i64::MIN.div_euclid(span)))
        );
        assert_eq!(
            block_range(m, i64::MAX - 1, i64::MAX),
            Some((
                (i64::MAX - 1).div_euclid(span),
                (i64::MAX - 1).div_euclid(span)
            ))
        );
        assert_eq!(block_range(m, i64::MAX, i64::MAX), None);
        let y = iv("1Y");
        let (first, last) = block_range(y, i64::MIN, i64::MAX).expect("range");
        assert!(
            first < 0 && last > 0 && last - first < 10,
            "a century per block: {first}..{last}"
        );
    }

    #[test]
    fn plans_merge_replace_and_move_between_scales() {
        let k_candles: Vec<StoredCandle> =
            (0..5).map(|i| candle("S", "1m", i, MINUTE_NS)).collect();
        // A fresh block: one row with all the candles, in order, no deletes.
        let refs: Vec<&StoredCandle> = k_candles.iter().rev().collect();
        let plan = plan_block_update(Vec::new(), &refs);
        assert_eq!(plan.write.len(), 1);
        assert!(plan.delete.is_empty());
        assert_eq!(
            plan.write[0].candles,
            k_candles.iter().map(to_block_candle).collect::<Vec<_>>()
        );
        assert_eq!(
            (plan.write[0].price_scale, plan.write[0].quantity_scale),
            (2, 5)
        );
        // A correction replaces by open time; the last of duplicates wins.
        let mut fix = k_candles[2].clone();
        fix.high += 10;
        fix.revision += 1;
        let mut fix2 = fix.clone();
        fix2.high += 1;
        let plan2 = plan_block_update(plan.write.clone(), &[&fix, &fix2]);
        assert_eq!(plan2.write.len(), 1);
        assert_eq!(plan2.write[0].candles.len(), 5);
        assert_eq!(plan2.write[0].candles[2], to_block_candle(&fix2));
        // Other values at a revision not above the stored one (rebuilt after
        // Redis lost writes) are stored one revision above it.
        let mut rebuilt = k_candles[3].clone();
        rebuilt.low -= 1;
        let plan3 = plan_block_update(plan2.write.clone(), &[&rebuilt]);
        let mut expected = to_block_candle(&rebuilt);
        expected.revision = k_candles[3].revision + 1;
        assert_eq!(plan3.write[0].candles[3], expected);
        // The same candle at other scales moves rows; an emptied row is deleted.
        let only: Vec<&StoredCandle> = vec![&k_candles[0]];
        let one = plan_block_update(Vec::new(), &only);
        let mut rescaled = k_candles[0].clone();
        rescaled.price_scale = 18;
        rescaled.quantity_scale = 0;
        let moved = plan_block_update(one.write, &[&rescaled]);
        assert_eq!(moved.delete, vec![(2, 5)]);
        assert_eq!(moved.write.len(), 1);
        assert_eq!(
            (moved.write[0].price_scale, moved.write[0].quantity_scale),
            (18, 0)
        );
        assert_eq!(moved.candle_count(), 1);
        // Mixed scales in one upsert: two rows, read back in open-time order.
        let mut other = k_candles[1].clone();
        other.price_scale = 18;
        let mixed = plan_block_update(Vec::new(), &[&other, &k_candles[0], &k_candles[2]]);
        assert_eq!(mixed.write.len(), 2);
        assert_eq!(mixed.candle_count(), 3);
        let k = BlockKey::of(&k_candles[0]);
        assert_eq!(
            block_candles(&k, &mixed.write),
            vec![k_candles[0].clone(), other, k_candles[2].clone()]
        );
    }
}
