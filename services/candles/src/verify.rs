//! Self-check: recompute a symbol's candles from the tick log and compare
//! them with what Redis and the history store hold.
//!
//! - The retained tick log is replayed in sequence order through a fresh
//!   [`crate::book::SymbolBook`] with the configured late window ([`Replay`]).
//! - Coverage: a candle is *covered* when no trade before the log's first
//!   retained entry could belong to it: it opens after the newest event time
//!   among the first [`COVER_SAMPLE`] replayed trades plus the late window
//!   (any trade before them that was applied is at most that late), or the
//!   replay started at sequence 1. Only *final* candles are compared
//!   (close + late window ≤ the newest event time replayed, which only counts
//!   trades the aggregator has applied): the aggregator can no longer change them.
//! - Covered candles: OHLC, volume, quote volume, trade count and the closed
//!   flag are compared with Redis and with the history store (not revisions).
//!   Missing candles, stored candles without trades and differing values are
//!   mismatches, repaired by [`crate::repair`] when asked.
//! - Uncovered candles are checked for internal consistency (a larger
//!   candle equals the merge of the smaller stored candles that tile it
//!   exactly), and every history range read decodes the store's blocks,
//!   whose checksums surface corruption. These are reported, never repaired
//!   (nothing says which side is right).
//!
//! [`Verifier::verify_symbol`] checks everything once (the CLI);
//! [`Verifier::pass`] continues a [`Progress`] (the background check): it
//! replays only trades applied since the last pass and compares only candles
//! that became final since.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use chrono_tz::Tz;
use tickmesh_calendar::{Bucket, Interval, STORED};
use tickmesh_core::{Error, Result};
use tickmesh_history::{CandleStore as HistoryStore, StoreError};
use tickmesh_runtime::redis_conn::unavailable;

use crate::candle::Candle;
use crate::directory::InstrumentInfo;
use crate::flusher::from_stored;
use crate::repair::{self, Fix};
use crate::store::{CandleStore, interval_upper_bound_s};

mod replay;
mod tiling;

use replay::read_log;
pub use replay::{COVER_SAMPLE, Coverage, LogTrade, Replay, log_first, tick_log_key};

/// Most trades back a bounded check starts from (an instance that starts
/// or takes a symbol over does not replay the whole log at once; candles
/// that began before are checked by tiling).
pub const FIRST_PASS_TRADES: u64 = 20_000;
/// Tick log entries per XRANGE.
const LOG_PAGE: usize = 5_000;
/// Most candles of one interval read from each tier at a time.
const CHUNK: i64 = 2_000;
const NS: i64 = 1_000_000_000;

/// Where [`Verifier::pass`] left off for one symbol.
pub struct Progress {
    pub replay: Replay,
    /// Per stored interval: candles opening before this were already checked.
    done: [i64; STORED.len()],
    started: bool,
}

/// What differed over consecutive candles of one interval.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MismatchRange {
    pub interval: Interval,
    pub first_open_ns: i64,
    pub last_open_ns: i64,
    pub candles: u64,
    /// e.g. "redis: high, volume", "missing", "history: close".
    pub what: String,
    pub repaired: bool,
    last_bucket: Bucket,
}

/// One symbol's result.
#[derive(Clone, Debug, Default)]
pub struct SymbolReport {
    pub symbol: String,
    pub applied_sequence: u64,
    /// First sequence still in the tick log (0: empty).
    pub log_first: u64,
    /// Trades replayed by this check.
    pub replayed: u64,
    /// Which candles were compared with the tick log.
    pub coverage: Option<Coverage>,
    /// Candles compared (with the tick log, or with their tiles).
    pub checked: u64,
    /// Covered candles that differed from the tick log.
    pub mismatched: u64,
    pub repaired: u64,
    /// Covered mismatches.
    pub ranges: Vec<MismatchRange>,
    /// Uncovered candles that disagree with the smaller candles tiling them.
    pub inconsistent: Vec<MismatchRange>,
    /// History block ranges that failed to decode (checksums).
    pub corrupt: Vec<String>,
}

