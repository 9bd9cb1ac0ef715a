//! Candle intervals: units, parsing and formatting, the stored set and roll-up bases.

use std::fmt;
use std::str::FromStr;

/// The calendar unit of an [`Interval`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Unit {
    Minute,
    Hour,
    Day,
    Week,
    Month,
    Year,
}

impl Unit {
    /// The letter used in interval text ("m", "h", "d", "w", "M", "Y").
    const fn letter(self) -> char {
        match self {
            Unit::Minute => 'm',
            Unit::Hour => 'h',
            Unit::Day => 'd',
            Unit::Week => 'w',
            Unit::Month => 'M',
            Unit::Year => 'Y',
        }
    }
}

/// A candle length: `count` × `unit`, e.g. 15 minutes or 3 months.
///
/// [`Interval::parse`] only produces valid intervals (see its rules). [`Interval::new`] does not
/// check; the bucket math still gives a gap-free partition for any interval, treating a count of
/// 0 as 1.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Interval {
    pub unit: Unit,
    pub count: u32,
}

/// The 14 intervals the aggregator stores, in this order:
/// 1m 3m 5m 15m 30m 1h 2h 4h 6h 12h 1d 1w 1M 1Y
pub const STORED: [Interval; 14] = [
    Interval::new(Unit::Minute, 1),
    Interval::new(Unit::Minute, 3),
    Interval::new(Unit::Minute, 5),
    Interval::new(Unit::Minute, 15),
    Interval::new(Unit::Minute, 30),
    Interval::new(Unit::Hour, 1),
    Interval::new(Unit::Hour, 2),
    Interval::new(Unit::Hour, 4),
    Interval::new(Unit::Hour, 6),
    Interval::new(Unit::Hour, 12),
    Interval::new(Unit::Day, 1),
    Interval::new(Unit::Week, 1),
    Interval::new(Unit::Month, 1),
    Interval::new(Unit::Year, 1),
];

const MINUTES_PER_DAY: u32 = 1440;
const HOURS_PER_DAY: u32 = 24;
const MONTHS_PER_YEAR: u32 = 12;
const MAX_DAYS: u32 = 366;
const MAX_WEEKS: u32 = 53;
const MAX_YEARS: u32 = 100;

const FORMAT_HINT: &str = "expected a positive whole number followed by a unit letter \
     (m = minutes, h = hours, d = days, w = weeks, M = months, Y = years), e.g. 1m, 4h, 1d, 1M";

impl Interval {
    pub const fn new(unit: Unit, count: u32) -> Interval {
        Interval { unit, count }
    }

    /// Parses "1m" "3m" "10m" "1h" "4h" "1d" "2d" "1w" "2w" "1M" "3M" "1Y" "2Y".
    ///
    /// Unit letters are case-sensitive: m = minute, h = hour, d = day, w = week, M = month,
    /// Y (or y) = year. The count must be a plain positive decimal number; minutes must divide
    /// 1440, hours 24, months 12; at most 366 days, 53 weeks, 100 years. The text is kept as
    /// written: "60m" is 60 minutes, not 1 hour.
    ///
    /// Errors start with the quoted input and read well after a field name, e.g.
    /// `"7m" does not divide a day: use a divisor of 1440 minutes such as 1m, 5m, 10m, 15m`.
    pub fn parse(text: &str) -> Result<Interval, String> {
        if text.is_empty() {
            return Err(format!("{text:?} is empty: {FORMAT_HINT}"));
        }
        if text.starts_with(['+', '-']) {
            return Err(format!(
                "{text:?} has a sign: write a plain positive number such as 1m"
            ));
        }
        let digits = text.bytes().take_while(u8::is_ascii_digit).count();
        let (number, letter) = text.split_at(digits);
        if number.is_empty() {
            return Err(format!(
                "{text:?} does not start with a number: {FORMAT_HINT}"
            ));
        }
        let unit = match letter {
            "m" => Unit::Minute,
            "h" => Unit::Hour,
            "d" => Unit::Day,
            "w" => Unit::Week,
            "M" => Unit::Month,
            "Y" | "y" => Unit::Year,
            "" => return Err(format!("{text:?} has no unit: {FORMAT_HINT}")),
            other => {
                return Err(format!(
                    "{text:?} has an unknown unit {other:?}: unit letters are case-sensitive, \
                     use m (minutes), h (hours), d (days), w (weeks), M (months) or Y (years)"
                ));
            }
        };
        // Only digits remain, so the only possible failure is overflow.
        let Ok(count) = number.parse::<u32>() else {
            return Err(format!("{text:?} has a number that is too large"));
        };
        if count == 0 {
            return Err(format!("{text:?} has a count of zero: use at least 1"));
        }
        let problem = match unit {
            Unit::Minute if !MINUTES_PER_DAY.is_multiple_of(count) => {
                "does not divide a day: use a divisor of 1440 minutes such as 1m, 5m, 10m, 15m"
            }
            Unit::Hour if !HOURS_PER_DAY.is_multiple_of(count) => {
                "does not divide a day: use a divisor of 24 hours: 1h, 2h, 3h, 4h, 6h, 8h, 12h or 24h"
            }
            Unit::Month if !MONTHS_PER_YEAR.is_multiple_of(count) => {
                "does not divide a year: use a divisor of 12 months: 1M, 2M, 3M, 4M, 6M or 12M"
            }
            Unit::Day if count > MAX_DAYS => "is too long: use at most 366 days",
            Unit::Week if count > MAX_WEEKS => "is too long: use at most 53 weeks",
            Unit::Year if count > MAX_YEARS => "is too long: use at most 100 years",
            _ => return Ok(Interval::new(unit, count)),
        };
        Err(format!("{text:?} {problem}"))
    }

