//! Binance spot public market data.
//!
//! * Live: combined streams, `wss://stream.binance.com:9443/stream?streams=btcusdt@trade/…`;
//!   every frame is `{"stream":"btcusdt@trade","data":{…}}` with the
//!   [trade](https://developers.binance.com/docs/binance-spot-api-docs/web-socket-streams#trade-streams)
//!   (`t` trade id) or aggregate trade (`a` id) event. The server pings every
//!   20 s and closes a connection that does not pong within a minute; every
//!   connection is closed after 24 h; at most 1024 streams per connection.
//! * History: `GET /api/v3/historicalTrades?symbol=&fromId=&limit=1000`
//!   (`/api/v3/aggTrades` for the aggregate stream). Trade ids are
//!   contiguous per symbol, so a gap is found from ids and its size is exact.
//! * Metadata: `GET /api/v3/exchangeInfo?symbols=[…]`, `PRICE_FILTER.tickSize`
//!   and `LOT_SIZE.stepSize`.

use std::time::Duration;

use async_trait::async_trait;
use serde::Deserialize;

use crate::decimal_text::scale_of_step;
use crate::http::{Http, HttpError};
use crate::venue::{
    Backfill, Frame, Heartbeat, IdOrder, InstrumentSpec, LastSeen, Limits, TakerSide, Venue,
    VenueTrade,
};

const WS: &str = "wss://stream.binance.com:9443";
const REST: &str = "https://api.binance.com";
/// Most rows one history request returns.
const PAGE: usize = 1000;
/// A backfill reads at most this many pages (a million trades) before it
/// reports the rest as missing.
const MAX_PAGES: usize = 1000;

/// Which public stream a feed reads.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BinanceStream {
    /// `<symbol>@trade`: every trade, ids `t`.
    Trade,
    /// `<symbol>@aggTrade`: trades of one taker order at one price merged, ids `a`.
    AggTrade,
}

impl BinanceStream {
    fn suffix(self) -> &'static str {
        match self {
            Self::Trade => "trade",
            Self::AggTrade => "aggTrade",
        }
    }
}

pub struct BinanceVenue {
    ws: String,
    rest: String,
    stream: BinanceStream,
}

impl BinanceVenue {
    /// `ws` and `rest` default to Binance's documented endpoints.
    pub fn new(ws: Option<String>, rest: Option<String>, stream: BinanceStream) -> Self {
        Self {
            ws: ws.unwrap_or_else(|| WS.to_string()),
            rest: rest.unwrap_or_else(|| REST.to_string()),
            stream,
        }
    }
}

/// A frame: a combined stream's `{"stream","data"}`, a raw stream's event,
/// or the answer to a request (`{"result":null,"id":1}`, `{"error":…}`).
#[derive(Deserialize)]
struct Event {
    data: Option<Box<Event>>,
    error: Option<serde_json::Value>,
    id: Option<serde_json::Value>,
    #[serde(default)]
    e: String,
    #[serde(default)]
    s: String,
    t: Option<u64>,
    a: Option<u64>,
    #[serde(default)]
    p: String,
    #[serde(default)]
    q: String,
    #[serde(rename = "T")]
    time: Option<i64>,
    m: Option<bool>,
}

/// A row of `historicalTrades` (`id`, `price`, `qty`, `time`, `isBuyerMaker`)
/// or of `aggTrades` (`a`, `p`, `q`, `T`, `m`).
#[derive(Deserialize)]
struct RestTrade {
    #[serde(alias = "a")]
    id: u64,
    #[serde(alias = "p")]
    price: String,
    #[serde(alias = "q")]
    qty: String,
    #[serde(alias = "T")]
    time: i64,
    #[serde(rename = "isBuyerMaker", alias = "m")]
    buyer_is_maker: bool,
}

fn side(buyer_is_maker: bool) -> TakerSide {
    // The buyer made the book: the taker sold.
    if buyer_is_maker {
        TakerSide::Sell
    } else {
        TakerSide::Buy
    }
}

