//! Small series worked out by hand: the formulas, seeding, rounding and
//! printing of every indicator.

use tickmesh_indicators::{Bar, IndicatorSet, Scales, parse_indicators};

fn closes(values: &[i64]) -> Vec<Bar> {
    values
        .iter()
        .map(|&close| Bar {
            open_ns: 0,
            high: close,
            low: close,
            close,
            volume: 1,
            session: 0,
        })
        .collect()
}

/// The printed values of output `output` of the only indicator, per candle
/// ("-" where there is none).
fn printed(spec: &str, scales: Scales, bars: &[Bar], output: usize) -> Vec<String> {
    let set = IndicatorSet::new(parse_indicators(&[spec]).unwrap(), scales);
    let bars: Vec<Bar> = (0..)
        .zip(bars)
        .map(|(i, bar)| Bar { open_ns: i, ..*bar })
        .collect();
    set.compute(&bars)
        .unwrap()
        .iter()
        .map(|point| {
            point[0]
                .output(output)
                .map_or_else(|| "-".to_string(), |v| v.to_string())
        })
        .collect()
}

fn whole() -> Scales {
    Scales::new(0, 0).unwrap()
}

#[test]
fn sma_is_exact_with_one_rounding() {
    // Scale 0 prints 8 places; 10/3 rounds half to even at the 8th.
    assert_eq!(
        printed("sma(3)", whole(), &closes(&[1, 2, 3, 4, 6]), 0),
        ["-", "-", "2.00000000", "3.00000000", "4.33333333"]
    );
    // Price scale 2 prints 10 places: (1.00 + 2.00 + 2.01)/3 = 1.67.
    assert_eq!(
        printed(
            "sma(3)",
            Scales::new(2, 0).unwrap(),
            &closes(&[100, 200, 201]),
            0
        ),
        ["-", "-", "1.6700000000"]
    );
}

#[test]
fn ema_is_seeded_with_the_sma() {
    // ema(3): seed (1+2+3)/3 = 2 at candle 2, then k = 1/2: 3, 4, then (4+8)/2 = 6.
    assert_eq!(
        printed("ema(3)", whole(), &closes(&[1, 2, 3, 4, 5, 8]), 0),
        [
            "-",
            "-",
            "2.00000000",
            "3.00000000",
            "4.00000000",
            "6.00000000"
        ]
    );
    // ema(2): seed 1.5, then k = 2/3: 1.5 + (2 − 1.5)·2/3 = 1.8333…
    assert_eq!(
        printed("ema(2)", whole(), &closes(&[1, 2, 2]), 0),
        ["-", "1.50000000", "1.83333333"]
    );
}

#[test]
fn wma_weights_the_newest_most() {
    // (1·1 + 2·2 + 3·3)/6 = 14/6, then (2 + 6 + 12)/6 = 20/6.
    assert_eq!(
        printed("wma(3)", whole(), &closes(&[1, 2, 3, 4]), 0),
        ["-", "-", "2.33333333", "3.33333333"]
    );
}

#[test]
fn rsi_uses_wilder_smoothing() {
    // Changes +1, +1, −1: seed gain 1, loss 0 → 100; then gain (1 + 0)/2 = 0.5,
    // loss (0 + 1)/2 = 0.5 → 50; then a +3: gain (0.5 + 3)/2 = 1.75, loss 0.25 → 87.5.
    assert_eq!(
        printed("rsi(2)", whole(), &closes(&[1, 2, 3, 2, 5]), 0),
        ["-", "-", "100.00000000", "50.00000000", "87.50000000"]
    );
    // A flat series is 0, as in TA-Lib.
    assert_eq!(
        printed("rsi(2)", whole(), &closes(&[7, 7, 7, 7]), 0),
        ["-", "-", "0.00000000", "0.00000000"]
    );
}

#[test]
fn macd_seeds_both_emas_at_the_slow_start_and_the_signal_with_an_average() {
    let bars = closes(&[1, 2, 3, 4, 5, 6]);
    let line = printed("macd(2,3,2)", whole(), &bars, 0);
    let signal = printed("macd(2,3,2)", whole(), &bars, 1);
    let histogram = printed("macd(2,3,2)", whole(), &bars, 2);
    // Candle 2: fast = (2+3)/2 = 2.5, slow = (1+2+3)/3 = 2 → 0.5.
    // Candle 3: fast = 2.5 + (4 − 2.5)·2/3 = 3.5, slow = 2 + (4 − 2)/2 = 3 → 0.5.
    // Signal at candle 3: (0.5 + 0.5)/2 = 0.5. On a straight line it stays 0.5.
    assert_eq!(
        line,
        [
            "-",
            "-",
            "0.50000000",
            "0.50000000",
            "0.50000000",
            "0.50000000"
        ]
    );
    assert_eq!(
        signal,
        ["-", "-", "-", "0.50000000", "0.50000000", "0.50000000"]
    );
    assert_eq!(
        histogram,
        ["-", "-", "-", "0.00000000", "0.00000000", "0.00000000"]
    );
}