impl SymbolReport {
    /// Mismatches left after this check (repaired ones excluded).
    pub fn unresolved(&self) -> u64 {
        self.mismatched - self.repaired
            + self.inconsistent.iter().map(|r| r.candles).sum::<u64>()
            + self.corrupt.len() as u64
    }
}

fn push_range(
    ranges: &mut Vec<MismatchRange>,
    interval: Interval,
    bucket: Bucket,
    tz: Tz,
    what: String,
    repaired: bool,
) {
    if let Some(last) = ranges.last_mut()
        && last.interval == interval
        && last.what == what
        && last.repaired == repaired
        && interval.next(last.last_bucket, tz).open_ns == bucket.open_ns
    {
        last.last_open_ns = bucket.open_ns;
        last.last_bucket = bucket;
        last.candles += 1;
        return;
    }
    ranges.push(MismatchRange {
        interval,
        first_open_ns: bucket.open_ns,
        last_open_ns: bucket.open_ns,
        candles: 1,
        what,
        repaired,
        last_bucket: bucket,
    });
}

/// RFC 3339 in UTC, whole seconds.
pub fn format_time(ns: i64) -> String {
    chrono::DateTime::from_timestamp_nanos(ns).to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
}

fn index_of(interval: Interval) -> usize {
    STORED
        .iter()
        .position(|s| *s == interval)
        .expect("stored interval")
}

/// The fields in which `actual` differs from `expected` (revision ignored).
fn differences(expected: &Candle, actual: &Candle, closed: bool) -> Vec<&'static str> {
    let mut d = Vec::new();
    let checks: [(&'static str, bool); 10] = [
        ("open_time", expected.bucket != actual.bucket),
        ("open", expected.open != actual.open),
        ("high", expected.high != actual.high),
        ("low", expected.low != actual.low),
        ("close", expected.close != actual.close),
        ("volume", expected.volume != actual.volume),
        ("quote_volume", expected.quote_volume != actual.quote_volume),
        ("trade_count", expected.trade_count != actual.trade_count),
        ("closed", closed && expected.closed != actual.closed),
        (
            "scales",
            (expected.price_scale, expected.quantity_scale)
                != (actual.price_scale, actual.quantity_scale),
        ),
    ];
    for (name, differs) in checks {
        if differs {
            d.push(name);
        }
    }
    d
}

/// What one candle slot holds in each tier.
struct Slot {
    bucket: Bucket,
    expected: Option<Candle>,
    /// Members at the slot's score, as read (the CAS compares them).
    redis: Vec<String>,
    history: Option<Candle>,
}

/// What explains a slot's state besides the tick log.
struct Context {
    /// At or below the flusher's trim watermark (the store may hold it alone).
    below_watermark: bool,
    /// Above it: newest-first queries read Redis alone.
    above_watermark: bool,
    /// Older than the oldest candle Redis keeps (no store: trimmed by retention).
    before_kept: bool,
    /// Queued for the flusher.
    queued: bool,
    history_unreadable: bool,
}

/// Candles of one interval and time range in both tiers.
struct Tiers {
    redis: BTreeMap<i64, Vec<String>>,
    /// Redis candles queued for the flusher, read before the history store
    /// (the flusher writes the store first, then dequeues).
    queued: BTreeSet<i64>,
    history: BTreeMap<i64, Candle>,
    /// The history range could not be decoded.
    corrupt: Option<String>,
}

pub struct Verifier {
    pub store: Arc<CandleStore>,
    /// The history store to compare with (`None`: Redis only).
    pub history: Option<Arc<dyn HistoryStore>>,
    /// Queue repaired candles for the flusher (there is a history store,
    /// whether or not this verifier reads it).
    pub flush_repairs: bool,
    pub late_window_ns: i64,
    pub updates_max_len: u64,
}

impl Verifier {
    /// Checks every candle of a symbol once: the whole retained tick log
    /// against Redis and history, everything older by tiling and checksums.
    pub async fn verify_symbol(&self, info: &InstrumentInfo, repair: bool) -> Result<SymbolReport> {
        let mut progress = None;
        self.pass(info, &mut progress, repair, u64::MAX, true).await
    }

