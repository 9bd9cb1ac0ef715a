//! Per-call gRPC metrics, following the OpenTelemetry RPC semantic
//! conventions (`rpc.system`, `rpc.service`, `rpc.method`,
//! `rpc.grpc.status_code`, as Prometheus label names with underscores).
//!
//! A call's status is known only at its end: in the headers of a
//! trailers-only answer (errors before any message), else in the trailers
//! after the last message. So the response body is wrapped, and the call is
//! recorded once, when its status has been seen and the body ends or is
//! dropped; a call whose client went away first is recorded as CANCELLED.
//!
//! Methods are looked up in the services' file descriptor sets: a path that
//! names no known method is counted as `unknown`, so a client calling made-up
//! paths cannot grow the label set.

use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::OnceLock;
use std::task::{Context, Poll};
use std::time::Instant;

use http_body::{Body, Frame, SizeHint};
use prost::Message;

use super::catalogue::{RPC_ACTIVE_STREAMS, RPC_DURATION, RPC_REQUESTS, RPC_STREAM_DURATION};

/// Labels of one method.
#[derive(Debug)]
struct Method {
    service: &'static str,
    method: &'static str,
    /// Client, server or bidirectional stream: its lifetime goes to
    /// [`RPC_STREAM_DURATION`] and it counts in [`RPC_ACTIVE_STREAMS`].
    streaming: bool,
}

static UNKNOWN: Method = Method {
    service: "unknown",
    method: "unknown",
    streaming: false,
};

/// `/package.Service/Method` → its labels, from every descriptor set a
/// tickmesh server carries.
fn methods() -> &'static HashMap<String, Method> {
    static METHODS: OnceLock<HashMap<String, Method>> = OnceLock::new();
    METHODS.get_or_init(|| {
        let sets: [&[u8]; 4] = [
            tickmesh_api::FILE_DESCRIPTOR_SET,
            tonic_health::pb::FILE_DESCRIPTOR_SET,
            tonic_reflection::pb::v1::FILE_DESCRIPTOR_SET,
            tonic_reflection::pb::v1alpha::FILE_DESCRIPTOR_SET,
        ];
        let mut methods = HashMap::new();
        for set in sets {
            let Ok(set) = prost_types::FileDescriptorSet::decode(set) else {
                continue;
            };
            for file in set.file {
                let package = file.package.unwrap_or_default();
                for service in file.service {
                    let name = match (package.as_str(), service.name.as_deref()) {
                        ("", Some(s)) => s.to_string(),
                        (p, Some(s)) => format!("{p}.{s}"),
                        (_, None) => continue,
                    };
                    // Leaked once: a fixed set of names, used as labels
                    // without an allocation per call.
                    let service_name: &'static str = Box::leak(name.clone().into_boxed_str());
                    for m in service.method {
                        let Some(method) = m.name else { continue };
                        let streaming = m.client_streaming.unwrap_or(false)
                            || m.server_streaming.unwrap_or(false);
                        methods.insert(
                            format!("/{name}/{method}"),
                            Method {
                                service: service_name,
                                method: Box::leak(method.into_boxed_str()),
                                streaming,
                            },
                        );
                    }
                }
            }
        }
        methods
    })
}

/// gRPC status codes as label values (0 to 16).
const CODES: [&str; 17] = [
    "0", "1", "2", "3", "4", "5", "6", "7", "8", "9", "10", "11", "12", "13", "14", "15", "16",
];
const CANCELLED: usize = 1;
const UNKNOWN_CODE: usize = 2;

fn status_of(headers: &http::HeaderMap) -> Option<usize> {
    let code = headers
        .get("grpc-status")?
        .to_str()
        .ok()?
        .parse::<usize>()
        .ok()?;
    Some(if code < CODES.len() {
        code
    } else {
        UNKNOWN_CODE
    })
}

/// One call in flight: recorded exactly once, when dropped.
struct Call {
    method: &'static Method,
    started: Instant,
    code: Option<usize>,
}

impl Call {
    fn start(path: &str) -> Call {
        let method = methods().get(path).unwrap_or(&UNKNOWN);
        if method.streaming {
            metrics::gauge!(RPC_ACTIVE_STREAMS, "rpc_system" => "grpc", "rpc_service" => method.service, "rpc_method" => method.method).increment(1.0);
        }
        Call {
            method,
            started: Instant::now(),
            code: None,
        }
    }
}

