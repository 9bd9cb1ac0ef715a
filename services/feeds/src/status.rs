//! What a feed reports per symbol: who owns it, the connection's state, the
//! last trade, and the counts that make gaps visible (reconnects, trades
//! backfilled, trades that could not be recovered).

use serde::{Deserialize, Serialize};
use tickmesh_core::Result;
use tickmesh_runtime::RedisHandle;
use tickmesh_runtime::proto_time::now_nanos;
use tickmesh_runtime::redis_conn::unavailable;

/// State of a symbol's connection on this instance.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
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

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
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
    /// When the owner wrote this report (ms since the epoch; 0: local view).
    #[serde(default)]
    pub report_ms: i64,
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
            report_ms: 0,
        }
    }
}

/// Owners' reports in Redis: one hash for the mesh, a field per feed and
/// symbol, so any instance answers GetFeedStatus for all of them.
pub struct StatusBoard {
    redis: RedisHandle,
}

impl StatusBoard {
    pub fn new(redis: RedisHandle) -> Self {
        Self { redis }
    }

    fn key(&self) -> String {
        format!("{}:feeds:status", self.redis.prefix())
    }

    fn field(feed: &str, venue_symbol: &str) -> String {
        format!("{feed}\t{venue_symbol}")
    }

    /// Writes the owner's view of the symbols it owns.
    pub async fn report(&self, owned: &[SymbolStatus]) -> Result<()> {
        if owned.is_empty() {
            return Ok(());
        }
        let now_ms = now_nanos() / 1_000_000;
        let mut cmd = redis::cmd("HSET");
        cmd.arg(self.key());
        for status in owned {
            let mut status = status.clone();
            status.report_ms = now_ms;
            let json = serde_json::to_string(&status).expect("status serializes");
            cmd.arg(Self::field(&status.feed, &status.venue_symbol))
                .arg(json);
        }
        let _: i64 = cmd
            .query_async(&mut self.redis.conn())
            .await
            .map_err(unavailable)?;
        Ok(())
    }

    /// The owners' reports of `local`'s symbols where fresher than
    /// `fresh_ms`, else the local view (not owned by anyone known).
    pub async fn merged(
        &self,
        local: Vec<SymbolStatus>,
        fresh_ms: i64,
    ) -> Result<Vec<SymbolStatus>> {
        if local.is_empty() {
            return Ok(local);
        }
        let mut cmd = redis::cmd("HMGET");
        cmd.arg(self.key());
        for s in &local {
            cmd.arg(Self::field(&s.feed, &s.venue_symbol));
        }
        let reports: Vec<Option<String>> = cmd
            .query_async(&mut self.redis.conn())
            .await
            .map_err(unavailable)?;
        let now_ms = now_nanos() / 1_000_000;
        Ok(local
            .into_iter()
            .zip(reports)
            .map(|(mine, report)| {
                if mine.owned {
                    return mine;
                }
                match report.and_then(|r| serde_json::from_str::<SymbolStatus>(&r).ok()) {
                    Some(owner) if now_ms - owner.report_ms <= fresh_ms => owner,
                    _ => mine,
                }
            })
            .collect())
    }
}
