//! Time-zone primitives shared by buckets and sessions: UTC offsets, local calendar days,
//! the instant a local day starts, and the proleptic Gregorian calendar in integer arithmetic.
//!
//! All instants here are whole seconds since the Unix epoch (UTC); local days are counted
//! from 1970-01-01 (day 0). Nothing reads the wall clock.

use chrono::{DateTime, LocalResult, NaiveDateTime, Offset, TimeZone};
use chrono_tz::{GapInfo, Tz};

pub(crate) const NS_PER_SEC: i64 = 1_000_000_000;
pub(crate) const SECS_PER_DAY: i64 = 86_400;

/// Days from 1970-01-01 to 1970-01-05, the first Monday after the epoch.
pub(crate) const FIRST_MONDAY: i64 = 4;

/// A zone prepared for repeated calls: zones that never change their offset are resolved to
/// plain integer arithmetic, every other zone goes through chrono-tz's transition tables.
#[derive(Clone, Copy, Debug)]
pub(crate) enum Zone {
    /// A zone whose UTC offset (seconds east of UTC) never changed.
    Fixed(i64),
    /// A zone with a history of offsets.
    Named(Tz),
}

impl Zone {
    pub(crate) fn of(tz: Tz) -> Zone {
        match fixed_offset_secs(tz) {
            Some(offset) => Zone::Fixed(offset),
            None => Zone::Named(tz),
        }
    }

    /// Seconds east of UTC in effect at `utc_secs`.
    pub(crate) fn offset_secs(self, utc_secs: i64) -> i64 {
        match self {
            Zone::Fixed(offset) => offset,
            Zone::Named(tz) => match naive(utc_secs) {
                Some(utc) => i64::from(tz.offset_from_utc_datetime(&utc).fix().local_minus_utc()),
                // Outside chrono's range (far beyond what i64 nanoseconds can express).
                None => 0,
            },
        }
    }

    /// The local calendar day (days since 1970-01-01) of the instant `utc_secs`.
    pub(crate) fn local_day(self, utc_secs: i64) -> i64 {
        (utc_secs + self.offset_secs(utc_secs)).div_euclid(SECS_PER_DAY)
    }

    /// The first instant (UTC seconds) whose local time is at or after 00:00 of local `day`:
    /// local midnight when it exists (the earliest one when it is ambiguous), otherwise the
    /// first instant after the gap. Non-decreasing in `day`; equal for consecutive days only
    /// when a whole local date was skipped.
    pub(crate) fn day_start(self, day: i64) -> i64 {
        let midnight = day.saturating_mul(SECS_PER_DAY);
        match self {
            Zone::Fixed(offset) => midnight - offset,
            Zone::Named(tz) => {
                let Some(local) = naive(midnight) else {
                    return midnight;
                };
                match tz.from_local_datetime(&local) {
                    LocalResult::Single(at) => at.timestamp(),
                    LocalResult::Ambiguous(a, b) => a.timestamp().min(b.timestamp()),
                    LocalResult::None => gap_end(tz, &local, midnight),
                }
            }
        }
    }
}

/// The first instant after the gap that swallowed local time `local` (= `local_secs`).
fn gap_end(tz: Tz, local: &NaiveDateTime, local_secs: i64) -> i64 {
    if let Some(GapInfo { end: Some(end), .. }) = GapInfo::new(local, &tz) {
        return end.timestamp();
    }
    first_instant_reaching(Zone::Named(tz), local_secs)
}

/// The earliest instant whose local time is >= `local_secs`, by bisection (fallback for gaps
/// chrono-tz cannot describe). No offset exceeds ±16 h, so the answer lies strictly inside
/// two days either side.
fn first_instant_reaching(zone: Zone, local_secs: i64) -> i64 {
    let reached = |utc: i64| utc + zone.offset_secs(utc) >= local_secs;
    let (mut lo, mut hi) = (local_secs - 2 * SECS_PER_DAY, local_secs + 2 * SECS_PER_DAY);
    while hi - lo > 1 {
        let mid = lo + (hi - lo) / 2;
        if reached(mid) {
            hi = mid;
        } else {
            lo = mid;
        }
    }
    hi
}

fn naive(secs: i64) -> Option<NaiveDateTime> {
    DateTime::from_timestamp(secs, 0).map(|at| at.naive_utc())
}