    /// Continues checking a symbol from `progress` (`None`: start, at most
    /// [`FIRST_PASS_TRADES`] back unless `budget` is unbounded): replays at
    /// most `budget` newly applied trades and checks the candles that became
    /// final. `everything`: on the first pass, also check every
    /// stored candle older than the replay covers (otherwise only those from
    /// the candle that contains the coverage bound on).
    pub async fn pass(
        &self,
        info: &InstrumentInfo,
        progress: &mut Option<Progress>,
        repair: bool,
        budget: u64,
        everything: bool,
    ) -> Result<SymbolReport> {
        let symbol = info.symbol.as_str();
        let keys = &self.store.keys;
        let log_key = tick_log_key(self.store.redis.prefix(), symbol);
        let mut conn = self.store.redis.conn();
        let (applied, newest): (Option<u64>, Option<i64>) = redis::pipe()
            .cmd("GET")
            .arg(keys.applied(symbol))
            .cmd("HGET")
            .arg(keys.status(symbol))
            .arg("newest_ns")
            .query_async(&mut conn)
            .await
            .map_err(unavailable)?;
        let applied = applied.unwrap_or(0);
        let first = log_first(&mut conn, &log_key).await?;
        let mut report = SymbolReport {
            symbol: symbol.to_string(),
            applied_sequence: applied,
            log_first: first.unwrap_or(0),
            ..Default::default()
        };
        // Start over when the replay cannot continue where it was: the log
        // was trimmed past it, the aggregator went back, or the last trade
        // replayed is no longer in the log as it was (Redis lost the log's
        // tail and the sequences were given to other trades since).
        if let Some(p) = progress {
            let moved = applied + 1 < p.replay.next_sequence
                || first.is_none_or(|f| f > p.replay.next_sequence);
            let rewritten = match &p.replay.last {
                Some(last) if !moved => {
                    let id = format!("0-{}", last.sequence);
                    let now = read_log(&mut conn, &log_key, &id, &id, 1).await?;
                    now.first().map(LogTrade::identity) != Some(last.identity())
                }
                _ => false,
            };
            if moved || rewritten {
                *progress = None;
            }
        }
        let p = progress.get_or_insert_with(|| {
            let start = match first {
                Some(f) if budget != u64::MAX => {
                    f.max(applied.saturating_sub(budget.min(FIRST_PASS_TRADES)) + 1)
                }
                Some(f) => f,
                None => applied + 1,
            };
            Progress {
                replay: Replay::new(info, self.late_window_ns, start, first == Some(1)),
                done: [i64::MIN; STORED.len()],
                started: false,
            }
        });
        // Replay what the aggregator applied since (bounded).
        let replayed_before = p.replay.replayed;
        let mut left = budget;
        while p.replay.next_sequence <= applied && left > 0 {
            let count = (LOG_PAGE as u64).min(left) as usize;
            let page = read_log(
                &mut conn,
                &log_key,
                &format!("0-{}", p.replay.next_sequence),
                &format!("0-{applied}"),
                count,
            )
            .await?;
            let Some(head) = page.first() else { break };
            if head.sequence != p.replay.next_sequence && p.replay.replayed > 0 {
                *progress = None;
                return Err(Error::FailedPrecondition(format!(
                    "the tick log of {symbol} was trimmed past the verifier (at sequence {}); starting over",
                    head.sequence
                )));
            }
            left -= page.len() as u64;
            p.replay.apply(&page);
        }
        report.replayed = p.replay.replayed - replayed_before;
        report.coverage = p.replay.coverage();
        // Finality: the replay's newest when it has trades (it only holds
        // applied ones), else what the aggregator recorded.
        let newest = if p.replay.newest_ns() != i64::MIN {
            p.replay.newest_ns()
        } else {
            newest.unwrap_or(i64::MIN)
        };
        if newest == i64::MIN || !(p.replay.coverage_settled() || budget == u64::MAX) {
            return Ok(report);
        }
        let horizon = newest.saturating_sub(self.late_window_ns);
        if !p.started {
            p.started = true;
            if p.replay.from_start() {
                for (i, interval) in STORED.iter().enumerate() {
                    if self
                        .earliest(symbol, i)
                        .await?
                        .is_some_and(|t| t < p.replay.covered_from(i, info.tz))
                    {
                        tracing::info!(
                            symbol,
                            interval = %interval,
                            "candles older than the tick log from sequence 1: sequences started over, covering as if trimmed"
                        );
                        p.replay.distrust_start();
                        report.coverage = p.replay.coverage();
                        break;
                    }
                }
            }
            if !everything {
                // Older candles are the full check's: from the one holding
                // the coverage bound on (tiling), or from the covered ones.
                for (i, interval) in STORED.iter().enumerate() {
                    p.done[i] = match report.coverage {
                        Some(Coverage::OpeningAfter(t)) => interval.bucket(t, info.tz).open_ns,
                        Some(Coverage::ClosingAfter(_)) => p.replay.covered_from(i, info.tz),
                        None => i64::MIN,
                    };
                }
            }
        }
        // Ascending, so the tiles of an uncovered candle are repaired before
        // it is compared with them.
        for (i, interval) in STORED.iter().enumerate() {
            let before = interval.bucket(horizon, info.tz).open_ns;
            let expected = p.replay.take(i, before);
            let lo = p.done[i];
            if lo >= before {
                continue;
            }
            let split = p.replay.covered_from(i, info.tz).min(before);
            // Covered: from the split on.
            let covered_lo = lo.max(split);
            if covered_lo < before {
                self.compare(info, i, covered_lo, before, expected, repair, &mut report)
                    .await?;
            }
            // Uncovered: tiling and checksums.
            let from = match lo {
                i64::MIN => self.uncovered_from(info.symbol.as_str(), i).await?,
                lo => Some(lo),
            };
            if let Some(from) = from
                && from < split
            {
                self.check_tiling(info, i, from, split, &mut report).await?;
            }
            p.done[i] = before;
        }
        repair::record(&self.store, symbol, &report).await?;
        for r in &report.ranges {
            tracing::warn!(
                symbol,
                interval = %r.interval,
                first_open = %format_time(r.first_open_ns),
                last_open = %format_time(r.last_open_ns),
                candles = r.candles,
                differs = %r.what,
                repaired = r.repaired,
                "candles differ from the tick log"
            );
        }
        for r in &report.inconsistent {
            tracing::warn!(
                symbol,
                interval = %r.interval,
                first_open = %format_time(r.first_open_ns),
                last_open = %format_time(r.last_open_ns),
                candles = r.candles,
                differs = %r.what,
                "candles disagree with the smaller candles that tile them (older than the tick log)"
            );
        }
        for c in &report.corrupt {
            tracing::warn!(symbol, range = %c, "history store block failed to decode");
        }
        Ok(report)
    }

