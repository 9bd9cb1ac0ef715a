//! CandleQueryService: trades → OHLCV candles at every interval, exactly.
//!
//! - [`candle`]: one candle as scaled integers and how trades fold into it.
//! - [`book`]: one symbol's aggregation state, late trades, closing rules.
//! - [`revision_floor`]: revisions a book read back after Redis lost writes stays above.
//! - [`aggregator`]: leases, the trade stream from MarketFeed, batched writes.
//! - [`lease`]: per-symbol leases with fencing, fair shares between instances.
//! - [`store`] / [`keys`]: candles in Redis and the atomic write script.
//! - [`query`]: GetCandles (paging, order, rollups, fill).
//! - [`subscribe`]: SubscribeCandles (snapshot, updates, resume).
//! - [`indicators`]: GetIndicators and the indicator values of SubscribeCandles.
//! - [`directory`]: instrument definitions from MarketFeed.
//! - [`verify`] / [`repair`]: candles recomputed from the tick log, compared and fixed;
//!   [`verify_task`]: the periodic self-check beside the flusher.
//! - [`service`] and [`grpc`]: the domain facade and the tonic adapter.
//!
//! The boundary math (which candle a trade belongs to) lives in
//! `tickmesh_calendar`.

pub mod aggregator;
pub mod book;
pub mod candle;
pub mod directory;
pub mod flusher;
pub mod grpc;
pub mod indicators;
pub mod keys;
pub mod lease;
pub mod query;
pub mod repair;
pub mod revision_floor;
pub mod service;
pub mod store;
pub mod subscribe;
pub mod subscribe_route;
pub mod verify;
pub mod verify_task;

pub use service::CandleService;

/// Full gRPC name of the service.
pub const SERVICE_NAME: &str = "tickmesh.candles.v1.CandleQueryService";
