//! Upbit quotation API, KRW (and other) markets.
//!
//! * Live: `wss://api.upbit.com/websocket/v1`, one request
//!   `[{"ticket":…},{"type":"trade","codes":["KRW-BTC",…]},{"format":"DEFAULT"}]`
//!   (a new request replaces the connection's subscriptions, so every code of
//!   a connection goes in one). Frames are JSON in binary messages; prices
//!   and volumes are JSON numbers, read as their exact text. The connection
//!   is closed after 120 s idle: the client sends `PING` and the server
//!   answers `{"status":"UP"}`.
//! * History: `GET /v1/trades/ticks?market=&count=500&cursor=` (newest
//!   first, paged back by `sequential_id`). `sequential_id` grows but skips
//!   values, so history is read back to the last id seen.
//! * Metadata: `GET /v1/market/all` lists markets; Upbit's KRW tick size
//!   depends on the price, so prices and volumes keep 8 decimals.

use std::time::Duration;

use async_trait::async_trait;
use serde::Deserialize;
use serde_json::value::RawValue;

use crate::decimal_text::plain_decimal;
use crate::http::{Http, HttpError};
use crate::venue::{
    Backfill, Frame, Heartbeat, IdOrder, InstrumentSpec, LastSeen, Limits, TakerSide, Venue,
    VenueTrade,
};

const WS: &str = "wss://api.upbit.com/websocket/v1";
const REST: &str = "https://api.upbit.com";
/// Most rows one `trades/ticks` request returns.
const PAGE: usize = 500;
/// A backfill pages back at most this far before it reports a gap.
const MAX_PAGES: usize = 40;
/// Upbit's trade prices and volumes fit 8 decimals.
const SCALE: u32 = 8;

pub struct UpbitVenue {
    ws: String,
    rest: String,
}

impl UpbitVenue {
    /// `ws` is the full WebSocket URL; both default to Upbit's documented endpoints.
    pub fn new(ws: Option<String>, rest: Option<String>) -> Self {
        Self {
            ws: ws.unwrap_or_else(|| WS.to_string()),
            rest: rest.unwrap_or_else(|| REST.to_string()),
        }
    }
}

#[derive(Deserialize)]
struct WsMessage<'a> {
    #[serde(rename = "type")]
    kind: Option<&'a str>,
    code: Option<String>,
    #[serde(borrow)]
    trade_price: Option<&'a RawValue>,
    #[serde(borrow)]
    trade_volume: Option<&'a RawValue>,
    ask_bid: Option<&'a str>,
    sequential_id: Option<u64>,
    trade_timestamp: Option<i64>,
    status: Option<&'a str>,
    error: Option<serde_json::Value>,
}

#[derive(Deserialize)]
struct RestTrade<'a> {
    #[serde(borrow)]
    trade_price: &'a RawValue,
    #[serde(borrow)]
    trade_volume: &'a RawValue,
    ask_bid: &'a str,
    sequential_id: u64,
    timestamp: i64,
}

#[derive(Deserialize)]
struct Market {
    market: String,
}

fn side(ask_bid: &str) -> TakerSide {
    // The taker's side: ASK sold into bids, BID bought from asks.
    match ask_bid {
        "ASK" => TakerSide::Sell,
        "BID" => TakerSide::Buy,
        _ => TakerSide::Unknown,
    }
}

fn decimal(raw: &RawValue) -> Option<String> {
    plain_decimal(raw.get())
}

