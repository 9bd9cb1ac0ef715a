//! The Redis Cluster slot audit that every test's redis-server runs (see
//! common/slot_audit.rs) catches what it must: multi-key commands, scripts
//! and transactions over several hash slots, and script bodies that touch
//! keys they did not declare.

mod common;

use std::time::Duration;

use common::slot_audit::{Auditor, keys, parse_line, slot};
use common::*;

fn args(text: &[&str]) -> Vec<Vec<u8>> {
    text.iter().map(|a| a.as_bytes().to_vec()).collect()
}

#[test]
fn slots_are_redis_clusters() {
    // Values from the Redis Cluster specification and CLUSTER KEYSLOT.
    assert_eq!(slot(b"foo"), 12182);
    assert_eq!(slot(b"bar"), 5061);
    assert_eq!(slot(b"{user1000}.following"), slot(b"{user1000}.followers"));
    assert_eq!(slot(b"{user1000}.following"), slot(b"user1000"));
    assert_eq!(
        slot(b"foo{}{bar}"),
        slot(b"foo{}{bar}"),
        "empty tag: whole key"
    );
    assert_ne!(slot(b"foo{}{bar}"), slot(b"bar"));
    assert_eq!(slot(b"foo{{bar}}zap"), slot(b"{bar"));
}

#[test]
fn monitor_lines_and_command_keys() {
    let (client, a) =
        parse_line(r#"1796424566.195464 [0 127.0.0.1:53602] "evalsha" "ab" "2" "k\"1" "k2" "x""#)
            .unwrap();
    assert_eq!(client, "127.0.0.1:53602");
    assert_eq!(keys(&a), args(&["k\"1", "k2"]));
    let (client, a) = parse_line(r#"1.0 [0 lua] "SET" "k\x01" "v""#).unwrap();
    assert_eq!(client, "lua");
    assert_eq!(keys(&a), vec![b"k\x01".to_vec()]);
    assert_eq!(
        keys(&args(&[
            "XREAD", "COUNT", "5", "STREAMS", "a", "b", "0", "0"
        ])),
        args(&["a", "b"])
    );
    assert_eq!(
        keys(&args(&[
            "ZUNIONSTORE",
            "d",
            "2",
            "a",
            "b",
            "WEIGHTS",
            "1",
            "2"
        ])),
        args(&["d", "a", "b"])
    );
    assert!(keys(&args(&["PUBLISH", "chan", "m"])).is_empty());
}

#[test]
fn the_auditor_flags_what_a_cluster_refuses_and_nothing_else() {
    let mut a = Auditor::default();
    // Fine on a cluster.
    a.feed("c1", &args(&["MGET", "{s}a", "{s}b"]));
    a.feed("c1", &args(&["EVALSHA", "x", "2", "{s}a", "{s}b"]));
    a.feed("lua", &args(&["HSET", "{s}c", "f", "v"]));
    a.feed("lua", &args(&["TIME"]));
    a.feed("c2", &args(&["MULTI"]));
    a.feed("c2", &args(&["SET", "{q}a", "1"]));
    a.feed("c2", &args(&["SET", "{q}b", "1"]));
    a.feed("c2", &args(&["EXEC"]));
    a.feed("c1", &args(&["GET", "foo"]));
    a.feed("c1", &args(&["GET", "bar"]));
    assert!(a.violations.is_empty(), "{:?}", a.violations);
    // Refused by a cluster.
    a.feed("c1", &args(&["MGET", "foo", "bar"]));
    a.feed("c1", &args(&["EVAL", "body", "2", "foo", "bar"]));
    a.feed("c1", &args(&["EVALSHA", "x", "1", "{s}a"]));
    a.feed("lua", &args(&["GET", "other"]));
    a.feed("c1", &args(&["EVALSHA", "x", "0"]));
    a.feed("lua", &args(&["GET", "{s}a"]));
    a.feed("c3", &args(&["MULTI"]));
    a.feed("c3", &args(&["SET", "foo", "1"]));
    a.feed("c3", &args(&["SET", "bar", "1"]));
    a.feed("c3", &args(&["EXEC"]));
    assert_eq!(a.violations.len(), 5, "{:#?}", a.violations);
    // The live tailer's single-node XREAD over several tick logs is counted
    // apart; any other XREAD over several slots is not.
    a.feed(
        "c1",
        &args(&[
            "XREAD",
            "BLOCK",
            "5000",
            "STREAMS",
            "tm:{A}:trades",
            "tm:{B}:trades",
            "0",
            "0",
        ]),
    );
    assert_eq!((a.violations.len(), a.known), (5, 1));
    a.feed(
        "c1",
        &args(&["XREAD", "STREAMS", "tm:{A}:trades", "tm:{B}:cupd", "0", "0"]),
    );
    assert_eq!(a.violations.len(), 6);
}

/// Against a live redis-server: the audit sees the commands and flags a
/// cross-slot one.
#[tokio::test]
async fn the_live_audit_sees_a_cross_slot_command() {
    let redis = redis().await;
    let client = redis::Client::open(redis.url()).unwrap();
    let mut conn = client.get_multiplexed_async_connection().await.unwrap();
    let _: () = redis::cmd("MSET")
        .arg("{t}a")
        .arg(1)
        .arg("{t}b")
        .arg(2)
        .query_async(&mut conn)
        .await
        .unwrap();
    let _: Vec<Option<String>> = redis::cmd("MGET")
        .arg("foo")
        .arg("bar")
        .query_async(&mut conn)
        .await
        .unwrap();
    assert!(
        eventually(Duration::from_secs(3), || async {
            !redis.slot_report().1.is_empty()
        })
        .await
    );
    let (seen, violations) = redis.slot_report();
    assert!(seen >= 2, "{seen}");
    assert_eq!(violations.len(), 1, "{violations:?}");
    assert!(violations[0].contains("MGET foo bar"), "{violations:?}");
    redis.forgive_slots();
}
