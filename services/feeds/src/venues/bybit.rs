//! Bybit v5 public market data, spot and linear.
//!
//! * Live: `wss://stream.bybit.com/v5/public/spot` (or `/linear`), then
//!   `{"op":"subscribe","args":["publicTrade.BTCUSDT",…]}` with at most 10
//!   args per message on spot; the client sends `{"op":"ping"}` every 20 s
//!   (spot answers `{"success":true,"ret_msg":"pong","op":"ping"}`, linear
//!   `{"op":"pong"}`). A trade frame is
//!   `{"topic":"publicTrade.BTCUSDT","type":"snapshot","ts":…,"data":[{"T","s","S","v","p","i","BT"}]}`.
//! * History: `GET /v5/market/recent-trade?category=&symbol=&limit=` (newest
//!   first; spot keeps the last 60, linear 1000). Trade ids say nothing about
//!   order, so history is read by time.
//! * Metadata: `GET /v5/market/instruments-info?category=&symbol=`,
//!   `priceFilter.tickSize`, `lotSizeFilter.basePrecision` (spot) or `qtyStep` (linear).
//! * A REST answer with `retCode` 10006 is Bybit's rate limit (HTTP 200).

use std::time::Duration;

use async_trait::async_trait;
use serde::Deserialize;

use crate::decimal_text::scale_of_step;
use crate::http::{Http, HttpError};
use crate::venue::{
    Backfill, Frame, Heartbeat, IdOrder, InstrumentSpec, LastSeen, Limits, TakerSide, Venue,
    VenueTrade,
};

const WS: &str = "wss://stream.bybit.com";
const REST: &str = "https://api.bybit.com";
const TOPIC: &str = "publicTrade.";

/// Which of Bybit's markets.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BybitCategory {
    Spot,
    Linear,
}

impl BybitCategory {
    fn as_str(self) -> &'static str {
        match self {
            Self::Spot => "spot",
            Self::Linear => "linear",
        }
    }

    /// Most rows `recent-trade` returns.
    fn history_limit(self) -> usize {
        match self {
            Self::Spot => 60,
            Self::Linear => 1000,
        }
    }
}

pub struct BybitVenue {
    ws: String,
    rest: String,
    category: BybitCategory,
}

impl BybitVenue {
    /// `ws` and `rest` default to Bybit's documented mainnet endpoints.
    pub fn new(ws: Option<String>, rest: Option<String>, category: BybitCategory) -> Self {
        Self {
            ws: ws.unwrap_or_else(|| WS.to_string()),
            rest: rest.unwrap_or_else(|| REST.to_string()),
            category,
        }
    }
}

#[derive(Deserialize)]
struct Message {
    topic: Option<String>,
    data: Option<Vec<WsTrade>>,
    op: Option<String>,
    success: Option<bool>,
    ret_msg: Option<String>,
}

#[derive(Deserialize)]
struct WsTrade {
    #[serde(rename = "T")]
    time: i64,
    s: String,
    #[serde(rename = "S")]
    side: String,
    v: String,
    p: String,
    i: String,
}

#[derive(Deserialize)]
struct Envelope<T> {
    #[serde(rename = "retCode")]
    ret_code: i64,
    #[serde(rename = "retMsg", default)]
    ret_msg: String,
    result: Option<T>,
}

#[derive(Deserialize)]
struct TradeList {
    #[serde(default)]
    list: Vec<RestTrade>,
}

#[derive(Deserialize)]
struct RestTrade {
    #[serde(rename = "execId")]
    exec_id: String,
    price: String,
    size: String,
    side: String,
    time: String,
}

#[derive(Deserialize)]
struct InstrumentList {
    #[serde(default)]
    list: Vec<InstrumentInfo>,
}

#[derive(Deserialize)]
struct InstrumentInfo {
    symbol: String,
    #[serde(rename = "priceFilter")]
    price_filter: serde_json::Value,
    #[serde(rename = "lotSizeFilter")]
    lot_size_filter: serde_json::Value,
}

fn side(text: &str) -> TakerSide {
    match text {
        "Buy" => TakerSide::Buy,
        "Sell" => TakerSide::Sell,
        _ => TakerSide::Unknown,
    }
}

