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
//! [`LATEST_WRITE_EVERY`] per engine: an update only marks its engine, and
//! one writer per instance takes the newest candle and values of every
//! marked engine and writes them all at once.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use tickmesh_calendar::Interval;
use tickmesh_core::{Error, Result};
use tickmesh_indicators::{Bar, IndicatorState, Reading};
use tokio::sync::Notify;

use super::SeriesSpec;
use super::latest::{LatestStore, basis, basis_len};
use super::render::{encode_values, render};
use super::series::Series;
use crate::candle::Candle;
use crate::query::CandlesQuery;

/// Values handed to subscribers, encoded as the API sends them
/// ([`encode_values`]): shared, since many get the same (a clone only
/// counts a reference).
pub type Values = prost::bytes::Bytes;

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
    /// The engines alive on this instance (the latest-values writer holds it weakly).
    engines: Arc<Mutex<HashMap<EngineKey, Weak<Engine>>>>,
    /// Wakes the latest-values writer: an engine's candles changed.
    latest_due: Arc<Notify>,
    writer_started: AtomicBool,
}

impl Drop for LiveIndicators {
    fn drop(&mut self) {
        // The writer wakes, finds the engines gone, and ends.
        self.latest_due.notify_one();
    }
}

impl LiveIndicators {
    pub fn new(series: Arc<Series>, latest: Arc<LatestStore>) -> Self {
        Self {
            series,
            latest,
            engines: Arc::new(Mutex::new(HashMap::new())),
            latest_due: Arc::new(Notify::new()),
            writer_started: AtomicBool::new(false),
        }
    }