    /// Reads one interval's candles with opens in `[lo, hi)` from both tiers.
    async fn tiers(&self, symbol: &str, i: usize, lo: i64, hi: i64) -> Result<Tiers> {
        let interval = STORED[i];
        let mut conn = self.store.redis.conn();
        let rows: Vec<(String, i64)> = redis::cmd("ZRANGEBYSCORE")
            .arg(self.store.keys.candles(symbol, interval))
            .arg(ceil_s(lo))
            .arg(format!("({}", ceil_s(hi)))
            .arg("WITHSCORES")
            .query_async(&mut conn)
            .await
            .map_err(unavailable)?;
        let mut redis: BTreeMap<i64, Vec<String>> = BTreeMap::new();
        for (member, score) in rows {
            redis
                .entry(score.saturating_mul(NS))
                .or_default()
                .push(member);
        }
        let mut queued = BTreeSet::new();
        if self.history.is_some() && !redis.is_empty() {
            let mut cmd = redis::cmd("ZMSCORE");
            cmd.arg(self.store.keys.flush(symbol));
            for open in redis.keys() {
                cmd.arg(format!("{}|{}", i + 1, open.div_euclid(NS)));
            }
            let scores: Vec<Option<String>> =
                cmd.query_async(&mut conn).await.map_err(unavailable)?;
            queued = redis
                .keys()
                .zip(scores)
                .filter(|(_, s)| s.is_some())
                .map(|(o, _)| *o)
                .collect();
        }
        let mut history = BTreeMap::new();
        let mut corrupt = None;
        if let Some(h) = &self.history {
            let limit = (CHUNK as usize) * 2 + 8;
            match h.range(symbol, interval, lo, hi, false, limit).await {
                Ok(rows) => {
                    if rows.len() == limit {
                        return Err(Error::Internal(format!(
                            "{symbol} {interval}: more history candles than buckets between {} and {}",
                            format_time(lo),
                            format_time(hi)
                        )));
                    }
                    for c in rows {
                        history.insert(c.open_ns, from_stored(&c));
                    }
                }
                Err(StoreError::Corrupt(e)) => {
                    corrupt = Some(format!(
                        "{interval} {}..{}: {e}",
                        format_time(lo),
                        format_time(hi)
                    ))
                }
                Err(e) => return Err(Error::Unavailable(e.to_string())),
            }
        }
        Ok(Tiers {
            redis,
            queued,
            history,
            corrupt,
        })
    }

