//! Block-wide parameters and the transforms shared by every format
//! version: the header fields base, unit and ratio, the gap code and the
//! predicted trade count.

use crate::BlockCandle;
use crate::varint::{unzigzag64, zigzag64};

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
pub fn gap_code(gap: i64, unit: i64) -> u128 {
    if unit > 0 && gap % unit == 0 {
        u128::from(zigzag64(gap / unit)) << 1
    } else {
        (u128::from(zigzag64(gap)) << 1) | 1
    }
}

pub fn gap_from_code(code: u128, unit: i64) -> Option<i64> {
    let z = unzigzag64(u64::try_from(code >> 1).ok()?);
    if code & 1 == 1 {
        Some(z)
    } else if unit > 0 {
        z.checked_mul(unit)
    } else {
        None
    }
}

/// Predicted trade count: volume × trades_per_volume (0 for volume ≤ 0).
pub fn predicted_trades(c: &BlockCandle, p: &Params) -> u64 {
    if c.volume <= 0 {
        return 0;
    }
    let pred = (c.volume as u128).saturating_mul(u128::from(p.trades_per_volume)) >> 32;
    u64::try_from(pred).unwrap_or(u64::MAX)
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
