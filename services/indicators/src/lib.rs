//! Technical indicators on candles, computed the same way on every instance:
//! SMA, EMA, WMA, RSI (Wilder), MACD, Bollinger bands, ATR (Wilder),
//! session-anchored VWAP and OBV.
//!
//! - [`parse_indicators`] turns a request's `indicators` (`"sma(20)"`,
//!   `"macd(12,26,9)"`, `"bbands(20,2.5)"`, `"vwap"`) into [`Indicator`]s or
//!   an `INVALID_ARGUMENT` naming `indicators[i]` and what is allowed.
//! - An [`IndicatorSet`] (indicators + the instrument's [`Scales`]) gives an
//!   [`IndicatorState`] that takes closed candles in order
//!   ([`IndicatorState::commit`]) and previews the open one without keeping
//!   it ([`IndicatorState::preview`]); [`IndicatorSet::compute`] is the
//!   batch form and gives the same readings.
//! - A candle is read as a [`Bar`]: high, low, close and volume as the candle
//!   service's integers, and the VWAP session it belongs to
//!   ([`session_key`]: its local day).
//! - Values are exact decimals ([`Value`]) with a fixed number of places per
//!   output; no floating point is used anywhere. SMA, WMA, VWAP and OBV are
//!   exact up to one rounding at the output; the others carry an 18-place
//!   fixed point rounded half to even at each step (see `README.md` for the
//!   formulas, precision and warm-up of each).
//!
//! ```
//! use tickmesh_indicators::{Bar, IndicatorSet, Scales, parse_indicators};
//!
//! let indicators = parse_indicators(&["sma(3)", "obv"]).unwrap();
//! let set = IndicatorSet::new(indicators, Scales::new(2, 0).unwrap());
//! let mut state = set.state();
//! let minute = 60_000_000_000;
//! let bar = |i: i64, close: i64, volume: i128| Bar {
//!     open_ns: i * minute, high: close, low: close, close, volume, session: 0,
//! };
//! state.commit(&bar(0, 10_000, 5)).unwrap(); // 100.00
//! state.commit(&bar(1, 10_100, 7)).unwrap(); // 101.00
//! // The open candle, at 102.50 so far: a preview, not kept.
//! let live = state.preview(&bar(2, 10_250, 3)).unwrap();
//! assert_eq!(live[0].value().unwrap().to_string(), "101.1666666667");
//! assert_eq!(live[1].value().unwrap().to_string(), "15");
//! assert_eq!(state.committed(), 2);
//! // A candle cannot be committed twice.
//! assert!(state.commit(&bar(1, 10_100, 7)).is_err());
//! ```

mod bar;
pub mod bench;
mod fixed;
mod set;
mod spec;
mod studies;
mod wide;

pub use bar::{Bar, Scales, session_key};
pub use fixed::FX_SCALE;
pub use set::{
    EXTRA_PRICE_PLACES, IndicatorSet, IndicatorState, OSCILLATOR_PLACES, OutOfOrder, Reading, Value,
};
pub use spec::{
    Indicator, MAX_INDICATORS, MAX_PERIOD, MULTIPLIER_SCALE, Multiplier, OutputKind, SpecError,
    parse_indicators,
};
