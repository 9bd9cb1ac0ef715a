//! Long-term candle history behind one trait, [`CandleStore`], with an
//! embedded implementation (default) and a ScyllaDB one
//! (`tickmesh-scylla`). Both keep candles as compressed column blocks
//! (`tickmesh-candle-blocks`), one block per symbol × interval × period
//! ([`block_id`]), and pass the same [`conformance`] suite.

pub mod block_cache;
pub mod conformance;
pub mod embedded;
pub mod store;

pub use embedded::EmbeddedStore;
pub use store::{
    BlockKey, CandleStore, StoreError, StoredCandle, block_id, block_span, group_by_block,
};
