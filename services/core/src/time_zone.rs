//! IANA time zones of instruments and boards.

use std::str::FromStr;

pub use chrono_tz::Tz;

/// Parses an IANA zone name; empty means UTC.
pub fn parse_time_zone(name: &str) -> Result<Tz, String> {
    if name.is_empty() {
        return Ok(Tz::UTC);
    }
    Tz::from_str(name).map_err(|_| {
        format!("{name:?} is not an IANA time zone name (e.g. \"UTC\", \"Asia/Seoul\", \"America/New_York\")")
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn zones() {
        assert_eq!(parse_time_zone(""), Ok(Tz::UTC));
        assert_eq!(parse_time_zone("Asia/Seoul"), Ok(Tz::Asia__Seoul));
        assert!(parse_time_zone("Mars/Olympus").is_err());
    }
}
