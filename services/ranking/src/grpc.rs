//! The tonic adapter: converts messages, checks admin auth, calls
//! [`Ranking`], maps errors through `tickmesh_runtime::status`.

use std::pin::Pin;
use std::sync::Arc;

use tickmesh_api::ranking::ranking_service_server::{RankingService, RankingServiceServer};
use tickmesh_api::ranking::{
    self as pb, GetAroundMemberRequest, GetAroundMemberResponse, GetBoardRequest, GetBoardResponse,
    GetRankRequest, GetRankResponse, GetRanksRequest, GetRanksResponse, GetTopRequest,
    GetTopResponse, ListBoardsRequest, ListBoardsResponse, RecordEventRequest, RecordEventResponse,
    RecordEventsRequest, RecordEventsResponse, RemoveMemberRequest, RemoveMemberResponse,
    UpsertBoardRequest, UpsertBoardResponse, WatchTopRequest, WatchTopResponse,
};
use tickmesh_core::Error;
use tickmesh_runtime::auth::AdminAuth;
use tickmesh_runtime::proto_time::{nanos_to_timestamp, pb_duration_to_std};
use tickmesh_runtime::status::{IntoStatus, to_status};
use tokio_stream::StreamExt;
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status};

use crate::board::{Board, Operator, Order, TieBreak, WindowKind};
use crate::read::Ranked;
use crate::record::Outcome;
use crate::score::{format_score, percentile};
use crate::service::{Ranking, RawEvent};

pub struct RankingGrpc {
    ranking: Arc<Ranking>,
    admin: AdminAuth,
}

/// The tonic service with explicit message-size limits.
pub fn server(
    ranking: Arc<Ranking>,
    admin: AdminAuth,
    max_message_bytes: usize,
) -> RankingServiceServer<RankingGrpc> {
    RankingServiceServer::new(RankingGrpc { ranking, admin })
        .max_decoding_message_size(max_message_bytes)
        .max_encoding_message_size(max_message_bytes)
}

type WatchStream =
    Pin<Box<dyn tokio_stream::Stream<Item = Result<WatchTopResponse, Status>> + Send>>;

#[tonic::async_trait]
impl RankingService for RankingGrpc {
    async fn upsert_board(
        &self,
        request: Request<UpsertBoardRequest>,
    ) -> Result<Response<UpsertBoardResponse>, Status> {
        self.admin.check(request.metadata()).into_status()?;
        let board = request
            .into_inner()
            .board
            .ok_or_else(|| to_status(Error::invalid("board", "is required")))?;
        let board = board_from_pb(board).into_status()?;
        let (stored, created) = self.ranking.upsert_board(board).await.into_status()?;
        tracing::info!(board = %stored.id, created, "board upserted");
        Ok(Response::new(UpsertBoardResponse {
            board: Some(board_to_pb(&stored)),
            created,
        }))
    }

    async fn get_board(
        &self,
        request: Request<GetBoardRequest>,
    ) -> Result<Response<GetBoardResponse>, Status> {
        let board = self
            .ranking
            .get_board(&request.into_inner().board_id)
            .await
            .into_status()?;
        Ok(Response::new(GetBoardResponse {
            board: Some(board_to_pb(&board)),
        }))
    }

    async fn list_boards(
        &self,
        request: Request<ListBoardsRequest>,
    ) -> Result<Response<ListBoardsResponse>, Status> {
        let request = request.into_inner();
        let (boards, next_page_token) = self
            .ranking
            .list_boards(request.page_size, &request.page_token)
            .await
            .into_status()?;
        Ok(Response::new(ListBoardsResponse {
            boards: boards.iter().map(board_to_pb).collect(),
            next_page_token,
        }))
    }

    async fn record_event(
        &self,
        request: Request<RecordEventRequest>,
    ) -> Result<Response<RecordEventResponse>, Status> {
        let (board, outcome) = self
            .ranking
            .record_one(event_from_pb(request.into_inner()))
            .await
            .into_status()?;
        crate::metrics::count_events(std::slice::from_ref(&outcome));
        Ok(Response::new(match outcome {
            Outcome::Recorded(scores) => RecordEventResponse {
                duplicate: false,
                scores: scores
                    .into_iter()
                    .map(|(window, s)| pb::WindowScore {
                        window,
                        score: format_score(s, board.score_scale),
                    })
                    .collect(),
            },
            _ => RecordEventResponse {
                duplicate: true,
                scores: Vec::new(),
            },
        }))
    }

