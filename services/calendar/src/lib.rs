//! Candle boundary math for tickmesh: intervals, event-time buckets in an instrument's time
//! zone, and regular trading sessions.
//!
//! A candle (OHLCV bar) is built from the trades whose *event* timestamp falls inside it.
//! [`Interval::bucket`] answers "which candle does this trade belong to?" from the timestamp
//! (nanoseconds since the Unix epoch, UTC) and the instrument's IANA zone ([`chrono_tz::Tz`]).
//! Boundaries are derived from epoch time and the calendar only, never from wall-clock minute
//! fields, so minute 59 → 0 always opens a new candle. The crate is pure: it never reads the
//! clock, and it uses integer arithmetic only.
//!
//! # Rules
//!
//! - Every bucket is a half-open range of absolute time `[open_ns, close_ns)`. Times before 1970
//!   work like any other (floor division throughout).
//! - Days, weeks, months and years follow the instrument's zone: a day starts at local midnight
//!   (the Asia/Seoul daily candle opens at 15:00 UTC the previous day); weeks start on Monday at
//!   local midnight; months on the 1st; years on January 1st. A local day lasts 23 or 25 hours
//!   (or 23½ / 24½ in Australia/Lord_Howe) on DST days. If local midnight does not exist on a
//!   date (DST changing at midnight, e.g. America/Havana, America/Santiago), that day starts at
//!   the first instant that exists on the date (typically 01:00). An ambiguous midnight uses
//!   the earliest instant.
//! - Minutes and hours are aligned to the start of the local day: buckets are
//!   `day_start + k × length` in absolute time and restart at the next day start, where the
//!   last bucket of the day is cut if the length does not fit (only on DST days, since lengths
//!   divide 24 h). A fall-back day has 25 one-hour buckets, a spring-forward day 23. In UTC this
//!   is the usual epoch alignment (4h candles open at 00, 04, 08 … UTC).
//! - Multiples align to fixed origins: `nd` to local days counted from 1970-01-01 (the bucket of
//!   local date D starts on day ⌊days(D) / n⌋ × n); `nw` to weeks counted from Monday
//!   1970-01-05; `nM` to the month index year × 12 + month0 (3M = quarters starting Jan, Apr,
//!   Jul, Oct); `nY` to the year (2Y = even years).
//! - `bucket(ts).contains(ts)` always holds; `next(b).open_ns == b.close_ns`;
//!   `prev(next(b)) == b`; buckets never overlap and leave no gaps.
//! - Sessions ([`in_session`]) are checked on the local wall clock; an overnight session belongs
//!   to the day it opens on. No sessions means trading around the clock.
//!
//! Only at the very ends of the `i64` nanosecond range (years 1677 and 2262) are boundaries
//! clamped to `i64::MIN` / `i64::MAX`; `i64::MAX` itself is in no bucket.
//!
//! UTC, its aliases and the `Etc/GMT±N` zones take an integer-only fast path for minute and hour
//! intervals; other zones consult chrono-tz's transition tables. Nothing allocates.
//!
//! ```
//! use tickmesh_calendar::{Bucket, Interval};
//! use chrono_tz::Tz;
//!
//! let four_hours = Interval::parse("4h").unwrap();
//! // 2024-01-01T10:30:00Z
//! let ts = 1_704_105_000_000_000_000;
//! let bucket = four_hours.bucket(ts, Tz::UTC);
//! // 08:00Z .. 12:00Z
//! assert_eq!(bucket, Bucket { open_ns: 1_704_096_000_000_000_000, close_ns: 1_704_110_400_000_000_000 });
//! assert_eq!(four_hours.next(bucket, Tz::UTC).open_ns, bucket.close_ns);
//! ```

mod bucket;
mod interval;
mod session;
mod zone;

pub use bucket::Bucket;
pub use interval::{Interval, STORED, Unit};
pub use session::{Session, in_session};
