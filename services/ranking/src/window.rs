//! Windows: which period a request means and where its boundaries are.
//!
//! Requests name windows by strings: `""`/`"all"`, `"24h"`, `"hour"`, `"day"`,
//! `"week"`, `"month"` (the current period), `"day:-1"` (relative: yesterday),
//! or a period by its local label: `"hour:2026-01-05T14"`, `"day:2026-01-05"`,
//! `"week:2026-W02"` (ISO week), `"month:2026-01"`. The resolved name of a
//! period (`"day:2026-01-05"`) is also the suffix of its Redis keys.
//!
//! Boundaries are those of `tickmesh-calendar` in the board's time zone: days
//! start at local midnight, weeks on Monday, months on the 1st, hours are
//! aligned to the local day (a fall-back day has 25 hourly windows, the
//! repeated local hour's second one is labelled `…T01.2`; a spring-forward day
//! has 23).

use chrono::{Datelike, NaiveDate, NaiveDateTime, TimeZone, Timelike};
use tickmesh_calendar::{Bucket, Interval, Unit};
use tickmesh_core::time_zone::Tz;

use crate::board::{Board, WindowKind};

/// Furthest a relative window may reach back ("hour:-10000").
pub const MAX_RELATIVE: u32 = 10_000;

/// A resolved window.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Window {
    pub kind: WindowKind,
    /// Canonical name, e.g. "all", "24h", "day:2026-01-05".
    pub name: String,
    /// `[open_ns, close_ns)` for periodic windows; all-time and 24 h never close.
    pub bucket: Option<Bucket>,
}

impl Window {
    pub fn all_time() -> Window {
        Window {
            kind: WindowKind::AllTime,
            name: "all".into(),
            bucket: None,
        }
    }

    pub fn rolling() -> Window {
        Window {
            kind: WindowKind::Rolling24h,
            name: "24h".into(),
            bucket: None,
        }
    }

    /// When the window closes (ns), or `None` for windows that never do.
    pub fn close_ns(&self) -> Option<i64> {
        self.bucket.map(|b| b.close_ns)
    }

    pub fn is_closed(&self, now_ns: i64) -> bool {
        self.close_ns().is_some_and(|c| c <= now_ns)
    }
}

fn interval(kind: WindowKind) -> Option<Interval> {
    Some(match kind {
        WindowKind::Hourly => Interval::new(Unit::Hour, 1),
        WindowKind::Daily => Interval::new(Unit::Day, 1),
        WindowKind::Weekly => Interval::new(Unit::Week, 1),
        WindowKind::Monthly => Interval::new(Unit::Month, 1),
        WindowKind::AllTime | WindowKind::Rolling24h => return None,
    })
}

/// The window of `kind` that contains `at_ns`.
pub fn window_at(kind: WindowKind, at_ns: i64, tz: Tz) -> Window {
    match interval(kind) {
        None if kind == WindowKind::AllTime => Window::all_time(),
        None => Window::rolling(),
        Some(iv) => periodic(kind, iv.bucket(at_ns, tz), tz),
    }
}

fn periodic(kind: WindowKind, bucket: Bucket, tz: Tz) -> Window {
    Window {
        kind,
        name: label(kind, bucket, tz),
        bucket: Some(bucket),
    }
}

/// The window right before a periodic one.
pub fn previous(window: &Window, tz: Tz) -> Option<Window> {
    let iv = interval(window.kind)?;
    Some(periodic(window.kind, iv.prev(window.bucket?, tz), tz))
}

/// The window right after a periodic one.
pub fn next(window: &Window, tz: Tz) -> Option<Window> {
    let iv = interval(window.kind)?;
    Some(periodic(window.kind, iv.next(window.bucket?, tz), tz))
}

fn local(ns: i64, tz: Tz) -> NaiveDateTime {
    tz.timestamp_nanos(ns).naive_local()
}

fn base_label(kind: WindowKind, bucket: Bucket, tz: Tz) -> String {
    let t = local(bucket.open_ns, tz);
    match kind {
        WindowKind::Hourly => format!("hour:{}T{:02}", t.date().format("%Y-%m-%d"), t.hour()),
        WindowKind::Daily => format!("day:{}", t.date().format("%Y-%m-%d")),
        WindowKind::Weekly => {
            let w = t.date().iso_week();
            format!("week:{}-W{:02}", w.year(), w.week())
        }
        WindowKind::Monthly => format!("month:{}-{:02}", t.year(), t.month()),
        WindowKind::AllTime => "all".into(),
        WindowKind::Rolling24h => "24h".into(),
    }
}

