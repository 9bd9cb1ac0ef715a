//! Block writer (see the crate docs for the byte format).

use crate::bits::BitWriter;
use crate::checksum::crc32;
use crate::columns::{self, Params};
use crate::error::malformed;
use crate::split::put_column;
use crate::varint::{self, zigzag64};
use crate::{
    Block, BlockCandle, BlockError, FORMAT_VERSION, MAX_CANDLES, ZSTD_LEVEL, ZSTD_WINDOW_LOG,
};

/// Encodes a block. Errors with `NotSorted` if `open_ns` are not strictly
/// increasing, and with `Malformed` for more than [`MAX_CANDLES`] candles.
pub fn encode(block: &Block) -> Result<Vec<u8>, BlockError> {
    let candles = &block.candles;
    if candles.windows(2).any(|w| w[0].open_ns >= w[1].open_ns) {
        return Err(BlockError::NotSorted);
    }
    if candles.len() > MAX_CANDLES {
        return Err(malformed(format!(
            "{} candles, at most {MAX_CANDLES} fit a block",
            candles.len()
        )));
    }

    let mut body = Vec::new();
    varint::put(&mut body, u128::from(block.price_scale));
    varint::put(&mut body, u128::from(block.quantity_scale));
    varint::put(&mut body, candles.len() as u128);
    if !candles.is_empty() {
        let params = Params::of(candles);
        let (high, low) = columns_bytes(candles, &params);
        let frame = compress(&high)?;
        varint::put(&mut body, u128::from(zigzag64(params.base_ns)));
        varint::put(&mut body, params.unit_ns as u128);
        varint::put(&mut body, u128::from(params.trades_per_volume));
        varint::put(&mut body, frame.len() as u128);
        body.extend_from_slice(&frame);
        body.extend_from_slice(&low);
    }

    // version, total length (which counts its own varint), body, CRC.
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
    out.push(FORMAT_VERSION);
    out.extend_from_slice(&len_field);
    out.extend_from_slice(&body);
    let crc = crc32(&out);
    out.extend_from_slice(&crc.to_le_bytes());
    debug_assert_eq!(out.len(), total);
    Ok(out)
}

/// The high parts (varints, column after column) and the packed low bits.
fn columns_bytes(candles: &[BlockCandle], params: &Params) -> (Vec<u8>, Vec<u8>) {
    let cols = columns::to_columns(candles, params);
    let mut high = Vec::with_capacity(candles.len() * columns::COUNT * 2);
    let mut low = BitWriter::new();
    for (i, col) in cols.iter().enumerate() {
        match i {
            columns::QUOTE => put_column(
                col,
                |j| Some(columns::quote_context(&candles[j])),
                &mut high,
                &mut low,
            ),
            columns::TRADES => put_column(
                col,
                |j| {
                    Some(crate::split::bit_len(u128::from(
                        columns::predicted_trades(&candles[j], params),
                    )))
                },
                &mut high,
                &mut low,
            ),
            _ => put_column(col, |_| None, &mut high, &mut low),
        }
    }
    (high, low.finish())
}

pub(crate) fn compress(data: &[u8]) -> Result<Vec<u8>, BlockError> {
    let zstd_err = |e: std::io::Error| malformed(format!("zstd: {e}"));
    let mut c = zstd::bulk::Compressor::new(ZSTD_LEVEL).map_err(zstd_err)?;
    c.window_log(ZSTD_WINDOW_LOG).map_err(zstd_err)?;
    c.compress(data).map_err(zstd_err)
}
