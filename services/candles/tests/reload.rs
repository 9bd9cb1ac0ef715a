//! A book read back from a Redis that lost writes: what Redis holds plus the
//! trades after it give the same candles as a book that never stopped, and no
//! candle's revision goes back below one the old book already gave.

use std::collections::BTreeMap;

use tickmesh_calendar::{Interval, STORED};
use tickmesh_candles::book::{BookConfig, SymbolBook};
use tickmesh_candles::candle::{Candle, Tick};

const MIN: i64 = 60_000_000_000;
const T0: i64 = 1_767_225_600_000_000_000; // 2026-01-01T00:00:00Z

fn config() -> BookConfig {
    BookConfig {
        late_window_ns: 5 * MIN,
        close_grace_ns: 2_000_000_000,
    }
}

fn book() -> SymbolBook {
    SymbolBook::new("BTCUSDT", chrono_tz::UTC, 2, 3, config())
}

/// Trades over 20 minutes, one every 7 s, with a late one every 11th.
fn ticks() -> Vec<Tick> {
    (1..=170u64)
        .map(|n| {
            let mut time_ns = T0 + n as i64 * 7_000_000_000;
            if n % 11 == 0 {
                time_ns -= 2 * MIN; // late, inside the window
            }
            Tick {
                time_ns,
                sequence: n,
                price: 100_000 + ((n * 7919) % 500) as i64,
                quantity: 1 + (n % 13) as i64 * 250,
            }
        })
        .collect()
}

type Written = BTreeMap<(Interval, i64), Candle>;

/// Applies `ticks`, taking changes every `batch` trades as the aggregator
/// writes them; returns what was written (last state per candle).
fn run(book: &mut SymbolBook, ticks: &[Tick], batch: usize, written: &mut Written) {
    for chunk in ticks.chunks(batch) {
        for t in chunk {
            book.apply(*t, 0);
        }
        for c in book.take_changes() {
            written.insert((c.interval, c.bucket.open_ns), c);
        }
    }
}

fn values(c: &Candle) -> (i64, i64, i64, i64, i128, i128, u64) {
    (
        c.open,
        c.high,
        c.low,
        c.close,
        c.volume,
        c.quote_volume,
        c.trade_count,
    )
}

#[test]
fn a_book_reloaded_from_less_converges_and_revisions_only_go_up() {
    let ticks = ticks();
    // A book that never stopped: the truth.
    let mut truth = Written::new();
    run(&mut book(), &ticks, 10, &mut truth);

    // The aggregator wrote everything up to trade 120, but Redis only kept
    // the writes up to trade 80 (an AOF that lost its tail).
    let mut kept = Written::new();
    let mut ahead = book();
    run(&mut ahead, &ticks[..80], 10, &mut kept);
    let mut seen = kept.clone();
    run(&mut ahead, &ticks[80..120], 10, &mut seen);
    assert_eq!(ahead.applied_sequence, 120);

    // Read back what Redis holds, then replay the tick log after it.
    let mut reloaded = book();
    reloaded.restore(
        80,
        ticks[79].time_ns.max(T0),
        kept.values().cloned().collect(),
    );
    reloaded.carry_revisions_from(&ahead);
    let mut after = Written::new();
    // The replay starts with the candles whose revision was lifted.
    for c in reloaded.take_changes() {
        after.insert((c.interval, c.bucket.open_ns), c);
    }
    run(&mut reloaded, &ticks[80..], 10, &mut after);
    let mut redis = kept.clone();
    redis.extend(after.clone());

    for (key, want) in &truth {
        let got = redis.get(key).unwrap_or_else(|| panic!("{key:?} missing"));
        assert_eq!(values(got), values(want), "{key:?}");
    }
    assert_eq!(redis.len(), truth.len(), "no extra candles");
    // Every candle written after the reload is above what readers saw.
    for (key, c) in &after {
        if let Some(before) = seen.get(key) {
            assert!(
                c.revision > before.revision,
                "{key:?}: revision {} after the reload, {} seen before",
                c.revision,
                before.revision
            );
        }
    }
    // Every candle readers saw at a revision Redis lost was written again.
    for (key, before) in &seen {
        if kept.get(key).map(|k| k.revision) != Some(before.revision) {
            assert!(after.contains_key(key), "{key:?} was not written again");
        }
    }
    assert!(
        after.keys().any(|(i, _)| *i == STORED[5]),
        "1h candles rewritten"
    );
}
