//! The aggregator's arithmetic against two independent references:
//! - `fixtures/expected_candles.json`, computed by a separate Python
//!   implementation (`fixtures/reference_candles.py`, stdlib `decimal` and
//!   `zoneinfo`) over `fixtures/trades.csv`: hour, day, Seoul-day, Monday,
//!   leap-February, year and both 2024 US DST changes;
//! - a sort-bucket-fold reference over random trades arriving out of order.

use std::collections::BTreeMap;

use chrono_tz::Tz;
use tickmesh_calendar::{Interval, STORED};
use tickmesh_candles::book::{BookConfig, SymbolBook};
use tickmesh_candles::candle::{Candle, Tick};
use tickmesh_core::decimal::parse_units;
use tickmesh_core::time_zone::parse_time_zone;

type Key = (String, Interval, i64);

/// Runs trades through a book, keeping the last state of every candle.
fn aggregate(
    symbol: &str,
    tz: Tz,
    ps: u32,
    qs: u32,
    window_ns: i64,
    ticks: &[Tick],
) -> (BTreeMap<(Interval, i64), Candle>, SymbolBook) {
    let mut book = SymbolBook::new(
        symbol,
        tz,
        ps,
        qs,
        BookConfig {
            late_window_ns: window_ns,
            close_grace_ns: 2_000_000_000,
        },
    );
    let mut states = BTreeMap::new();
    for (i, tick) in ticks.iter().enumerate() {
        book.apply(*tick, 0);
        // Write every 37 trades, like batches of a stream.
        if i % 37 == 0 {
            for c in book.take_changes() {
                states.insert((c.interval, c.bucket.open_ns), c);
            }
        }
    }
    for c in book.take_changes() {
        states.insert((c.interval, c.bucket.open_ns), c);
    }
    (states, book)
}

#[test]
fn matches_the_independent_python_reference() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures");
    let instruments: Vec<serde_json::Value> =
        serde_json::from_str(&std::fs::read_to_string(dir.join("instruments.json")).unwrap())
            .unwrap();
    let csv = std::fs::read_to_string(dir.join("trades.csv")).unwrap();
    let expected: Vec<serde_json::Value> =
        serde_json::from_str(&std::fs::read_to_string(dir.join("expected_candles.json")).unwrap())
            .unwrap();

    let mut got: BTreeMap<Key, Candle> = BTreeMap::new();
    for inst in &instruments {
        let symbol = inst["symbol"].as_str().unwrap();
        let tz = parse_time_zone(inst["time_zone"].as_str().unwrap()).unwrap();
        let ps = inst["price_scale"].as_u64().unwrap() as u32;
        let qs = inst["quantity_scale"].as_u64().unwrap() as u32;
        let mut ticks = Vec::new();
        for (n, line) in csv.lines().skip(1).enumerate() {
            let f: Vec<&str> = line.split(',').collect();
            if f[0] != symbol {
                continue;
            }
            ticks.push(Tick {
                time_ns: f[4].parse().unwrap(),
                sequence: n as u64 + 1,
                price: parse_units(f[2], ps).unwrap(),
                quantity: parse_units(f[3], qs).unwrap(),
            });
        }
        let (states, book) = aggregate(symbol, tz, ps, qs, i64::MAX / 4, &ticks);
        assert_eq!(book.pending.late_dropped, 0);
        for ((interval, open), c) in states {
            got.insert((symbol.to_string(), interval, open), c);
        }
    }

    assert_eq!(got.len(), expected.len(), "candle count");
    for e in &expected {
        let symbol = e["symbol"].as_str().unwrap().to_string();
        let interval = Interval::parse(e["interval"].as_str().unwrap()).unwrap();
        let open = e["open_time_ns"].as_i64().unwrap();
        let c = got
            .get(&(symbol.clone(), interval, open))
            .unwrap_or_else(|| panic!("missing {symbol} {interval} {open}"));
        let ctx = format!("{symbol} {interval} open {open}");
        assert_eq!(
            c.bucket.close_ns,
            e["close_time_ns"].as_i64().unwrap(),
            "{ctx} close_time"
        );
        assert_eq!(c.price(c.open), e["open"].as_str().unwrap(), "{ctx} open");
        assert_eq!(c.price(c.high), e["high"].as_str().unwrap(), "{ctx} high");
        assert_eq!(c.price(c.low), e["low"].as_str().unwrap(), "{ctx} low");
        assert_eq!(
            c.price(c.close),
            e["close"].as_str().unwrap(),
            "{ctx} close"
        );
        assert_eq!(
            c.volume_text(),
            e["volume"].as_str().unwrap(),
            "{ctx} volume"
        );
        assert_eq!(
            c.quote_volume_text(),
            e["quote_volume"].as_str().unwrap(),
            "{ctx} quote_volume"
        );
        assert_eq!(
            c.trade_count,
            e["trade_count"].as_u64().unwrap(),
            "{ctx} trade_count"
        );
    }
}

