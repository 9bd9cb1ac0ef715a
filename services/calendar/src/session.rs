//! Regular trading sessions in an instrument's local time.

use chrono_tz::Tz;

use crate::zone::{NS_PER_SEC, SECS_PER_DAY, Zone, iso_weekday};

const MINUTES_PER_DAY: i64 = 1440;

/// A regular session in local time: ISO weekdays 1=Mon..7=Sun, minutes since local midnight.
/// close_minute < open_minute means the session runs past midnight into the next day
/// (it belongs to the day it opens on).
///
/// `open_minute == close_minute` means a full 24 hours from `open_minute` on each listed day.
/// A `close_minute` of 1440 means "until midnight"; larger values are treated as 1440. A
/// session whose `open_minute` is 1440 or more never matches. Weekdays outside 1..=7 are
/// ignored. Times are compared on the local wall clock, so a 09:00 open is 09:00 local on DST
/// days too.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Session {
    pub days: Vec<u8>,
    pub open_minute: u16,
    pub close_minute: u16,
}

impl Session {
    /// Whether local `minute` (0..1440) of a day with ISO weekday `weekday` is inside the
    /// session; `yesterday` is the weekday before.
    fn covers(&self, weekday: u8, yesterday: u8, minute: i64) -> bool {
        let open = i64::from(self.open_minute);
        let close = i64::from(self.close_minute).min(MINUTES_PER_DAY);
        if open >= MINUTES_PER_DAY {
            return false;
        }
        if open < close {
            self.days.contains(&weekday) && open <= minute && minute < close
        } else {
            // Overnight (or 24 h when open == close): the evening part belongs to today's
            // session, the morning part to yesterday's.
            (self.days.contains(&weekday) && minute >= open)
                || (self.days.contains(&yesterday) && minute < close)
        }
    }
}

