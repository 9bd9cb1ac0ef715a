//! A running poller instance: books rate-limit slots for the whole mesh, fills each slot with
//! the codes the [`Schedule`] and the shared [`RefreshCursor`] pick, asks the upstream, and
//! stores what it answers through [`MarketFeed::put_quotes`].

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex, MutexGuard, RwLock};
use std::time::Duration;

use tickmesh_core::{Error, Result};
use tickmesh_marketfeed::MarketFeed;
use tickmesh_marketfeed::model::{Instrument, RawTrade};
use tickmesh_marketfeed::polled_quotes::{PolledQuote, PutQuoteOutcome};
use tickmesh_runtime::clock::{Clock, SystemClock};
use tickmesh_runtime::proto_time::now_nanos;
use tokio::sync::{Notify, Semaphore};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::market_hours::MarketHours;
use crate::mesh_flight::MeshFlight;
use crate::rate_limit::{MeshRateLimiter, RateShape, Reservation, limit_id};
use crate::refresh_cursor::{Claim, RefreshCursor};
use crate::schedule::{HotRules, Schedule};
use crate::shared_token::SharedToken;
use crate::single_flight::SingleFlight;
use crate::spec::PollerSpec;
use crate::status::{PollerStatus, StatusBoard};
use crate::upstream::{Upstream, UpstreamError};

/// How often market hours are checked again (open and close happen on the minute).
const HOURS_CHECK: Duration = Duration::from_millis(250);
/// How often the mesh's followed symbols are read.
const INTEREST_CHECK: Duration = Duration::from_secs(1);

/// When this instance may send again by its own account.
#[derive(Default)]
struct Pacing {
    /// The shared full refresh said the next cycle may not begin before this.
    refresh_wait_until: Option<Instant>,
    /// Failures in a row that were not the upstream's rate limit (transport, Redis).
    failures: u32,
    paused_until: Option<Instant>,
    hours_checked: Option<Instant>,
}

pub struct Poller {
    spec: PollerSpec,
    mesh_symbols: Vec<String>,
    feed: Arc<MarketFeed>,
    upstream: Upstream,
    limiter: MeshRateLimiter,
    cursor: RefreshCursor,
    hours: MarketHours,
    clock: Arc<dyn Clock>,
    schedule: Mutex<Schedule>,
    /// By mesh symbol.
    instruments: RwLock<HashMap<String, Arc<Instrument>>>,
    flights: SingleFlight<usize, Option<PolledQuote>>,
    /// The same flights across the mesh's instances.
    mesh_flight: MeshFlight,
    status: StatusBoard,
    pacing: Mutex<Pacing>,
    warned: Mutex<HashSet<String>>,
    wake: Notify,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// A quote another flight stored, as the answer to this one.
fn stored_as_polled(q: tickmesh_marketfeed::quotes::QuoteRecord) -> PolledQuote {
    PolledQuote {
        symbol: q.symbol,
        price: q.price,
        quantity: q.quantity,
        time_ns: q.time_ns,
        cumulative_volume: None,
    }
}

fn wall_ms() -> i64 {
    now_nanos() / 1_000_000
}

impl Poller {
    /// Validates `spec` and starts polling until `shutdown`. `instance` names this process in
    /// logs and the status.
    pub fn start(
        spec: PollerSpec,
        feed: Arc<MarketFeed>,
        instance: &str,
        shutdown: CancellationToken,
    ) -> Result<Arc<Poller>> {
        Self::start_with_clock(spec, feed, instance, shutdown, Arc::new(SystemClock))
    }

