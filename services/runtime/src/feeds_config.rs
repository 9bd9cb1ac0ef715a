//! `[[feeds]]`: the venues a process connects to itself. One table per feed;
//! in the environment, `TICKMESH_FEEDS="binance:BTCUSDT,ETHUSDT;bybit/linear:BTCUSDT"`
//! gives the same as tables with only `venue`, the option after `/` (Bybit's
//! category, Binance's stream) and `symbols`.

use std::time::Duration;

use serde::{Deserialize, Serialize};
use tickmesh_core::duration::serde_human;

/// Venues a feed can name.
pub const KNOWN_VENUES: &[&str] = &["binance", "bybit", "upbit"];

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct FeedConfig {
    /// Unique name of the feed; default: the venue (with its category or
    /// stream when not the default one). Leases and status are under it.
    pub name: String,
    /// "binance" (spot), "bybit" (v5 public) or "upbit".
    pub venue: String,
    /// Symbols as the venue spells them ("BTCUSDT", Upbit "KRW-BTC").
    pub symbols: Vec<String>,
    /// Prepended to each symbol to make the mesh symbol (e.g. "bybit:"), so
    /// two venues' BTCUSDT do not collide. Default: none.
    pub symbol_prefix: String,
    /// Bybit: "spot" or "linear".
    pub category: String,
    /// Binance: "trade" or "aggTrade".
    pub stream: String,
    /// WebSocket base URL; empty: the venue's documented one.
    pub ws_url: String,
    /// REST base URL (backfill, instrument metadata); empty: the venue's.
    pub rest_url: String,
    /// Register symbols the mesh does not know from the venue's metadata
    /// (scales from tick and lot size) when the feed starts.
    pub register_instruments: bool,
    /// Instrument definitions given here instead of read from the venue
    /// (`[[feeds.instruments]]`): registered, or updated, when the feed
    /// starts, whatever `register_instruments` says.
    pub instruments: Vec<FeedInstrumentConfig>,
    /// A socket that brings nothing (data, ping or pong) for this long is dead.
    #[serde(with = "serde_human")]
    pub stall_timeout: Duration,
    /// Replace each connection at this age, before the venue's forced
    /// disconnect; 0: the venue's limit less 30 minutes (Binance: 23 h 30 m).
    #[serde(with = "serde_human")]
    pub rotate_after: Duration,
    /// One instance owns each (feed, symbol) by a lease of this TTL; when it
    /// dies another takes over within it.
    #[serde(with = "serde_human")]
    pub lease_ttl: Duration,
    /// Reconnect backoff bounds (exponential, with full jitter).
    #[serde(with = "serde_human")]
    pub reconnect_min: Duration,
    #[serde(with = "serde_human")]
    pub reconnect_max: Duration,
}

impl Default for FeedConfig {
    fn default() -> Self {
        Self {
            name: String::new(),
            venue: String::new(),
            symbols: Vec::new(),
            symbol_prefix: String::new(),
            category: "spot".into(),
            stream: "trade".into(),
            ws_url: String::new(),
            rest_url: String::new(),
            register_instruments: true,
            instruments: Vec::new(),
            stall_timeout: Duration::from_secs(30),
            rotate_after: Duration::ZERO,
            lease_ttl: Duration::from_secs(6),
            reconnect_min: Duration::from_millis(250),
            reconnect_max: Duration::from_secs(30),
        }
    }
}

/// One `[[feeds.instruments]]` table: a symbol's scales from config.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FeedInstrumentConfig {
    /// The venue's symbol; must be one of the feed's `symbols`.
    pub symbol: String,
    /// Decimal places of prices (the venue's tick size 0.01 is 2).
    pub price_scale: u32,
    /// Decimal places of quantities (lot step 0.00001 is 5).
    pub quantity_scale: u32,
    /// IANA zone of the candles' day boundaries; default UTC.
    #[serde(default)]
    pub time_zone: String,
}

impl FeedConfig {
    /// The feed's name: `name`, or one made from the venue and its option.
    pub fn resolved_name(&self) -> String {
        if !self.name.is_empty() {
            return self.name.clone();
        }
        match self.venue.as_str() {
            "bybit" if self.category != "spot" => format!("bybit-{}", self.category),
            "binance" if self.stream != "trade" => format!("binance-{}", self.stream),
            v => v.to_string(),
        }
    }

