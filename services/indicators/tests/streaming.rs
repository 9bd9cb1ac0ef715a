//! Property tests: the streaming state and the batch give the same readings,
//! whatever previews of revised open candles come in between, wherever the
//! series is split, and whichever copy of a state continues it.

use tickmesh_indicators::bench::synthetic_bars;
use tickmesh_indicators::{
    Bar, Indicator, IndicatorSet, OutOfOrder, Reading, Scales, parse_indicators,
};

/// A small deterministic generator (xorshift*), so the tests need no crate.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

fn random_indicator(rng: &mut Rng) -> Indicator {
    let period = |rng: &mut Rng, min: u64| (min + rng.below(30)) as u32;
    let text = match rng.below(9) {
        0 => format!("sma({})", period(rng, 2)),
        1 => format!("ema({})", period(rng, 2)),
        2 => format!("wma({})", period(rng, 2)),
        3 => format!("rsi({})", period(rng, 2)),
        4 => {
            let fast = period(rng, 2);
            let slow = fast + 1 + rng.below(20) as u32;
            format!("macd({fast},{slow},{})", period(rng, 1))
        }
        5 => format!(
            "bbands({},{}.{})",
            period(rng, 2),
            1 + rng.below(3),
            rng.below(100)
        ),
        6 => format!("atr({})", period(rng, 1)),
        7 => "vwap".to_string(),
        _ => "obv".to_string(),
    };
    Indicator::parse(&text).unwrap_or_else(|e| panic!("{text}: {e}"))
}

/// A random walk with flat stretches, zero-volume candles and session changes.
fn random_bars(rng: &mut Rng, count: usize, price_scale: u32) -> Vec<Bar> {
    let unit = 10i64.pow(price_scale);
    let mut close = 100 * unit + rng.below(1000) as i64;
    let mut session = 0;
    (0..count)
        .map(|i| {
            if rng.below(40) == 0 {
                session += 1;
            }
            let open = close;
            if rng.below(5) != 0 {
                close = (close + rng.below(201) as i64 - 100).max(1);
            }
            let high = open.max(close) + rng.below(50) as i64;
            let low = (open.min(close) - rng.below(50) as i64).max(1);
            let volume = if rng.below(10) == 0 {
                0
            } else {
                i128::from(rng.below(1_000_000))
            };
            Bar {
                open_ns: i as i64 * 60_000_000_000,
                high,
                low,
                close,
                volume,
                session,
            }
        })
        .collect()
}

/// The open candle's bar after a few random trades: same session, prices
/// moved, volume so far.
fn revised(rng: &mut Rng, closed: &Bar) -> Bar {
    let close = (closed.close + rng.below(101) as i64 - 50).max(1);
    Bar {
        open_ns: closed.open_ns,
        high: closed.high.max(close),
        low: closed.low.min(close),
        close,
        volume: closed.volume / 2 + i128::from(rng.below(1000)),
        session: closed.session,
    }
}

#[test]
fn streaming_with_live_previews_equals_batch() {
    let mut rng = Rng(0x5EED_1234_ABCD_0001);
    for case in 0..150 {
        let count = 1 + rng.below(6) as usize;
        let indicators: Vec<Indicator> = (0..count).map(|_| random_indicator(&mut rng)).collect();
        let price_scale = rng.below(9) as u32;
        let scales = Scales::new(price_scale, rng.below(9) as u32).unwrap();
        let set = IndicatorSet::new(indicators, scales);
        let len = 20 + rng.below(200) as usize;
        let bars = random_bars(&mut rng, len, price_scale);
        let batch = set.compute(&bars).unwrap();
        assert_eq!(batch.len(), bars.len());

        let mut state = set.state();
        for (i, bar) in bars.iter().enumerate() {
            // The open candle is revised a few times; each preview leaves the
            // state alone, and a preview of the final candle is its reading.
            for _ in 0..rng.below(4) {
                let live = revised(&mut rng, bar);
                let before = state.committed();
                state.preview(&live).unwrap();
                assert_eq!(state.committed(), before);
            }
            let preview = state.preview(bar).unwrap();
            let committed = state.commit(bar).unwrap();
            assert_eq!(
                preview,
                committed,
                "case {case} ({}), candle {i}",
                set.key()
            );
            assert_eq!(
                committed,
                batch[i],
                "case {case} ({}), candle {i}",
                set.key()
            );
        }
        assert_eq!(state.committed(), bars.len() as u64);
    }
}

#[test]
fn a_split_series_and_a_cloned_state_continue_identically() {
    let mut rng = Rng(77);
    for _ in 0..60 {
        let indicators: Vec<Indicator> = (0..4).map(|_| random_indicator(&mut rng)).collect();
        let set = IndicatorSet::new(indicators, Scales::new(2, 5).unwrap());
        let bars = random_bars(&mut rng, 150, 2);
        let batch = set.compute(&bars).unwrap();
        let split = rng.below(bars.len() as u64) as usize;
        let mut state = set.state();
        for bar in &bars[..split] {
            state.commit(bar).unwrap();
        }
        let mut copy = state.clone();
        let rest: Vec<Vec<Reading>> = bars[split..]
            .iter()
            .map(|b| state.commit(b).unwrap())
            .collect();
        let rest_copy: Vec<Vec<Reading>> = bars[split..]
            .iter()
            .map(|b| copy.commit(b).unwrap())
            .collect();
        assert_eq!(rest, batch[split..]);
        assert_eq!(rest_copy, batch[split..]);
    }
}

