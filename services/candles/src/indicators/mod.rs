//! Indicators on candles (SMA, EMA, WMA, RSI, MACD, Bollinger bands, ATR,
//! VWAP, OBV), computed with `tickmesh_indicators`:
//!
//! - [`render`]: readings as exact decimal text, with their indicator names;
//! - [`series`]: the state of a set of indicators before any candle, computed
//!   from the first candle of the series and continued from checkpoints kept
//!   in Redis every [`series::CHECKPOINT_EVERY`] final candles;
//! - [`query`]: GetIndicators (the candles of GetCandles with their values);
//! - [`live`]: one shared state per symbol × interval × set on each instance,
//!   giving every SubscribeCandles update its values;
//! - [`latest`]: the latest values per symbol × interval × set in Redis.
//!
//! Values are a pure function of the candles: nothing is accumulated in
//! Redis, so an aggregator or a server that dies mid-update cannot lose or
//! double-count anything. Checkpoints cover only final candles (closed, and
//! past the late window), are tagged with the symbol's indicator epoch (bumped
//! when candles are rewritten: repairs, a Redis that lost writes) and are
//! refused when the epoch moved.

pub mod latest;
pub mod live;
pub mod query;
pub mod render;
pub mod series;

use tickmesh_calendar::Interval;
use tickmesh_core::{Error, FieldViolation, Result};
use tickmesh_indicators::{Bar, IndicatorSet, Scales, parse_indicators, session_key};

use crate::candle::Candle;
use crate::directory::InstrumentInfo;

/// A set of indicators for one symbol and interval.
#[derive(Clone, Debug)]
pub struct SeriesSpec {
    pub symbol: String,
    pub interval: Interval,
    pub set: IndicatorSet,
    pub tz: chrono_tz::Tz,
    /// Short stable id of the set for Redis keys (hex of its canonical text).
    pub set_id: String,
    /// Names of the indicators and outputs, for rendering.
    pub labels: std::sync::Arc<render::Labels>,
}

impl SeriesSpec {
    /// Parses `indicators` for an instrument; `field` names the request field.
    pub fn new(
        info: &InstrumentInfo,
        interval: Interval,
        indicators: &[String],
        field: &str,
    ) -> Result<SeriesSpec> {
        if indicators.is_empty() {
            return Err(Error::InvalidArgument(vec![FieldViolation::new(
                field,
                "must name at least one indicator, e.g. [\"sma(20)\", \"rsi(14)\"]",
            )]));
        }
        let parsed = parse_indicators(indicators).map_err(|e| rename_field(e, field))?;
        let scales = Scales::new(info.price_scale, info.quantity_scale).map_err(Error::Internal)?;
        let set = IndicatorSet::new(parsed, scales);
        let set_id = format!(
            "{:016x}",
            tickmesh_core::page_token::fingerprint(&[&set.key()])
        );
        Ok(SeriesSpec {
            labels: std::sync::Arc::new(render::Labels::new(&set)),
            symbol: info.symbol.clone(),
            interval,
            set,
            tz: info.tz,
            set_id,
        })
    }

    /// The candle as the indicators read it.
    pub fn bar(&self, c: &Candle) -> Bar {
        Bar {
            open_ns: c.bucket.open_ns,
            high: c.high,
            low: c.low,
            close: c.close,
            volume: c.volume,
            session: session_key(c.bucket.open_ns, self.tz),
        }
    }
}

/// `parse_indicators` names its fields `indicators[i]`; a caller whose field
/// has another name gets it renamed.
fn rename_field(e: Error, field: &str) -> Error {
    match e {
        Error::InvalidArgument(violations) if field != "indicators" => Error::InvalidArgument(
            violations
                .into_iter()
                .map(|v| {
                    let name = v.field.replacen("indicators", field, 1);
                    FieldViolation::new(name, v.description)
                })
                .collect(),
        ),
        other => other,
    }
}