    /// Compares replayed candles of `STORED[i]` with opens in `[lo, hi)` with
    /// both tiers, and repairs them when asked.
    #[allow(clippy::too_many_arguments)]
    async fn compare(
        &self,
        info: &InstrumentInfo,
        i: usize,
        lo: i64,
        hi: i64,
        mut expected: BTreeMap<i64, Candle>,
        repair: bool,
        report: &mut SymbolReport,
    ) -> Result<()> {
        let symbol = info.symbol.as_str();
        let interval = STORED[i];
        // Stored candles may exist before the first replayed one (extras).
        let mut lo = lo;
        if lo == i64::MIN {
            let stored = self.earliest(symbol, i).await?;
            let first = expected.keys().next().copied();
            match stored.into_iter().chain(first).min() {
                Some(t) => lo = t,
                None => return Ok(()),
            }
        }
        // Replayed candles at or before the coverage bound are incomplete.
        let mut expected = expected.split_off(&lo);
        let trimmed = self.trimmed_watermark(symbol, i).await?;
        // Without a history store Redis keeps only the newest candles.
        let kept_from = if self.flush_repairs {
            None
        } else {
            self.earliest(symbol, i).await?
        };
        let step = chunk_ns(interval);
        let mut t = lo;
        while t < hi {
            let end = t.saturating_add(step).min(hi);
            let tiers = self.tiers(symbol, i, t, end).await?;
            if let Some(c) = &tiers.corrupt {
                report.corrupt.push(c.clone());
            }
            let rest = expected.split_off(&end);
            let mine = std::mem::replace(&mut expected, rest);
            let mut opens: Vec<i64> = mine
                .keys()
                .chain(tiers.redis.keys())
                .chain(tiers.history.keys())
                .copied()
                .collect();
            opens.sort_unstable();
            opens.dedup();
            for open in opens {
                let slot = Slot {
                    bucket: interval.bucket(open, info.tz),
                    expected: mine.get(&open).cloned(),
                    redis: tiers.redis.get(&open).cloned().unwrap_or_default(),
                    history: tiers.history.get(&open).cloned(),
                };
                let context = Context {
                    below_watermark: trimmed.is_some_and(|w| open <= w),
                    above_watermark: trimmed.is_some_and(|w| open > w),
                    before_kept: kept_from.is_some_and(|k| open < k),
                    queued: tiers.queued.contains(&open),
                    history_unreadable: tiers.corrupt.is_some(),
                };
                self.check_slot(info, i, slot, context, repair, report)
                    .await?;
            }
            t = end;
        }
        Ok(())
    }

