//! Readings as the API shows them: each indicator's canonical name, its
//! outputs as exact decimal text, and the warm-up and range flags. The same
//! form is kept in Redis as the latest values (JSON).

use serde::{Deserialize, Serialize};
use tickmesh_indicators::{IndicatorSet, Reading};

/// One indicator's values at one candle.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct IndicatorValue {
    /// Canonical form, e.g. `macd(12,26,9)`.
    pub indicator: String,
    /// `(output name, value)`; `None` while warming up or out of range.
    pub outputs: Vec<(String, Option<String>)>,
    pub warming_up: bool,
    pub out_of_range: bool,
}

/// The values of a set at one candle, in the set's order.
pub fn render(set: &IndicatorSet, readings: &[Reading]) -> Vec<IndicatorValue> {
    set.indicators()
        .iter()
        .zip(readings)
        .map(|(indicator, reading)| IndicatorValue {
            indicator: indicator.to_string(),
            outputs: indicator
                .outputs()
                .iter()
                .zip(reading.values())
                .map(|(name, value)| (name.to_string(), value.map(|v| v.to_string())))
                .collect(),
            warming_up: reading.warming_up,
            out_of_range: reading.out_of_range,
        })
        .collect()
}
