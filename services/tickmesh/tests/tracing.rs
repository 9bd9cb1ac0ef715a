//! End-to-end traces: real `tickmesh serve` processes export spans over OTLP
//! to a receiver in this test (built from the official OpenTelemetry protos),
//! and one published trade gives one connected trace across MarketFeed and
//! the candle aggregator. A collector that is down costs spans, never calls.

mod common;

use std::collections::HashMap;
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::*;
use opentelemetry_proto::tonic::collector::trace::v1::trace_service_server::{
    TraceService, TraceServiceServer,
};
use opentelemetry_proto::tonic::collector::trace::v1::{
    ExportTraceServiceRequest, ExportTraceServiceResponse,
};
use opentelemetry_proto::tonic::common::v1::KeyValue;
use opentelemetry_proto::tonic::common::v1::any_value::Value;
use opentelemetry_proto::tonic::trace::v1::span::SpanKind;
use tickmesh_api::candles::GetCandlesRequest;
use tickmesh_api::candles::candle_query_service_client::CandleQueryServiceClient;
use tickmesh_api::marketfeed::PublishTradesRequest;
use tickmesh_api::marketfeed::market_feed_service_client::MarketFeedServiceClient;
use tokio_stream::wrappers::TcpListenerStream;

const BIN: &str = env!("CARGO_BIN_EXE_tickmesh");

/// A span as received, with its resource's `service.name`.
#[derive(Clone, Debug)]
struct Received {
    service: String,
    name: String,
    kind: i32,
    trace_id: Vec<u8>,
    span_id: Vec<u8>,
    parent_span_id: Vec<u8>,
    attributes: HashMap<String, String>,
}

#[derive(Clone, Default)]
struct Receiver {
    spans: Arc<Mutex<Vec<Received>>>,
}

fn text(attributes: &[KeyValue]) -> HashMap<String, String> {
    attributes
        .iter()
        .filter_map(|kv| {
            let value = match kv.value.as_ref()?.value.as_ref()? {
                Value::StringValue(s) => s.clone(),
                Value::IntValue(i) => i.to_string(),
                Value::BoolValue(b) => b.to_string(),
                Value::DoubleValue(d) => d.to_string(),
                _ => return None,
            };
            Some((kv.key.clone(), value))
        })
        .collect()
}

#[tonic::async_trait]
impl TraceService for Receiver {
    async fn export(
        &self,
        request: tonic::Request<ExportTraceServiceRequest>,
    ) -> Result<tonic::Response<ExportTraceServiceResponse>, tonic::Status> {
        let mut spans = self.spans.lock().unwrap();
        for resource_spans in request.into_inner().resource_spans {
            let service = resource_spans
                .resource
                .map(|r| text(&r.attributes))
                .and_then(|a| a.get("service.name").cloned())
                .unwrap_or_default();
            for scope in resource_spans.scope_spans {
                for span in scope.spans {
                    spans.push(Received {
                        service: service.clone(),
                        name: span.name.clone(),
                        kind: span.kind,
                        trace_id: span.trace_id.clone(),
                        span_id: span.span_id.clone(),
                        parent_span_id: span.parent_span_id.clone(),
                        attributes: text(&span.attributes),
                    });
                }
            }
        }
        Ok(tonic::Response::new(ExportTraceServiceResponse {
            partial_success: None,
        }))
    }
}

async fn start_receiver() -> (Receiver, u16) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let receiver = Receiver::default();
    let service = TraceServiceServer::new(receiver.clone());
    tokio::spawn(async move {
        tonic::transport::Server::builder()
            .add_service(service)
            .serve_with_incoming(TcpListenerStream::new(listener))
            .await
            .unwrap();
    });
    (receiver, port)
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// `tickmesh serve` for some services, exporting spans to `otlp_port`.
async fn serve(
    redis_url: &str,
    services: &str,
    otlp_port: u16,
    extra: &[(&str, &str)],
) -> (tokio::process::Child, String) {
    let addr = format!("127.0.0.1:{}", free_port());
    let mut cmd = tokio::process::Command::new(BIN);
    cmd.args(["serve", "--listen", &addr, "--redis-url", redis_url])
        .env("TICKMESH_SERVICES_ENABLED", services)
        .env(
            "TICKMESH_TELEMETRY_SERVICE_NAME",
            format!("tickmesh-{services}"),
        )
        .env(
            "TICKMESH_TELEMETRY_OTLP_ENDPOINT",
            format!("http://127.0.0.1:{otlp_port}"),
        )
        .env("TICKMESH_TELEMETRY_LOG_LEVEL", "warn")
        .env("TICKMESH_HISTORY_BACKEND", "none")
        .env("TICKMESH_MARKETFEED_AUTO_REGISTER_INSTRUMENTS", "true")
        // Export only when the batch fills or at shutdown: spans that
        // arrive prove the shutdown flush.
        .env("OTEL_BSP_SCHEDULE_DELAY", "600000")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .kill_on_drop(true);
    for (k, v) in extra {
        cmd.env(k, v);
    }
    let child = cmd.spawn().expect("spawn tickmesh serve");
    let endpoint = format!("http://{addr}");
    assert!(
        eventually(Duration::from_secs(20), || {
            let endpoint = endpoint.clone();
            async move { MarketFeedServiceClient::connect(endpoint).await.is_ok() }
        })
        .await,
        "tickmesh serve ({services}) did not come up"
    );
    (child, endpoint)
}

