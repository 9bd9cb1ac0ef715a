//! Deterministic property checks of the bucket rules over random timestamps and zones.

use chrono::{NaiveTime, TimeZone, Timelike, Utc};
use chrono_tz::Tz;
use tickmesh_calendar::{Bucket, Interval, STORED};

/// xorshift64: a tiny deterministic generator, no extra crates.
struct XorShift(u64);

impl XorShift {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }

    /// Uniform enough in [lo, hi).
    fn between(&mut self, lo: i64, hi: i64) -> i64 {
        let span = u64::try_from(hi - lo).unwrap();
        lo + i64::try_from(self.next() % span).unwrap()
    }
}

fn ns(y: i32, m: u32, d: u32) -> i64 {
    Utc.with_ymd_and_hms(y, m, d, 0, 0, 0)
        .unwrap()
        .timestamp_nanos_opt()
        .unwrap()
}

fn intervals() -> Vec<Interval> {
    let mut all = STORED.to_vec();
    for extra in ["10m", "2d", "3M"] {
        all.push(Interval::parse(extra).unwrap());
    }
    all
}

const ZONES: [Tz; 6] = [
    Tz::UTC,
    Tz::Asia__Seoul,
    Tz::America__New_York,
    Tz::Europe__London,
    Tz::Australia__Lord_Howe,
    Tz::Asia__Kolkata,
];

/// The invariants every bucket of `interval` around `ts` must satisfy.
fn check(interval: Interval, ts: i64, tz: Tz) -> Bucket {
    let bucket = interval.bucket(ts, tz);
    let ctx = format!("{interval} {tz} ts={ts} bucket={bucket:?}");
    assert!(bucket.contains(ts), "contains: {ctx}");
    assert!(bucket.open_ns < bucket.close_ns, "non-empty: {ctx}");
    // Every instant of the bucket maps to the same bucket.
    assert_eq!(interval.bucket(bucket.open_ns, tz), bucket, "open: {ctx}");
    assert_eq!(
        interval.bucket(bucket.close_ns - 1, tz),
        bucket,
        "close-1: {ctx}"
    );
    let next = interval.next(bucket, tz);
    assert_eq!(next.open_ns, bucket.close_ns, "next: {ctx}");
    assert_eq!(interval.prev(next, tz), bucket, "prev(next): {ctx}");
    let prev = interval.prev(bucket, tz);
    assert_eq!(prev.close_ns, bucket.open_ns, "prev: {ctx}");
    assert_eq!(interval.next(prev, tz), bucket, "next(prev): {ctx}");
    let base = interval.rollup_base();
    if base != interval {
        let small = base.bucket(ts, tz);
        assert!(
            small.open_ns >= bucket.open_ns && small.close_ns <= bucket.close_ns,
            "rollup {base} {small:?} inside: {ctx}"
        );
    }
    bucket
}

#[test]
fn random_timestamps_satisfy_the_bucket_rules() {
    let (lo, hi) = (ns(1990, 1, 1), ns(2040, 1, 1));
    let intervals = intervals();
    let mut rng = XorShift(0x9e37_79b9_7f4a_7c15);
    for _ in 0..20_000 {
        let ts = rng.between(lo, hi);
        for tz in ZONES {
            for &interval in &intervals {
                check(interval, ts, tz);
            }
        }
    }
}

/// Local time of day at an instant, for readable day-start checks.
fn local_time(ts_ns: i64, tz: Tz) -> NaiveTime {
    Utc.timestamp_nanos(ts_ns).with_timezone(&tz).time()
}

/// Walking day by day, every 1d bucket opens at local midnight, or at the end of the gap when
/// midnight did not exist that date, and lasts between 22 and 26 hours.
#[test]
fn every_day_opens_at_local_midnight_or_the_gap_end() {
    let zones = ZONES.iter().copied().chain([
        Tz::America__Santiago,
        Tz::America__Havana,
        Tz::Asia__Beirut,
        Tz::America__St_Johns,
        Tz::America__Sao_Paulo,
        Tz::Asia__Tehran,
    ]);
    let day = Interval::parse("1d").unwrap();
    let mut gap_days = 0;
    for tz in zones {
        let mut bucket = day.bucket(ns(1990, 1, 1), tz);
        while bucket.open_ns < ns(2040, 1, 1) {
            let opened = local_time(bucket.open_ns, tz);
            // The day opens on a new local date: one second earlier is the previous date. With
            // an ambiguous midnight this pins the earliest of the two.
            let before = Utc
                .timestamp_nanos(bucket.open_ns - 1_000_000_000)
                .with_timezone(&tz);
            let after = Utc.timestamp_nanos(bucket.open_ns).with_timezone(&tz);
            assert!(
                before.date_naive() < after.date_naive(),
                "{tz}: day opens at {after} (previous second {before})"
            );
            if opened != NaiveTime::MIN {
                // Midnight did not exist: the day opens at the end of the gap, on the hour.
                gap_days += 1;
                let midnight = after.date_naive().and_time(NaiveTime::MIN);
                assert!(
                    tz.from_local_datetime(&midnight).earliest().is_none() && opened.minute() == 0,
                    "{tz}: day opens at {after} though midnight exists"
                );
            }
            let hours = (bucket.close_ns - bucket.open_ns) / 3_600_000_000_000;
            assert!((22..=26).contains(&hours), "{tz} {bucket:?}");
            bucket = day.next(bucket, tz);
        }
    }
    assert!(
        gap_days > 10,
        "the walk met days without midnight: {gap_days}"
    );
}

/// One-hour buckets tile every day of 2024 in every zone, with hours = day length.
#[test]
fn hours_tile_days() {
    let day = Interval::parse("1d").unwrap();
    let hour = Interval::parse("1h").unwrap();
    for tz in ZONES {
        let mut d = day.bucket(ns(2024, 1, 1), tz);
        while d.open_ns < ns(2025, 1, 1) {
            let mut h = hour.bucket(d.open_ns, tz);
            assert_eq!(h.open_ns, d.open_ns);
            while h.close_ns < d.close_ns {
                assert_eq!(h.close_ns - h.open_ns, 3_600_000_000_000, "{tz} {h:?}");
                h = hour.next(h, tz);
            }
            assert_eq!(h.close_ns, d.close_ns, "{tz} {d:?}");
            d = day.next(d, tz);
        }
    }
}

/// A lighter sweep over every zone chrono-tz knows, including odd historical transitions.
#[test]
fn all_zones_partition_time() {
    let (lo, hi) = (ns(1900, 1, 1), ns(2100, 1, 1));
    let picks = ["1h", "30m", "1d", "1w", "1M", "1Y"].map(|t| Interval::parse(t).unwrap());
    let mut rng = XorShift(0x1234_5678_9abc_def1);
    for tz in chrono_tz::TZ_VARIANTS {
        for _ in 0..60 {
            let ts = rng.between(lo, hi);
            for interval in picks {
                check(interval, ts, tz);
            }
        }
    }
}
