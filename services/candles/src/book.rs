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
//!
//! How it stays fast: every stored candle is a union of whole 1m candles (all
//! buckets start at a minute of the local day, and a minute never straddles a
//! boundary). So a trade in the current minute updates only the 1m candle;
//! each larger interval keeps the fold of its completed minutes, and its
//! current candle is that fold merged with the current minute when changes
//! are taken. Minute rollovers fold the minute in (13 merges per minute, not
//! per trade). Only late trades for earlier minutes, and the rest of the
//! minute in progress when state was restored from Redis (whose stored larger
//! candles already contain that minute), take the slower path through every
//! interval.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use chrono_tz::Tz;
use tickmesh_calendar::{Bucket, Interval, STORED};

use crate::candle::{Candle, Tick};
use crate::revision_floor::{Pruned, RevisionFloor};

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

/// The current candle of an interval larger than 1m.
#[derive(Debug)]
struct Larger {
    interval: Interval,
    bucket: Bucket,
    /// Completed minutes of this bucket (and late trades for them).
    folded: Option<Candle>,
    revision: u64,
    closed: bool,
    dirty: bool,
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
    /// Candle writes Redis held when the book was loaded, plus those made
    /// since: the write script refuses a book built on other writes.
    pub writes: u64,
    /// After a reload from a Redis that lost writes: the revisions readers
    /// may have seen, which candles written again must go above.
    floor: Option<Box<RevisionFloor>>,
    /// Candles let go of past the late window (for the next reload's floor).
    pruned: Pruned,
    config: BookConfig,
    /// The current 1m candle.
    minute: Option<Candle>,
    /// True when the larger intervals' folds already contain the current
    /// minute (after a restore): its trades then go into them directly.
    minute_folded: bool,
    minute_dirty: bool,
    /// Current candles of 3m … 1Y (STORED[1..]); `None` before their first trade.
    larger: Vec<Option<Larger>>,
    /// Recently closed candles per interval (STORED order), for late trades.
    recent: Vec<BTreeMap<i64, Candle>>,
    dirty_recent: BTreeSet<(usize, i64)>,
    last_apply_wall_ns: i64,
}

