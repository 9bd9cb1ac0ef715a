//! Block reader (see the crate docs for the byte format). Every length and
//! count is checked against what the input can hold before anything is
//! allocated, and every arithmetic step is checked or wrapping, so no input
//! makes it panic.

use std::io::Read;

use crate::bits::BitReader;
use crate::checksum::crc32;
use crate::columns::{self, Params};
use crate::error::malformed;
use crate::split::{bit_len, get_column};
use crate::varint::{self, unzigzag64};
use crate::{Block, BlockError, FORMAT_VERSION, MAX_CANDLES, ZSTD_WINDOW_LOG};

/// Largest high-part stream a candle can produce: 10 varints of ≤ 19 bytes.
const MAX_HIGH_BYTES_PER_CANDLE: usize = columns::COUNT * 19;

/// Decodes bytes produced by [`crate::encode`]. Never panics; garbage gives `Err`.
pub fn decode(bytes: &[u8]) -> Result<Block, BlockError> {
    let &version = bytes.first().ok_or(BlockError::Truncated)?;
    if version != FORMAT_VERSION {
        return Err(BlockError::UnknownVersion(version));
    }
    let mut r = varint::Reader::new(&bytes[1..]);
    let total = r.get().ok_or(BlockError::Truncated)?;
    let total = usize::try_from(total).map_err(|_| BlockError::Truncated)?;
    if total > bytes.len() {
        return Err(BlockError::Truncated);
    }
    if total < bytes.len() {
        return Err(malformed(format!(
            "{} bytes after the end of the block",
            bytes.len() - total
        )));
    }
    let body_start = 1 + r.position();
    if total < body_start + 4 {
        return Err(malformed("block shorter than its header"));
    }
    let (content, stored) = bytes.split_at(total - 4);
    let stored = u32::from_le_bytes([stored[0], stored[1], stored[2], stored[3]]);
    if crc32(content) != stored {
        return Err(BlockError::BadChecksum);
    }

    let mut r = varint::Reader::new(&content[body_start..]);
    let price_scale = u32::try_from(r_get(&mut r, "price scale")?)
        .map_err(|_| malformed("price scale over u32"))?;
    let quantity_scale = u32::try_from(r_get(&mut r, "quantity scale")?)
        .map_err(|_| malformed("quantity scale over u32"))?;
    let count = r_get(&mut r, "count")?;
    let mut block = Block {
        price_scale,
        quantity_scale,
        candles: Vec::new(),
    };
    if count == 0 {
        return if r.remaining() == 0 {
            Ok(block)
        } else {
            Err(malformed("bytes after an empty block"))
        };
    }
    let count = usize::try_from(count)
        .ok()
        .filter(|&n| n <= MAX_CANDLES)
        .ok_or_else(|| malformed("candle count too large"))?;
    let base_ns = unzigzag64(
        u64::try_from(r_get(&mut r, "base time")?)
            .map_err(|_| malformed("base time over 64 bits"))?,
    );
    let unit_ns = i64::try_from(r_get(&mut r, "duration unit")?)
        .map_err(|_| malformed("duration unit over i64"))?;
    let trades_per_volume = u64::try_from(r_get(&mut r, "trade ratio")?)
        .map_err(|_| malformed("trade ratio over u64"))?;
    let params = Params {
        base_ns,
        unit_ns,
        trades_per_volume,
    };
    let frame_len =
        usize::try_from(r_get(&mut r, "frame length")?).map_err(|_| malformed("frame length"))?;
    let frame = r
        .take(frame_len)
        .ok_or_else(|| malformed("frame longer than the block"))?;
    let low_bytes = r.take(r.remaining()).unwrap_or_default();

    let high_bytes = decompress(frame, count.saturating_mul(MAX_HIGH_BYTES_PER_CANDLE))?;
    if high_bytes.len() < count.saturating_mul(columns::COUNT) {
        return Err(malformed("high parts shorter than the candle count needs"));
    }
    block.candles = read_candles(count, &params, &high_bytes, low_bytes)
        .ok_or_else(|| malformed("column data inconsistent"))?;
    if block
        .candles
        .windows(2)
        .any(|w| w[0].open_ns >= w[1].open_ns)
    {
        return Err(malformed("open times not strictly increasing"));
    }
    Ok(block)
}

fn r_get(r: &mut varint::Reader<'_>, name: &str) -> Result<u128, BlockError> {
    r.get()
        .ok_or_else(|| malformed(format!("bad {name} field")))
}

fn read_candles(
    count: usize,
    params: &Params,
    high_bytes: &[u8],
    low_bytes: &[u8],
) -> Option<Vec<crate::BlockCandle>> {
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
        |j| {
            Some(bit_len(u128::from(columns::predicted_trades(
                &candles[j],
                params,
            ))))
        },
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
    use crate::encode::compress;

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