/// ISO weekday (1 = Monday .. 7 = Sunday) of a day counted from 1970-01-01 (a Thursday).
pub(crate) fn iso_weekday(day: i64) -> u8 {
    // rem_euclid(7) is in 0..7, so the cast cannot truncate.
    (day + 3).rem_euclid(7) as u8 + 1
}

/// Days since 1970-01-01 of the proleptic Gregorian date `year`-`month`-`day`
/// (month 1..=12). Howard Hinnant's `days_from_civil`.
pub(crate) fn days_from_civil(year: i64, month: u32, day: u32) -> i64 {
    let (month, day) = (i64::from(month), i64::from(day));
    let year = if month <= 2 { year - 1 } else { year };
    let era = year.div_euclid(400);
    let year_of_era = year - era * 400;
    let shifted_month = if month > 2 { month - 3 } else { month + 9 };
    let day_of_year = (153 * shifted_month + 2) / 5 + day - 1;
    let day_of_era = year_of_era * 365 + year_of_era / 4 - year_of_era / 100 + day_of_year;
    era * 146_097 + day_of_era - 719_468
}

/// The proleptic Gregorian (year, month 1..=12, day 1..=31) of a day counted from 1970-01-01.
/// Howard Hinnant's `civil_from_days`.
pub(crate) fn civil_from_days(days: i64) -> (i64, u32, u32) {
    let days = days + 719_468;
    let era = days.div_euclid(146_097);
    let day_of_era = days - era * 146_097;
    let year_of_era =
        (day_of_era - day_of_era / 1460 + day_of_era / 36_524 - day_of_era / 146_096) / 365;
    let day_of_year = day_of_era - (365 * year_of_era + year_of_era / 4 - year_of_era / 100);
    let shifted_month = (5 * day_of_year + 2) / 153;
    let day = day_of_year - (153 * shifted_month + 2) / 5 + 1;
    let month = if shifted_month < 10 {
        shifted_month + 3
    } else {
        shifted_month - 9
    };
    let year = year_of_era + era * 400 + i64::from(month <= 2);
    // month is in 1..=12 and day in 1..=31 by construction.
    (year, month as u32, day as u32)
}

