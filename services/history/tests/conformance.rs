//! The shared conformance suite against the embedded store (always).

use tickmesh_history::EmbeddedStore;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_embedded_store_passes_the_conformance_suite() {
    let dir = std::env::temp_dir().join(format!("tickmesh-embedded-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let store = EmbeddedStore::open(&dir.join("history.redb")).unwrap();
    tickmesh_history::conformance::run_all(&store).await;
    std::fs::remove_dir_all(&dir).ok();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_embedded_store_keeps_its_data_across_reopening() {
    let dir = std::env::temp_dir().join(format!("tickmesh-embedded-reopen-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let path = dir.join("history.redb");
    let candles: Vec<_> = (0..100)
        .map(|i| tickmesh_history::conformance::candle("RE", "1m", i, 60_000_000_000))
        .collect();
    {
        let store = EmbeddedStore::open(&path).unwrap();
        tickmesh_history::CandleStore::upsert(&store, &candles)
            .await
            .unwrap();
    }
    let store = EmbeddedStore::open(&path).unwrap();
    let got = tickmesh_history::CandleStore::range(
        &store,
        "RE",
        tickmesh_calendar::Interval::parse("1m").unwrap(),
        i64::MIN,
        i64::MAX,
        false,
        1000,
    )
    .await
    .unwrap();
    assert_eq!(got, candles);
    std::fs::remove_dir_all(&dir).ok();
}
