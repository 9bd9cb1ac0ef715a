//! The size target: a synthetic year of 1m candles as daily blocks, with
//! encode and decode times. Slow in debug builds, so ignored by default:
//! `cargo test --release -p tickmesh-candle-blocks --test year -- --ignored --nocapture`.

use std::time::Instant;

use tickmesh_candle_blocks::{Block, decode, encode, measure, synthetic};

const JAN_2024: i64 = 1_704_067_200_000_000_000;

#[test]
#[ignore = "a year of candles: run in release"]
fn year_of_minutes() {
    let candles = synthetic::year_of_minutes(7, JAN_2024);
    let report = measure::measure_daily(&candles, 2, 5).expect("round trips");
    println!("{report}");
    for (field, bytes) in measure::field_breakdown(&candles, 2, 5) {
        println!("  {field:>9}: {bytes:.3} bytes/candle");
    }

    let blocks: Vec<Block> = measure::daily_blocks(&candles, 2, 5);
    // The best of three, in wall time and in this thread's CPU time (the
    // machine may be busy).
    let mut encoded = Vec::new();
    let encode_time = best_of_3(|| {
        encoded = blocks.iter().map(|b| encode(b).expect("encodes")).collect();
    });
    let decode_time = best_of_3(|| {
        let decoded: Vec<Block> = encoded
            .iter()
            .map(|b| decode(b).expect("decodes"))
            .collect();
        assert_eq!(decoded, blocks);
    });
    println!(
        "encode {:.1} ms (CPU {:.1} ms), decode {:.1} ms (CPU {:.1} ms) for {} blocks",
        encode_time.0,
        encode_time.1,
        decode_time.0,
        decode_time.1,
        blocks.len()
    );
}

/// Best wall and CPU times of three runs, in ms.
fn best_of_3(mut f: impl FnMut()) -> (f64, f64) {
    let (mut wall, mut cpu) = (f64::MAX, f64::MAX);
    for _ in 0..3 {
        let (start, cpu_start) = (Instant::now(), thread_cpu_ns());
        f();
        wall = wall.min(start.elapsed().as_secs_f64() * 1e3);
        cpu = cpu.min((thread_cpu_ns() - cpu_start) as f64 / 1e6);
    }
    (wall, cpu)
}

/// CPU time of this thread in ns (Linux; 0 elsewhere).
fn thread_cpu_ns() -> u64 {
    std::fs::read_to_string("/proc/thread-self/schedstat")
        .ok()
        .and_then(|s| s.split_whitespace().next()?.parse().ok())
        .unwrap_or(0)
}

#[test]
#[ignore = "profiling aid"]
fn decode_loop() {
    let candles = synthetic::year_of_minutes(7, JAN_2024);
    let blocks: Vec<Block> = measure::daily_blocks(&candles, 2, 5);
    let encoded: Vec<Vec<u8>> = blocks.iter().map(|b| encode(b).expect("encodes")).collect();
    for _ in 0..10 {
        for b in &encoded {
            std::hint::black_box(decode(b).expect("decodes"));
        }
    }
}
