//! Redis key layout of candles. One symbol's keys share the hash tag `{SYM}`
//! (the same tag as its MarketFeed keys), so the aggregator's write script can
//! touch them all in one slot.
//!
//! | key | type | holds |
//! |---|---|---|
//! | `<p>:{SYM}:c:<interval>` | sorted set | candles (score: open time in s; member: encoded candle) |
//! | `<p>:{SYM}:cseq` | string | last trade sequence applied to the candles |
//! | `<p>:{SYM}:cstat` | hash | newest event time, late/missed counters |
//! | `<p>:{SYM}:cupd` | stream | candle updates log (SubscribeCandles) |
//! | `<p>:{SYM}:cflush` | sorted set | closed candles not yet in the history store (`<interval index>\|<open s>`, score: revision) |
//! | `<p>:{SYM}:lease` | string | the owning aggregator (`<instance>#<epoch>`), with a TTL |
//! | `<p>:{SYM}:lease-epoch` | string | fencing counter, bumped at each acquisition |
//! | `<p>:{SYM}:ind:<interval>:<set>:ck` | sorted set | indicator state checkpoints (score: open time in s of the last candle; member: `<epoch>\|<state>`) |
//! | `<p>:{SYM}:ind:<interval>:<set>:last` | hash | latest indicator values of a set (candle open, revision, values) |
//! | `<p>:aggregators` | sorted set | live aggregator instances (score: heartbeat ms) |
//! | `<p>:{SYM}:seq`, `<p>:{SYM}:trades` | string, stream | MarketFeed's last sequence and tick log (read for status and verification) |

use tickmesh_calendar::Interval;

#[derive(Clone, Debug)]
pub struct CandleKeys {
    prefix: String,
}

impl CandleKeys {
    pub fn new(prefix: &str) -> Self {
        Self {
            prefix: prefix.to_string(),
        }
    }
    pub fn candles(&self, symbol: &str, interval: Interval) -> String {
        format!("{}:{{{symbol}}}:c:{interval}", self.prefix)
    }
    pub fn applied(&self, symbol: &str) -> String {
        format!("{}:{{{symbol}}}:cseq", self.prefix)
    }
    pub fn status(&self, symbol: &str) -> String {
        format!("{}:{{{symbol}}}:cstat", self.prefix)
    }
    pub fn updates(&self, symbol: &str) -> String {
        format!("{}:{{{symbol}}}:cupd", self.prefix)
    }
    pub fn flush(&self, symbol: &str) -> String {
        format!("{}:{{{symbol}}}:cflush", self.prefix)
    }
    pub fn lease(&self, symbol: &str) -> String {
        format!("{}:{{{symbol}}}:lease", self.prefix)
    }
    pub fn lease_epoch(&self, symbol: &str) -> String {
        format!("{}:{{{symbol}}}:lease-epoch", self.prefix)
    }
    /// MarketFeed's last sequence of the symbol (the end of its tick log).
    pub fn tick_sequence(&self, symbol: &str) -> String {
        format!("{}:{{{symbol}}}:seq", self.prefix)
    }
    /// MarketFeed's tick log of the symbol.
    pub fn tick_log(&self, symbol: &str) -> String {
        format!("{}:{{{symbol}}}:trades", self.prefix)
    }
    /// Checkpoints of an indicator set's state (`set_id`: hex of its canonical text).
    pub fn indicator_checkpoints(&self, symbol: &str, interval: Interval, set_id: &str) -> String {
        format!("{}:{{{symbol}}}:ind:{interval}:{set_id}:ck", self.prefix)
    }
    /// The latest values of an indicator set.
    pub fn indicator_latest(&self, symbol: &str, interval: Interval, set_id: &str) -> String {
        format!("{}:{{{symbol}}}:ind:{interval}:{set_id}:last", self.prefix)
    }
    pub fn members(&self) -> String {
        format!("{}:aggregators", self.prefix)
    }
    pub fn symbol_of_updates<'a>(&self, key: &'a str) -> Option<&'a str> {
        key.strip_prefix(self.prefix.as_str())?
            .strip_prefix(":{")?
            .strip_suffix("}:cupd")
    }
}
