//! Readings as the API shows them: each indicator's canonical name, its
//! outputs as exact decimal text, and the warm-up and range flags. Live
//! updates render straight to the protobuf message ([`render_pb`]); the
//! latest values in Redis and GetIndicators use [`IndicatorValue`] (JSON).

use serde::{Deserialize, Serialize};
use tickmesh_api::candles as pb;
use tickmesh_core::decimal::format_units;
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

/// The canonical names of a set's indicators and their outputs, made once
/// per set.
#[derive(Clone, Debug)]
pub struct Labels {
    indicators: Vec<(String, &'static [&'static str])>,
}

impl Labels {
    pub fn new(set: &IndicatorSet) -> Labels {
        Labels {
            indicators: set
                .indicators()
                .iter()
                .map(|i| (i.to_string(), i.outputs()))
                .collect(),
        }
    }
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
                .map(|(name, value)| {
                    (
                        name.to_string(),
                        value.map(|v| format_units(v.units, v.scale)),
                    )
                })
                .collect(),
            warming_up: reading.warming_up,
            out_of_range: reading.out_of_range,
        })
        .collect()
}

/// [`render`] as the protobuf message of the API.
pub fn render_pb(labels: &Labels, readings: &[Reading]) -> Vec<pb::IndicatorValue> {
    labels
        .indicators
        .iter()
        .zip(readings)
        .map(|((indicator, outputs), reading)| pb::IndicatorValue {
            indicator: indicator.clone(),
            outputs: outputs
                .iter()
                .zip(reading.values())
                .map(|(name, value)| pb::IndicatorOutput {
                    name: (*name).to_string(),
                    value: value.map(|v| format_units(v.units, v.scale)),
                })
                .collect(),
            warming_up: reading.warming_up,
            out_of_range: reading.out_of_range,
        })
        .collect()
}

/// The API message of a rendered value.
pub fn to_pb(v: &IndicatorValue) -> pb::IndicatorValue {
    pb::IndicatorValue {
        indicator: v.indicator.clone(),
        outputs: v
            .outputs
            .iter()
            .map(|(name, value)| pb::IndicatorOutput {
                name: name.clone(),
                value: value.clone(),
            })
            .collect(),
        warming_up: v.warming_up,
        out_of_range: v.out_of_range,
    }
}

/// A rendered value of an API message.
pub fn from_pb(v: &pb::IndicatorValue) -> IndicatorValue {
    IndicatorValue {
        indicator: v.indicator.clone(),
        outputs: v
            .outputs
            .iter()
            .map(|o| (o.name.clone(), o.value.clone()))
            .collect(),
        warming_up: v.warming_up,
        out_of_range: v.out_of_range,
    }
}
