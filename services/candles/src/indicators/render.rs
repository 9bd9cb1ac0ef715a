//! Readings as the API shows them: each indicator's canonical name, its
//! outputs as exact decimal text, and the warm-up and range flags. Live
//! updates render straight to protobuf bytes ([`encode_values`]), once per
//! candle state however many subscribers get it; the latest values in Redis
//! and GetIndicators use [`IndicatorValue`] (JSON).

use prost::bytes::Bytes;
use prost::encoding::encode_varint;
use serde::{Deserialize, Serialize};
use tickmesh_api::candles as pb;
use tickmesh_core::decimal::{extend_units, format_units};
use tickmesh_indicators::{IndicatorSet, Reading};

/// Field 14 of `Candle` (`repeated IndicatorValue indicators`), length-delimited.
const CANDLE_INDICATORS_KEY: u8 = (14 << 3) | 2;
/// Fields of `IndicatorValue` and `IndicatorOutput`.
const NAME_KEY: u8 = (1 << 3) | 2;
const OUTPUT_KEY: u8 = (2 << 3) | 2;
const VALUE_KEY: u8 = (2 << 3) | 2;
const WARMING_UP_KEY: u8 = 3 << 3;
const OUT_OF_RANGE_KEY: u8 = 4 << 3;

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
/// per set, as the protobuf name fields they are sent as: all in one buffer,
/// so an update reads a few cache lines of them.
#[derive(Clone, Debug)]
pub struct Labels {
    /// Every name field, back to back.
    fields: Vec<u8>,
    /// Per indicator: where its name field ends in `fields` (it starts
    /// where the previous label ends), then where each output's ends.
    indicators: Vec<IndicatorLabels>,
}

#[derive(Clone, Copy, Debug)]
struct IndicatorLabels {
    name_end: u32,
    outputs_end: [u32; 3],
    outputs: u8,
}

/// Appends a length-delimited string field 1 (`indicator`, or an output's
/// `name`) and returns where it ends.
fn push_name_field(fields: &mut Vec<u8>, name: &str) -> u32 {
    fields.push(NAME_KEY);
    encode_varint(name.len() as u64, fields);
    fields.extend_from_slice(name.as_bytes());
    fields.len() as u32
}

impl Labels {
    pub fn new(set: &IndicatorSet) -> Labels {
        let mut fields = Vec::new();
        let indicators = set
            .indicators()
            .iter()
            .map(|i| {
                let name_end = push_name_field(&mut fields, &i.to_string());
                let mut outputs_end = [name_end; 3];
                for (end, output) in outputs_end.iter_mut().zip(i.outputs()) {
                    *end = push_name_field(&mut fields, output);
                }
                IndicatorLabels {
                    name_end,
                    outputs_end,
                    outputs: i.outputs().len() as u8,
                }
            })
            .collect();
        Labels { fields, indicators }
    }
}

/// Writes a length-delimited field whose body `body` writes: the key, then
/// the body after room for a two-byte length, which moves up a byte when
/// one is enough (prost writes the shortest length).
fn delimited(out: &mut Vec<u8>, key: u8, body: impl FnOnce(&mut Vec<u8>)) {
    out.push(key);
    let at = out.len();
    out.extend_from_slice(&[0, 0]);
    body(out);
    let len = out.len() - at - 2;
    if len < 0x80 {
        out[at] = len as u8;
        out.copy_within(at + 2.., at + 1);
        out.pop();
    } else {
        assert!(len < 0x4000, "an indicator value is over 16 KiB");
        out[at] = (len as u8 & 0x7f) | 0x80;
        out[at + 1] = (len >> 7) as u8;
    }
}