/// xorshift64*.
struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

/// open, high, low, close, volume, quote volume, trades.
type Ohlcv = (i64, i64, i64, i64, i128, i128, u64);

/// The obvious way: sort by (time, sequence), bucket, fold.
fn reference(ticks: &[Tick], tz: Tz) -> BTreeMap<(Interval, i64), Ohlcv> {
    let mut sorted = ticks.to_vec();
    sorted.sort_by_key(|t| (t.time_ns, t.sequence));
    let mut out = BTreeMap::new();
    for interval in STORED {
        for t in &sorted {
            let b = interval.bucket(t.time_ns, tz);
            let e = out
                .entry((interval, b.open_ns))
                .or_insert((t.price, t.price, t.price, t.price, 0i128, 0i128, 0u64));
            e.1 = e.1.max(t.price);
            e.2 = e.2.min(t.price);
            e.3 = t.price;
            e.4 += i128::from(t.quantity);
            e.5 += i128::from(t.price) * i128::from(t.quantity);
            e.6 += 1;
        }
    }
    out
}

#[test]
fn random_out_of_order_trades_match_sort_bucket_fold_in_every_interval() {
    for (seed, tz) in [
        (1u64, Tz::UTC),
        (2, Tz::Asia__Seoul),
        (3, Tz::America__New_York),
        (4, Tz::Europe__London),
    ] {
        let mut rng = Rng(seed.wrapping_mul(0x9e37_79b9_7f4a_7c15));
        // Around the 2024-11-03 US fall-back and a month end, over ~3 days.
        let start: i64 = 1_730_419_200_000_000_000; // 2024-11-01T00:00Z
        let mut t = start;
        let mut ticks = Vec::new();
        for seq in 1..=4000u64 {
            t += rng.below(120_000_000_000) as i64; // up to 2 minutes apart
            // A quarter of the trades arrive late, up to 10 minutes back.
            let time_ns = if rng.below(4) == 0 {
                t - rng.below(600_000_000_000) as i64
            } else {
                t
            };
            ticks.push(Tick {
                time_ns,
                sequence: seq,
                price: 10_000 + rng.below(5_000) as i64,
                quantity: rng.below(1_000) as i64,
            });
        }
        let (states, book) = aggregate("X", tz, 2, 3, 3_600_000_000_000, &ticks);
        assert_eq!(
            book.pending.late_dropped, 0,
            "the window covers every late trade"
        );
        assert!(
            book.pending.late_corrections > 0,
            "some late trades corrected closed candles"
        );
        let want = reference(&ticks, tz);
        assert_eq!(states.len(), want.len(), "{tz}: candle count");
        for ((interval, open), c) in &states {
            let w = want[&(*interval, *open)];
            assert_eq!(
                (
                    c.open,
                    c.high,
                    c.low,
                    c.close,
                    c.volume,
                    c.quote_volume,
                    c.trade_count
                ),
                w,
                "{tz} {interval} {open}"
            );
            assert_eq!(c.bucket, interval.bucket(*open, tz));
        }
    }
}

#[test]
fn trades_older_than_the_late_window_are_counted_and_change_nothing() {
    let minute = 60_000_000_000i64;
    let ticks = vec![
        Tick {
            time_ns: 100 * minute,
            sequence: 1,
            price: 100,
            quantity: 1,
        },
        Tick {
            time_ns: 110 * minute,
            sequence: 2,
            price: 200,
            quantity: 1,
        },
        Tick {
            time_ns: 108 * minute,
            sequence: 3,
            price: 150,
            quantity: 1,
        }, // late, within 5 min: corrects
        Tick {
            time_ns: 101 * minute,
            sequence: 4,
            price: 999,
            quantity: 1,
        }, // 9 min late: dropped
    ];
    let (states, book) = aggregate("X", Tz::UTC, 0, 0, 5 * minute, &ticks);
    assert_eq!(book.pending.late_dropped, 1);
    assert_eq!(book.pending.late_corrections, 1);
    let m1 = Interval::parse("1m").unwrap();
    assert!(
        states.values().all(|c| c.high < 999),
        "the dropped trade changed nothing"
    );
    let corrected = &states[&(m1, 108 * minute)];
    assert!(
        corrected.closed,
        "a late trade's own minute was already closed by time 110"
    );
    let one_h = Interval::parse("1h").unwrap();
    let hour = &states[&(one_h, 60 * minute)];
    assert_eq!(
        (hour.open, hour.close, hour.trade_count),
        (100, 200, 3),
        "open/close by event time"
    );
}

