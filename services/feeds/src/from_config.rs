//! `[[feeds]]` settings into running feeds: each table picks its venue file.

use std::sync::Arc;

use tickmesh_runtime::feeds_config::FeedConfig;

use crate::feed::{ConfiguredInstrument, FeedSpec};
use crate::venue::Venue;
use crate::venues::binance::{BinanceStream, BinanceVenue};
use crate::venues::bybit::{BybitCategory, BybitVenue};
use crate::venues::upbit::UpbitVenue;

fn url(text: &str) -> Option<String> {
    (!text.is_empty()).then(|| text.trim_end_matches('/').to_string())
}

/// The venue a validated feed config names.
pub fn venue(config: &FeedConfig) -> Result<Arc<dyn Venue>, String> {
    let (ws, rest) = (url(&config.ws_url), url(&config.rest_url));
    Ok(match config.venue.as_str() {
        "binance" => Arc::new(BinanceVenue::new(
            ws,
            rest,
            if config.stream == "aggTrade" {
                BinanceStream::AggTrade
            } else {
                BinanceStream::Trade
            },
        )),
        "bybit" => Arc::new(BybitVenue::new(
            ws,
            rest,
            if config.category == "linear" {
                BybitCategory::Linear
            } else {
                BybitCategory::Spot
            },
        )),
        "upbit" => Arc::new(UpbitVenue::new(ws, rest)),
        other => return Err(format!("unknown venue {other:?}")),
    })
}

/// A feed's spec from its config.
pub fn spec(config: &FeedConfig) -> Result<FeedSpec, String> {
    Ok(FeedSpec {
        name: config.resolved_name(),
        venue: venue(config)?,
        symbols: config.symbols.clone(),
        symbol_prefix: config.symbol_prefix.clone(),
        stall_timeout: config.stall_timeout,
        rotate_after: (!config.rotate_after.is_zero()).then_some(config.rotate_after),
        lease_ttl: config.lease_ttl,
        backoff_min: config.reconnect_min,
        backoff_max: config.reconnect_max,
        register_instruments: config.register_instruments,
        instruments: config
            .instruments
            .iter()
            .map(|i| ConfiguredInstrument {
                symbol: i.symbol.clone(),
                price_scale: i.price_scale,
                quantity_scale: i.quantity_scale,
                time_zone: i.time_zone.clone(),
            })
            .collect(),
    })
}
