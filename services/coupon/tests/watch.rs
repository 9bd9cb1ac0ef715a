//! WatchCampaign on a real redis-server: issuances on one instance reach a
//! watcher on another, coalesced, through to sold out.

mod common;

use std::time::Duration;

use common::*;
use tickmesh_coupon::campaign::CampaignState;
use tickmesh_coupon::clock::ManualClock;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_watcher_on_another_instance_sees_stock_fall_to_sold_out() {
    let redis = redis().await;
    let clock = ManualClock::new((T0_MS - 10) * 1_000_000);
    let store = store();
    let (a, _s1) = instance(&redis, store.clone(), clock.clone(), config());
    let (b, _s2) = instance(&redis, store, clock.clone(), config());
    a.create_campaign(campaign("w", 200, 1)).await.unwrap();
    let mut rx = b.watch("w").await.unwrap();
    let first = rx.recv().await.unwrap().unwrap();
    assert_eq!(
        (first.remaining, first.state),
        (200, CampaignState::Scheduled)
    );
    // The start passing is noticed without any issuance.
    clock.set(T0_MS * 1_000_000);
    let started = tokio::time::timeout(Duration::from_secs(3), rx.recv())
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert_eq!(started.state, CampaignState::Active);
    assert_eq!(b.watched_campaigns(), 1);

    let issuer = a.clone();
    let burst = tokio::spawn(async move {
        for u in 0..250 {
            issuer
                .issue("w", &format!("u{u}"), &format!("r{u}"))
                .await
                .unwrap();
        }
    });
    let mut messages = 0;
    let mut last = started;
    while last.state != CampaignState::SoldOut {
        last = tokio::time::timeout(Duration::from_secs(5), rx.recv())
            .await
            .expect("a change arrives")
            .unwrap()
            .unwrap();
        messages += 1;
    }
    burst.await.unwrap();
    assert_eq!(last.remaining, 0);
    assert_eq!(last.sold_out_ms, Some(T0_MS));
    assert!(
        messages < 200,
        "coalesced: {messages} messages for 200 issuances"
    );
    drop(rx);
    assert!(
        eventually(Duration::from_secs(3), || async {
            b.watched_campaigns() == 0
        })
        .await,
        "the watcher ends when the client goes away"
    );
}
