//! Bytes per candle on 30 days of synthetic 1m candles stored as daily blocks.

use tickmesh_candle_blocks::{measure, synthetic};

const JAN_2024: i64 = 1_704_067_200_000_000_000;

/// Measured at 11.05 bytes per candle in format version 2 (11.6 in version
/// 1; see the crate docs for why the data carries about that much
/// information); the bound guards against regressions. 30 days of the same year as `synthetic::year_of_minutes`.
const MAX_MILLI_BYTES_PER_CANDLE: usize = 11_300;

#[test]
fn thirty_days_of_minutes() {
    let candles = synthetic::days_of_minutes(7, JAN_2024, 30);
    let report = measure::measure_daily(&candles, 2, 5).expect("round trips");
    println!("{report}");
    assert_eq!(report.blocks, 30);
    assert!(report.candles > 42_000);
    assert!(
        report.milli_bytes_per_candle() < MAX_MILLI_BYTES_PER_CANDLE,
        "{} milli-bytes per candle",
        report.milli_bytes_per_candle()
    );
    assert!(
        report.milli_json_bytes_per_candle() > 150_000,
        "JSON for comparison: {report}"
    );
}