    /// Every rule a feed must follow: the key under `feeds[i]` and the reason.
    pub fn violation(&self) -> Option<(&'static str, String)> {
        if !KNOWN_VENUES.contains(&self.venue.as_str()) {
            return Some((
                "venue",
                format!(
                    "{:?} is not a known venue (known: {})",
                    self.venue,
                    KNOWN_VENUES.join(", ")
                ),
            ));
        }
        if self.symbols.is_empty() {
            return Some(("symbols", "must name at least one symbol".into()));
        }
        if let Some(bad) = self.symbols.iter().find(|s| {
            s.is_empty()
                || s.len() > 64
                || !s
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b"-_./:".contains(&b))
        }) {
            return Some(("symbols", format!("{bad:?} is not a venue symbol")));
        }
        if self.venue == "bybit" && !["spot", "linear"].contains(&self.category.as_str()) {
            return Some((
                "category",
                format!(
                    "{:?}: Bybit feeds are \"spot\" or \"linear\"",
                    self.category
                ),
            ));
        }
        if self.venue == "binance" && !["trade", "aggTrade"].contains(&self.stream.as_str()) {
            return Some((
                "stream",
                format!(
                    "{:?}: Binance feeds are \"trade\" or \"aggTrade\"",
                    self.stream
                ),
            ));
        }
        let mut given = std::collections::HashSet::new();
        for (i, instrument) in self.instruments.iter().enumerate() {
            if !self.symbols.contains(&instrument.symbol) {
                return Some((
                    "instruments",
                    format!(
                        "[{i}]: {:?} is not one of the feed's symbols",
                        instrument.symbol
                    ),
                ));
            }
            if !given.insert(instrument.symbol.as_str()) {
                return Some((
                    "instruments",
                    format!("[{i}]: {:?} is defined twice", instrument.symbol),
                ));
            }
            if let Err(reason) = tickmesh_core::time_zone::parse_time_zone(&instrument.time_zone) {
                return Some(("instruments", format!("[{i}].time_zone: {reason}")));
            }
            let max = tickmesh_core::decimal::MAX_SCALE;
            if instrument.price_scale > max || instrument.quantity_scale > max {
                return Some((
                    "instruments",
                    format!(
                        "[{i}]: price_scale and quantity_scale must be at most {max} ({:?})",
                        instrument.symbol
                    ),
                ));
            }
        }
        if self.stall_timeout < Duration::from_secs(1) {
            return Some(("stall_timeout", "must be at least 1s".into()));
        }
        if self.lease_ttl < Duration::from_millis(300) {
            return Some(("lease_ttl", "must be at least 300ms".into()));
        }
        if self.reconnect_min.is_zero() || self.reconnect_max < self.reconnect_min {
            return Some((
                "reconnect_max",
                "reconnect_min must be above 0 and reconnect_max at least reconnect_min".into(),
            ));
        }
        None
    }
}

/// Reads the compact form of `TICKMESH_FEEDS` (and `tickmesh dev --feed`):
/// `venue[/option]:SYM,SYM[;venue...]`, e.g. `binance:BTCUSDT,ETHUSDT` or
/// `bybit/linear:BTCUSDT`.
pub fn parse_feed_list(text: &str) -> Result<Vec<FeedConfig>, String> {
    let mut out = Vec::new();
    for part in text.split(';').map(str::trim).filter(|p| !p.is_empty()) {
        let (head, symbols) = part
            .split_once(':')
            .ok_or_else(|| format!("{part:?} is not venue:SYMBOL,SYMBOL (e.g. binance:BTCUSDT)"))?;
        let (venue, option) = match head.split_once('/') {
            Some((v, o)) => (v.trim(), Some(o.trim())),
            None => (head.trim(), None),
        };
        let mut feed = FeedConfig {
            venue: venue.to_ascii_lowercase(),
            symbols: symbols
                .split(',')
                .map(str::trim)
                .filter(|s| !s.is_empty())
                .map(String::from)
                .collect(),
            ..FeedConfig::default()
        };
        match (feed.venue.as_str(), option) {
            (_, None) => {}
            ("bybit", Some(o)) => feed.category = o.to_string(),
            ("binance", Some(o)) => feed.stream = o.to_string(),
            (v, Some(o)) => return Err(format!("{v} takes no option (got /{o})")),
        }
        out.push(feed);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn compact_feed_lists() {
        let feeds = parse_feed_list("binance:BTCUSDT,ETHUSDT; bybit/linear:BTCUSDT").unwrap();
        assert_eq!(feeds.len(), 2);
        assert_eq!(feeds[0].venue, "binance");
        assert_eq!(feeds[0].symbols, ["BTCUSDT", "ETHUSDT"]);
        assert_eq!(feeds[1].category, "linear");
        assert_eq!(feeds[1].resolved_name(), "bybit-linear");
        assert!(feeds.iter().all(|f| f.violation().is_none()));
        assert!(parse_feed_list("binance").is_err());
        assert!(parse_feed_list("upbit/x:KRW-BTC").is_err());
        let bad = parse_feed_list("kraken:XBTUSD").unwrap();
        assert_eq!(bad[0].violation().unwrap().0, "venue");
    }

    #[test]
    fn instruments_from_config_must_be_feed_symbols_once_with_sane_scales() {
        let mut feed = parse_feed_list("binance:BTCUSDT,ETHUSDT")
            .unwrap()
            .remove(0);
        let btc = FeedInstrumentConfig {
            symbol: "BTCUSDT".into(),
            price_scale: 2,
            quantity_scale: 5,
            time_zone: String::new(),
        };
        feed.instruments = vec![btc.clone()];
        assert!(feed.violation().is_none());
        feed.instruments = vec![FeedInstrumentConfig {
            symbol: "SOLUSDT".into(),
            ..btc.clone()
        }];
        let (key, reason) = feed.violation().unwrap();
        assert_eq!(key, "instruments");
        assert!(
            reason.contains("SOLUSDT") && reason.contains("not one of"),
            "{reason}"
        );
        feed.instruments = vec![btc.clone(), btc.clone()];
        assert!(feed.violation().unwrap().1.contains("twice"));
        feed.instruments = vec![FeedInstrumentConfig {
            time_zone: "Mars/Olympus".into(),
            ..btc.clone()
        }];
        assert!(feed.violation().unwrap().1.contains("time_zone"));
        feed.instruments = vec![FeedInstrumentConfig {
            price_scale: 40,
            ..btc
        }];
        assert!(feed.violation().unwrap().1.contains("at most"));
    }
}
