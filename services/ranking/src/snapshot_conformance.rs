//! The one test suite every [`SnapshotStore`] must pass. Backends call
//! [`run`] from their tests with a fresh, empty store: the embedded store in
//! this crate's tests, the ScyllaDB store (`tickmesh-scylla`) over
//! its in-memory logic always and against a live node when
//! `TICKMESH_TEST_SCYLLA` names one.

use std::sync::Arc;

use crate::snapshot::{SnapshotEntry, SnapshotStore, WindowSnapshot};

/// Runs every check; panics with the first that fails.
pub async fn run(store: Arc<dyn SnapshotStore>) {
    unknown_windows_are_none(store.as_ref()).await;
    a_snapshot_round_trips(store.as_ref()).await;
    a_second_put_replaces_the_first_whole(store.as_ref()).await;
    a_large_snapshot_round_trips(store.as_ref()).await;
    odd_board_and_window_names_stay_apart(store.as_ref()).await;
}

fn entry(i: u64, member_data: &str) -> SnapshotEntry {
    SnapshotEntry {
        member: format!("member-{i:05}"),
        score: 1_000_000 - i as i64,
        seq: 10 * i + 1,
        rank: i + 1,
        below: 5_000 - i,
        member_data: member_data.to_string(),
    }
}

fn snapshot(board_id: &str, window: &str, entries: Vec<SnapshotEntry>) -> WindowSnapshot {
    WindowSnapshot {
        board_id: board_id.into(),
        window: window.into(),
        close_ns: 1_767_571_200_000_000_000,
        taken_ns: 1_767_571_205_000_000_000,
        total_members: 5_000,
        entries,
    }
}

async fn unknown_windows_are_none(store: &dyn SnapshotStore) {
    assert_eq!(store.get("nobody", "day:2030-01-01").await.unwrap(), None);
    assert_eq!(store.get("nobody", "all").await.unwrap(), None);
}

async fn a_snapshot_round_trips(store: &dyn SnapshotStore) {
    let s = WindowSnapshot {
        board_id: "b".into(),
        window: "day:2030-01-01".into(),
        close_ns: -1,
        taken_ns: i64::MAX,
        total_members: 3,
        entries: vec![
            SnapshotEntry {
                member: "m ünïcode ☕ 한국어".into(),
                score: -9_007_199_254_740_991,
                seq: u64::MAX,
                rank: 1,
                below: 2,
                member_data: "{\"name\":\"M\", \"quote\": \"\\\"'\"}".into(),
            },
            SnapshotEntry {
                member: "second".into(),
                score: i64::MIN,
                seq: 0,
                rank: 1,
                below: 0,
                member_data: String::new(),
            },
        ],
    };
    store.put(&s).await.unwrap();
    assert_eq!(store.get("b", "day:2030-01-01").await.unwrap(), Some(s));
    assert_eq!(store.get("b", "day:2030-01-02").await.unwrap(), None);
    assert_eq!(store.get("b2", "day:2030-01-01").await.unwrap(), None);
    // A window with nobody in it is a snapshot too.
    let empty = snapshot("b", "hour:2030-01-01T00", Vec::new());
    store.put(&empty).await.unwrap();
    assert_eq!(
        store.get("b", "hour:2030-01-01T00").await.unwrap(),
        Some(empty)
    );
}

async fn a_second_put_replaces_the_first_whole(store: &dyn SnapshotStore) {
    let window = "week:2030-W01";
    let first = snapshot("r", window, (0..300).map(|i| entry(i, "first")).collect());
    store.put(&first).await.unwrap();
    // Fewer entries: nothing of the first may show through.
    let mut second = snapshot("r", window, (0..2).map(|i| entry(i, "second")).collect());
    second.total_members = 2;
    second.taken_ns += 1;
    store.put(&second).await.unwrap();
    assert_eq!(
        store.get("r", window).await.unwrap(),
        Some(second.clone()),
        "replaced whole"
    );
    // The same snapshot again (another instance, a retry) is harmless.
    store.put(&second).await.unwrap();
    assert_eq!(store.get("r", window).await.unwrap(), Some(second));
    // More entries again.
    store.put(&first).await.unwrap();
    assert_eq!(store.get("r", window).await.unwrap(), Some(first));
}

async fn a_large_snapshot_round_trips(store: &dyn SnapshotStore) {
    // 1,000 entries with 1 KiB of member data each: about 1.1 MB.
    let data: String = "Espresso beans 1 kg, ☕ "
        .chars()
        .cycle()
        .take(1000)
        .collect();
    let entries: Vec<SnapshotEntry> = (0..1_000).map(|i| entry(i, &data)).collect();
    let big = snapshot("large", "month:2030-01", entries);
    store.put(&big).await.unwrap();
    let got = store.get("large", "month:2030-01").await.unwrap().unwrap();
    assert_eq!(got.entries.len(), 1_000);
    assert_eq!(got, big, "every entry in rank order");
}

async fn odd_board_and_window_names_stay_apart(store: &dyn SnapshotStore) {
    // Pairs a store keying "board + separator + window" could confuse.
    let names = [
        ("a:b", "c"),
        ("a", "b:c"),
        ("a/b", "day:2030-01-01"),
        ("a", "b/day:2030-01-01"),
        ("x.y_z-1", "hour:2030-11-03T01.2"),
        ("x.y_z-1", "hour:2030-11-03T01"),
        ("ünï", "week:2030-W02 "),
        ("ünï", "week:2030-W02"),
    ];
    for (i, (board, window)) in names.iter().enumerate() {
        let mut s = snapshot(board, window, vec![entry(i as u64, board)]);
        s.total_members = i as u64 + 1;
        store.put(&s).await.unwrap();
    }
    for (i, (board, window)) in names.iter().enumerate() {
        let got = store
            .get(board, window)
            .await
            .unwrap()
            .unwrap_or_else(|| panic!("{board:?} {window:?} is missing"));
        assert_eq!(got.board_id, *board);
        assert_eq!(got.window, *window);
        assert_eq!(got.total_members, i as u64 + 1, "{board:?} {window:?}");
        assert_eq!(got.entries, vec![entry(i as u64, board)]);
    }
    assert_eq!(store.get("a:b", "b:c").await.unwrap(), None);
}