fn label(kind: WindowKind, bucket: Bucket, tz: Tz) -> String {
    let base = base_label(kind, bucket, tz);
    if kind == WindowKind::Hourly {
        let prev = Interval::new(Unit::Hour, 1).prev(bucket, tz);
        if base_label(kind, prev, tz) == base {
            return format!("{base}.2");
        }
    }
    base
}

/// Resolves a window name for `board` at `now_ns`; the error reads well after
/// the field name `window`.
pub fn resolve(board: &Board, text: &str, now_ns: i64) -> Result<Window, String> {
    let tz = board.tz();
    let (kind_name, period) = match text.split_once(':') {
        Some((k, p)) => (k, Some(p)),
        None => (text, None),
    };
    let kind = match kind_name {
        "" | "all" => WindowKind::AllTime,
        "24h" => WindowKind::Rolling24h,
        "hour" => WindowKind::Hourly,
        "day" => WindowKind::Daily,
        "week" => WindowKind::Weekly,
        "month" => WindowKind::Monthly,
        _ => {
            return Err(format!(
                "{text:?} is not a window: use all, 24h, hour, day, week or month, optionally with a period (\"day:2026-01-05\", \"week:2026-W02\", \"month:2026-01\", \"hour:2026-01-05T14\") or an offset (\"day:-1\")"
            ));
        }
    };
    if !board.keeps(kind) {
        return Err(format!(
            "board {:?} keeps no {} window (it keeps: {})",
            board.id,
            kind.name(),
            board.window_names()
        ));
    }
    let Some(period) = period else {
        return Ok(window_at(kind, now_ns, tz));
    };
    if !kind.is_periodic() {
        return Err(format!(
            "{text:?}: the {} window has no periods",
            kind.name()
        ));
    }
    if let Some(back) = period.strip_prefix('-') {
        let n: u32 = back
            .parse()
            .ok()
            .filter(|n| *n <= MAX_RELATIVE)
            .ok_or_else(|| format!("{text:?}: an offset is -1 to -{MAX_RELATIVE} periods back"))?;
        let mut w = window_at(kind, now_ns, tz);
        for _ in 0..n {
            w = previous(&w, tz).expect("periodic");
        }
        return Ok(w);
    }
    let at = period_instant(kind, period, tz).ok_or_else(|| {
        format!(
            "{text:?} is not a {} period (examples: {})",
            kind.name(),
            match kind {
                WindowKind::Hourly => "hour:2026-01-05T14",
                WindowKind::Daily => "day:2026-01-05",
                WindowKind::Weekly => "week:2026-W02",
                _ => "month:2026-01",
            }
        )
    })?;
    let w = window_at(kind, at, tz);
    if w.name != format!("{kind_name}:{period}") {
        return Err(format!(
            "{text:?} does not name a {} of {} (nearest: {:?})",
            kind.name(),
            board.time_zone,
            w.name
        ));
    }
    Ok(w)
}

