//! The `CandleStore` trait and its value types.

use async_trait::async_trait;
use tickmesh_calendar::{Interval, Unit};

/// A closed candle as the history store keeps it. Prices and quantities are
/// scaled integers at `price_scale` / `quantity_scale`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StoredCandle {
    pub symbol: String,
    pub interval: Interval,
    pub open_ns: i64,
    pub close_ns: i64,
    pub open: i64,
    pub high: i64,
    pub low: i64,
    pub close: i64,
    pub volume: i128,
    pub quote_volume: i128,
    pub trade_count: u64,
    pub revision: u64,
    pub price_scale: u32,
    pub quantity_scale: u32,
}

impl StoredCandle {
    /// The candle as a row of a compressed block (series and scales are the block's).
    pub fn to_block(&self) -> tickmesh_candle_blocks::BlockCandle {
        tickmesh_candle_blocks::BlockCandle {
            open_ns: self.open_ns,
            close_ns: self.close_ns,
            open: self.open,
            high: self.high,
            low: self.low,
            close: self.close,
            volume: self.volume,
            quote_volume: self.quote_volume,
            trade_count: self.trade_count,
            revision: self.revision,
        }
    }

    /// A candle of a block of `symbol` / `interval` at the block's scales.
    pub fn from_block(
        symbol: &str,
        interval: Interval,
        price_scale: u32,
        quantity_scale: u32,
        c: &tickmesh_candle_blocks::BlockCandle,
    ) -> StoredCandle {
        StoredCandle {
            symbol: symbol.to_string(),
            interval,
            open_ns: c.open_ns,
            close_ns: c.close_ns,
            open: c.open,
            high: c.high,
            low: c.low,
            close: c.close,
            volume: c.volume,
            quote_volume: c.quote_volume,
            trade_count: c.trade_count,
            revision: c.revision,
            price_scale,
            quantity_scale,
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The backend cannot be reached or refused the write; retry later.
    #[error("history store unavailable: {0}")]
    Unavailable(String),
    /// Stored data could not be read back.
    #[error("history store data is corrupt: {0}")]
    Corrupt(String),
}

/// Which block a candle lives in: symbol, interval and period number.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct BlockKey {
    pub symbol: String,
    pub interval: Interval,
    pub block: i64,
}

impl BlockKey {
    /// The block a candle lives in.
    pub fn of(c: &StoredCandle) -> BlockKey {
        BlockKey {
            symbol: c.symbol.clone(),
            interval: c.interval,
            block: block_id(c.interval, c.open_ns),
        }
    }
}

/// Groups candles by the block they live in, each group sorted by open time,
/// the last write of an open time winning.
pub fn group_by_block(
    candles: &[StoredCandle],
) -> std::collections::BTreeMap<BlockKey, Vec<&StoredCandle>> {
    let mut groups: std::collections::BTreeMap<
        BlockKey,
        std::collections::BTreeMap<i64, &StoredCandle>,
    > = std::collections::BTreeMap::new();
    for c in candles {
        groups
            .entry(BlockKey::of(c))
            .or_default()
            .insert(c.open_ns, c);
    }
    groups
        .into_iter()
        .map(|(k, v)| (k, v.into_values().collect()))
        .collect()
}

const DAY_NS: i64 = 86_400_000_000_000;

/// Length of a block period in ns: a UTC day for minute and hour candles, a
/// (365-day) year for day and week candles, a hundred years for months and
/// years. Blocks stay small (a day of 1m candles is 1,440) and partitions
/// bounded.
pub fn block_span(interval: Interval) -> i64 {
    match interval.unit {
        Unit::Minute | Unit::Hour => DAY_NS,
        Unit::Day | Unit::Week => 365 * DAY_NS,
        Unit::Month | Unit::Year => 36_500 * DAY_NS,
    }
}

/// The block period of a candle opening at `open_ns`.
pub fn block_id(interval: Interval, open_ns: i64) -> i64 {
    open_ns.div_euclid(block_span(interval))
}

/// Long-term storage of closed candles.
///
/// Writes are idempotent upserts keyed by (symbol, interval, open time): writing
/// a candle again (a late correction, a retried flush) replaces it. Reads are
/// by open time.
#[async_trait]
pub trait CandleStore: Send + Sync {
    /// Stores candles (any mix of symbols and intervals), replacing candles
    /// with the same key. All or nothing per block.
    async fn upsert(&self, candles: &[StoredCandle]) -> Result<(), StoreError>;

    /// Up to `limit` candles of `symbol` / `interval` with `from_ns <= open_ns
    /// < to_ns`, oldest first or newest first.
    async fn range(
        &self,
        symbol: &str,
        interval: Interval,
        from_ns: i64,
        to_ns: i64,
        newest_first: bool,
        limit: usize,
    ) -> Result<Vec<StoredCandle>, StoreError>;

    /// Bytes the store uses on disk (or an estimate), for the size benchmark.
    async fn size_on_disk(&self) -> Result<u64, StoreError>;

    /// A short name for logs ("embedded", "scylla").
    fn name(&self) -> &'static str;
}
