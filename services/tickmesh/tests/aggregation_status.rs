//! GetAggregationStatus tells how far each symbol's candles lag its tick log,
//! so a symbol that is stuck behind shows up.

mod common;

use std::time::Duration;

use common::*;
use tickmesh_api::candles::candle_query_service_client::CandleQueryServiceClient;
use tickmesh_api::candles::{AggregationStatus, GetAggregationStatusRequest};
use tonic::transport::Channel;

async fn status(mesh: &tickmesh::mesh::Mesh, symbol: &str) -> AggregationStatus {
    let mut c: CandleQueryServiceClient<Channel> =
        CandleQueryServiceClient::connect(mesh.endpoint())
            .await
            .unwrap();
    c.get_aggregation_status(GetAggregationStatusRequest {
        symbols: vec![symbol.into()],
    })
    .await
    .unwrap()
    .into_inner()
    .statuses
    .remove(0)
}

#[tokio::test(flavor = "multi_thread")]
async fn pending_trades_show_until_an_aggregator_applies_them() {
    let redis = redis().await;
    // A mesh whose aggregator is off: trades pile up in the tick log.
    let mut idle = config(&redis.url());
    idle.candles.aggregate = false;
    let feed = start(idle).await;
    let mut c = client(&feed).await;
    register(&mut c, "LAG", 2, 0).await;
    let before = tickmesh_runtime::proto_time::now_nanos();
    let r = publish(&mut c, trades("LAG", "t", 7)).await;
    assert_eq!(r.accepted, 7);

    let s = status(&feed, "LAG").await;
    assert_eq!(s.tick_log_sequence, 7);
    assert_eq!(s.applied_sequence, 0);
    assert_eq!(s.pending_trades, 7);
    assert!(s.owner.is_empty(), "no aggregator holds it: {s:?}");
    let since = s
        .oldest_pending_ingest_time
        .expect("the oldest pending trade's ingest time");
    let since_ns = since.seconds as i128 * 1_000_000_000 + since.nanos as i128;
    assert!(
        since_ns >= before as i128,
        "ingested during the test: {since:?}"
    );

    // An instance with an aggregator joins: the symbol catches up.
    let mut active = config(&redis.url());
    active.candles.lease_ttl = Duration::from_secs(1);
    let aggregating = start(active).await;
    assert!(
        eventually(Duration::from_secs(20), || async {
            let s = status(&aggregating, "LAG").await;
            s.pending_trades == 0 && s.applied_sequence == 7
        })
        .await,
        "never caught up: {:?}",
        status(&aggregating, "LAG").await
    );
    let s = status(&feed, "LAG").await;
    assert_eq!(s.tick_log_sequence, 7);
    assert!(s.oldest_pending_ingest_time.is_none(), "{s:?}");
    assert!(!s.owner.is_empty(), "{s:?}");
}
