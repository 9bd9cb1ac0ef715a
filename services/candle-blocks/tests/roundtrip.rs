//! Exact round trips: synthetic data, edge values, random candles.

use tickmesh_candle_blocks::{Block, BlockCandle, BlockError, decode, encode, synthetic};

const MINUTE: i64 = 60_000_000_000;
const JAN_2024: i64 = 1_704_067_200_000_000_000;

fn candle(open_ns: i64) -> BlockCandle {
    BlockCandle {
        open_ns,
        close_ns: open_ns + MINUTE,
        open: 6_700_000,
        high: 6_700_500,
        low: 6_699_000,
        close: 6_700_100,
        volume: 123_456,
        quote_volume: 827_000_000_000,
        trade_count: 42,
        revision: 1,
    }
}

fn block(candles: Vec<BlockCandle>) -> Block {
    Block {
        price_scale: 2,
        quantity_scale: 5,
        candles,
    }
}

#[track_caller]
fn round_trip(b: &Block) -> Vec<u8> {
    let bytes = encode(b).expect("encodes");
    let back = decode(&bytes).expect("decodes");
    assert_eq!(&back, b);
    assert_eq!(
        encode(&back).expect("re-encodes"),
        bytes,
        "encoding is deterministic"
    );
    bytes
}

struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }

    /// Mostly small or realistic values, sometimes extremes.
    fn i64(&mut self) -> i64 {
        match self.below(8) {
            0 => [i64::MIN, i64::MAX, 0, -1, 1, i64::MIN + 1, i64::MAX - 1][self.below(7) as usize],
            1 => self.next() as i64,
            2 => (self.next() as i64) >> self.below(64),
            _ => 6_700_000 + (self.next() % 20_000) as i64 - 10_000,
        }
    }

    fn i128(&mut self) -> i128 {
        match self.below(6) {
            0 => [i128::MIN, i128::MAX, 0, -1, 1, i128::from(i64::MAX) + 1][self.below(6) as usize],
            1 => ((u128::from(self.next()) << 64) | u128::from(self.next())) as i128,
            2 => {
                (((u128::from(self.next()) << 64) | u128::from(self.next())) as i128)
                    >> self.below(128)
            }
            _ => i128::from(self.next() % 1_000_000),
        }
    }

    fn u64(&mut self) -> u64 {
        match self.below(5) {
            0 => [0, 1, u64::MAX, u64::MAX - 1][self.below(4) as usize],
            1 => self.next(),
            _ => self.next() % 1_000,
        }
    }
}

#[test]
fn synthetic_days_round_trip() {
    let candles = synthetic::days_of_minutes(11, JAN_2024, 2);
    assert!(candles.len() > 2_800, "two sparse days: {}", candles.len());
    // One block per day and one block for both days.
    for b in tickmesh_candle_blocks::measure::daily_blocks(&candles, 2, 5) {
        round_trip(&b);
    }
    round_trip(&block(candles));
}

#[test]
fn synthetic_data_is_deterministic_and_plausible() {
    let a = synthetic::days_of_minutes(5, JAN_2024, 1);
    assert_eq!(a, synthetic::days_of_minutes(5, JAN_2024, 1));
    assert_ne!(a, synthetic::days_of_minutes(6, JAN_2024, 1));
    assert!(
        a.len() > 1_400 && a.len() < 1_440,
        "a few minutes without trades: {}",
        a.len()
    );
    for w in a.windows(2) {
        assert!(w[0].open_ns < w[1].open_ns);
        assert_eq!((w[1].open_ns - JAN_2024) % MINUTE, 0);
    }
    for c in &a {
        assert_eq!(c.close_ns - c.open_ns, MINUTE);
        assert!(
            c.low <= c.open.min(c.close) && c.high >= c.open.max(c.close),
            "{c:?}"
        );
        assert!(c.volume > 0 && c.trade_count > 0);
        // quote volume is Σ price × qty over prints between low and high.
        assert!(
            c.quote_volume >= c.volume * i128::from(c.low)
                && c.quote_volume <= c.volume * i128::from(c.high),
            "{c:?}"
        );
        assert!((1..=3).contains(&c.revision));
        assert!(c.open > 5_000_000 && c.open < 9_000_000, "{c:?}");
    }
}

#[test]
fn empty_and_single() {
    let empty = round_trip(&block(vec![]));
    assert!(empty.len() < 12, "empty block is {} bytes", empty.len());
    round_trip(&Block {
        price_scale: u32::MAX,
        quantity_scale: 0,
        candles: vec![],
    });
    round_trip(&block(vec![candle(JAN_2024)]));
    round_trip(&block(vec![candle(i64::MIN)]));
    round_trip(&block(vec![candle(i64::MAX - MINUTE)]));
}

