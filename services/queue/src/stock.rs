//! Remaining stock of the coupon campaign a room is linked to. The scheduler
//! asks every `queue.stock_check_interval`; at zero the room stops admitting
//! and its waiters are told SOLD_OUT.

use async_trait::async_trait;
use tickmesh_core::Result;

#[async_trait]
pub trait StockSource: Send + Sync + 'static {
    /// Coupons left in `campaign_id` (`NotFound` for an unknown campaign).
    async fn remaining(&self, campaign_id: &str) -> Result<i64>;
}

/// Remaining stock from CouponIssueService's `GetCampaign`, over gRPC with
/// the caller's trace context.
pub mod coupon {
    use tickmesh_api::coupon::GetCampaignRequest;
    use tickmesh_api::coupon::coupon_issue_service_client::CouponIssueServiceClient;
    use tickmesh_core::{Error, Result};
    use tonic::service::interceptor::InterceptedService;
    use tonic::transport::Channel;

    type Interceptor =
        fn(tonic::Request<()>) -> std::result::Result<tonic::Request<()>, tonic::Status>;

    pub struct CouponStock {
        client: CouponIssueServiceClient<InterceptedService<Channel, Interceptor>>,
    }

    impl CouponStock {
        /// Connects lazily: the coupon service may start after this one.
        pub fn new(endpoint: &str) -> Result<Self> {
            let channel = tonic::transport::Endpoint::from_shared(endpoint.to_string())
                .map_err(|e| {
                    Error::FailedPrecondition(format!("queue.coupon_endpoint {endpoint:?}: {e}"))
                })?
                .timeout(std::time::Duration::from_secs(5))
                .connect_lazy();
            let interceptor: Interceptor = tickmesh_runtime::telemetry::inject_trace_context;
            Ok(Self {
                client: CouponIssueServiceClient::with_interceptor(channel, interceptor),
            })
        }
    }

    #[async_trait::async_trait]
    impl super::StockSource for CouponStock {
        async fn remaining(&self, campaign_id: &str) -> Result<i64> {
            let response = self
                .client
                .clone()
                .get_campaign(GetCampaignRequest {
                    campaign_id: campaign_id.to_string(),
                })
                .await
                .map_err(|s| match s.code() {
                    tonic::Code::NotFound => Error::NotFound(format!("campaign {campaign_id:?}")),
                    _ => Error::Unavailable(format!("coupon service: {}", s.message())),
                })?;
            Ok(response.into_inner().remaining_stock)
        }
    }
}
