//! Instruments and trades as the domain sees them, and their validation rules.
//! Prices and quantities are scaled integers; times are nanoseconds since the
//! Unix epoch. Nothing here knows about protobuf or Redis.

use std::sync::Arc;

use serde::{Deserialize, Serialize};
use tickmesh_core::FieldViolation;
use tickmesh_core::decimal::{self, MAX_SCALE};
use tickmesh_core::ids::{check_symbol, check_text_id};
use tickmesh_core::time_zone::parse_time_zone;

/// Longest trade id accepted.
pub const MAX_TRADE_ID_LEN: usize = 128;
/// Longest venue name accepted.
pub const MAX_VENUE_LEN: usize = 64;
/// Most trading sessions per instrument.
pub const MAX_SESSIONS: usize = 16;

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Instrument {
    pub symbol: String,
    pub venue: String,
    pub price_scale: u32,
    pub quantity_scale: u32,
    /// IANA zone; empty means UTC.
    pub time_zone: String,
    pub sessions: Vec<TradingSession>,
    pub update_time_ns: i64,
}

/// A regular session in the instrument's zone; minutes since local midnight.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct TradingSession {
    /// ISO weekdays, 1 = Monday … 7 = Sunday.
    pub days: Vec<u8>,
    pub open_minute: u16,
    pub close_minute: u16,
}

impl Instrument {
    /// The definition `tickmesh dev` gives a symbol it has never seen.
    pub fn auto_registered(symbol: &str, now_ns: i64) -> Self {
        Self {
            symbol: symbol.to_string(),
            venue: "auto".into(),
            price_scale: 8,
            quantity_scale: 8,
            time_zone: "UTC".into(),
            sessions: Vec::new(),
            update_time_ns: now_ns,
        }
    }

    /// Every rule an instrument must follow, as field violations under `prefix`.
    pub fn violations(&self, prefix: &str) -> Vec<FieldViolation> {
        let mut out = Vec::new();
        let mut bad = |field: &str, reason: String| {
            out.push(FieldViolation::new(format!("{prefix}{field}"), reason))
        };
        if let Err(reason) = check_symbol(&self.symbol) {
            bad("symbol", reason);
        }
        if !self.venue.is_empty()
            && let Err(reason) = check_text_id(&self.venue, MAX_VENUE_LEN)
        {
            bad("venue", reason);
        }
        if self.price_scale > MAX_SCALE {
            bad("price_scale", format!("must be at most {MAX_SCALE}"));
        }
        if self.quantity_scale > MAX_SCALE {
            bad("quantity_scale", format!("must be at most {MAX_SCALE}"));
        }
        if let Err(reason) = parse_time_zone(&self.time_zone) {
            bad("time_zone", reason);
        }
        if self.sessions.len() > MAX_SESSIONS {
            bad("sessions", format!("at most {MAX_SESSIONS} sessions"));
        }
        for (i, session) in self.sessions.iter().enumerate() {
            if session.days.is_empty() {
                bad(
                    &format!("sessions[{i}].days"),
                    "must name at least one day".into(),
                );
            }
            if session.days.iter().any(|d| !(1..=7).contains(d)) {
                bad(
                    &format!("sessions[{i}].days"),
                    "must be MONDAY to SUNDAY".into(),
                );
            }
            let mut days = session.days.clone();
            days.sort_unstable();
            days.dedup();
            if days.len() != session.days.len() {
                bad(&format!("sessions[{i}].days"), "names a day twice".into());
            }
            if session.open_minute == session.close_minute {
                bad(
                    &format!("sessions[{i}].close_time"),
                    "must differ from open_time".into(),
                );
            }
        }
        out
    }
}

/// Parses "HH:MM" (24 h) into minutes since midnight.
pub fn parse_local_time(text: &str) -> Result<u16, String> {
    let bad = || format!("{text:?} is not a time like \"09:00\" (HH:MM, 24 h)");
    let (h, m) = text.split_once(':').ok_or_else(bad)?;
    if h.len() != 2 || m.len() != 2 {
        return Err(bad());
    }
    let h: u16 = h.parse().map_err(|_| bad())?;
    let m: u16 = m.parse().map_err(|_| bad())?;
    if h > 23 || m > 59 {
        return Err(bad());
    }
    Ok(h * 60 + m)
}

pub fn format_local_time(minute: u16) -> String {
    format!("{:02}:{:02}", minute / 60, minute % 60)
}