    /// Like [`Poller::start`], with market hours judged on `clock` (tests pass a
    /// `ManualClock`). Quote times are always the wall clock's.
    pub fn start_with_clock(
        spec: PollerSpec,
        feed: Arc<MarketFeed>,
        instance: &str,
        shutdown: CancellationToken,
        clock: Arc<dyn Clock>,
    ) -> Result<Arc<Poller>> {
        Error::check(spec.violations(""))?;
        let id = limit_id(&spec.base_url, &spec.app_key);
        let redis = feed.redis().clone();
        let shape = RateShape {
            requests_per_second: spec.requests_per_second,
            burst: spec.burst,
            jitter_margin: spec.jitter_margin,
            recovery: spec.recovery,
        };
        let poller = Arc::new(Poller {
            mesh_symbols: spec.symbols.iter().map(|c| spec.mesh_symbol(c)).collect(),
            upstream: Upstream::new(
                &spec.base_url,
                &spec.app_key,
                &spec.app_secret,
                spec.request_timeout,
            )
            .with_shared_token(SharedToken::new(redis.clone(), &id), instance),
            limiter: MeshRateLimiter::new(
                redis.clone(),
                &id,
                shape,
                spec.backoff_min,
                spec.backoff_max,
            ),
            cursor: RefreshCursor::new(redis, &id, &spec.name),
            hours: MarketHours::new(spec.holiday_dates()),
            clock,
            schedule: Mutex::new(Schedule::new(
                spec.symbols.clone(),
                HotRules {
                    window: spec.hot_window,
                    min_interval: spec.hot_min_interval,
                    share_percent: spec.hot_share_percent,
                },
            )),
            instruments: RwLock::new(HashMap::new()),
            flights: SingleFlight::default(),
            mesh_flight: MeshFlight::new(feed.redis().clone(), &id, instance),
            status: StatusBoard::new(&spec.name, instance, spec.symbols.len()),
            pacing: Mutex::new(Pacing::default()),
            warned: Mutex::new(HashSet::new()),
            wake: Notify::new(),
            feed,
            spec,
        });
        tokio::spawn(poller.clone().run(shutdown));
        Ok(poller)
    }

    pub fn spec(&self) -> &PollerSpec {
        &self.spec
    }

    /// A client read `symbol` (a mesh symbol): it is refreshed before the others for a while.
    /// False when this poller does not poll it.
    pub fn touch(&self, symbol: &str) -> bool {
        let Some(i) = self.index_of(symbol) else {
            return false;
        };
        lock(&self.schedule).touch(i, Instant::now());
        self.wake.notify_one();
        true
    }

    /// Asks the upstream for `symbol` now, within the mesh's rate limit, and stores the
    /// answer. Concurrent askers of one symbol share one request. None when the answer cannot
    /// come by `deadline` (no slot in time, a slow upstream, a failure), when the symbol's
    /// market is closed, or when this poller does not poll it: the caller then serves what is
    /// stored, with its age. A request that misses the deadline still stores its answer.
    pub async fn fetch_now(
        self: &Arc<Self>,
        symbol: &str,
        deadline: Instant,
    ) -> Option<PolledQuote> {
        self.fetch(symbol, deadline, false).await
    }

    /// [`Poller::fetch_now`] for a symbol the caller found no quote for (a `GetQuotes`
    /// miss): a quote another flight stored since then (in this process or another
    /// instance) answers without a second upstream request.
    pub async fn fetch_missing(
        self: &Arc<Self>,
        symbol: &str,
        deadline: Instant,
    ) -> Option<PolledQuote> {
        self.fetch(symbol, deadline, true).await
    }

    async fn fetch(
        self: &Arc<Self>,
        symbol: &str,
        deadline: Instant,
        missing: bool,
    ) -> Option<PolledQuote> {
        let i = self.index_of(symbol)?;
        if !lock(&self.schedule).is_open(i) {
            return None;
        }
        let (leader, answer) = self.flights.join(i).split();
        if let Some(leader) = leader {
            let this = self.clone();
            tokio::spawn(async move {
                let quote = this.fetch_for_flight(i, deadline, missing).await;
                leader.finish(quote);
            });
        }
        tokio::time::timeout_at(deadline, answer)
            .await
            .ok()
            .flatten()
            .flatten()
    }

    pub fn status(&self) -> PollerStatus {
        self.status.snapshot()
    }

    /// Whether `symbol`'s market is open now (as of the poller's last look
    /// at the sessions and holidays); None when this poller does not poll it.
    pub fn market_open(&self, symbol: &str) -> Option<bool> {
        let i = self.index_of(symbol)?;
        Some(lock(&self.schedule).is_open(i))
    }

