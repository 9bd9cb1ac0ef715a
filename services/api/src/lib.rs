//! The tickmesh gRPC API, generated from `proto/tickmesh/<service>/v1/*.proto`.
//!
//! Modules mirror the protobuf packages (`tickmesh.marketfeed.v1` is
//! [`tickmesh::marketfeed::v1`]); short aliases sit at the crate root.

#![allow(clippy::large_enum_variant, clippy::doc_lazy_continuation)]

pub mod tickmesh {
    pub mod candles {
        pub mod v1 {
            tonic::include_proto!("tickmesh.candles.v1");
        }
    }
    pub mod marketfeed {
        pub mod v1 {
            tonic::include_proto!("tickmesh.marketfeed.v1");
        }
    }
    pub mod ranking {
        pub mod v1 {
            tonic::include_proto!("tickmesh.ranking.v1");
        }
    }
    pub mod queue {
        pub mod v1 {
            tonic::include_proto!("tickmesh.queue.v1");
        }
    }
    pub mod coupon {
        pub mod v1 {
            tonic::include_proto!("tickmesh.coupon.v1");
        }
    }
    pub mod feeds {
        pub mod v1 {
            tonic::include_proto!("tickmesh.feeds.v1");
        }
    }
}

pub use tickmesh::candles::v1 as candles;
pub use tickmesh::coupon::v1 as coupon;
pub use tickmesh::feeds::v1 as feeds;
pub use tickmesh::marketfeed::v1 as marketfeed;
pub use tickmesh::queue::v1 as queue;
pub use tickmesh::ranking::v1 as ranking;

/// Encoded `FileDescriptorSet` of every tickmesh proto (with imports), for
/// server reflection.
pub const FILE_DESCRIPTOR_SET: &[u8] =
    include_bytes!(concat!(env!("OUT_DIR"), "/tickmesh_descriptor.bin"));

/// Encoded `FileDescriptorSet` of `google/rpc/error_details.proto`, so clients
/// using reflection (grpcurl) can decode the details of error statuses.
pub const GOOGLE_RPC_DESCRIPTOR_SET: &[u8] =
    include_bytes!(concat!(env!("OUT_DIR"), "/google_rpc_descriptor.bin"));

/// Fully qualified names of every tickmesh gRPC service, as reflection lists them.
pub const SERVICE_NAMES: &[&str] = &[
    "tickmesh.marketfeed.v1.MarketFeedService",
    "tickmesh.candles.v1.CandleQueryService",
    "tickmesh.ranking.v1.RankingService",
    "tickmesh.queue.v1.QueueService",
    "tickmesh.coupon.v1.CouponIssueService",
];
