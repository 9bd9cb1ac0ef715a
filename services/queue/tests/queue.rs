//! The queue domain on a real redis-server with a manual clock: FIFO under
//! concurrent entry, racing schedulers, expiry, random pre-queue, sold-out,
//! WatchPosition and admission tokens.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};
use std::time::Duration;

use async_trait::async_trait;
use tickmesh_core::Error;
use tickmesh_queue::Queue;
use tickmesh_queue::clock::ManualClock;
use tickmesh_queue::places::Standing;
use tickmesh_queue::room::{Method, RoomRequest};
use tickmesh_queue::stock::StockSource;
use tickmesh_queue::token::Keyring;
use tickmesh_runtime::RedisHandle;
use tickmesh_runtime::config::{QueueConfig, RedisConfig};
use tickmesh_runtime::redis_server::RedisServer;
use tokio_util::sync::CancellationToken;

const T0: i64 = 1_800_000_000_000;
const KEY: &str = "k1:0123456789abcdef0123456789abcdef";

async fn redis() -> RedisServer {
    RedisServer::start_ephemeral()
        .await
        .expect("start redis-server (apt-get install -y redis-server)")
}

fn handle(url: &str) -> RedisHandle {
    RedisHandle::new(&RedisConfig {
        url: url.into(),
        key_prefix: "t".into(),
        ..Default::default()
    })
    .unwrap()
}

fn queue_with(
    url: &str,
    clock: Arc<ManualClock>,
    stock: Option<Arc<dyn StockSource>>,
) -> Arc<Queue> {
    let config = QueueConfig {
        watch_interval: Duration::from_millis(20),
        ..Default::default()
    };
    Queue::new(
        config,
        handle(url),
        Keyring::new(KEY, &[]).unwrap(),
        clock,
        stock,
        CancellationToken::new(),
    )
}

fn room(id: &str, capacity: i64, rate: f64) -> RoomRequest {
    RoomRequest {
        id: id.into(),
        capacity,
        admissions_per_second: rate,
        session_ms: Some(Ok(60_000)),
        position_expiry_ms: Some(Ok(30_000)),
        ..Default::default()
    }
}

async fn raw(url: &str) -> redis::aio::MultiplexedConnection {
    redis::Client::open(url)
        .unwrap()
        .get_multiplexed_async_connection()
        .await
        .unwrap()
}

async fn active_count(url: &str, room: &str) -> u64 {
    redis::cmd("ZCARD")
        .arg(format!("t:queue:{{{room}}}:active"))
        .query_async(&mut raw(url).await)
        .await
        .unwrap()
}

