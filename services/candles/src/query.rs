//! GetCandles: pages of candles from Redis, in either order, for stored
//! intervals and for multiples rolled up on the fly, optionally filled with
//! flat candles at the previous close inside trading sessions.

use std::collections::VecDeque;
use std::sync::Arc;

use chrono_tz::Tz;
use tickmesh_calendar::{Bucket, Interval, Session, Unit, in_session};
use tickmesh_core::ids::check_symbol;
use tickmesh_core::{Error, FieldViolation, Result, page_token};
use tickmesh_runtime::proto_time::now_nanos;

use crate::candle::Candle;
use crate::directory::{Directory, InstrumentInfo};
use crate::flusher::from_stored;
use crate::store::CandleStore;
use tickmesh_history::CandleStore as HistoryStore;

pub const DEFAULT_PAGE_SIZE: usize = 500;
pub const MAX_PAGE_SIZE: usize = 1000;
const PAGE_KIND: &str = "candles";
/// Most buckets one filled page may walk (a year of 1m is ~525,600).
const MAX_WALK: usize = 1_000_000;
/// Fewest and most base candles read from each tier at a time.
const MIN_FETCH: usize = 64;
const MAX_FETCH: usize = 5_000;

#[derive(Clone, Debug, Default)]
pub struct CandlesQuery {
    pub symbol: String,
    pub interval: String,
    pub start_ns: Option<i64>,
    pub end_ns: Option<i64>,
    pub page_size: i32,
    pub page_token: String,
    pub newest_first: bool,
    pub fill: bool,
}

pub struct QueryService {
    pub store: Arc<CandleStore>,
    pub directory: Arc<Directory>,
    /// The long-term tier, when there is one.
    pub history: Option<Arc<dyn HistoryStore>>,
}

struct Plan {
    symbol: String,
    interval: Interval,
    info: Arc<InstrumentInfo>,
    lo_ns: i64,
    hi_ns: i64,
    size: usize,
    newest_first: bool,
    fill: bool,
    fingerprint: u64,
    cursor: Option<i64>,
}

impl QueryService {
    pub async fn get_candles(&self, q: CandlesQuery) -> Result<(Vec<Candle>, String)> {
        let plan = self.plan(q).await?;
        let now = now_nanos();
        let mut source = Source::new(self.store.clone(), self.history.clone(), &plan, now);
        let mut out: Vec<Candle> = Vec::with_capacity(plan.size + 1);
        if plan.fill {
            self.filled(&plan, &mut source, now, &mut out).await?;
        } else {
            while out.len() <= plan.size {
                match source.next().await? {
                    Some(c) => out.push(c),
                    None => break,
                }
            }
        }
        let token = if out.len() > plan.size {
            out.truncate(plan.size);
            let last = out.last().expect("page is not empty").bucket.open_ns;
            page_token::encode(PAGE_KIND, plan.fingerprint, &last.to_string())
        } else {
            String::new()
        };
        Ok((out, token))
    }

