//! Exponential moving average of closes, TA-Lib's default: the first value
//! (candle n − 1) is the SMA of the first n closes on the 18-place grid, then
//! `ema = ema + (close − ema) × 2/(n + 1)`, rounded half to even each step.

use super::{Cx, Raw, Step};
use crate::bar::Bar;
use crate::fixed::{FX_SCALE, Fx, Overflow, ema_step, mul_div, pow10, round_fx, to_fx};

#[derive(Clone, Debug, serde::Serialize, serde::Deserialize)]
pub(crate) struct Ema {
    period: u32,
    count: u64,
    /// Σ of the closes so far, in price units, until the seed.
    seed_sum: i128,
    /// The EMA on the 18-place grid, once seeded.
    ema: i128,
}

impl Ema {
    pub fn new(period: u32) -> Ema {
        Ema {
            period,
            count: 0,
            seed_sum: 0,
            ema: 0,
        }
    }
}

/// (seed_sum, ema) after the step.
type Next = (i128, i128);

impl Step for Ema {
    type Next = Next;

    fn step(&self, bar: &Bar, cx: &Cx) -> Fx<(Raw, Next)> {
        let close = i128::from(bar.close);
        let n = u64::from(self.period);
        if self.count + 1 < n {
            let sum = self.seed_sum.checked_add(close).ok_or(Overflow)?;
            return Ok(([None; 3], (sum, 0)));
        }
        let ema = if self.count + 1 == n {
            let sum = self.seed_sum.checked_add(close).ok_or(Overflow)?;
            mul_div(
                sum,
                pow10(FX_SCALE - cx.price_scale),
                i128::from(self.period),
            )?
        } else {
            ema_step(self.ema, to_fx(close, cx.price_scale)?, self.period)?
        };
        let value = round_fx(ema, cx.price_out);
        Ok(([Some(value), None, None], (0, ema)))
    }

    fn apply(&mut self, _bar: &Bar, (seed_sum, ema): Next) {
        self.count += 1;
        self.seed_sum = seed_sum;
        self.ema = ema;
    }
}