    /// Compares one covered, final candle slot and repairs it when asked.
    async fn check_slot(
        &self,
        info: &InstrumentInfo,
        i: usize,
        slot: Slot,
        context: Context,
        repair: bool,
        report: &mut SymbolReport,
    ) -> Result<()> {
        let interval = STORED[i];
        report.checked += 1;
        let decoded: Vec<Option<Candle>> = slot.redis.iter().map(|m| Candle::decode(m)).collect();
        let mut what: Vec<String> = Vec::new();
        let mut redis_fix: Option<Fix> = None;
        let mut history_fix = false;
        match &slot.expected {
            Some(e) => {
                let redis_ok = match decoded.as_slice() {
                    [] => true,
                    [Some(r)] => {
                        let d = differences(e, r, true);
                        if !d.is_empty() {
                            what.push(format!("redis: {}", d.join(", ")));
                        }
                        d.is_empty()
                    }
                    [None] => {
                        what.push("redis: unreadable member".into());
                        false
                    }
                    many => {
                        what.push(format!("redis: {} members", many.len()));
                        false
                    }
                };
                // Where a candle Redis does not hold may rightly be: in the
                // store (read, unreadable, or not read and below the trim
                // watermark), or gone by Redis retention (no store).
                let elsewhere = slot.history.is_some()
                    || context.history_unreadable
                    || (self.history.is_none() && self.flush_repairs && context.below_watermark)
                    || context.before_kept;
                if slot.redis.is_empty() && !elsewhere {
                    what.push("missing".into());
                    redis_fix = Some(Fix::Put);
                } else if slot.redis.is_empty() && context.above_watermark {
                    // Newest-first queries read Redis alone above the
                    // watermark: the candle must be there.
                    what.push("missing in redis".into());
                    redis_fix = Some(Fix::Put);
                } else if !redis_ok {
                    redis_fix = Some(Fix::Put);
                }
                if let Some(h) = &slot.history {
                    let d = differences(e, h, false);
                    // Queued with the right value in Redis: the flusher
                    // overwrites it anyway.
                    let pending = context.queued && redis_ok && !slot.redis.is_empty();
                    if !d.is_empty() && !pending {
                        what.push(format!("history: {}", d.join(", ")));
                        history_fix = true;
                    }
                }
            }
            None => {
                if !slot.redis.is_empty() {
                    what.push("redis: candle without trades".into());
                    redis_fix = Some(Fix::Remove);
                }
                if slot.history.is_some() {
                    // The store cannot delete a candle: reported, left.
                    what.push("history: candle without trades".into());
                }
            }
        }
        if what.is_empty() {
            return Ok(());
        }
        report.mismatched += 1;
        let mut repaired = false;
        if repair {
            let history_extra = slot.expected.is_none() && slot.history.is_some();
            let revision = decoded
                .iter()
                .flatten()
                .map(|c| c.revision)
                .chain(slot.history.as_ref().map(|h| h.revision))
                // A candle Redis lost had revisions no tier remembers; the
                // aggregator gives at most one per trade plus its closing.
                .chain(slot.expected.as_ref().map(|e| e.trade_count + 1))
                .max()
                .unwrap_or(0)
                + 1;
            let fixed = slot.expected.clone().map(|mut c| {
                c.revision = revision;
                c.closed = true;
                c.updated_ns = tickmesh_runtime::proto_time::now_nanos();
                c
            });
            let mut ok = true;
            if let Some(fix) = redis_fix {
                let put = match fix {
                    Fix::Put => fixed.as_ref(),
                    Fix::Remove => None,
                };
                ok &= repair::redis(
                    &self.store,
                    &info.symbol,
                    i,
                    slot.bucket.open_ns.div_euclid(NS),
                    &slot.redis,
                    put,
                    self.flush_repairs,
                    self.updates_max_len,
                )
                .await?;
            }
            if history_fix && let (Some(h), Some(c)) = (&self.history, &fixed) {
                repair::history(h.as_ref(), &info.symbol, c).await?;
            }
            repaired = ok && !history_extra;
            if repaired {
                report.repaired += 1;
            }
        }
        push_range(
            &mut report.ranges,
            interval,
            slot.bucket,
            info.tz,
            what.join("; "),
            repaired,
        );
        Ok(())
    }

