//! Candle boundaries: the bucket [open, close) that contains an instant, and its neighbours.

use chrono_tz::Tz;

use crate::interval::{Interval, Unit};
use crate::zone::{FIRST_MONDAY, NS_PER_SEC, SECS_PER_DAY, Zone, civil_from_days, days_from_civil};

/// One candle's time range: the half-open interval [open_ns, close_ns) of nanoseconds since the
/// Unix epoch (UTC).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Bucket {
    pub open_ns: i64,
    pub close_ns: i64,
}

impl Bucket {
    /// True when `open_ns <= ts_ns < close_ns`.
    pub fn contains(&self, ts_ns: i64) -> bool {
        self.open_ns <= ts_ns && ts_ns < self.close_ns
    }
}

impl Interval {
    /// The candle containing `ts_ns` (nanoseconds since the Unix epoch, UTC) in zone `tz`.
    pub fn bucket(&self, ts_ns: i64, tz: Tz) -> Bucket {
        let zone = Zone::of(tz);
        let count = i64::from(self.effective_count());
        match self.unit {
            Unit::Minute | Unit::Hour => {
                let unit_secs = if self.unit == Unit::Minute { 60 } else { 3600 };
                let len_secs = unit_secs * count;
                if let Zone::Fixed(offset) = zone
                    && SECS_PER_DAY % len_secs == 0
                {
                    fixed_intraday(ts_ns, offset * NS_PER_SEC, len_secs * NS_PER_SEC)
                } else {
                    intraday(zone, ts_ns, i128::from(len_secs) * i128::from(NS_PER_SEC))
                }
            }
            Unit::Day => calendar(zone, ts_ns, Period::Days(count)),
            Unit::Week => calendar(zone, ts_ns, Period::Weeks(count)),
            Unit::Month => calendar(zone, ts_ns, Period::Months(count)),
            Unit::Year => calendar(zone, ts_ns, Period::Years(count)),
        }
    }

    /// The candle right after `b` (its open is `b.close_ns`). `b` must be a bucket of this
    /// interval in `tz`.
    pub fn next(&self, b: Bucket, tz: Tz) -> Bucket {
        self.bucket(b.close_ns, tz)
    }

    /// The candle right before `b` (its close is `b.open_ns`). `b` must be a bucket of this
    /// interval in `tz`.
    pub fn prev(&self, b: Bucket, tz: Tz) -> Bucket {
        self.bucket(b.open_ns.saturating_sub(1), tz)
    }
}

/// Minutes and hours in a zone with a constant offset, for lengths that divide a day:
/// local midnight is always a multiple of the length, so alignment is one remainder.
fn fixed_intraday(ts_ns: i64, offset_ns: i64, len_ns: i64) -> Bucket {
    // (ts + offset) mod len, without the overflow risk of adding first.
    let into = if offset_ns == 0 {
        ts_ns.rem_euclid(len_ns)
    } else {
        (ts_ns.rem_euclid(len_ns) + offset_ns.rem_euclid(len_ns)) % len_ns
    };
    Bucket {
        open_ns: ts_ns.checked_sub(into).unwrap_or(i64::MIN),
        close_ns: ts_ns.saturating_add(len_ns - into),
    }
}

/// Minutes and hours in general: `day_start + k × len` within the local day, the last bucket
/// cut at the next day start.
fn intraday(zone: Zone, ts_ns: i64, len_ns: i128) -> Bucket {
    let (day_open, day_close) = span(zone, ts_ns.div_euclid(NS_PER_SEC), Period::Days(1));
    let day_open = i128::from(day_open) * i128::from(NS_PER_SEC);
    let day_close = i128::from(day_close) * i128::from(NS_PER_SEC);
    let ts = i128::from(ts_ns);
    let open = day_open + (ts - day_open).div_euclid(len_ns) * len_ns;
    let close = (open + len_ns).min(day_close);
    Bucket {
        open_ns: clamp_ns(open),
        close_ns: clamp_ns(close),
    }
}