/// SIGTERM, then wait for a clean exit.
async fn terminate(mut child: tokio::process::Child) {
    let pid = child.id().expect("running").to_string();
    let status = std::process::Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .unwrap();
    assert!(status.success());
    let exit = tokio::time::timeout(Duration::from_secs(30), child.wait())
        .await
        .expect("exits within 30 s of SIGTERM")
        .unwrap();
    assert!(exit.success(), "exit status {exit:?}");
}

const TRACE_ID: &str = "4bf92f3577b34da6a3ce929d0e0e4736";
const CLIENT_SPAN_ID: &str = "00f067aa0ba902b7";

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn traced_publish(symbol: &str, id: &str) -> tonic::Request<PublishTradesRequest> {
    let mut request = tonic::Request::new(PublishTradesRequest {
        trades: vec![trade(symbol, id, "100.5", "2")],
        ..Default::default()
    });
    request.metadata_mut().insert(
        "traceparent",
        format!("00-{TRACE_ID}-{CLIENT_SPAN_ID}-01")
            .parse()
            .unwrap(),
    );
    request
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_published_trade_is_one_trace_across_marketfeed_and_the_aggregator() {
    let redis = redis().await;
    let (receiver, otlp_port) = start_receiver().await;
    let (feed, feed_endpoint) = serve(&redis.url(), "marketfeed", otlp_port, &[]).await;
    let (candles, candles_endpoint) = serve(
        &redis.url(),
        "candles",
        otlp_port,
        &[(
            "TICKMESH_CANDLES_MARKETFEED_ENDPOINT",
            feed_endpoint.as_str(),
        )],
    )
    .await;

    let mut client = MarketFeedServiceClient::connect(feed_endpoint.clone())
        .await
        .unwrap();
    let published = client
        .publish_trades(traced_publish("TRACEUSD", "t1"))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(published.accepted, 1);

    // The aggregator (another process) turns the trade into a candle.
    let query = CandleQueryServiceClient::connect(candles_endpoint)
        .await
        .unwrap();
    assert!(
        eventually(Duration::from_secs(20), || {
            let mut query = query.clone();
            async move {
                query
                    .get_candles(GetCandlesRequest {
                        symbol: "TRACEUSD".into(),
                        interval: "1m".into(),
                        ..Default::default()
                    })
                    .await
                    .is_ok_and(|r| !r.into_inner().candles.is_empty())
            }
        })
        .await,
        "the aggregator made no candle"
    );
    drop(query);
    terminate(candles).await;
    terminate(feed).await;

    let spans = receiver.spans.lock().unwrap().clone();
    let in_trace: Vec<&Received> = spans
        .iter()
        .filter(|s| hex(&s.trace_id) == TRACE_ID)
        .collect();
    let publish = in_trace
        .iter()
        .find(|s| s.name == "tickmesh.marketfeed.v1.MarketFeedService/PublishTrades")
        .unwrap_or_else(|| panic!("no PublishTrades span in the client's trace: {spans:#?}"));
    assert_eq!(publish.service, "tickmesh-marketfeed");
    assert_eq!(publish.kind, SpanKind::Server as i32);
    assert_eq!(
        hex(&publish.parent_span_id),
        CLIENT_SPAN_ID,
        "child of the caller's span"
    );
    for (key, value) in [
        ("rpc.system", "grpc"),
        ("rpc.service", "tickmesh.marketfeed.v1.MarketFeedService"),
        ("rpc.method", "PublishTrades"),
        ("rpc.grpc.status_code", "0"),
    ] {
        assert_eq!(
            publish.attributes.get(key).map(String::as_str),
            Some(value),
            "{key}"
        );
    }

    let aggregate = in_trace
        .iter()
        .find(|s| s.name == "aggregate trades")
        .unwrap_or_else(|| panic!("no aggregator span in the trace: {in_trace:#?}"));
    assert_eq!(aggregate.service, "tickmesh-candles");
    assert_eq!(aggregate.kind, SpanKind::Consumer as i32);
    // Its parent chain inside the trace leads to the PublishTrades span.
    let by_id: HashMap<&[u8], &&Received> =
        in_trace.iter().map(|s| (s.span_id.as_slice(), s)).collect();
    let mut at = aggregate.parent_span_id.as_slice();
    let mut hops = 0;
    while at != publish.span_id.as_slice() {
        let parent = by_id.get(at).unwrap_or_else(|| {
            panic!(
                "parent {} of the aggregator span is not in the trace",
                hex(at)
            )
        });
        at = parent.parent_span_id.as_slice();
        hops += 1;
        assert!(hops < 10, "no path to the PublishTrades span");
    }
    assert!(
        spans.iter().all(|s| !s.name.starts_with("grpc.health")),
        "health checks are not traced"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_collector_outage_loses_spans_never_calls() {
    let redis = redis().await;
    // Nothing listens here: every export fails.
    let dead_port = free_port();
    let (feed, endpoint) = serve(
        &redis.url(),
        "marketfeed",
        dead_port,
        // Export often, so export attempts overlap the calls below.
        &[("OTEL_BSP_SCHEDULE_DELAY", "50")],
    )
    .await;
    let mut client = MarketFeedServiceClient::connect(endpoint).await.unwrap();
    let mut slowest = Duration::ZERO;
    for i in 0..50 {
        let started = Instant::now();
        let response = client
            .publish_trades(traced_publish("OUTAGEUSD", &format!("o{i}")))
            .await
            .expect("publishing works while the collector is down")
            .into_inner();
        slowest = slowest.max(started.elapsed());
        assert_eq!(response.accepted, 1);
    }
    // Generous: an export attempt takes up to its 3 s timeout, and a call
    // never waits for one.
    assert!(
        slowest < Duration::from_secs(2),
        "a call waited {slowest:?}"
    );
    terminate(feed).await;
}
