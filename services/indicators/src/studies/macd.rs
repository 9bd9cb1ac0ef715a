//! MACD as TA-Lib computes it. Both EMAs start at candle slow − 1: the slow
//! one with the SMA of the first `slow` closes, the fast one with the SMA of
//! the last `fast` of them (so the fast EMA is not the standalone
//! `ema(fast)`, which would start at candle fast − 1; TradingView's differs
//! from TA-Lib's here for roughly the first hundred candles). The line is
//! fast − slow; the signal is the EMA of the line, seeded with the average of
//! its first `signal` values; every step rounds half to even on the 18-place
//! grid. Printed: line and signal each rounded once to the output places, and
//! histogram = printed line − printed signal, so that identity holds exactly.

use super::{Cx, Raw, Step, Window};
use crate::bar::Bar;
use crate::fixed::{FX_SCALE, Fx, Overflow, div, ema_step, mul_div, pow10, round_fx, to_fx};

#[derive(Clone, Debug, serde::Serialize, serde::Deserialize)]
pub(crate) struct Macd {
    fast: u32,
    slow: u32,
    signal: u32,
    count: u64,
    /// Σ of the closes (price units) and the last `fast` closes, until the EMAs start.
    seed_sum: i128,
    recent: Window,
    /// Fast and slow EMAs on the 18-place grid.
    emas: (i128, i128),
    /// Σ of the MACD line until the signal starts, then the signal EMA.
    line_sum: i128,
    signal_ema: i128,
}

impl Macd {
    pub fn new(fast: u32, slow: u32, signal: u32) -> Macd {
        Macd {
            fast,
            slow,
            signal,
            count: 0,
            seed_sum: 0,
            recent: Window::new(fast),
            emas: (0, 0),
            line_sum: 0,
            signal_ema: 0,
        }
    }
}

#[derive(Clone, Copy, Debug)]
pub(crate) struct Next {
    seed_sum: i128,
    emas: (i128, i128),
    line_sum: i128,
    signal_ema: i128,
}

impl Step for Macd {
    type Next = Next;

    fn step(&self, bar: &Bar, cx: &Cx) -> Fx<(Raw, Next)> {
        let close = i128::from(bar.close);
        let slow = u64::from(self.slow);
        let mut next = Next {
            seed_sum: self.seed_sum,
            emas: self.emas,
            line_sum: self.line_sum,
            signal_ema: self.signal_ema,
        };
        if self.count + 1 < slow {
            next.seed_sum = self.seed_sum.checked_add(close).ok_or(Overflow)?;
            return Ok(([None; 3], next));
        }
        next.emas = if self.count + 1 == slow {
            let scale = pow10(FX_SCALE - cx.price_scale);
            let all = self.seed_sum.checked_add(close).ok_or(Overflow)?;
            let mut last = 0i128;
            for c in self.recent.with(bar.close) {
                last = last.checked_add(i128::from(c)).ok_or(Overflow)?;
            }
            (
                mul_div(last, scale, i128::from(self.fast))?,
                mul_div(all, scale, i128::from(self.slow))?,
            )
        } else {
            let x = to_fx(close, cx.price_scale)?;
            (
                ema_step(self.emas.0, x, self.fast)?,
                ema_step(self.emas.1, x, self.slow)?,
            )
        };
        let line = next.emas.0.checked_sub(next.emas.1).ok_or(Overflow)?;
        let line_out = round_fx(line, cx.price_out);

        // Index of this candle in the series of MACD line values.
        let j = self.count + 1 - slow;
        let signal = u64::from(self.signal);
        if j + 1 < signal {
            next.line_sum = self.line_sum.checked_add(line).ok_or(Overflow)?;
            return Ok(([Some(line_out), None, None], next));
        }
        next.signal_ema = if j + 1 == signal {
            let sum = self.line_sum.checked_add(line).ok_or(Overflow)?;
            div(sum, i128::from(self.signal))?
        } else {
            ema_step(self.signal_ema, line, self.signal)?
        };
        let signal_out = round_fx(next.signal_ema, cx.price_out);
        let histogram = line_out.checked_sub(signal_out).ok_or(Overflow)?;
        Ok(([Some(line_out), Some(signal_out), Some(histogram)], next))
    }

    fn apply(&mut self, bar: &Bar, next: Next) {
        if self.count < u64::from(self.slow) {
            self.recent.push(bar.close);
        }
        self.count += 1;
        self.seed_sum = next.seed_sum;
        self.emas = next.emas;
        self.line_sum = next.line_sum;
        self.signal_ema = next.signal_ema;
    }
}
