//! Compressed column blocks of candles (OHLCV bars) for long-term history.
//!
//! One block holds the candles of one symbol × interval × period (e.g. one
//! UTC day of 1m candles, up to 1,440). [`encode`] and [`decode`] round trip
//! every field exactly, whatever its value; [`merge`] upserts late
//! corrections; [`synthetic`] makes a realistic test year and [`measure`]
//! reports its size as daily blocks.
//!
//! # Byte format, version 1
//!
//! ```text
//! u8       format version = 1
//! varint   total length of the block in bytes, this field and the CRC included
//! varint   price_scale
//! varint   quantity_scale
//! varint   count (number of candles, ≤ MAX_CANDLES)
//! if count > 0:
//!   varint zigzag(open_ns of the first candle)                     "base"
//!   varint unit (i64 ≥ 0): the most common close_ns − open_ns, 0 if ≤ 0
//!   varint ratio (u64): ⌊2³² × Σ trade_count / Σ volume⌋ over the candles
//!          with volume > 0, saturating, 0 without volume
//!   varint length Z of the zstd frame
//!   Z bytes  one zstd frame (level 3, window ≤ 4 MiB) holding the HIGH
//!            PARTS: one LEB128 varint per value, column after column in the
//!            order below, count values each
//!   rest     the LOW BITS: bit-packed, least significant bit first, column
//!            after column in the same order, zero-padded to a byte
//! u32 LE   CRC-32 (IEEE) of every byte before it
//! ```
//!
//! Base, unit and ratio are the encoder's choices (the decoder just uses
//! them); they only make residuals small.
//!
//! Varints are unsigned LEB128 (7 bits a byte, low groups first, shortest
//! form only), zigzag maps signed to unsigned (0, −1, 1, −2 … → 0, 1, 2, 3 …).
//!
//! ## Columns
//!
//! Each candle contributes one residual to each column; all arithmetic wraps
//! (i64 for times and prices, i128 for volumes, u64 for counts), so any value
//! round trips and typical values give small residuals. `prev` is the previous
//! candle (for the first: close_ns = base, close = 0).
//!
//! | # | column     | residual                                                      |
//! |---|------------|---------------------------------------------------------------|
//! | 0 | gap        | g = open_ns − prev.close_ns: zigzag(g / unit) << 1 if unit > 0 divides g, else zigzag(g) << 1 \| 1 |
//! | 1 | duration   | zigzag(close_ns − open_ns − unit)                             |
//! | 2 | open       | zigzag(open − prev.close)                                     |
//! | 3 | close      | zigzag(close − open)                                          |
//! | 4 | high       | high − max(open, close), as u64                               |
//! | 5 | low        | min(open, close) − low, as u64                                |
//! | 6 | volume     | volume, as u128                                               |
//! | 7 | quote      | zigzag(quote_volume − volume × ⌊(high + low) / 2⌋)            |
//! | 8 | trades     | zigzag(trade_count − p), p = min(⌊volume × ratio / 2³²⌋, u64::MAX) (saturating), 0 if volume ≤ 0 |
//! | 9 | revision   | revision − 1, as u64                                          |
//!
//! ## High part and low bits
//!
//! Each residual `v` is split at `k` bits: `v >> k` goes to the high parts,
//! the `k` low bits to the low bits. `k` = clamp(⌊e / 16⌋ − 3, 0, 127), where
//! `e` is an expected bit length in 1/16 bits learned from the values already
//! coded in the column (`bits(x)` = number of significant bits, 0 for 0; `>>`
//! is an arithmetic shift, rounding down; `a` starts at 0 and `n` counts the
//! values coded so far in the column):
//!
//! * columns 0–6 and 9: `e` = a; then a += (16·bits(v) − a) >> min(n, 3);
//! * column 7 with c = bits(volume as u128) + bits((high − low) as u64), and
//!   column 8 with c = bits(predicted trades): `e` = 16c + a; then
//!   a += (16·bits(v) − 16c − a) >> min(n, 4).
//!
//! The low bits of prices and volumes are noise no compressor can shrink;
//! keeping them out of zstd leaves it the skewed, compressible high parts.
//! The decoder reads columns 0–6, rebuilds times, prices and volume, then
//! reads 7–9 using those as context.
//!
//! ## Checks on decode
//!
//! Unknown version → `UnknownVersion`; fewer bytes than the length field →
//! `Truncated`; CRC mismatch → `BadChecksum`; anything inconsistent after that
//! (trailing bytes, non-canonical varints, values that do not fit, columns
//! that do not use up exactly the frame and the low bits, times not strictly
//! increasing, a zstd error, a frame larger than count × 190 bytes) →
//! `Malformed`. Allocations are bounded by what the input actually yields.
//!
//! # Size
//!
//! [`synthetic::year_of_minutes`] (random walk at ~0.05% per minute, 0.7
//! BTC-like volume per minute at scale 5, quote volume at scale 7) stored as
//! one block per UTC day takes 11.6 bytes per candle (JSON documents: 254).
//! Where the bytes go, per candle: quote volume residual 3.4, volume 2.2,
//! close − open 1.7, high and low 1.5 each, trade count 1.0, open 0.3, the
//! rest 0.05. That is within ~7% of the order-0 entropy of the residuals
//! (≈ 10.9 bytes): the data itself carries that much, mostly because the
//! VWAP inside the range (quote volume / volume) is fresh information at
//! full precision. Small blocks pay for their own zstd tables: the same 60
//! days as one block take 11.2 bytes per candle instead of 11.6.
//!
//! ```
//! use tickmesh_candle_blocks::{Block, BlockCandle, decode, encode, merge};
//!
//! let minute = 60_000_000_000;
//! let candle = |open_ns: i64, close: i64| BlockCandle {
//!     open_ns,
//!     close_ns: open_ns + minute,
//!     open: 6_700_000,
//!     high: 6_701_000,
//!     low: 6_699_500,
//!     close,
//!     volume: 150_000,
//!     quote_volume: 10_050_123_456_789,
//!     trade_count: 120,
//!     revision: 1,
//! };
//! let mut block = Block { price_scale: 2, quantity_scale: 5, candles: vec![candle(0, 6_700_100)] };
//! merge(&mut block.candles, &[candle(minute, 6_700_200)]);
//! let bytes = encode(&block)?;
//! assert_eq!(decode(&bytes)?, block);
//! # Ok::<(), tickmesh_candle_blocks::BlockError>(())
//! ```