/// Taker side, as on the wire (0 unspecified, 1 buy, 2 sell).
pub type Side = i32;

/// A trade as a publisher sent it, before validation.
#[derive(Clone, Debug)]
pub struct RawTrade {
    pub symbol: String,
    pub trade_id: String,
    pub price: String,
    pub quantity: String,
    /// Event time in nanoseconds, or why it is unusable ("is required", …).
    pub time_ns: Result<i64, String>,
    pub side: Side,
}

/// A trade that passed validation, with canonical decimal strings.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ValidTrade {
    pub symbol: String,
    pub trade_id: String,
    pub price: String,
    pub quantity: String,
    pub price_units: i64,
    pub quantity_units: i64,
    pub time_ns: i64,
    pub side: Side,
}

/// A trade as stored in the tick log and streamed out.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TradeRecord {
    pub symbol: Arc<str>,
    pub trade_id: String,
    pub price: String,
    pub quantity: String,
    pub time_ns: i64,
    pub side: Side,
    pub sequence: u64,
    pub ingest_ns: i64,
    /// W3C traceparent of the call that published the trade ("" if untraced).
    pub trace_parent: String,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RejectKind {
    Invalid,
    UnknownSymbol,
}

/// Why one trade was refused.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Rejection {
    pub field: &'static str,
    pub reason: String,
    pub kind: RejectKind,
}

impl Rejection {
    fn invalid(field: &'static str, reason: impl Into<String>) -> Self {
        Self {
            field,
            reason: reason.into(),
            kind: RejectKind::Invalid,
        }
    }
}

/// Limits a trade is checked against besides its instrument.
#[derive(Clone, Copy, Debug)]
pub struct TradeLimits {
    pub now_ns: i64,
    pub max_future_skew_ns: i64,
}

