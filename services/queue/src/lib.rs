//! QueueService: a virtual waiting room on Redis.
//!
//! - [`room`]: rooms as the domain sees them, defaults and rules.
//! - [`keys`]: the Redis key layout (hash-tagged per room).
//! - [`admission`]: **the admission logic** — one atomic script that expires
//!   sessions and abandoned places, opens a random pre-queue, and admits from
//!   the head of the line at the room's rate while active < capacity;
//!   [`scheduler`]: the task every instance runs to call it.
//! - [`places`]: Enter, positions, heartbeats and Leave.
//! - [`token`]: signed waiting and admission tokens, key rotation.
//! - [`watch`]: WatchPosition's pushed positions and admission.
//! - [`stock`]: remaining stock of a linked coupon campaign.
//! - [`clock`]: where "now" comes from (a manual clock in tests).
//! - [`metrics`]: the rooms' sizes for the metrics endpoint.
//! - [`service`]: the domain facade; [`grpc`]: the thin tonic adapter.

pub mod admission;
pub mod clock;
pub mod grpc;
pub mod keys;
pub mod metrics;
pub mod places;
pub mod room;
pub mod scheduler;
pub mod service;
pub mod stock;
pub mod token;
pub mod watch;

pub use service::Queue;

/// Full gRPC name of the service.
pub const SERVICE_NAME: &str = "tickmesh.queue.v1.QueueService";
