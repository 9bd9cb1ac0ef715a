//! Reading the tick log and replaying it through a fresh book.

use std::collections::BTreeMap;

use tickmesh_calendar::STORED;
use tickmesh_core::decimal::parse_units;
use tickmesh_core::{Error, Result};
use tickmesh_runtime::redis_conn::unavailable;

use super::index_of;
use crate::book::{BookConfig, SymbolBook};
use crate::candle::{Candle, Tick};
use crate::directory::InstrumentInfo;

/// Which candles a replay can recompute exactly.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Coverage {
    /// The log starts at sequence 1: candles closing after this.
    ClosingAfter(i64),
    /// Trimmed: candles opening after this (the newest event time of the
    /// first [`COVER_SAMPLE`] replayed trades plus the late window).
    OpeningAfter(i64),
}

/// Replayed trades whose event times bound what the trimmed part of the log
/// could still contribute.
pub const COVER_SAMPLE: usize = 100;

/// The tick log key of `symbol` (MarketFeed's `keys.rs`: `<p>:{SYM}:trades`,
/// entry id `0-<sequence>`).
pub fn tick_log_key(prefix: &str, symbol: &str) -> String {
    format!("{prefix}:{{{symbol}}}:trades")
}

/// One tick log entry as the verifier needs it.
#[derive(Clone, Debug)]
pub struct LogTrade {
    pub sequence: u64,
    pub trade_id: String,
    pub time_ns: i64,
    pub price: String,
    pub quantity: String,
}

impl LogTrade {
    /// What identifies this entry's trade (a sequence reused after Redis
    /// lost the log's tail carries another one).
    pub fn identity(&self) -> (u64, &str, i64) {
        (self.sequence, &self.trade_id, self.time_ns)
    }
}

/// The first retained sequence of a tick log (`None`: empty).
pub async fn log_first<C: redis::aio::ConnectionLike>(
    conn: &mut C,
    key: &str,
) -> Result<Option<u64>> {
    let page = read_log(conn, key, "-", "+", 1).await?;
    Ok(page.first().map(|t| t.sequence))
}

/// Up to `count` entries between two XRANGE ids.
pub(super) async fn read_log<C: redis::aio::ConnectionLike>(
    conn: &mut C,
    key: &str,
    from: &str,
    to: &str,
    count: usize,
) -> Result<Vec<LogTrade>> {
    let reply: redis::streams::StreamRangeReply = redis::cmd("XRANGE")
        .arg(key)
        .arg(from)
        .arg(to)
        .arg("COUNT")
        .arg(count)
        .query_async(conn)
        .await
        .map_err(unavailable)?;
    reply
        .ids
        .into_iter()
        .map(|e| {
            let sequence = e
                .id
                .strip_prefix("0-")
                .and_then(|s| s.parse().ok())
                .ok_or_else(|| Error::Internal(format!("tick log id {:?} is not 0-<n>", e.id)))?;
            let field = |name: &str| e.get::<String>(name).unwrap_or_default();
            Ok(LogTrade {
                sequence,
                time_ns: field("ts").parse().map_err(|_| {
                    Error::Internal(format!("tick log entry {} has no event time", e.id))
                })?,
                trade_id: field("t"),
                price: field("p"),
                quantity: field("q"),
            })
        })
        .collect()
}

/// A symbol's trades replayed through a fresh book, and the last state of
/// every candle not yet compared.
pub struct Replay {
    book: SymbolBook,
    late_window_ns: i64,
    /// The replay started at sequence 1: every candle is covered.
    from_start: bool,
    sampled: usize,
    sample_max_ns: i64,
    /// Event time of the first trade replayed.
    first_ns: i64,
    /// The next sequence to apply.
    pub next_sequence: u64,
    /// Trades replayed.
    pub replayed: u64,
    /// The last trade replayed.
    pub last: Option<LogTrade>,
    states: Vec<BTreeMap<i64, Candle>>,
}