#[test]
fn edge_values() {
    let mut c = candle(JAN_2024);
    let extremes: Vec<BlockCandle> = vec![
        BlockCandle {
            open: i64::MIN,
            high: i64::MIN,
            low: i64::MIN,
            close: i64::MIN,
            ..c.clone()
        },
        BlockCandle {
            open: i64::MAX,
            high: i64::MAX,
            low: i64::MAX,
            close: i64::MAX,
            ..c.clone()
        },
        BlockCandle {
            open: i64::MIN,
            high: i64::MAX,
            low: i64::MIN,
            close: i64::MAX,
            ..c.clone()
        },
        BlockCandle {
            open: i64::MAX,
            high: i64::MIN,
            low: i64::MAX,
            close: i64::MIN,
            ..c.clone()
        }, // inverted
        BlockCandle {
            volume: i128::MAX,
            quote_volume: i128::MAX,
            ..c.clone()
        },
        BlockCandle {
            volume: i128::MIN,
            quote_volume: i128::MIN,
            ..c.clone()
        },
        BlockCandle {
            volume: -1,
            quote_volume: i128::MIN,
            high: i64::MAX,
            low: i64::MAX,
            ..c.clone()
        },
        BlockCandle {
            volume: 0,
            quote_volume: 0,
            trade_count: 0,
            revision: 0,
            ..c.clone()
        },
        BlockCandle {
            trade_count: u64::MAX,
            revision: u64::MAX,
            volume: i128::MAX,
            ..c.clone()
        },
        BlockCandle {
            close_ns: i64::MIN,
            ..c.clone()
        },
        BlockCandle {
            close_ns: i64::MAX,
            ..c.clone()
        },
        BlockCandle {
            close_ns: c.open_ns,
            ..c.clone()
        },
    ];
    for (i, e) in extremes.iter().enumerate() {
        round_trip(&block(vec![e.clone()]));
        // And inside a block of ordinary candles, so it breaks the predictions.
        let mut candles: Vec<BlockCandle> =
            (0..20).map(|k| candle(JAN_2024 + k * MINUTE)).collect();
        candles[10] = BlockCandle {
            open_ns: candles[10].open_ns,
            close_ns: candles[10].close_ns,
            ..e.clone()
        };
        if i >= 9 {
            candles[10].close_ns = e.close_ns; // the time edge cases
            candles[10].open_ns = candles[10]
                .open_ns
                .min(e.close_ns.max(candles[9].open_ns + 1));
        }
        round_trip(&block(candles));
    }
    // All extremes together, at extreme times.
    let mut all = extremes.clone();
    all[0].open_ns = i64::MIN;
    for (k, e) in all.iter_mut().enumerate().skip(1) {
        e.open_ns = i64::MIN + k as i64 * (i64::MAX / 16);
    }
    all.last_mut().unwrap().open_ns = i64::MAX;
    round_trip(&block(all));
    // Irregular gaps and lengths (DST days, months).
    c.open_ns = 0;
    let mut irregular = Vec::new();
    for k in 0..200i64 {
        let gap = [0, MINUTE, 7 * MINUTE, 1, 3_600_000_000_000, 17][(k % 6) as usize];
        let open_ns = irregular.last().map_or(0, |p: &BlockCandle| p.close_ns) + gap;
        let len = [
            MINUTE,
            23 * 3_600_000_000_000,
            25 * 3_600_000_000_000,
            31 * 86_400_000_000_000,
        ][(k % 4) as usize];
        irregular.push(BlockCandle {
            open_ns,
            close_ns: open_ns + len,
            ..c.clone()
        });
    }
    round_trip(&block(irregular));
}

#[test]
fn random_candles() {
    let mut rng = Rng(0x1234_5678_9ABC_DEF1);
    let mut total = 0;
    for case in 0..1_500 {
        let n = match case % 10 {
            0 => 0,
            1 => 1,
            9 => 200,
            _ => rng.below(30) as usize,
        };
        let mut candles: Vec<BlockCandle> = Vec::with_capacity(n);
        let mut t = rng.i64() >> 2;
        for _ in 0..n {
            let step = match rng.below(4) {
                0 => 1 + rng.below(1 << 40) as i64,
                _ => MINUTE,
            };
            t = match t.checked_add(step) {
                Some(next) => next,
                None => break,
            };
            candles.push(BlockCandle {
                open_ns: t,
                close_ns: if rng.below(3) == 0 {
                    rng.i64()
                } else {
                    t.wrapping_add(MINUTE)
                },
                open: rng.i64(),
                high: rng.i64(),
                low: rng.i64(),
                close: rng.i64(),
                volume: rng.i128(),
                quote_volume: rng.i128(),
                trade_count: rng.u64(),
                revision: rng.u64(),
            });
        }
        total += candles.len();
        let scales = (rng.next() as u32, rng.next() as u32);
        round_trip(&Block {
            price_scale: scales.0,
            quantity_scale: scales.1,
            candles,
        });
    }
    assert!(total > 20_000, "{total} random candles");
}

#[test]
fn large_block_with_wide_values() {
    // Alternating extremes defeat every prediction (~50 bytes per candle).
    let candles: Vec<BlockCandle> = (0..60_000i64)
        .map(|k| {
            let (p, q) = if k % 2 == 0 {
                (i64::MAX - k, i128::MAX - i128::from(k))
            } else {
                (k, i128::from(k))
            };
            BlockCandle {
                open_ns: k,
                close_ns: if k % 2 == 0 { i64::MIN + k } else { k + 1 },
                open: p,
                high: -p,
                low: p ^ 0x5555,
                close: !p,
                volume: q,
                quote_volume: !q,
                trade_count: p as u64,
                revision: (p as u64).rotate_left(7),
            }
        })
        .collect();
    let bytes = round_trip(&block(candles));
    assert!(
        bytes.len() > 2_000_000,
        "incompressible on purpose: {} bytes",
        bytes.len()
    );
}

#[test]
fn rejects_unsorted_and_duplicate_times() {
    let a = candle(JAN_2024);
    let b = candle(JAN_2024 + MINUTE);
    let c = candle(JAN_2024 + 2 * MINUTE);
    assert_eq!(
        encode(&block(vec![b.clone(), a.clone()])),
        Err(BlockError::NotSorted)
    );
    assert_eq!(
        encode(&block(vec![a.clone(), a.clone()])),
        Err(BlockError::NotSorted)
    );
    assert_eq!(
        encode(&block(vec![a.clone(), c.clone(), b.clone()])),
        Err(BlockError::NotSorted)
    );
    assert_eq!(
        encode(&block(vec![a.clone(), b.clone(), b.clone(), c.clone()])),
        Err(BlockError::NotSorted)
    );
    assert!(encode(&block(vec![a, b, c])).is_ok());
}