    async fn plan(&self, q: CandlesQuery) -> Result<Plan> {
        let mut violations = Vec::new();
        if let Err(r) = check_symbol(&q.symbol) {
            violations.push(FieldViolation::new("symbol", r));
        }
        let interval = match Interval::parse(&q.interval) {
            Ok(i) => Some(i),
            Err(r) => {
                violations.push(FieldViolation::new("interval", r));
                None
            }
        };
        if let (Some(s), Some(e)) = (q.start_ns, q.end_ns)
            && s >= e
        {
            violations.push(FieldViolation::new("start_time", "must be before end_time"));
        }
        let size = match q.page_size {
            0 => DEFAULT_PAGE_SIZE,
            n if n < 0 => {
                violations.push(FieldViolation::new("page_size", "must not be negative"));
                0
            }
            n if n as usize > MAX_PAGE_SIZE => {
                violations.push(FieldViolation::new(
                    "page_size",
                    format!("must be at most {MAX_PAGE_SIZE}"),
                ));
                0
            }
            n => n as usize,
        };
        let fingerprint = page_token::fingerprint(&[
            &q.symbol,
            &q.interval,
            &format!("{:?}", q.start_ns),
            &format!("{:?}", q.end_ns),
            &q.newest_first.to_string(),
            &q.fill.to_string(),
        ]);
        let cursor = if q.page_token.is_empty() {
            None
        } else {
            match page_token::decode(&q.page_token, PAGE_KIND, fingerprint)
                .map(|c| c.parse::<i64>())
            {
                Ok(Ok(c)) => Some(c),
                Ok(Err(_)) => {
                    violations.push(FieldViolation::new(
                        "page_token",
                        "is not a page token issued for this request",
                    ));
                    None
                }
                Err(r) => {
                    violations.push(FieldViolation::new("page_token", r));
                    None
                }
            }
        };
        Error::check(violations)?;
        let info = self.directory.get(&q.symbol).await?;
        Ok(Plan {
            symbol: q.symbol,
            interval: interval.expect("checked"),
            info,
            lo_ns: q.start_ns.unwrap_or(i64::MIN),
            hi_ns: q.end_ns.unwrap_or(i64::MAX),
            size,
            newest_first: q.newest_first,
            fill: q.fill,
            fingerprint,
            cursor,
        })
    }

    /// Walks every bucket of the page, taking real candles where there are
    /// some and flat ones at the previous close inside sessions.
    async fn filled(
        &self,
        plan: &Plan,
        source: &mut Source,
        now: i64,
        out: &mut Vec<Candle>,
    ) -> Result<()> {
        let (interval, tz) = (plan.interval, plan.info.tz);
        let flat = |b: Bucket, price: i64, like: &Candle| {
            Candle::flat(
                interval,
                b,
                price,
                like.price_scale,
                like.quantity_scale,
                b.close_ns <= now,
            )
        };
        let sessions = &plan.info.sessions;
        if plan.newest_first {
            // From the newest bucket down; a gap takes the close of the next older candle.
            let top = plan.hi_ns.min(now).saturating_sub(1);
            let mut b = match plan.cursor {
                Some(c) => interval.prev(interval.bucket(c, tz), tz),
                None => interval.bucket(top, tz),
            };
            let mut walked = 0;
            while out.len() <= plan.size && b.close_ns > plan.lo_ns && walked < MAX_WALK {
                walked += 1;
                let Some(older) = source.peek().await? else {
                    break;
                };
                if older.bucket.open_ns == b.open_ns {
                    out.push(source.next().await?.expect("peeked"));
                } else if older.bucket.open_ns > b.open_ns {
                    // A candle newer than the walk position (cannot happen
                    // after the first step); skip it.
                    source.next().await?;
                    continue;
                } else if overlaps_sessions(sessions, interval, b, tz) {
                    out.push(flat(b, older.close, &older));
                }
                b = interval.prev(b, tz);
            }
        } else {
            // From the oldest bucket up; a gap takes the close of the last candle seen.
            let mut previous: Option<Candle> = match plan.cursor {
                Some(c) => {
                    self.latest_before(plan, interval.bucket(c, tz).close_ns)
                        .await?
                }
                None if plan.lo_ns > i64::MIN => {
                    self.latest_before(plan, interval.bucket(plan.lo_ns, tz).open_ns)
                        .await?
                }
                None => None,
            };
            let mut b = match (plan.cursor, &previous) {
                (Some(c), _) => interval.next(interval.bucket(c, tz), tz),
                (None, Some(_)) => interval.bucket(plan.lo_ns, tz),
                (None, None) => match source.peek().await? {
                    Some(first) => first.bucket,
                    None => return Ok(()),
                },
            };
            let last_bucket_open = interval
                .bucket(plan.hi_ns.min(now).saturating_sub(1), tz)
                .open_ns;
            let mut walked = 0;
            while out.len() <= plan.size
                && b.open_ns < plan.hi_ns
                && b.open_ns <= last_bucket_open
                && walked < MAX_WALK
            {
                walked += 1;
                match source.peek().await? {
                    Some(real) if real.bucket.open_ns == b.open_ns => {
                        let real = source.next().await?.expect("peeked");
                        previous = Some(real.clone());
                        out.push(real);
                    }
                    Some(real) if real.bucket.open_ns < b.open_ns => {
                        source.next().await?;
                        continue;
                    }
                    _ => {
                        if let Some(p) = &previous
                            && overlaps_sessions(sessions, interval, b, tz)
                        {
                            out.push(flat(b, p.close, p));
                        }
                    }
                }
                b = interval.next(b, tz);
            }
        }
        Ok(())
    }

