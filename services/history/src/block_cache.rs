//! A small cache of decoded blocks, keyed by the block's identity *and* its
//! stored bytes.
//!
//! Paged reads decode the same block several times (a day of 1m candles is
//! 1,440 candles; a page is at most 1,000, and the next page starts inside the
//! same day). Keying by content means a hit is always the block as stored
//! now: a rewrite changes the bytes, so there is nothing to invalidate, and the
//! cache stays correct even when another process writes the store.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use tickmesh_candle_blocks::{Block, BlockError, decode};

/// Decoded blocks kept by default (a decoded day of 1m candles is ~115 KB).
pub const DEFAULT_CAPACITY: usize = 64;

pub struct BlockCache {
    capacity: usize,
    inner: Mutex<Entries>,
}

#[derive(Default)]
struct Entries {
    map: HashMap<CacheKey, (u64, Arc<Block>)>,
    clock: u64,
}

#[derive(Clone, PartialEq, Eq, Hash)]
struct CacheKey {
    block: Vec<u8>,
    bytes: Vec<u8>,
}

impl BlockCache {
    pub fn new(capacity: usize) -> Self {
        Self {
            capacity,
            inner: Mutex::new(Entries::default()),
        }
    }

    /// The decoded form of `bytes`, the stored value of the block `block_key`,
    /// from the cache when the same bytes were decoded recently.
    pub fn decode(&self, block_key: &[u8], bytes: &[u8]) -> Result<Arc<Block>, BlockError> {
        if self.capacity == 0 {
            return decode(bytes).map(Arc::new);
        }
        let key = CacheKey {
            block: block_key.to_vec(),
            bytes: bytes.to_vec(),
        };
        {
            let mut entries = self.inner.lock().expect("block cache lock");
            entries.clock += 1;
            let now = entries.clock;
            if let Some((used, block)) = entries.map.get_mut(&key) {
                *used = now;
                return Ok(block.clone());
            }
        }
        let block = Arc::new(decode(bytes)?);
        let mut entries = self.inner.lock().expect("block cache lock");
        // Another version of the same block is stale now.
        entries.map.retain(|k, _| k.block != key.block);
        if entries.map.len() >= self.capacity
            && let Some(oldest) = entries
                .map
                .iter()
                .min_by_key(|(_, (used, _))| *used)
                .map(|(k, _)| k.clone())
        {
            entries.map.remove(&oldest);
        }
        let now = entries.clock;
        entries.map.insert(key, (now, block.clone()));
        Ok(block)
    }

    /// Blocks held now.
    pub fn len(&self) -> usize {
        self.inner.lock().expect("block cache lock").map.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tickmesh_candle_blocks::{BlockCandle, encode};

    fn block(close: i64) -> Vec<u8> {
        encode(&Block {
            price_scale: 2,
            quantity_scale: 5,
            candles: vec![BlockCandle {
                open_ns: 0,
                close_ns: 60_000_000_000,
                open: 100,
                high: 120,
                low: 90,
                close,
                volume: 5,
                quote_volume: 500,
                trade_count: 2,
                revision: 1,
            }],
        })
        .expect("encode")
    }

    #[test]
    fn a_rewritten_block_is_decoded_afresh() {
        let cache = BlockCache::new(4);
        let first = cache.decode(b"a", &block(110)).expect("decode");
        let again = cache.decode(b"a", &block(110)).expect("decode");
        assert!(
            Arc::ptr_eq(&first, &again),
            "same bytes: served from the cache"
        );
        let rewritten = cache.decode(b"a", &block(111)).expect("decode");
        assert_eq!(rewritten.candles[0].close, 111, "new bytes: the new block");
        assert_eq!(cache.len(), 1, "the stale version was dropped");
    }

    #[test]
    fn least_recently_used_blocks_are_evicted() {
        let cache = BlockCache::new(2);
        let a = cache.decode(b"a", &block(1)).expect("decode");
        cache.decode(b"b", &block(2)).expect("decode");
        cache.decode(b"a", &block(1)).expect("decode");
        cache.decode(b"c", &block(3)).expect("decode");
        assert_eq!(cache.len(), 2);
        let a_again = cache.decode(b"a", &block(1)).expect("decode");
        assert!(Arc::ptr_eq(&a, &a_again), "a was used last, b was evicted");
    }

    #[test]
    fn corrupt_bytes_are_an_error_not_a_cached_block() {
        let cache = BlockCache::new(2);
        let mut bytes = block(5);
        bytes[3] ^= 0xff;
        assert!(cache.decode(b"a", &bytes).is_err());
        assert!(cache.is_empty());
    }
}