/// Days, weeks, months and years: whole local days.
fn calendar(zone: Zone, ts_ns: i64, period: Period) -> Bucket {
    let (open, close) = span(zone, ts_ns.div_euclid(NS_PER_SEC), period);
    Bucket {
        open_ns: clamp_ns(i128::from(open) * i128::from(NS_PER_SEC)),
        close_ns: clamp_ns(i128::from(close) * i128::from(NS_PER_SEC)),
    }
}

fn clamp_ns(ns: i128) -> i64 {
    i64::try_from(ns).unwrap_or(if ns < 0 { i64::MIN } else { i64::MAX })
}

/// A run of whole local days, numbered so that period `k` starts on local day
/// [`Period::first_day`]`(k)`.
#[derive(Clone, Copy, Debug)]
enum Period {
    /// n days, counted from 1970-01-01.
    Days(i64),
    /// n weeks, counted from Monday 1970-01-05.
    Weeks(i64),
    /// n months, counted from month index year × 12 + month0 = 0.
    Months(i64),
    /// n years, counted from year 0.
    Years(i64),
}

impl Period {
    /// The period holding local `day` (days since 1970-01-01).
    fn index_of_day(self, day: i64) -> i64 {
        match self {
            Period::Days(n) => day.div_euclid(n),
            Period::Weeks(n) => (day - FIRST_MONDAY).div_euclid(7 * n),
            Period::Months(n) => {
                let (year, month, _) = civil_from_days(day);
                (year * 12 + i64::from(month) - 1).div_euclid(n)
            }
            Period::Years(n) => civil_from_days(day).0.div_euclid(n),
        }
    }

    /// The local day (days since 1970-01-01) period `index` starts on.
    fn first_day(self, index: i64) -> i64 {
        match self {
            Period::Days(n) => index * n,
            Period::Weeks(n) => index * 7 * n + FIRST_MONDAY,
            Period::Months(n) => {
                let month_index = index * n;
                // rem_euclid(12) is in 0..12.
                let month0 = month_index.rem_euclid(12) as u32;
                days_from_civil(month_index.div_euclid(12), month0 + 1, 1)
            }
            Period::Years(n) => days_from_civil(index * n, 1, 1),
        }
    }
}