    /// Canonical text, e.g. "1m", "4h", "1M", "1Y": the inverse of [`Interval::parse`] for
    /// canonical inputs ("60m" stays "60m"; "2y" becomes "2Y").
    pub fn as_string(&self) -> String {
        self.to_string()
    }

    /// True for the 14 intervals in [`STORED`].
    pub fn is_stored(&self) -> bool {
        STORED.contains(self)
    }

    /// The stored interval whose candles are combined to build this one: for stored intervals
    /// itself; minutes and hours roll up from the largest stored minute/hour interval that
    /// divides their length (10m→5m, 45m→15m, 90m→30m, 3h→1h, 8h→4h, 1440m→12h); days from
    /// 1d, weeks from 1w, months from 1M, years from 1Y. The base never crosses into days.
    pub fn rollup_base(&self) -> Interval {
        if self.is_stored() {
            return *self;
        }
        match self.unit {
            Unit::Minute | Unit::Hour => {
                let minutes = self.minutes();
                STORED
                    .iter()
                    .rev()
                    .filter(|base| matches!(base.unit, Unit::Minute | Unit::Hour))
                    .find(|base| minutes.is_multiple_of(base.minutes()))
                    .copied()
                    .unwrap_or(STORED[0])
            }
            Unit::Day => Interval::new(Unit::Day, 1),
            Unit::Week => Interval::new(Unit::Week, 1),
            Unit::Month => Interval::new(Unit::Month, 1),
            Unit::Year => Interval::new(Unit::Year, 1),
        }
    }

    /// The count used by the math: 0 is treated as 1.
    pub(crate) fn effective_count(&self) -> u32 {
        self.count.max(1)
    }

    /// Length in minutes of a minute or hour interval.
    fn minutes(&self) -> u64 {
        let per_unit = if self.unit == Unit::Hour { 60 } else { 1 };
        u64::from(self.effective_count()) * per_unit
    }
}

impl fmt::Display for Interval {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}{}", self.count, self.unit.letter())
    }
}

impl FromStr for Interval {
    type Err = String;

