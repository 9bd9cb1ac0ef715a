//! Linearly weighted moving average: `Σ i·close_i / (n(n+1)/2)` with weights
//! 1 (oldest) to n (newest). The weighted sum is an exact integer, so the
//! value is exact up to one rounding at the output.

use super::{Cx, Raw, Step, Window};
use crate::bar::Bar;
use crate::fixed::{Fx, Overflow, ratio};

#[derive(Clone, Debug, serde::Serialize, serde::Deserialize)]
pub(crate) struct Wma {
    period: u32,
    window: Window,
    /// Σ of the window, in price units.
    sum: i128,
    /// Σ (position + 1) × close over the window, in price units.
    weighted: i128,
}

impl Wma {
    pub fn new(period: u32) -> Wma {
        Wma {
            period,
            window: Window::new(period),
            sum: 0,
            weighted: 0,
        }
    }
}

impl Step for Wma {
    type Next = (i128, i128);

    fn step(&self, bar: &Bar, cx: &Cx) -> Fx<(Raw, (i128, i128))> {
        let close = i128::from(bar.close);
        let n = i128::from(self.period);
        let (sum, weighted) = match self.window.evicts() {
            // Full: every weight drops by one (the oldest, weight 1, leaves)
            // and the new close comes in at weight n.
            Some(oldest) => (
                self.sum
                    .checked_add(close - i128::from(oldest))
                    .ok_or(Overflow)?,
                self.weighted
                    .checked_sub(self.sum)
                    .and_then(|w| w.checked_add(close.checked_mul(n)?))
                    .ok_or(Overflow)?,
            ),
            // Filling: the new close is at position len, weight len + 1.
            None => {
                let weight = self.window.len_after_push() as i128;
                (
                    self.sum.checked_add(close).ok_or(Overflow)?,
                    close
                        .checked_mul(weight)
                        .and_then(|c| self.weighted.checked_add(c))
                        .ok_or(Overflow)?,
                )
            }
        };
        let value = if self.window.len_after_push() == self.period as usize {
            Some(ratio(
                weighted,
                cx.price_scale,
                n * (n + 1) / 2,
                cx.price_out,
            )?)
        } else {
            None
        };
        Ok(([value, None, None], (sum, weighted)))
    }

    fn apply(&mut self, bar: &Bar, (sum, weighted): (i128, i128)) {
        self.window.push(bar.close);
        self.sum = sum;
        self.weighted = weighted;
    }
}
