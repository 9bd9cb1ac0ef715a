//! On-balance volume, exact in quantity units, as TA-Lib: the first candle's
//! OBV is its volume; then the volume is added when the close rises, taken
//! away when it falls, and the OBV is unchanged when the close is unchanged.

use super::{Cx, Raw, Step};
use crate::bar::Bar;
use crate::fixed::{Fx, Overflow};

#[derive(Clone, Debug, Default, serde::Serialize, serde::Deserialize)]
pub(crate) struct Obv {
    started: bool,
    prev_close: i64,
    obv: i128,
}

impl Step for Obv {
    type Next = i128;

    fn step(&self, bar: &Bar, _cx: &Cx) -> Fx<(Raw, i128)> {
        let obv = if !self.started {
            bar.volume
        } else if bar.close > self.prev_close {
            self.obv.checked_add(bar.volume).ok_or(Overflow)?
        } else if bar.close < self.prev_close {
            self.obv.checked_sub(bar.volume).ok_or(Overflow)?
        } else {
            self.obv
        };
        Ok(([Some(obv), None, None], obv))
    }

    fn apply(&mut self, bar: &Bar, obv: i128) {
        self.started = true;
        self.prev_close = bar.close;
        self.obv = obv;
    }
}
