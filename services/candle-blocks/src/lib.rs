//! Compressed column blocks of candles (OHLCV bars) for long-term history.
//!
//! One block holds the candles of one symbol × interval × period (e.g. one
//! UTC day of 1m candles, up to 1,440). [`encode`] and [`decode`] round trip
//! every field exactly, whatever its value; [`merge`] upserts late
//! corrections; [`synthetic`] makes a realistic test year and [`measure`]
//! reports its size as daily blocks.
//!
//! # Byte format, version 2
//!
//! ```text
//! u8       format version = 2 (version 1, the zstd format, is still read: see `v1.rs`)
//! varint   total length of the block in bytes, this field and the CRC included
//! varint   price_scale
//! varint   quantity_scale
//! varint   count (number of candles, ≤ MAX_CANDLES)
//! if count > 0:
//!   varint zigzag(open_ns of the first candle)                     "base"
//!   varint unit (i64 ≥ 0): the most common close_ns − open_ns, 0 if ≤ 0
//!   varint ratio (u64): ⌊2³² × Σ trade_count / Σ volume⌋ over the candles
//!          with volume > 0, saturating, 0 without volume
//!   varint length R of the range-coded stream
//!   R bytes  the range-coded stream (below)
//!   rest     the RAW BITS: bit-packed, least significant bit first, in
//!            coding order, zero-padded to a byte
//! u32 LE   CRC-32 (IEEE) of every byte before it
//! ```
//!
//! Base, unit and ratio are the encoder's choices (the decoder just uses
//! them). Varints are unsigned LEB128 (7 bits a byte, low groups first,
//! shortest form only), zigzag maps signed to unsigned (0, −1, 1, −2 … → 0,
//! 1, 2, 3 …). Versions 1 and 2 share everything up to and including ratio.
//!
//! ## Range coder
//!
//! LZMA's binary range coder: 32-bit `range` (starts at 2³² − 1), carry
//! propagation through a cached byte, normalisation by 8 bits while
//! range < 2²⁴, a final flush of 5 bytes; the stream omits LZMA's first
//! byte (always 0), so the decoder starts by reading 4 bytes into `code`.
//! A decision with probability `p` of 0 (16 bits, see below) splits at
//! bound = (range >> 12) × max(1, p >> 4). The stream ends exactly where the
//! decoder's last read does (bytes past it would read as 0).
//!
//! Each adaptive decision has its own state (p, n), starting at (2¹⁵, 0).
//! After coding bit b: with r = ⌊2¹⁶ / (n + 2)⌋, p −= (p × r) >> 16 if b = 1,
//! else p += ((2¹⁶ − p) × r) >> 16; then n = min(n + 1, 126).
//!
//! ## Numbers
//!
//! `bits(v)` is the number of significant bits (0 for 0); `lg(v)` is log2 in
//! 1/16 bits: 0 for v ≤ 1, else 16 × (bits(v) − 1) + T[m], where m are the 4
//! bits below the leading 1 (padded with zeros) and T = [0, 1, 3, 4, 5, 6,
//! 7, 8, 9, 10, 11, 12, 13, 14, 15, 15]. `>>` on signed values rounds down.
//!
//! A **magnitude** v (u128) with expected log2 `e` (1/16 bits) in context
//! class k is coded with the tables of its field:
//!
//! 1. e' = clamp(e, 0, 2048), c = e' >> 4, q = (e' >> 2) & 3, n = bits(v),
//!    d = n − c. Decision S[k][q][0] = (d ≥ 0). If so, for j = 0..8:
//!    decision S[k][q][1 + j] = (d = j), stopping at the first 1; else for
//!    j = 0..20: decision S[k][q][9 + j] = (d = −1 − j), stopping at the
//!    first 1. If none is 1 (escape), n is coded as 8 decisions, most
//!    significant bit first, through a binary tree E[node] (node starts at
//!    1, then 2 × node + bit). n > 128 is invalid.
//! 2. If n ≥ 2: the bit below the leading 1 is decision
//!    M[q][clamp(n − c, −3, 3) + 3]; the remaining n − 2 low bits go to the
//!    raw bits as one (n − 2)-bit number.
//!
//! A **signed** value x (i128) in class k: decision G[k] = (x < 0), then the
//! magnitude |x| in class k (|x| = 0 with x < 0 is invalid). A **flagged**
//! value: decision Z[k] = (x = 0), and if not, the rest (a non-zero value
//! coded as 0 is invalid).
//!
//! An **average** A (1/16 bits) starts at 0 with n = 0 and weight shift s:
//! A += (x − A) >> min(n, s); n = min(n + 1, s).
//!
//! ## Candles
//!
//! Candle after candle, fields in this order; all arithmetic wraps (i64 for
//! times and prices, i128 for volumes, u64 for counts), so any candle round
//! trips; `prev` is the previous candle (for the first: close_ns = base,
//! close = 0, its gap code 0). Averages: gap, duration, revision s = 3;
//! open[2], range, volume s = 4; body, high, quote, trades biases s = 5.
//!
//! | field    | value coded | how (class; expected log2 e) | then |
//! |----------|-------------|------------------------------|------|
//! | gap      | g = gap code of open_ns − prev.close_ns: zigzag(gap / unit) << 1 if unit > 0 divides it, else zigzag(gap) << 1 \| 1 | flagged magnitude (Z class: prev g ≠ 0; class 0; e = A_gap) | A_gap ← lg(g) if g ≠ 0 |
//! | duration | zigzag(close_ns − open_ns − unit) | flagged magnitude (class 0; A_dur) | A_dur ← lg if ≠ 0 |
//! | revision | revision − 1 | flagged magnitude (class 0; A_rev) | A_rev ← lg if ≠ 0 |
//! | open     | j = open − prev.close | flagged signed, class h = (g ≠ 0); e = A_open[h] | A_open[h] ← lg\|j\| if j ≠ 0 |
//! | range    | R = high − low, as u64 | magnitude (class 0; e = A_range) | (A_range updated after quote) |
//! | body     | B = close − open | signed (class 0; e = lg R + A_body) | A_body ← lg\|B\| − lg R |
//! | high     | H = high − max(open, close), as u64; with slack = R − \|B\| (u64) | flagged magnitude (Z class: slack = 0; class 0; e = lg slack + A_high) | A_high ← lg H − lg slack if H ≠ 0; low = high − R |
//! | volume   | V = volume, as u128 | magnitude, class 0 / 1 / 2 for lg R − A_range < −8 / within ±8 / > 8; e = A_vol | A_vol ← lg V |
//! | quote    | Q = quote_volume − V × ⌊(high + low) / 2⌋ | signed (class 0; e = lg V + lg R + A_quote) | A_quote ← lg\|Q\| − lg V − lg R if Q ≠ 0; then A_range ← lg R |
//! | trades   | T = trade_count − P, as i64; P = min(⌊V × ratio / 2³²⌋, u64::MAX), 0 if volume ≤ 0 | signed (class 0; e = lg P + A_trades) | A_trades ← lg\|T\| − lg P if T ≠ 0 |
//!
//! Each field has its own tables (Z, G, S, M, E). After the last candle come
//! 16 bits 0xC0DE, most significant first, each split at range >> 1
//! (probability 1/2, not adaptive): a decoder that went astray rarely reads
//! them back.
//!
//! Range first, then the body inside it, then where the body sits: prices
//! come out as the volatility (range), how much of it the minute kept
//! (body), and a split of what is left. Volatility clusters, so the range is
//! predicted from its recent average, and everything after it is scaled by
//! it.
//!
//! ## Checks on decode
//!
//! Unknown version → `UnknownVersion`; fewer bytes than the length field →
//! `Truncated`; CRC mismatch → `BadChecksum`; anything inconsistent after that
//! (trailing bytes, non-canonical varints, values that do not fit their
//! field, a stream or raw bits not used up exactly, a missing end mark, times
//! not strictly increasing) → `Malformed`. Allocations are bounded by what
//! the input actually yields, and decoding stops as soon as the stream runs
//! dry.
//!
//! # Size
//!
//! [`synthetic::year_of_minutes`] (random walk at ~0.05% per minute, 0.7
//! BTC-like volume per minute at scale 5, quote volume at scale 7) stored as
//! one block per UTC day takes 10.97 bytes per candle (version 1: 11.56;
//! JSON documents: 254). Per candle: quote volume residual 3.29, volume
//! 2.16, body 1.63, range 1.54, high 1.20, trades 0.89, open 0.22, the rest
//! 0.01, headers and CRCs 0.02. The data carries nearly that much: the VWAP
//! inside the range (quote volume / volume) is fresh information at full
//! precision (about lg V + lg R − 0.75 bits for its spread of 0.14 × range),
//! the volume's own per-minute noise (σ ≈ 0.7 in log2) leaves ≈ 17 bits,
//! and the three prices of a random walk ≈ 3 × log2 σ + 1.3 bits.
//! `measure::field_breakdown` computes this table;
//! `cargo run --release -p tickmesh -- bench history` prints it for the year,
//! with encode and decode times.
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
mod decode;
mod encode;
mod error;
pub mod measure;
mod merge;
mod model;
mod params;
mod rc;
pub mod synthetic;
mod v1;
mod v2;
mod varint;

pub use decode::decode;
pub use encode::encode;
pub use error::BlockError;
pub use merge::merge;

/// The version byte written by [`encode`]; [`decode`] also reads version 1.
pub const FORMAT_VERSION: u8 = 2;
/// Most candles in one block.
pub const MAX_CANDLES: usize = 1 << 24;

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
