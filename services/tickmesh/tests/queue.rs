//! QueueService through gRPC on in-process meshes with a real redis-server:
//! admin auth, bad input with field violations and nothing written, Enter,
//! positions, WatchPosition from entry to admission, VerifyAdmission, forged
//! tokens, two instances racing their schedulers, and key rotation.

mod common;

use std::time::Duration;

use common::*;
use tickmesh_api::queue::queue_service_client::QueueServiceClient;
use tickmesh_api::queue::{
    CreateRoomRequest, EnterRequest, EnterResponse, GetPositionRequest, GetRoomRequest,
    HeartbeatRequest, LeaveRequest, QueueState, Room, UpdateRoomRequest, VerifyAdmissionRequest,
    WatchPositionRequest,
};
use tonic::transport::Channel;
use tonic::{Code, Request};
use tonic_types::StatusExt;

type Queue = QueueServiceClient<Channel>;

const TOKEN: &str = "s3cret";
const K1: &str = "k1:0123456789abcdef0123456789abcdef";
const K2: &str = "k2:fedcba9876543210fedcba9876543210";

async fn queue_client(mesh: &tickmesh::mesh::Mesh) -> Queue {
    QueueServiceClient::connect(mesh.endpoint()).await.unwrap()
}

fn admin<T>(message: T) -> Request<T> {
    let mut r = Request::new(message);
    r.metadata_mut()
        .insert("authorization", format!("Bearer {TOKEN}").parse().unwrap());
    r
}

fn queue_config(redis_url: &str, key: &str, previous: &[&str]) -> tickmesh_runtime::Config {
    let mut cfg = config(redis_url);
    cfg.services.enabled = vec!["queue".into()];
    cfg.auth.admin_token = TOKEN.into();
    cfg.queue.token_key = key.into();
    cfg.queue.previous_token_keys = previous.iter().map(|s| s.to_string()).collect();
    cfg.queue.admission_interval = Duration::from_millis(20);
    cfg.queue.watch_interval = Duration::from_millis(20);
    cfg
}

fn room(id: &str, capacity: i64, rate: f64) -> Room {
    Room {
        id: id.into(),
        capacity,
        admissions_per_second: rate,
        session_duration: Some(prost_types::Duration {
            seconds: 60,
            nanos: 0,
        }),
        ..Default::default()
    }
}

fn violations(status: &tonic::Status) -> Vec<String> {
    status
        .get_error_details()
        .bad_request()
        .map(|b| b.field_violations.iter().map(|v| v.field.clone()).collect())
        .unwrap_or_default()
}

