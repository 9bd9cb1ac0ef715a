//! The route of CandleQueryService on the server: SubscribeCandles with a
//! codec that writes each message's indicator values as the engine encoded
//! them (once per candle state, shared by every subscriber), instead of
//! building and encoding a protobuf message per name and value for each
//! subscriber; the generated server answers the other methods. Clients see
//! the same bytes either way (tested).

use std::convert::Infallible;
use std::sync::Arc;

use tickmesh_api::candles::SubscribeCandlesRequest;
use tickmesh_api::candles::candle_query_service_server::{CandleQueryServiceServer, SERVICE_NAME};
use tonic::codec::{Codec, EncodeBuf, Encoder};
use tonic::codegen::{Body, BoxFuture, Context, Poll, Service, StdError, http};
use tonic::server::{NamedService, ServerStreamingService};
use tonic::{Request, Response, Status};
use tonic_prost::ProstDecoder;

use crate::grpc::{CandleGrpc, Outgoing, OutgoingStream};

const SUBSCRIBE_PATH: &str = "/tickmesh.candles.v1.CandleQueryService/SubscribeCandles";

/// CandleQueryService as the server routes it.
#[derive(Clone)]
pub struct CandleRoutes {
    grpc: Arc<CandleGrpc>,
    generated: CandleQueryServiceServer<CandleGrpc>,
    max_message_bytes: usize,
}

impl CandleRoutes {
    pub fn new(grpc: Arc<CandleGrpc>, max_message_bytes: usize) -> CandleRoutes {
        CandleRoutes {
            generated: CandleQueryServiceServer::from_arc(grpc.clone())
                .max_decoding_message_size(max_message_bytes)
                .max_encoding_message_size(max_message_bytes),
            grpc,
            max_message_bytes,
        }
    }
}

impl NamedService for CandleRoutes {
    const NAME: &'static str = SERVICE_NAME;
}

impl<B> Service<http::Request<B>> for CandleRoutes
where
    B: Body + Send + 'static,
    B::Error: Into<StdError> + Send + 'static,
{
    type Response = http::Response<tonic::body::Body>;
    type Error = Infallible;
    type Future = BoxFuture<Self::Response, Self::Error>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, request: http::Request<B>) -> Self::Future {
        if request.uri().path() != SUBSCRIBE_PATH {
            return self.generated.call(request);
        }
        let method = Subscribe(self.grpc.clone());
        let max = self.max_message_bytes;
        Box::pin(async move {
            let mut grpc = tonic::server::Grpc::new(SubscribeCodec)
                .apply_max_message_size_config(Some(max), Some(max));
            Ok(grpc.server_streaming(method, request).await)
        })
    }
}

struct Subscribe(Arc<CandleGrpc>);

impl ServerStreamingService<SubscribeCandlesRequest> for Subscribe {
    type Response = Outgoing;
    type ResponseStream = OutgoingStream;
    type Future = BoxFuture<Response<OutgoingStream>, Status>;

    fn call(&mut self, request: Request<SubscribeCandlesRequest>) -> Self::Future {
        let grpc = self.0.clone();
        Box::pin(async move { grpc.subscribe_outgoing(request).await })
    }
}

/// Requests decoded by prost, messages written by [`Outgoing::encode`].
#[derive(Default)]
struct SubscribeCodec;

impl Codec for SubscribeCodec {
    type Encode = Outgoing;
    type Decode = SubscribeCandlesRequest;
    type Encoder = OutgoingEncoder;
    type Decoder = ProstDecoder<SubscribeCandlesRequest>;

    fn encoder(&mut self) -> OutgoingEncoder {
        OutgoingEncoder
    }

    fn decoder(&mut self) -> Self::Decoder {
        ProstDecoder::default()
    }
}

struct OutgoingEncoder;

impl Encoder for OutgoingEncoder {
    type Item = Outgoing;
    type Error = Status;

    fn encode(&mut self, item: Outgoing, dst: &mut EncodeBuf<'_>) -> Result<(), Status> {
        item.encode(dst);
        Ok(())
    }
}