/// An instant inside the period a label names.
fn period_instant(kind: WindowKind, period: &str, tz: Tz) -> Option<i64> {
    let noon = |d: NaiveDate| tz.from_local_datetime(&d.and_hms_opt(12, 0, 0)?).earliest();
    let t = match kind {
        WindowKind::Hourly => {
            let (text, second) = match period.strip_suffix(".2") {
                Some(t) => (t, true),
                None => (period, false),
            };
            let naive = NaiveDateTime::parse_from_str(&format!("{text}:00"), "%Y-%m-%dT%H:%M")
                .ok()
                .filter(|_| text.len() == 13)?;
            let mapped = tz.from_local_datetime(&naive);
            if second {
                mapped.latest()?
            } else {
                mapped.earliest()?
            }
        }
        WindowKind::Daily => noon(NaiveDate::parse_from_str(period, "%Y-%m-%d").ok()?)?,
        WindowKind::Weekly => {
            let (y, w) = period.split_once("-W")?;
            noon(NaiveDate::from_isoywd_opt(
                y.parse().ok()?,
                w.parse().ok()?,
                chrono::Weekday::Mon,
            )?)?
        }
        WindowKind::Monthly => {
            let (y, m) = period.split_once('-')?;
            noon(NaiveDate::from_ymd_opt(
                y.parse().ok()?,
                m.parse().ok()?,
                1,
            )?)?
        }
        _ => return None,
    };
    t.timestamp_nanos_opt()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::board::{Operator, Order, TieBreak};

    fn board(tz: &str) -> Board {
        Board {
            id: "b".into(),
            display_name: String::new(),
            order: Order::HigherFirst,
            operator: Operator::Increment,
            windows: vec![
                WindowKind::AllTime,
                WindowKind::Hourly,
                WindowKind::Daily,
                WindowKind::Weekly,
                WindowKind::Monthly,
                WindowKind::Rolling24h,
            ],
            time_zone: tz.into(),
            retention_secs: 86_400,
            tie_break: TieBreak::EarlierFirst,
            score_scale: 0,
            update_time_ns: 0,
        }
    }

    fn ns(rfc3339: &str) -> i64 {
        chrono::DateTime::parse_from_rfc3339(rfc3339)
            .unwrap()
            .timestamp_nanos_opt()
            .unwrap()
    }

    #[test]
    fn current_windows_follow_the_board_zone() {
        let seoul = board("Asia/Seoul");
        // 2026-01-04T15:30Z is Monday 2026-01-05 00:30 in Seoul.
        let now = ns("2026-01-04T15:30:00Z");
        assert_eq!(resolve(&seoul, "day", now).unwrap().name, "day:2026-01-05");
        assert_eq!(resolve(&seoul, "week", now).unwrap().name, "week:2026-W02");
        assert_eq!(
            resolve(&seoul, "hour", now).unwrap().name,
            "hour:2026-01-05T00"
        );
        assert_eq!(resolve(&seoul, "month", now).unwrap().name, "month:2026-01");
        let utc = board("UTC");
        assert_eq!(resolve(&utc, "day", now).unwrap().name, "day:2026-01-04");
        assert_eq!(resolve(&utc, "week", now).unwrap().name, "week:2026-W01");
        let day = resolve(&seoul, "day", now).unwrap().bucket.unwrap();
        assert_eq!(day.open_ns, ns("2026-01-04T15:00:00Z"));
        assert_eq!(day.close_ns, ns("2026-01-05T15:00:00Z"));
    }

    #[test]
    fn named_and_relative_periods() {
        let b = board("America/New_York");
        let now = ns("2026-03-10T12:00:00Z");
        let w = resolve(&b, "day:2026-03-08", now).unwrap();
        // The spring-forward day lasts 23 hours.
        let d = w.bucket.unwrap();
        assert_eq!(d.close_ns - d.open_ns, 23 * 3_600_000_000_000);
        assert_eq!(resolve(&b, "day:-2", now).unwrap(), w);
        assert_eq!(
            resolve(&b, "week:2026-W10", now).unwrap().name,
            "week:2026-W10"
        );
        assert_eq!(
            resolve(&b, "month:2026-02", now).unwrap().name,
            "month:2026-02"
        );
        assert_eq!(resolve(&b, "", now).unwrap(), Window::all_time());
        assert_eq!(resolve(&b, "all", now).unwrap(), Window::all_time());
        assert_eq!(resolve(&b, "24h", now).unwrap(), Window::rolling());
    }

    #[test]
    fn a_repeated_local_hour_gets_two_windows() {
        let b = board("America/New_York");
        let first = resolve(&b, "hour:2026-11-01T01", 0).unwrap();
        let second = resolve(&b, "hour:2026-11-01T01.2", 0).unwrap();
        assert_eq!(second.name, "hour:2026-11-01T01.2");
        assert_eq!(
            first.bucket.unwrap().close_ns,
            second.bucket.unwrap().open_ns
        );
        assert_eq!(next(&first, b.tz()).unwrap(), second);
        assert_eq!(previous(&second, b.tz()).unwrap(), first);
    }

    #[test]
    fn refuses_bad_windows() {
        let b = board("UTC");
        for bad in [
            "year",
            "day:2026-02-30",
            "day:26-01-05",
            "week:2026-W54",
            "month:2026-13",
            "hour:2026-01-05T24",
            "hour:2026-01-05",
            "day:-10001",
            "day:-x",
            "24h:-1",
            "all:2026",
        ] {
            assert!(resolve(&b, bad, 0).is_err(), "{bad}");
        }
        let mut only_all = board("UTC");
        only_all.windows = vec![WindowKind::AllTime];
        let e = resolve(&only_all, "day", 0).unwrap_err();
        assert!(e.contains("keeps no day window"), "{e}");
        let ny = board("America/New_York");
        assert!(resolve(&ny, "hour:2026-03-08T02", 0).is_err(), "a DST gap");
    }
}
