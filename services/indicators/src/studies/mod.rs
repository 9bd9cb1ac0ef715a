//! One module per indicator. Each is a small state machine over closed
//! candles: `step` computes the reading the next candle gives and the state it
//! would leave, without changing anything; `apply` takes that state in. A live
//! preview is `step` alone and a commit is `step` then `apply`, so the two can
//! never disagree.

mod atr;
mod bbands;
mod ema;
mod macd;
mod obv;
mod rsi;
mod sma;
mod vwap;
mod wma;

use std::collections::VecDeque;

use crate::bar::Bar;
use crate::fixed::Fx;
use crate::spec::Indicator;

/// A reading before it is dressed with scales: up to three outputs in units of
/// the output's scale, `None` while warming up.
pub(crate) type Raw = [Option<i128>; 3];

/// The scales a study computes with.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Cx {
    pub price_scale: u32,
    /// Decimal places of price-like outputs.
    pub price_out: u32,
    /// Decimal places of oscillator outputs (RSI).
    pub oscillator_out: u32,
}

pub(crate) trait Step {
    type Next;
    /// The reading `bar` gives as the next candle, and the state it leaves.
    fn step(&self, bar: &Bar, cx: &Cx) -> Fx<(Raw, Self::Next)>;
    /// Takes in the state `step` returned for the same `bar`.
    fn apply(&mut self, bar: &Bar, next: Self::Next);
}

/// The state of one indicator.
#[derive(Clone, Debug, serde::Serialize, serde::Deserialize)]
pub(crate) enum Study {
    Sma(sma::Sma),
    Ema(ema::Ema),
    Wma(wma::Wma),
    Rsi(rsi::Rsi),
    Macd(macd::Macd),
    Bbands(bbands::Bbands),
    Atr(atr::Atr),
    Vwap(vwap::Vwap),
    Obv(obv::Obv),
}

macro_rules! each {
    ($study:expr, $s:ident => $body:expr) => {
        match $study {
            Study::Sma($s) => $body,
            Study::Ema($s) => $body,
            Study::Wma($s) => $body,
            Study::Rsi($s) => $body,
            Study::Macd($s) => $body,
            Study::Bbands($s) => $body,
            Study::Atr($s) => $body,
            Study::Vwap($s) => $body,
            Study::Obv($s) => $body,
        }
    };
}

impl Study {
    pub fn new(indicator: &Indicator) -> Study {
        match *indicator {
            Indicator::Sma { period } => Study::Sma(sma::Sma::new(period)),
            Indicator::Ema { period } => Study::Ema(ema::Ema::new(period)),
            Indicator::Wma { period } => Study::Wma(wma::Wma::new(period)),
            Indicator::Rsi { period } => Study::Rsi(rsi::Rsi::new(period)),
            Indicator::Macd { fast, slow, signal } => {
                Study::Macd(macd::Macd::new(fast, slow, signal))
            }
            Indicator::Bbands { period, k } => Study::Bbands(bbands::Bbands::new(period, k)),
            Indicator::Atr { period } => Study::Atr(atr::Atr::new(period)),
            Indicator::Vwap => Study::Vwap(vwap::Vwap::default()),
            Indicator::Obv => Study::Obv(obv::Obv::default()),
        }
    }

    /// The reading `bar` would give as the next candle; nothing changes.
    pub fn peek(&self, bar: &Bar, cx: &Cx) -> Fx<Raw> {
        each!(self, s => s.step(bar, cx).map(|(raw, _)| raw))
    }

    /// Takes `bar` in as the next closed candle and returns its reading.
    pub fn push(&mut self, bar: &Bar, cx: &Cx) -> Fx<Raw> {
        each!(self, s => {
            let (raw, next) = s.step(bar, cx)?;
            s.apply(bar, next);
            Ok(raw)
        })
    }
}

/// The last `len` closes (or fewer, early on).
#[derive(Clone, Debug, serde::Serialize, serde::Deserialize)]
pub(crate) struct Window {
    len: usize,
    values: VecDeque<i64>,
}

impl Window {
    pub fn new(len: u32) -> Window {
        let len = len as usize;
        Window {
            len,
            values: VecDeque::with_capacity(len),
        }
    }

    /// The value pushing one more would evict.
    pub fn evicts(&self) -> Option<i64> {
        if self.values.len() == self.len {
            self.values.front().copied()
        } else {
            None
        }
    }

    /// How many values the window holds after one more push.
    pub fn len_after_push(&self) -> usize {
        (self.values.len() + 1).min(self.len)
    }

    pub fn push(&mut self, value: i64) {
        if self.values.len() == self.len {
            self.values.pop_front();
        }
        self.values.push_back(value);
    }

    /// The values, oldest first.
    pub fn iter(&self) -> impl Iterator<Item = i64> + '_ {
        self.values.iter().copied()
    }

    /// The values after pushing `next`, oldest first.
    pub fn with(&self, next: i64) -> impl Iterator<Item = i64> + '_ {
        let skip = usize::from(self.values.len() == self.len);
        self.values
            .iter()
            .skip(skip)
            .copied()
            .chain(std::iter::once(next))
    }
}
