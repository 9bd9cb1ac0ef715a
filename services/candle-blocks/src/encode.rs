//! Block writer (see the crate docs for the byte format).

use crate::checksum::crc32;
use crate::error::malformed;
use crate::params::Params;
use crate::varint::{self, zigzag64};
use crate::{Block, BlockCandle, BlockError, FORMAT_VERSION, MAX_CANDLES};

/// Encodes a block. Errors with `NotSorted` if `open_ns` are not strictly
/// increasing, and with `Malformed` for more than [`MAX_CANDLES`] candles.
pub fn encode(block: &Block) -> Result<Vec<u8>, BlockError> {
    let candles = &block.candles;
    check(candles)?;
    let mut body = Vec::new();
    varint::put(&mut body, u128::from(block.price_scale));
    varint::put(&mut body, u128::from(block.quantity_scale));
    varint::put(&mut body, candles.len() as u128);
    if !candles.is_empty() {
        let params = Params::of(candles);
        let (stream, raw) = crate::v2::encode_candles(candles, &params);
        varint::put(&mut body, u128::from(zigzag64(params.base_ns)));
        varint::put(&mut body, params.unit_ns as u128);
        varint::put(&mut body, u128::from(params.trades_per_volume));
        varint::put(&mut body, stream.len() as u128);
        body.extend_from_slice(&stream);
        body.extend_from_slice(&raw);
    }
    Ok(seal(FORMAT_VERSION, &body))
}

/// What every version's encoder refuses.
pub(crate) fn check(candles: &[BlockCandle]) -> Result<(), BlockError> {
    if candles.windows(2).any(|w| w[0].open_ns >= w[1].open_ns) {
        return Err(BlockError::NotSorted);
    }
    if candles.len() > MAX_CANDLES {
        return Err(malformed(format!(
            "{} candles, at most {MAX_CANDLES} fit a block",
            candles.len()
        )));
    }
    Ok(())
}

/// Version byte, total length (which counts its own varint), body, CRC.
pub(crate) fn seal(version: u8, body: &[u8]) -> Vec<u8> {
    let mut total = 1 + 1 + body.len() + 4;
    let len_field = loop {
        let mut field = Vec::new();
        varint::put(&mut field, total as u128);
        let with_field = 1 + field.len() + body.len() + 4;
        if with_field == total {
            break field;
        }
        total = with_field;
    };
    let mut out = Vec::with_capacity(total);
    out.push(version);
    out.extend_from_slice(&len_field);
    out.extend_from_slice(body);
    let crc = crc32(&out);
    out.extend_from_slice(&crc.to_le_bytes());
    debug_assert_eq!(out.len(), total);
    out
}
