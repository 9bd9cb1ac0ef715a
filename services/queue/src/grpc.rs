//! The tonic adapter: converts messages, checks admin auth, calls
//! [`Queue`], maps errors through `tickmesh_runtime::status`.

use std::pin::Pin;
use std::sync::Arc;

use tickmesh_api::queue::queue_service_server::{QueueService, QueueServiceServer};
use tickmesh_api::queue::{
    self as pb, CreateRoomRequest, CreateRoomResponse, EnterRequest, EnterResponse,
    GetPositionRequest, GetPositionResponse, GetRoomRequest, GetRoomResponse, HeartbeatRequest,
    HeartbeatResponse, LeaveRequest, LeaveResponse, UpdateRoomRequest, UpdateRoomResponse,
    VerifyAdmissionRequest, VerifyAdmissionResponse, WatchPositionRequest, WatchPositionResponse,
};
use tickmesh_core::Error;
use tickmesh_runtime::auth::AdminAuth;
use tickmesh_runtime::proto_time::{nanos_to_timestamp, pb_duration_to_std, timestamp_to_nanos};
use tickmesh_runtime::status::{IntoStatus, to_status};
use tokio_stream::StreamExt;
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status};

use crate::places::Standing;
use crate::room::{Method, Room, RoomRequest};
use crate::service::{Place, Queue};

pub struct QueueGrpc {
    queue: Arc<Queue>,
    admin: AdminAuth,
}

/// The tonic service with explicit message-size limits.
pub fn server(
    queue: Arc<Queue>,
    admin: AdminAuth,
    max_message_bytes: usize,
) -> QueueServiceServer<QueueGrpc> {
    QueueServiceServer::new(QueueGrpc { queue, admin })
        .max_decoding_message_size(max_message_bytes)
        .max_encoding_message_size(max_message_bytes)
}

type WatchStream =
    Pin<Box<dyn tokio_stream::Stream<Item = Result<WatchPositionResponse, Status>> + Send>>;

/// The fields every position-carrying response shares.
struct PlaceFields {
    state: i32,
    position: u64,
    people_ahead: u64,
    estimated_wait: Option<prost_types::Duration>,
    admission_token: String,
    admission_expire_time: Option<prost_types::Timestamp>,
}

fn place_fields(place: Place) -> PlaceFields {
    let ms = |ms: u64| prost_types::Duration {
        seconds: (ms / 1000) as i64,
        nanos: ((ms % 1000) * 1_000_000) as i32,
    };
    let (state, estimated_wait, expire) = match place.standing {
        Standing::Waiting {
            estimated_wait_ms, ..
        } => (pb::QueueState::Waiting, Some(ms(estimated_wait_ms)), None),
        Standing::PreQueue { opens_in_ms } => {
            (pb::QueueState::PreQueue, Some(ms(opens_in_ms)), None)
        }
        Standing::Admitted { expires_ms, .. } => (
            pb::QueueState::Admitted,
            Some(ms(0)),
            Some(nanos_to_timestamp(expires_ms.saturating_mul(1_000_000))),
        ),
        Standing::NotInQueue => (pb::QueueState::NotInQueue, None, None),
        Standing::SoldOut => (pb::QueueState::SoldOut, None, None),
    };
    let position = place.standing.position();
    PlaceFields {
        state: state as i32,
        position,
        people_ahead: position.saturating_sub(1),
        estimated_wait,
        admission_token: place.admission_token,
        admission_expire_time: expire,
    }
}

#[tonic::async_trait]
impl QueueService for QueueGrpc {
    async fn create_room(
        &self,
        request: Request<CreateRoomRequest>,
    ) -> Result<Response<CreateRoomResponse>, Status> {
        self.admin.check(request.metadata()).into_status()?;
        let room = request
            .into_inner()
            .room
            .ok_or_else(|| to_status(Error::invalid("room", "is required")))?;
        let room = self
            .queue
            .create_room(room_from_pb(room))
            .await
            .into_status()?;
        tracing::info!(room = %room.id, capacity = room.capacity, rate = room.admissions_per_second, "room created");
        Ok(Response::new(CreateRoomResponse {
            room: Some(room_to_pb(&room)),
        }))
    }

    async fn update_room(
        &self,
        request: Request<UpdateRoomRequest>,
    ) -> Result<Response<UpdateRoomResponse>, Status> {
        self.admin.check(request.metadata()).into_status()?;
        let room = request
            .into_inner()
            .room
            .ok_or_else(|| to_status(Error::invalid("room", "is required")))?;
        let room = self
            .queue
            .update_room(room_from_pb(room))
            .await
            .into_status()?;
        tracing::info!(room = %room.id, "room updated");
        Ok(Response::new(UpdateRoomResponse {
            room: Some(room_to_pb(&room)),
        }))
    }

    async fn get_room(
        &self,
        request: Request<GetRoomRequest>,
    ) -> Result<Response<GetRoomResponse>, Status> {
        let (room, stats) = self
            .queue
            .get_room(&request.into_inner().room_id)
            .await
            .into_status()?;
        Ok(Response::new(GetRoomResponse {
            room: Some(room_to_pb(&room)),
            stats: Some(pb::RoomStats {
                waiting: stats.waiting,
                pre_queue: stats.pre_queue,
                active: stats.active,
                served: stats.served,
                measured_admissions_per_second: stats.measured_rate,
                sold_out: stats.sold_out,
            }),
        }))
    }

