//! The aggregation state of one symbol: the open candle of every stored
//! interval, the recently closed ones a late trade may still correct, and the
//! last applied trade sequence. Pure logic: the aggregator feeds it trades and
//! writes what [`SymbolBook::take_changes`] returns to Redis atomically with
//! `applied_sequence`.
//!
//! Rules:
//! - a trade goes into the candle of its event time, per interval, in the
//!   instrument's time zone;
//! - a trade at or after the newest event time seen opens new candles as
//!   boundaries pass and closes the previous ones (event-time closing);
//! - a trade earlier than the newest seen but within the late window updates
//!   the candle it belongs to; if that candle was closed, its revision goes up
//!   and the update is a correction (counted in `late_corrections`);
//! - a trade older than the late window is counted in `late_dropped` and
//!   changes nothing;
//! - a candle also closes by the wall clock once its end plus the close grace
//!   has passed and the symbol has been idle for the grace (so a replay of old
//!   trades closes candles by event time only).

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use chrono_tz::Tz;
use tickmesh_calendar::{Interval, STORED};

use crate::candle::{Candle, Tick};

#[derive(Clone, Copy, Debug)]
pub struct BookConfig {
    pub late_window_ns: i64,
    pub close_grace_ns: i64,
}

/// Counter increments since the last write.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Counters {
    pub late_corrections: u64,
    pub late_dropped: u64,
    pub missed: u64,
}

#[derive(Debug)]
struct IntervalState {
    interval: Interval,
    current: Option<Candle>,
    recent: BTreeMap<i64, Candle>,
}

#[derive(Debug)]
pub struct SymbolBook {
    pub symbol: Arc<str>,
    pub tz: Tz,
    pub price_scale: u32,
    pub quantity_scale: u32,
    pub applied_sequence: u64,
    /// Newest event time applied (`i64::MIN` before any trade).
    pub newest_ns: i64,
    pub pending: Counters,
    config: BookConfig,
    intervals: Vec<IntervalState>,
    dirty: BTreeSet<(usize, i64)>,
    last_apply_wall_ns: i64,
}

impl SymbolBook {
    pub fn new(
        symbol: &str,
        tz: Tz,
        price_scale: u32,
        quantity_scale: u32,
        config: BookConfig,
    ) -> Self {
        Self {
            symbol: Arc::from(symbol),
            tz,
            price_scale,
            quantity_scale,
            applied_sequence: 0,
            newest_ns: i64::MIN,
            pending: Counters::default(),
            config,
            intervals: STORED
                .iter()
                .map(|&interval| IntervalState {
                    interval,
                    current: None,
                    recent: BTreeMap::new(),
                })
                .collect(),
            dirty: BTreeSet::new(),
            last_apply_wall_ns: i64::MIN,
        }
    }

    /// Restores state read back from Redis: the newest candle of each interval
    /// becomes the current one, older ones the recent ones.
    pub fn restore(&mut self, applied_sequence: u64, newest_ns: i64, candles: Vec<Candle>) {
        self.applied_sequence = applied_sequence;
        self.newest_ns = newest_ns;
        for candle in candles {
            let Some(state) = self
                .intervals
                .iter_mut()
                .find(|s| s.interval == candle.interval)
            else {
                continue;
            };
            match &state.current {
                Some(cur) if cur.bucket.open_ns >= candle.bucket.open_ns => {
                    state.recent.insert(candle.bucket.open_ns, candle);
                }
                _ => {
                    if let Some(old) = state.current.replace(candle) {
                        state.recent.insert(old.bucket.open_ns, old);
                    }
                }
            }
        }
    }

    /// Folds one trade in. Trades at or below the applied sequence are ignored.
    pub fn apply(&mut self, tick: Tick, wall_now_ns: i64) {
        if tick.sequence <= self.applied_sequence {
            return;
        }
        self.applied_sequence = tick.sequence;
        self.last_apply_wall_ns = wall_now_ns;
        if self.newest_ns != i64::MIN
            && tick.time_ns < self.newest_ns.saturating_sub(self.config.late_window_ns)
        {
            self.pending.late_dropped += 1;
            return;
        }
        self.newest_ns = self.newest_ns.max(tick.time_ns);
        let mut corrected = false;
        for (i, state) in self.intervals.iter_mut().enumerate() {
            let bucket = state.interval.bucket(tick.time_ns, self.tz);
            let fresh = || {
                Candle::new(
                    state.interval,
                    bucket,
                    tick,
                    self.price_scale,
                    self.quantity_scale,
                )
            };
            match state.current.as_mut() {
                None => state.current = Some(fresh()),
                Some(cur) if cur.bucket == bucket => {
                    corrected |= cur.closed;
                    cur.apply(tick);
                }
                Some(cur) if bucket.open_ns > cur.bucket.open_ns => {
                    if !cur.closed {
                        cur.closed = true;
                    }
                    let old = state.current.replace(fresh()).expect("current");
                    self.dirty.insert((i, old.bucket.open_ns));
                    state.recent.insert(old.bucket.open_ns, old);
                }
                Some(_) => match state.recent.get_mut(&bucket.open_ns) {
                    Some(candle) => {
                        corrected |= candle.closed;
                        candle.apply(tick);
                    }
                    None => {
                        let mut candle = fresh();
                        candle.closed = true;
                        corrected = true;
                        state.recent.insert(bucket.open_ns, candle);
                    }
                },
            }
            self.dirty.insert((i, bucket.open_ns));
        }
        if corrected {
            self.pending.late_corrections += 1;
        }
    }

    /// Trades the aggregator will never see (the tick log was trimmed past them).
    pub fn skip(&mut self, through_sequence: u64) {
        if through_sequence > self.applied_sequence {
            self.pending.missed += through_sequence - self.applied_sequence;
            self.applied_sequence = through_sequence;
        }
    }

    /// Closes open candles whose end (plus grace) has passed while the symbol was idle.
    pub fn close_due(&mut self, wall_now_ns: i64) {
        let grace = self.config.close_grace_ns;
        if wall_now_ns.saturating_sub(self.last_apply_wall_ns) < grace {
            return;
        }
        for (i, state) in self.intervals.iter_mut().enumerate() {
            if let Some(cur) = state.current.as_mut()
                && !cur.closed
                && cur.bucket.close_ns.saturating_add(grace) <= wall_now_ns
            {
                cur.closed = true;
                self.dirty.insert((i, cur.bucket.open_ns));
            }
        }
    }

    /// True when there is something to write.
    pub fn has_changes(&self) -> bool {
        !self.dirty.is_empty() || self.pending != Counters::default()
    }

    /// The candles changed since the last call, each with its revision bumped
    /// once, oldest interval first; forgets recent candles past the late window.
    pub fn take_changes(&mut self) -> Vec<Candle> {
        let mut out = Vec::with_capacity(self.dirty.len());
        for (i, open_ns) in std::mem::take(&mut self.dirty) {
            let state = &mut self.intervals[i];
            let candle = match state.current.as_mut() {
                Some(cur) if cur.bucket.open_ns == open_ns => Some(cur),
                _ => state.recent.get_mut(&open_ns),
            };
            if let Some(candle) = candle {
                candle.revision += 1;
                out.push(candle.clone());
            }
        }
        let horizon = self.newest_ns.saturating_sub(self.config.late_window_ns);
        for state in &mut self.intervals {
            state.recent.retain(|_, c| c.bucket.close_ns > horizon);
        }
        out
    }

    /// The current candle of each stored interval.
    pub fn current(&self) -> impl Iterator<Item = &Candle> {
        self.intervals.iter().filter_map(|s| s.current.as_ref())
    }
}