mod bits;
mod checksum;
mod columns;
mod decode;
mod encode;
mod error;
pub mod measure;
mod merge;
mod split;
pub mod synthetic;
mod varint;

pub use decode::decode;
pub use encode::encode;
pub use error::BlockError;
pub use merge::merge;

/// The version byte written by [`encode`], the only one [`decode`] accepts.
pub const FORMAT_VERSION: u8 = 1;
/// Most candles in one block.
pub const MAX_CANDLES: usize = 1 << 24;
/// zstd level for the high parts. Levels 1, 3, 9 and 19 all land within 0.5%
/// of each other on the synthetic year (the high parts leave zstd little to
/// find beyond Huffman coding), and 3 encodes 4× faster than 19.
const ZSTD_LEVEL: i32 = 3;
/// zstd window (2^22 = 4 MiB); the decoder refuses frames needing more.
const ZSTD_WINDOW_LOG: u32 = 22;

/// One candle as stored in a block. Prices are integers at the block's
/// `price_scale`, volumes at `quantity_scale`, quote volume at the sum of both.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BlockCandle {
    /// Open time, ns since the Unix epoch (UTC); strictly increasing within a block.
    pub open_ns: i64,
    /// Close time; usually `open_ns` + the interval.
    pub close_ns: i64,
    pub open: i64,
    pub high: i64,
    pub low: i64,
    pub close: i64,
    /// Sum of traded quantities.
    pub volume: i128,
    /// Sum of price × quantity.
    pub quote_volume: i128,
    pub trade_count: u64,
    pub revision: u64,
}

/// The candles of one symbol × interval × period.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Block {
    pub price_scale: u32,
    pub quantity_scale: u32,
    pub candles: Vec<BlockCandle>,
}