impl Drop for Call {
    fn drop(&mut self) {
        let m = self.method;
        let code = CODES[self.code.unwrap_or(CANCELLED)];
        let labels = [
            ("rpc_system", "grpc"),
            ("rpc_service", m.service),
            ("rpc_method", m.method),
            ("rpc_grpc_status_code", code),
        ];
        let seconds = self.started.elapsed().as_secs_f64();
        metrics::counter!(RPC_REQUESTS, &labels).increment(1);
        if m.streaming {
            metrics::histogram!(RPC_STREAM_DURATION, &labels).record(seconds);
            metrics::gauge!(RPC_ACTIVE_STREAMS, "rpc_system" => "grpc", "rpc_service" => m.service, "rpc_method" => m.method).decrement(1.0);
        } else {
            metrics::histogram!(RPC_DURATION, &labels).record(seconds);
        }
    }
}

/// Tower layer: RPC metrics for every call (beside [`crate::telemetry::GrpcTraceLayer`]).
/// Without the recorder ([`super::install`] never ran) it only passes calls on.
#[derive(Clone, Copy, Debug, Default)]
pub struct GrpcMetricsLayer;

impl<S> tower::Layer<S> for GrpcMetricsLayer {
    type Service = GrpcMetrics<S>;
    fn layer(&self, inner: S) -> Self::Service {
        GrpcMetrics { inner }
    }
}

#[derive(Clone, Debug)]
pub struct GrpcMetrics<S> {
    inner: S,
}

impl<S, B, ResBody> tower::Service<http::Request<B>> for GrpcMetrics<S>
where
    S: tower::Service<http::Request<B>, Response = http::Response<ResBody>>,
    S::Future: Send + 'static,
    ResBody: Body<Data = axum::body::Bytes> + Send + Unpin + 'static,
    ResBody::Error: Into<tonic::codegen::StdError>,
{
    // tonic's body type, as the gRPC-Web layer around this one expects.
    type Response = http::Response<tonic::body::Body>;
    type Error = S::Error;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, S::Error>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: http::Request<B>) -> Self::Future {
        let call = super::is_installed().then(|| Call::start(request.uri().path()));
        let future = self.inner.call(request);
        Box::pin(async move {
            // Dropped with the future when the client leaves before the
            // answer: recorded as CANCELLED.
            let call = call;
            let response = future.await?;
            let Some(mut call) = call else {
                return Ok(response.map(tonic::body::Body::new));
            };
            call.code = status_of(response.headers());
            Ok(response.map(|inner| {
                tonic::body::Body::new(MeteredBody {
                    inner,
                    call: Some(call),
                })
            }))
        })
    }
}

/// A response body that records its call when it ends or is dropped.
struct MeteredBody<B> {
    inner: B,
    call: Option<Call>,
}

impl<B> Body for MeteredBody<B>
where
    B: Body + Unpin,
{
    type Data = B::Data;
    type Error = B::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Self::Data>, Self::Error>>> {
        let polled = Pin::new(&mut self.inner).poll_frame(cx);
        if self.call.is_none() {
            return polled;
        }
        match &polled {
            Poll::Ready(Some(Ok(frame))) => {
                if let Some(code) = frame.trailers_ref().and_then(status_of)
                    && let Some(call) = &mut self.call
                {
                    call.code = Some(code);
                }
            }
            Poll::Ready(Some(Err(_))) => {
                if let Some(call) = &mut self.call {
                    call.code.get_or_insert(UNKNOWN_CODE);
                }
            }
            Poll::Ready(None) => {
                if let Some(mut call) = self.call.take() {
                    // A body that ends without any status is no valid answer.
                    call.code.get_or_insert(UNKNOWN_CODE);
                }
            }
            Poll::Pending => {}
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn methods_come_from_the_descriptor_sets() {
        let publish = methods()
            .get("/tickmesh.marketfeed.v1.MarketFeedService/Publish")
            .expect("Publish is known");
        assert_eq!(publish.service, "tickmesh.marketfeed.v1.MarketFeedService");
        assert!(publish.streaming);
        let check = methods()
            .get("/grpc.health.v1.Health/Check")
            .expect("health is known");
        assert!(!check.streaming);
        assert!(!methods().contains_key("/made.Up/Path"));
    }

    #[test]
    fn status_codes_outside_the_range_are_unknown() {
        let mut headers = http::HeaderMap::new();
        assert_eq!(status_of(&headers), None);
        headers.insert("grpc-status", "5".parse().unwrap());
        assert_eq!(status_of(&headers), Some(5));
        headers.insert("grpc-status", "99".parse().unwrap());
        assert_eq!(status_of(&headers), Some(UNKNOWN_CODE));
    }
}