    fn index_of(&self, symbol: &str) -> Option<usize> {
        let code = symbol.strip_prefix(self.spec.symbol_prefix.as_str())?;
        lock(&self.schedule).index_of(code)
    }

    /// Leads the code's flight in the mesh, or waits for the instance that does.
    async fn fetch_for_flight(
        &self,
        i: usize,
        deadline: Instant,
        missing: bool,
    ) -> Option<PolledQuote> {
        let code = lock(&self.schedule).code(i).to_string();
        let hold = deadline.saturating_duration_since(Instant::now()) + self.spec.request_timeout;
        match self.mesh_flight.try_lead(&code, hold).await {
            Ok(true) => {
                // The asker saw no quote; a flight that ended between that
                // read and this lock (here or elsewhere) may have stored one.
                if missing
                    && let Ok(rows) = self
                        .feed
                        .stored_quotes(&[self.mesh_symbols[i].clone()])
                        .await
                    && let Some(q) = rows.into_iter().next().flatten()
                {
                    let _ = self.mesh_flight.release(&code).await;
                    self.status.update(|s| s.joined_elsewhere += 1);
                    return Some(stored_as_polled(q));
                }
                let quote = self.fetch_leading(i, deadline).await;
                if let Err(e) = self.mesh_flight.release(&code).await {
                    tracing::debug!(poller = %self.spec.name, error = %e, "ending a flight");
                }
                quote
            }
            Ok(false) => self.await_other_instance(i, deadline).await,
            // Redis is what stores the answer too: the request is made, and may
            // fail to store, like any other in this state.
            Err(_) => self.fetch_leading(i, deadline).await,
        }
    }

