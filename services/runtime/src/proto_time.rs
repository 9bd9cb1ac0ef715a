//! `google.protobuf.Timestamp` / `Duration` at the API edge, nanoseconds since
//! the Unix epoch (`i64`, good until 2262) inside.

use std::time::Duration;

use prost_types::{Duration as PbDuration, Timestamp};

/// Nanoseconds since the epoch of a timestamp, or the reason it is unusable.
pub fn timestamp_to_nanos(ts: &Timestamp) -> Result<i64, String> {
    if !(0..1_000_000_000).contains(&ts.nanos) {
        return Err("nanos must be between 0 and 999999999".into());
    }
    ts.seconds
        .checked_mul(1_000_000_000)
        .and_then(|n| n.checked_add(i64::from(ts.nanos)))
        .ok_or_else(|| "is out of range (1677-2262)".into())
}

pub fn nanos_to_timestamp(nanos: i64) -> Timestamp {
    Timestamp {
        seconds: nanos.div_euclid(1_000_000_000),
        nanos: nanos.rem_euclid(1_000_000_000) as i32,
    }
}

pub fn now_nanos() -> i64 {
    let since = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default();
    i64::try_from(since.as_nanos()).unwrap_or(i64::MAX)
}

pub fn pb_duration_to_std(d: &PbDuration) -> Result<Duration, String> {
    if d.seconds < 0 || d.nanos < 0 || d.nanos >= 1_000_000_000 {
        return Err("must be a non-negative duration".into());
    }
    Ok(Duration::new(d.seconds as u64, d.nanos as u32))
}

pub fn nanos_to_pb_duration(nanos: i64) -> PbDuration {
    PbDuration {
        seconds: nanos.div_euclid(1_000_000_000),
        nanos: nanos.rem_euclid(1_000_000_000) as i32,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip() {
        for n in [0, 1, 1_700_000_000_123_456_789, -1, -1_000_000_001] {
            assert_eq!(timestamp_to_nanos(&nanos_to_timestamp(n)), Ok(n));
        }
        assert!(
            timestamp_to_nanos(&Timestamp {
                seconds: 1,
                nanos: -1
            })
            .is_err()
        );
        assert!(
            timestamp_to_nanos(&Timestamp {
                seconds: i64::MAX,
                nanos: 0
            })
            .is_err()
        );
    }
}