    /// The newest open time the flusher ever trimmed from Redis (ns).
    async fn trimmed_watermark(&self, symbol: &str, i: usize) -> Result<Option<i64>> {
        let t: Option<i64> = redis::cmd("HGET")
            .arg(self.store.keys.status(symbol))
            .arg(format!("trimmed:{}", i + 1))
            .query_async(&mut self.store.redis.conn())
            .await
            .map_err(unavailable)?;
        Ok(t.map(|s| s.saturating_mul(NS)))
    }

    /// The oldest open time stored for `STORED[i]` in either tier.
    async fn earliest(&self, symbol: &str, i: usize) -> Result<Option<i64>> {
        let rows: Vec<(String, i64)> = redis::cmd("ZRANGE")
            .arg(self.store.keys.candles(symbol, STORED[i]))
            .arg(0)
            .arg(0)
            .arg("WITHSCORES")
            .query_async(&mut self.store.redis.conn())
            .await
            .map_err(unavailable)?;
        let mut out = rows.first().map(|(_, s)| s.saturating_mul(NS));
        if let Some(h) = &self.history {
            match h
                .range(symbol, STORED[i], i64::MIN, i64::MAX, false, 1)
                .await
            {
                Ok(rows) => {
                    if let Some(c) = rows.first() {
                        out = Some(out.map_or(c.open_ns, |o| o.min(c.open_ns)));
                    }
                }
                // The range reads report it.
                Err(StoreError::Corrupt(_)) => {}
                Err(e) => return Err(Error::Unavailable(e.to_string())),
            }
        }
        Ok(out)
    }
}

/// A time span holding at most [`CHUNK`] candles of `interval`.
fn chunk_ns(interval: Interval) -> i64 {
    (interval_upper_bound_s(interval) / 2)
        .saturating_mul(CHUNK)
        .saturating_mul(NS)
}

fn ceil_s(ns: i64) -> i64 {
    ns.div_euclid(NS) + i64::from(ns.rem_euclid(NS) != 0)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::candle::Tick;

    #[test]
    fn consecutive_candles_with_the_same_difference_make_one_range() {
        let m1 = Interval::parse("1m").unwrap();
        let tz = Tz::UTC;
        let mut ranges = Vec::new();
        for (minute, what) in [
            (0, "missing"),
            (1, "missing"),
            (2, "redis: high"),
            (4, "missing"),
        ] {
            let b = m1.bucket(minute * 60_000_000_000, tz);
            push_range(&mut ranges, m1, b, tz, what.into(), false);
        }
        let got: Vec<(i64, i64, u64, &str)> = ranges
            .iter()
            .map(|r| {
                (
                    r.first_open_ns / 60_000_000_000,
                    r.last_open_ns / 60_000_000_000,
                    r.candles,
                    r.what.as_str(),
                )
            })
            .collect();
        assert_eq!(
            got,
            vec![
                (0, 1, 2, "missing"),
                (2, 2, 1, "redis: high"),
                (4, 4, 1, "missing")
            ],
            "a gap or another difference starts a new range"
        );
    }

    #[test]
    fn differences_name_the_fields_and_ignore_revisions() {
        let m1 = Interval::parse("1m").unwrap();
        let b = m1.bucket(0, Tz::UTC);
        let tick = Tick {
            time_ns: 1,
            sequence: 1,
            price: 100,
            quantity: 2,
        };
        let mut e = Candle::new(m1, b, tick, 2, 0);
        e.closed = true;
        let mut a = e.clone();
        a.revision = 9;
        a.updated_ns = 5;
        assert!(differences(&e, &a, true).is_empty());
        a.high = 101;
        a.volume = 3;
        a.closed = false;
        assert_eq!(differences(&e, &a, true), vec!["high", "volume", "closed"]);
        assert_eq!(differences(&e, &a, false), vec!["high", "volume"]);
    }
}