#[async_trait]
impl Venue for UpbitVenue {
    fn name(&self) -> &'static str {
        "upbit"
    }

    fn limits(&self) -> Limits {
        Limits {
            symbols_per_connection: 200,
            // One request carries every code of the connection.
            symbols_per_subscribe: 200,
            messages_per_second: 5,
            max_connection_age: None,
        }
    }

    fn heartbeat(&self) -> Heartbeat {
        Heartbeat::ClientText {
            text: "PING".to_string(),
            every: Duration::from_secs(60),
        }
    }

    fn id_order(&self) -> IdOrder {
        IdOrder::Increasing
    }

    fn ws_url(&self, _symbols: &[String]) -> String {
        self.ws.clone()
    }

    fn subscribe_messages(&self, symbols: &[String]) -> Vec<String> {
        let ticket = format!("tickmesh-{:016x}", fastrand::u64(..));
        vec![
            serde_json::json!([
                {"ticket": ticket},
                {"type": "trade", "codes": symbols},
                {"format": "DEFAULT"}
            ])
            .to_string(),
        ]
    }

    fn parse(&self, frame: &[u8]) -> Frame {
        let message: WsMessage = match serde_json::from_slice(frame) {
            Ok(m) => m,
            Err(e) => return Frame::Error(format!("unreadable frame: {e}")),
        };
        if let Some(error) = message.error {
            return Frame::Error(error.to_string());
        }
        if message.status == Some("UP") {
            return Frame::Pong;
        }
        if message.kind != Some("trade") {
            return Frame::Ignore;
        }
        let trade = (|| {
            let id = message.sequential_id?;
            Some(VenueTrade {
                symbol: message.code?,
                trade_id: id.to_string(),
                ordinal: Some(id),
                price: decimal(message.trade_price?)?,
                quantity: decimal(message.trade_volume?)?,
                time_ms: message.trade_timestamp?,
                side: side(message.ask_bid.unwrap_or("")),
            })
        })();
        match trade {
            Some(t) => Frame::Trades(vec![t]),
            None => Frame::Error("a trade frame without the documented fields".into()),
        }
    }

    async fn backfill(
        &self,
        http: &Http,
        symbol: &str,
        after: &LastSeen,
        until: Option<&VenueTrade>,
    ) -> Result<Backfill, HttpError> {
        let url = format!("{}/v1/trades/ticks", self.rest);
        let stop = until.and_then(|u| u.ordinal);
        let mut cursor: Option<u64> = None;
        let mut trades = Vec::new();
        let mut complete = false;
        'pages: for _ in 0..MAX_PAGES {
            let mut query = vec![("market", symbol.to_string()), ("count", PAGE.to_string())];
            if let Some(c) = cursor {
                query.push(("cursor", c.to_string()));
            }
            let body = http.get(&url, &query).await?;
            let rows: Vec<RestTrade> = serde_json::from_slice(&body)
                .map_err(|e| HttpError::Transport(format!("GET {url}: unexpected body: {e}")))?;
            let full = rows.len() >= PAGE;
            for row in rows {
                cursor = Some(cursor.map_or(row.sequential_id, |c| c.min(row.sequential_id)));
                let older = match after.ordinal {
                    Some(last) => row.sequential_id <= last,
                    None => row.timestamp < after.time_ms,
                };
                if older {
                    complete = true;
                    break 'pages;
                }
                if stop.is_some_and(|s| row.sequential_id >= s) {
                    continue;
                }
                let (Some(price), Some(quantity)) =
                    (decimal(row.trade_price), decimal(row.trade_volume))
                else {
                    return Err(HttpError::Transport(format!(
                        "GET {url}: trade {} has no decimal price or volume",
                        row.sequential_id
                    )));
                };
                trades.push(VenueTrade {
                    symbol: symbol.to_string(),
                    trade_id: row.sequential_id.to_string(),
                    ordinal: Some(row.sequential_id),
                    price,
                    quantity,
                    time_ms: row.timestamp,
                    side: side(row.ask_bid),
                });
            }
            if !full {
                break;
            }
        }
        trades.reverse();
        Ok(Backfill {
            trades,
            complete,
            missing: None,
        })
    }

    async fn instruments(
        &self,
        http: &Http,
        symbols: &[String],
    ) -> Result<Vec<InstrumentSpec>, HttpError> {
        let url = format!("{}/v1/market/all", self.rest);
        let markets: Vec<Market> = http.get_json(&url, &[]).await?;
        Ok(markets
            .into_iter()
            .filter(|m| symbols.contains(&m.market))
            .map(|m| InstrumentSpec {
                symbol: m.market,
                price_scale: SCALE,
                quantity_scale: SCALE,
            })
            .collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_the_documented_trade_frame_without_floats() {
        // The example of Upbit's WebSocket "Trade" documentation.
        let frame = br#"{"type":"trade","code":"KRW-BTC","timestamp":1676965262177,"trade_date":"2023-02-21","trade_time":"07:41:02","trade_timestamp":1676965262139,"trade_price":31287000.0,"trade_volume":1.0E-4,"ask_bid":"ASK","prev_closing_price":31100000.00000000,"change":"RISE","change_price":187000.00000000,"sequential_id":1676965262139000,"best_ask_price":31288000,"best_ask_size":0.03,"best_bid_price":31287000,"best_bid_size":0.1,"stream_type":"REALTIME"}"#;
        let venue = UpbitVenue::new(None, None);
        let Frame::Trades(trades) = venue.parse(frame) else {
            panic!("not trades")
        };
        assert_eq!(
            trades,
            vec![VenueTrade {
                symbol: "KRW-BTC".into(),
                trade_id: "1676965262139000".into(),
                ordinal: Some(1676965262139000),
                price: "31287000.0".into(),
                quantity: "0.00010".into(),
                time_ms: 1676965262139,
                side: TakerSide::Sell,
            }]
        );
        assert_eq!(venue.parse(br#"{"status":"UP"}"#), Frame::Pong);
        assert!(matches!(
            venue.parse(br#"{"error":{"name":"INVALID_PARAM","message":"x"}}"#),
            Frame::Error(_)
        ));
    }

    #[test]
    fn subscribes_every_code_in_one_request() {
        let venue = UpbitVenue::new(None, None);
        let messages = venue.subscribe_messages(&["KRW-BTC".into(), "KRW-ETH".into()]);
        assert_eq!(messages.len(), 1);
        let v: serde_json::Value = serde_json::from_str(&messages[0]).unwrap();
        assert_eq!(v[1]["type"], "trade");
        assert_eq!(v[1]["codes"], serde_json::json!(["KRW-BTC", "KRW-ETH"]));
        assert_eq!(v[2]["format"], "DEFAULT");
    }
}
