//! `cargo test -p tickmesh-indicators --release --test bench -- --ignored --nocapture`
//! prints the timings of `tickmesh_indicators::bench` (five indicators: the
//! cost of one live update and one commit, and a 1,000-candle batch).

use tickmesh_indicators::bench::{Options, run};

#[test]
#[ignore = "a timing, not a check: run it on purpose, in release"]
fn bench_prints_timings() {
    let report = run(&Options::default());
    println!("{report}");
}

/// The benchmark itself runs (few rounds, small batch) in every test run.
#[test]
fn bench_runs() {
    let report = run(&Options {
        candles: 50,
        revisions: 2,
        rounds: 1,
        ..Options::default()
    });
    assert_eq!(report.candles, 50);
    assert_eq!(
        report.indicators,
        "sma(20),ema(12),rsi(14),macd(12,26,9),bbands(20,2)"
    );
}