#[test]
fn an_hour_wrap_closes_the_old_candle_and_opens_a_new_one() {
    // 10:59:59.999999999 then 11:00:00 UTC.
    let t0 = 1_704_106_799_999_999_999i64;
    let ticks = [
        Tick {
            time_ns: t0,
            sequence: 1,
            price: 100,
            quantity: 1,
        },
        Tick {
            time_ns: t0 + 1,
            sequence: 2,
            price: 101,
            quantity: 1,
        },
    ];
    let mut book = SymbolBook::new(
        "X",
        Tz::UTC,
        0,
        0,
        BookConfig {
            late_window_ns: 0,
            close_grace_ns: 0,
        },
    );
    book.apply(ticks[0], 0);
    book.take_changes();
    book.apply(ticks[1], 0);
    let changes = book.take_changes();
    for interval in ["1m", "5m", "15m", "30m", "1h"] {
        let i = Interval::parse(interval).unwrap();
        let old: Vec<&Candle> = changes
            .iter()
            .filter(|c| c.interval == i && c.closed)
            .collect();
        let new: Vec<&Candle> = changes
            .iter()
            .filter(|c| c.interval == i && !c.closed)
            .collect();
        assert_eq!(old.len(), 1, "{interval}: the 10:xx candle closes");
        assert_eq!(new.len(), 1, "{interval}: an 11:00 candle opens");
        assert_eq!(new[0].bucket.open_ns, t0 + 1);
        assert_eq!(old[0].revision, 2, "closing bumps the revision");
    }
    let day = Interval::parse("1d").unwrap();
    assert!(
        changes
            .iter()
            .any(|c| c.interval == day && !c.closed && c.trade_count == 2)
    );
}

#[test]
fn restoring_mid_stream_from_the_stored_candles_changes_no_result() {
    let tz = Tz::America__New_York;
    let mut rng = Rng(99);
    let start: i64 = 1_730_592_000_000_000_000; // 2024-11-03T00:00Z, the fall-back day
    let mut t = start;
    let ticks: Vec<Tick> = (1..=3000u64)
        .map(|seq| {
            t += rng.below(20_000_000_000) as i64;
            let time_ns = if rng.below(5) == 0 {
                t - rng.below(120_000_000_000) as i64
            } else {
                t
            };
            Tick {
                time_ns,
                sequence: seq,
                price: 1000 + rng.below(500) as i64,
                quantity: 1 + rng.below(9) as i64,
            }
        })
        .collect();
    let config = BookConfig {
        late_window_ns: 600_000_000_000,
        close_grace_ns: 2_000_000_000,
    };
    let (want, _) = aggregate("X", tz, 2, 0, config.late_window_ns, &ticks);

    for cut in [1usize, 7, 500, 1234, 2999] {
        // Run to the cut, "writing" every batch into a stored map like Redis.
        let mut stored: BTreeMap<(Interval, i64), Candle> = BTreeMap::new();
        let mut book = SymbolBook::new("X", tz, 2, 0, config);
        for (i, tick) in ticks[..cut].iter().enumerate() {
            book.apply(*tick, 0);
            if i % 13 == 0 {
                for c in book.take_changes() {
                    stored.insert((c.interval, c.bucket.open_ns), c);
                }
            }
        }
        for c in book.take_changes() {
            stored.insert((c.interval, c.bucket.open_ns), c);
        }
        let (applied, newest) = (book.applied_sequence, book.newest_ns);
        drop(book); // killed

        // Restart: load what the store would (all candles here) and go on.
        let mut book = SymbolBook::new("X", tz, 2, 0, config);
        book.restore(applied, newest, stored.values().cloned().collect());
        for (i, tick) in ticks.iter().enumerate() {
            book.apply(*tick, 0); // already applied ones are skipped by sequence
            if i % 13 == 0 {
                for c in book.take_changes() {
                    stored.insert((c.interval, c.bucket.open_ns), c);
                }
            }
        }
        for c in book.take_changes() {
            stored.insert((c.interval, c.bucket.open_ns), c);
        }
        assert_eq!(stored.len(), want.len(), "cut {cut}: candle count");
        for (key, w) in &want {
            let g = &stored[key];
            assert_eq!(
                (
                    g.open,
                    g.high,
                    g.low,
                    g.close,
                    g.volume,
                    g.quote_volume,
                    g.trade_count
                ),
                (
                    w.open,
                    w.high,
                    w.low,
                    w.close,
                    w.volume,
                    w.quote_volume,
                    w.trade_count
                ),
                "cut {cut}: {key:?}"
            );
        }
    }
}