    /// The newest real candle (of the query's interval) opening before `before_ns`.
    async fn latest_before(&self, plan: &Plan, before_ns: i64) -> Result<Option<Candle>> {
        let base = plan.interval.rollup_base();
        let max = format!("({}", ceil_s(before_ns));
        let found = self
            .store
            .range(&plan.symbol, base, "-inf", &max, true, 1)
            .await?;
        // Only its close matters for filling, and a base candle's close is
        // the close of the rolled candle containing it.
        Ok(found.into_iter().next())
    }
}

/// Base candles to read per refill for a page of `size` candles of
/// `interval`: the page plus the one that tells whether there is a next
/// page, times the base candles in each rolled-up candle.
fn fetch_size(size: usize, interval: Interval, base: Interval) -> usize {
    let minutes =
        |i: Interval| u64::from(i.count.max(1)) * if i.unit == Unit::Hour { 60 } else { 1 };
    let per_candle = match interval.unit {
        Unit::Minute | Unit::Hour => minutes(interval) / minutes(base),
        _ => u64::from(interval.count.max(1) / base.count.max(1)),
    };
    (size + 1)
        .saturating_mul(usize::try_from(per_candle.max(1)).unwrap_or(MAX_FETCH))
        .clamp(MIN_FETCH, MAX_FETCH)
}

fn ceil_s(ns: i64) -> i64 {
    ns.div_euclid(1_000_000_000) + i64::from(ns.rem_euclid(1_000_000_000) != 0)
}

/// Whether a bucket has trading time in it (sessions checked every 5 minutes;
/// weeks and longer always have).
fn overlaps_sessions(sessions: &[Session], interval: Interval, b: Bucket, tz: Tz) -> bool {
    if sessions.is_empty() || matches!(interval.unit, Unit::Week | Unit::Month | Unit::Year) {
        return true;
    }
    const STEP: i64 = 300_000_000_000;
    let mut t = b.open_ns;
    while t < b.close_ns {
        if in_session(sessions, t, tz) {
            return true;
        }
        t += STEP;
    }
    false
}

/// Real candles of the query's interval in page order: read from the stored
/// interval, or folded from its rollup base; from Redis and the history store
/// merged.
struct Source {
    store: Arc<CandleStore>,
    history: Option<Arc<dyn HistoryStore>>,
    symbol: String,
    interval: Interval,
    base: Interval,
    tz: Tz,
    newest_first: bool,
    now: i64,
    /// Newest open time (s) ever trimmed from Redis for the base interval:
    /// windows above it are complete in Redis alone (`None`: not looked up yet).
    trimmed_s: Option<Option<i64>>,
    /// Open times still to read: `[next_lo, next_hi)`.
    next_lo: i64,
    next_hi: i64,
    lo_ns: i64,
    hi_ns: i64,
    buffer: VecDeque<Candle>,
    exhausted: bool,
    peeked: Option<Candle>,
    /// Base candles to read from each tier per refill: enough for the page
    /// (one read per tier for a page of a stored interval).
    fetch: usize,
}

