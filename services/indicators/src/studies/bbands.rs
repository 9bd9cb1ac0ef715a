//! Bollinger bands: middle = SMA(n) of closes (exact, one rounding, the same
//! digits as `sma(n)`); σ = the population standard deviation of the same n
//! closes (÷ n, as TA-Lib), computed from the exact integer
//! `n·Σd² − (Σd)²` (d = close − the window's oldest close) and rounded once
//! to 18 places by an integer square root; width = k × σ rounded once to the
//! output places; upper = middle + width, lower = middle − width.

use super::{Cx, Raw, Step, Window};
use crate::bar::Bar;
use crate::fixed::{FX_SCALE, Fx, Overflow, mul_div, pow10, ratio, sqrt_div};
use crate::spec::{MULTIPLIER_SCALE, Multiplier};
use crate::wide::U256;

#[derive(Clone, Debug, serde::Serialize, serde::Deserialize)]
pub(crate) struct Bbands {
    period: u32,
    k: Multiplier,
    window: Window,
}

impl Bbands {
    pub fn new(period: u32, k: Multiplier) -> Bbands {
        Bbands {
            period,
            k,
            window: Window::new(period),
        }
    }
}

impl Step for Bbands {
    type Next = ();

    fn step(&self, bar: &Bar, cx: &Cx) -> Fx<(Raw, ())> {
        if self.window.len_after_push() < self.period as usize {
            return Ok(([None; 3], ()));
        }
        // Deviations from one member of the window keep the squares small
        // (the variance does not change with the origin).
        let mut values = self.window.with(bar.close);
        let origin = values.next().unwrap_or(bar.close);
        let mut sum = i128::from(origin);
        let mut dev_sum = 0i128;
        let mut dev_squares = U256::ZERO;
        for v in values {
            sum = sum.checked_add(i128::from(v)).ok_or(Overflow)?;
            let d = i128::from(v) - i128::from(origin);
            dev_sum += d;
            // |d| < 2^64 (a difference of two i64), so d² fits in a u128.
            let d = d.unsigned_abs();
            dev_squares = dev_squares
                .checked_add(U256 { hi: 0, lo: d * d })
                .ok_or(Overflow)?;
        }
        let n = i128::from(self.period);
        let middle = ratio(sum, cx.price_scale, n, cx.price_out)?;

        // n²σ² = n·Σd² − (Σd)² in price units², exact; then on the 36-place grid.
        let dev_sum = dev_sum.unsigned_abs();
        let n2_var = dev_squares
            .checked_mul_u128(self.period.into())
            .and_then(|a| a.checked_sub(U256::mul(dev_sum, dev_sum)))
            .ok_or(Overflow)?;
        let grid = pow10(2 * (FX_SCALE - cx.price_scale)) as u128;
        let n2_var = n2_var.checked_mul_u128(grid).ok_or(Overflow)?;
        let sigma = sqrt_div(n2_var, self.period.into())?;

        let width = mul_div(
            sigma,
            i128::from(self.k.units),
            pow10(MULTIPLIER_SCALE + FX_SCALE - cx.price_out),
        )?;
        let upper = middle.checked_add(width).ok_or(Overflow)?;
        let lower = middle.checked_sub(width).ok_or(Overflow)?;
        Ok(([Some(middle), Some(upper), Some(lower)], ()))
    }

    fn apply(&mut self, bar: &Bar, _: ()) {
        self.window.push(bar.close);
    }
}
