//! The one test suite every [`IssuanceStore`] must pass. Backends call
//! [`run`] from their tests with a fresh, empty store.

use std::sync::Arc;

use crate::campaign::Campaign;
use crate::store::{Issuance, IssuanceStore};

fn campaign(id: &str, stock: i64) -> Campaign {
    Campaign {
        id: id.into(),
        display_name: format!("campaign {id}"),
        total_stock: stock,
        per_user_limit: 2,
        start_ms: 1_000,
        end_ms: 2_000,
        ranking_board_id: String::new(),
        create_ms: 500,
        secret: "00ff".into(),
    }
}

fn record(campaign: &str, seq: u64, user: &str) -> Issuance {
    Issuance {
        campaign_id: campaign.into(),
        seq,
        user_id: user.into(),
        code: format!("CODE-{seq}"),
        request_id: format!("r-{seq}"),
        issued_ms: 1_000 + seq as i64,
    }
}

/// Runs every check; panics with the first that fails.
pub async fn run(store: Arc<dyn IssuanceStore>) {
    campaigns_are_created_once(store.as_ref()).await;
    issuances_are_idempotent_and_ordered(store.as_ref()).await;
    campaigns_do_not_see_each_others_records(store.as_ref()).await;
    a_sequence_repeated_in_one_call_is_decided_in_order(store.as_ref()).await;
    many_records_come_back_in_sequence_order(store.as_ref()).await;
}

async fn campaigns_are_created_once(store: &dyn IssuanceStore) {
    assert_eq!(store.campaign("c-a").await.unwrap(), None);
    let (stored, created) = store.create_campaign(&campaign("c-a", 5)).await.unwrap();
    assert!(created);
    assert_eq!(stored, campaign("c-a", 5));
    // A second creation (another instance, a retry) keeps the first.
    let (stored, created) = store.create_campaign(&campaign("c-a", 9)).await.unwrap();
    assert!(!created);
    assert_eq!(stored.total_stock, 5);
    assert_eq!(
        store.campaign("c-a").await.unwrap(),
        Some(campaign("c-a", 5))
    );
    for id in ["c-c", "c-b", "c-d"] {
        store.create_campaign(&campaign(id, 1)).await.unwrap();
    }
    let ids = |v: Vec<Campaign>| v.into_iter().map(|c| c.id).collect::<Vec<_>>();
    assert_eq!(
        ids(store.list_campaigns("", 3).await.unwrap()),
        ["c-a", "c-b", "c-c"]
    );
    assert_eq!(ids(store.list_campaigns("c-c", 3).await.unwrap()), ["c-d"]);
    assert!(store.list_campaigns("c-d", 3).await.unwrap().is_empty());
}

async fn issuances_are_idempotent_and_ordered(store: &dyn IssuanceStore) {
    let batch: Vec<Issuance> = (1..=3).rev().map(|s| record("c-a", s, "u")).collect();
    let first = store.put_issuances(&batch).await.unwrap();
    assert_eq!((first.written, first.already), (3, 0));
    // A redelivered batch overlapping the first is stored once.
    let again = vec![record("c-a", 3, "u"), record("c-a", 4, "v")];
    let second = store.put_issuances(&again).await.unwrap();
    assert_eq!((second.written, second.already), (1, 1));
    assert!(second.conflicting.is_empty());
    // Other contents at a stored sequence are refused, the first kept.
    let other = store.put_issuances(&[record("c-a", 2, "w")]).await.unwrap();
    assert_eq!(other.conflicting, [2]);
    let all = store.issuances("c-a").await.unwrap();
    assert_eq!(all.iter().map(|r| r.seq).collect::<Vec<_>>(), [1, 2, 3, 4]);
    assert_eq!(all[1].user_id, "u");
    assert_eq!(all[3], record("c-a", 4, "v"));
    assert!(store.put_issuances(&[]).await.unwrap().written == 0);
}

async fn campaigns_do_not_see_each_others_records(store: &dyn IssuanceStore) {
    // "c-a" is a prefix of "c-a2": ranges must not bleed.
    store.create_campaign(&campaign("c-a2", 1)).await.unwrap();
    store
        .put_issuances(&[record("c-a2", 1, "x"), record("c-b", 7, "y")])
        .await
        .unwrap();
    assert_eq!(store.issuances("c-a").await.unwrap().len(), 4);
    assert_eq!(store.issuances("c-a2").await.unwrap().len(), 1);
    assert_eq!(store.issuances("c-b").await.unwrap()[0].seq, 7);
    assert!(store.issuances("nope").await.unwrap().is_empty());
    assert_eq!(store.last_seq("c-a").await.unwrap(), 4);
    assert_eq!(store.last_seq("c-a2").await.unwrap(), 1);
    assert_eq!(store.last_seq("c-b").await.unwrap(), 7);
    assert_eq!(store.last_seq("nope").await.unwrap(), 0);
}

async fn a_sequence_repeated_in_one_call_is_decided_in_order(store: &dyn IssuanceStore) {
    // As in one transaction: the first copy is written, a later equal copy
    // is a retry, a later different copy conflicts with the first.
    let outcome = store
        .put_issuances(&[
            record("c-r", 1, "a"),
            record("c-r", 1, "a"),
            record("c-r", 1, "b"),
            record("c-r", 2, "c"),
        ])
        .await
        .unwrap();
    assert_eq!((outcome.written, outcome.already), (2, 1));
    assert_eq!(outcome.conflicting, [1]);
    let all = store.issuances("c-r").await.unwrap();
    assert_eq!(all, [record("c-r", 1, "a"), record("c-r", 2, "c")]);
}

async fn many_records_come_back_in_sequence_order(store: &dyn IssuanceStore) {
    // 2,500 records in a scrambled order, in batches like the persist
    // worker's (1,000), one redelivered.
    let mut seqs: Vec<u64> = (1..=2_500).collect();
    seqs.sort_by_key(|s| (s * 7_919) % 2_503);
    let batches: Vec<Vec<Issuance>> = seqs
        .chunks(1_000)
        .map(|c| c.iter().map(|&s| record("c-many", s, "u")).collect())
        .collect();
    for batch in &batches {
        let outcome = store.put_issuances(batch).await.unwrap();
        assert_eq!(outcome.written, batch.len());
    }
    let again = store.put_issuances(&batches[1]).await.unwrap();
    assert_eq!((again.written, again.already), (0, batches[1].len()));
    let all = store.issuances("c-many").await.unwrap();
    assert_eq!(
        all.iter().map(|r| r.seq).collect::<Vec<_>>(),
        (1..=2_500).collect::<Vec<_>>()
    );
    assert_eq!(all[1_234], record("c-many", 1_235, "u"));
}
