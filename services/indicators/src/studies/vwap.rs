//! Session-anchored VWAP: `Σ(typical × volume) / Σ volume` over the candles
//! of the session so far, with typical = (high + low + close)/3 (TradingView's
//! `hlc3`). Both sums are exact integers (the thirds are kept as
//! `Σ (H+L+C)·V / (3·ΣV)`), so the value is exact up to one rounding at the
//! output. No value while the session has no volume.

use super::{Cx, Raw, Step};
use crate::bar::Bar;
use crate::fixed::{Fx, Overflow, mul_div, pow10};

#[derive(Clone, Debug, Default, serde::Serialize, serde::Deserialize)]
pub(crate) struct Vwap {
    session: Option<i64>,
    /// Σ (H+L+C)·V in units of 10^-(price scale + quantity scale).
    price_volume: i128,
    /// Σ V in quantity units.
    volume: i128,
}

type Next = (i128, i128);

impl Step for Vwap {
    type Next = Next;

    fn step(&self, bar: &Bar, cx: &Cx) -> Fx<(Raw, Next)> {
        let (pv, v) = if self.session == Some(bar.session) {
            (self.price_volume, self.volume)
        } else {
            (0, 0)
        };
        let hlc = i128::from(bar.high) + i128::from(bar.low) + i128::from(bar.close);
        let pv = hlc
            .checked_mul(bar.volume)
            .and_then(|x| pv.checked_add(x))
            .ok_or(Overflow)?;
        let v = v.checked_add(bar.volume).ok_or(Overflow)?;
        let value = if v > 0 {
            let den = v.checked_mul(3).ok_or(Overflow)?;
            Some(mul_div(pv, pow10(cx.price_out - cx.price_scale), den)?)
        } else {
            None
        };
        Ok(([value, None, None], (pv, v)))
    }

    fn apply(&mut self, bar: &Bar, (pv, v): Next) {
        self.session = Some(bar.session);
        self.price_volume = pv;
        self.volume = v;
    }
}
