//! Format version 1, read for the blocks already stored (the encoder writes
//! version 2). After the shared header fields (see the crate docs) the body
//! of a non-empty block is:
//!
//! ```text
//! varint   length Z of the zstd frame
//! Z bytes  one zstd frame (level 3, window ≤ 4 MiB) holding the HIGH
//!          PARTS: one LEB128 varint per value, column after column in the
//!          order below, count values each
//! rest     the LOW BITS: bit-packed, least significant bit first, column
//!          after column in the same order, zero-padded to a byte
//! ```
//!
//! ## Columns
//!
//! Each candle contributes one residual to each column; all arithmetic wraps
//! (i64 for times and prices, i128 for volumes, u64 for counts). `prev` is
//! the previous candle (for the first: close_ns = base, close = 0).
//!
//! | # | column     | residual                                                      |
//! |---|------------|---------------------------------------------------------------|
//! | 0 | gap        | the gap code of open_ns − prev.close_ns (see the crate docs)  |
//! | 1 | duration   | zigzag(close_ns − open_ns − unit)                             |
//! | 2 | open       | zigzag(open − prev.close)                                     |
//! | 3 | close      | zigzag(close − open)                                          |
//! | 4 | high       | high − max(open, close), as u64                               |
//! | 5 | low        | min(open, close) − low, as u64                                |
//! | 6 | volume     | volume, as u128                                               |
//! | 7 | quote      | zigzag(quote_volume − volume × ⌊(high + low) / 2⌋)            |
//! | 8 | trades     | zigzag(trade_count − predicted trades)                        |
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
//! The decoder reads columns 0–6, rebuilds times, prices and volume, then
//! reads 7–9 using those as context. Checks: non-canonical varints, values
//! that do not fit, columns that do not use up exactly the frame and the low
//! bits, a zstd error or a frame larger than count × 190 bytes are
//! `Malformed`.

mod columns;
#[cfg(test)]
mod encode;
mod split;

use std::io::Read;

use crate::bits::BitReader;
use crate::error::malformed;
use crate::params::{Params, predicted_trades};
use crate::varint;
use crate::{BlockCandle, BlockError};
use split::{bit_len, get_column};

/// zstd window (2^22 = 4 MiB); the decoder refuses frames needing more.
const ZSTD_WINDOW_LOG: u32 = 22;
/// Largest high-part stream a candle can produce: 10 varints of ≤ 19 bytes.
const MAX_HIGH_BYTES_PER_CANDLE: usize = columns::COUNT * 19;

/// Decodes the candles of a version-1 body, `r` positioned after the header
/// fields base, unit and ratio.
pub fn decode_candles(
    count: usize,
    params: &Params,
    r: &mut varint::Reader<'_>,
) -> Result<Vec<BlockCandle>, BlockError> {
    let frame_len = r
        .get()
        .and_then(|n| usize::try_from(n).ok())
        .ok_or_else(|| malformed("bad frame length field"))?;
    let frame = r
        .take(frame_len)
        .ok_or_else(|| malformed("frame longer than the block"))?;
    let low_bytes = r.take(r.remaining()).unwrap_or_default();

    let high_bytes = decompress(frame, count.saturating_mul(MAX_HIGH_BYTES_PER_CANDLE))?;
    if high_bytes.len() < count.saturating_mul(columns::COUNT) {
        return Err(malformed("high parts shorter than the candle count needs"));
    }
    read_candles(count, params, &high_bytes, low_bytes)
        .ok_or_else(|| malformed("column data inconsistent"))
}

fn read_candles(
    count: usize,
    params: &Params,
    high_bytes: &[u8],
    low_bytes: &[u8],
) -> Option<Vec<BlockCandle>> {
    let mut high = varint::Reader::new(high_bytes);
    let mut low = BitReader::new(low_bytes);
    let mut cols = Vec::with_capacity(columns::QUOTE);
    for _ in 0..columns::QUOTE {
        cols.push(get_column(count, |_| None, &mut high, &mut low)?);
    }
    let mut candles = columns::from_columns(&cols, params)?;
    let quote = get_column(
        count,
        |j| Some(columns::quote_context(&candles[j])),
        &mut high,
        &mut low,
    )?;
    columns::apply_quote(&mut candles, &quote);
    let trades = get_column(
        count,
        |j| Some(bit_len(u128::from(predicted_trades(&candles[j], params)))),
        &mut high,
        &mut low,
    )?;
    columns::apply_trades(&mut candles, &trades, params)?;
    let revision = get_column(count, |_| None, &mut high, &mut low)?;
    columns::apply_revision(&mut candles, &revision)?;
    (high.remaining() == 0 && low.finished_cleanly()).then_some(candles)
}

/// Decompresses one zstd frame of at most `limit` bytes. The output grows
/// with what the frame actually yields, never with what a header claims.
fn decompress(frame: &[u8], limit: usize) -> Result<Vec<u8>, BlockError> {
    let zstd_err = |e: std::io::Error| malformed(format!("zstd: {e}"));
    let mut decoder = zstd::stream::read::Decoder::with_buffer(frame).map_err(zstd_err)?;
    decoder.window_log_max(ZSTD_WINDOW_LOG).map_err(zstd_err)?;
    let mut out = Vec::new();
    decoder
        .single_frame()
        .take(limit as u64 + 1)
        .read_to_end(&mut out)
        .map_err(zstd_err)?;
    if out.len() > limit {
        return Err(malformed("zstd frame larger than the candle count allows"));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::decompress;
    use super::encode::{compress, encode};
    use crate::{Block, BlockCandle, decode, synthetic};

    const JAN_2024: i64 = 1_704_067_200_000_000_000;

    fn round_trip(candles: Vec<BlockCandle>) {
        let block = Block {
            price_scale: 2,
            quantity_scale: 5,
            candles,
        };
        let bytes = encode(&block).expect("encodes");
        assert_eq!(bytes[0], 1);
        assert_eq!(decode(&bytes), Ok(block));
    }

    #[test]
    fn version_1_blocks_still_decode() {
        round_trip(vec![]);
        round_trip(synthetic::days_of_minutes(5, JAN_2024, 2));
        let extreme = |open_ns: i64, v: i64, w: i128| BlockCandle {
            open_ns,
            close_ns: v,
            open: v,
            high: v.wrapping_neg(),
            low: v ^ 0x5555,
            close: !v,
            volume: w,
            quote_volume: w.wrapping_neg(),
            trade_count: v as u64,
            revision: !(v as u64),
        };
        round_trip(vec![
            extreme(i64::MIN, i64::MIN, i128::MIN),
            extreme(-1, 0, 0),
            extreme(0, i64::MAX, i128::MAX),
            extreme(i64::MAX, 1, -1),
        ]);
    }

    #[test]
    fn frames_beyond_the_window_and_the_limit() {
        // 6 MiB of varied bytes: more than the 4 MiB window.
        let data: Vec<u8> = (0..6u32 << 20)
            .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
            .collect();
        let frame = compress(&data).expect("compresses");
        assert_eq!(decompress(&frame, data.len()).expect("decompresses"), data);
        assert!(
            decompress(&frame, data.len() - 1).is_err(),
            "over the limit"
        );
        assert!(
            decompress(&frame[..frame.len() / 2], data.len()).is_err(),
            "cut frame"
        );
        assert!(decompress(b"not zstd", 100).is_err());
    }
}
