//! The version-1 writer, kept for tests: blocks it writes must keep decoding.

use super::columns;
use super::split::{bit_len, put_column};
use crate::bits::BitWriter;
use crate::encode::{check, seal};
use crate::error::malformed;
use crate::params::{Params, predicted_trades};
use crate::varint::{self, zigzag64};
use crate::{Block, BlockCandle, BlockError};

/// zstd level of version 1.
const ZSTD_LEVEL: i32 = 3;

/// Encodes a block in format version 1.
pub fn encode(block: &Block) -> Result<Vec<u8>, BlockError> {
    let candles = &block.candles;
    check(candles)?;
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
    Ok(seal(1, &body))
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
                |j| Some(bit_len(u128::from(predicted_trades(&candles[j], params)))),
                &mut high,
                &mut low,
            ),
            _ => put_column(col, |_| None, &mut high, &mut low),
        }
    }
    (high, low.finish())
}

pub fn compress(data: &[u8]) -> Result<Vec<u8>, BlockError> {
    let zstd_err = |e: std::io::Error| malformed(format!("zstd: {e}"));
    let mut c = zstd::bulk::Compressor::new(ZSTD_LEVEL).map_err(zstd_err)?;
    c.window_log(super::ZSTD_WINDOW_LOG).map_err(zstd_err)?;
    c.compress(data).map_err(zstd_err)
}
