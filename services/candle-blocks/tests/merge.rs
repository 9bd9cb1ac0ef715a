//! merge: replace, insert anywhere, idempotent.

use std::collections::BTreeMap;

use tickmesh_candle_blocks::{BlockCandle, merge};

fn c(open_ns: i64, revision: u64) -> BlockCandle {
    BlockCandle {
        open_ns,
        close_ns: open_ns + 10,
        open: open_ns,
        high: open_ns + 5,
        low: open_ns - 5,
        close: open_ns + 1,
        volume: 100,
        quote_volume: 100 * i128::from(open_ns),
        trade_count: 3,
        revision,
    }
}

fn times(v: &[BlockCandle]) -> Vec<(i64, u64)> {
    v.iter().map(|x| (x.open_ns, x.revision)).collect()
}

#[test]
fn replaces_and_inserts() {
    let base = vec![c(10, 1), c(20, 1), c(30, 1)];

    let mut v = base.clone();
    merge(&mut v, &[c(20, 2)]);
    assert_eq!(times(&v), [(10, 1), (20, 2), (30, 1)], "replace");

    let mut v = base.clone();
    merge(&mut v, &[c(5, 1)]);
    assert_eq!(times(&v), [(5, 1), (10, 1), (20, 1), (30, 1)], "before");

    let mut v = base.clone();
    merge(&mut v, &[c(25, 1), c(15, 1)]);
    assert_eq!(
        times(&v),
        [(10, 1), (15, 1), (20, 1), (25, 1), (30, 1)],
        "between, unsorted updates"
    );

    let mut v = base.clone();
    merge(&mut v, &[c(40, 1), c(35, 1)]);
    assert_eq!(
        times(&v),
        [(10, 1), (20, 1), (30, 1), (35, 1), (40, 1)],
        "after"
    );

    let mut v = Vec::new();
    merge(&mut v, &[c(3, 1), c(1, 1)]);
    assert_eq!(times(&v), [(1, 1), (3, 1)], "into empty");

    let mut v = base.clone();
    merge(&mut v, &[]);
    assert_eq!(v, base, "nothing to merge");

    let mut v = base.clone();
    merge(&mut v, &[c(30, 2), c(0, 1), c(10, 3), c(30, 3), c(31, 1)]);
    assert_eq!(
        times(&v),
        [(0, 1), (10, 3), (20, 1), (30, 3), (31, 1)],
        "mixed; the later duplicate wins"
    );
    assert_eq!(v[1], c(10, 3), "the whole candle is replaced");
}

#[test]
fn idempotent() {
    let base = vec![c(10, 1), c(20, 1), c(30, 1)];
    let updates = [c(20, 2), c(25, 1), c(5, 1), c(50, 1)];
    let mut once = base.clone();
    merge(&mut once, &updates);
    let mut twice = once.clone();
    merge(&mut twice, &updates);
    assert_eq!(once, twice);
    assert_eq!(once.len(), 6);
}

#[test]
fn matches_a_map_on_random_cases() {
    let mut s = 0x9E37_79B9_7F4A_7C15u64;
    let mut next = move || {
        s ^= s << 13;
        s ^= s >> 7;
        s ^= s << 17;
        s
    };
    for _ in 0..2_000 {
        let mut model: BTreeMap<i64, BlockCandle> = BTreeMap::new();
        for _ in 0..next() % 20 {
            let t = (next() % 50) as i64;
            model.insert(t, c(t, 1));
        }
        let mut existing: Vec<BlockCandle> = model.values().cloned().collect();
        let updates: Vec<BlockCandle> = (0..next() % 20)
            .map(|_| {
                let t = (next() % 50) as i64;
                c(t, 2 + next() % 5)
            })
            .collect();
        for u in &updates {
            model.insert(u.open_ns, u.clone());
        }
        merge(&mut existing, &updates);
        let expected: Vec<BlockCandle> = model.values().cloned().collect();
        assert_eq!(existing, expected);
        let again = existing.clone();
        merge(&mut existing, &updates);
        assert_eq!(existing, again, "idempotent");
    }
}

#[test]
fn a_stored_revision_never_goes_back() {
    let base = vec![c(10, 5), c(20, 5)];

    // The same values at a lower or equal revision (a retried flush): kept as stored.
    let mut v = base.clone();
    merge(&mut v, &[c(10, 3), c(20, 5)]);
    assert_eq!(v, base, "same values keep the stored revision");

    // Other values at a lower revision (rebuilt from the tick log after Redis
    // lost writes): the new values win, one revision above the stored one.
    let mut rebuilt = c(10, 2);
    rebuilt.high += 7;
    rebuilt.trade_count += 1;
    let mut v = base.clone();
    merge(&mut v, &[rebuilt.clone()]);
    assert_eq!(v[0].high, rebuilt.high);
    assert_eq!(v[0].trade_count, rebuilt.trade_count);
    assert_eq!(v[0].revision, 6, "above the stored revision");
    assert_eq!(v[1], c(20, 5), "the others are untouched");

    // Applying it again changes nothing.
    let again = v.clone();
    merge(&mut v, &[rebuilt]);
    assert_eq!(v, again, "idempotent");

    // A higher revision replaces as before.
    let mut v = base.clone();
    merge(&mut v, &[c(20, 9)]);
    assert_eq!(times(&v), [(10, 5), (20, 9)]);
}
