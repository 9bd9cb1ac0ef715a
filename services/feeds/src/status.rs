//! What a feed reports per symbol: who owns it, the connection's state, the
//! last trade, and the counts that make gaps visible (reconnects, trades
//! backfilled, trades that could not be recovered).

/// State of a symbol's connection on this instance.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ConnectionState {
    /// Another instance owns the symbol (or nobody, between leases).
    NotOwned,
    /// Connecting or waiting to reconnect.
    Reconnecting,
    /// Connected; filling the hole since the last stored trade.
    Backfilling,
    /// Connected and receiving.
    Live,
}

impl ConnectionState {
    pub fn as_str(self) -> &'static str {
        match self {
            ConnectionState::NotOwned => "not_owned",
            ConnectionState::Reconnecting => "reconnecting",
            ConnectionState::Backfilling => "backfilling",
            ConnectionState::Live => "live",
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SymbolStatus {
    pub feed: String,
    pub venue: String,
    pub venue_symbol: String,
    pub symbol: String,
    /// True when this instance owns the symbol.
    pub owned: bool,
    /// The owning instance, as far as this instance knows.
    pub owner: String,
    pub state: ConnectionState,
    pub last_trade_id: String,
    pub last_trade_time_ms: i64,
    /// Trades received on the socket.
    pub received: u64,
    pub reconnects: u64,
    /// Trades fetched from the venue's REST history after reconnects and id jumps.
    pub backfilled: u64,
    /// Trades known to be missing that no endpoint could give (contiguous ids).
    pub unrecoverable: u64,
    /// Backfills whose history did not reach back to the last trade seen.
    pub incomplete_backfills: u64,
    /// Trades MarketFeed refused (validation).
    pub rejected: u64,
    pub last_error: String,
}

impl SymbolStatus {
    pub fn new(feed: &str, venue: &str, venue_symbol: &str, symbol: &str) -> Self {
        Self {
            feed: feed.to_string(),
            venue: venue.to_string(),
            venue_symbol: venue_symbol.to_string(),
            symbol: symbol.to_string(),
            owned: false,
            owner: String::new(),
            state: ConnectionState::NotOwned,
            last_trade_id: String::new(),
            last_trade_time_ms: 0,
            received: 0,
            reconnects: 0,
            backfilled: 0,
            unrecoverable: 0,
            incomplete_backfills: 0,
            rejected: 0,
            last_error: String::new(),
        }
    }
}
