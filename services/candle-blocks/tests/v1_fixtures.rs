//! Blocks written by the version-1 encoder (as released) still decode. The
//! fixtures were written once by that encoder; `expected_blocks` rebuilds
//! what they hold.

use tickmesh_candle_blocks::{Block, BlockCandle, BlockError, decode, synthetic};

const JAN_2024: i64 = 1_704_067_200_000_000_000;

fn extreme(open_ns: i64, v: i64, w: i128) -> BlockCandle {
    BlockCandle {
        open_ns,
        close_ns: v,
        open: v,
        high: v.wrapping_neg(),
        low: v ^ 0x5555,
        close: !v,
        volume: w,
        quote_volume: w.wrapping_neg(),
        trade_count: v as u64,
        revision: !(v as u64),
    }
}

/// The blocks stored in `fixtures/v1_*.bin`, in file order.
fn expected_blocks() -> [(&'static str, Block); 3] {
    let mut day = synthetic::days_of_minutes(11, JAN_2024, 1);
    day.truncate(300);
    [
        (
            "v1_synthetic_300.bin",
            Block {
                price_scale: 2,
                quantity_scale: 5,
                candles: day,
            },
        ),
        (
            "v1_extreme.bin",
            Block {
                price_scale: u32::MAX,
                quantity_scale: 0,
                candles: vec![
                    extreme(i64::MIN, i64::MIN, i128::MIN),
                    extreme(-1, 0, 0),
                    extreme(0, i64::MAX, i128::MAX),
                    extreme(i64::MAX, 1, -1),
                ],
            },
        ),
        (
            "v1_empty.bin",
            Block {
                price_scale: 8,
                quantity_scale: 8,
                candles: vec![],
            },
        ),
    ]
}

fn fixture(name: &str) -> Vec<u8> {
    let path = format!("{}/tests/fixtures/{name}", env!("CARGO_MANIFEST_DIR"));
    std::fs::read(&path).unwrap_or_else(|e| panic!("{path}: {e}"))
}

#[test]
fn version_1_fixtures_decode() {
    for (name, block) in expected_blocks() {
        let bytes = fixture(name);
        assert_eq!(bytes[0], 1, "{name} is a version-1 block");
        assert_eq!(decode(&bytes), Ok(block), "{name}");
    }
}

#[test]
fn damaged_version_1_fixture_is_rejected() {
    let mut bytes = fixture("v1_synthetic_300.bin");
    let mid = bytes.len() / 2;
    bytes[mid] ^= 0x10;
    assert_eq!(decode(&bytes), Err(BlockError::BadChecksum));
}
