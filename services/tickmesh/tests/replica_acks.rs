//! `ranking.replica_acks` and `queue.replica_acks` on a real Redis Cluster (3
//! masters, each with a replica): with the setting on, what a call
//! acknowledges is already on the replica of its entity's master; with that
//! replica killed, the call answers UNAVAILABLE naming the setting (and a
//! batch is refused when any of its boards' masters cannot confirm); with the
//! setting off, the same call succeeds.

mod common;

use std::time::Duration;

use common::*;
use tickmesh_api::queue::queue_service_client::QueueServiceClient;
use tickmesh_api::queue::{
    CreateRoomRequest, EnterRequest, GetPositionRequest, LeaveRequest, QueueState, Room,
};
use tickmesh_api::ranking::ranking_service_client::RankingServiceClient;
use tickmesh_api::ranking::{
    Board, Order, RecordEventRequest, RecordEventsRequest, RemoveMemberRequest, ScoreOperator,
    UpsertBoardRequest, WindowKind,
};
use tickmesh_runtime::Config;
use tonic::{Code, Request};

const TOKEN: &str = "s3cret";
/// How long a write waits for its replica here: short, so the refused calls
/// answer quickly.
const ACK_TIMEOUT: Duration = Duration::from_millis(300);

fn admin<T>(message: T) -> Request<T> {
    let mut r = Request::new(message);
    r.metadata_mut()
        .insert("authorization", format!("Bearer {TOKEN}").parse().unwrap());
    r
}

fn mesh_config(url: &str, service: &str, replica_acks: &str) -> Config {
    let mut cfg = config(url);
    cfg.services.enabled = vec![service.into()];
    cfg.auth.admin_token = TOKEN.into();
    cfg.ranking.replica_acks = replica_acks.into();
    cfg.ranking.replica_ack_timeout = ACK_TIMEOUT;
    cfg.queue.replica_acks = replica_acks.into();
    cfg.queue.replica_ack_timeout = ACK_TIMEOUT;
    cfg.queue.token_key = "k1:0123456789abcdef0123456789abcdef".into();
    cfg.queue.admission_interval = Duration::from_millis(20);
    cfg
}

/// A connection to the replica of the master that serves `key` now, in
/// READONLY mode (it answers reads of its master's slots), and its port.
async fn replica_of(cluster: &RedisCluster, key: &str) -> (redis::aio::MultiplexedConnection, u16) {
    let master = cluster.master_of(key).await.unwrap();
    let port = cluster
        .topology()
        .await
        .unwrap()
        .into_iter()
        .find(|n| n.master_id.as_deref() == Some(master.id.as_str()) && !n.failed)
        .expect("the master has a replica")
        .port;
    let client = redis::Client::open(format!("redis://127.0.0.1:{port}")).unwrap();
    let mut conn = client.get_multiplexed_async_connection().await.unwrap();
    let _: () = redis::cmd("READONLY").query_async(&mut conn).await.unwrap();
    (conn, port)
}

/// Asserts that `status` is the refusal of an unconfirmed write.
fn assert_unconfirmed(status: &tonic::Status, setting: &str) {
    assert_eq!(status.code(), Code::Unavailable, "{status:?}");
    assert!(
        status.message().contains(setting) && status.message().contains("may or may not stand"),
        "{status:?}"
    );
}

fn board(id: &str) -> Board {
    Board {
        id: id.into(),
        order: Order::HigherFirst as i32,
        operator: ScoreOperator::Increment as i32,
        windows: vec![WindowKind::AllTime as i32],
        ..Default::default()
    }
}

