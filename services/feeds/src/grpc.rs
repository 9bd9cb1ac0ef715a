//! The thin tonic adapter of FeedService.

use tickmesh_api::feeds::feed_service_server::{FeedService, FeedServiceServer};
use tickmesh_api::feeds::{
    ConnectionState as PbState, FeedSymbolStatus, GetFeedStatusRequest, GetFeedStatusResponse,
};
use tickmesh_runtime::proto_time::nanos_to_timestamp;
use tickmesh_runtime::status::IntoStatus;
use tonic::{Request, Response, Status};

use crate::Feeds;
use crate::status::{ConnectionState, SymbolStatus};

/// Full gRPC name of the service.
pub const SERVICE_NAME: &str = "tickmesh.feeds.v1.FeedService";

pub struct FeedGrpc {
    feeds: Feeds,
}

pub fn server(feeds: Feeds, max_message_bytes: usize) -> FeedServiceServer<FeedGrpc> {
    FeedServiceServer::new(FeedGrpc { feeds })
        .max_decoding_message_size(max_message_bytes)
        .max_encoding_message_size(max_message_bytes)
}

fn to_pb(s: SymbolStatus) -> FeedSymbolStatus {
    let state = match s.state {
        ConnectionState::NotOwned => PbState::NotOwned,
        ConnectionState::Reconnecting => PbState::Reconnecting,
        ConnectionState::Backfilling => PbState::Backfilling,
        ConnectionState::Live => PbState::Live,
    };
    FeedSymbolStatus {
        feed: s.feed,
        venue: s.venue,
        venue_symbol: s.venue_symbol,
        symbol: s.symbol,
        owner: s.owner,
        state: state as i32,
        last_trade_id: s.last_trade_id,
        last_trade_time: (s.last_trade_time_ms > 0)
            .then(|| nanos_to_timestamp(s.last_trade_time_ms.saturating_mul(1_000_000))),
        received: s.received,
        reconnects: s.reconnects,
        backfilled: s.backfilled,
        unrecoverable: s.unrecoverable,
        incomplete_backfills: s.incomplete_backfills,
        rejected: s.rejected,
        last_error: s.last_error,
        report_time: (s.report_ms > 0)
            .then(|| nanos_to_timestamp(s.report_ms.saturating_mul(1_000_000))),
    }
}

#[tonic::async_trait]
impl FeedService for FeedGrpc {
    async fn get_feed_status(
        &self,
        request: Request<GetFeedStatusRequest>,
    ) -> Result<Response<GetFeedStatusResponse>, Status> {
        let only = request.into_inner().feed;
        let symbols = self.feeds.mesh_status(&only).await.into_status()?;
        Ok(Response::new(GetFeedStatusResponse {
            symbols: symbols.into_iter().map(to_pb).collect(),
        }))
    }
}