const MINUTE: Interval = STORED[0];

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
            writes: 0,
            floor: None,
            pruned: Pruned::new(STORED.len()),
            config,
            minute: None,
            minute_folded: false,
            minute_dirty: false,
            larger: (1..STORED.len()).map(|_| None).collect(),
            recent: (0..STORED.len()).map(|_| BTreeMap::new()).collect(),
            dirty_recent: BTreeSet::new(),
            last_apply_wall_ns: i64::MIN,
        }
    }

    /// Restores state read back from Redis: the newest candle of each interval
    /// becomes the current one, older ones the recent ones.
    pub fn restore(&mut self, applied_sequence: u64, newest_ns: i64, mut candles: Vec<Candle>) {
        self.applied_sequence = applied_sequence;
        self.newest_ns = newest_ns;
        candles.sort_by_key(|c| c.bucket.open_ns);
        for candle in candles {
            let Some(i) = STORED.iter().position(|s| *s == candle.interval) else {
                continue;
            };
            if i == 0 {
                if let Some(old) = self.minute.replace(candle) {
                    self.recent[0].insert(old.bucket.open_ns, old);
                }
                continue;
            }
            let replaced = self.larger[i - 1].replace(Larger {
                interval: candle.interval,
                bucket: candle.bucket,
                revision: candle.revision,
                closed: candle.closed,
                dirty: false,
                folded: Some(candle),
            });
            if let Some(old) = replaced.and_then(|l| l.folded) {
                self.recent[i].insert(old.bucket.open_ns, old);
            }
        }
        // The stored larger candles already contain the current minute's
        // trades so far.
        self.minute_folded = self.minute.is_some();
    }

    /// Every candle of the book: ((interval index, open), (close, revision)).
    fn held(&self) -> Vec<((usize, i64), (i64, u64))> {
        let mut out = Vec::new();
        if let Some(m) = &self.minute {
            out.push(((0, m.bucket.open_ns), (m.bucket.close_ns, m.revision)));
        }
        for (i, l) in self.larger.iter().enumerate() {
            if let Some(l) = l {
                out.push(((i + 1, l.bucket.open_ns), (l.bucket.close_ns, l.revision)));
            }
        }
        for (i, recent) in self.recent.iter().enumerate() {
            for c in recent.values() {
                out.push(((i, c.bucket.open_ns), (c.bucket.close_ns, c.revision)));
            }
        }
        out
    }

    /// After reading the book back from a Redis that may have lost writes:
    /// `old` is the book as this aggregator had it. Every candle whose
    /// revision in Redis is below one readers may have seen is written again
    /// above it (with what the tick log now says), and candles Redis lost
    /// entirely start above their old revision when trades recreate them.
    pub fn carry_revisions_from(&mut self, old: &SymbolBook) {
        let floor = RevisionFloor::from_book(old.held(), &old.pruned, old.floor.as_deref());
        self.pruned = old.pruned.clone();
        if let Some(m) = self.minute.as_mut() {
            let f = floor.get(0, m.bucket.open_ns, m.bucket.close_ns);
            if m.revision < f {
                m.revision = f;
                self.minute_dirty = true;
            }
        }
        for (i, l) in self.larger.iter_mut().enumerate() {
            if let Some(l) = l {
                let f = floor.get(i + 1, l.bucket.open_ns, l.bucket.close_ns);
                if l.revision < f {
                    l.revision = f;
                    l.dirty = true;
                }
            }
        }
        for (i, recent) in self.recent.iter_mut().enumerate() {
            for c in recent.values_mut() {
                let f = floor.get(i, c.bucket.open_ns, c.bucket.close_ns);
                if c.revision < f {
                    c.revision = f;
                    self.dirty_recent.insert((i, c.bucket.open_ns));
                }
            }
        }
        self.floor = Some(Box::new(floor));
    }

    /// Folds one trade in. Trades at or below the applied sequence are ignored.
    #[inline]
    pub fn apply(&mut self, tick: Tick, wall_now_ns: i64) {
        if tick.sequence <= self.applied_sequence {
            return;
        }
        // Fast path: a trade in the current minute, not after a restore.
        if !self.minute_folded
            && let Some(minute) = self.minute.as_mut()
            && minute.bucket.contains(tick.time_ns)
            && !minute.closed
            && tick.time_ns >= self.newest_ns.saturating_sub(self.config.late_window_ns)
        {
            self.applied_sequence = tick.sequence;
            self.last_apply_wall_ns = wall_now_ns;
            if tick.time_ns > self.newest_ns {
                self.newest_ns = tick.time_ns;
            }
            minute.apply(tick);
            self.minute_dirty = true;
            return;
        }
        self.apply_slow(tick, wall_now_ns);
    }

    #[inline(never)]
    fn apply_slow(&mut self, tick: Tick, wall_now_ns: i64) {
        self.applied_sequence = tick.sequence;
        self.last_apply_wall_ns = wall_now_ns;
        if self.newest_ns != i64::MIN
            && tick.time_ns < self.newest_ns.saturating_sub(self.config.late_window_ns)
        {
            self.pending.late_dropped += 1;
            return;
        }
        if tick.time_ns > self.newest_ns {
            self.newest_ns = tick.time_ns;
        }
        if let Some(minute) = self.minute.as_mut()
            && minute.bucket.contains(tick.time_ns)
        {
            if minute.closed {
                self.pending.late_corrections += 1;
            }
            minute.apply(tick);
            self.minute_dirty = true;
            if self.minute_folded {
                let bucket = minute.bucket;
                for larger in self.larger.iter_mut().flatten() {
                    if larger.bucket.contains(bucket.open_ns) {
                        match larger.folded.as_mut() {
                            Some(f) => f.apply(tick),
                            None => {
                                larger.folded = Some(Candle::new(
                                    larger.interval,
                                    larger.bucket,
                                    tick,
                                    self.price_scale,
                                    self.quantity_scale,
                                ))
                            }
                        }
                        larger.dirty = true;
                    }
                }
            }
            return;
        }
        let later = self
            .minute
            .as_ref()
            .is_none_or(|m| tick.time_ns >= m.bucket.close_ns);
        if later {
            self.next_minute(tick);
        } else {
            self.late(tick);
        }
    }

    /// A trade in a minute after the current one: close the minute, fold it
    /// into the larger intervals, roll those whose bucket ended.
    fn next_minute(&mut self, tick: Tick) {
        if let Some(mut old) = self.minute.take() {
            if !old.closed {
                old.closed = true;
            }
            if !self.minute_folded {
                self.fold(&old);
            }
            self.dirty_recent.insert((0, old.bucket.open_ns));
            self.recent[0].insert(old.bucket.open_ns, old);
        }
        self.minute_folded = false;
        let bucket = MINUTE.bucket(tick.time_ns, self.tz);
        for (i, &interval) in STORED.iter().enumerate().skip(1) {
            let rolls = self.larger[i - 1]
                .as_ref()
                .is_none_or(|l| !l.bucket.contains(bucket.open_ns));
            if rolls {
                if let Some(done) = self.larger[i - 1].take() {
                    self.retire(i, done);
                }
                self.larger[i - 1] = Some(Larger {
                    interval,
                    bucket: interval.bucket(tick.time_ns, self.tz),
                    folded: None,
                    revision: 0,
                    closed: false,
                    dirty: true,
                });
            }
        }
        self.minute = Some(Candle::new(
            MINUTE,
            bucket,
            tick,
            self.price_scale,
            self.quantity_scale,
        ));
        self.minute_dirty = true;
    }

    /// Moves a finished larger candle to the recent ones, closed.
    fn retire(&mut self, i: usize, done: Larger) {
        let Some(mut candle) = done.folded else {
            return;
        };
        candle.interval = done.interval;
        candle.bucket = done.bucket;
        candle.revision = done.revision;
        candle.closed = true;
        if !done.closed || done.dirty {
            self.dirty_recent.insert((i, candle.bucket.open_ns));
        }
        self.recent[i].insert(candle.bucket.open_ns, candle);
    }

    /// Folds a finished minute into the larger intervals containing it.
    fn fold(&mut self, minute: &Candle) {
        for larger in self.larger.iter_mut().flatten() {
            if larger.bucket.contains(minute.bucket.open_ns) {
                match larger.folded.as_mut() {
                    Some(f) => f.merge_trades(minute),
                    None => larger.folded = Some(minute.clone()),
                }
                larger.dirty = true;
            }
        }
    }

    /// A trade for a minute before the current one (within the late window).
    fn late(&mut self, tick: Tick) {
        let mut corrected = false;
        let bucket = MINUTE.bucket(tick.time_ns, self.tz);
        corrected |= apply_recent(
            &mut self.recent[0],
            MINUTE,
            bucket,
            tick,
            self.price_scale,
            self.quantity_scale,
        );
        self.dirty_recent.insert((0, bucket.open_ns));
        for (i, &interval) in STORED.iter().enumerate().skip(1) {
            match self.larger[i - 1].as_mut() {
                Some(larger) if larger.bucket.contains(tick.time_ns) => {
                    corrected |= larger.closed;
                    match larger.folded.as_mut() {
                        Some(f) => f.apply(tick),
                        None => {
                            larger.folded = Some(Candle::new(
                                interval,
                                larger.bucket,
                                tick,
                                self.price_scale,
                                self.quantity_scale,
                            ))
                        }
                    }
                    larger.dirty = true;
                }
                _ => {
                    let b = interval.bucket(tick.time_ns, self.tz);
                    corrected |= apply_recent(
                        &mut self.recent[i],
                        interval,
                        b,
                        tick,
                        self.price_scale,
                        self.quantity_scale,
                    );
                    self.dirty_recent.insert((i, b.open_ns));
                }
            }
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
        if let Some(m) = self.minute.as_mut()
            && !m.closed
            && m.bucket.close_ns.saturating_add(grace) <= wall_now_ns
        {
            m.closed = true;
            self.minute_dirty = true;
        }
        for larger in self.larger.iter_mut().flatten() {
            if !larger.closed && larger.bucket.close_ns.saturating_add(grace) <= wall_now_ns {
                larger.closed = true;
                larger.dirty = true;
            }
        }
    }

    /// True when there is something to write.
    pub fn has_changes(&self) -> bool {
        self.minute_dirty
            || !self.dirty_recent.is_empty()
            || self.larger.iter().flatten().any(|l| l.dirty)
            || self.pending != Counters::default()
    }

    /// The candles changed since the last call, each with its revision bumped
    /// once, oldest first within an interval; forgets recent candles past the
    /// late window.
    pub fn take_changes(&mut self) -> Vec<Candle> {
        let mut out = Vec::with_capacity(STORED.len() + self.dirty_recent.len());
        let floor = self.floor.as_deref();
        for (i, open_ns) in std::mem::take(&mut self.dirty_recent) {
            if let Some(candle) = self.recent[i].get_mut(&open_ns) {
                candle.revision += 1;
                if let Some(f) = floor {
                    f.lift(i, open_ns, candle.bucket.close_ns, &mut candle.revision);
                }
                out.push(candle.clone());
            }
        }
        if self.minute_dirty
            && let Some(minute) = self.minute.as_mut()
        {
            minute.revision += 1;
            if let Some(f) = floor {
                let b = minute.bucket;
                f.lift(0, b.open_ns, b.close_ns, &mut minute.revision);
            }
            out.push(minute.clone());
        }
        let minute_changed = std::mem::take(&mut self.minute_dirty);
        // The current minute is part of each larger candle's view unless its
        // trades are already in the folds.
        let minute = self.minute.as_ref().filter(|_| !self.minute_folded);
        for (i, larger) in self.larger.iter_mut().enumerate() {
            let Some(larger) = larger else { continue };
            let includes_minute = minute.is_some_and(|m| larger.bucket.contains(m.bucket.open_ns));
            if !(larger.dirty || (minute_changed && includes_minute)) {
                continue;
            }
            larger.dirty = false;
            larger.revision += 1;
            if let Some(f) = floor {
                let b = larger.bucket;
                f.lift(i + 1, b.open_ns, b.close_ns, &mut larger.revision);
            }
            let mut view = match (&larger.folded, minute.filter(|_| includes_minute)) {
                (Some(f), Some(d)) => {
                    let mut v = f.clone();
                    v.merge_trades(d);
                    v
                }
                (Some(f), None) => f.clone(),
                (None, Some(d)) => d.clone(),
                (None, None) => continue,
            };
            view.interval = larger.interval;
            view.bucket = larger.bucket;
            view.revision = larger.revision;
            view.closed = larger.closed;
            out.push(view);
        }
        let horizon = self.newest_ns.saturating_sub(self.config.late_window_ns);
        for (i, recent) in self.recent.iter_mut().enumerate() {
            // Oldest first: stop at the first candle still inside the window.
            while let Some(entry) = recent.first_entry()
                && entry.get().bucket.close_ns <= horizon
            {
                let c = entry.remove();
                self.pruned.record(i, c.bucket.close_ns, c.revision);
            }
        }
        if self
            .floor
            .as_mut()
            .is_some_and(|f| f.forget_through(horizon))
        {
            self.floor = None;
        }
        out
    }
}

/// Applies a late trade to a recently closed candle (or starts one, closed).
/// Returns true: the trade corrected a closed candle.
fn apply_recent(
    recent: &mut BTreeMap<i64, Candle>,
    interval: Interval,
    bucket: Bucket,
    tick: Tick,
    ps: u32,
    qs: u32,
) -> bool {
    match recent.get_mut(&bucket.open_ns) {
        Some(candle) => {
            candle.apply(tick);
            candle.closed
        }
        None => {
            let mut candle = Candle::new(interval, bucket, tick, ps, qs);
            candle.closed = true;
            recent.insert(bucket.open_ns, candle);
            true
        }
    }
}
