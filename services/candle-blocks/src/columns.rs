//! Turning candles into residual columns (small unsigned numbers) and back.
//!
//! Every transform uses wrapping arithmetic, so it is a bijection on the full
//! range of each field: any candle round trips exactly, however unusual, and
//! typical candles give small residuals. See the crate docs for the list.

use crate::BlockCandle;
use crate::split::bit_len;
use crate::varint::{unzigzag64, unzigzag128, zigzag64, zigzag128};

/// Columns in coding order.
pub const GAP: usize = 0;
pub const DURATION: usize = 1;
pub const OPEN: usize = 2;
pub const CLOSE: usize = 3;
pub const HIGH: usize = 4;
pub const LOW: usize = 5;
pub const VOLUME: usize = 6;
pub const QUOTE: usize = 7;
pub const TRADES: usize = 8;
pub const REVISION: usize = 9;
pub const COUNT: usize = 10;

/// Block-wide parameters chosen by the encoder and stored in the header.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Params {
    /// `open_ns` of the first candle.
    pub base_ns: i64,
    /// The most common `close_ns - open_ns` if positive, else 0 (no unit).
    pub unit_ns: i64,
    /// Trades per unit of volume over the block, Q32 fixed point.
    pub trades_per_volume: u64,
}

impl Params {
    pub fn of(candles: &[BlockCandle]) -> Params {
        let mut durations: Vec<i64> = candles
            .iter()
            .map(|c| c.close_ns.wrapping_sub(c.open_ns))
            .collect();
        durations.sort_unstable();
        let mut unit_ns = 0;
        let mut best = 0;
        let mut i = 0;
        while i < durations.len() {
            let run = durations[i..]
                .iter()
                .take_while(|&&d| d == durations[i])
                .count();
            if run > best {
                best = run;
                unit_ns = durations[i];
            }
            i += run;
        }
        let (mut trades, mut volume) = (0u128, 0u128);
        for c in candles.iter().filter(|c| c.volume > 0) {
            trades = trades.saturating_add(u128::from(c.trade_count));
            volume = volume.saturating_add(c.volume as u128);
        }
        let ratio = trades
            .saturating_mul(1 << 32)
            .checked_div(volume)
            .unwrap_or(0);
        Params {
            base_ns: candles.first().map_or(0, |c| c.open_ns),
            unit_ns: unit_ns.max(0),
            trades_per_volume: u64::try_from(ratio).unwrap_or(u64::MAX),
        }
    }
}

/// Code for the gap between the previous candle's close and this open:
/// `zigzag(gap / unit) << 1` when the gap is a whole number of units, else
/// `zigzag(gap) << 1 | 1`.
fn gap_code(gap: i64, unit: i64) -> u128 {
    if unit > 0 && gap % unit == 0 {
        u128::from(zigzag64(gap / unit)) << 1
    } else {
        (u128::from(zigzag64(gap)) << 1) | 1
    }
}

fn gap_from_code(code: u128, unit: i64) -> Option<i64> {
    let z = unzigzag64(u64::try_from(code >> 1).ok()?);
    if code & 1 == 1 {
        Some(z)
    } else if unit > 0 {
        z.checked_mul(unit)
    } else {
        None
    }
}

/// Floor of the midpoint of the range, exact in i128.
fn mid(c: &BlockCandle) -> i128 {
    (i128::from(c.high) + i128::from(c.low)) >> 1
}

/// Context for the quote volume residual: its size tracks volume × range.
pub fn quote_context(c: &BlockCandle) -> i32 {
    bit_len(c.volume as u128) + bit_len(u128::from(c.high.wrapping_sub(c.low) as u64))
}

/// Predicted trade count: volume × trades_per_volume (0 for volume ≤ 0).
pub fn predicted_trades(c: &BlockCandle, p: &Params) -> u64 {
    if c.volume <= 0 {
        return 0;
    }
    let pred = (c.volume as u128).saturating_mul(u128::from(p.trades_per_volume)) >> 32;
    u64::try_from(pred).unwrap_or(u64::MAX)
}

/// The residual columns of `candles`, in coding order.
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gap_codes_round_trip() {
        for unit in [0, 1, 60_000_000_000, i64::MAX] {
            for gap in [
                0,
                1,
                -1,
                60_000_000_000,
                -120_000_000_000,
                7,
                i64::MIN,
                i64::MAX,
            ] {
                assert_eq!(
                    gap_from_code(gap_code(gap, unit), unit),
                    Some(gap),
                    "gap {gap} unit {unit}"
                );
            }
        }
        assert_eq!(
            gap_code(120_000_000_000, 60_000_000_000),
            8,
            "zigzag(2) << 1"
        );
        assert_eq!(gap_code(0, 60_000_000_000), 0);
        assert_eq!(gap_code(-1, 60_000_000_000), 3, "zigzag(-1) << 1 | 1");
        assert_eq!(gap_from_code(2, 0), None, "unit code without a unit");
    }

    #[test]
    fn common_duration_is_the_mode() {
        let c = |open_ns: i64, close_ns: i64| BlockCandle {
            open_ns,
            close_ns,
            open: 0,
            high: 0,
            low: 0,
            close: 0,
            volume: 0,
            quote_volume: 0,
            trade_count: 0,
            revision: 1,
        };
        let p = Params::of(&[c(0, 5), c(10, 13), c(20, 23), c(30, 40)]);
        assert_eq!(p.unit_ns, 3);
        assert_eq!(p.base_ns, 0);
        assert_eq!(
            Params::of(&[c(0, -5)]).unit_ns,
            0,
            "non-positive durations give no unit"
        );
    }
}
