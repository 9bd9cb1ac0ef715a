//! The tonic adapter: converts messages, checks admin auth, calls
//! [`Coupons`], maps errors through `tickmesh_runtime::status`.

use std::pin::Pin;
use std::sync::Arc;

use tickmesh_api::coupon::coupon_issue_service_server::{
    CouponIssueService, CouponIssueServiceServer,
};
use tickmesh_api::coupon::{
    self as pb, CreateCampaignRequest, CreateCampaignResponse, GetCampaignRequest,
    GetCampaignResponse, GetIssuanceRequest, GetIssuanceResponse, IssueRequest, IssueResponse,
    ListCampaignsRequest, ListCampaignsResponse, WatchCampaignRequest, WatchCampaignResponse,
};
use tickmesh_core::{Error, FieldViolation};
use tickmesh_runtime::auth::AdminAuth;
use tickmesh_runtime::proto_time::{nanos_to_timestamp, timestamp_to_nanos};
use tickmesh_runtime::status::{IntoStatus, to_status};
use tokio_stream::StreamExt;
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status};

use crate::campaign::{Campaign, CampaignState, NewCampaign};
use crate::service::{CampaignView, Coupons, Outcome};

pub struct CouponGrpc {
    coupons: Arc<Coupons>,
    admin: AdminAuth,
}

/// The tonic service with explicit message-size limits.
pub fn server(
    coupons: Arc<Coupons>,
    admin: AdminAuth,
    max_message_bytes: usize,
) -> CouponIssueServiceServer<CouponGrpc> {
    CouponIssueServiceServer::new(CouponGrpc { coupons, admin })
        .max_decoding_message_size(max_message_bytes)
        .max_encoding_message_size(max_message_bytes)
}

type WatchStream =
    Pin<Box<dyn tokio_stream::Stream<Item = Result<WatchCampaignResponse, Status>> + Send>>;

#[tonic::async_trait]
impl CouponIssueService for CouponGrpc {
    async fn create_campaign(
        &self,
        request: Request<CreateCampaignRequest>,
    ) -> Result<Response<CreateCampaignResponse>, Status> {
        self.admin.check(request.metadata()).into_status()?;
        let campaign = request
            .into_inner()
            .campaign
            .ok_or_else(|| to_status(Error::invalid("campaign", "is required")))?;
        let new = campaign_from_pb(campaign).into_status()?;
        let (stored, created) = self.coupons.create_campaign(new).await.into_status()?;
        Ok(Response::new(CreateCampaignResponse {
            campaign: Some(campaign_to_pb(&stored)),
            created,
        }))
    }

    async fn get_campaign(
        &self,
        request: Request<GetCampaignRequest>,
    ) -> Result<Response<GetCampaignResponse>, Status> {
        let view = self
            .coupons
            .get_campaign(&request.into_inner().campaign_id)
            .await
            .into_status()?;
        Ok(Response::new(GetCampaignResponse {
            campaign: Some(campaign_to_pb(&view.campaign)),
            remaining_stock: view.remaining,
            issued_count: view.issued,
            state: state_to_pb(view.state) as i32,
            sold_out_time: view.sold_out_ms.map(ms_to_timestamp),
        }))
    }

    async fn list_campaigns(
        &self,
        request: Request<ListCampaignsRequest>,
    ) -> Result<Response<ListCampaignsResponse>, Status> {
        let r = request.into_inner();
        let (campaigns, next_page_token) = self
            .coupons
            .list_campaigns(r.page_size, &r.page_token)
            .await
            .into_status()?;
        Ok(Response::new(ListCampaignsResponse {
            campaigns: campaigns.iter().map(campaign_to_pb).collect(),
            next_page_token,
        }))
    }