    async fn enter(
        &self,
        request: Request<EnterRequest>,
    ) -> Result<Response<EnterResponse>, Status> {
        let r = request.into_inner();
        let (token, place) = self
            .queue
            .enter(&r.room_id, &r.user_id)
            .await
            .into_status()?;
        let f = place_fields(place);
        Ok(Response::new(EnterResponse {
            token,
            state: f.state,
            position: f.position,
            people_ahead: f.people_ahead,
            estimated_wait: f.estimated_wait,
            admission_token: f.admission_token,
            admission_expire_time: f.admission_expire_time,
        }))
    }

    async fn get_position(
        &self,
        request: Request<GetPositionRequest>,
    ) -> Result<Response<GetPositionResponse>, Status> {
        let place = self
            .queue
            .position(&request.into_inner().token)
            .await
            .into_status()?;
        let f = place_fields(place);
        Ok(Response::new(GetPositionResponse {
            state: f.state,
            position: f.position,
            people_ahead: f.people_ahead,
            estimated_wait: f.estimated_wait,
            admission_token: f.admission_token,
            admission_expire_time: f.admission_expire_time,
        }))
    }

    async fn heartbeat(
        &self,
        request: Request<HeartbeatRequest>,
    ) -> Result<Response<HeartbeatResponse>, Status> {
        let place = self
            .queue
            .heartbeat(&request.into_inner().token)
            .await
            .into_status()?;
        let f = place_fields(place);
        Ok(Response::new(HeartbeatResponse {
            state: f.state,
            position: f.position,
            people_ahead: f.people_ahead,
            estimated_wait: f.estimated_wait,
            admission_token: f.admission_token,
            admission_expire_time: f.admission_expire_time,
        }))
    }

    async fn leave(
        &self,
        request: Request<LeaveRequest>,
    ) -> Result<Response<LeaveResponse>, Status> {
        let left = self
            .queue
            .leave(&request.into_inner().token)
            .await
            .into_status()?;
        Ok(Response::new(LeaveResponse { left }))
    }

    type WatchPositionStream = WatchStream;

    async fn watch_position(
        &self,
        request: Request<WatchPositionRequest>,
    ) -> Result<Response<Self::WatchPositionStream>, Status> {
        let rx = self
            .queue
            .watch(&request.into_inner().token)
            .await
            .into_status()?;
        let stream = ReceiverStream::new(rx).map(|item| {
            item.map(|place| {
                let f = place_fields(place);
                WatchPositionResponse {
                    state: f.state,
                    position: f.position,
                    people_ahead: f.people_ahead,
                    estimated_wait: f.estimated_wait,
                    admission_token: f.admission_token,
                    admission_expire_time: f.admission_expire_time,
                }
            })
            .map_err(to_status)
        });
        Ok(Response::new(Box::pin(stream)))
    }

    async fn verify_admission(
        &self,
        request: Request<VerifyAdmissionRequest>,
    ) -> Result<Response<VerifyAdmissionResponse>, Status> {
        let r = request.into_inner();
        let claims = self
            .queue
            .verify_admission(&r.token, &r.room_id)
            .await
            .into_status()?;
        Ok(Response::new(VerifyAdmissionResponse {
            user_id: claims.user,
            room_id: claims.room,
            issue_time: Some(nanos_to_timestamp(
                claims.issued_ms.saturating_mul(1_000_000),
            )),
            expire_time: Some(nanos_to_timestamp(
                claims.expires_ms.saturating_mul(1_000_000),
            )),
        }))
    }
}

fn duration_ms(d: &Option<prost_types::Duration>) -> Option<Result<u64, String>> {
    d.as_ref().map(|d| {
        let d = pb_duration_to_std(d)?;
        if d.subsec_millis() as u128 * 1_000_000 != d.subsec_nanos() as u128 {
            return Err("must be whole milliseconds".into());
        }
        Ok(d.as_millis() as u64)
    })
}

pub fn room_from_pb(r: pb::Room) -> RoomRequest {
    RoomRequest {
        method: match pb::QueueingMethod::try_from(r.queueing_method) {
            Ok(pb::QueueingMethod::Unspecified | pb::QueueingMethod::Fifo) => Some(Method::Fifo),
            Ok(pb::QueueingMethod::RandomPreQueue) => Some(Method::RandomPreQueue),
            // Reported as a violation by validate (id cannot be a symbol).
            Err(_) => None,
        },
        session_ms: duration_ms(&r.session_duration),
        position_expiry_ms: duration_ms(&r.position_expiry),
        open_time_ms: r
            .open_time
            .as_ref()
            .map(|t| timestamp_to_nanos(t).map(|n| n.div_euclid(1_000_000))),
        id: r.id,
        capacity: r.capacity,
        admissions_per_second: r.admissions_per_second,
        campaign_id: r.campaign_id,
    }
}

pub fn room_to_pb(r: &Room) -> pb::Room {
    let ms = |ms: u64| prost_types::Duration {
        seconds: (ms / 1000) as i64,
        nanos: ((ms % 1000) * 1_000_000) as i32,
    };
    pb::Room {
        id: r.id.clone(),
        capacity: r.capacity as i64,
        admissions_per_second: r.admissions_per_second,
        session_duration: Some(ms(r.session_ms)),
        position_expiry: Some(ms(r.position_expiry_ms)),
        queueing_method: match r.method {
            Method::Fifo => pb::QueueingMethod::Fifo,
            Method::RandomPreQueue => pb::QueueingMethod::RandomPreQueue,
        } as i32,
        open_time: r
            .open_time_ms
            .map(|ms| nanos_to_timestamp(ms.saturating_mul(1_000_000))),
        campaign_id: r.campaign_id.clone(),
        update_time: Some(nanos_to_timestamp(
            r.update_time_ms.saturating_mul(1_000_000),
        )),
    }
}
