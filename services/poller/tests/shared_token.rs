//! The mesh's access token in Redis: stored with the upstream's lifetime less an hour, one
//! issuer at a time, and an expired token dropped only while it is still the stored one.

mod common;

use std::time::Duration;

use common::*;
use tickmesh_poller::shared_token::SharedToken;
use tokio_util::sync::CancellationToken;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_issuer_at_a_time_and_a_stale_copy_never_drops_the_fresh_token() {
    let server = redis().await;
    let shutdown = CancellationToken::new();
    let a = SharedToken::new(feed(&server, &shutdown).redis().clone(), "app1");
    let b = SharedToken::new(feed(&server, &shutdown).redis().clone(), "app1");
    let other_key = SharedToken::new(feed(&server, &shutdown).redis().clone(), "app2");

    assert_eq!(a.get().await.unwrap(), None);
    assert!(a.try_lead("i1").await.unwrap(), "the first asker issues");
    assert!(!b.try_lead("i2").await.unwrap(), "the second waits for it");
    assert!(
        other_key.try_lead("i2").await.unwrap(),
        "another app key is apart"
    );
    a.put("tok-1", Some(Duration::from_secs(86_400)))
        .await
        .unwrap();
    assert_eq!(b.get().await.unwrap().as_deref(), Some("tok-1"));
    assert_eq!(other_key.get().await.unwrap(), None);
    assert!(
        b.try_lead("i2").await.unwrap(),
        "put lets the next issuer go"
    );

    // b refreshed after an expiry and stored tok-2; a's late report that
    // tok-1 expired must not drop tok-2.
    b.put("tok-2", None).await.unwrap();
    a.forget("tok-1").await.unwrap();
    assert_eq!(a.get().await.unwrap().as_deref(), Some("tok-2"));
    b.forget("tok-2").await.unwrap();
    assert_eq!(a.get().await.unwrap(), None);

    // Kept for the lifetime less an hour, at least a minute.
    a.put("tok-3", Some(Duration::from_secs(30))).await.unwrap();
    let mut conn = feed(&server, &shutdown).redis().conn();
    let prefix = feed(&server, &shutdown).redis().prefix().to_string();
    let ttl: i64 = redis::cmd("PTTL")
        .arg(format!("{prefix}:poller:{{app1}}:token"))
        .query_async(&mut conn)
        .await
        .unwrap();
    assert!((59_000..=60_000).contains(&ttl), "{ttl}");
    shutdown.cancel();
}