    async fn issue(
        &self,
        request: Request<IssueRequest>,
    ) -> Result<Response<IssueResponse>, Status> {
        let r = request.into_inner();
        let answer = self
            .coupons
            .issue(&r.campaign_id, &r.user_id, &r.request_id)
            .await
            .into_status()?;
        Ok(Response::new(IssueResponse {
            outcome: match answer.outcome {
                Outcome::Issued => pb::IssueOutcome::Issued,
                Outcome::AlreadyIssued => pb::IssueOutcome::AlreadyIssued,
                Outcome::SoldOut => pb::IssueOutcome::SoldOut,
                Outcome::NotStarted => pb::IssueOutcome::NotStarted,
                Outcome::Ended => pb::IssueOutcome::Ended,
            } as i32,
            coupon_code: answer.code,
            remaining_stock: answer.remaining,
        }))
    }

    async fn get_issuance(
        &self,
        request: Request<GetIssuanceRequest>,
    ) -> Result<Response<GetIssuanceResponse>, Status> {
        let r = request.into_inner();
        let codes = self
            .coupons
            .issuance(&r.campaign_id, &r.user_id)
            .await
            .into_status()?;
        Ok(Response::new(GetIssuanceResponse {
            issued: !codes.is_empty(),
            coupon_code: codes.first().cloned().unwrap_or_default(),
            coupon_codes: codes,
        }))
    }

    type WatchCampaignStream = WatchStream;

    async fn watch_campaign(
        &self,
        request: Request<WatchCampaignRequest>,
    ) -> Result<Response<Self::WatchCampaignStream>, Status> {
        let rx = self
            .coupons
            .watch(&request.into_inner().campaign_id)
            .await
            .into_status()?;
        let stream = ReceiverStream::new(rx)
            .map(|item| item.map(|view| watch_to_pb(&view)).map_err(to_status));
        Ok(Response::new(Box::pin(stream)))
    }
}

fn ms_to_timestamp(ms: i64) -> prost_types::Timestamp {
    nanos_to_timestamp(ms.saturating_mul(1_000_000))
}

fn state_to_pb(state: CampaignState) -> pb::CampaignState {
    match state {
        CampaignState::Scheduled => pb::CampaignState::Scheduled,
        CampaignState::Active => pb::CampaignState::Active,
        CampaignState::SoldOut => pb::CampaignState::SoldOut,
        CampaignState::Ended => pb::CampaignState::Ended,
    }
}

fn watch_to_pb(view: &CampaignView) -> WatchCampaignResponse {
    WatchCampaignResponse {
        campaign_id: view.campaign.id.clone(),
        total_stock: view.campaign.total_stock,
        remaining_stock: view.remaining,
        state: state_to_pb(view.state) as i32,
        sold_out_time: view.sold_out_ms.map(ms_to_timestamp),
        read_time: Some(ms_to_timestamp(view.read_ms)),
    }
}

/// A client's campaign; times become milliseconds (the precision of gating).
pub fn campaign_from_pb(c: pb::Campaign) -> Result<NewCampaign, Error> {
    let mut violations = Vec::new();
    let mut time = |field: &str, ts: Option<prost_types::Timestamp>| -> Option<i64> {
        let ts = ts?;
        match timestamp_to_nanos(&ts) {
            Ok(ns) => Some(ns.div_euclid(1_000_000)),
            Err(r) => {
                violations.push(FieldViolation::new(format!("campaign.{field}"), r));
                None
            }
        }
    };
    let start_ms = time("start_time", c.start_time);
    let end_ms = time("end_time", c.end_time);
    Error::check(violations)?;
    Ok(NewCampaign {
        id: c.id,
        display_name: c.display_name,
        total_stock: c.total_stock,
        per_user_limit: c.per_user_limit,
        start_ms,
        end_ms,
        ranking_board_id: c.ranking_board_id,
    })
}

pub fn campaign_to_pb(c: &Campaign) -> pb::Campaign {
    pb::Campaign {
        id: c.id.clone(),
        total_stock: c.total_stock,
        per_user_limit: c.per_user_limit as i32,
        start_time: Some(ms_to_timestamp(c.start_ms)),
        end_time: Some(ms_to_timestamp(c.end_ms)),
        ranking_board_id: c.ranking_board_id.clone(),
        display_name: c.display_name.clone(),
        create_time: Some(ms_to_timestamp(c.create_ms)),
    }
}
