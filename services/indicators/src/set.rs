//! A set of indicators over one instrument's candles: the streaming state
//! (closed candles committed in order, the open candle previewed as often as
//! it changes), the batch form over a slice, and the readings they give.

use std::fmt;

use tickmesh_core::decimal::format_units;

use crate::bar::{Bar, Scales};
use crate::fixed::FX_SCALE;
use crate::spec::{Indicator, OutputKind};
use crate::studies::{Cx, Study};

/// Decimal places printed beyond the price scale for price-like outputs.
pub const EXTRA_PRICE_PLACES: u32 = 8;

/// Decimal places of RSI.
pub const OSCILLATOR_PLACES: u32 = 8;

/// An exact decimal `units × 10^-scale`, printed with exactly `scale` places.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Value {
    pub units: i128,
    pub scale: u32,
}

impl fmt::Display for Value {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&format_units(self.units, self.scale))
    }
}

/// One indicator's values at one candle, one per [`Indicator::outputs`] name.
/// Compact (64 bytes): live engines keep and pass many of them.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Reading {
    /// Units of each output at `scale` (0 where absent).
    units: [i128; 3],
    /// Bit i: output i has a value.
    present: u8,
    len: u8,
    /// Decimal places of every output of the indicator.
    scale: u8,
    /// The candle comes before the indicator's warm-up is over
    /// ([`Indicator::warm_up`]); some or all values are absent.
    pub warming_up: bool,
    /// An intermediate result left the arithmetic's range (far beyond any
    /// real price or volume); the values are absent from here on.
    pub out_of_range: bool,
}

impl Reading {
    /// The values in the order of [`Indicator::outputs`]; `None` while
    /// warming up, for VWAP while its session has no volume, and when out of
    /// range.
    pub fn values(&self) -> impl ExactSizeIterator<Item = Option<Value>> + '_ {
        (0..usize::from(self.len)).map(|i| self.output(i))
    }

    /// Output `i` (in the order of [`Indicator::outputs`]).
    pub fn output(&self, i: usize) -> Option<Value> {
        (i < usize::from(self.len) && self.present >> i & 1 == 1).then(|| Value {
            units: self.units[i],
            scale: u32::from(self.scale),
        })
    }

    /// The first value (the only one, for single-output indicators).
    pub fn value(&self) -> Option<Value> {
        self.output(0)
    }
}

/// Parsed indicators for one instrument's scales: cheap to clone, the key of
/// a set of live values, and the factory of streaming states.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct IndicatorSet {
    indicators: Vec<Indicator>,
    scales: Scales,
}

impl IndicatorSet {
    pub fn new(indicators: Vec<Indicator>, scales: Scales) -> IndicatorSet {
        IndicatorSet { indicators, scales }
    }

    pub fn indicators(&self) -> &[Indicator] {
        &self.indicators
    }

    pub fn scales(&self) -> Scales {
        self.scales
    }

    /// The canonical text of the indicators, comma-separated
    /// (`sma(20),macd(12,26,9)`): equal for equal sets, usable in a key.
    pub fn key(&self) -> String {
        self.indicators
            .iter()
            .map(ToString::to_string)
            .collect::<Vec<_>>()
            .join(",")
    }

    /// The longest warm-up of the set: candles a query must read before the
    /// first one it returns for every value to be present there.
    pub fn warm_up(&self) -> u32 {
        self.indicators
            .iter()
            .map(Indicator::warm_up)
            .max()
            .unwrap_or(0)
    }

    /// Decimal places of an indicator's outputs at these scales: price scale
    /// + 8 (at most 18) for prices, 8 for RSI, the quantity scale for OBV.
    pub fn output_scale(&self, indicator: &Indicator) -> u32 {
        match indicator.output_kind() {
            OutputKind::Price => (self.scales.price + EXTRA_PRICE_PLACES).min(FX_SCALE),
            OutputKind::Oscillator => OSCILLATOR_PLACES,
            OutputKind::Volume => self.scales.quantity,
        }
    }

    /// A state with no candle in it yet.
    pub fn state(&self) -> IndicatorState {
        IndicatorState {
            set: self.clone(),
            cx: Cx {
                price_scale: self.scales.price,
                price_out: (self.scales.price + EXTRA_PRICE_PLACES).min(FX_SCALE),
                oscillator_out: OSCILLATOR_PLACES,
            },
            studies: self
                .indicators
                .iter()
                .map(|i| Slot {
                    study: Study::new(i),
                    out_of_range: false,
                })
                .collect(),
            committed: 0,
            last_open_ns: None,
        }
    }

    /// Restores a state saved by [`IndicatorState::checkpoint`] for this
    /// same set; refuses text saved for another set or damaged.
    pub fn restore(&self, checkpoint: &str) -> Result<IndicatorState, String> {
        let saved: Saved = serde_json::from_str(checkpoint)
            .map_err(|e| format!("unreadable indicator checkpoint: {e}"))?;
        if saved.set != self.key() || saved.studies.len() != self.indicators.len() {
            return Err(format!(
                "checkpoint of indicator set {:?} does not fit {:?}",
                saved.set,
                self.key()
            ));
        }
        let mut state = self.state();
        for (slot, restored) in state.studies.iter_mut().zip(saved.studies) {
            if std::mem::discriminant(&slot.study) != std::mem::discriminant(&restored.study) {
                return Err("checkpoint studies do not match the indicator set".into());
            }
            *slot = restored;
        }
        state.committed = saved.committed;
        state.last_open_ns = saved.last_open_ns;
        Ok(state)
    }