fn position(s: &Standing) -> u64 {
    match s {
        Standing::Waiting { ahead, .. } => ahead + 1,
        other => panic!("expected waiting, got {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fifo_is_kept_under_concurrent_entry_and_entering_twice_keeps_the_place() {
    let redis = redis().await;
    let clock = ManualClock::new(T0);
    let q = queue_with(&redis.url(), clock.clone(), None);
    q.create_room(room("launch", 1000, 20.0)).await.unwrap();

    let mut tasks = Vec::new();
    for i in 0..200 {
        let q = q.clone();
        tasks.push(tokio::spawn(async move {
            let user = format!("user-{i}");
            let (_, place) = q.enter("launch", &user).await.unwrap();
            (user, position(&place.standing))
        }));
    }
    let mut by_position: HashMap<u64, String> = HashMap::new();
    for t in tasks {
        let (user, pos) = t.await.unwrap();
        assert!(
            by_position.insert(pos, user).is_none(),
            "position {pos} given twice"
        );
    }
    let mut positions: Vec<u64> = by_position.keys().copied().collect();
    positions.sort();
    assert_eq!(
        positions,
        (1..=200).collect::<Vec<_>>(),
        "no gap, no duplicate"
    );
    // Entering again finds the same place.
    let (_, again) = q.enter("launch", &by_position[&17]).await.unwrap();
    assert_eq!(position(&again.standing), 17);

    // Admission follows the positions: after each pass, exactly the first
    // `served` positions are admitted.
    let mut served = 0u64;
    while served < 200 {
        clock.advance(Duration::from_millis(500));
        let outcome = q.admit("launch").await.unwrap().unwrap();
        assert!(outcome.admitted <= 20, "at most one second's worth at once");
        served += outcome.admitted;
        for pos in [1, served.max(1), served + 1, 200] {
            let Some(user) = by_position.get(&pos) else {
                continue;
            };
            let s = q.standing("launch", user).await.unwrap();
            if pos <= served {
                assert!(
                    matches!(s, Standing::Admitted { .. }),
                    "position {pos}: {s:?}"
                );
            } else {
                assert_eq!(
                    position(&s),
                    pos - served,
                    "position {pos} moved up by {served}"
                );
            }
        }
    }
    let (_, stats) = q.get_room("launch").await.unwrap();
    assert_eq!((stats.served, stats.waiting, stats.active), (200, 0, 200));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_racing_schedulers_never_exceed_capacity_nor_skip_anyone() {
    let redis = redis().await;
    let url = redis.url();
    let clock = ManualClock::new(T0);
    let a = queue_with(&url, clock.clone(), None);
    let b = queue_with(&url, clock.clone(), None);
    a.create_room(room("race", 7, 1000.0)).await.unwrap();
    let mut order = Vec::new();
    for i in 0..300 {
        let user = format!("u{i:03}");
        a.enter("race", &user).await.unwrap();
        order.push(user);
    }
    let stop = CancellationToken::new();
    let mut schedulers = Vec::new();
    for q in [a.clone(), b.clone()] {
        let stop = stop.clone();
        let clock = clock.clone();
        schedulers.push(tokio::spawn(async move {
            let mut passes = 0;
            while !stop.is_cancelled() {
                clock.advance(Duration::from_millis(3));
                q.admit("race").await.unwrap();
                passes += 1;
            }
            passes
        }));
    }
    // Sessions end (Leave) as fast as a third party can make them, while the
    // checker watches capacity and the FIFO order.
    let mut admitted_so_far = 0usize;
    let mut conn = raw(&url).await;
    while admitted_so_far < order.len() {
        let active: Vec<String> = redis::cmd("ZRANGE")
            .arg("t:queue:{race}:active")
            .arg(0)
            .arg(-1)
            .query_async(&mut conn)
            .await
            .unwrap();
        assert!(active.len() <= 7, "capacity exceeded: {}", active.len());
        let head: Vec<String> = redis::cmd("ZRANGE")
            .arg("t:queue:{race}:wait")
            .arg(0)
            .arg(0)
            .query_async(&mut conn)
            .await
            .unwrap();
        let head_index = head
            .first()
            .map(|h| order.iter().position(|u| u == h).unwrap())
            .unwrap_or(order.len());
        // Everyone before the head has been admitted, nobody after it.
        admitted_so_far = head_index;
        for user in &active {
            let i = order.iter().position(|u| u == user).unwrap();
            assert!(i < head_index, "{user} admitted ahead of {head:?}");
        }
        if let Some(user) = active.first() {
            let (token, _) = a.enter("race", user).await.unwrap();
            assert!(a.leave(&token).await.unwrap());
        }
    }
    stop.cancel();
    let mut total_passes = 0;
    for s in schedulers {
        total_passes += s.await.unwrap();
    }
    assert!(total_passes > 20, "both schedulers ran");
    let (_, stats) = a.get_room("race").await.unwrap();
    assert_eq!(stats.served, 300, "everyone admitted exactly once");
    assert!(active_count(&url, "race").await <= 7);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn abandoned_places_and_ended_sessions_expire_by_the_clock() {
    let redis = redis().await;
    let clock = ManualClock::new(T0);
    let q = queue_with(&redis.url(), clock.clone(), None);
    let mut r = room("expiry", 1, 100.0);
    r.session_ms = Some(Ok(20_000));
    r.position_expiry_ms = Some(Ok(5_000));
    q.create_room(r).await.unwrap();
    let (ta, _) = q.enter("expiry", "a").await.unwrap();
    let (tb, _) = q.enter("expiry", "b").await.unwrap();
    let (tc, _) = q.enter("expiry", "c").await.unwrap();
    let (td, _) = q.enter("expiry", "d").await.unwrap();
    clock.advance(Duration::from_millis(100));
    assert_eq!(q.admit("expiry").await.unwrap().unwrap().admitted, 1);
    assert!(matches!(
        q.position(&ta).await.unwrap().standing,
        Standing::Admitted { .. }
    ));

    // b and d keep their places by heartbeat; c stops.
    for _ in 0..3 {
        clock.advance(Duration::from_secs(3));
        q.heartbeat(&tb).await.unwrap();
        q.heartbeat(&td).await.unwrap();
        let o = q.admit("expiry").await.unwrap().unwrap();
        assert_eq!(o.admitted, 0, "capacity 1 is taken");
    }
    assert_eq!(
        q.position(&tc).await.unwrap().standing,
        Standing::NotInQueue
    );
    assert_eq!(
        position(&q.position(&td).await.unwrap().standing),
        2,
        "c left the line"
    );

    // a's session ends 20 s after admission: b takes the room.
    clock.advance(Duration::from_secs(11));
    q.heartbeat(&tb).await.unwrap();
    q.heartbeat(&td).await.unwrap();
    let o = q.admit("expiry").await.unwrap().unwrap();
    assert_eq!((o.sessions_ended, o.admitted), (1, 1));
    assert_eq!(
        q.position(&ta).await.unwrap().standing,
        Standing::NotInQueue
    );
    assert!(matches!(
        q.position(&tb).await.unwrap().standing,
        Standing::Admitted { .. }
    ));
    assert_eq!(position(&q.position(&td).await.unwrap().standing), 1);
    // c enters again: a new place at the back.
    let (_, c) = q.enter("expiry", "c").await.unwrap();
    assert_eq!(position(&c.standing), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn random_pre_queue_is_shuffled_at_the_opening_ahead_of_later_entrants() {
    let redis = redis().await;
    let clock = ManualClock::new(T0);
    let q = queue_with(&redis.url(), clock.clone(), None);
    let mut r = room("drop", 1000, 1.0);
    r.method = Some(Method::RandomPreQueue);
    r.open_time_ms = Some(Ok(T0 + 60_000));
    q.create_room(r).await.unwrap();
    let mut tokens = Vec::new();
    for i in 0..50 {
        let (token, place) = q.enter("drop", &format!("early-{i}")).await.unwrap();
        assert_eq!(
            place.standing,
            Standing::PreQueue {
                opens_in_ms: 60_000
            }
        );
        tokens.push(token);
    }
    assert_eq!(
        q.admit("drop").await.unwrap().unwrap().admitted,
        0,
        "not open yet"
    );
    clock.advance(Duration::from_secs(60));
    // The first call after the opening (here an Enter) shuffles.
    let (_, late) = q.enter("drop", "late").await.unwrap();
    assert_eq!(position(&late.standing), 51, "behind the whole pre-queue");
    let mut positions = Vec::new();
    for t in &tokens {
        positions.push(position(&q.position(t).await.unwrap().standing));
    }
    let in_entry_order = positions.clone();
    positions.sort();
    assert_eq!(positions, (1..=50).collect::<Vec<_>>());
    assert_ne!(
        in_entry_order, positions,
        "shuffled (1 in 50! to fail by chance)"
    );
    assert!(
        q.update_room({
            let mut r = room("drop", 1000, 1.0);
            r.method = Some(Method::Fifo);
            r
        })
        .await
        .is_err(),
        "the method cannot change once open"
    );
}

struct TestStock(AtomicI64);

#[async_trait]
impl StockSource for TestStock {
    async fn remaining(&self, campaign_id: &str) -> tickmesh_core::Result<i64> {
        assert_eq!(campaign_id, "spring-sale");
        Ok(self.0.load(Ordering::SeqCst))
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sold_out_campaign_stops_admission_and_tells_waiters() {
    let redis = redis().await;
    let clock = ManualClock::new(T0);
    let stock = Arc::new(TestStock(AtomicI64::new(3)));
    let q = queue_with(&redis.url(), clock.clone(), Some(stock.clone()));
    let mut r = room("sale", 100, 2.0);
    r.campaign_id = "spring-sale".into();
    q.create_room(r).await.unwrap();
    let mut tokens = Vec::new();
    for i in 0..10 {
        tokens.push(q.enter("sale", &format!("u{i}")).await.unwrap().0);
    }
    q.check_stock().await.unwrap();
    clock.advance(Duration::from_secs(1));
    assert_eq!(q.admit("sale").await.unwrap().unwrap().admitted, 2);
    let mut watch = q.watch(&tokens[9]).await.unwrap();
    let first = watch.recv().await.unwrap().unwrap();
    assert_eq!(position(&first.standing), 8);

    stock.0.store(0, Ordering::SeqCst);
    q.check_stock().await.unwrap();
    clock.advance(Duration::from_secs(5));
    assert_eq!(
        q.admit("sale").await.unwrap().unwrap().admitted,
        0,
        "sold out"
    );
    let last = tokio::time::timeout(Duration::from_secs(5), watch.recv())
        .await
        .expect("sold-out pushed")
        .unwrap()
        .unwrap();
    assert_eq!(last.standing, Standing::SoldOut);
    assert!(watch.recv().await.is_none(), "the stream ends");
    assert_eq!(
        q.position(&tokens[5]).await.unwrap().standing,
        Standing::SoldOut
    );
    assert!(
        matches!(
            q.position(&tokens[0]).await.unwrap().standing,
            Standing::Admitted { .. }
        ),
        "admitted users keep their session"
    );
    let (_, place) = q.enter("sale", "newcomer").await.unwrap();
    assert_eq!(place.standing, Standing::SoldOut);
    let (_, stats) = q.get_room("sale").await.unwrap();
    assert!(stats.sold_out);
    assert_eq!(stats.waiting, 8, "the newcomer was not put in line");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn watch_position_pushes_decreasing_positions_then_the_admission() {
    let redis = redis().await;
    let clock = ManualClock::new(T0);
    let q = queue_with(&redis.url(), clock.clone(), None);
    q.create_room(room("watch", 1000, 2.0)).await.unwrap();
    let mut token = String::new();
    for i in 0..20 {
        token = q.enter("watch", &format!("u{i}")).await.unwrap().0;
    }
    let mut watch = q.watch(&token).await.unwrap();
    let driver = {
        let q = q.clone();
        let clock = clock.clone();
        tokio::spawn(async move {
            for _ in 0..40 {
                clock.advance(Duration::from_millis(500));
                q.admit("watch").await.unwrap();
                tokio::time::sleep(Duration::from_millis(30)).await;
            }
        })
    };
    let mut seen = Vec::new();
    let admitted = loop {
        let place = tokio::time::timeout(Duration::from_secs(10), watch.recv())
            .await
            .expect("a push")
            .expect("the stream ends only after admission")
            .unwrap();
        match place.standing {
            Standing::Waiting { .. } => {
                let pushed = position(&place.standing);
                // Never ahead of the truth (positions only fall meanwhile).
                let now = q.standing("watch", "u19").await.unwrap();
                if let Standing::Waiting { .. } = now {
                    assert!(pushed >= position(&now), "pushed {pushed}, truth {now:?}");
                }
                seen.push(pushed)
            }
            Standing::Admitted { expires_ms, .. } => break (place.admission_token, expires_ms),
            other => panic!("unexpected {other:?}"),
        }
    };
    driver.await.unwrap();
    assert!(
        watch.recv().await.is_none(),
        "the stream ends after admission"
    );
    assert_eq!(seen[0], 20);
    assert!(
        seen.windows(2).all(|w| w[1] < w[0]),
        "strictly decreasing: {seen:?}"
    );
    assert!(seen.len() >= 3, "several positions pushed: {seen:?}");
    let (admission_token, expires_ms) = admitted;
    let claims = q.verify_admission(&admission_token, "watch").await.unwrap();
    assert_eq!(
        (claims.user.as_str(), claims.expires_ms),
        ("u19", expires_ms)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn admission_tokens_are_checked_and_forgeries_refused() {
    let redis = redis().await;
    let clock = ManualClock::new(T0);
    let q = queue_with(&redis.url(), clock.clone(), None);
    q.create_room(room("gate", 10, 10.0)).await.unwrap();
    q.create_room(room("other", 10, 10.0)).await.unwrap();
    let (waiting, _) = q.enter("gate", "alice").await.unwrap();
    clock.advance(Duration::from_secs(1));
    q.admit("gate").await.unwrap();
    let place = q.position(&waiting).await.unwrap();
    let admission = place.admission_token;
    assert!(!admission.is_empty());
    assert_eq!(
        q.verify_admission(&admission, "gate").await.unwrap().user,
        "alice"
    );

    let unauthenticated =
        |r: tickmesh_core::Result<_>| assert!(matches!(r, Err(Error::Unauthenticated(_))), "{r:?}");
    unauthenticated(q.verify_admission(&waiting, "gate").await.map(|_| ()));
    let mut tampered = admission.clone().into_bytes();
    tampered[5] = if tampered[5] == b'A' { b'B' } else { b'A' };
    unauthenticated(
        q.verify_admission(&String::from_utf8(tampered).unwrap(), "gate")
            .await
            .map(|_| ()),
    );
    let forger = Keyring::new("k1:not-the-servers-secret-not-the-servers", &[]).unwrap();
    let forged = forger.sign(&tickmesh_queue::token::Claims {
        kind: tickmesh_queue::token::Kind::Admission,
        room: "gate".into(),
        user: "mallory".into(),
        issued_ms: T0,
        expires_ms: T0 + 3_600_000,
    });
    unauthenticated(q.verify_admission(&forged, "gate").await.map(|_| ()));
    unauthenticated(q.position(&forged).await.map(|_| ()));
    assert!(matches!(
        q.verify_admission(&admission, "other").await,
        Err(Error::PermissionDenied(_))
    ));
    assert!(matches!(
        q.verify_admission("", "gate").await,
        Err(Error::InvalidArgument(_))
    ));
    // The session ends after 60 s: the token expires with it.
    clock.advance(Duration::from_secs(61));
    unauthenticated(q.verify_admission(&admission, "gate").await.map(|_| ()));
    // Leave ends a session early.
    let (w2, _) = q.enter("gate", "bob").await.unwrap();
    q.admit("gate").await.unwrap();
    let t2 = q.position(&w2).await.unwrap().admission_token;
    q.verify_admission(&t2, "gate").await.unwrap();
    assert!(q.leave(&t2).await.unwrap());
    unauthenticated(q.verify_admission(&t2, "gate").await.map(|_| ()));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_input_writes_nothing() {
    let redis = redis().await;
    let url = redis.url();
    let clock = ManualClock::new(T0);
    let q = queue_with(&url, clock.clone(), None);
    let dbsize = || async {
        redis::cmd("DBSIZE")
            .query_async::<u64>(&mut raw(&url).await)
            .await
            .unwrap()
    };
    for bad in [
        room("zero", 0, 1.0),
        room("neg", 10, -1.0),
        room("{x}", 10, 1.0),
    ] {
        assert!(matches!(
            q.create_room(bad).await,
            Err(Error::InvalidArgument(_))
        ));
    }
    assert_eq!(dbsize().await, 0);
    assert!(matches!(
        q.enter("nope", "u").await,
        Err(Error::NotFound(_))
    ));
    assert!(matches!(
        q.update_room(room("nope", 1, 1.0)).await,
        Err(Error::NotFound(_))
    ));
    assert!(matches!(q.get_room("nope").await, Err(Error::NotFound(_))));
    assert_eq!(dbsize().await, 0);
    q.create_room(room("ok", 10, 1.0)).await.unwrap();
    let before = dbsize().await;
    assert!(matches!(
        q.enter("ok", "").await,
        Err(Error::InvalidArgument(_))
    ));
    assert!(matches!(
        q.enter("ok", "a\nb").await,
        Err(Error::InvalidArgument(_))
    ));
    assert!(matches!(
        q.create_room(room("ok", 10, 1.0)).await,
        Err(Error::FailedPrecondition(_))
    ));
    assert_eq!(dbsize().await, before);
}

/// Redis is down (or no instance runs) for longer than the position expiry,
/// then comes back with all its data: nobody could heartbeat meanwhile, so
/// the waiters are not abandoned — the first pass must not expire the whole
/// line. Their places expire again, for those who do not heartbeat, a full
/// position expiry after service resumed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_outage_longer_than_the_position_expiry_does_not_empty_the_line() {
    let dir =
        std::env::temp_dir().join(format!("tickmesh-queue-test-{}-outage", std::process::id()));
    let mut redis =
        RedisServer::start_with(&dir, Some(tickmesh_runtime::redis_server::Fsync::Always))
            .await
            .unwrap();
    let clock = ManualClock::new(T0);
    let q = queue_with(&redis.url(), clock.clone(), None);
    let mut r = room("outage", 10, 10.0); // position expiry 30 s
    r.open_time_ms = Some(Ok(T0 + 3_600_000)); // nobody is admitted yet
    q.create_room(r).await.unwrap();
    let mut tokens = Vec::new();
    for u in 0..5 {
        tokens.push(q.enter("outage", &format!("u{u}")).await.unwrap().0);
    }
    clock.advance(Duration::from_secs(1));
    assert_eq!(q.admit("outage").await.unwrap().unwrap().places_expired, 0);

    redis.kill().await;
    clock.advance(Duration::from_secs(300));
    assert!(
        q.heartbeat(&tokens[0]).await.is_err(),
        "no heartbeat reaches a stopped redis"
    );
    redis.restart().await.unwrap();
    clock.advance(Duration::from_secs(1));
    let mut pass = None;
    for _ in 0..100 {
        if let Ok(p) = q.admit("outage").await {
            pass = p;
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(pass.expect("redis did not come back").places_expired, 0);
    for (u, t) in tokens.iter().enumerate() {
        assert_eq!(
            position(&q.position(t).await.unwrap().standing),
            u as u64 + 1
        );
    }

    // Service resumed: u4 never heartbeats again, the others do.
    for _ in 0..4 {
        clock.advance(Duration::from_secs(10));
        for t in &tokens[..4] {
            q.heartbeat(t).await.unwrap();
        }
        q.admit("outage").await.unwrap();
    }
    assert_eq!(
        q.position(&tokens[4]).await.unwrap().standing,
        Standing::NotInQueue
    );
    for (u, t) in tokens[..4].iter().enumerate() {
        assert_eq!(
            position(&q.position(t).await.unwrap().standing),
            u as u64 + 1
        );
    }
    drop(redis);
    let _ = std::fs::remove_dir_all(dir);
}
