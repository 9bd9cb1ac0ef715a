//! Wilder's RSI of closes, as TA-Lib computes it: over the first n changes
//! the average gain and loss are simple averages (on the 18-place grid, at
//! candle n); after that `avg = avg + (x − avg)/n` each step. The value is
//! `100 × gain/(gain + loss)`, rounded once to the output places, and 0 when
//! both averages are 0 (TA-Lib's convention for a flat series).

use super::{Cx, Raw, Step};
use crate::bar::Bar;
use crate::fixed::{FX_SCALE, Fx, Overflow, mul_div, pow10, to_fx, wilder_step};

#[derive(Clone, Debug, Default, serde::Serialize, serde::Deserialize)]
pub(crate) struct Rsi {
    period: u32,
    count: u64,
    prev_close: i64,
    /// Σ gains and Σ losses in price units, until the seed.
    sums: (i128, i128),
    /// Average gain and loss on the 18-place grid, once seeded.
    averages: (i128, i128),
}

impl Rsi {
    pub fn new(period: u32) -> Rsi {
        Rsi {
            period,
            ..Rsi::default()
        }
    }
}

type Next = ((i128, i128), (i128, i128));

impl Step for Rsi {
    type Next = Next;

    fn step(&self, bar: &Bar, cx: &Cx) -> Fx<(Raw, Next)> {
        if self.count == 0 {
            return Ok(([None; 3], ((0, 0), (0, 0))));
        }
        let change = i128::from(bar.close) - i128::from(self.prev_close);
        let (gain, loss) = (change.max(0), (-change).max(0));
        let n = u64::from(self.period);
        let sums = (
            self.sums.0.checked_add(gain).ok_or(Overflow)?,
            self.sums.1.checked_add(loss).ok_or(Overflow)?,
        );
        if self.count < n {
            return Ok(([None; 3], (sums, (0, 0))));
        }
        let averages = if self.count == n {
            let scale = pow10(FX_SCALE - cx.price_scale);
            let period = i128::from(self.period);
            (
                mul_div(sums.0, scale, period)?,
                mul_div(sums.1, scale, period)?,
            )
        } else {
            (
                wilder_step(self.averages.0, to_fx(gain, cx.price_scale)?, self.period)?,
                wilder_step(self.averages.1, to_fx(loss, cx.price_scale)?, self.period)?,
            )
        };
        let total = averages.0.checked_add(averages.1).ok_or(Overflow)?;
        let value = if total == 0 {
            0
        } else {
            mul_div(averages.0, 100 * pow10(cx.oscillator_out), total)?
        };
        Ok(([Some(value), None, None], ((0, 0), averages)))
    }

    fn apply(&mut self, bar: &Bar, (sums, averages): Next) {
        self.count += 1;
        self.prev_close = bar.close;
        self.sums = sums;
        self.averages = averages;
    }
}