/// The offset of zones that have only ever had one offset (UTC and its aliases, `Etc/GMT±N`).
/// Named zones such as Asia/Kolkata are not listed: their history has other offsets.
pub(crate) const fn fixed_offset_secs(tz: Tz) -> Option<i64> {
    const H: i64 = 3600;
    // Etc/GMT+N is N hours *west* of Greenwich (POSIX sign convention).
    Some(match tz {
        Tz::UTC
        | Tz::UCT
        | Tz::Universal
        | Tz::Zulu
        | Tz::GMT
        | Tz::GMT0
        | Tz::GMTPlus0
        | Tz::GMTMinus0
        | Tz::Greenwich
        | Tz::Etc__UTC
        | Tz::Etc__UCT
        | Tz::Etc__Universal
        | Tz::Etc__Zulu
        | Tz::Etc__GMT
        | Tz::Etc__GMT0
        | Tz::Etc__GMTPlus0
        | Tz::Etc__GMTMinus0
        | Tz::Etc__Greenwich => 0,
        Tz::Etc__GMTPlus1 => -H,
        Tz::Etc__GMTPlus2 => -2 * H,
        Tz::Etc__GMTPlus3 => -3 * H,
        Tz::Etc__GMTPlus4 => -4 * H,
        Tz::Etc__GMTPlus5 => -5 * H,
        Tz::Etc__GMTPlus6 => -6 * H,
        Tz::Etc__GMTPlus7 => -7 * H,
        Tz::Etc__GMTPlus8 => -8 * H,
        Tz::Etc__GMTPlus9 => -9 * H,
        Tz::Etc__GMTPlus10 => -10 * H,
        Tz::Etc__GMTPlus11 => -11 * H,
        Tz::Etc__GMTPlus12 => -12 * H,
        Tz::Etc__GMTMinus1 => H,
        Tz::Etc__GMTMinus2 => 2 * H,
        Tz::Etc__GMTMinus3 => 3 * H,
        Tz::Etc__GMTMinus4 => 4 * H,
        Tz::Etc__GMTMinus5 => 5 * H,
        Tz::Etc__GMTMinus6 => 6 * H,
        Tz::Etc__GMTMinus7 => 7 * H,
        Tz::Etc__GMTMinus8 => 8 * H,
        Tz::Etc__GMTMinus9 => 9 * H,
        Tz::Etc__GMTMinus10 => 10 * H,
        Tz::Etc__GMTMinus11 => 11 * H,
        Tz::Etc__GMTMinus12 => 12 * H,
        Tz::Etc__GMTMinus13 => 13 * H,
        Tz::Etc__GMTMinus14 => 14 * H,
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::{Datelike, NaiveDate, Utc};

    #[test]
    fn civil_calendar_matches_chrono() {
        let epoch = NaiveDate::from_ymd_opt(1970, 1, 1).unwrap();
        // 1600-01-01 .. 2400-12-31 and a little around: covers every leap-year rule.
        for days in -135_000..157_000 {
            let date = epoch + chrono::TimeDelta::days(days);
            let civil = (i64::from(date.year()), date.month(), date.day());
            assert_eq!(civil_from_days(days), civil, "days {days}");
            assert_eq!(days_from_civil(civil.0, civil.1, civil.2), days, "{date}");
        }
    }

    #[test]
    fn iso_weekday_matches_chrono() {
        let epoch = NaiveDate::from_ymd_opt(1970, 1, 1).unwrap();
        for days in -1000..1000 {
            let date = epoch + chrono::TimeDelta::days(days);
            let expected = date.weekday().number_from_monday();
            assert_eq!(u32::from(iso_weekday(days)), expected, "{date}");
        }
        assert_eq!(iso_weekday(FIRST_MONDAY), 1);
    }

    #[test]
    fn fixed_offset_table_matches_tzdb() {
        let samples = [
            Utc.with_ymd_and_hms(1900, 1, 1, 0, 0, 0).unwrap(),
            Utc.with_ymd_and_hms(1970, 7, 1, 0, 0, 0).unwrap(),
            Utc.with_ymd_and_hms(2024, 1, 1, 0, 0, 0).unwrap(),
            Utc.with_ymd_and_hms(2024, 7, 1, 0, 0, 0).unwrap(),
            Utc.with_ymd_and_hms(2100, 7, 1, 0, 0, 0).unwrap(),
        ];
        let mut fixed = 0;
        for tz in chrono_tz::TZ_VARIANTS {
            let Some(offset) = fixed_offset_secs(tz) else {
                continue;
            };
            fixed += 1;
            for at in samples {
                let real = tz.offset_from_utc_datetime(&at.naive_utc()).fix();
                assert_eq!(i64::from(real.local_minus_utc()), offset, "{tz} at {at}");
            }
        }
        assert_eq!(
            fixed,
            18 + 26,
            "UTC aliases plus Etc/GMT+1..+12 and Etc/GMT-1..-14"
        );
        assert_eq!(fixed_offset_secs(Tz::Asia__Kolkata), None);
        assert_eq!(fixed_offset_secs(Tz::Etc__GMTPlus5), Some(-5 * 3600));
        assert_eq!(fixed_offset_secs(Tz::Etc__GMTMinus14), Some(14 * 3600));
    }

    #[test]
    fn day_start_in_a_midnight_gap_is_the_gap_end() {
        // America/Havana sprang forward at 00:00 CST on 2024-03-10 (to 01:00 CDT = 05:00Z).
        let day = days_from_civil(2024, 3, 10);
        let zone = Zone::of(Tz::America__Havana);
        let expected = Utc
            .with_ymd_and_hms(2024, 3, 10, 5, 0, 0)
            .unwrap()
            .timestamp();
        assert_eq!(zone.day_start(day), expected);
        // The bisection fallback agrees with chrono-tz's gap information.
        assert_eq!(first_instant_reaching(zone, day * SECS_PER_DAY), expected);
        // And on an ordinary day it finds plain local midnight (2024-03-11 00:00 CDT = 04:00Z).
        let next = Utc
            .with_ymd_and_hms(2024, 3, 11, 4, 0, 0)
            .unwrap()
            .timestamp();
        assert_eq!(first_instant_reaching(zone, (day + 1) * SECS_PER_DAY), next);
        assert_eq!(zone.day_start(day + 1), next);
    }
}
