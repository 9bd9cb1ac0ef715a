//! Candles the tick log no longer covers: each larger candle against the
//! merge of the smaller stored candles that tile it exactly, and the
//! history blocks decoded (checksums) on the way.

use std::collections::BTreeMap;

use chrono_tz::Tz;
use tickmesh_calendar::{Bucket, Interval, STORED};
use tickmesh_core::Result;

use super::{SymbolReport, Verifier, chunk_ns, differences, push_range};
use crate::candle::Candle;
use crate::directory::InstrumentInfo;

impl Verifier {
    /// The oldest stored candle of `STORED[i]` and of the smaller intervals
    /// (where an unbounded uncovered check starts).
    pub(super) async fn uncovered_from(&self, symbol: &str, i: usize) -> Result<Option<i64>> {
        let mut out = self.earliest(symbol, i).await?;
        for j in 0..i {
            if let Some(t) = self.earliest(symbol, j).await? {
                out = Some(out.map_or(t, |o| o.min(t)));
            }
        }
        Ok(out)
    }

    /// Checks final candles of `STORED[i]` opening in `[lo, hi)` against the
    /// merge of the smaller stored candles that tile them; the history reads
    /// also decode (checksum) every block of the range.
    pub(super) async fn check_tiling(
        &self,
        info: &InstrumentInfo,
        i: usize,
        lo: i64,
        hi: i64,
        report: &mut SymbolReport,
    ) -> Result<()> {
        let symbol = info.symbol.as_str();
        let (interval, tz) = (STORED[i], info.tz);
        let tile = (0..i)
            .rev()
            .find(|&j| tiles(interval, STORED[j], interval.bucket(lo, tz), tz));
        let step = chunk_ns(tile.map_or(interval, |j| STORED[j]));
        // Older smaller candles may be gone by retention (no store, or a
        // store that began later): only buckets from the oldest tile on.
        let tiles_from = match tile {
            Some(j) => self.earliest(symbol, j).await?,
            None => None,
        };
        let mut b = interval.bucket(lo, tz);
        while b.open_ns < hi {
            // A batch of whole buckets of this interval.
            let start = b.open_ns;
            let mut end = b.close_ns;
            let mut buckets = vec![b];
            loop {
                let n = interval.next(*buckets.last().expect("one"), tz);
                if n.open_ns >= hi || n.close_ns.saturating_sub(start) > step {
                    b = n;
                    break;
                }
                end = n.close_ns;
                buckets.push(n);
            }
            let big = self.merged(symbol, i, start, end, report).await?;
            let Some(j) = tile else {
                continue;
            };
            let small = self.merged(symbol, j, start, end, report).await?;
            for bucket in buckets {
                if tiles_from.is_none_or(|t| bucket.open_ns < t)
                    || !tiles(interval, STORED[j], bucket, tz)
                {
                    continue;
                }
                let mut merged: Option<Candle> = None;
                for (_, c) in small.range(bucket.open_ns..bucket.close_ns) {
                    match merged.as_mut() {
                        Some(m) => m.merge_trades(c),
                        None => merged = Some(c.clone()),
                    }
                }
                let stored = big.get(&bucket.open_ns);
                let what = match (&merged, stored) {
                    (None, None) => continue,
                    (None, Some(_)) => {
                        format!("a candle where the {} candles have no trades", STORED[j])
                    }
                    (Some(_), None) => format!("missing, the {} candles have trades", STORED[j]),
                    (Some(m), Some(s)) => {
                        let mut m = m.clone();
                        m.interval = interval;
                        m.bucket = bucket;
                        let d = differences(&m, s, false);
                        if d.is_empty() {
                            report.checked += 1;
                            continue;
                        }
                        format!("{} vs the {} candles", d.join(", "), STORED[j])
                    }
                };
                report.checked += 1;
                push_range(&mut report.inconsistent, interval, bucket, tz, what, false);
            }
        }
        Ok(())
    }

    /// Candles of `STORED[i]` opening in `[lo, hi)` as GetCandles sees them
    /// (Redis wins over history), reading in chunks.
    async fn merged(
        &self,
        symbol: &str,
        i: usize,
        lo: i64,
        hi: i64,
        report: &mut SymbolReport,
    ) -> Result<BTreeMap<i64, Candle>> {
        let mut out = BTreeMap::new();
        let step = chunk_ns(STORED[i]);
        let mut t = lo;
        while t < hi {
            let end = t.saturating_add(step).min(hi);
            let tiers = self.tiers(symbol, i, t, end).await?;
            if let Some(c) = tiers.corrupt {
                report.corrupt.push(c);
            }
            out.extend(tiers.history);
            for (open, members) in tiers.redis {
                if let Some(c) = members.iter().find_map(|m| Candle::decode(m)) {
                    out.insert(open, c);
                }
            }
            t = end;
        }
        Ok(out)
    }
}

/// Whether the buckets of `small` tile `b` (a bucket of `big`) exactly.
fn tiles(big: Interval, small: Interval, b: Bucket, tz: Tz) -> bool {
    let _ = big;
    let mut s = small.bucket(b.open_ns, tz);
    if s.open_ns != b.open_ns {
        return false;
    }
    while s.close_ns < b.close_ns {
        s = small.next(s, tz);
    }
    s.close_ns == b.close_ns
}

#[cfg(test)]
mod tests {
    use super::*;

    fn b(interval: &str, at_ns: i64, tz: Tz) -> (Interval, Bucket) {
        let i = Interval::parse(interval).unwrap();
        (i, i.bucket(at_ns, tz))
    }

    #[test]
    fn which_smaller_intervals_tile_a_candle_exactly() {
        // 2024-03-10 06:00 UTC, a Sunday; US DST began that day.
        let t = 1_710_050_400_000_000_000;
        let utc = Tz::UTC;
        let m1 = Interval::parse("1m").unwrap();
        let (i5, b5) = b("5m", t, utc);
        assert!(tiles(i5, m1, b5, utc));
        let (i6h, b6h) = b("6h", t, utc);
        assert!(!tiles(i6h, Interval::parse("4h").unwrap(), b6h, utc));
        assert!(tiles(i6h, Interval::parse("2h").unwrap(), b6h, utc));
        let (i1mo, b1mo) = b("1M", t, utc);
        assert!(tiles(i1mo, Interval::parse("1d").unwrap(), b1mo, utc));
        assert!(!tiles(i1mo, Interval::parse("1w").unwrap(), b1mo, utc));
        let (i1d, b1d) = b("1d", t, utc);
        assert!(tiles(i1d, Interval::parse("12h").unwrap(), b1d, utc));
        // New York's 23-hour day is still tiled by its hours.
        let ny = Tz::America__New_York;
        let (i1d, b1d) = b("1d", t, ny);
        assert_eq!(b1d.close_ns - b1d.open_ns, 23 * 3_600_000_000_000);
        assert!(tiles(i1d, Interval::parse("1h").unwrap(), b1d, ny));
    }
}