    async fn record_events(
        &self,
        request: Request<RecordEventsRequest>,
    ) -> Result<Response<RecordEventsResponse>, Status> {
        let events = request
            .into_inner()
            .events
            .into_iter()
            .map(event_from_pb)
            .collect();
        let outcomes = self.ranking.record(events).await.into_status()?;
        crate::metrics::count_events(&outcomes);
        let mut response = RecordEventsResponse::default();
        for (index, outcome) in outcomes.into_iter().enumerate() {
            let mut result = pb::RecordEventResult {
                index: index as u32,
                ..Default::default()
            };
            match outcome {
                Outcome::Recorded(_) => response.recorded += 1,
                Outcome::Duplicate => {
                    response.duplicate += 1;
                    result.duplicate = true;
                }
                Outcome::OutOfRange => {
                    response.refused += 1;
                    result.error =
                        "a score would leave ±9007199254740991 units (2^53 - 1); nothing of this event was recorded".into();
                }
            }
            response.results.push(result);
        }
        Ok(Response::new(response))
    }

    async fn get_top(
        &self,
        request: Request<GetTopRequest>,
    ) -> Result<Response<GetTopResponse>, Status> {
        let r = request.into_inner();
        let view = self
            .ranking
            .top(&r.board_id, &r.window, r.page_size, &r.page_token)
            .await
            .into_status()?;
        Ok(Response::new(GetTopResponse {
            entries: entries_to_pb(&view.entries, view.board.score_scale),
            window: view.window,
            next_page_token: view.next_page_token,
            total_members: view.total,
            from_snapshot: view.from_snapshot,
        }))
    }

    async fn get_rank(
        &self,
        request: Request<GetRankRequest>,
    ) -> Result<Response<GetRankResponse>, Status> {
        let r = request.into_inner();
        let view = self
            .ranking
            .rank(&r.board_id, &r.window, &r.member)
            .await
            .into_status()?;
        let s = &view.standing;
        Ok(Response::new(GetRankResponse {
            window: view.window.clone(),
            entry: Some(entry_to_pb(&s.entry, view.board.score_scale)),
            total_members: s.total,
            members_below: s.below,
            percentile: percentile(s.below, s.total),
            previous_rank: view.previous_rank,
            rank_change: view.previous_rank.map(|p| p as i64 - s.entry.rank as i64),
            from_snapshot: view.from_snapshot,
        }))
    }

    async fn get_ranks(
        &self,
        request: Request<GetRanksRequest>,
    ) -> Result<Response<GetRanksResponse>, Status> {
        let r = request.into_inner();
        let view = self
            .ranking
            .ranks(&r.board_id, &r.window, r.members)
            .await
            .into_status()?;
        Ok(Response::new(GetRanksResponse {
            entries: entries_to_pb(&view.entries, view.board.score_scale),
            window: view.window,
            missing_members: view.missing,
            total_members: view.total,
        }))
    }

    async fn get_around_member(
        &self,
        request: Request<GetAroundMemberRequest>,
    ) -> Result<Response<GetAroundMemberResponse>, Status> {
        let r = request.into_inner();
        let (board, window, page) = self
            .ranking
            .around(&r.board_id, &r.window, &r.member, r.radius)
            .await
            .into_status()?;
        Ok(Response::new(GetAroundMemberResponse {
            window,
            entries: entries_to_pb(&page.entries, board.score_scale),
            total_members: page.total,
        }))
    }

    async fn remove_member(
        &self,
        request: Request<RemoveMemberRequest>,
    ) -> Result<Response<RemoveMemberResponse>, Status> {
        let r = request.into_inner();
        let windows = self
            .ranking
            .remove_member(&r.board_id, &r.member)
            .await
            .into_status()?;
        Ok(Response::new(RemoveMemberResponse { windows }))
    }

    type WatchTopStream = WatchStream;

    async fn watch_top(
        &self,
        request: Request<WatchTopRequest>,
    ) -> Result<Response<Self::WatchTopStream>, Status> {
        let r = request.into_inner();
        let board = self.ranking.get_board(&r.board_id).await.into_status()?;
        let rx = self
            .ranking
            .watch_top(&r.board_id, &r.window, r.top)
            .await
            .into_status()?;
        let scale = board.score_scale;
        let stream = ReceiverStream::new(rx).map(move |item| {
            item.map(|state| WatchTopResponse {
                entries: entries_to_pb(&state.entries, scale),
                window: state.window,
                total_members: state.total,
                read_time: Some(nanos_to_timestamp(state.read_ns)),
            })
            .map_err(to_status)
        });
        Ok(Response::new(Box::pin(stream)))
    }
}

fn event_from_pb(e: RecordEventRequest) -> RawEvent {
    RawEvent {
        board_id: e.board_id,
        member: e.member,
        delta: e.delta,
        score: e.score,
        event_id: e.event_id,
        member_data: e.member_data,
    }
}

fn entry_to_pb(e: &Ranked, scale: u32) -> pb::Entry {
    pb::Entry {
        member: e.member.clone(),
        score: format_score(e.score, scale),
        rank: e.rank,
        member_data: e.member_data.clone(),
    }
}

