//! Live trades: the tick logs as a [`StreamHub`] topic per symbol.

use std::sync::Arc;

use redis::Value;
use tickmesh_core::Error;
use tickmesh_runtime::stream_hub::{self, HubCodec, StreamHub};

use crate::keys::Keys;
use crate::model::TradeRecord;
use crate::tick_log;

pub struct TickLogCodec {
    pub keys: Keys,
}

impl HubCodec for TickLogCodec {
    type Item = TradeRecord;

    fn key(&self, symbol: &str) -> String {
        self.keys.tick_log(symbol)
    }

    fn topic<'a>(&self, key: &'a str) -> Option<&'a str> {
        self.keys.symbol_of_tick_log(key)
    }

    fn decode(&self, symbol: &Arc<str>, entries: Value) -> Result<Vec<TradeRecord>, Error> {
        tick_log::parse_entries(symbol, entries)
    }

    fn entry_id(&self, trade: &TradeRecord) -> String {
        format!("0-{}", trade.sequence)
    }
}

pub type LiveHub = StreamHub<TickLogCodec>;
pub type LiveSubscription = stream_hub::HubSubscription<TickLogCodec>;
pub type Interest = stream_hub::Interest<TickLogCodec>;
pub type Batch = stream_hub::Batch<TradeRecord>;
