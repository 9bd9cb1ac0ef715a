//! Whether a symbol's market is open: its instrument's regular sessions in its own time zone
//! (the same rules as candle sessions, `tickmesh_calendar::session`), minus the poller's
//! holidays. A session belongs to the local date it opens on, so a holiday closes the sessions
//! that open that day, including the part of an overnight session after midnight.
//!
//! Pure: the time is passed in, so tests never wait for 09:00 in Seoul.

use std::collections::HashSet;

use chrono::{DateTime, Days, NaiveDate, Timelike};
use chrono_tz::Tz;
use tickmesh_calendar::{Session, in_session};
use tickmesh_core::time_zone::parse_time_zone;
use tickmesh_marketfeed::model::Instrument;

#[derive(Clone, Debug, Default)]
pub struct MarketHours {
    holidays: HashSet<NaiveDate>,
}

impl MarketHours {
    pub fn new(holidays: impl IntoIterator<Item = NaiveDate>) -> Self {
        Self {
            holidays: holidays.into_iter().collect(),
        }
    }

    /// True when `instrument` trades at `now_ns`. An instrument with no sessions trades around
    /// the clock except on holidays; an unknown instrument (`None`) is always open, so a symbol
    /// nobody described is still polled.
    pub fn is_open(&self, instrument: Option<&Instrument>, now_ns: i64) -> bool {
        let Some(instrument) = instrument else {
            return true;
        };
        let tz = parse_time_zone(&instrument.time_zone).unwrap_or(Tz::UTC);
        let local = DateTime::from_timestamp_nanos(now_ns).with_timezone(&tz);
        let today = local.date_naive();
        if instrument.sessions.is_empty() {
            return !self.holidays.contains(&today);
        }
        let minute = local.hour() * 60 + local.minute();
        instrument.sessions.iter().any(|s| {
            let session = Session {
                days: s.days.clone(),
                open_minute: s.open_minute,
                close_minute: s.close_minute,
            };
            if !in_session(std::slice::from_ref(&session), now_ns, tz) {
                return false;
            }
            // The morning part of an overnight session opened yesterday.
            let overnight = s.open_minute >= s.close_minute.min(1440);
            let opened_on = if overnight && minute < u32::from(s.close_minute) {
                today.checked_sub_days(Days::new(1)).unwrap_or(today)
            } else {
                today
            };
            !self.holidays.contains(&opened_on)
        })
    }

    /// The local date of `now_ns` in the instrument's zone, `YYYYMMDD` (UTC when unknown).
    pub fn local_date(instrument: Option<&Instrument>, now_ns: i64) -> String {
        let tz = instrument
            .and_then(|i| parse_time_zone(&i.time_zone).ok())
            .unwrap_or(Tz::UTC);
        DateTime::from_timestamp_nanos(now_ns)
            .with_timezone(&tz)
            .format("%Y%m%d")
            .to_string()
    }
}

#[cfg(test)]
mod tests {
    use chrono::{TimeZone, Utc};
    use tickmesh_marketfeed::model::TradingSession;

    use super::*;

    fn utc(y: i32, mo: u32, d: u32, h: u32, mi: u32) -> i64 {
        Utc.with_ymd_and_hms(y, mo, d, h, mi, 0)
            .unwrap()
            .timestamp_nanos_opt()
            .unwrap()
    }

    fn krx() -> Instrument {
        Instrument {
            symbol: "005930".into(),
            venue: "krx".into(),
            price_scale: 0,
            quantity_scale: 0,
            time_zone: "Asia/Seoul".into(),
            sessions: vec![TradingSession {
                days: vec![1, 2, 3, 4, 5],
                open_minute: 9 * 60,
                close_minute: 15 * 60 + 30,
            }],
            update_time_ns: 0,
        }
    }

    fn date(text: &str) -> NaiveDate {
        NaiveDate::parse_from_str(text, "%Y-%m-%d").unwrap()
    }

    #[test]
    fn krx_hours_in_seoul_and_a_holiday() {
        let hours = MarketHours::new([date("2024-03-01")]);
        let i = krx();
        // 2024-03-08 is a Friday; Seoul is UTC+9.
        assert!(!hours.is_open(Some(&i), utc(2024, 3, 7, 23, 59))); // 08:59
        assert!(hours.is_open(Some(&i), utc(2024, 3, 8, 0, 0))); // 09:00
        assert!(hours.is_open(Some(&i), utc(2024, 3, 8, 6, 29))); // 15:29
        assert!(!hours.is_open(Some(&i), utc(2024, 3, 8, 6, 30))); // 15:30
        assert!(!hours.is_open(Some(&i), utc(2024, 3, 9, 1, 0))); // Saturday
        // Friday 2024-03-01 (Independence Movement Day) is a holiday.
        assert!(!hours.is_open(Some(&i), utc(2024, 3, 1, 1, 0)));
        assert!(MarketHours::default().is_open(Some(&i), utc(2024, 3, 1, 1, 0)));
        assert_eq!(
            MarketHours::local_date(Some(&i), utc(2024, 3, 7, 15, 0)),
            "20240308"
        );
    }

    #[test]
    fn an_overnight_session_is_closed_by_the_holiday_it_opened_on() {
        let mut i = krx();
        i.time_zone = "UTC".into();
        i.sessions = vec![TradingSession {
            days: vec![1, 2, 3, 4, 5],
            open_minute: 18 * 60,
            close_minute: 5 * 60,
        }];
        let hours = MarketHours::new([date("2024-03-11")]); // a Monday
        assert!(!hours.is_open(Some(&i), utc(2024, 3, 11, 20, 0))); // Monday evening
        assert!(!hours.is_open(Some(&i), utc(2024, 3, 12, 2, 0))); // Monday's session, Tuesday 02:00
        assert!(hours.is_open(Some(&i), utc(2024, 3, 12, 20, 0))); // Tuesday evening
        assert!(hours.is_open(Some(&i), utc(2024, 3, 13, 2, 0)));
    }

    #[test]
    fn around_the_clock_and_unknown_instruments() {
        let mut i = krx();
        i.sessions.clear();
        let hours = MarketHours::new([date("2024-03-09")]);
        assert!(hours.is_open(Some(&i), utc(2024, 3, 10, 3, 0)));
        assert!(!hours.is_open(Some(&i), utc(2024, 3, 9, 3, 0)));
        assert!(hours.is_open(None, utc(2024, 3, 9, 3, 0)));
    }
}
