//! One tickmesh process assembled from config ([`mesh`]: the services, feeds,
//! pollers and the gRPC server), its metrics endpoint ([`metrics`]),
//! development mode ([`dev`], [`demo_feed`]) and trade-file replay
//! ([`replay`]). The `tickmesh` binary is the command line
//! over this crate and `tickmesh-bench`.

pub mod demo_feed;
pub mod dev;
pub mod mesh;
pub mod metrics;
pub mod replay;
