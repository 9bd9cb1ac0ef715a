//! Indicator values for SubscribeCandles: one engine per symbol × interval ×
//! indicator set on each instance, shared by every subscriber of that set
//! here, so an update's values are computed once however many clients get it.
//!
//! An engine holds the state of the set after the symbol's *final* candles
//! (closed, and older than the late window behind the newest trade seen),
//! and the candles after them that may still change (the open one, and closed
//! ones a late trade may still correct). An update's values are a preview
//! over those, so a late correction gives the revised values of that candle
//! and of every candle after it, and a candle that closes gets its final
//! values. Values come cached by (candle, revision). The newest candle's
//! values go to Redis as the set's latest, at most every
//! [`LATEST_WRITE_EVERY`] per engine.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use tickmesh_calendar::Interval;
use tickmesh_core::{Error, Result};
use tickmesh_indicators::{IndicatorState, Reading};
use tokio::sync::watch;

use super::SeriesSpec;
use super::latest::{LatestStore, basis, basis_len};
use super::render::{render, render_pb};
use super::series::Series;
use crate::candle::Candle;
use crate::query::CandlesQuery;

/// Values handed to subscribers, as the API sends them: shared, since many
/// get the same.
pub type Values = Arc<Vec<tickmesh_api::candles::IndicatorValue>>;

/// Latest values go to Redis at most this often per engine.
pub const LATEST_WRITE_EVERY: Duration = Duration::from_secs(1);
/// Values of committed candles kept for subscribers that are behind.
const RECENT: usize = 128;
/// Values of pending candles cached by revision.
const CACHE: usize = 64;

type EngineKey = (String, Interval, String);

pub struct LiveIndicators {
    pub series: Arc<Series>,
    pub latest: Arc<LatestStore>,
    engines: Mutex<HashMap<EngineKey, Weak<Engine>>>,
}

impl LiveIndicators {
    pub fn new(series: Arc<Series>, latest: Arc<LatestStore>) -> Self {
        Self {
            series,
            latest,
            engines: Mutex::new(HashMap::new()),
        }
    }

    /// The engine of a set, shared while anyone holds it.
    pub fn engine(&self, spec: SeriesSpec) -> Arc<Engine> {
        let key = (spec.symbol.clone(), spec.interval, spec.set.key());
        let mut engines = self.engines.lock().expect("engines lock");
        if let Some(engine) = engines.get(&key).and_then(Weak::upgrade) {
            return engine;
        }
        engines.retain(|_, e| e.strong_count() > 0);
        let (latest_tx, latest_rx) = watch::channel(None);
        let engine = Arc::new(Engine {
            spec: spec.clone(),
            series: self.series.clone(),
            inner: tokio::sync::Mutex::new(None),
            latest_tx,
        });
        tokio::spawn(write_latest(
            self.series.clone(),
            self.latest.clone(),
            spec,
            latest_rx,
        ));
        engines.insert(key, Arc::downgrade(&engine));
        engine
    }

    /// Engines alive on this instance.
    pub fn engines(&self) -> usize {
        let engines = self.engines.lock().expect("engines lock");
        engines.values().filter(|e| e.strong_count() > 0).count()
    }
}

/// The values of a candle state, and of the newer candles whose values it changed.
#[derive(Debug, Default)]
pub struct Computed {
    pub values: Values,
    pub followers: Vec<(Candle, Values)>,
}

impl Computed {
    fn alone(values: Values) -> Computed {
        Computed {
            values,
            followers: Vec::new(),
        }
    }
}

/// What the latest-values writer gets: the newest candle, its readings and
/// their basis.
#[derive(Clone, Debug)]
struct LatestSlot {
    candle: Candle,
    readings: Vec<Reading>,
    basis: String,
}

pub struct Engine {
    spec: SeriesSpec,
    series: Arc<Series>,
    inner: tokio::sync::Mutex<Option<Ready>>,
    latest_tx: watch::Sender<Option<LatestSlot>>,
}