/// [open, close) in UTC seconds of the period containing the instant `ts_secs`, where a period
/// starts at the start of its first local day.
///
/// Usually the period of the local date of `ts_secs`. The two loops only move when local dates
/// are not monotonic in time (a fall-back transition just after midnight, e.g. at 00:01 as
/// America/St_Johns did until 2011) or a whole local date was skipped: they pick the period
/// whose start range really holds the instant, so buckets never overlap and leave no gaps.
fn span(zone: Zone, ts_secs: i64, period: Period) -> (i64, i64) {
    let start = |index: i64| zone.day_start(period.first_day(index));
    let mut index = period.index_of_day(zone.local_day(ts_secs));
    let mut open = start(index);
    let mut close;
    if open > ts_secs {
        loop {
            index -= 1;
            close = open;
            open = start(index);
            if open <= ts_secs {
                break;
            }
        }
    } else {
        close = start(index + 1);
        while close <= ts_secs {
            index += 1;
            open = close;
            close = start(index + 1);
        }
    }
    (open, close)
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::{TimeZone, Utc};

    /// Nanoseconds of an explicit UTC date-time.
    fn utc(y: i32, mo: u32, d: u32, h: u32, mi: u32, s: u32) -> i64 {
        Utc.with_ymd_and_hms(y, mo, d, h, mi, s)
            .unwrap()
            .timestamp_nanos_opt()
            .unwrap()
    }

    fn day(y: i32, mo: u32, d: u32) -> i64 {
        utc(y, mo, d, 0, 0, 0)
    }

    fn b(open_ns: i64, close_ns: i64) -> Bucket {
        Bucket { open_ns, close_ns }
    }

    fn iv(text: &str) -> Interval {
        Interval::parse(text).unwrap()
    }

    const NS_PER_HOUR: i64 = 3600 * NS_PER_SEC;
    const NS_PER_DAY: i64 = SECS_PER_DAY * NS_PER_SEC;

    #[test]
    fn contains_is_half_open() {
        let bucket = b(10, 20);
        assert!(!bucket.contains(9));
        assert!(bucket.contains(10));
        assert!(bucket.contains(19));
        assert!(!bucket.contains(20));
    }

    #[test]
    fn minute_59_to_0_opens_new_candles() {
        let before = utc(2024, 1, 1, 10, 59, 59) + 999_999_999;
        let after = utc(2024, 1, 1, 11, 0, 0);
        let expected = [
            ("1m", utc(2024, 1, 1, 10, 59, 0), utc(2024, 1, 1, 11, 1, 0)),
            ("5m", utc(2024, 1, 1, 10, 55, 0), utc(2024, 1, 1, 11, 5, 0)),
            (
                "15m",
                utc(2024, 1, 1, 10, 45, 0),
                utc(2024, 1, 1, 11, 15, 0),
            ),
            (
                "30m",
                utc(2024, 1, 1, 10, 30, 0),
                utc(2024, 1, 1, 11, 30, 0),
            ),
            ("1h", utc(2024, 1, 1, 10, 0, 0), utc(2024, 1, 1, 12, 0, 0)),
        ];
        for (text, first_open, second_close) in expected {
            let interval = iv(text);
            let first = interval.bucket(before, Tz::UTC);
            let second = interval.bucket(after, Tz::UTC);
            assert_eq!(first, b(first_open, after), "{text}");
            assert_eq!(second, b(after, second_close), "{text}");
            assert_ne!(first, second, "{text}");
        }
    }

    #[test]
    fn midnight_opens_new_day_hour_and_minute() {
        let before = utc(2024, 1, 1, 23, 59, 30);
        let midnight = day(2024, 1, 2);
        let cases = [
            ("1m", utc(2024, 1, 1, 23, 59, 0), utc(2024, 1, 2, 0, 1, 0)),
            ("1h", utc(2024, 1, 1, 23, 0, 0), utc(2024, 1, 2, 1, 0, 0)),
            ("1d", day(2024, 1, 1), day(2024, 1, 3)),
        ];
        for (text, first_open, second_close) in cases {
            let interval = iv(text);
            assert_eq!(interval.bucket(before, Tz::UTC), b(first_open, midnight));
            assert_eq!(
                interval.bucket(midnight, Tz::UTC),
                b(midnight, second_close)
            );
        }
    }

    #[test]
    fn utc_four_hour_candles_open_every_four_hours() {
        let four = iv("4h");
        for hour in [0, 4, 8, 12, 16, 20] {
            let open = utc(2024, 5, 6, hour, 0, 0);
            let bucket = four.bucket(open + 3 * NS_PER_HOUR, Tz::UTC);
            assert_eq!(bucket, b(open, open + 4 * NS_PER_HOUR));
        }
    }

    #[test]
    fn seoul_day_opens_at_15_utc() {
        let one_day = iv("1d");
        let seoul = Tz::Asia__Seoul;
        assert_eq!(
            one_day.bucket(utc(2024, 3, 1, 14, 59, 59), seoul),
            b(utc(2024, 2, 29, 15, 0, 0), utc(2024, 3, 1, 15, 0, 0))
        );
        assert_eq!(
            one_day.bucket(utc(2024, 3, 1, 15, 0, 0), seoul),
            b(utc(2024, 3, 1, 15, 0, 0), utc(2024, 3, 2, 15, 0, 0))
        );
    }

    #[test]
    fn weeks_start_monday_local_midnight() {
        let week = iv("1w");
        let seoul = Tz::Asia__Seoul;
        // Monday 2024-03-04 00:00 KST = Sunday 2024-03-03 15:00 UTC.
        assert_eq!(
            week.bucket(utc(2024, 3, 3, 15, 0, 0), seoul),
            b(utc(2024, 3, 3, 15, 0, 0), utc(2024, 3, 10, 15, 0, 0))
        );
        // Sunday 2024-03-03 23:59:59 KST is still the week of Monday 2024-02-26.
        assert_eq!(
            week.bucket(utc(2024, 3, 3, 14, 59, 59), seoul),
            b(utc(2024, 2, 25, 15, 0, 0), utc(2024, 3, 3, 15, 0, 0))
        );
        // 2024-01-01 was a Monday: Sunday 2023-12-31 23:59 UTC belongs to the week of 12-25.
        assert_eq!(
            week.bucket(utc(2023, 12, 31, 23, 59, 0), Tz::UTC),
            b(day(2023, 12, 25), day(2024, 1, 1))
        );
        assert_eq!(
            week.bucket(day(2024, 1, 1), Tz::UTC),
            b(day(2024, 1, 1), day(2024, 1, 8))
        );
    }

    #[test]
    fn months_follow_month_lengths() {
        let month = iv("1M");
        let cases = [
            (
                utc(2024, 2, 15, 12, 0, 0),
                day(2024, 2, 1),
                day(2024, 3, 1),
                29,
            ),
            (
                utc(2023, 2, 28, 23, 59, 59),
                day(2023, 2, 1),
                day(2023, 3, 1),
                28,
            ),
            (
                utc(2024, 4, 30, 23, 59, 59),
                day(2024, 4, 1),
                day(2024, 5, 1),
                30,
            ),
            (day(2024, 1, 31), day(2024, 1, 1), day(2024, 2, 1), 31),
            (day(2000, 2, 29), day(2000, 2, 1), day(2000, 3, 1), 29),
            (day(1900, 2, 10), day(1900, 2, 1), day(1900, 3, 1), 28),
        ];
        for (ts, open, close, days) in cases {
            let bucket = month.bucket(ts, Tz::UTC);
            assert_eq!(bucket, b(open, close));
            assert_eq!(bucket.close_ns - bucket.open_ns, days * NS_PER_DAY);
        }
        // December rolls over into January of the next year.
        let december = month.bucket(utc(2023, 12, 31, 23, 59, 59) + 999_999_999, Tz::UTC);
        assert_eq!(december, b(day(2023, 12, 1), day(2024, 1, 1)));
        assert_eq!(
            month.next(december, Tz::UTC),
            b(day(2024, 1, 1), day(2024, 2, 1))
        );
        assert_eq!(
            month.prev(b(day(2024, 1, 1), day(2024, 2, 1)), Tz::UTC),
            december
        );
    }

    #[test]
    fn years_in_utc_and_seoul() {
        let year = iv("1Y");
        assert_eq!(
            year.bucket(utc(2024, 6, 1, 0, 0, 0), Tz::UTC),
            b(day(2024, 1, 1), day(2025, 1, 1))
        );
        let seoul = Tz::Asia__Seoul;
        let y2024 = b(utc(2023, 12, 31, 15, 0, 0), utc(2024, 12, 31, 15, 0, 0));
        assert_eq!(year.bucket(utc(2024, 6, 1, 0, 0, 0), seoul), y2024);
        assert_eq!(year.bucket(utc(2023, 12, 31, 15, 0, 0), seoul), y2024);
        assert_eq!(
            year.bucket(utc(2023, 12, 31, 14, 59, 59), seoul),
            b(utc(2022, 12, 31, 15, 0, 0), utc(2023, 12, 31, 15, 0, 0))
        );
    }

    #[test]
    fn new_york_spring_forward_day_is_23_hours() {
        let ny = Tz::America__New_York;
        let open = utc(2024, 3, 10, 5, 0, 0);
        let close = utc(2024, 3, 11, 4, 0, 0);
        assert_eq!(
            iv("1d").bucket(utc(2024, 3, 10, 12, 0, 0), ny),
            b(open, close)
        );
        let hour = iv("1h");
        assert_eq!(
            hour.bucket(utc(2024, 3, 10, 5, 30, 0), ny),
            b(utc(2024, 3, 10, 5, 0, 0), utc(2024, 3, 10, 6, 0, 0))
        );
        // 06:00Z = 01:00 EST, then 07:00Z = 03:00 EDT.
        assert_eq!(
            hour.bucket(utc(2024, 3, 10, 6, 59, 59), ny),
            b(utc(2024, 3, 10, 6, 0, 0), utc(2024, 3, 10, 7, 0, 0))
        );
        assert_eq!(
            hour.bucket(utc(2024, 3, 10, 7, 0, 0), ny),
            b(utc(2024, 3, 10, 7, 0, 0), utc(2024, 3, 10, 8, 0, 0))
        );
        assert_eq!(walk(hour, open, close, ny), 23);
        // 4h: 05, 09, 13, 17, 21, 01Z and the last one cut at 04:00Z (3 hours).
        let four = iv("4h");
        assert_eq!(
            four.bucket(utc(2024, 3, 11, 3, 0, 0), ny),
            b(utc(2024, 3, 11, 1, 0, 0), close)
        );
        assert_eq!(walk(four, open, close, ny), 6);
    }

    #[test]
    fn new_york_fall_back_day_is_25_hours() {
        let ny = Tz::America__New_York;
        let open = utc(2024, 11, 3, 4, 0, 0);
        let close = utc(2024, 11, 4, 5, 0, 0);
        let one_day = iv("1d");
        // 01:30 EDT and 01:30 EST are the same local day.
        assert_eq!(
            one_day.bucket(utc(2024, 11, 3, 5, 30, 0), ny),
            b(open, close)
        );
        assert_eq!(
            one_day.bucket(utc(2024, 11, 3, 6, 30, 0), ny),
            b(open, close)
        );
        assert_eq!(walk(iv("1h"), open, close, ny), 25);
        // 4h: 04, 08, 12, 16, 20, 00Z, then 04Z..05Z cut by the next local midnight.
        let four = iv("4h");
        assert_eq!(
            four.bucket(utc(2024, 11, 4, 4, 30, 0), ny),
            b(utc(2024, 11, 4, 4, 0, 0), close)
        );
        // The next day restarts at local midnight (05:00Z).
        assert_eq!(four.bucket(close, ny), b(close, utc(2024, 11, 4, 9, 0, 0)));
        assert_eq!(walk(four, open, close, ny), 7);
    }

    #[test]
    fn havana_day_without_midnight_starts_at_one() {
        // Cuba sprang forward at 00:00 CST on Sunday 2024-03-10 (00:00 -> 01:00 CDT).
        let havana = Tz::America__Havana;
        let open = utc(2024, 3, 10, 5, 0, 0); // 01:00 CDT
        let close = utc(2024, 3, 11, 4, 0, 0); // 00:00 CDT on 03-11
        let one_day = iv("1d");
        assert_eq!(
            one_day.bucket(utc(2024, 3, 10, 12, 0, 0), havana),
            b(open, close)
        );
        // The previous day ends where this one starts: 24 hours from 2024-03-09 00:00 CST.
        assert_eq!(
            one_day.bucket(utc(2024, 3, 10, 4, 59, 59), havana),
            b(utc(2024, 3, 9, 5, 0, 0), open)
        );
        assert_eq!(walk(iv("1h"), open, close, havana), 23);
    }

    #[test]
    fn havana_ambiguous_midnight_uses_the_earliest() {
        // Cuba fell back at 01:00 CDT on 2024-11-03 (05:00Z) to 00:00 CST: midnight happened at
        // 04:00Z (CDT) and again at 05:00Z (CST). The day opens at the first one.
        let havana = Tz::America__Havana;
        let open = utc(2024, 11, 3, 4, 0, 0);
        let close = utc(2024, 11, 4, 5, 0, 0);
        let one_day = iv("1d");
        assert_eq!(
            one_day.bucket(utc(2024, 11, 3, 4, 30, 0), havana),
            b(open, close)
        );
        assert_eq!(
            one_day.bucket(utc(2024, 11, 3, 5, 30, 0), havana),
            b(open, close)
        );
        assert_eq!(
            one_day.bucket(utc(2024, 11, 3, 3, 59, 59), havana),
            b(utc(2024, 11, 2, 4, 0, 0), open)
        );
        assert_eq!(walk(iv("1h"), open, close, havana), 25);
    }

    #[test]
    fn st_johns_fall_back_after_midnight_keeps_days_contiguous() {
        // Newfoundland fell back at 00:01 NDT (-2:30) on 2006-10-29 (02:31Z) to 23:01 NST
        // (-3:30) on the 28th: local dates went 28th, 29th (one minute), 28th again, 29th.
        // Oct 29 opens at its first midnight (02:30Z) and keeps the repeated hour, so its day
        // is 25 hours and the repeated 23:xx of the 28th belongs to it.
        let st_johns = Tz::America__St_Johns;
        let open = utc(2006, 10, 29, 2, 30, 0);
        let close = utc(2006, 10, 30, 3, 30, 0);
        let one_day = iv("1d");
        let repeated = utc(2006, 10, 29, 3, 0, 0); // 23:30 NST on the 28th, second time
        assert_eq!(one_day.bucket(repeated, st_johns), b(open, close));
        assert_eq!(
            one_day.bucket(open - 1, st_johns),
            b(utc(2006, 10, 28, 2, 30, 0), open)
        );
        assert_eq!(
            iv("1h").bucket(repeated, st_johns),
            b(open, utc(2006, 10, 29, 3, 30, 0))
        );
        assert_eq!(walk(iv("1h"), open, close, st_johns), 25);
    }

    #[test]
    fn santiago_day_without_midnight_starts_at_one() {
        // Chile sprang forward at 04:00 UTC on Sunday 2024-09-08: 00:00 -04 became 01:00 -03.
        let santiago = Tz::America__Santiago;
        let open = utc(2024, 9, 8, 4, 0, 0);
        let close = utc(2024, 9, 9, 3, 0, 0);
        assert_eq!(
            iv("1d").bucket(utc(2024, 9, 8, 4, 0, 0), santiago),
            b(open, close)
        );
        assert_eq!(
            iv("1w").bucket(utc(2024, 9, 8, 12, 0, 0), santiago),
            b(utc(2024, 9, 2, 4, 0, 0), utc(2024, 9, 9, 3, 0, 0))
        );
    }

    #[test]
    fn kolkata_intraday_aligns_to_half_hour_midnight() {
        // 2024-01-01 00:00Z is 05:30 IST: the 4h candle is 04:00..08:00 IST.
        let kolkata = Tz::Asia__Kolkata;
        assert_eq!(
            iv("4h").bucket(day(2024, 1, 1), kolkata),
            b(utc(2023, 12, 31, 22, 30, 0), utc(2024, 1, 1, 2, 30, 0))
        );
        assert_eq!(
            iv("1d").bucket(day(2024, 1, 1), kolkata),
            b(utc(2023, 12, 31, 18, 30, 0), utc(2024, 1, 1, 18, 30, 0))
        );
    }

    #[test]
    fn multi_interval_alignment() {
        let cases = [
            // 10m: multiples of 10 minutes from midnight.
            (
                "10m",
                utc(2024, 1, 1, 10, 59, 0),
                utc(2024, 1, 1, 10, 50, 0),
                utc(2024, 1, 1, 11, 0, 0),
            ),
            // 2024-01-01 is day 19723 (odd), so its 2d bucket starts on day 19722 = 2023-12-31.
            (
                "2d",
                utc(2024, 1, 1, 12, 0, 0),
                day(2023, 12, 31),
                day(2024, 1, 2),
            ),
            ("2d", day(2024, 1, 2), day(2024, 1, 2), day(2024, 1, 4)),
            // 2024-01-01 is week 2817 after Monday 1970-01-05 (odd): starts week 2816 = 12-25.
            ("2w", day(2024, 1, 1), day(2023, 12, 25), day(2024, 1, 8)),
            ("2w", day(2024, 1, 8), day(2024, 1, 8), day(2024, 1, 22)),
            // 3M: quarters.
            ("3M", day(2024, 5, 15), day(2024, 4, 1), day(2024, 7, 1)),
            (
                "3M",
                utc(2024, 12, 31, 23, 0, 0),
                day(2024, 10, 1),
                day(2025, 1, 1),
            ),
            ("3M", day(2024, 1, 1), day(2024, 1, 1), day(2024, 4, 1)),
            ("6M", day(2024, 9, 1), day(2024, 7, 1), day(2025, 1, 1)),
            // 2Y: even years.
            ("2Y", day(2023, 6, 1), day(2022, 1, 1), day(2024, 1, 1)),
            ("2Y", day(2024, 6, 1), day(2024, 1, 1), day(2026, 1, 1)),
        ];
        for (text, ts, open, close) in cases {
            assert_eq!(iv(text).bucket(ts, Tz::UTC), b(open, close), "{text}");
        }
        // Quarters in Seoul open at local midnight of Apr 1 (15:00Z on Mar 31).
        assert_eq!(
            iv("3M").bucket(utc(2024, 3, 31, 15, 0, 0), Tz::Asia__Seoul),
            b(utc(2024, 3, 31, 15, 0, 0), utc(2024, 6, 30, 15, 0, 0))
        );
    }

    #[test]
    fn times_before_1970() {
        let ts = utc(1969, 12, 31, 23, 59, 59);
        let cases = [
            ("1m", utc(1969, 12, 31, 23, 59, 0), day(1970, 1, 1)),
            ("4h", utc(1969, 12, 31, 20, 0, 0), day(1970, 1, 1)),
            ("1d", day(1969, 12, 31), day(1970, 1, 1)),
            ("2d", day(1969, 12, 30), day(1970, 1, 1)),
            ("1w", day(1969, 12, 29), day(1970, 1, 5)),
            ("1M", day(1969, 12, 1), day(1970, 1, 1)),
            ("1Y", day(1969, 1, 1), day(1970, 1, 1)),
            ("2Y", day(1968, 1, 1), day(1970, 1, 1)),
        ];
        for (text, open, close) in cases {
            assert_eq!(iv(text).bucket(ts, Tz::UTC), b(open, close), "{text}");
        }
        // One nanosecond before the epoch.
        assert_eq!(
            iv("1m").bucket(-1, Tz::UTC),
            b(utc(1969, 12, 31, 23, 59, 0), 0)
        );
    }

    #[test]
    fn fast_path_equals_general_path() {
        let mut state = 0x2545_f491_4f6c_dd1d_u64;
        let zones = [
            Tz::UTC,
            Tz::Etc__GMTMinus5,
            Tz::Etc__GMTPlus11,
            Tz::Etc__GMTMinus14,
        ];
        for _ in 0..5_000 {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            // Reinterpreting the random bits as any i64 covers the whole range, 1677..2262.
            let ts = state as i64;
            for tz in zones {
                let offset = crate::zone::fixed_offset_secs(tz).unwrap();
                for interval in crate::STORED.iter().filter(|i| i.unit <= Unit::Hour) {
                    let len = match interval.unit {
                        Unit::Minute => 60,
                        _ => 3600,
                    } * i128::from(interval.count)
                        * i128::from(NS_PER_SEC);
                    let general = intraday(Zone::Fixed(offset), ts, len);
                    assert_eq!(interval.bucket(ts, tz), general, "{interval} {tz} {ts}");
                    let named = intraday(Zone::Named(tz), ts, len);
                    assert_eq!(general, named, "{interval} {tz} {ts}");
                }
            }
        }
    }

    #[test]
    fn extreme_timestamps_do_not_panic() {
        for interval in crate::STORED
            .iter()
            .chain(&[iv("10m"), iv("2d"), iv("3M"), iv("2Y")])
        {
            for tz in [
                Tz::UTC,
                Tz::America__New_York,
                Tz::Asia__Kolkata,
                Tz::Etc__GMTMinus14,
            ] {
                for ts in [i64::MIN, i64::MIN + 1, 0, i64::MAX - 1, i64::MAX] {
                    let bucket = interval.bucket(ts, tz);
                    assert!(bucket.open_ns <= ts, "{interval} {tz} {ts}");
                    assert!(bucket.open_ns < bucket.close_ns, "{interval} {tz} {ts}");
                    // Only i64::MAX itself cannot lie inside a half-open i64 range.
                    if ts != i64::MAX {
                        assert!(bucket.contains(ts), "{interval} {tz} {ts}");
                    }
                    let _ = interval.next(bucket, tz);
                    let _ = interval.prev(bucket, tz);
                }
            }
        }
    }

    /// Number of buckets of `interval` from `open` until `close`, checking they tile exactly.
    fn walk(interval: Interval, open: i64, close: i64, tz: Tz) -> usize {
        let mut bucket = interval.bucket(open, tz);
        assert_eq!(bucket.open_ns, open);
        let mut count = 1;
        while bucket.close_ns < close {
            let next = interval.next(bucket, tz);
            assert_eq!(next.open_ns, bucket.close_ns);
            bucket = next;
            count += 1;
        }
        assert_eq!(bucket.close_ns, close);
        count
    }
}
