//! CouponIssueService: first-come, limited-stock coupons, exactly once per
//! user, idempotent by request id, durable.
//!
//! - [`campaign`]: campaigns as the domain sees them, defaults and rules;
//!   [`campaigns`]: the per-instance cache over the durable store.
//! - [`keys`]: the Redis key layout (hash-tagged per campaign).
//! - [`issue_script`]: **the** issue script — every check, then every write,
//!   in one atomic step — and its outcomes; [`group_commit`]: concurrent
//!   calls sharing script calls.
//! - [`store`]: the durable store of campaigns and issuances
//!   ([`IssuanceStore`]); [`embedded_store`]: its redb implementation;
//!   [`conformance`]: the suite every implementation passes.
//! - [`persist`]: the worker that copies the issuance log to the store.
//! - [`rebuild`]: restoring a campaign's Redis state from the store.
//! - [`sold_out_report`]: the "fastest sold out" event sent to RankingService.
//! - [`watch`]: WatchCampaign's coalesced stream; [`clock`]: where "now"
//!   comes from (a manual clock in tests).
//! - [`service`]: the domain facade; [`grpc`]: the thin tonic adapter.

pub mod campaign;
pub mod campaigns;
pub mod clock;
pub mod conformance;
pub mod embedded_store;
pub mod group_commit;
pub mod grpc;
pub mod issue_script;
pub mod keys;
pub mod persist;
pub mod rebuild;
pub mod service;
pub mod sold_out_report;
pub mod store;
pub mod watch;

pub use service::Coupons;
pub use store::IssuanceStore;

/// Full gRPC name of the service.
pub const SERVICE_NAME: &str = "tickmesh.coupon.v1.CouponIssueService";