    /// Readings of every candle of `bars` (closed candles in increasing open
    /// time, the first one the start of the series): `result[i][j]` is
    /// indicator `j` at candle `i`. The same as committing them one by one to
    /// a new state.
    pub fn compute(&self, bars: &[Bar]) -> Result<Vec<Vec<Reading>>, OutOfOrder> {
        let mut state = self.state();
        bars.iter().map(|bar| state.commit(bar)).collect()
    }
}

/// A candle that does not come after the last committed one.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct OutOfOrder {
    pub last_open_ns: i64,
    pub open_ns: i64,
}

impl fmt::Display for OutOfOrder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "candle opening at {} ns is not after the last committed one ({} ns)",
            self.open_ns, self.last_open_ns
        )
    }
}

impl std::error::Error for OutOfOrder {}

#[derive(serde::Serialize)]
struct SavedRef<'a> {
    set: String,
    committed: u64,
    last_open_ns: Option<i64>,
    studies: &'a [Slot],
}

#[derive(serde::Deserialize)]
struct Saved {
    set: String,
    committed: u64,
    last_open_ns: Option<i64>,
    studies: Vec<Slot>,
}

#[derive(Clone, Debug, serde::Serialize, serde::Deserialize)]
struct Slot {
    study: Study,
    out_of_range: bool,
}

/// The streaming state of an [`IndicatorSet`] over one series of candles.
///
/// Closed candles go in with [`commit`](Self::commit), in increasing open
/// time; a candle at or before the last committed one is refused, so none
/// is counted twice. The open candle's values come from
/// [`preview`](Self::preview), as often as the candle is revised; nothing is
/// kept until it is committed, and the committed reading is the last
/// preview's when the candle did not change in between. Where closed candles
/// may still be corrected (late trades), commit a candle only once it is
/// final and preview the correctable ones with
/// [`preview_pending`](Self::preview_pending).
#[derive(Clone, Debug)]
pub struct IndicatorState {
    set: IndicatorSet,
    cx: Cx,
    studies: Vec<Slot>,
    committed: u64,
    last_open_ns: Option<i64>,
}

impl IndicatorState {
    pub fn set(&self) -> &IndicatorSet {
        &self.set
    }

    /// How many candles have been committed.
    pub fn committed(&self) -> u64 {
        self.committed
    }

    /// The open time of the last committed candle.
    pub fn last_open_ns(&self) -> Option<i64> {
        self.last_open_ns
    }

    fn check_order(&self, bar: &Bar) -> Result<(), OutOfOrder> {
        match self.last_open_ns {
            Some(last) if bar.open_ns <= last => Err(OutOfOrder {
                last_open_ns: last,
                open_ns: bar.open_ns,
            }),
            _ => Ok(()),
        }
    }

    /// The whole state as text (JSON), to be restored with
    /// [`IndicatorSet::restore`]: a state restored from it continues exactly
    /// as this one would.
    pub fn checkpoint(&self) -> String {
        serde_json::to_string(&SavedRef {
            set: self.set.key(),
            committed: self.committed,
            last_open_ns: self.last_open_ns,
            studies: &self.studies,
        })
        .expect("indicator state serializes")
    }

    /// The readings `bar` gives as the next candle, without taking it in.
    pub fn preview(&self, bar: &Bar) -> Result<Vec<Reading>, OutOfOrder> {
        self.check_order(bar)?;
        Ok(self
            .set
            .indicators
            .iter()
            .zip(&self.studies)
            .map(|(indicator, slot)| {
                let raw = if slot.out_of_range {
                    None
                } else {
                    slot.study.peek(bar, &self.cx).ok()
                };
                self.reading(indicator, raw)
            })
            .collect())
    }

    /// The readings of several candles after the committed ones (candles
    /// closed but still correctable, then the open one), without taking any
    /// in. One candle costs what [`preview`](Self::preview) does; more copy
    /// the state once.
    pub fn preview_pending(&self, pending: &[Bar]) -> Result<Vec<Vec<Reading>>, OutOfOrder> {
        match pending {
            [] => Ok(Vec::new()),
            [bar] => Ok(vec![self.preview(bar)?]),
            _ => {
                let mut scratch = self.clone();
                pending.iter().map(|bar| scratch.commit(bar)).collect()
            }
        }
    }

    /// Takes `bar` in as the next closed candle and returns its readings.
    pub fn commit(&mut self, bar: &Bar) -> Result<Vec<Reading>, OutOfOrder> {
        self.check_order(bar)?;
        let mut readings = Vec::with_capacity(self.studies.len());
        for i in 0..self.studies.len() {
            let slot = &mut self.studies[i];
            let raw = if slot.out_of_range {
                None
            } else {
                match slot.study.push(bar, &self.cx) {
                    Ok(raw) => Some(raw),
                    Err(_) => {
                        slot.out_of_range = true;
                        None
                    }
                }
            };
            readings.push(self.reading(&self.set.indicators[i], raw));
        }
        self.committed += 1;
        self.last_open_ns = Some(bar.open_ns);
        Ok(readings)
    }

    /// `raw` is `None` when out of range.
    fn reading(&self, indicator: &Indicator, raw: Option<[Option<i128>; 3]>) -> Reading {
        let mut reading = Reading {
            units: [0; 3],
            present: 0,
            len: indicator.outputs().len() as u8,
            // At most 18 places (FX_SCALE).
            scale: self.set.output_scale(indicator) as u8,
            warming_up: self.committed < u64::from(indicator.warm_up()),
            out_of_range: raw.is_none(),
        };
        for (i, units) in raw.iter().flatten().enumerate() {
            if let Some(units) = units {
                reading.units[i] = *units;
                reading.present |= 1 << i;
            }
        }
        reading
    }
}
