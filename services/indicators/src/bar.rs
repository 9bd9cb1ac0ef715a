//! What an indicator reads from a candle, and the VWAP session a candle
//! belongs to.

use chrono_tz::Tz;
use tickmesh_calendar::{Interval, Unit};
use tickmesh_core::decimal::MAX_SCALE;

/// The decimal places of an instrument's prices and quantities: a price of
/// `units` means `units × 10^-price`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Scales {
    pub price: u32,
    pub quantity: u32,
}

impl Scales {
    /// Scales up to [`MAX_SCALE`] (18) places each, as instruments allow.
    pub fn new(price: u32, quantity: u32) -> Result<Scales, String> {
        if price > MAX_SCALE || quantity > MAX_SCALE {
            return Err(format!(
                "price and quantity scales must be at most {MAX_SCALE} decimal places, got {price} and {quantity}"
            ));
        }
        Ok(Scales { price, quantity })
    }
}

/// The parts of one candle the indicators read, as the candle service holds
/// them: prices in price units, volume (the sum of trade quantities) in
/// quantity units.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Bar {
    /// The candle's open time (ns since the Unix epoch): candles are taken in
    /// strictly increasing open time, so none is counted twice.
    pub open_ns: i64,
    pub high: i64,
    pub low: i64,
    pub close: i64,
    pub volume: i128,
    /// The VWAP session the candle belongs to: VWAP starts over whenever this
    /// changes from one candle to the next. [`session_key`] gives the usual
    /// one (the local trading day).
    pub session: i64,
}

/// The session key of a candle that opens at `open_ns` (ns since the Unix
/// epoch): the open time of its local day in the instrument's time zone, so a
/// session-anchored VWAP starts over at local midnight (15:00 UTC for
/// Asia/Seoul; 04:00 or 05:00 UTC for America/New_York, following DST).
///
/// A candle of a day or longer is its own session. Instruments whose trading
/// session crosses local midnight need a key of their own (for example the
/// open time of the session the candle's trades belong to).
pub fn session_key(open_ns: i64, tz: Tz) -> i64 {
    Interval::new(Unit::Day, 1).bucket(open_ns, tz).open_ns
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sessions_start_at_local_midnight() {
        // 2024-03-11T14:59:59Z is 23:59:59 in Seoul; 15:00Z the next local day.
        let before = 1_710_169_199_000_000_000;
        let after = 1_710_169_200_000_000_000;
        let seoul: Tz = "Asia/Seoul".parse().unwrap();
        assert_eq!(session_key(before, seoul), 1_710_082_800_000_000_000);
        assert_eq!(session_key(after, seoul), after);
        // UTC days start at 00:00Z.
        assert_eq!(session_key(after, Tz::UTC), 1_710_115_200_000_000_000);
    }

    #[test]
    fn scales_are_bounded() {
        assert!(Scales::new(18, 18).is_ok());
        assert!(Scales::new(19, 0).is_err());
    }
}
