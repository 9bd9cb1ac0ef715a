//! `grpc.health.v1` for every server.
//!
//! Readiness: each enabled service (by its full name) and the overall server
//! (`""`) are SERVING only while their backends answer; a monitor pings Redis
//! and flips them. Liveness: the service `liveness` is SERVING for as long as
//! the process runs and does not depend on any backend, so an orchestrator does
//! not restart pods because Redis blinked.

use std::time::Duration;

use tokio_util::sync::CancellationToken;
use tonic_health::ServingStatus;
use tonic_health::server::HealthReporter;

use crate::redis_conn::RedisHandle;

/// Name of the health "service" that reports liveness only.
pub const LIVENESS: &str = "liveness";

/// Sets every readiness name to `status`.
pub async fn set_ready(reporter: &HealthReporter, services: &[String], status: ServingStatus) {
    reporter.set_service_status("", status).await;
    for name in services {
        reporter.set_service_status(name, status).await;
    }
}

/// Watches Redis and keeps readiness in step with it until shutdown, when it
/// turns everything NOT_SERVING (so balancers drain the instance first).
pub fn spawn_redis_monitor(
    reporter: HealthReporter,
    services: Vec<String>,
    redis: RedisHandle,
    interval: Duration,
    shutdown: CancellationToken,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        reporter
            .set_service_status(LIVENESS, ServingStatus::Serving)
            .await;
        let mut last: Option<bool> = None;
        loop {
            let up = redis.ping().await;
            if last != Some(up) {
                if up {
                    tracing::info!(services = ?services, "redis reachable: serving");
                    set_ready(&reporter, &services, ServingStatus::Serving).await;
                } else {
                    tracing::warn!(services = ?services, "redis unreachable: not serving");
                    set_ready(&reporter, &services, ServingStatus::NotServing).await;
                }
                last = Some(up);
            }
            tokio::select! {
                _ = shutdown.cancelled() => break,
                _ = tokio::time::sleep(interval) => {}
            }
        }
        set_ready(&reporter, &services, ServingStatus::NotServing).await;
        reporter
            .set_service_status(LIVENESS, ServingStatus::NotServing)
            .await;
    })
}