#[test]
fn bollinger_bands_use_the_population_deviation() {
    // The textbook series: mean 5, population σ = 2.
    let bars = closes(&[2, 4, 4, 4, 5, 5, 7, 9]);
    let at_end = |output| printed("bbands(8,2)", whole(), &bars, output)[7].clone();
    assert_eq!(at_end(0), "5.00000000");
    assert_eq!(at_end(1), "9.00000000");
    assert_eq!(at_end(2), "1.00000000");
    // k = 1.5 on 1, 2: mean 1.5, σ = 0.5 → 1.5 ± 0.75.
    let two = closes(&[1, 2]);
    assert_eq!(printed("bbands(2,1.5)", whole(), &two, 1)[1], "2.25000000");
    assert_eq!(printed("bbands(2,1.5)", whole(), &two, 2)[1], "0.75000000");
    // σ of 1, 2, 4 = √(14/9) = 1.2472191289246471…; × 2 = 2.4944382578…
    let three = closes(&[1, 2, 4]);
    assert_eq!(printed("bbands(3,2)", whole(), &three, 1)[2], "4.82777159");
    assert_eq!(printed("bbands(3,2)", whole(), &three, 2)[2], "-0.16110493");
}

#[test]
fn atr_starts_with_the_average_true_range() {
    let bars = [
        (10, 8, 9),   // no true range (no previous close)
        (11, 9, 10),  // max(2, |11−9|, |9−9|) = 2
        (14, 12, 13), // max(2, 4, 2) = 4 → atr(2) = 3
        (13, 13, 13), // max(0, 0, 0) = 0 → (3 + 0)/2 = 1.5
    ]
    .map(|(high, low, close)| Bar {
        open_ns: 0,
        high,
        low,
        close,
        volume: 1,
        session: 0,
    });
    assert_eq!(
        printed("atr(2)", whole(), &bars, 0),
        ["-", "-", "3.00000000", "1.50000000"]
    );
}

#[test]
fn vwap_starts_over_with_each_session_and_needs_volume() {
    let bar = |high, low, close, volume, session| Bar {
        open_ns: 0,
        high,
        low,
        close,
        volume,
        session,
    };
    let bars = [
        bar(12, 9, 9, 0, 1),   // no volume yet
        bar(12, 9, 9, 2, 1),   // typical 10 × 2
        bar(21, 20, 19, 1, 1), // typical 20 × 1 → (20 + 20)/3 = 13.333…
        bar(5, 4, 3, 7, 2),    // new session: 4
    ];
    assert_eq!(
        printed("vwap", whole(), &bars, 0),
        ["-", "10.00000000", "13.33333333", "4.00000000"]
    );
}

#[test]
fn obv_adds_and_subtracts_exact_volume() {
    let scales = Scales::new(2, 5).unwrap();
    let bars = [(100, 150_000), (101, 20_000), (99, 5), (99, 12_345)].map(|(close, volume)| Bar {
        open_ns: 0,
        high: close,
        low: close,
        close,
        volume,
        session: 0,
    });
    assert_eq!(
        printed("obv", scales, &bars, 0),
        ["1.50000", "1.70000", "1.69995", "1.69995"]
    );
}

#[test]
fn extreme_magnitudes_are_reported_out_of_range_without_panicking() {
    let set = IndicatorSet::new(
        parse_indicators(&[
            "vwap",
            "obv",
            "sma(2)",
            "ema(2)",
            "bbands(2,100)",
            "rsi(2)",
            "atr(2)",
            "macd(2,3,1)",
            "wma(2)",
        ])
        .unwrap(),
        Scales::new(0, 0).unwrap(),
    );
    let huge = Bar {
        open_ns: 0,
        high: i64::MAX,
        low: 0,
        close: i64::MAX,
        volume: i128::MAX / 2,
        session: 0,
    };
    let tiny = Bar {
        open_ns: 0,
        high: 1,
        low: 0,
        close: 0,
        volume: i128::MAX / 2,
        session: 0,
    };
    let middle = Bar {
        open_ns: 0,
        high: 1000,
        low: 1000,
        close: 1000,
        ..tiny
    };
    let mut state = set.state();
    // Two rises in a row add i128::MAX/2 twice to OBV's i128::MAX/2.
    for (i, bar) in (0..).zip([tiny, middle, huge, tiny, huge]) {
        let bar = Bar { open_ns: i, ..bar };
        let preview = state.preview(&bar).unwrap();
        let committed = state.commit(&bar).unwrap();
        assert_eq!(preview, committed);
    }
    let last = state.commit(&Bar { open_ns: 5, ..huge }).unwrap();
    // VWAP's Σ(H+L+C)·V cannot fit; OBV overflowed at the third candle and stays out.
    assert!(last[0].out_of_range);
    assert!(last[1].out_of_range);
    // The price-only indicators still have values at i64::MAX prices.
    for reading in &last[2..] {
        assert!(!reading.out_of_range, "{reading:?}");
        assert!(reading.values().all(|v| v.is_some()), "{reading:?}");
    }
}