async fn enter(c: &mut Queue, room: &str, user: &str) -> EnterResponse {
    c.enter(EnterRequest {
        room_id: room.into(),
        user_id: user.into(),
    })
    .await
    .unwrap()
    .into_inner()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rooms_places_watch_and_admission_through_grpc() {
    let redis = redis().await;
    let mesh = start(queue_config(&redis.url(), K1, &[])).await;
    let mut c = queue_client(&mesh).await;

    // A room that admits nobody yet: capacity 1, taken by "first" below.
    let denied = c
        .create_room(CreateRoomRequest {
            room: Some(room("launch", 1, 50.0)),
        })
        .await
        .unwrap_err();
    assert_eq!(denied.code(), Code::Unauthenticated);
    for (bad, field) in [
        (room("launch", 0, 50.0), "room.capacity"),
        (room("launch", 5, -2.0), "room.admissions_per_second"),
        (room("launch", 5, 0.0), "room.admissions_per_second"),
        (room("{launch}", 5, 1.0), "room.id"),
    ] {
        let e = c
            .create_room(admin(CreateRoomRequest { room: Some(bad) }))
            .await
            .unwrap_err();
        assert_eq!(e.code(), Code::InvalidArgument, "{e:?}");
        assert_eq!(violations(&e), [field]);
    }
    let missing = c
        .get_room(GetRoomRequest {
            room_id: "launch".into(),
        })
        .await
        .unwrap_err();
    assert_eq!(missing.code(), Code::NotFound, "bad input wrote nothing");
    let created = c
        .create_room(admin(CreateRoomRequest {
            room: Some(room("launch", 1, 50.0)),
        }))
        .await
        .unwrap()
        .into_inner()
        .room
        .unwrap();
    assert_eq!(created.position_expiry.unwrap().seconds, 60, "default");
    let unknown = c
        .enter(EnterRequest {
            room_id: "nope".into(),
            user_id: "u".into(),
        })
        .await
        .unwrap_err();
    assert_eq!(unknown.code(), Code::NotFound);

    let first = enter(&mut c, "launch", "first").await;
    assert!(first.position <= 1);
    // "first" is admitted within a few scheduler passes.
    let token = first.token.clone();
    let mut c2 = c.clone();
    assert!(
        eventually(Duration::from_secs(5), || {
            let mut c = c2.clone();
            let token = token.clone();
            async move {
                c.get_position(GetPositionRequest { token })
                    .await
                    .unwrap()
                    .into_inner()
                    .state
                    == QueueState::Admitted as i32
            }
        })
        .await
    );
    let mut waiters = Vec::new();
    for i in 0..5 {
        let e = enter(&mut c, "launch", &format!("w{i}")).await;
        assert_eq!(e.state, QueueState::Waiting as i32);
        assert_eq!((e.position, e.people_ahead), (i + 1, i));
        waiters.push(e.token);
    }
    let again = enter(&mut c, "launch", "w3").await;
    assert_eq!(again.position, 4, "entering twice keeps the place");
    let hb = c2
        .heartbeat(HeartbeatRequest {
            token: waiters[4].clone(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(hb.position, 5);
    assert!(hb.estimated_wait.is_some());

    // Forged and tampered tokens are UNAUTHENTICATED everywhere.
    let mut tampered = waiters[0].clone().into_bytes();
    tampered[3] = if tampered[3] == b'A' { b'B' } else { b'A' };
    let tampered = String::from_utf8(tampered).unwrap();
    for bad in [tampered.as_str(), "not-a-token", "a.b"] {
        let e = c
            .get_position(GetPositionRequest { token: bad.into() })
            .await
            .unwrap_err();
        assert_eq!(e.code(), Code::Unauthenticated, "{bad}");
        let e = c
            .leave(LeaveRequest { token: bad.into() })
            .await
            .unwrap_err();
        assert_eq!(e.code(), Code::Unauthenticated);
    }
    let e = c
        .get_position(GetPositionRequest {
            token: String::new(),
        })
        .await
        .unwrap_err();
    assert_eq!(violations(&e), ["token"]);

    // Watch the last waiter from entry to admission while sessions end.
    let mut stream = c
        .watch_position(WatchPositionRequest {
            token: waiters[4].clone(),
        })
        .await
        .unwrap()
        .into_inner();
    let first_msg = stream.message().await.unwrap().unwrap();
    assert_eq!(first_msg.position, 5);
    // Free the room one user at a time: each admission moves w4 up.
    let leaver = {
        let mut c = c.clone();
        let mut tokens = vec![first.token.clone()];
        tokens.extend(waiters[..4].iter().cloned());
        tokio::spawn(async move {
            for t in tokens {
                // Wait for this user's admission, then end the session.
                loop {
                    let p = c
                        .get_position(GetPositionRequest { token: t.clone() })
                        .await
                        .unwrap()
                        .into_inner();
                    if p.state == QueueState::Admitted as i32 {
                        break;
                    }
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
                assert!(
                    c.leave(LeaveRequest { token: t })
                        .await
                        .unwrap()
                        .into_inner()
                        .left
                );
            }
        })
    };
    let mut positions = vec![first_msg.position];
    let admitted = loop {
        let msg = tokio::time::timeout(Duration::from_secs(10), stream.message())
            .await
            .expect("a push")
            .unwrap()
            .expect("the stream ends after admission");
        if msg.state == QueueState::Admitted as i32 {
            break msg;
        }
        assert_eq!(msg.state, QueueState::Waiting as i32);
        positions.push(msg.position);
    };
    leaver.await.unwrap();
    assert!(stream.message().await.unwrap().is_none(), "ended");
    assert!(
        positions.windows(2).all(|w| w[1] < w[0]),
        "strictly decreasing: {positions:?}"
    );
    assert_eq!(positions.first(), Some(&5));
    assert!(admitted.admission_expire_time.is_some());

    // The admission token opens the protected endpoint of this room only.
    let ok = c
        .verify_admission(VerifyAdmissionRequest {
            token: admitted.admission_token.clone(),
            room_id: "launch".into(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(ok.user_id, "w4");
    let other = c
        .verify_admission(VerifyAdmissionRequest {
            token: admitted.admission_token.clone(),
            room_id: "elsewhere".into(),
        })
        .await
        .unwrap_err();
    assert_eq!(other.code(), Code::PermissionDenied);
    let waiting_token = c
        .verify_admission(VerifyAdmissionRequest {
            token: waiters[4].clone(),
            room_id: "launch".into(),
        })
        .await
        .unwrap_err();
    assert_eq!(waiting_token.code(), Code::Unauthenticated);
    c.leave(LeaveRequest {
        token: admitted.admission_token.clone(),
    })
    .await
    .unwrap();
    let ended = c
        .verify_admission(VerifyAdmissionRequest {
            token: admitted.admission_token,
            room_id: "launch".into(),
        })
        .await
        .unwrap_err();
    assert_eq!(ended.code(), Code::Unauthenticated);

    let stats = c
        .get_room(GetRoomRequest {
            room_id: "launch".into(),
        })
        .await
        .unwrap()
        .into_inner()
        .stats
        .unwrap();
    assert_eq!((stats.served, stats.waiting, stats.active), (6, 0, 0));
    let updated = c
        .update_room(admin(UpdateRoomRequest {
            room: Some(room("launch", 10, 5.0)),
        }))
        .await
        .unwrap()
        .into_inner()
        .room
        .unwrap();
    assert_eq!(updated.capacity, 10);
    mesh.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_instances_share_rooms_never_exceed_capacity_and_accept_rotated_keys() {
    let redis = redis().await;
    // Instance a signs with k1; b was rotated to k2 and still accepts k1.
    let a = start(queue_config(&redis.url(), K1, &[])).await;
    let b = start(queue_config(&redis.url(), K2, &[K1])).await;
    let mut ca = queue_client(&a).await;
    let mut cb = queue_client(&b).await;
    ca.create_room(admin(CreateRoomRequest {
        room: Some(room("shared", 3, 1000.0)),
    }))
    .await
    .unwrap();
    let mut tokens = Vec::new();
    for i in 0..30 {
        let c = if i % 2 == 0 { &mut ca } else { &mut cb };
        tokens.push(enter(c, "shared", &format!("u{i:02}")).await.token);
    }
    let from_a = tokens[0].clone();
    // b accepts a's (k1) token; a does not know k2.
    assert!(
        cb.get_position(GetPositionRequest {
            token: from_a.clone()
        })
        .await
        .is_ok()
    );
    let e = ca
        .get_position(GetPositionRequest {
            token: tokens[1].clone(),
        })
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::Unauthenticated);

    // Both schedulers run; sessions are ended as soon as they start.
    let mut served = 0;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    while served < 30 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "served only {served}"
        );
        let stats = cb
            .get_room(GetRoomRequest {
                room_id: "shared".into(),
            })
            .await
            .unwrap()
            .into_inner()
            .stats
            .unwrap();
        assert!(stats.active <= 3, "capacity exceeded: {}", stats.active);
        served = stats.served;
        for (i, t) in tokens.iter().enumerate() {
            let c = if i % 2 == 0 { &mut ca } else { &mut cb };
            let p = c
                .get_position(GetPositionRequest { token: t.clone() })
                .await
                .unwrap()
                .into_inner();
            if p.state == QueueState::Admitted as i32 {
                c.leave(LeaveRequest { token: t.clone() }).await.unwrap();
            }
        }
    }
    a.stop().await.unwrap();
    b.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_room_linked_to_a_campaign_stops_and_tells_waiters_when_it_sells_out() {
    use tickmesh_api::coupon::coupon_issue_service_client::CouponIssueServiceClient;
    use tickmesh_api::coupon::{Campaign, CreateCampaignRequest, IssueRequest};
    let redis = redis().await;
    let mut cfg = queue_config(&redis.url(), K1, &[]);
    cfg.services.enabled = vec!["queue".into(), "coupon".into()];
    cfg.queue.stock_check_interval = Duration::from_millis(100);
    cfg.coupon.store_path = temp_path("coupon.redb");
    let mesh = start(cfg).await;
    let mut coupons = CouponIssueServiceClient::connect(mesh.endpoint())
        .await
        .unwrap();
    let now = tickmesh_runtime::proto_time::now_nanos();
    coupons
        .create_campaign(admin(CreateCampaignRequest {
            campaign: Some(Campaign {
                id: "spring-sale".into(),
                total_stock: 1,
                per_user_limit: 1,
                start_time: Some(tickmesh_runtime::proto_time::nanos_to_timestamp(
                    now - 60_000_000_000,
                )),
                end_time: Some(tickmesh_runtime::proto_time::nanos_to_timestamp(
                    now + 3_600_000_000_000,
                )),
                ..Default::default()
            }),
        }))
        .await
        .unwrap();
    let mut c = queue_client(&mesh).await;
    let mut r = room("sale-line", 1, 50.0);
    r.campaign_id = "spring-sale".into();
    c.create_room(admin(CreateRoomRequest { room: Some(r) }))
        .await
        .unwrap();
    let buyer = enter(&mut c, "sale-line", "buyer").await;
    let waiter = enter(&mut c, "sale-line", "waiter").await;
    let mut stream = c
        .watch_position(WatchPositionRequest {
            token: waiter.token.clone(),
        })
        .await
        .unwrap()
        .into_inner();
    let first = stream.message().await.unwrap().unwrap();
    assert_eq!(first.state, QueueState::Waiting as i32);

    // The admitted buyer takes the last coupon.
    let buyer_token = buyer.token.clone();
    let mut c2 = c.clone();
    assert!(
        eventually(Duration::from_secs(5), || {
            let mut c = c2.clone();
            let token = buyer_token.clone();
            async move {
                c.get_position(GetPositionRequest { token })
                    .await
                    .unwrap()
                    .into_inner()
                    .state
                    == QueueState::Admitted as i32
            }
        })
        .await
    );
    coupons
        .issue(IssueRequest {
            campaign_id: "spring-sale".into(),
            user_id: "buyer".into(),
            request_id: "buyer-1".into(),
        })
        .await
        .unwrap();
    // Waiting (position 1 once the buyer is in), then SOLD_OUT.
    loop {
        let msg = tokio::time::timeout(Duration::from_secs(5), stream.message())
            .await
            .expect("sold-out pushed")
            .unwrap()
            .unwrap();
        if msg.state == QueueState::SoldOut as i32 {
            break;
        }
        assert_eq!((msg.state, msg.position), (QueueState::Waiting as i32, 1));
    }
    assert!(stream.message().await.unwrap().is_none(), "ended");
    // The buyer leaves; the room stays closed to the waiter and newcomers.
    c2.leave(LeaveRequest { token: buyer.token }).await.unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;
    let p = c2
        .get_position(GetPositionRequest {
            token: waiter.token,
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(p.state, QueueState::SoldOut as i32);
    let late = enter(&mut c, "sale-line", "late").await;
    assert_eq!(late.state, QueueState::SoldOut as i32);
    let stats = c
        .get_room(GetRoomRequest {
            room_id: "sale-line".into(),
        })
        .await
        .unwrap()
        .into_inner()
        .stats
        .unwrap();
    assert!(stats.sold_out);
    assert_eq!((stats.served, stats.waiting), (1, 1));
    mesh.stop().await.unwrap();
}