struct Ready {
    /// After the final candles.
    state: IndicatorState,
    /// Newest trade event time seen (from the candles' last trades).
    newest_event_ns: i64,
    /// Candles after `state` that may still change, latest revision of each.
    pending: BTreeMap<i64, Candle>,
    /// Values of pending candles by (open, revision), while a message still
    /// holds them (weak: the message that is sent last takes them over
    /// without a copy).
    cache: HashMap<(i64, u64), Weak<Vec<tickmesh_api::candles::IndicatorValue>>>,
    /// Values of the last committed candles, oldest first.
    recent: VecDeque<((i64, u64), Values)>,
    /// `state` with every pending candle but the newest taken in, and those
    /// candles' (open, revision): updates of the newest candle (nearly all
    /// of them) preview one candle on it instead of replaying the late window.
    provisional: Option<(Vec<(i64, u64)>, IndicatorState)>,
}

impl Engine {
    pub fn spec(&self) -> &SeriesSpec {
        &self.spec
    }

    /// The values of the set at `candle` (a state of it from the updates
    /// log). When this state revises a candle that newer ones follow (a late
    /// correction), their values change too: they come back as followers,
    /// each the newest state of that candle with its new values.
    pub async fn values(&self, candle: &Candle) -> Result<Computed> {
        let key = (candle.bucket.open_ns, candle.revision);
        let mut guard = self.inner.lock().await;
        if guard.is_none() {
            *guard = Some(self.start().await?);
        }
        let ready = guard.as_mut().expect("started");
        if let Some(v) = ready.cache.get(&key).and_then(Weak::upgrade) {
            return Ok(Computed::alone(v));
        }
        if ready
            .state
            .last_open_ns()
            .is_some_and(|last| candle.bucket.open_ns <= last)
        {
            if let Some((_, v)) = ready.recent.iter().rev().find(|(k, _)| *k == key) {
                return Ok(Computed::alone(v.clone()));
            }
            // A candle already taken as final: an old state of it (a client
            // catching up), or a rewrite (then start over from the candles).
            let newer = ready
                .recent
                .iter()
                .any(|((open, rev), _)| *open == key.0 && *rev < key.1);
            if newer {
                *guard = None;
            }
            drop(guard);
            return Ok(Computed::alone(self.values_from_series(candle).await?));
        }
        let late_window_ns = self.series.late_window_ns;
        let spec = &self.spec;
        ready.newest_event_ns = ready.newest_event_ns.max(candle.last.0);
        let changed = match ready.pending.get_mut(&key.0) {
            Some(p) if p.revision >= candle.revision => false,
            Some(p) => {
                *p = candle.clone();
                true
            }
            None => {
                ready.pending.insert(key.0, candle.clone());
                true
            }
        };
        if changed && ready.pending.range(key.0 + 1..).next().is_some() {
            // Values of the candles after this one were computed with its old state.
            ready.cache.retain(|(o, _), _| *o <= key.0);
        }
        // Take in the candles that became final, oldest first.
        let final_until = ready.newest_event_ns.saturating_sub(late_window_ns);
        while let Some((&open, first)) = ready.pending.first_key_value()
            && first.closed
            && first.bucket.close_ns <= final_until
        {
            let first = first.clone();
            let readings = ready
                .state
                .commit(&spec.bar(&first))
                .map_err(|e| Error::Internal(format!("live indicators of {}: {e}", spec.symbol)))?;
            let values: Values = Arc::new(render_pb(&spec.labels, &readings));
            ready.pending.remove(&open);
            ready.cache.retain(|(o, _), _| *o != open);
            if ready.recent.len() == RECENT {
                ready.recent.pop_front();
            }
            ready.recent.push_back(((open, first.revision), values));
        }
        if let Some((_, v)) = ready.recent.iter().rev().find(|(k, _)| *k == key) {
            return Ok(Computed::alone(v.clone()));
        }
        let newest_open = ready.pending.last_key_value().map(|(&open, _)| open);
        if newest_open == Some(key.0) {
            // The newest candle: one preview on the provisional state.
            let fresh = ready.provisional.as_ref().is_some_and(|(basis, _)| {
                basis
                    .iter()
                    .copied()
                    .eq(ready.pending.range(..key.0).map(|(&o, c)| (o, c.revision)))
            });
            if !fresh {
                let mut state = ready.state.clone();
                let mut basis = Vec::new();
                for (&open, c) in ready.pending.range(..key.0) {
                    state.commit(&spec.bar(c)).map_err(|e| {
                        Error::Internal(format!("live indicators of {}: {e}", spec.symbol))
                    })?;
                    basis.push((open, c.revision));
                }
                ready.provisional = Some((basis, state));
            }
            let (_, state) = ready.provisional.as_ref().expect("provisional state");
            let readings = state
                .preview(&spec.bar(candle))
                .map_err(|e| Error::Internal(format!("live indicators of {}: {e}", spec.symbol)))?;
            let values: Values = Arc::new(render_pb(&spec.labels, &readings));
            if ready.cache.len() >= CACHE {
                ready.cache.clear();
            }
            ready.cache.insert(key, Arc::downgrade(&values));
            if ready.pending.get(&key.0).map(|p| p.revision) == Some(key.1) {
                self.publish_latest(ready, candle, &readings);
            }
            return Ok(Computed::alone(values));
        }
        // Preview the pending candles up to this one (this one as given), and
        // on a change the ones after it too.
        let upto = if changed { i64::MAX } else { key.0 };
        let pending: Vec<&Candle> = ready
            .pending
            .range(..=upto)
            .map(|(&open, c)| if open == key.0 { candle } else { c })
            .collect();
        let bars: Vec<_> = pending.iter().map(|c| spec.bar(c)).collect();
        let readings = ready
            .state
            .preview_pending(&bars)
            .map_err(|e| Error::Internal(format!("live indicators of {}: {e}", spec.symbol)))?;
        if ready.cache.len() >= CACHE {
            ready.cache.clear();
        }
        let mut out = Computed::default();
        let mut newest = None;
        for (c, r) in pending.iter().zip(&readings) {
            let values: Values = Arc::new(render_pb(&spec.labels, r));
            ready
                .cache
                .insert((c.bucket.open_ns, c.revision), Arc::downgrade(&values));
            match c.bucket.open_ns.cmp(&key.0) {
                std::cmp::Ordering::Less => continue,
                std::cmp::Ordering::Equal => out.values = values,
                std::cmp::Ordering::Greater => out.followers.push(((*c).clone(), values)),
            }
            newest = Some((*c, r));
        }
        let newest_open = ready.pending.last_key_value().map(|(&open, _)| open);
        if let Some((c, r)) = newest
            && Some(c.bucket.open_ns) == newest_open
            && ready.pending.get(&c.bucket.open_ns).map(|p| p.revision) == Some(c.revision)
        {
            let c = c.clone();
            self.publish_latest(ready, &c, r);
        }
        Ok(out)
    }