    fn from_str(text: &str) -> Result<Interval, String> {
        Interval::parse(text)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn iv(text: &str) -> Interval {
        Interval::parse(text).unwrap()
    }

    #[test]
    fn stored_order_and_text() {
        let texts: Vec<String> = STORED.iter().map(Interval::as_string).collect();
        assert_eq!(
            texts,
            [
                "1m", "3m", "5m", "15m", "30m", "1h", "2h", "4h", "6h", "12h", "1d", "1w", "1M",
                "1Y"
            ]
        );
    }

    #[test]
    fn stored_round_trip() {
        for stored in STORED {
            let text = stored.as_string();
            assert_eq!(Interval::parse(&text), Ok(stored), "{text}");
            assert_eq!(text.parse::<Interval>(), Ok(stored), "{text}");
            assert_eq!(format!("{stored}"), text);
            assert!(stored.is_stored());
        }
    }

    #[test]
    fn parses_multiples_and_keeps_what_was_written() {
        let cases = [
            ("10m", Unit::Minute, 10),
            ("60m", Unit::Minute, 60),
            ("1440m", Unit::Minute, 1440),
            ("3h", Unit::Hour, 3),
            ("24h", Unit::Hour, 24),
            ("2d", Unit::Day, 2),
            ("366d", Unit::Day, 366),
            ("2w", Unit::Week, 2),
            ("53w", Unit::Week, 53),
            ("3M", Unit::Month, 3),
            ("12M", Unit::Month, 12),
            ("2Y", Unit::Year, 2),
            ("100Y", Unit::Year, 100),
        ];
        for (text, unit, count) in cases {
            let parsed = iv(text);
            assert_eq!(parsed, Interval::new(unit, count), "{text}");
            assert_eq!(parsed.as_string(), text);
            assert!(!parsed.is_stored(), "{text}");
        }
        assert_eq!(iv("2y"), Interval::new(Unit::Year, 2));
        assert_eq!(iv("2y").as_string(), "2Y");
        assert_eq!(iv("1y"), STORED[13]);
    }

    #[test]
    fn parse_errors() {
        let cases = [
            (
                "7m",
                "\"7m\" does not divide a day: use a divisor of 1440 minutes",
            ),
            ("0m", "\"0m\" has a count of zero"),
            ("5x", "\"5x\" has an unknown unit \"x\""),
            ("", "\"\" is empty"),
            ("m", "\"m\" does not start with a number"),
            ("-1m", "\"-1m\" has a sign"),
            ("+1m", "\"+1m\" has a sign"),
            (
                "25h",
                "\"25h\" does not divide a day: use a divisor of 24 hours",
            ),
            (
                "5M",
                "\"5M\" does not divide a year: use a divisor of 12 months",
            ),
            (
                "1H",
                "\"1H\" has an unknown unit \"H\": unit letters are case-sensitive",
            ),
            ("1D", "\"1D\" has an unknown unit \"D\""),
            ("15", "\"15\" has no unit"),
            (" 1m", "\" 1m\" does not start with a number"),
            ("1m ", "\"1m \" has an unknown unit \"m \""),
            ("1.5h", "\"1.5h\" has an unknown unit \".5h\""),
            (
                "4294967296m",
                "\"4294967296m\" has a number that is too large",
            ),
            ("2880m", "\"2880m\" does not divide a day"),
            ("48h", "\"48h\" does not divide a day"),
            ("24M", "\"24M\" does not divide a year"),
            ("367d", "\"367d\" is too long: use at most 366 days"),
            ("54w", "\"54w\" is too long: use at most 53 weeks"),
            ("101Y", "\"101Y\" is too long: use at most 100 years"),
        ];
        for (text, expected) in cases {
            let err = Interval::parse(text).expect_err(text);
            assert!(err.starts_with(expected), "{text}: {err}");
            assert_eq!(text.parse::<Interval>(), Err(err));
        }
        // The full message of the documented example.
        assert_eq!(
            Interval::parse("7m").unwrap_err(),
            "\"7m\" does not divide a day: use a divisor of 1440 minutes such as 1m, 5m, 10m, 15m"
        );
    }

    #[test]
    fn rollup_bases() {
        let table = [
            ("10m", "5m"),
            ("20m", "5m"),
            ("45m", "15m"),
            ("90m", "30m"),
            ("60m", "1h"),
            ("120m", "2h"),
            ("1440m", "12h"),
            ("3h", "1h"),
            ("8h", "4h"),
            ("24h", "12h"),
            ("2d", "1d"),
            ("7d", "1d"),
            ("2w", "1w"),
            ("3M", "1M"),
            ("6M", "1M"),
            ("12M", "1M"),
            ("2Y", "1Y"),
        ];
        for (interval, base) in table {
            assert_eq!(iv(interval).rollup_base(), iv(base), "{interval}");
        }
        for stored in STORED {
            assert_eq!(stored.rollup_base(), stored);
        }
        // Unchecked intervals still get a base that divides them.
        assert_eq!(Interval::new(Unit::Minute, 7).rollup_base(), iv("1m"));
        assert_eq!(Interval::new(Unit::Hour, 5).rollup_base(), iv("1h"));
        assert_eq!(Interval::new(Unit::Minute, 0).rollup_base(), iv("1m"));
    }
}
