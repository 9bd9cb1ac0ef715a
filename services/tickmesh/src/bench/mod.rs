//! `tickmesh bench …`: measurements against a baseline taken in the same run
//! on the same Redis, reported as medians over rounds (these machines are
//! noisy; compare ratios, not absolute numbers).

pub mod candles;
pub mod ingest;

pub use ingest::{IngestOptions, IngestReport, ingest};

use std::time::Duration;

pub fn median(mut values: Vec<f64>) -> f64 {
    values.sort_by(|a, b| a.total_cmp(b));
    values[values.len() / 2]
}

/// The `p` quantile of sorted durations (nearest rank).
pub fn percentile(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let rank = ((sorted.len() - 1) as f64 * p).round() as usize;
    sorted[rank]
}

pub fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}