impl Replay {
    /// `first_sequence`: where the replay starts; `from_start`: the tick log
    /// held sequence 1 there (nothing was trimmed before it).
    pub fn new(
        info: &InstrumentInfo,
        late_window_ns: i64,
        first_sequence: u64,
        from_start: bool,
    ) -> Self {
        Self {
            book: SymbolBook::new(
                &info.symbol,
                info.tz,
                info.price_scale,
                info.quantity_scale,
                BookConfig {
                    late_window_ns,
                    close_grace_ns: i64::MAX,
                },
            ),
            late_window_ns,
            from_start: from_start && first_sequence <= 1,
            sampled: 0,
            sample_max_ns: i64::MIN,
            first_ns: i64::MIN,
            next_sequence: first_sequence.max(1),
            replayed: 0,
            last: None,
            states: (0..STORED.len()).map(|_| BTreeMap::new()).collect(),
        }
    }

    /// Applies trades in sequence order, like the aggregator does.
    pub fn apply(&mut self, trades: &[LogTrade]) {
        for t in trades {
            if t.sequence < self.next_sequence {
                continue;
            }
            if self.sampled == 0 {
                self.first_ns = t.time_ns;
            }
            if self.sampled < COVER_SAMPLE {
                self.sampled += 1;
                self.sample_max_ns = self.sample_max_ns.max(t.time_ns);
            }
            let book = &mut self.book;
            match (
                parse_units(&t.price, book.price_scale),
                parse_units(&t.quantity, book.quantity_scale),
            ) {
                (Ok(price), Ok(quantity)) => book.apply(
                    Tick {
                        time_ns: t.time_ns,
                        sequence: t.sequence,
                        price,
                        quantity,
                    },
                    0,
                ),
                // The aggregator counts these as missed, too.
                _ => book.skip(t.sequence),
            }
            self.next_sequence = t.sequence + 1;
            self.last = Some(t.clone());
            self.replayed += 1;
        }
        for c in self.book.take_changes() {
            let i = index_of(c.interval);
            self.states[i].insert(c.bucket.open_ns, c);
        }
    }

    /// Newest event time replayed (`i64::MIN` before any trade).
    pub fn newest_ns(&self) -> i64 {
        self.book.newest_ns
    }

    /// Which candles the replay covers; `None` before the coverage is known.
    pub fn coverage(&self) -> Option<Coverage> {
        if self.sampled == 0 {
            None
        } else if self.from_start {
            // No applied trade is older than the first one less the late
            // window; a candle that ended before holds none of this log's
            // trades (e.g. history from before Redis lost everything).
            Some(Coverage::ClosingAfter(
                self.first_ns.saturating_sub(self.late_window_ns),
            ))
        } else {
            Some(Coverage::OpeningAfter(
                self.sample_max_ns.saturating_add(self.late_window_ns),
            ))
        }
    }

    /// The first covered open time of `STORED[i]` (`i64::MAX`: none yet).
    pub fn covered_from(&self, i: usize, tz: chrono_tz::Tz) -> i64 {
        match self.coverage() {
            None => i64::MAX,
            Some(Coverage::ClosingAfter(t)) => STORED[i].bucket(t, tz).open_ns,
            Some(Coverage::OpeningAfter(t)) => t.saturating_add(1),
        }
    }

    /// Whether the coverage rests on the log starting at sequence 1.
    pub fn from_start(&self) -> bool {
        self.from_start
    }

    /// The log starts at sequence 1, but candles exist that end before any
    /// of its trades: the sequences started over (Redis lost everything),
    /// so the log is not the symbol's whole history. Cover as if trimmed.
    pub fn distrust_start(&mut self) {
        self.from_start = false;
    }

    /// Whether the coverage bound can no longer move (enough trades sampled).
    pub fn coverage_settled(&self) -> bool {
        self.from_start || self.sampled >= COVER_SAMPLE
    }