/// The values of a set at one candle as the `indicators` entries of a
/// protobuf `Candle` (field 14), ready to follow the candle's other fields:
/// the bytes prost writes for [`render`]'s values, in one allocation.
pub fn encode_values(labels: &Labels, readings: &[Reading]) -> Bytes {
    let fields = &labels.fields;
    let mut out = Vec::with_capacity(fields.len() + 48 * labels.indicators.len() + 128);
    let mut start = 0;
    for (label, reading) in labels.indicators.iter().zip(readings) {
        delimited(&mut out, CANDLE_INDICATORS_KEY, |out| {
            let name_end = label.name_end as usize;
            out.extend_from_slice(&fields[start..name_end]);
            let mut output_start = name_end;
            for i in 0..usize::from(label.outputs) {
                let output_end = label.outputs_end[i] as usize;
                delimited(out, OUTPUT_KEY, |out| {
                    out.extend_from_slice(&fields[output_start..output_end]);
                    if let Some(v) = reading.output(i) {
                        delimited(out, VALUE_KEY, |out| extend_units(out, v.units, v.scale));
                    }
                });
                output_start = output_end;
            }
            if reading.warming_up {
                out.extend_from_slice(&[WARMING_UP_KEY, 1]);
            }
            if reading.out_of_range {
                out.extend_from_slice(&[OUT_OF_RANGE_KEY, 1]);
            }
            start = output_start;
        });
    }
    Bytes::from(out)
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

#[cfg(test)]
mod tests {
    use prost::Message;
    use tickmesh_indicators::bench::synthetic_bars;
    use tickmesh_indicators::{Bar, IndicatorSet, Scales, parse_indicators};

    use super::*;

    /// Readings of every candle of `bars`, committed in order.
    fn readings(set: &IndicatorSet, bars: &[Bar]) -> Vec<Vec<Reading>> {
        set.compute(bars).expect("bars in order")
    }

    /// The encoded values are exactly prost's encoding of a `Candle` that has
    /// only [`render`]'s values, and decode back to them.
    fn check(set: &IndicatorSet, readings: &[Reading]) {
        let encoded = encode_values(&Labels::new(set), readings);
        let rendered = render(set, readings);
        let candle = pb::Candle {
            indicators: rendered.iter().map(to_pb).collect(),
            ..Default::default()
        };
        assert_eq!(encoded.as_ref(), candle.encode_to_vec().as_slice());
        let decoded = pb::Candle::decode(encoded).expect("valid protobuf");
        assert_eq!(
            decoded.indicators.iter().map(from_pb).collect::<Vec<_>>(),
            rendered
        );
    }

    #[test]
    fn encoded_values_are_the_bytes_prost_writes_for_the_rendered_values() {
        let set = IndicatorSet::new(
            parse_indicators(&[
                "sma(20)",
                "ema(12)",
                "rsi(14)",
                "macd(12,26,9)",
                "bbands(20,2)",
                "atr(14)",
                "vwap",
                "obv",
                "wma(300)",
            ])
            .unwrap(),
            Scales::new(2, 8).unwrap(),
        );
        // Warming up (some values absent), then all present; names and
        // bodies past 127 bytes need two-byte lengths.
        for r in readings(&set, &synthetic_bars(400, 3)) {
            check(&set, &r);
        }
        assert!(encode_values(&Labels::new(&set), &[]).is_empty());
    }

    #[test]
    fn delimited_fields_have_the_shortest_length_prefix() {
        for len in [0, 1, 127, 128, 300, 16_383] {
            let body = vec![7u8; len];
            let mut ours = vec![1, 2];
            delimited(&mut ours, NAME_KEY, |out| out.extend_from_slice(&body));
            let mut expected = vec![1, 2];
            prost::encoding::bytes::encode(1, &body, &mut expected);
            assert_eq!(ours, expected, "body of {len} bytes");
        }
    }

    #[test]
    fn encoded_values_carry_the_out_of_range_flag() {
        let set = IndicatorSet::new(
            parse_indicators(&["obv", "sma(2)"]).unwrap(),
            Scales::new(0, 0).unwrap(),
        );
        let bar = |open_ns, close, volume| Bar {
            open_ns,
            high: close,
            low: 0,
            close,
            volume,
            session: 0,
        };
        // Two rises of i128::MAX/2 volume each overflow OBV.
        let all = readings(
            &set,
            &[
                bar(0, 0, i128::MAX / 2),
                bar(1, 1000, i128::MAX / 2),
                bar(2, i64::MAX, i128::MAX / 2),
            ],
        );
        let last = all.last().unwrap();
        assert!(last[0].out_of_range && !last[1].out_of_range);
        for r in &all {
            check(&set, r);
        }
    }
}