fn entries_to_pb(entries: &[Ranked], scale: u32) -> Vec<pb::Entry> {
    entries.iter().map(|e| entry_to_pb(e, scale)).collect()
}

pub fn board_from_pb(b: pb::Board) -> Result<Board, Error> {
    let mut windows = Vec::with_capacity(b.windows.len());
    for (i, &w) in b.windows.iter().enumerate() {
        windows.push(match pb::WindowKind::try_from(w) {
            Ok(pb::WindowKind::AllTime) => WindowKind::AllTime,
            Ok(pb::WindowKind::Hourly) => WindowKind::Hourly,
            Ok(pb::WindowKind::Daily) => WindowKind::Daily,
            Ok(pb::WindowKind::Weekly) => WindowKind::Weekly,
            Ok(pb::WindowKind::Monthly) => WindowKind::Monthly,
            Ok(pb::WindowKind::Rolling24h) => WindowKind::Rolling24h,
            _ => {
                return Err(Error::invalid(
                    format!("board.windows[{i}]"),
                    format!(
                        "{w} is not a window kind (WINDOW_KIND_ALL_TIME … WINDOW_KIND_ROLLING_24H)"
                    ),
                ));
            }
        });
    }
    let order = match pb::Order::try_from(b.order) {
        Ok(pb::Order::Unspecified | pb::Order::HigherFirst) => Order::HigherFirst,
        Ok(pb::Order::LowerFirst) => Order::LowerFirst,
        Err(_) => return Err(Error::invalid("board.order", "is not an Order")),
    };
    let operator = match pb::ScoreOperator::try_from(b.operator) {
        Ok(pb::ScoreOperator::Unspecified | pb::ScoreOperator::Increment) => Operator::Increment,
        Ok(pb::ScoreOperator::Set) => Operator::Set,
        Ok(pb::ScoreOperator::Best) => Operator::Best,
        Err(_) => return Err(Error::invalid("board.operator", "is not a ScoreOperator")),
    };
    let tie_break = match pb::TieBreak::try_from(b.tie_break) {
        Ok(pb::TieBreak::Unspecified | pb::TieBreak::EarlierFirst) => TieBreak::EarlierFirst,
        Ok(pb::TieBreak::SharedRank) => TieBreak::SharedRank,
        Err(_) => return Err(Error::invalid("board.tie_break", "is not a TieBreak")),
    };
    let retention_secs = match &b.retention {
        None => 0,
        Some(d) => {
            let d = pb_duration_to_std(d).map_err(|r| Error::invalid("board.retention", r))?;
            if d.subsec_nanos() != 0 {
                return Err(Error::invalid("board.retention", "must be whole seconds"));
            }
            if d.is_zero() {
                return Err(Error::invalid(
                    "board.retention",
                    "must be more than zero (leave it out for the default)",
                ));
            }
            d.as_secs()
        }
    };
    Ok(Board {
        id: b.id,
        display_name: b.display_name,
        order,
        operator,
        windows,
        time_zone: b.time_zone,
        retention_secs,
        tie_break,
        score_scale: b.score_scale,
        update_time_ns: 0,
    })
}

pub fn board_to_pb(b: &Board) -> pb::Board {
    pb::Board {
        id: b.id.clone(),
        display_name: b.display_name.clone(),
        order: match b.order {
            Order::HigherFirst => pb::Order::HigherFirst,
            Order::LowerFirst => pb::Order::LowerFirst,
        } as i32,
        operator: match b.operator {
            Operator::Increment => pb::ScoreOperator::Increment,
            Operator::Set => pb::ScoreOperator::Set,
            Operator::Best => pb::ScoreOperator::Best,
        } as i32,
        windows: b
            .windows
            .iter()
            .map(|w| {
                (match w {
                    WindowKind::AllTime => pb::WindowKind::AllTime,
                    WindowKind::Hourly => pb::WindowKind::Hourly,
                    WindowKind::Daily => pb::WindowKind::Daily,
                    WindowKind::Weekly => pb::WindowKind::Weekly,
                    WindowKind::Monthly => pb::WindowKind::Monthly,
                    WindowKind::Rolling24h => pb::WindowKind::Rolling24h,
                }) as i32
            })
            .collect(),
        time_zone: b.time_zone.clone(),
        retention: Some(prost_types::Duration {
            seconds: b.retention_secs as i64,
            nanos: 0,
        }),
        tie_break: match b.tie_break {
            TieBreak::EarlierFirst => pb::TieBreak::EarlierFirst,
            TieBreak::SharedRank => pb::TieBreak::SharedRank,
        } as i32,
        score_scale: b.score_scale,
        update_time: Some(nanos_to_timestamp(b.update_time_ns)),
    }
}