impl Source {
    fn new(
        store: Arc<CandleStore>,
        history: Option<Arc<dyn HistoryStore>>,
        plan: &Plan,
        now: i64,
    ) -> Self {
        let (interval, tz) = (plan.interval, plan.info.tz);
        let base = interval.rollup_base();
        // Candles that close after lo and open before hi.
        let mut lo_open = if plan.lo_ns == i64::MIN {
            i64::MIN
        } else {
            interval.bucket(plan.lo_ns, tz).open_ns
        };
        let mut hi_open_excl = plan.hi_ns;
        if let Some(c) = plan.cursor {
            if plan.newest_first {
                hi_open_excl = hi_open_excl.min(c);
            } else {
                lo_open = lo_open.max(interval.next(interval.bucket(c, tz), tz).open_ns);
            }
        }
        Self {
            store,
            history,
            symbol: plan.symbol.clone(),
            interval,
            base,
            tz,
            newest_first: plan.newest_first,
            now,
            trimmed_s: None,
            next_lo: lo_open,
            next_hi: hi_open_excl,
            lo_ns: plan.lo_ns,
            hi_ns: plan.hi_ns,
            buffer: VecDeque::new(),
            exhausted: lo_open >= hi_open_excl,
            peeked: None,
            fetch: fetch_size(plan.size, interval, base),
        }
    }

    /// Reads the next window of base candles from both tiers. Redis is read
    /// first: the flusher removes a candle from Redis only after the store has
    /// it, so a candle moving between tiers meanwhile is seen at least once,
    /// and equal open times are deduplicated (Redis, the newer tier, wins).
    async fn refill(&mut self) -> Result<()> {
        let (mut lo, hi) = (self.next_lo, self.next_hi);
        // Newest first: read what lies above the trim watermark from Redis
        // alone before going down into the tiers below it.
        if self.newest_first
            && self.history.is_some()
            && let Some(t) = self.trimmed_ns().await?
            && lo <= t
            && hi.saturating_sub(1) > t
        {
            lo = t + 1;
        }
        let min = if lo == i64::MIN {
            "-inf".to_string()
        } else {
            ceil_s(lo).to_string()
        };
        let max = if hi == i64::MAX {
            "+inf".to_string()
        } else {
            format!("({}", ceil_s(hi))
        };
        let hot = self
            .store
            .range(
                &self.symbol,
                self.base,
                &min,
                &max,
                self.newest_first,
                self.fetch,
            )
            .await?;
        // The window this read covers completely, as inclusive open times.
        let (mut w_lo, mut w_hi) = (lo, hi.saturating_sub(1));
        if hot.len() == self.fetch {
            let edge = hot.last().expect("full page").bucket.open_ns;
            if self.newest_first {
                w_lo = edge
            } else {
                w_hi = edge
            }
        }
        let need = self.history.is_some() && self.needs_history(w_lo).await?;
        let cold = match &self.history {
            Some(h) if need => h
                .range(
                    &self.symbol,
                    self.base,
                    w_lo,
                    w_hi.saturating_add(1),
                    self.newest_first,
                    self.fetch,
                )
                .await
                .map_err(|e| {
                    Error::Unavailable(format!("{e}; this range needs the history store"))
                })?,
            _ => Vec::new(),
        };
        if cold.len() == self.fetch {
            let edge = cold.last().expect("full page").open_ns;
            if self.newest_first {
                w_lo = w_lo.max(edge)
            } else {
                w_hi = w_hi.min(edge)
            }
        }
        let inside = |open: i64| open >= w_lo && open <= w_hi;
        let mut merged: Vec<Candle> = hot
            .into_iter()
            .filter(|c| inside(c.bucket.open_ns))
            .collect();
        let hot_opens: std::collections::HashSet<i64> =
            merged.iter().map(|c| c.bucket.open_ns).collect();
        merged.extend(
            cold.iter()
                .filter(|c| inside(c.open_ns) && !hot_opens.contains(&c.open_ns))
                .map(from_stored),
        );
        merged.sort_by_key(|c| c.bucket.open_ns);
        if self.newest_first {
            merged.reverse();
            self.next_hi = w_lo;
            self.exhausted = w_lo <= self.next_lo;
        } else {
            self.next_lo = w_hi.saturating_add(1);
            self.exhausted = w_hi >= hi.saturating_sub(1);
        }
        self.buffer.extend(merged);
        Ok(())
    }

