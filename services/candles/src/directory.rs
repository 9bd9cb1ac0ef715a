//! Instrument definitions as the candle service needs them (time zone,
//! scales, sessions), read from MarketFeedService over gRPC and cached.

use std::collections::HashMap;
use std::sync::{Arc, RwLock};

use chrono_tz::Tz;
use tickmesh_api::marketfeed::market_feed_service_client::MarketFeedServiceClient;
use tickmesh_api::marketfeed::{GetInstrumentRequest, Instrument, ListInstrumentsRequest};
use tickmesh_calendar::Session;
use tickmesh_core::time_zone::parse_time_zone;
use tickmesh_core::{Error, Result};
use tonic::service::interceptor::InterceptedService;
use tonic::transport::Channel;

pub type Interceptor =
    fn(tonic::Request<()>) -> std::result::Result<tonic::Request<()>, tonic::Status>;
pub type FeedClient = MarketFeedServiceClient<InterceptedService<Channel, Interceptor>>;

/// A client of MarketFeedService that carries the caller's trace context.
pub fn feed_client(endpoint: &str) -> Result<FeedClient> {
    let channel = tonic::transport::Endpoint::from_shared(endpoint.to_string())
        .map_err(|e| {
            Error::FailedPrecondition(format!("candles.marketfeed_endpoint {endpoint:?}: {e}"))
        })?
        .connect_lazy();
    let interceptor: Interceptor = tickmesh_runtime::telemetry::inject_trace_context;
    Ok(
        MarketFeedServiceClient::with_interceptor(channel, interceptor)
            .max_decoding_message_size(64 << 20),
    )
}

#[derive(Clone, Debug)]
pub struct InstrumentInfo {
    pub symbol: String,
    pub tz: Tz,
    pub price_scale: u32,
    pub quantity_scale: u32,
    pub sessions: Vec<Session>,
}

fn info(i: Instrument) -> Option<InstrumentInfo> {
    let tz = parse_time_zone(&i.time_zone).ok()?;
    Some(InstrumentInfo {
        tz,
        price_scale: i.price_scale,
        quantity_scale: i.quantity_scale,
        sessions: i
            .sessions
            .iter()
            .filter_map(|s| {
                let open = parse_hhmm(&s.open_time)?;
                let close = parse_hhmm(&s.close_time)?;
                Some(Session {
                    days: s
                        .days
                        .iter()
                        .filter_map(|d| u8::try_from(*d).ok())
                        .collect(),
                    open_minute: open,
                    close_minute: close,
                })
            })
            .collect(),
        symbol: i.symbol,
    })
}

fn parse_hhmm(text: &str) -> Option<u16> {
    let (h, m) = text.split_once(':')?;
    Some(h.parse::<u16>().ok()? * 60 + m.parse::<u16>().ok()?)
}

fn from_status(status: tonic::Status) -> Error {
    match status.code() {
        // MarketFeed's message already says "… not found"; `NotFound` adds it.
        tonic::Code::NotFound => Error::NotFound(
            status
                .message()
                .strip_suffix(" not found")
                .unwrap_or(status.message())
                .to_string(),
        ),
        _ => Error::Unavailable(format!("marketfeed: {}", status.message())),
    }
}

pub struct Directory {
    client: FeedClient,
    cache: RwLock<HashMap<String, Arc<InstrumentInfo>>>,
}

impl Directory {
    pub fn new(client: FeedClient) -> Self {
        Self {
            client,
            cache: RwLock::new(HashMap::new()),
        }
    }

    pub fn client(&self) -> FeedClient {
        self.client.clone()
    }

    /// Reloads every instrument; returns the symbols in order.
    pub async fn refresh(&self) -> Result<Vec<String>> {
        let mut client = self.client.clone();
        let mut token = String::new();
        let mut all = HashMap::new();
        loop {
            let page = client
                .list_instruments(ListInstrumentsRequest {
                    page_size: 10_000,
                    page_token: token,
                })
                .await
                .map_err(from_status)?
                .into_inner();
            for i in page.instruments {
                if let Some(info) = info(i) {
                    all.insert(info.symbol.clone(), Arc::new(info));
                }
            }
            if page.next_page_token.is_empty() {
                break;
            }
            token = page.next_page_token;
        }
        let mut symbols: Vec<String> = all.keys().cloned().collect();
        symbols.sort();
        *self.cache.write().expect("directory lock") = all;
        Ok(symbols)
    }

    /// One instrument (cache, then MarketFeed); `NotFound` when unknown.
    pub async fn get(&self, symbol: &str) -> Result<Arc<InstrumentInfo>> {
        if let Some(i) = self.cache.read().expect("directory lock").get(symbol) {
            return Ok(i.clone());
        }
        let instrument = self
            .client
            .clone()
            .get_instrument(GetInstrumentRequest {
                symbol: symbol.to_string(),
            })
            .await
            .map_err(from_status)?
            .into_inner()
            .instrument
            .and_then(info)
            .ok_or_else(|| Error::NotFound(format!("instrument {symbol:?}")))?;
        let instrument = Arc::new(instrument);
        self.cache
            .write()
            .expect("directory lock")
            .insert(symbol.to_string(), instrument.clone());
        Ok(instrument)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_symbol_marketfeed_does_not_know_is_not_found_once() {
        let from_marketfeed =
            tickmesh_runtime::status::to_status(Error::NotFound("instrument \"NOPE\"".into()));
        let ours = tickmesh_runtime::status::to_status(from_status(from_marketfeed));
        assert_eq!(ours.code(), tonic::Code::NotFound);
        assert_eq!(ours.message(), "instrument \"NOPE\" not found");
    }
}
