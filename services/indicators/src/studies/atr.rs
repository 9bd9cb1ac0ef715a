//! Wilder's average true range, as TA-Lib computes it. The true range of
//! candle i ≥ 1 is max(high − low, |high − previous close|, |low − previous
//! close|), exact; the first ATR (candle n) is the average of the first n true
//! ranges on the 18-place grid, then `atr = atr + (tr − atr)/n` each step.

use super::{Cx, Raw, Step};
use crate::bar::Bar;
use crate::fixed::{FX_SCALE, Fx, Overflow, mul_div, pow10, round_fx, to_fx, wilder_step};

#[derive(Clone, Debug, Default, serde::Serialize, serde::Deserialize)]
pub(crate) struct Atr {
    period: u32,
    count: u64,
    prev_close: i64,
    /// Σ true ranges in price units, until the seed.
    tr_sum: i128,
    /// The ATR on the 18-place grid, once seeded.
    atr: i128,
}

impl Atr {
    pub fn new(period: u32) -> Atr {
        Atr {
            period,
            ..Atr::default()
        }
    }
}

impl Step for Atr {
    type Next = (i128, i128);

    fn step(&self, bar: &Bar, cx: &Cx) -> Fx<(Raw, (i128, i128))> {
        if self.count == 0 {
            return Ok(([None; 3], (0, 0)));
        }
        let (high, low, prev) = (
            i128::from(bar.high),
            i128::from(bar.low),
            i128::from(self.prev_close),
        );
        let tr = (high - low)
            .max((high - prev).abs())
            .max((low - prev).abs());
        let n = u64::from(self.period);
        if self.count < n {
            let sum = self.tr_sum.checked_add(tr).ok_or(Overflow)?;
            return Ok(([None; 3], (sum, 0)));
        }
        let atr = if self.count == n {
            let sum = self.tr_sum.checked_add(tr).ok_or(Overflow)?;
            mul_div(
                sum,
                pow10(FX_SCALE - cx.price_scale),
                i128::from(self.period),
            )?
        } else {
            wilder_step(self.atr, to_fx(tr, cx.price_scale)?, self.period)?
        };
        Ok(([Some(round_fx(atr, cx.price_out)), None, None], (0, atr)))
    }

    fn apply(&mut self, bar: &Bar, (tr_sum, atr): (i128, i128)) {
        self.count += 1;
        self.prev_close = bar.close;
        self.tr_sum = tr_sum;
        self.atr = atr;
    }
}