    /// The engine of a set, shared while anyone holds it.
    pub fn engine(&self, spec: SeriesSpec) -> Arc<Engine> {
        if !self.writer_started.swap(true, Ordering::AcqRel) {
            tokio::spawn(write_latest(
                Arc::downgrade(&self.engines),
                self.latest_due.clone(),
                self.latest.clone(),
            ));
        }
        let key = (spec.symbol.clone(), spec.interval, spec.set.key());
        let mut engines = self.engines.lock().expect("engines lock");
        if let Some(engine) = engines.get(&key).and_then(Weak::upgrade) {
            return engine;
        }
        engines.retain(|_, e| e.strong_count() > 0);
        let engine = Arc::new(Engine {
            spec,
            series: self.series.clone(),
            ready: Mutex::new(None),
            starting: tokio::sync::Mutex::new(()),
            latest_dirty: AtomicBool::new(false),
            latest_due: self.latest_due.clone(),
        });
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

pub struct Engine {
    spec: SeriesSpec,
    series: Arc<Series>,
    /// The state, once started; held only while computing (never across an await).
    ready: Mutex<Option<Ready>>,
    /// Held while the state starts, so it starts once.
    starting: tokio::sync::Mutex<()>,
    /// The candles changed since the latest values were last written.
    latest_dirty: AtomicBool,
    latest_due: Arc<Notify>,
}

/// What an engine's state gives for a candle.
enum Answer {
    Values(Computed),
    /// Not started yet.
    Start,
    /// A candle taken as final already: compute it from the stored series.
    FromSeries,
}

struct Ready {
    /// After the final candles.
    state: IndicatorState,
    /// Newest trade event time seen (from the candles' last trades).
    newest_event_ns: i64,
    /// Candles after `state` that may still change, latest revision of each.
    pending: BTreeMap<i64, Candle>,
    /// Values of pending candles by (open, revision).
    cache: HashMap<(i64, u64), Values>,
    /// Readings of the last committed candles, oldest first (rendered when
    /// a subscriber behind asks for one).
    recent: VecDeque<((i64, u64), Vec<Reading>)>,
    /// `state` with every pending candle but the newest taken in, and those
    /// candles' revisions and bars, oldest first: updates of the newest
    /// candle (nearly all of them) preview one candle on it instead of
    /// replaying the late window. It follows the candles as they move: a
    /// candle that opens is taken in, one that becomes final leaves the
    /// front, and a revision that leaves the bar as it was (a candle
    /// closing) changes nothing; only a changed bar starts it over.
    provisional: Option<(VecDeque<(u64, Bar)>, IndicatorState)>,
    /// Bumped by every change of `pending` but an update of its newest
    /// candle: while it stays, the provisional state checked for a candle
    /// still fits it without walking the pending candles again.
    pending_version: u64,
    /// (candle, `pending_version`) the provisional state was last checked for.
    provisional_checked: Option<(i64, u64)>,
    /// The newest candle taken as final (its readings are the newest of
    /// `recent`): the latest values while no candle is pending.
    last_final: Option<Candle>,
}

impl Ready {
    /// A newer state of a candle already taken as final was seen: a rewrite
    /// of it (not a client catching up on an older state).
    fn rewritten(&self, open: i64, revision: u64) -> bool {
        self.recent
            .iter()
            .any(|((o, rev), _)| *o == open && *rev < revision)
    }

    /// The state after every pending candle before `open` (the provisional
    /// state, brought up to date).
    fn provisional(&mut self, spec: &SeriesSpec, open: i64) -> Result<&IndicatorState> {
        if self.provisional_checked != Some((open, self.pending_version)) {
            self.bring_provisional_up_to(spec, open)?;
        }
        let (_, state) = self.provisional.as_ref().expect("provisional state");
        Ok(state)
    }

    /// Checks the provisional state against the pending candles before
    /// `open`, starts it over if one of them changed, and takes in the ones
    /// it lacks.
    fn bring_provisional_up_to(&mut self, spec: &SeriesSpec, open: i64) -> Result<()> {
        let mut before = self.pending.range(..open);
        let current = match &mut self.provisional {
            Some((bars, _)) => bars.iter_mut().all(|(revision, bar)| {
                let Some((_, c)) = before.next() else {
                    return false;
                };
                if c.bucket.open_ns != bar.open_ns {
                    return false;
                }
                if c.revision != *revision {
                    if spec.bar(c) != *bar {
                        return false;
                    }
                    *revision = c.revision;
                }
                true
            }),
            None => false,
        };
        if !current {
            self.provisional = Some((VecDeque::new(), self.state.clone()));
            before = self.pending.range(..open);
        }
        let (bars, state) = self.provisional.as_mut().expect("provisional state");
        for (_, c) in before {
            let bar = spec.bar(c);
            state.commit(&bar).map_err(|e| internal(spec, e))?;
            bars.push_back((c.revision, bar));
        }
        self.provisional_checked = Some((open, self.pending_version));
        Ok(())
    }
}

fn internal(spec: &SeriesSpec, e: impl std::fmt::Display) -> Error {
    Error::Internal(format!("live indicators of {}: {e}", spec.symbol))
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
        loop {
            let answer = {
                let mut guard = self.ready.lock().expect("engine lock");
                match guard.as_mut() {
                    None => Answer::Start,
                    Some(ready) => {
                        let answer = self.answer(ready, candle)?;
                        if matches!(answer, Answer::FromSeries)
                            && ready.rewritten(candle.bucket.open_ns, candle.revision)
                        {
                            // A rewrite of a final candle: start over from the candles.
                            *guard = None;
                        }
                        answer
                    }
                }
            };
            match answer {
                Answer::Values(computed) => return Ok(computed),
                Answer::FromSeries => {
                    return Ok(Computed::alone(self.values_from_series(candle).await?));
                }
                Answer::Start => {
                    let _starting = self.starting.lock().await;
                    if self.ready.lock().expect("engine lock").is_none() {
                        let ready = self.start().await?;
                        *self.ready.lock().expect("engine lock") = Some(ready);
                        self.mark_changed();
                    }
                }
            }
        }
    }

    /// The latest values are due for writing.
    fn mark_changed(&self) {
        if !self.latest_dirty.load(Ordering::Relaxed)
            && !self.latest_dirty.swap(true, Ordering::AcqRel)
        {
            self.latest_due.notify_one();
        }
    }

    /// [`values`](Self::values) on a started state, without waiting on anything.
    fn answer(&self, ready: &mut Ready, candle: &Candle) -> Result<Answer> {
        let key = (candle.bucket.open_ns, candle.revision);
        if let Some(v) = ready.cache.get(&key) {
            return Ok(Answer::Values(Computed::alone(v.clone())));
        }
        if ready
            .state
            .last_open_ns()
            .is_some_and(|last| candle.bucket.open_ns <= last)
        {
            if let Some((_, r)) = ready.recent.iter().rev().find(|(k, _)| *k == key) {
                return Ok(Answer::Values(Computed::alone(encode_values(
                    &self.spec.labels,
                    r,
                ))));
            }
            // A candle already taken as final: an old state of it (a client
            // catching up), or a rewrite.
            return Ok(Answer::FromSeries);
        }
        let late_window_ns = self.series.late_window_ns;
        let spec = &self.spec;
        ready.newest_event_ns = ready.newest_event_ns.max(candle.last.0);
        // Changed: a newer state. Moved: one whose bar (what the indicators
        // read) differs, so the values of the candles after it change too;
        // a candle closing with no trade after its last state changes only
        // its revision.
        let (changed, moved) = match ready.pending.get_mut(&key.0) {
            Some(p) if p.revision >= candle.revision => (false, false),
            Some(p) => {
                let moved = (p.high, p.low, p.close, p.volume)
                    != (candle.high, candle.low, candle.close, candle.volume);
                *p = candle.clone();
                (true, moved)
            }
            None => {
                ready.pending.insert(key.0, candle.clone());
                (true, true)
            }
        };
        if changed {
            self.mark_changed();
            if ready.pending.range(key.0 + 1..).next().is_some() {
                // Not the newest candle: provisional states must be checked again.
                ready.pending_version += 1;
            }
        }
        if moved && ready.pending.range(key.0 + 1..).next().is_some() {
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
            let bar = spec.bar(&first);
            let readings = ready.state.commit(&bar).map_err(|e| internal(spec, e))?;
            // The provisional state took this candle in already, unless it
            // changed since (or is the newest).
            match &mut ready.provisional {
                Some((bars, _)) if bars.front().is_some_and(|(_, b)| *b == bar) => {
                    bars.pop_front();
                }
                _ => {
                    ready.provisional = None;
                    ready.provisional_checked = None;
                }
            }
            ready.pending.remove(&open);
            ready.pending_version += 1;
            ready.cache.retain(|(o, _), _| *o != open);
            if ready.recent.len() == RECENT {
                ready.recent.pop_front();
            }
            ready.recent.push_back(((open, first.revision), readings));
            ready.last_final = Some(first);
        }
        if ready.state.last_open_ns().is_some_and(|last| key.0 <= last)
            && let Some((_, r)) = ready.recent.iter().rev().find(|(k, _)| *k == key)
        {
            return Ok(Answer::Values(Computed::alone(encode_values(
                &spec.labels,
                r,
            ))));
        }
        let newest_open = ready.pending.last_key_value().map(|(&open, _)| open);
        if newest_open == Some(key.0) {
            // The newest candle: one preview on the provisional state.
            let readings = ready
                .provisional(spec, key.0)?
                .preview(&spec.bar(candle))
                .map_err(|e| internal(spec, e))?;
            let values = encode_values(&spec.labels, &readings);
            if ready.cache.len() >= CACHE {
                ready.cache.clear();
            }
            ready.cache.insert(key, values.clone());
            return Ok(Answer::Values(Computed::alone(values)));
        }
        // Preview the pending candles up to this one (this one as given), and
        // on a change the ones after it too.
        let upto = if moved { i64::MAX } else { key.0 };
        let pending: Vec<&Candle> = ready
            .pending
            .range(..=upto)
            .map(|(&open, c)| if open == key.0 { candle } else { c })
            .collect();
        let bars: Vec<_> = pending.iter().map(|c| spec.bar(c)).collect();
        let readings = ready
            .state
            .preview_pending(&bars)
            .map_err(|e| internal(spec, e))?;
        if ready.cache.len() >= CACHE {
            ready.cache.clear();
        }
        let mut out = Computed::default();
        for (c, r) in pending.iter().zip(&readings) {
            let values = encode_values(&spec.labels, r);
            ready
                .cache
                .insert((c.bucket.open_ns, c.revision), values.clone());
            match c.bucket.open_ns.cmp(&key.0) {
                std::cmp::Ordering::Less => continue,
                std::cmp::Ordering::Equal => out.values = values,
                std::cmp::Ordering::Greater => out.followers.push(((*c).clone(), values)),
            }
        }
        Ok(Answer::Values(out))
    }

    /// The newest candle (its latest state), its readings, and their basis:
    /// what the latest-values writer stores.
    fn newest(&self) -> Result<Option<(Candle, Vec<Reading>, String)>> {
        let spec = &self.spec;
        let mut guard = self.ready.lock().expect("engine lock");
        let Some(ready) = guard.as_mut() else {
            return Ok(None);
        };
        let (candle, readings) = match ready.pending.last_key_value() {
            Some((&open, newest)) => {
                let newest = newest.clone();
                let readings = ready
                    .provisional(spec, open)?
                    .preview(&spec.bar(&newest))
                    .map_err(|e| internal(spec, e))?;
                (newest, readings)
            }
            None => match (&ready.last_final, ready.recent.back()) {
                (Some(candle), Some((_, readings))) => (candle.clone(), readings.clone()),
                _ => return Ok(None),
            },
        };
        let len = basis_len(self.series.late_window_ns, spec.interval);
        let newest_first = ready
            .pending
            .iter()
            .rev()
            .map(|(&open, c)| (open, c.revision))
            .chain(ready.recent.iter().rev().map(|(k, _)| *k))
            .take(len)
            .map(|(open, revision)| (open.div_euclid(1_000_000_000), revision));
        let mut text = String::new();
        basis(newest_first, &mut text);
        Ok(Some((candle, readings, text)))
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
            pending_version: 0,
            provisional_checked: None,
            last_final: None,
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
        Ok(encode_values(&self.spec.labels, &readings))
    }
}

/// Writes the newest values of the engines whose candles changed, all at
/// once, at most every [`LATEST_WRITE_EVERY`]; ends with the engines' registry.
async fn write_latest(
    engines: Weak<Mutex<HashMap<EngineKey, Weak<Engine>>>>,
    due: Arc<Notify>,
    latest: Arc<LatestStore>,
) {
    loop {
        due.notified().await;
        let Some(registry) = engines.upgrade() else {
            return;
        };
        let changed: Vec<Arc<Engine>> = registry
            .lock()
            .expect("engines lock")
            .values()
            .filter_map(Weak::upgrade)
            .filter(|e| e.latest_dirty.swap(false, Ordering::AcqRel))
            .collect();
        drop(registry);
        let writes = changed.iter().map(|engine| {
            let latest = &latest;
            async move {
                let spec = &engine.spec;
                match engine.newest() {
                    Ok(Some((candle, readings, basis))) => {
                        let values = render(&spec.set, &readings);
                        if let Err(e) = latest
                            .write(&engine.series.store, spec, &candle, &values, &basis)
                            .await
                        {
                            tracing::warn!(symbol = %spec.symbol, error = %e, "latest indicator values not written");
                        }
                    }
                    Ok(None) => {}
                    Err(e) => {
                        tracing::warn!(symbol = %spec.symbol, error = %e, "latest indicator values not computed");
                    }
                }
            }
        });
        futures_util::future::join_all(writes).await;
        drop(changed);
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
