//! Revisions a book read back from Redis must stay above.
//!
//! When Redis comes back from a crash or a failover with less than it had,
//! the candles it holds carry revisions below ones readers may already have
//! seen (in SubscribeCandles updates, GetCandles answers, or the history
//! store). The aggregator's old book knows what it gave: the revision of
//! every candle it still held, and for candles it had already let go of (past
//! the late window), the highest revision per interval. A candle written
//! again by the reloaded book goes above both, so revisions only go up.

use std::collections::BTreeMap;

#[derive(Clone, Debug)]
pub struct RevisionFloor {
    /// Per (interval index, open time): (close time, revision given).
    exact: BTreeMap<(usize, i64), (i64, u64)>,
    /// Candles closing at or before this were let go of at revisions up to
    /// `pruned_max[interval index]`.
    pruned_through: i64,
    pruned_max: Vec<u64>,
}

/// What a book let go of: candles past its late window, per interval.
#[derive(Clone, Debug)]
pub struct Pruned {
    pub through: i64,
    pub max_revision: Vec<u64>,
}

impl Pruned {
    pub fn new(intervals: usize) -> Self {
        Self {
            through: i64::MIN,
            max_revision: vec![0; intervals],
        }
    }

    pub fn record(&mut self, interval: usize, close_ns: i64, revision: u64) {
        self.through = self.through.max(close_ns);
        let m = &mut self.max_revision[interval];
        *m = (*m).max(revision);
    }
}

impl Default for RevisionFloor {
    fn default() -> Self {
        Self {
            exact: BTreeMap::new(),
            pruned_through: i64::MIN,
            pruned_max: Vec::new(),
        }
    }
}

impl RevisionFloor {
    /// The floor left by a book: `held` are its candles as
    /// ((interval index, open), (close, revision)); `pruned` what it let go
    /// of; `earlier` the floor it had itself (several reloads in a row).
    pub fn from_book(
        held: impl IntoIterator<Item = ((usize, i64), (i64, u64))>,
        pruned: &Pruned,
        earlier: Option<&RevisionFloor>,
    ) -> Self {
        let mut floor = earlier.cloned().unwrap_or_default();
        for (key, (close, revision)) in held {
            let e = floor.exact.entry(key).or_insert((close, revision));
            e.1 = e.1.max(revision);
        }
        floor.pruned_through = floor.pruned_through.max(pruned.through);
        if floor.pruned_max.len() < pruned.max_revision.len() {
            floor.pruned_max.resize(pruned.max_revision.len(), 0);
        }
        for (m, p) in floor.pruned_max.iter_mut().zip(&pruned.max_revision) {
            *m = (*m).max(*p);
        }
        floor
    }

    /// The highest revision readers may have seen of a candle.
    pub fn get(&self, interval: usize, open_ns: i64, close_ns: i64) -> u64 {
        let exact = self.exact.get(&(interval, open_ns)).map_or(0, |&(_, r)| r);
        let pruned = if close_ns <= self.pruned_through {
            self.pruned_max.get(interval).copied().unwrap_or(0)
        } else {
            0
        };
        exact.max(pruned)
    }

    /// Lifts a revision just given to above the floor.
    pub fn lift(&self, interval: usize, open_ns: i64, close_ns: i64, revision: &mut u64) {
        let floor = self.get(interval, open_ns, close_ns);
        if *revision <= floor {
            *revision = floor + 1;
        }
    }

    /// Forgets candles that close at or before `horizon` (no trade can reach
    /// them any more); true when nothing is left.
    pub fn forget_through(&mut self, horizon: i64) -> bool {
        self.exact.retain(|_, (close, _)| *close > horizon);
        if self.pruned_through <= horizon {
            self.pruned_through = i64::MIN;
        }
        self.exact.is_empty() && self.pruned_through == i64::MIN
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exact_and_pruned_floors() {
        let mut pruned = Pruned::new(2);
        pruned.record(0, 100, 7);
        pruned.record(1, 90, 30);
        let floor = RevisionFloor::from_book([((0, 200), (260, 4))], &pruned, None);
        assert_eq!(floor.get(0, 200, 260), 4, "held");
        assert_eq!(floor.get(0, 40, 100), 7, "let go of");
        assert_eq!(floor.get(1, 0, 90), 30);
        assert_eq!(floor.get(0, 100, 160), 0, "after everything let go of");
        let mut r = 3;
        floor.lift(0, 200, 260, &mut r);
        assert_eq!(r, 5);
        let mut r = 9;
        floor.lift(0, 200, 260, &mut r);
        assert_eq!(r, 9, "already above");

        let again = RevisionFloor::from_book([((0, 200), (260, 2))], &Pruned::new(2), Some(&floor));
        assert_eq!(
            again.get(0, 200, 260),
            4,
            "a second reload keeps the first floor"
        );
        assert_eq!(again.get(0, 40, 100), 7);

        let mut f = again;
        assert!(!f.forget_through(150));
        assert_eq!(
            f.get(0, 40, 100),
            0,
            "nothing reaches candles closed by the horizon"
        );
        assert!(f.forget_through(300));
    }
}
