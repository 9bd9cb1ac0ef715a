//! Timings of the computation alone, for `tickmesh bench indicators` and the
//! ignored test `bench_prints_timings`: the cost of one live candle update
//! (a preview of the open candle) and of one commit with five indicators, and
//! a batch of 1,000 candles × five indicators.

use std::fmt;
use std::hint::black_box;
use std::time::{Duration, Instant};

use crate::bar::{Bar, Scales};
use crate::set::IndicatorSet;
use crate::spec::parse_indicators;

/// The five indicators of the benchmark (the "five indicators").
pub const FIVE: [&str; 5] = [
    "sma(20)",
    "ema(12)",
    "rsi(14)",
    "macd(12,26,9)",
    "bbands(20,2)",
];

#[derive(Clone, Debug)]
pub struct Options {
    pub indicators: Vec<String>,
    /// Candles in the batch.
    pub candles: usize,
    /// Live revisions previewed per candle before it is committed.
    pub revisions: usize,
    /// Rounds; medians are reported.
    pub rounds: usize,
}

impl Default for Options {
    fn default() -> Options {
        Options {
            indicators: FIVE.iter().map(ToString::to_string).collect(),
            candles: 1000,
            revisions: 10,
            rounds: 7,
        }
    }
}

#[derive(Clone, Debug)]
pub struct Report {
    pub indicators: String,
    pub candles: usize,
    /// Median time of one preview of the open candle (all indicators).
    pub preview: Duration,
    /// Median time of one commit of a closed candle (all indicators).
    pub commit: Duration,
    /// Median time of the batch over `candles` candles.
    pub batch: Duration,
}

impl fmt::Display for Report {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "indicators: {}", self.indicators)?;
        writeln!(
            f,
            "live update (preview of the open candle): {} ns",
            self.preview.as_nanos()
        )?;
        writeln!(
            f,
            "commit of a closed candle: {} ns",
            self.commit.as_nanos()
        )?;
        write!(
            f,
            "batch of {} candles: {} µs ({} ns per candle)",
            self.candles,
            self.batch.as_micros(),
            self.batch.as_nanos() / self.candles.max(1) as u128
        )
    }
}

/// A deterministic random walk of candles at price scale 2 and quantity
/// scale 8, around 42,000.00, with a new session every 1,440 candles.
pub fn synthetic_bars(count: usize, seed: u64) -> Vec<Bar> {
    let mut state = seed | 1;
    let mut next = move || {
        state ^= state >> 12;
        state ^= state << 25;
        state ^= state >> 27;
        state.wrapping_mul(0x2545_F491_4F6C_DD1D)
    };
    let mut close: i64 = 4_200_000;
    (0..count)
        .map(|i| {
            let open = close;
            close = (close + (next() % 2001) as i64 - 1000).max(100);
            let high = open.max(close) + (next() % 500) as i64;
            let low = (open.min(close) - (next() % 500) as i64).max(1);
            Bar {
                open_ns: i as i64 * 60_000_000_000,
                high,
                low,
                close,
                volume: i128::from(next() % 10_000_000_000),
                session: (i / 1440) as i64,
            }
        })
        .collect()
}

/// Runs the benchmark; panics on an indicator that does not parse.
pub fn run(options: &Options) -> Report {
    let indicators = parse_indicators(&options.indicators).expect("benchmark indicators parse");
    let set = IndicatorSet::new(indicators, Scales::new(2, 8).expect("valid scales"));
    let bars = synthetic_bars(options.candles.max(1), 7);
    let rounds = options.rounds.max(1);

    let mut previews = Vec::with_capacity(rounds);
    let mut commits = Vec::with_capacity(rounds);
    let mut batches = Vec::with_capacity(rounds);
    for _ in 0..rounds {
        // Live: each candle is revised `revisions` times, then closes.
        let mut state = set.state();
        let mut preview_time = Duration::ZERO;
        let mut commit_time = Duration::ZERO;
        for bar in &bars {
            let start = Instant::now();
            for r in 0..options.revisions {
                let mut live = *bar;
                live.close -= r as i64;
                black_box(state.preview(black_box(&live)).expect("in order"));
            }
            preview_time += start.elapsed();
            let start = Instant::now();
            black_box(state.commit(black_box(bar)).expect("in order"));
            commit_time += start.elapsed();
        }
        previews.push(preview_time / (bars.len() * options.revisions.max(1)) as u32);
        commits.push(commit_time / bars.len() as u32);

        let start = Instant::now();
        black_box(set.compute(black_box(&bars)).expect("in order"));
        batches.push(start.elapsed());
    }
    Report {
        indicators: set.key(),
        candles: bars.len(),
        preview: median(previews),
        commit: median(commits),
        batch: median(batches),
    }
}

fn median(mut samples: Vec<Duration>) -> Duration {
    samples.sort();
    samples[samples.len() / 2]
}