/// True when `ts_ns` falls inside one of `sessions` (local time in `tz`). Empty `sessions` means
/// trading around the clock: always true.
pub fn in_session(sessions: &[Session], ts_ns: i64, tz: Tz) -> bool {
    if sessions.is_empty() {
        return true;
    }
    let utc_secs = ts_ns.div_euclid(NS_PER_SEC);
    let local_secs = utc_secs + Zone::of(tz).offset_secs(utc_secs);
    let day = local_secs.div_euclid(SECS_PER_DAY);
    let minute = local_secs.rem_euclid(SECS_PER_DAY) / 60;
    let weekday = iso_weekday(day);
    let yesterday = if weekday == 1 { 7 } else { weekday - 1 };
    sessions
        .iter()
        .any(|session| session.covers(weekday, yesterday, minute))
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::{TimeZone, Utc};

    fn utc(y: i32, mo: u32, d: u32, h: u32, mi: u32, s: u32) -> i64 {
        Utc.with_ymd_and_hms(y, mo, d, h, mi, s)
            .unwrap()
            .timestamp_nanos_opt()
            .unwrap()
    }

    fn krx() -> Vec<Session> {
        vec![Session {
            days: vec![1, 2, 3, 4, 5],
            open_minute: 9 * 60,
            close_minute: 15 * 60 + 30,
        }]
    }

    #[test]
    fn krx_regular_session() {
        let seoul = Tz::Asia__Seoul;
        let sessions = krx();
        // Friday 2024-03-08 in KST (UTC+9).
        let cases = [
            (utc(2024, 3, 7, 23, 59, 59), false), // Fri 08:59:59
            (utc(2024, 3, 8, 0, 0, 0), true),     // Fri 09:00
            (utc(2024, 3, 8, 6, 29, 0), true),    // Fri 15:29
            (utc(2024, 3, 8, 6, 29, 59), true),   // Fri 15:29:59
            (utc(2024, 3, 8, 6, 30, 0), false),   // Fri 15:30
            (utc(2024, 3, 9, 1, 0, 0), false),    // Sat 10:00
            (utc(2024, 3, 10, 1, 0, 0), false),   // Sun 10:00
            (utc(2024, 3, 11, 1, 0, 0), true),    // Mon 10:00
        ];
        for (ts, expected) in cases {
            assert_eq!(in_session(&sessions, ts, seoul), expected, "{ts}");
        }
        // The same instant is outside in UTC (Fri 06:29 UTC is before 09:00).
        assert!(!in_session(&sessions, utc(2024, 3, 8, 6, 29, 0), Tz::UTC));
    }

    #[test]
    fn overnight_session_belongs_to_its_opening_day() {
        // 18:00-05:00 opening Sunday through Thursday, in New York.
        let sessions = vec![Session {
            days: vec![7, 1, 2, 3, 4],
            open_minute: 18 * 60,
            close_minute: 5 * 60,
        }];
        let ny = Tz::America__New_York;
        // March 2024 after the 10th is EDT (UTC-4). Sunday 2024-03-17.
        let cases = [
            (utc(2024, 3, 17, 21, 59, 0), false), // Sun 17:59
            (utc(2024, 3, 17, 22, 0, 0), true),   // Sun 18:00
            (utc(2024, 3, 18, 6, 0, 0), true),    // Mon 02:00, Sunday's session
            (utc(2024, 3, 18, 8, 59, 59), true),  // Mon 04:59:59
            (utc(2024, 3, 18, 9, 0, 0), false),   // Mon 05:00
            (utc(2024, 3, 18, 16, 0, 0), false),  // Mon 12:00
            (utc(2024, 3, 22, 6, 0, 0), true),    // Fri 02:00, Thursday's session
            (utc(2024, 3, 22, 22, 0, 0), false),  // Fri 18:00: no Friday opening
            (utc(2024, 3, 23, 6, 0, 0), false),   // Sat 02:00
            (utc(2024, 3, 17, 6, 0, 0), false),   // Sun 02:00: no Saturday opening
        ];
        for (ts, expected) in cases {
            assert_eq!(in_session(&sessions, ts, ny), expected, "{ts}");
        }
    }

    #[test]
    fn empty_sessions_are_always_in() {
        for ts in [i64::MIN, -1, 0, utc(2024, 3, 9, 1, 0, 0), i64::MAX] {
            assert!(in_session(&[], ts, Tz::Asia__Seoul));
        }
    }

    #[test]
    fn edge_shapes() {
        let around_the_clock = vec![Session {
            days: vec![1],
            open_minute: 0,
            close_minute: 0,
        }];
        // Monday 2024-03-11 whole day in UTC, not Tuesday.
        assert!(in_session(
            &around_the_clock,
            utc(2024, 3, 11, 0, 0, 0),
            Tz::UTC
        ));
        assert!(in_session(
            &around_the_clock,
            utc(2024, 3, 11, 23, 59, 59),
            Tz::UTC
        ));
        assert!(!in_session(
            &around_the_clock,
            utc(2024, 3, 12, 0, 0, 0),
            Tz::UTC
        ));
        let until_midnight = vec![Session {
            days: vec![1],
            open_minute: 20 * 60,
            close_minute: 1440,
        }];
        assert!(in_session(
            &until_midnight,
            utc(2024, 3, 11, 23, 59, 59),
            Tz::UTC
        ));
        assert!(!in_session(
            &until_midnight,
            utc(2024, 3, 12, 0, 0, 0),
            Tz::UTC
        ));
        let never = vec![Session {
            days: vec![1, 2, 3, 4, 5, 6, 7],
            open_minute: 1440,
            close_minute: 60,
        }];
        assert!(!in_session(&never, utc(2024, 3, 12, 0, 30, 0), Tz::UTC));
        // Several sessions: a lunch break.
        let split = vec![
            Session {
                days: vec![1],
                open_minute: 9 * 60,
                close_minute: 12 * 60,
            },
            Session {
                days: vec![1],
                open_minute: 13 * 60,
                close_minute: 15 * 60,
            },
        ];
        assert!(in_session(&split, utc(2024, 3, 11, 11, 0, 0), Tz::UTC));
        assert!(!in_session(&split, utc(2024, 3, 11, 12, 30, 0), Tz::UTC));
        assert!(in_session(&split, utc(2024, 3, 11, 13, 0, 0), Tz::UTC));
        // Before 1970: Wednesday 1969-12-31 10:00 UTC.
        let wednesday = vec![Session {
            days: vec![3],
            open_minute: 9 * 60,
            close_minute: 17 * 60,
        }];
        assert!(in_session(&wednesday, utc(1969, 12, 31, 10, 0, 0), Tz::UTC));
        assert!(!in_session(&wednesday, utc(1970, 1, 1, 10, 0, 0), Tz::UTC));
    }
}