/// Checks a trade against its instrument (`None`: unknown symbol).
pub fn validate_trade(
    raw: &RawTrade,
    instrument: Option<&Instrument>,
    limits: TradeLimits,
) -> Result<ValidTrade, Rejection> {
    check_symbol(&raw.symbol).map_err(|r| Rejection::invalid("symbol", r))?;
    let instrument = instrument.ok_or_else(|| Rejection {
        field: "symbol",
        reason: format!(
            "{:?} is not a registered instrument (register it with UpsertInstrument)",
            raw.symbol
        ),
        kind: RejectKind::UnknownSymbol,
    })?;
    check_text_id(&raw.trade_id, MAX_TRADE_ID_LEN)
        .map_err(|r| Rejection::invalid("trade_id", r))?;
    let price_units = decimal::parse_units(&raw.price, instrument.price_scale)
        .map_err(|e| Rejection::invalid("price", format!("{:?} {e}", raw.price)))?;
    if price_units <= 0 {
        return Err(Rejection::invalid(
            "price",
            format!("{:?} must be positive", raw.price),
        ));
    }
    let quantity_units = decimal::parse_units(&raw.quantity, instrument.quantity_scale)
        .map_err(|e| Rejection::invalid("quantity", format!("{:?} {e}", raw.quantity)))?;
    let time_ns = raw
        .time_ns
        .clone()
        .map_err(|r| Rejection::invalid("time", r))?;
    if time_ns < 0 {
        return Err(Rejection::invalid(
            "time",
            "must not be before 1970-01-01T00:00:00Z",
        ));
    }
    if time_ns > limits.now_ns.saturating_add(limits.max_future_skew_ns) {
        return Err(Rejection::invalid(
            "time",
            format!(
                "is {} s in the future (more than the allowed {} s)",
                (time_ns - limits.now_ns) / 1_000_000_000,
                limits.max_future_skew_ns / 1_000_000_000
            ),
        ));
    }
    if !(0..=2).contains(&raw.side) {
        return Err(Rejection::invalid(
            "side",
            format!("{} is not a Side", raw.side),
        ));
    }
    Ok(ValidTrade {
        symbol: raw.symbol.clone(),
        trade_id: raw.trade_id.clone(),
        price: decimal::format_units(i128::from(price_units), instrument.price_scale),
        quantity: decimal::format_units(i128::from(quantity_units), instrument.quantity_scale),
        price_units,
        quantity_units,
        time_ns,
        side: raw.side,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const NOW: i64 = 1_700_000_000_000_000_000;

    fn instrument() -> Instrument {
        Instrument {
            symbol: "BTCUSDT".into(),
            venue: "binance".into(),
            price_scale: 2,
            quantity_scale: 5,
            time_zone: "UTC".into(),
            sessions: vec![],
            update_time_ns: 0,
        }
    }

    fn raw() -> RawTrade {
        RawTrade {
            symbol: "BTCUSDT".into(),
            trade_id: "1".into(),
            price: "67012.25".into(),
            quantity: "0.015".into(),
            time_ns: Ok(NOW - 1_000),
            side: 1,
        }
    }

    fn limits() -> TradeLimits {
        TradeLimits {
            now_ns: NOW,
            max_future_skew_ns: 60_000_000_000,
        }
    }

    fn rejected(change: impl FnOnce(&mut RawTrade)) -> Rejection {
        let mut t = raw();
        change(&mut t);
        validate_trade(&t, Some(&instrument()), limits()).unwrap_err()
    }

    #[test]
    fn a_good_trade_is_canonicalised() {
        let t = validate_trade(&raw(), Some(&instrument()), limits()).unwrap();
        assert_eq!(t.price, "67012.25");
        assert_eq!(t.quantity, "0.01500");
        assert_eq!(t.price_units, 6_701_225);
        assert_eq!(t.quantity_units, 1_500);
    }

    #[test]
    fn every_rule() {
        assert_eq!(rejected(|t| t.symbol = "BAD SYMBOL".into()).field, "symbol");
        let unknown = validate_trade(&raw(), None, limits()).unwrap_err();
        assert_eq!(unknown.kind, RejectKind::UnknownSymbol);
        assert_eq!(rejected(|t| t.trade_id = String::new()).field, "trade_id");
        assert_eq!(rejected(|t| t.trade_id = "x".repeat(129)).field, "trade_id");
        assert_eq!(rejected(|t| t.price = "0".into()).field, "price");
        assert_eq!(rejected(|t| t.price = "-1".into()).field, "price");
        assert_eq!(rejected(|t| t.price = "1.001".into()).field, "price");
        assert_eq!(rejected(|t| t.price = "1e3".into()).field, "price");
        assert_eq!(rejected(|t| t.price = String::new()).field, "price");
        assert_eq!(rejected(|t| t.quantity = "-0.1".into()).field, "quantity");
        assert_eq!(
            rejected(|t| t.quantity = "0.000001".into()).field,
            "quantity"
        );
        assert_eq!(
            rejected(|t| t.time_ns = Err("is required".into())).field,
            "time"
        );
        assert_eq!(rejected(|t| t.time_ns = Ok(-5)).field, "time");
        assert_eq!(
            rejected(|t| t.time_ns = Ok(NOW + 61_000_000_000)).field,
            "time"
        );
        assert_eq!(rejected(|t| t.side = 9).field, "side");
    }

    #[test]
    fn zero_quantity_and_trailing_zeros_are_fine() {
        let mut t = raw();
        t.quantity = "0".into();
        t.price = "67012.2500".into();
        let v = validate_trade(&t, Some(&instrument()), limits()).unwrap();
        assert_eq!(
            (v.price.as_str(), v.quantity.as_str()),
            ("67012.25", "0.00000")
        );
    }

    #[test]
    fn instrument_rules() {
        assert!(instrument().violations("instrument.").is_empty());
        let mut i = instrument();
        i.price_scale = 19;
        i.time_zone = "Nowhere/City".into();
        i.sessions = vec![TradingSession {
            days: vec![1, 1, 8],
            open_minute: 540,
            close_minute: 540,
        }];
        let fields: Vec<String> = i
            .violations("instrument.")
            .into_iter()
            .map(|v| v.field)
            .collect();
        assert!(fields.contains(&"instrument.price_scale".to_string()));
        assert!(fields.contains(&"instrument.time_zone".to_string()));
        assert!(fields.contains(&"instrument.sessions[0].days".to_string()));
        assert!(fields.contains(&"instrument.sessions[0].close_time".to_string()));
    }

    #[test]
    fn local_times() {
        assert_eq!(parse_local_time("09:00"), Ok(540));
        assert_eq!(parse_local_time("15:30"), Ok(930));
        assert_eq!(format_local_time(930), "15:30");
        for bad in ["9:00", "24:00", "12:60", "noon", "12-30"] {
            assert!(parse_local_time(bad).is_err(), "{bad}");
        }
    }
}
