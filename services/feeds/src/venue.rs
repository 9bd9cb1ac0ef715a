//! What a venue is to the connector: one trait per venue file
//! (`venues/<name>.rs`) that says how to connect and subscribe, how to keep
//! the socket alive, how to read a frame into trades, and how to fetch the
//! trades a disconnect missed from the venue's REST history. The connection
//! runner ([`crate::connection`]) and the backfill ([`crate::backfill`]) are
//! the same for every venue.

use std::time::Duration;

use async_trait::async_trait;

use crate::http::{Http, HttpError};

/// Taker side as the venue reports it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TakerSide {
    Buy,
    Sell,
    Unknown,
}

/// One trade exactly as the venue sent it: decimal strings untouched (never
/// through a float), the venue's trade id, the venue's trade time.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct VenueTrade {
    /// The symbol as the venue spells it ("BTCUSDT", "KRW-BTC").
    pub symbol: String,
    /// The venue's trade id, as text.
    pub trade_id: String,
    /// The id as a number where the venue's ids are ordered (Binance trade
    /// ids, Upbit `sequential_id`); `None` where they are not (Bybit).
    pub ordinal: Option<u64>,
    /// Price, as the venue's decimal text.
    pub price: String,
    /// Quantity, as the venue's decimal text.
    pub quantity: String,
    /// The venue's trade time, in milliseconds since the Unix epoch.
    pub time_ms: i64,
    pub side: TakerSide,
}

/// What one WebSocket frame was.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Frame {
    /// Trades, oldest first as the venue sent them.
    Trades(Vec<VenueTrade>),
    /// The answer to our heartbeat (Bybit `{"op":"pong"}`, Upbit `{"status":"UP"}`).
    Pong,
    /// The venue confirmed a subscription.
    Subscribed,
    /// Anything else that is fine to skip (other event types).
    Ignore,
    /// The venue refused something (a subscription, a malformed request):
    /// logged, and the connection is restarted.
    Error(String),
}

/// How the connection is kept alive.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Heartbeat {
    /// The server sends WebSocket pings; we answer each with a pong carrying
    /// its payload (Binance: a ping every 20 s, closed after a minute without a pong).
    ServerPings,
    /// We send this text frame every `every`; the venue answers with a frame
    /// that [`Venue::parse`] reads as [`Frame::Pong`] (Bybit: `{"op":"ping"}` every 20 s).
    ClientText { text: String, every: Duration },
    /// We send a WebSocket ping frame every `every` (Upbit closes a connection
    /// idle for 120 s).
    ClientPing { every: Duration },
}

/// How the venue's trade ids relate to each other, which decides how a gap
/// is found and how it is filled.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum IdOrder {
    /// Every trade of a symbol gets the previous id + 1 (Binance): a jump in
    /// ids is a gap, and its exact size is known.
    Contiguous,
    /// Ids go up but skip values (Upbit `sequential_id`): after a reconnect,
    /// history is read back to the last id seen.
    Increasing,
    /// Ids say nothing about order (Bybit): history is read by time.
    Unordered,
}

/// The venue's documented per-connection limits.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Limits {
    /// Most symbols (streams) on one connection.
    pub symbols_per_connection: usize,
    /// Most symbols in one subscribe message.
    pub symbols_per_subscribe: usize,
    /// Most messages we may send per second (subscribes, pings).
    pub messages_per_second: u32,
    /// The venue closes connections at this age (Binance: 24 h); the
    /// connector opens a new one before it and lets the old one go once the
    /// new one delivers.
    pub max_connection_age: Option<Duration>,
}

/// Price and quantity scales of a symbol, from the venue's metadata.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct InstrumentSpec {
    /// The symbol as the venue spells it.
    pub symbol: String,
    pub price_scale: u32,
    pub quantity_scale: u32,
}

/// Where to resume: the last trade of the symbol the mesh holds.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LastSeen {
    pub trade_id: String,
    pub ordinal: Option<u64>,
    pub time_ms: i64,
}

/// What a backfill brought back.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Backfill {
    /// Trades after the last one seen, oldest first (may repeat trades the
    /// mesh already has: ingest drops duplicates).
    pub trades: Vec<VenueTrade>,
    /// False when the venue's history did not reach back to the last trade
    /// seen: there may be trades that no endpoint can give any more.
    pub complete: bool,
    /// For venues with contiguous ids: the ids that could not be recovered.
    pub missing: Option<(u64, u64)>,
}

/// One venue. An implementation holds its WebSocket and REST base URLs
/// (documented ones by default, a fake venue's in tests) and its options
/// (Bybit's category, Binance's stream type).
#[async_trait]
pub trait Venue: Send + Sync + 'static {
    /// Short lowercase name, as in config: "binance", "bybit", "upbit".
    fn name(&self) -> &'static str;
    fn limits(&self) -> Limits;
    fn heartbeat(&self) -> Heartbeat;
    fn id_order(&self) -> IdOrder;
    /// The URL to connect to for these venue symbols (Binance's combined
    /// streams name the streams in the URL).
    fn ws_url(&self, symbols: &[String]) -> String;
    /// Text frames to send once connected (empty when the URL subscribes),
    /// each within `limits().symbols_per_subscribe`.
    fn subscribe_messages(&self, symbols: &[String]) -> Vec<String>;
    /// Reads one frame (text, or binary: Upbit sends JSON in binary frames).
    fn parse(&self, frame: &[u8]) -> Frame;
    /// Trades of `symbol` after `after`, oldest first, from the venue's REST
    /// history; `until` is the first trade received live after the
    /// reconnect, where known (history stops there).
    async fn backfill(
        &self,
        http: &Http,
        symbol: &str,
        after: &LastSeen,
        until: Option<&VenueTrade>,
    ) -> Result<Backfill, HttpError>;
    /// Scales of these symbols from the venue's instrument metadata.
    async fn instruments(
        &self,
        http: &Http,
        symbols: &[String],
    ) -> Result<Vec<InstrumentSpec>, HttpError>;
}
