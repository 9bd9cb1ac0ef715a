//! Format version 1: candles as residual columns (small unsigned numbers) and back.
//!
//! Every transform uses wrapping arithmetic, so it is a bijection on the full
//! range of each field: any candle round trips exactly, however unusual, and
//! typical candles give small residuals. See the crate docs for the list.

use super::split::bit_len;
use crate::BlockCandle;
use crate::params::{Params, gap_from_code, predicted_trades};
use crate::varint::{unzigzag64, unzigzag128};
#[cfg(test)]
use crate::{
    params::gap_code,
    varint::{zigzag64, zigzag128},
};

/// Columns in coding order.
pub const GAP: usize = 0;
pub const DURATION: usize = 1;
pub const OPEN: usize = 2;
pub const CLOSE: usize = 3;
pub const HIGH: usize = 4;
pub const LOW: usize = 5;
pub const VOLUME: usize = 6;
pub const QUOTE: usize = 7;
#[cfg(test)]
pub const TRADES: usize = 8;
#[cfg(test)]
pub const REVISION: usize = 9;
pub const COUNT: usize = 10;

/// Context for the quote volume residual: its size tracks volume × range.
pub fn quote_context(c: &BlockCandle) -> i32 {
    bit_len(c.volume as u128) + bit_len(u128::from(c.high.wrapping_sub(c.low) as u64))
}

/// The residual columns of `candles`, in coding order.
#[cfg(test)]
pub fn to_columns(candles: &[BlockCandle], p: &Params) -> Vec<Vec<u128>> {
    let mut cols: Vec<Vec<u128>> = (0..COUNT)
        .map(|_| Vec::with_capacity(candles.len()))
        .collect();
    let mut prev_close_ns = p.base_ns;
    let mut prev_close = 0i64;
    for c in candles {
        cols[GAP].push(gap_code(c.open_ns.wrapping_sub(prev_close_ns), p.unit_ns));
        cols[DURATION].push(u128::from(zigzag64(
            c.close_ns.wrapping_sub(c.open_ns).wrapping_sub(p.unit_ns),
        )));
        cols[OPEN].push(u128::from(zigzag64(c.open.wrapping_sub(prev_close))));
        cols[CLOSE].push(u128::from(zigzag64(c.close.wrapping_sub(c.open))));
        cols[HIGH].push(u128::from(c.high.wrapping_sub(c.open.max(c.close)) as u64));
        cols[LOW].push(u128::from(c.open.min(c.close).wrapping_sub(c.low) as u64));
        cols[VOLUME].push(c.volume as u128);
        cols[QUOTE].push(zigzag128(
            c.quote_volume.wrapping_sub(c.volume.wrapping_mul(mid(c))),
        ));
        cols[TRADES].push(u128::from(zigzag64(
            c.trade_count.wrapping_sub(predicted_trades(c, p)) as i64,
        )));
        cols[REVISION].push(u128::from(c.revision.wrapping_sub(1)));
        prev_close_ns = c.close_ns;
        prev_close = c.close;
    }
    cols
}

fn as_u64(v: u128) -> Option<u64> {
    u64::try_from(v).ok()
}

/// Rebuilds candles from the first seven columns (times, prices, volume);
/// quote volume, trade count and revision are filled in later by
/// [`apply_quote`], [`apply_trades`] and [`apply_revision`].
pub fn from_columns(cols: &[Vec<u128>], p: &Params) -> Option<Vec<BlockCandle>> {
    let n = cols[GAP].len();
    let mut out = Vec::with_capacity(n);
    let mut prev_close_ns = p.base_ns;
    let mut prev_close = 0i64;
    let rows = (0..n).map(|i| -> [u128; QUOTE] { std::array::from_fn(|column| cols[column][i]) });
    for row in rows {
        let at = |column: usize| row[column];
        let open_ns = prev_close_ns.wrapping_add(gap_from_code(at(GAP), p.unit_ns)?);
        let close_ns = open_ns
            .wrapping_add(p.unit_ns)
            .wrapping_add(unzigzag64(as_u64(at(DURATION))?));
        let open = prev_close.wrapping_add(unzigzag64(as_u64(at(OPEN))?));
        let close = open.wrapping_add(unzigzag64(as_u64(at(CLOSE))?));
        let high = open.max(close).wrapping_add(as_u64(at(HIGH))? as i64);
        let low = open.min(close).wrapping_sub(as_u64(at(LOW))? as i64);
        out.push(BlockCandle {
            open_ns,
            close_ns,
            open,
            high,
            low,
            close,
            volume: at(VOLUME) as i128,
            quote_volume: 0,
            trade_count: 0,
            revision: 0,
        });
        prev_close_ns = close_ns;
        prev_close = close;
    }
    Some(out)
}

pub fn apply_quote(candles: &mut [BlockCandle], col: &[u128]) {
    for (c, &r) in candles.iter_mut().zip(col) {
        c.quote_volume = c.volume.wrapping_mul(mid(c)).wrapping_add(unzigzag128(r));
    }
}

pub fn apply_trades(candles: &mut [BlockCandle], col: &[u128], p: &Params) -> Option<()> {
    for (c, &r) in candles.iter_mut().zip(col) {
        c.trade_count = predicted_trades(c, p).wrapping_add(unzigzag64(as_u64(r)?) as u64);
    }
    Some(())
}

pub fn apply_revision(candles: &mut [BlockCandle], col: &[u128]) -> Option<()> {
    for (c, &r) in candles.iter_mut().zip(col) {
        c.revision = as_u64(r)?.wrapping_add(1);
    }
    Some(())
}

/// Floor of the midpoint of the range, exact in i128.
fn mid(c: &BlockCandle) -> i128 {
    (i128::from(c.high) + i128::from(c.low)) >> 1
}