impl Event {
    fn trade(self, stream: BinanceStream) -> Option<VenueTrade> {
        let expected = stream.suffix();
        if self.e != expected {
            return None;
        }
        let id = match stream {
            BinanceStream::Trade => self.t?,
            BinanceStream::AggTrade => self.a?,
        };
        Some(VenueTrade {
            symbol: self.s,
            trade_id: id.to_string(),
            ordinal: Some(id),
            price: self.p,
            quantity: self.q,
            time_ms: self.time?,
            side: side(self.m?),
        })
    }
}

#[derive(Deserialize)]
struct ExchangeInfo {
    symbols: Vec<SymbolInfo>,
}

#[derive(Deserialize)]
struct SymbolInfo {
    symbol: String,
    filters: Vec<serde_json::Value>,
}

fn filter_field<'a>(filters: &'a [serde_json::Value], kind: &str, field: &str) -> Option<&'a str> {
    filters
        .iter()
        .find(|f| f.get("filterType").and_then(|t| t.as_str()) == Some(kind))
        .and_then(|f| f.get(field))
        .and_then(|v| v.as_str())
}

#[async_trait]
impl Venue for BinanceVenue {
    fn name(&self) -> &'static str {
        "binance"
    }

    fn limits(&self) -> Limits {
        Limits {
            // 1024 is the documented maximum; fewer keeps the URL short.
            symbols_per_connection: 200,
            symbols_per_subscribe: 200,
            messages_per_second: 5,
            max_connection_age: Some(Duration::from_secs(24 * 3600)),
        }
    }

    fn heartbeat(&self) -> Heartbeat {
        Heartbeat::ServerPings
    }

    fn id_order(&self) -> IdOrder {
        IdOrder::Contiguous
    }

    fn ws_url(&self, symbols: &[String]) -> String {
        let streams: Vec<String> = symbols
            .iter()
            .map(|s| format!("{}@{}", s.to_lowercase(), self.stream.suffix()))
            .collect();
        format!("{}/stream?streams={}", self.ws, streams.join("/"))
    }

    fn subscribe_messages(&self, _symbols: &[String]) -> Vec<String> {
        Vec::new()
    }

    fn parse(&self, frame: &[u8]) -> Frame {
        let message: Event = match serde_json::from_slice(frame) {
            Ok(m) => m,
            Err(e) => return Frame::Error(format!("unreadable frame: {e}")),
        };
        if let Some(error) = message.error {
            return Frame::Error(error.to_string());
        }
        // The answer to a request we sent (`{"result":null,"id":1}`).
        if message.id.is_some() && message.data.is_none() && message.e.is_empty() {
            return Frame::Subscribed;
        }
        let event = match message.data {
            Some(data) => *data,
            None => message,
        };
        match event.trade(self.stream) {
            Some(trade) => Frame::Trades(vec![trade]),
            None => Frame::Ignore,
        }
    }

    async fn backfill(
        &self,
        http: &Http,
        symbol: &str,
        after: &LastSeen,
        until: Option<&VenueTrade>,
    ) -> Result<Backfill, HttpError> {
        let path = match self.stream {
            BinanceStream::Trade => "/api/v3/historicalTrades",
            BinanceStream::AggTrade => "/api/v3/aggTrades",
        };
        let url = format!("{}{path}", self.rest);
        let Some(last) = after.ordinal else {
            // Not an id of this stream: nothing to resume from.
            return Ok(Backfill {
                trades: Vec::new(),
                complete: false,
                missing: None,
            });
        };
        let stop = until.and_then(|u| u.ordinal);
        let mut from = last + 1;
        let mut out = Backfill {
            complete: true,
            ..Backfill::default()
        };
        let note_missing = |out: &mut Backfill, first: u64, last: u64| {
            out.complete = false;
            out.missing = Some(match out.missing {
                Some((a, b)) => (a.min(first), b.max(last)),
                None => (first, last),
            });
        };
        for page in 0.. {
            if stop.is_some_and(|s| from >= s) {
                break;
            }
            if page == MAX_PAGES {
                if let Some(s) = stop {
                    note_missing(&mut out, from, s - 1);
                } else {
                    out.complete = false;
                }
                break;
            }
            let query = [
                ("symbol", symbol.to_string()),
                ("fromId", from.to_string()),
                ("limit", PAGE.to_string()),
            ];
            let rows: Vec<RestTrade> = http.get_json(&url, &query).await?;
            let Some(first) = rows.first() else {
                if let Some(s) = stop {
                    note_missing(&mut out, from, s - 1);
                }
                break;
            };
            if first.id > from {
                let upto = stop.map_or(first.id - 1, |s| (first.id - 1).min(s - 1));
                note_missing(&mut out, from, upto);
            }
            let full = rows.len() >= PAGE;
            for row in rows {
                if stop.is_some_and(|s| row.id >= s) {
                    break;
                }
                from = from.max(row.id + 1);
                out.trades.push(VenueTrade {
                    symbol: symbol.to_string(),
                    trade_id: row.id.to_string(),
                    ordinal: Some(row.id),
                    price: row.price,
                    quantity: row.qty,
                    time_ms: row.time,
                    side: side(row.buyer_is_maker),
                });
            }
            if !full {
                break;
            }
        }
        Ok(out)
    }

    async fn instruments(
        &self,
        http: &Http,
        symbols: &[String],
    ) -> Result<Vec<InstrumentSpec>, HttpError> {
        let url = format!("{}/api/v3/exchangeInfo", self.rest);
        let list = serde_json::to_string(symbols).unwrap_or_default();
        let info: ExchangeInfo = http.get_json(&url, &[("symbols", list)]).await?;
        Ok(info
            .symbols
            .into_iter()
            .filter_map(|s| {
                let tick = filter_field(&s.filters, "PRICE_FILTER", "tickSize")?;
                let step = filter_field(&s.filters, "LOT_SIZE", "stepSize")?;
                Some(InstrumentSpec {
                    price_scale: scale_of_step(tick)?,
                    quantity_scale: scale_of_step(step)?,
                    symbol: s.symbol,
                })
            })
            .collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn venue() -> BinanceVenue {
        BinanceVenue::new(None, None, BinanceStream::Trade)
    }

    #[test]
    fn reads_the_documented_trade_event() {
        // The example of Binance's "Trade Streams" documentation, combined.
        let frame = br#"{"stream":"bnbbtc@trade","data":{"e":"trade","E":1672515782136,"s":"BNBBTC","t":12345,"p":"0.001","q":"100","T":1672515782136,"m":true,"M":true}}"#;
        let Frame::Trades(trades) = venue().parse(frame) else {
            panic!("not trades")
        };
        assert_eq!(
            trades,
            vec![VenueTrade {
                symbol: "BNBBTC".into(),
                trade_id: "12345".into(),
                ordinal: Some(12345),
                price: "0.001".into(),
                quantity: "100".into(),
                time_ms: 1672515782136,
                side: TakerSide::Sell,
            }]
        );
    }

    #[test]
    fn reads_aggregate_trades_and_control_frames() {
        let agg = BinanceVenue::new(None, None, BinanceStream::AggTrade);
        let frame = br#"{"stream":"bnbbtc@aggTrade","data":{"e":"aggTrade","E":1672515782136,"s":"BNBBTC","a":12345,"p":"0.001","q":"100","f":100,"l":105,"T":1672515782136,"m":false,"M":true}}"#;
        let Frame::Trades(trades) = agg.parse(frame) else {
            panic!("not trades")
        };
        assert_eq!(trades[0].trade_id, "12345");
        assert_eq!(trades[0].side, TakerSide::Buy);
        // A trade event on an aggTrade feed is not ours.
        assert_eq!(
            agg.parse(br#"{"stream":"x@trade","data":{"e":"trade","s":"X","t":1,"p":"1","q":"1","T":1,"m":true}}"#),
            Frame::Ignore
        );
        assert_eq!(
            venue().parse(br#"{"result":null,"id":1}"#),
            Frame::Subscribed
        );
        assert!(matches!(
            venue().parse(br#"{"error":{"code":2,"msg":"Invalid request"},"id":1}"#),
            Frame::Error(_)
        ));
    }

    #[test]
    fn names_streams_in_the_url() {
        let url = venue().ws_url(&["BTCUSDT".into(), "ETHUSDT".into()]);
        assert_eq!(
            url,
            "wss://stream.binance.com:9443/stream?streams=btcusdt@trade/ethusdt@trade"
        );
    }
}
