//! Redis key layout. Every key of one symbol carries the symbol as its hash tag,
//! so on Redis Cluster they share a slot and one script can touch them all.
//!
//! | key | type | holds |
//! |---|---|---|
//! | `<p>:instruments` | hash | symbol → instrument JSON |
//! | `<p>:{SYM}:seq` | string | last sequence given to the symbol |
//! | `<p>:{SYM}:ids` | sorted set | recent trade ids, scored by sequence (dedupe window) |
//! | `<p>:{SYM}:trades` | stream | the tick log; entry id `0-<sequence>` |
//! | `<p>:{SYM}:quote` | hash | latest trade by event time |

#[derive(Clone, Debug)]
pub struct Keys {
    prefix: String,
}

impl Keys {
    pub fn new(prefix: &str) -> Self {
        Self {
            prefix: prefix.to_string(),
        }
    }

    pub fn instruments(&self) -> String {
        format!("{}:instruments", self.prefix)
    }

    pub fn sequence(&self, symbol: &str) -> String {
        format!("{}:{{{symbol}}}:seq", self.prefix)
    }

    pub fn trade_ids(&self, symbol: &str) -> String {
        format!("{}:{{{symbol}}}:ids", self.prefix)
    }

    pub fn tick_log(&self, symbol: &str) -> String {
        format!("{}:{{{symbol}}}:trades", self.prefix)
    }

    pub fn quote(&self, symbol: &str) -> String {
        format!("{}:{{{symbol}}}:quote", self.prefix)
    }

    /// The symbol of a tick log key.
    pub fn symbol_of_tick_log<'a>(&self, key: &'a str) -> Option<&'a str> {
        key.strip_prefix(self.prefix.as_str())?
            .strip_prefix(":{")?
            .strip_suffix("}:trades")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_symbols_keys_share_a_hash_tag() {
        let k = Keys::new("tm");
        for key in [
            k.sequence("BTCUSDT"),
            k.trade_ids("BTCUSDT"),
            k.tick_log("BTCUSDT"),
            k.quote("BTCUSDT"),
        ] {
            assert!(key.contains("{BTCUSDT}"), "{key}");
        }
        assert_eq!(
            k.symbol_of_tick_log(&k.tick_log("005930.KS")),
            Some("005930.KS")
        );
        assert_eq!(k.symbol_of_tick_log("other:{X}:trades"), None);
    }
}
