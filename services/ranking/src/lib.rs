//! RankingService: real-time leaderboards on Redis sorted sets.
//!
//! - [`board`]: boards as the domain sees them, defaults and rules;
//!   [`boards`]: their storage in Redis, cached per instance.
//! - [`score`]: exact scores and the sortable entries that order a window
//!   (ties, maximum magnitude); [`lua`]: the same encoding for the scripts.
//! - [`window`]: window names, periods and boundaries in the board's zone;
//!   [`clock`]: where "now" comes from (a manual clock in tests).
//! - [`keys`]: the Redis key layout (hash-tagged per board).
//! - [`record`]: idempotent events applied to every window in one script;
//!   [`group_commit`]: concurrent calls sharing script calls.
//! - [`read`]: pages, neighbourhoods and ranks; [`rolling`]: the rolling 24 h
//!   window and its hourly roll-off.
//! - [`snapshot`]: the durable store of closed windows; [`snapshotter`]: the
//!   task that fills it; [`snapshot_conformance`]: the suite every store
//!   passes.
//! - [`watch`]: WatchTop's coalesced top-N stream.
//! - [`metrics`]: events recorded, for the metrics endpoint.
//! - [`service`]: the domain facade; [`grpc`]: the thin tonic adapter.

pub mod board;
pub mod boards;
pub mod clock;
pub mod group_commit;
pub mod grpc;
pub mod keys;
pub mod lua;
pub mod metrics;
pub mod read;
pub mod record;
pub mod rolling;
pub mod score;
pub mod service;
pub mod snapshot;
pub mod snapshot_conformance;
pub mod snapshotter;
pub mod watch;
pub mod window;

pub use service::Ranking;

/// Full gRPC name of the service.
pub const SERVICE_NAME: &str = "tickmesh.ranking.v1.RankingService";
