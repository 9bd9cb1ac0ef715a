//! Bollinger bands: middle = SMA(n) of closes (exact, one rounding, the same
//! digits as `sma(n)`); σ = the population standard deviation of the same n
//! closes (÷ n, as TA-Lib), computed from the exact integer
//! `n·Σc² − (Σc)²` and rounded once to 18 places by an integer square root;
//! width = k × σ rounded once to the output places; upper = middle + width,
//! lower = middle − width. Σc and Σc² of the window are kept as closes come
//! and go (exact integers), so a live update costs the same whatever n is.

use super::{Cx, Raw, Step, Window};
use crate::bar::Bar;
use crate::fixed::{FX_SCALE, Fx, Overflow, mul_div, pow10, ratio, sqrt_div};
use crate::spec::{MULTIPLIER_SCALE, Multiplier};
use crate::wide::U256;

#[derive(Clone, Debug, serde::Serialize, serde::Deserialize)]
#[serde(from = "Saved")]
pub(crate) struct Bbands {
    period: u32,
    k: Multiplier,
    window: Window,
    /// Σc and Σc² of the window (not saved: a restored state sums its window).
    #[serde(skip_serializing)]
    sums: Sums,
}

/// Σc (price units) and Σc² (price units²) of a window of closes.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct Sums {
    sum: i128,
    squares: U256,
}

fn square(c: i64) -> U256 {
    let c = c.unsigned_abs();
    U256::from_u128(u128::from(c) * u128::from(c))
}

impl Sums {
    /// The sums after `close` joins and `evicted` (if any) leaves.
    fn next(self, close: i64, evicted: Option<i64>) -> Fx<Sums> {
        let out = evicted.unwrap_or(0);
        Ok(Sums {
            sum: self
                .sum
                .checked_add(i128::from(close) - i128::from(out))
                .ok_or(Overflow)?,
            squares: self
                .squares
                .checked_add(square(close))
                .and_then(|s| s.checked_sub(square(out)))
                .ok_or(Overflow)?,
        })
    }
}

/// The saved form (a checkpoint): the window alone.
#[derive(serde::Deserialize)]
struct Saved {
    period: u32,
    k: Multiplier,
    window: Window,
}

impl From<Saved> for Bbands {
    fn from(saved: Saved) -> Bbands {
        let sums = saved.window.iter().fold(Sums::default(), |s, c| Sums {
            sum: s.sum + i128::from(c),
            squares: s
                .squares
                .checked_add(square(c))
                .expect("a window's squares fit in 256 bits"),
        });
        Bbands {
            period: saved.period,
            k: saved.k,
            window: saved.window,
            sums,
        }
    }
}

impl Bbands {
    pub fn new(period: u32, k: Multiplier) -> Bbands {
        Bbands {
            period,
            k,
            window: Window::new(period),
            sums: Sums::default(),
        }
    }
}

impl Step for Bbands {
    type Next = Sums;

    fn step(&self, bar: &Bar, cx: &Cx) -> Fx<(Raw, Sums)> {
        let sums = self.sums.next(bar.close, self.window.evicts())?;
        if self.window.len_after_push() < self.period as usize {
            return Ok(([None; 3], sums));
        }
        let n = i128::from(self.period);
        let middle = ratio(sums.sum, cx.price_scale, n, cx.price_out)?;

        // n²σ² = n·Σc² − (Σc)² in price units², exact; then on the 36-place grid.
        let sum = sums.sum.unsigned_abs();
        let n2_var = sums
            .squares
            .checked_mul_u128(self.period.into())
            .and_then(|a| a.checked_sub(U256::mul(sum, sum)))
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
        Ok(([Some(middle), Some(upper), Some(lower)], sums))
    }

    fn apply(&mut self, bar: &Bar, sums: Sums) {
        self.window.push(bar.close);
        self.sums = sums;
    }
}
