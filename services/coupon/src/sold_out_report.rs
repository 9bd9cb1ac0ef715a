//! "Fastest sold out": when a campaign linked to a RankingService board
//! sells out, one event goes to that board — member and event id the
//! campaign id, score the milliseconds from the campaign's start to its
//! last coupon.
//!
//! The issue script stamps the sell-out time in the campaign's Redis state
//! in the same step as the last issuance; issuing never waits for the
//! report. A background task on every instance sends unreported sell-outs
//! and marks them reported once RankingService accepted the event; while it
//! is unreachable (or the board does not exist yet) the report is retried
//! every `coupon.report_interval`. Ranking deduplicates by event id, so two
//! instances reporting the same sell-out, or a report repeated after a
//! rebuild, count once.

use std::collections::HashSet;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tickmesh_api::ranking::RecordEventRequest;
use tickmesh_api::ranking::ranking_service_client::RankingServiceClient;
use tickmesh_core::{Error, Result};
use tickmesh_runtime::RedisHandle;
use tickmesh_runtime::redis_conn::unavailable;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tonic::service::interceptor::InterceptedService;
use tonic::transport::{Channel, Endpoint};

use crate::campaign::Campaign;
use crate::campaigns::CampaignBook;
use crate::keys::Keys;

type Interceptor = fn(tonic::Request<()>) -> std::result::Result<tonic::Request<()>, tonic::Status>;
type Client = RankingServiceClient<InterceptedService<Channel, Interceptor>>;

pub struct SoldOutReporter {
    redis: RedisHandle,
    keys: Keys,
    client: Client,
    /// Campaigns whose failure was already logged as a warning.
    warned: Mutex<HashSet<String>>,
}

impl SoldOutReporter {
    /// `endpoint`: RankingService, e.g. "http://127.0.0.1:50051" (connected lazily).
    pub fn new(redis: RedisHandle, keys: Keys, endpoint: &str) -> Result<Self> {
        let channel = Endpoint::from_shared(endpoint.to_string())
            .map_err(|e| Error::FailedPrecondition(format!("coupon.ranking_endpoint: {e}")))?
            .connect_timeout(Duration::from_secs(2))
            .timeout(Duration::from_secs(5))
            .connect_lazy();
        let interceptor: Interceptor = tickmesh_runtime::telemetry::inject_trace_context;
        Ok(Self {
            redis,
            keys,
            client: RankingServiceClient::with_interceptor(channel, interceptor),
            warned: Mutex::new(HashSet::new()),
        })
    }

    /// Reports the campaign's sell-out if it has one not yet reported;
    /// returns whether an event was accepted now.
    pub async fn report(&self, campaign: &Campaign) -> Result<bool> {
        if campaign.ranking_board_id.is_empty() {
            return Ok(false);
        }
        let state = self.keys.state(&campaign.id);
        let mut conn = self.redis.conn();
        let (sold_out, reported): (Option<i64>, Option<String>) = redis::cmd("HMGET")
            .arg(&state)
            .arg("sold_out")
            .arg("reported")
            .query_async(&mut conn)
            .await
            .map_err(unavailable)?;
        let Some(sold_out_ms) = sold_out else {
            return Ok(false);
        };
        if reported.is_some() {
            return Ok(false);
        }
        let took_ms = (sold_out_ms - campaign.start_ms).max(0);
        let mut client = self.client.clone();
        client
            .record_event(RecordEventRequest {
                board_id: campaign.ranking_board_id.clone(),
                member: campaign.id.clone(),
                score: took_ms.to_string(),
                event_id: campaign.id.clone(),
                member_data: campaign.display_name.clone(),
                ..Default::default()
            })
            .await
            .map_err(|s| {
                Error::Unavailable(format!(
                    "ranking board {:?}: {}: {}",
                    campaign.ranking_board_id,
                    s.code(),
                    s.message()
                ))
            })?;
        // HSET only if the state still exists (a lost state is rebuilt and
        // reported again; Ranking counts the event id once).
        let _: i64 = redis::Script::new(
            "if redis.call('EXISTS', KEYS[1]) == 1 then return redis.call('HSET', KEYS[1], 'reported', ARGV[1]) end return 0",
        )
        .key(&state)
        .arg(tickmesh_runtime::proto_time::now_nanos() / 1_000_000)
        .invoke_async(&mut conn)
        .await
        .map_err(unavailable)?;
        self.warned
            .lock()
            .expect("warned lock")
            .remove(&campaign.id);
        tracing::info!(campaign = %campaign.id, board = %campaign.ranking_board_id, took_ms, "sell-out reported to ranking");
        Ok(true)
    }

    /// Reports every campaign's sell-out every `interval` until shutdown.
    pub fn spawn(
        self: Arc<Self>,
        campaigns: Arc<CampaignBook>,
        interval: Duration,
        shutdown: CancellationToken,
    ) -> JoinHandle<()> {
        tokio::spawn(async move {
            loop {
                for c in campaigns.cached() {
                    if let Err(e) = self.report(&c).await {
                        let first = self
                            .warned
                            .lock()
                            .expect("warned lock")
                            .insert(c.id.clone());
                        if first {
                            tracing::warn!(campaign = %c.id, error = %e, "sell-out report failed; retrying");
                        } else {
                            tracing::debug!(campaign = %c.id, error = %e, "sell-out report failed; retrying");
                        }
                    }
                }
                tokio::select! {
                    _ = shutdown.cancelled() => break,
                    _ = tokio::time::sleep(interval) => {}
                }
            }
        })
    }
}
