//! Simple moving average: `Σ close / n` over the last n closes, exact (one
//! rounding, at the output).

use super::{Cx, Raw, Step, Window};
use crate::bar::Bar;
use crate::fixed::{Fx, Overflow, ratio};

#[derive(Clone, Debug, serde::Serialize, serde::Deserialize)]
pub(crate) struct Sma {
    period: u32,
    window: Window,
    /// Σ of the window, in price units.
    sum: i128,
}

impl Sma {
    pub fn new(period: u32) -> Sma {
        Sma {
            period,
            window: Window::new(period),
            sum: 0,
        }
    }
}

impl Step for Sma {
    type Next = i128;

    fn step(&self, bar: &Bar, cx: &Cx) -> Fx<(Raw, i128)> {
        let evicted = i128::from(self.window.evicts().unwrap_or(0));
        let sum = self
            .sum
            .checked_add(i128::from(bar.close) - evicted)
            .ok_or(Overflow)?;
        let value = if self.window.len_after_push() == self.period as usize {
            Some(ratio(
                sum,
                cx.price_scale,
                i128::from(self.period),
                cx.price_out,
            )?)
        } else {
            None
        };
        Ok(([value, None, None], sum))
    }

    fn apply(&mut self, bar: &Bar, sum: i128) {
        self.window.push(bar.close);
        self.sum = sum;
    }
}