    /// Hands the newest candle's readings and their basis to the
    /// latest-values writer (reusing its buffers: no copy of rendered values
    /// per update).
    fn publish_latest(&self, ready: &Ready, candle: &Candle, readings: &[Reading]) {
        let len = basis_len(self.series.late_window_ns, self.spec.interval);
        let newest = ready
            .pending
            .iter()
            .rev()
            .map(|(&open, c)| (open, c.revision))
            .chain(ready.recent.iter().rev().map(|(k, _)| *k))
            .take(len)
            .map(|(open, revision)| (open.div_euclid(1_000_000_000), revision));
        self.latest_tx.send_modify(|slot| match slot {
            Some(s) => {
                s.candle.clone_from(candle);
                s.readings.clear();
                s.readings.extend_from_slice(readings);
                basis(newest, &mut s.basis);
            }
            None => {
                let mut text = String::new();
                basis(newest, &mut text);
                *slot = Some(LatestSlot {
                    candle: candle.clone(),
                    readings: readings.to_vec(),
                    basis: text,
                });
            }
        });
    }

    /// A new engine's state: the series up to the first candle that may
    /// still change, then the candles from there.
    async fn start(&self) -> Result<Ready> {
        let spec = &self.spec;
        let finality = self.series.finality(&spec.symbol).await?;
        // Candles opening before the bucket of the finality line are final.
        let boundary = (finality.final_until_ns > i64::MIN / 2).then(|| {
            spec.interval
                .bucket(finality.final_until_ns, spec.tz)
                .open_ns
        });
        let state = match boundary {
            Some(b) => self.series.state_before(spec, &finality, b).await?,
            None => spec.set.state(),
        };
        let mut pending = BTreeMap::new();
        let mut newest_event_ns = finality
            .final_until_ns
            .saturating_add(self.series.late_window_ns);
        let mut token = String::new();
        loop {
            let (page, next) = self
                .series
                .query
                .get_candles(CandlesQuery {
                    symbol: spec.symbol.clone(),
                    interval: spec.interval.to_string(),
                    start_ns: boundary,
                    end_ns: None,
                    page_size: 1000,
                    page_token: token,
                    newest_first: false,
                    fill: false,
                })
                .await?;
            for c in page {
                if state.last_open_ns().is_none_or(|l| c.bucket.open_ns > l) {
                    newest_event_ns = newest_event_ns.max(c.last.0);
                    pending.insert(c.bucket.open_ns, c);
                }
            }
            if next.is_empty() {
                break;
            }
            token = next;
        }
        Ok(Ready {
            state,
            newest_event_ns,
            pending,
            cache: HashMap::new(),
            recent: VecDeque::new(),
            provisional: None,
        })
    }

