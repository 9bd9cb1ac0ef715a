//! Block reader (see the crate docs for the byte format). Every length and
//! count is checked against what the input can hold before anything is
//! allocated, and every arithmetic step is checked or wrapping, so no input
//! makes it panic.

use crate::checksum::crc32;
use crate::error::malformed;
use crate::params::Params;
use crate::varint::{self, unzigzag64};
use crate::{Block, BlockError, FORMAT_VERSION, MAX_CANDLES, v1, v2};

/// Decodes bytes produced by [`crate::encode`], in format version 2 or 1.
/// Never panics; garbage gives `Err`.
pub fn decode(bytes: &[u8]) -> Result<Block, BlockError> {
    let &version = bytes.first().ok_or(BlockError::Truncated)?;
    if version != FORMAT_VERSION && version != 1 {
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
    block.candles = if version == 1 {
        v1::decode_candles(count, &params, &mut r)?
    } else {
        let stream_len = usize::try_from(r_get(&mut r, "stream length")?)
            .map_err(|_| malformed("stream length"))?;
        let stream = r
            .take(stream_len)
            .ok_or_else(|| malformed("stream longer than the block"))?;
        let raw = r.take(r.remaining()).unwrap_or_default();
        v2::decode_candles(count, &params, stream, raw)
            .ok_or_else(|| malformed("candle data inconsistent"))?
    };
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
