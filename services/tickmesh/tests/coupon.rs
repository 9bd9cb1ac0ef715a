//! CouponIssueService through gRPC on in-process meshes with a real
//! redis-server: admin auth and bad input, outcomes, a mesh killed
//! mid-campaign, Redis killed mid-campaign (AOF), WatchCampaign coalesced to
//! sold out (across instances: `services/coupon/tests/watch.rs`), and the sold-out report to RankingService retried while
//! Ranking is down.

mod common;

use std::collections::{HashMap, HashSet};
use std::time::Duration;

use common::*;
use tickmesh_api::coupon::coupon_issue_service_client::CouponIssueServiceClient;
use tickmesh_api::coupon::{
    Campaign, CampaignState, CreateCampaignRequest, GetCampaignRequest, GetIssuanceRequest,
    IssueOutcome, IssueRequest, ListCampaignsRequest, WatchCampaignRequest,
};
use tickmesh_api::ranking::ranking_service_client::RankingServiceClient;
use tickmesh_api::ranking::{Board, GetTopRequest, Order, ScoreOperator, UpsertBoardRequest};
use tickmesh_runtime::proto_time::{nanos_to_timestamp, now_nanos};
use tickmesh_runtime::redis_server::Fsync;
use tonic::transport::Channel;
use tonic::{Code, Request};
use tonic_types::StatusExt;

type Coupon = CouponIssueServiceClient<Channel>;

const TOKEN: &str = "s3cret";

async fn coupon_client(endpoint: String) -> Coupon {
    CouponIssueServiceClient::connect(endpoint).await.unwrap()
}

fn admin<T>(message: T) -> Request<T> {
    let mut r = Request::new(message);
    r.metadata_mut()
        .insert("authorization", format!("Bearer {TOKEN}").parse().unwrap());
    r
}

/// A campaign that started a second ago and runs for an hour.
fn open_campaign(id: &str, stock: i64) -> Campaign {
    let now = now_nanos();
    Campaign {
        id: id.into(),
        total_stock: stock,
        per_user_limit: 1,
        start_time: Some(nanos_to_timestamp(now - 1_000_000_000)),
        end_time: Some(nanos_to_timestamp(now + 3_600_000_000_000)),
        ..Default::default()
    }
}

fn issue(campaign: &str, user: &str, request: &str) -> IssueRequest {
    IssueRequest {
        campaign_id: campaign.into(),
        user_id: user.into(),
        request_id: request.into(),
    }
}

fn coupon_config(redis_url: &str, store: &str) -> tickmesh_runtime::config::Config {
    let mut cfg = config(redis_url);
    cfg.coupon.store_path = store.into();
    cfg.coupon.claim_after = Duration::from_millis(300);
    cfg.coupon.persist_interval = Duration::from_millis(20);
    cfg.coupon.report_interval = Duration::from_millis(100);
    cfg.coupon.watch_interval = Duration::from_millis(50);
    cfg
}

