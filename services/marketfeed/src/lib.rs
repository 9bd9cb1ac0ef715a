//! MarketFeedService: where every trade enters the mesh.
//!
//! - [`model`]: instruments and trades as the domain sees them (scaled
//!   integers, nanosecond times), and their validation rules.
//! - [`keys`]: the Redis key layout (hash-tagged per symbol).
//! - [`instruments`]: instrument definitions in Redis, cached per instance.
//! - [`ingest`]: dedupe, sequencing, tick log and quote in one script per symbol.
//! - [`durable`]: acknowledging only what Redis made durable (`durable_acks`).
//! - [`tick_log`]: reading the per-symbol Redis Stream.
//! - [`live`]: one tailer per instance fanning new trades out to local streams.
//! - [`subscription`]: a StreamTrades client's cursor, catch-up and gap filling.
//! - [`quotes`]: latest prices for thousands of symbols in one round trip.
//! - [`polled_quotes`]: writing quotes polled from request/response upstreams.
//! - [`service`]: the domain facade; [`grpc`]: the thin tonic adapter.

pub mod durable;
pub mod grpc;
pub mod ingest;
pub mod instruments;
pub mod keys;
pub mod live;
pub mod model;
pub mod polled_quotes;
pub mod quote_source;
pub mod quotes;
pub mod service;
pub mod subscription;
pub mod tick_log;

pub use service::MarketFeed;

/// Full gRPC name of the service.
pub const SERVICE_NAME: &str = "tickmesh.marketfeed.v1.MarketFeedService";