    /// The newest open time ever trimmed from Redis for the base interval (ns).
    async fn trimmed_ns(&mut self) -> Result<Option<i64>> {
        self.needs_history(i64::MAX).await?;
        Ok(self
            .trimmed_s
            .flatten()
            .map(|t| t.saturating_mul(1_000_000_000)))
    }

    /// Whether a window starting at `w_lo` may hold candles only the history
    /// store has (those older than what the flusher ever trimmed from Redis).
    async fn needs_history(&mut self, w_lo: i64) -> Result<bool> {
        if self.trimmed_s.is_none() {
            let index = tickmesh_calendar::STORED
                .iter()
                .position(|i| *i == self.base)
                .expect("stored base")
                + 1;
            let mut conn = self.store.redis.conn();
            let trimmed: Option<i64> = redis::cmd("HGET")
                .arg(self.store.keys.status(&self.symbol))
                .arg(format!("trimmed:{index}"))
                .query_async(&mut conn)
                .await
                .map_err(tickmesh_runtime::redis_conn::unavailable)?;
            self.trimmed_s = Some(trimmed);
        }
        // No watermark proves nothing (Redis may have lost its data, or the
        // store may hold history that never passed through Redis): read the store.
        Ok(match self.trimmed_s.flatten() {
            None => true,
            Some(t) => w_lo <= t.saturating_mul(1_000_000_000),
        })
    }

    async fn base_next(&mut self) -> Result<Option<Candle>> {
        while self.buffer.is_empty() && !self.exhausted {
            self.refill().await?;
        }
        Ok(self.buffer.pop_front())
    }

    async fn peek(&mut self) -> Result<Option<Candle>> {
        if self.peeked.is_none() {
            self.peeked = self.fetch().await?;
        }
        Ok(self.peeked.clone())
    }

    async fn next(&mut self) -> Result<Option<Candle>> {
        if let Some(c) = self.peeked.take() {
            return Ok(Some(c));
        }
        self.fetch().await
    }

    async fn fetch(&mut self) -> Result<Option<Candle>> {
        loop {
            let Some(first) = self.base_next().await? else {
                return Ok(None);
            };
            let candle = if self.interval == self.base {
                first
            } else {
                self.fold(first).await?
            };
            // Range filter in ns (scores are whole seconds).
            if candle.bucket.close_ns > self.lo_ns && candle.bucket.open_ns < self.hi_ns {
                return Ok(Some(candle));
            }
            if self.newest_first && candle.bucket.close_ns <= self.lo_ns {
                return Ok(None);
            }
        }
    }

    /// Folds base candles into the rolled candle that `first` starts.
    async fn fold(&mut self, first: Candle) -> Result<Candle> {
        let bucket = self.interval.bucket(first.bucket.open_ns, self.tz);
        let mut rolled = first.clone();
        rolled.interval = self.interval;
        rolled.bucket = bucket;
        loop {
            let Some(more) = self.base_next().await? else {
                break;
            };
            if self.interval.bucket(more.bucket.open_ns, self.tz) != bucket {
                self.buffer.push_front(more);
                break;
            }
            rolled.merge(&more);
        }
        rolled.closed = rolled.closed && bucket.close_ns <= self.now;
        Ok(rolled)
    }
}

#[cfg(test)]
mod fetch_tests {
    use super::*;

    #[test]
    fn fetch_covers_a_page_of_rolled_up_candles() {
        let i = |s: &str| Interval::parse(s).expect("interval");
        assert_eq!(fetch_size(1000, i("1m"), i("1m")), 1001);
        assert_eq!(fetch_size(10, i("1m"), i("1m")), MIN_FETCH);
        assert_eq!(i("10m").rollup_base(), i("5m"));
        assert_eq!(fetch_size(100, i("10m"), i("5m")), 202);
        assert_eq!(fetch_size(100, i("90m"), i("90m").rollup_base()), 101 * 3);
        assert_eq!(fetch_size(1000, i("2d"), i("1d")), 2002);
        assert_eq!(fetch_size(1000, i("7d"), i("1d")), MAX_FETCH);
    }
}