#[test]
fn warm_up_flags_and_values_line_up() {
    let set = IndicatorSet::new(
        parse_indicators(&[
            "sma(20)",
            "ema(12)",
            "wma(10)",
            "rsi(14)",
            "macd(12,26,9)",
            "bbands(20,2)",
            "atr(14)",
            "vwap",
            "obv",
        ])
        .unwrap(),
        Scales::new(2, 8).unwrap(),
    );
    let bars = synthetic_bars(200, 3);
    let readings = set.compute(&bars).unwrap();
    for (j, indicator) in set.indicators().iter().enumerate() {
        let warm_up = indicator.warm_up() as usize;
        for (i, point) in readings.iter().enumerate() {
            let reading = &point[j];
            assert_eq!(reading.warming_up, i < warm_up, "{indicator} at {i}");
            assert!(!reading.out_of_range);
            assert_eq!(reading.values().len(), indicator.outputs().len());
            let all = reading.values().all(|v| v.is_some());
            assert_eq!(all, i >= warm_up, "{indicator} at {i}: {reading:?}");
        }
    }
    assert_eq!(set.warm_up(), 33);
}

#[test]
fn a_candle_is_never_counted_twice() {
    let set = IndicatorSet::new(
        parse_indicators(&["obv", "sma(2)"]).unwrap(),
        Scales::new(2, 0).unwrap(),
    );
    let bars = synthetic_bars(3, 9);
    let mut state = set.state();
    state.commit(&bars[0]).unwrap();
    state.commit(&bars[1]).unwrap();
    let refused = OutOfOrder {
        last_open_ns: bars[1].open_ns,
        open_ns: bars[1].open_ns,
    };
    assert_eq!(state.commit(&bars[1]), Err(refused));
    assert_eq!(state.preview(&bars[1]), Err(refused));
    assert!(state.commit(&bars[0]).is_err());
    assert_eq!(state.committed(), 2);
    assert_eq!(state.last_open_ns(), Some(bars[1].open_ns));
    assert_eq!(
        set.compute(&[bars[1], bars[0]]),
        Err(OutOfOrder {
            last_open_ns: bars[1].open_ns,
            open_ns: bars[0].open_ns
        })
    );
    // The error reads well.
    assert!(
        refused
            .to_string()
            .contains("is not after the last committed one")
    );
}

/// Candles closed but still correctable by late trades stay pending: the
/// state commits only final ones, and previews the pending run as a whole.
#[test]
fn pending_candles_preview_like_a_batch_with_their_corrections() {
    let mut rng = Rng(4242);
    for _ in 0..40 {
        let indicators: Vec<Indicator> = (0..5).map(|_| random_indicator(&mut rng)).collect();
        let set = IndicatorSet::new(indicators, Scales::new(3, 2).unwrap());
        let mut bars = random_bars(&mut rng, 120, 3);
        let final_count = 100;
        let mut state = set.state();
        for bar in &bars[..final_count] {
            state.commit(bar).unwrap();
        }
        // A late trade corrects a pending candle; the open one moves on.
        let k = final_count + rng.below(19) as usize;
        bars[k] = revised(&mut rng, &bars[k]);
        let pending = state.preview_pending(&bars[final_count..]).unwrap();
        let batch = set.compute(&bars).unwrap();
        assert_eq!(pending, batch[final_count..]);
        // Nothing was taken in.
        assert_eq!(state.committed(), final_count as u64);
        assert_eq!(
            state
                .preview_pending(&bars[final_count..=final_count])
                .unwrap(),
            batch[final_count..=final_count]
        );
        assert!(state.preview_pending(&[]).unwrap().is_empty());
    }
}

#[test]
fn a_restored_checkpoint_continues_exactly_like_the_state_it_was_taken_from() {
    let mut rng = Rng(0x5eed_c0de);
    for round in 0..40 {
        let count = 2 + rng.below(6) as usize;
        let indicators: Vec<Indicator> = (0..count).map(|_| random_indicator(&mut rng)).collect();
        let set = IndicatorSet::new(indicators, Scales::new(2, 3).unwrap());
        let bars = random_bars(&mut rng, 300, 2);
        let expected = set.compute(&bars).unwrap();
        let split = 1 + rng.below(298) as usize;
        let mut state = set.state();
        for bar in &bars[..split] {
            state.commit(bar).unwrap();
        }
        let text = state.checkpoint();
        let mut restored = set
            .restore(&text)
            .unwrap_or_else(|e| panic!("round {round}: {e}"));
        assert_eq!(restored.committed(), split as u64);
        assert_eq!(restored.last_open_ns(), Some(bars[split - 1].open_ns));
        // A candle already in the checkpoint is refused after the restore too.
        assert!(restored.commit(&bars[split - 1]).is_err());
        for (i, bar) in bars.iter().enumerate().skip(split) {
            assert_eq!(
                restored.commit(bar).unwrap(),
                expected[i],
                "round {round}, candle {i}"
            );
        }
        // Another set refuses it.
        let other = IndicatorSet::new(
            parse_indicators(&["sma(3)"]).unwrap(),
            Scales::new(2, 3).unwrap(),
        );
        assert!(other.restore(&text).is_err());
        assert!(set.restore("{").is_err());
    }
}