fn event(board: &str, member: &str, id: &str) -> RecordEventRequest {
    RecordEventRequest {
        board_id: board.into(),
        member: member.into(),
        delta: "1".into(),
        event_id: id.into(),
        ..Default::default()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ranking_writes_wait_for_the_replica_of_each_boards_master() {
    let mut cluster = RedisCluster::start(3, 1, Duration::from_millis(1000))
        .await
        .expect("a local Redis Cluster (apt-get install -y redis-server)");
    let url = cluster.url();
    let keys = tickmesh_ranking::keys::Keys::new("tm");
    // Two boards whose keys live on different masters.
    let alpha = "alpha";
    let alpha_master = cluster.master_of(&keys.ack_fence(alpha)).await.unwrap();
    let mut beta = None;
    for n in 0..100 {
        let id = format!("beta{n}");
        if cluster.master_of(&keys.ack_fence(&id)).await.unwrap().id != alpha_master.id {
            beta = Some(id);
            break;
        }
    }
    let beta = beta.expect("a board on another master");
    let waits = start(mesh_config(&url, "ranking", "1")).await;
    let plain = start(mesh_config(&url, "ranking", "off")).await;
    let mut c = RankingServiceClient::connect(waits.endpoint())
        .await
        .unwrap();

    // (a) What is acknowledged is on the replicas.
    for id in [alpha, beta.as_str()] {
        c.upsert_board(admin(UpsertBoardRequest {
            board: Some(board(id)),
        }))
        .await
        .unwrap();
    }
    let (mut boards_replica, _) = replica_of(&cluster, &keys.boards()).await;
    for id in [alpha, beta.as_str()] {
        let def: Option<String> = redis::cmd("HGET")
            .arg(keys.boards())
            .arg(id)
            .query_async(&mut boards_replica)
            .await
            .unwrap();
        assert!(def.is_some(), "board {id} is on the replica");
    }
    let recorded = c
        .record_events(RecordEventsRequest {
            events: vec![event(alpha, "m1", "e1"), event(&beta, "m1", "e2")],
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(recorded.recorded, 2);
    for id in [alpha, beta.as_str()] {
        let (mut replica, _) = replica_of(&cluster, &keys.ack_fence(id)).await;
        let entry: Option<String> = redis::cmd("HGET")
            .arg(keys.members(id, "all"))
            .arg("m1")
            .query_async(&mut replica)
            .await
            .unwrap();
        assert!(entry.is_some(), "the event on board {id} is on the replica");
    }

    // (b) The replica of alpha's master gone: writes to alpha are refused.
    let (_, alpha_replica) = replica_of(&cluster, &keys.ack_fence(alpha)).await;
    cluster.kill(alpha_replica).await;
    let refused = c.record_event(event(alpha, "m2", "e3")).await.unwrap_err();
    assert_unconfirmed(&refused, "ranking.replica_acks");
    assert!(
        refused.message().contains("same event ids is safe"),
        "{refused:?}"
    );
    // A batch is refused when any board's master cannot confirm its part…
    let refused = c
        .record_events(RecordEventsRequest {
            events: vec![event(&beta, "m2", "e4"), event(alpha, "m2", "e5")],
        })
        .await
        .unwrap_err();
    assert_unconfirmed(&refused, "ranking.replica_acks");
    // …while a board on another master is still confirmed, and the retried
    // duplicate (its board's fence confirmed again) answers the same.
    let again = c
        .record_event(event(&beta, "m2", "e4"))
        .await
        .unwrap()
        .into_inner();
    assert!(again.duplicate);
    let removed = c
        .remove_member(RemoveMemberRequest {
            board_id: alpha.into(),
            member: "m1".into(),
        })
        .await
        .unwrap_err();
    assert_unconfirmed(&removed, "ranking.replica_acks");

    // (c) With the setting off, the same write is answered at once.
    let mut p = RankingServiceClient::connect(plain.endpoint())
        .await
        .unwrap();
    let r = p
        .record_event(event(alpha, "m3", "e6"))
        .await
        .unwrap()
        .into_inner();
    assert!(!r.duplicate);
    waits.abort();
    plain.abort();
}

fn room(id: &str) -> Room {
    Room {
        id: id.into(),
        capacity: 1,
        admissions_per_second: 100.0,
        session_duration: Some(prost_types::Duration {
            seconds: 60,
            nanos: 0,
        }),
        ..Default::default()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn queue_places_and_admissions_wait_for_the_replica_of_the_rooms_master() {
    let mut cluster = RedisCluster::start(3, 1, Duration::from_millis(1000))
        .await
        .expect("a local Redis Cluster (apt-get install -y redis-server)");
    let url = cluster.url();
    let keys = tickmesh_queue::keys::Keys::new("tm");
    let waits = start(mesh_config(&url, "queue", "1")).await;
    let plain = start(mesh_config(&url, "queue", "off")).await;
    let mut c = QueueServiceClient::connect(waits.endpoint()).await.unwrap();
    let enter = |user: &str| EnterRequest {
        room_id: "launch".into(),
        user_id: user.into(),
    };

    // (a) The room, places, admissions and departures acknowledged are on
    // the replica of the room's master.
    c.create_room(admin(CreateRoomRequest {
        room: Some(room("launch")),
    }))
    .await
    .unwrap();
    let (mut replica, replica_port) = replica_of(&cluster, &keys.room("launch")).await;
    let def: Option<String> = redis::cmd("HGET")
        .arg(keys.room("launch"))
        .arg("def")
        .query_async(&mut replica)
        .await
        .unwrap();
    assert!(def.is_some(), "the room is on the replica");
    let first = c.enter(enter("u1")).await.unwrap().into_inner();
    let placed: (Option<f64>, Option<f64>) = redis::pipe()
        .cmd("ZSCORE")
        .arg(keys.waiting("launch"))
        .arg("u1")
        .cmd("ZSCORE")
        .arg(keys.active("launch"))
        .arg("u1")
        .query_async(&mut replica)
        .await
        .unwrap();
    assert!(
        placed.0.is_some() || placed.1.is_some(),
        "u1's place is on the replica"
    );
    // u1 is admitted by a pass (capacity 1); the token is handed out only
    // once the admission is on the replica.
    let mut admitted = None;
    for _ in 0..100 {
        let p = c
            .get_position(GetPositionRequest {
                token: first.token.clone(),
            })
            .await
            .unwrap()
            .into_inner();
        if p.state == QueueState::Admitted as i32 {
            admitted = Some(p);
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(!admitted.expect("u1 is admitted").admission_token.is_empty());
    let session: Option<f64> = redis::cmd("ZSCORE")
        .arg(keys.active("launch"))
        .arg("u1")
        .query_async(&mut replica)
        .await
        .unwrap();
    assert!(session.is_some(), "u1's admission is on the replica");
    let second = c.enter(enter("u2")).await.unwrap().into_inner();
    assert_eq!(
        second.state,
        QueueState::Waiting as i32,
        "capacity 1 is taken"
    );
    assert!(
        c.leave(LeaveRequest {
            token: second.token.clone(),
        })
        .await
        .unwrap()
        .into_inner()
        .left
    );
    let gone: Option<f64> = redis::cmd("ZSCORE")
        .arg(keys.waiting("launch"))
        .arg("u2")
        .query_async(&mut replica)
        .await
        .unwrap();
    assert_eq!(gone, None, "u2's departure is on the replica");

    // (b) The room's master without its replica: Enter, the admission token
    // and Leave are refused.
    cluster.kill(replica_port).await;
    let refused = c.enter(enter("u3")).await.unwrap_err();
    assert_unconfirmed(&refused, "queue.replica_acks");
    assert!(
        refused.message().contains("entering again is safe"),
        "{refused:?}"
    );
    let refused = c
        .get_position(GetPositionRequest {
            token: first.token.clone(),
        })
        .await
        .unwrap_err();
    assert_unconfirmed(&refused, "queue.replica_acks");
    let refused = c
        .leave(LeaveRequest {
            token: second.token.clone(),
        })
        .await
        .unwrap_err();
    assert_unconfirmed(&refused, "queue.replica_acks");

    // (c) With the setting off, the same calls are answered at once.
    let mut p = QueueServiceClient::connect(plain.endpoint()).await.unwrap();
    let r = p.enter(enter("u4")).await.unwrap().into_inner();
    assert_eq!(r.state, QueueState::Waiting as i32);
    let r = p
        .get_position(GetPositionRequest { token: first.token })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(r.state, QueueState::Admitted as i32);
    waits.abort();
    plain.abort();
}