    /// Values of a candle computed from the stored series (the slow path).
    async fn values_from_series(&self, candle: &Candle) -> Result<Values> {
        let finality = self.series.finality(&self.spec.symbol).await?;
        let state = self
            .series
            .state_before(&self.spec, &finality, candle.bucket.open_ns)
            .await?;
        let readings = state
            .preview(&self.spec.bar(candle))
            .map_err(|e| Error::Internal(format!("indicators of {}: {e}", self.spec.symbol)))?;
        Ok(Arc::new(render_pb(&self.spec.labels, &readings)))
    }
}

/// Writes an engine's newest values to Redis, at most every
/// [`LATEST_WRITE_EVERY`]; ends with the engine.
async fn write_latest(
    series: Arc<Series>,
    latest: Arc<LatestStore>,
    spec: SeriesSpec,
    mut rx: watch::Receiver<Option<LatestSlot>>,
) {
    while rx.changed().await.is_ok() {
        let Some(slot) = rx.borrow_and_update().clone() else {
            continue;
        };
        let values = render(&spec.set, &slot.readings);
        if let Err(e) = latest
            .write(&series.store, &spec, &slot.candle, &values, &slot.basis)
            .await
        {
            tracing::warn!(symbol = %spec.symbol, error = %e, "latest indicator values not written");
        }
        tokio::time::sleep(LATEST_WRITE_EVERY).await;
    }
}

/// Gives every candle of a subscription's message its values (same order,
/// same cursor). A late correction also changes the values of the newer
/// candles: their newest states follow at the end of the message with their
/// new values, unless the message itself goes on to carry them.
pub async fn with_values(
    mut message: crate::subscribe::Message,
    engines: &[Arc<Engine>],
) -> Result<crate::subscribe::Message> {
    let mut values = Vec::with_capacity(message.candles.len());
    // (interval, open) -> (index of the candle that revised it, state, values)
    let mut followers: BTreeMap<(Interval, i64), (usize, Candle, Values)> = BTreeMap::new();
    for (i, candle) in message.candles.iter().enumerate() {
        let Some(engine) = engines.iter().find(|e| e.spec.interval == candle.interval) else {
            values.push(Values::default());
            continue;
        };
        let computed = engine.values(candle).await?;
        values.push(computed.values);
        for (c, v) in computed.followers {
            followers.insert((c.interval, c.bucket.open_ns), (i, c, v));
        }
    }
    for ((interval, open), (from, c, v)) in followers {
        let carried_later = message.candles[from + 1..]
            .iter()
            .any(|later| later.interval == interval && later.bucket.open_ns == open);
        if !carried_later {
            message.candles.push(c);
            values.push(v);
        }
    }
    message.indicators = values;
    Ok(message)
}