    /// Takes the replayed candles of `STORED[i]` opening before `before`.
    pub(super) fn take(&mut self, i: usize, before: i64) -> BTreeMap<i64, Candle> {
        let rest = self.states[i].split_off(&before);
        std::mem::replace(&mut self.states[i], rest)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MIN: i64 = 60_000_000_000;

    fn info() -> InstrumentInfo {
        InstrumentInfo {
            symbol: "X".into(),
            tz: chrono_tz::Tz::UTC,
            price_scale: 2,
            quantity_scale: 0,
            sessions: Vec::new(),
        }
    }

    fn trade(sequence: u64, time_ns: i64, price: &str) -> LogTrade {
        LogTrade {
            sequence,
            trade_id: format!("t{sequence}"),
            time_ns,
            price: price.into(),
            quantity: "1".into(),
        }
    }

    #[test]
    fn coverage_is_the_newest_of_the_first_sampled_trades_plus_the_late_window() {
        let mut r = Replay::new(&info(), MIN, 500, false);
        assert_eq!(r.coverage(), None, "nothing replayed yet");
        // A late trade first, then in order; the sample is the first 100.
        let mut trades = vec![trade(500, 10 * MIN, "1")];
        for k in 1..150 {
            trades.push(trade(500 + k, 20 * MIN + k as i64 * 1_000_000_000, "1"));
        }
        r.apply(&trades[..50]);
        assert!(!r.coverage_settled());
        r.apply(&trades[50..]);
        assert!(r.coverage_settled());
        let bound = 20 * MIN + 99 * 1_000_000_000 + MIN;
        assert_eq!(
            r.coverage(),
            Some(Coverage::OpeningAfter(bound)),
            "trade 100 is the newest of the sample; later ones do not move it"
        );
        assert_eq!(r.covered_from(0, chrono_tz::Tz::UTC), bound + 1);
        assert_eq!(r.next_sequence, 650);
        // From sequence 1: whatever closes after the first trade less the
        // late window (the 1m candle of 9:00 still may hold a late trade).
        let mut from_start = Replay::new(&info(), MIN, 1, true);
        from_start.apply(&trades[..1]);
        assert_eq!(from_start.coverage(), Some(Coverage::ClosingAfter(9 * MIN)));
        assert_eq!(from_start.covered_from(0, chrono_tz::Tz::UTC), 9 * MIN);
        let not_one = Replay::new(&info(), MIN, 1, false);
        assert_eq!(not_one.coverage(), None, "an empty log covers nothing");
    }

    #[test]
    fn replays_like_the_aggregator_late_trades_and_unparsable_ones_included() {
        let mut r = Replay::new(&info(), MIN, 1, true);
        r.apply(&[
            trade(1, 5 * MIN, "10.00"),
            trade(2, 5 * MIN + 30_000_000_000, "12.50"),
            trade(3, 6 * MIN, "11.00"),
            // Late, inside the window: corrects minute 5.
            trade(4, 5 * MIN + 10_000_000_000, "9.00"),
            trade(5, 8 * MIN, "11.00"),
            // Older than the window: dropped, as the aggregator drops it.
            trade(6, 5 * MIN + 40_000_000_000, "1.00"),
            // More decimals than the instrument has: skipped (missed).
            trade(7, 8 * MIN + 1, "11.001"),
        ]);
        assert_eq!(r.next_sequence, 8);
        let minutes = r.take(0, 7 * MIN);
        let m5 = &minutes[&(5 * MIN)];
        assert_eq!(
            (m5.open, m5.high, m5.low, m5.close),
            (1000, 1250, 900, 1250)
        );
        assert_eq!(m5.trade_count, 3);
        assert!(m5.closed);
        assert_eq!(minutes[&(6 * MIN)].trade_count, 1);
        assert!(!minutes.contains_key(&(7 * MIN)));
        assert_eq!(r.take(0, i64::MAX)[&(8 * MIN)].trade_count, 1);
    }
}
