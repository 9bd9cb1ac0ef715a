//! Readiness follows Redis; liveness does not.

mod common;

use std::time::Duration;

use common::*;
use tonic_health::pb::HealthCheckRequest;
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::health_client::HealthClient;

async fn status(
    client: &mut HealthClient<tonic::transport::Channel>,
    service: &str,
) -> Option<ServingStatus> {
    client
        .check(HealthCheckRequest {
            service: service.into(),
        })
        .await
        .ok()
        .map(|r| r.into_inner().status())
}

/// Waits until `service` reports `want` (10 s at most).
async fn becomes(
    health: &HealthClient<tonic::transport::Channel>,
    service: &str,
    want: ServingStatus,
) -> bool {
    eventually(Duration::from_secs(10), || {
        let mut h = health.clone();
        async move { status(&mut h, service).await == Some(want) }
    })
    .await
}

#[tokio::test]
async fn readiness_turns_not_serving_when_redis_goes_away_and_serving_when_it_returns() {
    if on_cluster() {
        eprintln!(
            "single-node test (it stops and starts the one redis-server): not run on a cluster"
        );
        return;
    }
    let mut redis = redis().await;
    let mesh = start(config(&redis.url())).await;
    let mut health = HealthClient::new(
        tonic::transport::Channel::from_shared(mesh.endpoint())
            .unwrap()
            .connect()
            .await
            .unwrap(),
    );
    let feed = "tickmesh.marketfeed.v1.MarketFeedService";

    for name in ["", feed, "liveness"] {
        assert!(
            becomes(&health, name, ServingStatus::Serving).await,
            "{name:?} serving at start"
        );
    }

    redis.kill().await;
    for name in ["", feed] {
        assert!(
            becomes(&health, name, ServingStatus::NotServing).await,
            "{name:?} must turn NOT_SERVING without Redis"
        );
    }
    assert_eq!(
        status(&mut health, "liveness").await,
        Some(ServingStatus::Serving),
        "liveness ignores backends"
    );
    // Calls fail fast and clearly meanwhile.
    let mut c = client(&mesh).await;
    let err = c
        .get_quotes(tickmesh_api::marketfeed::GetQuotesRequest {
            symbols: vec!["X".into()],
            stale_after: None,
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), tonic::Code::Unavailable, "{err:?}");

    redis.restart().await.unwrap();
    for name in ["", feed] {
        assert!(
            becomes(&health, name, ServingStatus::Serving).await,
            "{name:?} must return to SERVING with Redis"
        );
    }
    // And the service works again.
    register(&mut c, "BTCUSDT", 2, 5).await;
    assert_eq!(
        publish(&mut c, vec![trade("BTCUSDT", "1", "1", "1")])
            .await
            .accepted,
        1
    );
    mesh.stop().await.unwrap();
}

#[tokio::test]
async fn a_mesh_starts_while_redis_is_down_and_becomes_ready_when_it_comes_up() {
    if on_cluster() {
        eprintln!(
            "single-node test (it stops and starts the one redis-server): not run on a cluster"
        );
        return;
    }
    let mut redis = redis().await;
    let url = redis.url();
    redis.kill().await;
    let mesh = start(config(&url)).await;
    let mut health = HealthClient::new(
        tonic::transport::Channel::from_shared(mesh.endpoint())
            .unwrap()
            .connect()
            .await
            .unwrap(),
    );
    assert_eq!(
        status(&mut health, "").await,
        Some(ServingStatus::NotServing)
    );
    redis.restart().await.unwrap();
    assert!(becomes(&health, "", ServingStatus::Serving).await);
    mesh.stop().await.unwrap();
}