impl BybitVenue {
    /// GETs a v5 endpoint and opens its envelope: retCode 10006 is the rate
    /// limit, any other non-zero code an error.
    async fn call<T: serde::de::DeserializeOwned>(
        &self,
        http: &Http,
        path: &str,
        query: &[(&str, String)],
    ) -> Result<T, HttpError> {
        let url = format!("{}{path}", self.rest);
        let envelope: Envelope<T> = http.get_json(&url, query).await?;
        match envelope.ret_code {
            0 => envelope
                .result
                .ok_or_else(|| HttpError::Transport(format!("GET {url}: no result"))),
            10006 => Err(HttpError::RateLimited {
                status: 200,
                retry_after: Duration::from_secs(1),
            }),
            code => Err(HttpError::Status {
                status: 200,
                url,
                body: format!("retCode {code}: {}", envelope.ret_msg),
            }),
        }
    }
}

#[async_trait]
impl Venue for BybitVenue {
    fn name(&self) -> &'static str {
        "bybit"
    }

    fn limits(&self) -> Limits {
        Limits {
            symbols_per_connection: 100,
            symbols_per_subscribe: 10,
            messages_per_second: 10,
            max_connection_age: None,
        }
    }

    fn heartbeat(&self) -> Heartbeat {
        Heartbeat::ClientText {
            text: r#"{"op":"ping"}"#.to_string(),
            every: Duration::from_secs(20),
        }
    }

    fn id_order(&self) -> IdOrder {
        IdOrder::Unordered
    }

    fn ws_url(&self, _symbols: &[String]) -> String {
        format!("{}/v5/public/{}", self.ws, self.category.as_str())
    }

    fn subscribe_messages(&self, symbols: &[String]) -> Vec<String> {
        symbols
            .chunks(self.limits().symbols_per_subscribe)
            .map(|chunk| {
                let args: Vec<String> = chunk.iter().map(|s| format!("{TOPIC}{s}")).collect();
                serde_json::json!({"op": "subscribe", "args": args}).to_string()
            })
            .collect()
    }

    fn parse(&self, frame: &[u8]) -> Frame {
        let message: Message = match serde_json::from_slice(frame) {
            Ok(m) => m,
            Err(e) => return Frame::Error(format!("unreadable frame: {e}")),
        };
        if let Some(topic) = &message.topic {
            if !topic.starts_with(TOPIC) {
                return Frame::Ignore;
            }
            let trades = message
                .data
                .unwrap_or_default()
                .into_iter()
                .map(|t| VenueTrade {
                    side: side(&t.side),
                    symbol: t.s,
                    trade_id: t.i,
                    ordinal: None,
                    price: t.p,
                    quantity: t.v,
                    time_ms: t.time,
                })
                .collect();
            return Frame::Trades(trades);
        }
        match (message.op.as_deref(), message.success) {
            (Some("pong"), _) => Frame::Pong,
            (Some("ping"), Some(true)) => Frame::Pong,
            (Some("subscribe"), Some(true)) => Frame::Subscribed,
            (_, Some(false)) => Frame::Error(message.ret_msg.unwrap_or_default()),
            _ => Frame::Ignore,
        }
    }

    async fn backfill(
        &self,
        http: &Http,
        symbol: &str,
        after: &LastSeen,
        until: Option<&VenueTrade>,
    ) -> Result<Backfill, HttpError> {
        let limit = self.category.history_limit();
        let query = [
            ("category", self.category.as_str().to_string()),
            ("symbol", symbol.to_string()),
            ("limit", limit.to_string()),
        ];
        let page: TradeList = self.call(http, "/v5/market/recent-trade", &query).await?;
        let returned = page.list.len();
        let mut reached_back = returned < limit;
        let mut trades = Vec::new();
        // Newest first: walk back until the last trade seen.
        for row in page.list {
            let time_ms: i64 = row.time.parse().map_err(|_| {
                HttpError::Transport(format!("recent-trade: time {:?} is not ms", row.time))
            })?;
            if row.exec_id == after.trade_id || time_ms < after.time_ms {
                reached_back = true;
                continue;
            }
            if until.is_some_and(|u| time_ms > u.time_ms) {
                continue;
            }
            trades.push(VenueTrade {
                symbol: symbol.to_string(),
                trade_id: row.exec_id,
                ordinal: None,
                price: row.price,
                quantity: row.size,
                time_ms,
                side: side(&row.side),
            });
        }
        trades.reverse();
        Ok(Backfill {
            trades,
            complete: reached_back,
            missing: None,
        })
    }

    async fn instruments(
        &self,
        http: &Http,
        symbols: &[String],
    ) -> Result<Vec<InstrumentSpec>, HttpError> {
        let mut out = Vec::new();
        for symbol in symbols {
            let query = [
                ("category", self.category.as_str().to_string()),
                ("symbol", symbol.clone()),
            ];
            let page: InstrumentList = self
                .call(http, "/v5/market/instruments-info", &query)
                .await?;
            for info in page.list {
                let tick = info.price_filter.get("tickSize").and_then(|v| v.as_str());
                let step = match self.category {
                    BybitCategory::Spot => info.lot_size_filter.get("basePrecision"),
                    BybitCategory::Linear => info.lot_size_filter.get("qtyStep"),
                }
                .and_then(|v| v.as_str());
                if let (Some(price_scale), Some(quantity_scale)) =
                    (tick.and_then(scale_of_step), step.and_then(scale_of_step))
                {
                    out.push(InstrumentSpec {
                        symbol: info.symbol,
                        price_scale,
                        quantity_scale,
                    });
                }
            }
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn venue() -> BybitVenue {
        BybitVenue::new(None, None, BybitCategory::Spot)
    }

    #[test]
    fn reads_the_documented_trade_frame() {
        // The example of Bybit's v5 "Trade" WebSocket documentation.
        let frame = br#"{"topic":"publicTrade.BTCUSDT","type":"snapshot","ts":1672304486868,"data":[{"T":1672304486865,"s":"BTCUSDT","S":"Buy","v":"0.001","p":"16578.50","L":"PlusTick","i":"20f43950-d8dd-5b31-9112-a178eb6023af","BT":false,"seq":1783284617}]}"#;
        let Frame::Trades(trades) = venue().parse(frame) else {
            panic!("not trades")
        };
        assert_eq!(
            trades,
            vec![VenueTrade {
                symbol: "BTCUSDT".into(),
                trade_id: "20f43950-d8dd-5b31-9112-a178eb6023af".into(),
                ordinal: None,
                price: "16578.50".into(),
                quantity: "0.001".into(),
                time_ms: 1672304486865,
                side: TakerSide::Buy,
            }]
        );
    }

    #[test]
    fn reads_pongs_and_subscription_answers() {
        let v = venue();
        assert_eq!(
            v.parse(br#"{"success":true,"ret_msg":"pong","conn_id":"0970e817","req_id":"","op":"ping"}"#),
            Frame::Pong
        );
        assert_eq!(
            v.parse(br#"{"req_id":"100001","op":"pong","args":["1672916271846"],"conn_id":"ce3dpomvha7dha97tvp0-2xh"}"#),
            Frame::Pong
        );
        assert_eq!(
            v.parse(
                br#"{"success":true,"ret_msg":"subscribe","conn_id":"2324d924","op":"subscribe"}"#
            ),
            Frame::Subscribed
        );
        assert!(matches!(
            v.parse(br#"{"success":false,"ret_msg":"Invalid symbol :[publicTrade.NOPE]","conn_id":"x","op":"subscribe"}"#),
            Frame::Error(m) if m.contains("NOPE")
        ));
    }

    #[test]
    fn subscribes_ten_topics_per_message() {
        let symbols: Vec<String> = (0..23).map(|i| format!("S{i}USDT")).collect();
        let messages = venue().subscribe_messages(&symbols);
        assert_eq!(messages.len(), 3);
        assert!(messages[0].contains("\"publicTrade.S0USDT\""));
        assert!(messages[2].contains("\"publicTrade.S22USDT\""));
    }
}