fn violations(status: &tonic::Status) -> Vec<String> {
    status
        .get_error_details()
        .bad_request()
        .map(|b| b.field_violations.iter().map(|v| v.field.clone()).collect())
        .unwrap_or_default()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn campaigns_and_issue_through_grpc() {
    let redis = redis().await;
    let mut cfg = coupon_config(&redis.url(), &temp_path("coupon.redb"));
    cfg.auth.admin_token = TOKEN.into();
    let mesh = start(cfg).await;
    let mut c = coupon_client(mesh.endpoint()).await;

    let denied = c
        .create_campaign(CreateCampaignRequest {
            campaign: Some(open_campaign("spring", 2)),
        })
        .await
        .unwrap_err();
    assert_eq!(denied.code(), Code::Unauthenticated);
    let mut bad = open_campaign("spring", 0);
    bad.end_time = bad.start_time;
    let status = c
        .create_campaign(admin(CreateCampaignRequest {
            campaign: Some(bad),
        }))
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::InvalidArgument);
    assert_eq!(
        violations(&status),
        ["campaign.total_stock", "campaign.end_time"]
    );
    let created = c
        .create_campaign(admin(CreateCampaignRequest {
            campaign: Some(open_campaign("spring", 2)),
        }))
        .await
        .unwrap()
        .into_inner();
    assert!(created.created);
    assert_eq!(created.campaign.unwrap().per_user_limit, 1);

    let a = c
        .issue(issue("spring", "alice", "a-1"))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(a.outcome, IssueOutcome::Issued as i32);
    assert_eq!(a.remaining_stock, 1);
    let again = c
        .issue(issue("spring", "alice", "a-1"))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(again, a, "same request id, same answer");
    let held = c
        .issue(issue("spring", "alice", "a-2"))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(held.outcome, IssueOutcome::AlreadyIssued as i32);
    assert_eq!(held.coupon_code, a.coupon_code);
    c.issue(issue("spring", "bob", "b-1")).await.unwrap();
    let late = c
        .issue(issue("spring", "carol", "c-1"))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(late.outcome, IssueOutcome::SoldOut as i32);

    let got = c
        .get_issuance(GetIssuanceRequest {
            campaign_id: "spring".into(),
            user_id: "alice".into(),
        })
        .await
        .unwrap()
        .into_inner();
    assert!(got.issued);
    assert_eq!(got.coupon_codes, vec![a.coupon_code.clone()]);
    let view = c
        .get_campaign(GetCampaignRequest {
            campaign_id: "spring".into(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!((view.remaining_stock, view.issued_count), (0, 2));
    assert_eq!(view.state, CampaignState::SoldOut as i32);
    assert!(view.sold_out_time.is_some());
    let listed = c
        .list_campaigns(ListCampaignsRequest::default())
        .await
        .unwrap()
        .into_inner();
    assert_eq!(listed.campaigns.len(), 1);

    let missing = c.issue(issue("autumn", "alice", "x")).await.unwrap_err();
    assert_eq!(missing.code(), Code::NotFound);
    let empty = c.issue(issue("spring", "", "x")).await.unwrap_err();
    assert_eq!(violations(&empty), ["user_id"]);
    mesh.stop().await.unwrap();
}

/// Issues for `users` with retries: a failed call (a killed mesh, Redis
/// restarting) is retried with the same request id on `endpoints` in turn.
async fn issue_all(
    endpoints: std::sync::Arc<std::sync::Mutex<Vec<String>>>,
    campaign: &'static str,
    users: Vec<usize>,
) -> Vec<(String, String, IssueOutcome, String)> {
    issue_paced(endpoints, campaign, users, Duration::ZERO).await
}

/// [`issue_all`] with a pause of `pace` after each user's answer, so a rush
/// lasts long enough for a fault to land in the middle of it.
async fn issue_paced(
    endpoints: std::sync::Arc<std::sync::Mutex<Vec<String>>>,
    campaign: &'static str,
    users: Vec<usize>,
    pace: Duration,
) -> Vec<(String, String, IssueOutcome, String)> {
    let mut out = Vec::new();
    for u in users {
        tokio::time::sleep(pace).await;
        let user = format!("user-{u}");
        let request = format!("req-{u}");
        let mut attempts = 0;
        loop {
            attempts += 1;
            assert!(attempts < 400, "no answer for {request}");
            let endpoint = {
                let e = endpoints.lock().unwrap();
                e[attempts % e.len()].clone()
            };
            let Ok(mut c) = CouponIssueServiceClient::connect(endpoint).await else {
                tokio::time::sleep(Duration::from_millis(25)).await;
                continue;
            };
            match c.issue(issue(campaign, &user, &request)).await {
                Ok(r) => {
                    let r = r.into_inner();
                    out.push((
                        user,
                        request,
                        IssueOutcome::try_from(r.outcome).unwrap(),
                        r.coupon_code,
                    ));
                    break;
                }
                Err(_) => tokio::time::sleep(Duration::from_millis(25)).await,
            }
        }
    }
    out
}

/// One Issue call's (user, request id, outcome, coupon code).
type Answer = (String, String, IssueOutcome, String);

/// Collects the rush's answers, waits until the store holds `stock`
/// issuances (pending log entries claimed and stored), and checks the
/// invariants over both.
async fn finish_rush(
    tasks: Vec<tokio::task::JoinHandle<Vec<Answer>>>,
    coupons: &std::sync::Arc<tickmesh_coupon::service::Coupons>,
    campaign: &str,
    stock: usize,
    within: Duration,
) {
    let mut answers = Vec::new();
    for t in tasks {
        answers.extend(t.await.unwrap());
    }
    let store = coupons.store().clone();
    assert!(
        eventually(within, || {
            let s = store.clone();
            let campaign = campaign.to_string();
            async move { s.issuances(&campaign).await.unwrap().len() >= stock }
        })
        .await,
        "every issuance of {campaign} reaches the durable store"
    );
    check_invariants(
        answers,
        coupons.store().issuances(campaign).await.unwrap(),
        stock,
    )
    .await;
}

/// Checks the invariants over every answer and the durable records.
async fn check_invariants(
    answers: Vec<(String, String, IssueOutcome, String)>,
    records: Vec<tickmesh_coupon::store::Issuance>,
    stock: usize,
) {
    let mut issued: HashMap<String, String> = HashMap::new();
    let mut users = HashSet::new();
    for (user, request, outcome, code) in answers {
        if outcome == IssueOutcome::Issued {
            assert!(users.insert(user.clone()), "{user} got two coupons");
            issued.insert(request, code);
        }
    }
    assert_eq!(issued.len(), stock, "exactly the stock issued");
    assert_eq!(records.len(), stock, "each issuance stored once");
    let codes: HashSet<&str> = records.iter().map(|r| r.code.as_str()).collect();
    assert_eq!(codes.len(), stock, "codes unique");
    let durable: HashMap<&str, &str> = records
        .iter()
        .map(|r| (r.request_id.as_str(), r.code.as_str()))
        .collect();
    for (request, code) in &issued {
        assert_eq!(
            durable.get(request.as_str()),
            Some(&code.as_str()),
            "{request} lost"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_mesh_killed_mid_campaign_loses_no_issuance() {
    const STOCK: usize = 150;
    let redis = redis().await;
    let store = temp_path("coupon.redb");
    let first = start(coupon_config(&redis.url(), &store)).await;
    let mut c = coupon_client(first.endpoint()).await;
    c.create_campaign(CreateCampaignRequest {
        campaign: Some(open_campaign("kill", STOCK as i64)),
    })
    .await
    .unwrap();
    let endpoints = std::sync::Arc::new(std::sync::Mutex::new(vec![first.endpoint()]));
    let mut tasks = Vec::new();
    for t in 0..30 {
        let users: Vec<usize> = (t..600).step_by(30).collect();
        tasks.push(tokio::spawn(issue_all(endpoints.clone(), "kill", users)));
    }
    // Kill the mesh while the rush is on, then start another on the same
    // Redis and store: clients retry there with their request ids.
    let coupons = first.coupon.clone().unwrap();
    assert!(
        eventually(Duration::from_secs(20), || {
            let coupons = coupons.clone();
            async move { coupons.get_campaign("kill").await.unwrap().remaining < 100 }
        })
        .await
    );
    drop(coupons);
    first.abort();
    let mut second = None;
    for _ in 0..200 {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        match tickmesh::mesh::Mesh::start_on(coupon_config(&redis.url(), &store), listener).await {
            Ok(m) => {
                second = Some(m);
                break;
            }
            // The killed mesh's tasks still hold the store file for a moment.
            Err(_) => tokio::time::sleep(Duration::from_millis(25)).await,
        }
    }
    let second = second.expect("a second mesh opens the store");
    *endpoints.lock().unwrap() = vec![second.endpoint()];
    let coupons = second.coupon.clone().unwrap();
    finish_rush(tasks, &coupons, "kill", STOCK, Duration::from_secs(10)).await;
    second.stop().await.unwrap();
}

/// Redis SIGKILLed mid-rush and started again from its AOF. With
/// `appendfsync always` it comes back with every write it acknowledged.
/// (Under `everysec` a process crash loses nothing either unless a slow disk
/// made Redis postpone the AOF write; a CI run whose disk was busy with
/// builds saw that once: 156 ISSUED answers for 150, as the README's table
/// says it can.)
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn redis_killed_mid_campaign_with_aof_keeps_the_invariants() {
    const STOCK: usize = 150;
    let dir = std::path::PathBuf::from(temp_path("redis-aof"));
    let mut redis = RedisServer::start_with(&dir, Some(Fsync::Always))
        .await
        .unwrap();
    let store = temp_path("coupon.redb");
    let mesh = start(coupon_config(&redis.url(), &store)).await;
    let mut c = coupon_client(mesh.endpoint()).await;
    c.create_campaign(CreateCampaignRequest {
        campaign: Some(open_campaign("aof", STOCK as i64)),
    })
    .await
    .unwrap();
    let endpoints = std::sync::Arc::new(std::sync::Mutex::new(vec![mesh.endpoint()]));
    let mut tasks = Vec::new();
    for t in 0..30 {
        let users: Vec<usize> = (t..600).step_by(30).collect();
        tasks.push(tokio::spawn(issue_all(endpoints.clone(), "aof", users)));
    }
    let coupons = mesh.coupon.clone().unwrap();
    assert!(
        eventually(Duration::from_secs(20), || {
            let coupons = coupons.clone();
            async move {
                coupons
                    .get_campaign("aof")
                    .await
                    .is_ok_and(|v| v.remaining < 100)
            }
        })
        .await
    );
    redis.restart().await.unwrap(); // SIGKILL, then start from the AOF
    finish_rush(tasks, &coupons, "aof", STOCK, Duration::from_secs(10)).await;
    mesh.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn watch_campaign_pushes_stock_until_sold_out() {
    let redis = redis().await;
    let store = temp_path("coupon.redb");
    let a = start(coupon_config(&redis.url(), &store)).await;
    let mut ca = coupon_client(a.endpoint()).await;
    ca.create_campaign(CreateCampaignRequest {
        campaign: Some(open_campaign("live", 50)),
    })
    .await
    .unwrap();
    let mut stream = ca
        .watch_campaign(WatchCampaignRequest {
            campaign_id: "live".into(),
        })
        .await
        .unwrap()
        .into_inner();
    let first = stream.message().await.unwrap().unwrap();
    assert_eq!(
        (first.remaining_stock, first.state),
        (50, CampaignState::Active as i32)
    );
    let issuer = a.endpoint();
    let burst = tokio::spawn(async move {
        let mut c = coupon_client(issuer).await;
        for u in 0..60 {
            c.issue(issue("live", &format!("u{u}"), &format!("r{u}")))
                .await
                .unwrap();
        }
    });
    let mut messages = 0;
    let mut last = first;
    while last.state != CampaignState::SoldOut as i32 {
        last = tokio::time::timeout(Duration::from_secs(5), stream.message())
            .await
            .expect("a change arrives")
            .unwrap()
            .unwrap();
        messages += 1;
    }
    burst.await.unwrap();
    assert_eq!(last.remaining_stock, 0);
    assert!(last.sold_out_time.is_some());
    assert!(
        messages < 50,
        "coalesced: {messages} messages for 50 issuances"
    );
    a.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sold_out_is_reported_to_ranking_and_retried_while_it_is_down() {
    let redis = redis().await;
    // Where Ranking will run, once it does.
    let ranking_addr = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap()
    };
    let mut cfg = coupon_config(&redis.url(), &temp_path("coupon.redb"));
    cfg.services.enabled = vec!["coupon".into()];
    cfg.coupon.ranking_endpoint = format!("http://{ranking_addr}");
    let mesh = start(cfg).await;
    let mut c = coupon_client(mesh.endpoint()).await;
    let mut campaign = open_campaign("drop-1", 3);
    campaign.ranking_board_id = "fastest-sold-out".into();
    let start_ms = {
        let t = campaign.start_time.unwrap();
        t.seconds * 1000 + i64::from(t.nanos) / 1_000_000
    };
    c.create_campaign(CreateCampaignRequest {
        campaign: Some(campaign),
    })
    .await
    .unwrap();
    // Ranking is down: issuing is unaffected.
    for u in 0..3 {
        let r = c
            .issue(issue("drop-1", &format!("u{u}"), &format!("r{u}")))
            .await
            .unwrap()
            .into_inner();
        assert_eq!(r.outcome, IssueOutcome::Issued as i32);
    }
    let view = c
        .get_campaign(GetCampaignRequest {
            campaign_id: "drop-1".into(),
        })
        .await
        .unwrap()
        .into_inner();
    let sold = view.sold_out_time.unwrap();
    let took_ms = sold.seconds * 1000 + i64::from(sold.nanos) / 1_000_000 - start_ms;
    tokio::time::sleep(Duration::from_millis(400)).await; // a few failed reports

    let mut rcfg = config(&redis.url());
    rcfg.services.enabled = vec!["ranking".into()];
    let listener = tokio::net::TcpListener::bind(ranking_addr).await.unwrap();
    let ranking = tickmesh::mesh::Mesh::start_on(rcfg, listener)
        .await
        .unwrap();
    let mut r = RankingServiceClient::connect(ranking.endpoint())
        .await
        .unwrap();
    r.upsert_board(UpsertBoardRequest {
        board: Some(Board {
            id: "fastest-sold-out".into(),
            order: Order::LowerFirst as i32,
            operator: ScoreOperator::Best as i32,
            ..Default::default()
        }),
    })
    .await
    .unwrap();
    let top = || GetTopRequest {
        board_id: "fastest-sold-out".into(),
        window: "all".into(),
        page_size: 10,
        page_token: String::new(),
    };
    let mut reported = None;
    for _ in 0..100 {
        let page = r.get_top(top()).await.unwrap().into_inner();
        if let Some(e) = page.entries.first() {
            reported = Some((e.member.clone(), e.score.clone()));
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(
        reported,
        Some(("drop-1".to_string(), took_ms.to_string())),
        "the retried report lands with the time it took to sell out"
    );
    // Reported once: later passes send nothing more.
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(
        r.get_top(top()).await.unwrap().into_inner().total_members,
        1
    );
    ranking.stop().await.unwrap();
    mesh.stop().await.unwrap();
}

/// On a Redis Cluster (3 masters, each with a replica), the master holding a
/// campaign is SIGKILLed during the rush; its replica is promoted and the
/// mesh goes on without a restart. With `coupon.replica_acks` at its default
/// (1 replica on a cluster) every ISSUED answer was on the replica before it
/// was given: never more than the stock, one coupon per user, and every
/// ISSUED answer in the durable store. The killed node is started again
/// once its replica has been promoted, as it rejoins in production: started
/// before that, it would still be the master, come back with only what its
/// own persistence kept (nothing here: `appendonly no`) and its replica would
/// resync from it, which no replica wait can guard against (README, "Redis
/// Cluster").
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_cluster_master_killed_mid_campaign_keeps_the_invariants() {
    let cluster = RedisCluster::start(3, 1, Duration::from_millis(1000))
        .await
        .expect("start a local Redis Cluster");
    cluster_rush(cluster, "failover", Restart::AfterPromotion).await;
}

/// The same rush on nodes with `appendonly yes` and `appendfsync always`,
/// the master killed and started again at once, before its replica is
/// promoted (a supervisor or a pod restart faster than
/// `cluster-node-timeout`): it is still the master, comes back from its AOF
/// with everything it acknowledged, and its replica resynchronises from it.
/// The same invariants hold.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_cluster_master_restarted_before_its_failover_keeps_the_invariants_with_aof_always() {
    let cluster = RedisCluster::start_persistent(3, 1, Duration::from_secs(3), Fsync::Always)
        .await
        .expect("start a local Redis Cluster with AOF");
    cluster_rush(cluster, "restarted", Restart::BeforePromotion).await;
}

/// When the killed master of [`cluster_rush`] is started again.
#[derive(Clone, Copy, PartialEq)]
enum Restart {
    AfterPromotion,
    BeforePromotion,
}

/// A paced rush on `cluster` (30 clients at 5 requests a second, so the
/// stock of 150 lasts about a second), the campaign's master SIGKILLed with
/// stock left and started again as `restart` says; then every answer and
/// the durable records are checked.
async fn cluster_rush(mut cluster: RedisCluster, campaign: &'static str, restart: Restart) {
    const STOCK: usize = 150;
    let url = cluster.url();
    let store = temp_path("coupon.redb");
    let cfg = coupon_config(&url, &store);
    assert_eq!(
        cfg.coupon.replica_acks, "auto",
        "the default waits for a replica on a cluster"
    );
    let mesh = start(cfg).await;
    let mut c = coupon_client(mesh.endpoint()).await;
    c.create_campaign(CreateCampaignRequest {
        campaign: Some(open_campaign(campaign, STOCK as i64)),
    })
    .await
    .unwrap();
    let endpoints = std::sync::Arc::new(std::sync::Mutex::new(vec![mesh.endpoint()]));
    let mut tasks = Vec::new();
    for t in 0..30 {
        let users: Vec<usize> = (t..600).step_by(30).collect();
        tasks.push(tokio::spawn(issue_paced(
            endpoints.clone(),
            campaign,
            users,
            Duration::from_millis(200),
        )));
    }
    let coupons = mesh.coupon.clone().unwrap();
    assert!(
        eventually(Duration::from_secs(20), || {
            let coupons = coupons.clone();
            async move {
                coupons
                    .get_campaign(campaign)
                    .await
                    .is_ok_and(|v| v.remaining < 100)
            }
        })
        .await
    );
    // The master of the campaign's slot.
    let key = tickmesh_coupon::keys::Keys::new("tm").state(campaign);
    let master = cluster.master_of(&key).await.unwrap().port;
    let left = coupons.get_campaign(campaign).await.unwrap().remaining;
    assert!(left > 0, "the kill lands mid-rush (stock left: {left})");
    cluster.kill(master).await;
    match restart {
        Restart::AfterPromotion => {
            // Until the replica is promoted (about 1-3 s).
            cluster.wait_ok(Duration::from_secs(30)).await.unwrap();
            // The promoted replica has no replica of its own: issuances
            // answer UNAVAILABLE (clients retry) until the killed node is
            // back as one.
            tokio::time::sleep(Duration::from_millis(500)).await;
            cluster.restart(master).await.unwrap();
        }
        Restart::BeforePromotion => {
            cluster.restart(master).await.unwrap();
            cluster.wait_ok(Duration::from_secs(30)).await.unwrap();
            assert_eq!(
                cluster.master_of(&key).await.unwrap().port,
                master,
                "restarted within cluster-node-timeout, it is still the master"
            );
        }
    }
    cluster
        .wait_replicas_synced(3, Duration::from_secs(30))
        .await
        .unwrap();
    finish_rush(tasks, &coupons, campaign, STOCK, Duration::from_secs(15)).await;
    mesh.stop().await.unwrap();
}