    /// Another instance is asking the upstream for the code: its answer, once stored.
    async fn await_other_instance(&self, i: usize, deadline: Instant) -> Option<PolledQuote> {
        let symbol = [self.mesh_symbols[i].clone()];
        let before = match self.feed.stored_quotes(&symbol).await {
            Ok(rows) => rows.into_iter().next().flatten().map(|q| q.time_ns),
            Err(_) => return None,
        };
        self.status.update(|s| s.joined_elsewhere += 1);
        while Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(20)).await;
            let Ok(rows) = self.feed.stored_quotes(&symbol).await else {
                continue;
            };
            if let Some(q) = rows.into_iter().next().flatten()
                && Some(q.time_ns) != before
            {
                return Some(stored_as_polled(q));
            }
        }
        None
    }

    async fn fetch_leading(&self, i: usize, deadline: Instant) -> Option<PolledQuote> {
        if !lock(&self.schedule).begin(i) {
            tracing::debug!(poller = %self.spec.name, symbol = %self.mesh_symbols[i], "fetch while the code is already in flight");
        }
        match self.limiter.acquire_by(deadline).await {
            Ok(true) => {}
            Ok(false) => {
                // No slot in time: let the loop refresh it first instead.
                let mut schedule = lock(&self.schedule);
                schedule.abandon(i);
                schedule.touch(i, Instant::now());
                self.wake.notify_one();
                return None;
            }
            Err(e) => {
                lock(&self.schedule).abandon(i);
                self.note_error(&e.to_string());
                return None;
            }
        }
        self.status.update(|s| s.fetches += 1);
        self.poll(&[i]).await.remove(&i)
    }

    async fn run(self: Arc<Self>, shutdown: CancellationToken) {
        self.load_instruments().await;
        self.check_hours(Instant::now());
        tokio::spawn(self.clone().refresh_instruments(shutdown.clone()));
        tokio::spawn(self.clone().follow_interest(shutdown.clone()));
        let permits = Arc::new(Semaphore::new(self.spec.max_in_flight));
        let interval = self.limiter.shape().interval();
        tracing::info!(
            poller = %self.spec.name,
            symbols = self.spec.symbols.len(),
            batch_size = self.spec.batch_size,
            requests_per_second = self.spec.requests_per_second,
            "poller started"
        );
        loop {
            if shutdown.is_cancelled() {
                break;
            }
            let now = Instant::now();
            if lock(&self.pacing)
                .hours_checked
                .is_none_or(|t| now.duration_since(t) >= HOURS_CHECK)
            {
                self.check_hours(now);
            }
            let paused = lock(&self.pacing).paused_until.filter(|t| *t > now);
            if let Some(until) = paused {
                tokio::select! {
                    _ = shutdown.cancelled() => break,
                    _ = tokio::time::sleep_until(until) => continue,
                }
            }
            if let Some(idle) = self.idle_for(now) {
                tokio::select! {
                    _ = shutdown.cancelled() => break,
                    _ = self.wake.notified() => {}
                    _ = tokio::time::sleep(idle.min(HOURS_CHECK)) => {}
                }
                continue;
            }
            let permit = tokio::select! {
                _ = shutdown.cancelled() => break,
                p = permits.clone().acquire_owned() => match p {
                    Ok(p) => p,
                    Err(_) => break,
                },
            };
            // Book at most one interval ahead, so single-flight fetches queue behind at most
            // one slot of this instance.
            match self.limiter.reserve(interval).await {
                Ok(Reservation::Granted(wait)) => {
                    let this = self.clone();
                    tokio::spawn(async move {
                        tokio::time::sleep(wait).await;
                        this.send_next().await;
                        drop(permit);
                    });
                }
                Ok(Reservation::Busy(wait)) => {
                    drop(permit);
                    let nap = wait.saturating_sub(interval).max(Duration::from_millis(1));
                    tokio::select! {
                        _ = shutdown.cancelled() => break,
                        _ = tokio::time::sleep(nap) => {}
                    }
                }
                Err(e) => {
                    drop(permit);
                    self.note_error(&e.to_string());
                    self.failed_locally(Instant::now());
                }
            }
        }
        tracing::info!(poller = %self.spec.name, "poller stopped");
    }

    /// None when there is something to send now; else how long nothing will be.
    fn idle_for(&self, now: Instant) -> Option<Duration> {
        let mut schedule = lock(&self.schedule);
        if schedule.has_local_work(now) {
            return None;
        }
        if schedule.open_len() == 0 {
            return Some(HOURS_CHECK);
        }
        match lock(&self.pacing).refresh_wait_until {
            Some(t) if t > now => Some(t - now),
            _ => None,
        }
    }

    fn refresh_idle(&self, now: Instant) -> bool {
        lock(&self.schedule).open_len() == 0
            || lock(&self.pacing)
                .refresh_wait_until
                .is_some_and(|t| t > now)
    }

    /// Fills one booked slot: local picks first, then codes claimed from the shared full
    /// refresh.
    async fn send_next(self: &Arc<Self>) {
        let now = Instant::now();
        let batch = self.spec.batch_size;
        let refresh_idle = self.refresh_idle(now);
        let (mut codes, hot, open_len) = {
            let mut schedule = lock(&self.schedule);
            let pick = schedule.pick(now, batch, refresh_idle);
            (pick.codes, pick.hot, schedule.open_len())
        };
        let (hot, flights) = self.skip_fresh_elsewhere(&mut codes, hot, now).await;
        let mut ends_cycle = None;
        if codes.len() < batch && !refresh_idle && open_len > 0 {
            match self
                .cursor
                .claim(open_len, batch - codes.len(), self.spec.refresh_interval)
                .await
            {
                Ok(Claim::Codes {
                    start,
                    count,
                    started_ms,
                    last,
                    ..
                }) => {
                    codes.extend(lock(&self.schedule).take_refresh(start, count));
                    if last {
                        ends_cycle = Some(started_ms);
                    }
                }
                Ok(Claim::Wait(wait)) => {
                    lock(&self.pacing).refresh_wait_until = Some(now + wait);
                }
                Err(e) => self.note_error(&e.to_string()),
            }
        }
        if codes.is_empty() {
            self.status.update(|s| s.wasted_slots += 1);
            return;
        }
        self.status.update(|s| s.hot_codes += hot as u64);
        self.poll(&codes).await;
        if !flights.is_empty() {
            let held: Vec<&str> = flights.iter().map(String::as_str).collect();
            if let Err(e) = self.mesh_flight.release_many(&held).await {
                tracing::debug!(poller = %self.spec.name, error = %e, "ending hot flights");
            }
        }
        if let Some(started_ms) = ends_cycle {
            let took = Duration::from_millis((wall_ms() - started_ms).max(0) as u64);
            self.status.update(|s| {
                s.full_refreshes += 1;
                s.last_full_refresh = Some(took);
            });
            tracing::debug!(poller = %self.spec.name, took_ms = took.as_millis() as u64, "full refresh done");
        }
    }

    /// Drops from the picked hot codes (the last `hot` of `codes`) those another instance
    /// refreshed within `hot_min_interval` or is asking the upstream for right now (every
    /// instance a client read them on finds them hot), and takes the mesh flight of the
    /// rest. Returns how many hot codes are left and the flights to end after the request.
    async fn skip_fresh_elsewhere(
        &self,
        codes: &mut Vec<usize>,
        hot: usize,
        now: Instant,
    ) -> (usize, Vec<String>) {
        let hot = self.skip_refreshed(codes, hot, now).await;
        if hot == 0 {
            return (0, Vec::new());
        }
        let first_hot = codes.len() - hot;
        let texts: Vec<String> = {
            let schedule = lock(&self.schedule);
            codes[first_hot..]
                .iter()
                .map(|&i| schedule.code(i).to_string())
                .collect()
        };
        let refs: Vec<&str> = texts.iter().map(String::as_str).collect();
        let Ok(led) = self
            .mesh_flight
            .try_lead_many(&refs, self.spec.request_timeout * 2)
            .await
        else {
            return (hot, Vec::new());
        };
        let busy: Vec<usize> = codes[first_hot..]
            .iter()
            .zip(&led)
            .filter(|(_, led)| !**led)
            .map(|(&i, _)| i)
            .collect();
        let flights: Vec<String> = texts
            .into_iter()
            .zip(&led)
            .filter(|(_, led)| **led)
            .map(|(t, _)| t)
            .collect();
        if !busy.is_empty() {
            // Being asked for elsewhere: its answer lands in the store.
            lock(&self.schedule).finish(&busy, true, false, now);
            codes.retain(|i| !busy.contains(i));
        }
        (hot - busy.len(), flights)
    }

    /// Drops hot codes whose stored quote is younger than `hot_min_interval`.
    async fn skip_refreshed(&self, codes: &mut Vec<usize>, hot: usize, now: Instant) -> usize {
        if hot == 0 {
            return 0;
        }
        let first_hot = codes.len() - hot;
        let symbols: Vec<String> = codes[first_hot..]
            .iter()
            .map(|&i| self.mesh_symbols[i].clone())
            .collect();
        let Ok(rows) = self.feed.stored_quotes(&symbols).await else {
            return hot;
        };
        let fresh_ns = i64::try_from(self.spec.hot_min_interval.as_nanos()).unwrap_or(i64::MAX);
        let now_ns = now_nanos();
        let fresh: Vec<usize> = codes[first_hot..]
            .iter()
            .zip(&rows)
            .filter(|(_, row)| row.as_ref().is_some_and(|q| now_ns - q.time_ns < fresh_ns))
            .map(|(&i, _)| i)
            .collect();
        if fresh.is_empty() {
            return hot;
        }
        lock(&self.schedule).finish(&fresh, true, false, now);
        codes.retain(|i| !fresh.contains(i));
        hot - fresh.len()
    }

    /// One upstream request for `codes`; stores the answers and returns them by code index.
    async fn poll(&self, codes: &[usize]) -> HashMap<usize, PolledQuote> {
        let texts: Vec<String> = {
            let schedule = lock(&self.schedule);
            codes
                .iter()
                .map(|&i| schedule.code(i).to_string())
                .collect()
        };
        self.status.update(|s| s.requests += 1);
        let answer = self
            .upstream
            .quotes(&texts, self.spec.batch_size == 1)
            .await;
        let now = Instant::now();
        let quotes = match answer {
            Ok(quotes) => quotes,
            Err(e) => {
                let retry = match &e {
                    UpstreamError::RateLimited { .. } => {
                        self.status.update(|s| s.rate_limited += 1);
                        match self.limiter.penalize().await {
                            Ok(slowdown) => tracing::warn!(
                                poller = %self.spec.name,
                                pause_ms = slowdown.pause.as_millis() as u64,
                                rate_permille = slowdown.rate_permille,
                                error = %e,
                                "upstream rate limit hit; the mesh pauses and slows down"
                            ),
                            Err(redis) => {
                                self.note_error(&redis.to_string());
                                self.failed_locally(now);
                            }
                        }
                        true
                    }
                    UpstreamError::TokenExpired { .. } => {
                        self.note_error(&e.to_string());
                        true
                    }
                    UpstreamError::Refused { .. } => {
                        self.note_error(&e.to_string());
                        false
                    }
                    UpstreamError::Transport(_) => {
                        self.note_error(&e.to_string());
                        self.failed_locally(now);
                        true
                    }
                };
                lock(&self.schedule).finish(codes, false, retry, now);
                return HashMap::new();
            }
        };
        let time_ns = now_nanos();
        let mut polled: Vec<(usize, PolledQuote)> = Vec::with_capacity(quotes.len());
        {
            let schedule = lock(&self.schedule);
            for q in quotes {
                let Some(i) = schedule.index_of(&q.code) else {
                    continue;
                };
                polled.push((
                    i,
                    PolledQuote {
                        symbol: self.mesh_symbols[i].clone(),
                        price: q.price,
                        quantity: q.last_volume.unwrap_or_else(|| "0".to_string()),
                        time_ns,
                        cumulative_volume: q.cumulative_volume,
                    },
                ));
            }
        }
        if polled.len() < codes.len() {
            let answered: HashSet<usize> = polled.iter().map(|(i, _)| *i).collect();
            for &i in codes.iter().filter(|i| !answered.contains(i)) {
                self.warn_once(
                    &self.mesh_symbols[i],
                    "the upstream answered nothing for it",
                );
            }
        }
        match self.store(&polled).await {
            Ok(()) => {
                lock(&self.pacing).failures = 0;
                lock(&self.schedule).finish(codes, true, false, now);
                polled.into_iter().collect()
            }
            Err(e) => {
                self.note_error(&e.to_string());
                self.failed_locally(now);
                lock(&self.schedule).finish(codes, false, true, now);
                HashMap::new()
            }
        }
    }

    /// Writes the quotes and, with `publish_trades`, a trade per cumulative-volume growth.
    async fn store(&self, polled: &[(usize, PolledQuote)]) -> Result<()> {
        if polled.is_empty() {
            return Ok(());
        }
        let quotes: Vec<PolledQuote> = polled.iter().map(|(_, q)| q.clone()).collect();
        let outcomes = self.feed.put_quotes(quotes).await?;
        let mut written = 0;
        let mut trades = Vec::new();
        for ((_, q), outcome) in polled.iter().zip(outcomes) {
            match outcome {
                PutQuoteOutcome::Written { volume_growth } => {
                    written += 1;
                    if self.spec.publish_trades
                        && let (Some(growth), Some(cumulative)) =
                            (volume_growth, q.cumulative_volume.as_ref())
                    {
                        let instrument = self.instrument(&q.symbol);
                        let day = MarketHours::local_date(instrument.as_deref(), q.time_ns);
                        trades.push(RawTrade {
                            symbol: q.symbol.clone(),
                            // One id per cumulative volume and day: another poller that saw
                            // the same growth publishes a duplicate, which MarketFeed drops.
                            trade_id: format!("{day}-v{cumulative}"),
                            price: q.price.clone(),
                            quantity: growth,
                            time_ns: Ok(q.time_ns),
                            side: 0,
                        });
                    }
                }
                PutQuoteOutcome::NotNewer => {}
                PutQuoteOutcome::Rejected { field, reason } => {
                    self.warn_once(&q.symbol, &format!("quote refused: {field} {reason}"));
                }
            }
        }
        self.status.update(|s| s.quotes_written += written);
        if !trades.is_empty() {
            let out = self.feed.publish(trades, false).await?;
            for r in &out.rejections {
                self.warn_once(
                    &r.symbol,
                    &format!("trade refused: {} {}", r.field, r.reason),
                );
            }
            self.status.update(|s| s.trades_published += out.accepted);
        }
        Ok(())
    }

    fn instrument(&self, symbol: &str) -> Option<Arc<Instrument>> {
        self.instruments
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .get(symbol)
            .cloned()
    }

    /// Reloads the instrument definitions of this poller's symbols.
    async fn load_instruments(&self) {
        let wanted: HashSet<&str> = self.mesh_symbols.iter().map(String::as_str).collect();
        let mut found = HashMap::new();
        let mut token = String::new();
        loop {
            match self.feed.list_instruments(10_000, &token).await {
                Ok((page, next)) => {
                    for i in page {
                        if wanted.contains(i.symbol.as_str()) {
                            found.insert(i.symbol.clone(), Arc::new(i));
                        }
                    }
                    if next.is_empty() {
                        break;
                    }
                    token = next;
                }
                Err(e) => {
                    self.note_error(&format!("loading instruments: {e}"));
                    return;
                }
            }
        }
        for symbol in &self.mesh_symbols {
            if !found.contains_key(symbol) {
                self.warn_once(
                    symbol,
                    "no instrument registered: polled around the clock, and its quotes are refused unless MarketFeed auto-registers",
                );
            }
        }
        *self.instruments.write().unwrap_or_else(|e| e.into_inner()) = found;
    }

    /// Symbols followed anywhere in the mesh (open SubscribeCandles, see
    /// [`tickmesh_runtime::interest`]) are hot here too.
    async fn follow_interest(self: Arc<Self>, shutdown: CancellationToken) {
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = tokio::time::sleep(INTEREST_CHECK) => {}
            }
            let followed = match tickmesh_runtime::interest::followed(self.feed.redis()).await {
                Ok(f) => f,
                Err(e) => {
                    tracing::debug!(poller = %self.spec.name, error = %e, "reading followed symbols");
                    continue;
                }
            };
            let now = Instant::now();
            let mut touched = false;
            {
                let mut schedule = lock(&self.schedule);
                for symbol in &followed {
                    let Some(code) = symbol.strip_prefix(self.spec.symbol_prefix.as_str()) else {
                        continue;
                    };
                    if let Some(i) = schedule.index_of(code) {
                        schedule.touch(i, now);
                        touched = true;
                    }
                }
            }
            if touched {
                self.wake.notify_one();
            }
        }
    }

    async fn refresh_instruments(self: Arc<Self>, shutdown: CancellationToken) {
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = tokio::time::sleep(self.spec.instrument_refresh) => {}
            }
            self.load_instruments().await;
        }
    }

    /// Recomputes which codes are open now.
    fn check_hours(&self, now: Instant) {
        let now_ns = self.clock.now_ns();
        let open: Vec<bool> = {
            let instruments = self.instruments.read().unwrap_or_else(|e| e.into_inner());
            self.mesh_symbols
                .iter()
                .map(|s| {
                    self.hours
                        .is_open(instruments.get(s).map(|i| i.as_ref()), now_ns)
                })
                .collect()
        };
        let open_symbols = open.iter().filter(|o| **o).count();
        lock(&self.schedule).set_open(&open);
        lock(&self.pacing).hours_checked = Some(now);
        self.status.update(|s| s.open_symbols = open_symbols);
    }

    /// A failure of ours (transport, Redis): this instance pauses, doubling with each in a row.
    fn failed_locally(&self, now: Instant) {
        let mut pacing = lock(&self.pacing);
        pacing.failures = pacing.failures.saturating_add(1);
        let factor = 1u32 << pacing.failures.saturating_sub(1).min(16);
        let pause = self
            .spec
            .backoff_min
            .saturating_mul(factor)
            .min(self.spec.backoff_max);
        pacing.paused_until = Some(now + pause);
    }

    fn note_error(&self, error: &str) {
        tracing::warn!(poller = %self.spec.name, %error, "poll failed");
        self.status.update(|s| {
            s.errors += 1;
            s.last_error = Some(error.to_string());
        });
    }

    fn warn_once(&self, symbol: &str, what: &str) {
        if lock(&self.warned).insert(format!("{symbol}\n{what}")) {
            tracing::warn!(poller = %self.spec.name, symbol, "{what}");
        }
    }
}
