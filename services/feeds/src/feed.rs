//! One configured feed: the symbols of one venue. It holds a lease per
//! symbol (one owner in the mesh), runs the WebSocket connections for the
//! symbols it owns (split by the venue's per-connection limit), reconnects
//! with backoff and jitter, rotates connections before the venue's forced
//! disconnect, and after every (re)connect and every jump in contiguous ids
//! fills the hole from the venue's REST history. Every trade goes through
//! MarketFeed's publish path, so one received twice is counted once.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tickmesh_marketfeed::MarketFeed;
use tickmesh_marketfeed::model::{Instrument, RawTrade};
use tokio::sync::mpsc;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use crate::connection::{Connection, Ended, Event};
use crate::http::{Http, HttpError};
use crate::ownership::FeedLeases;
use crate::status::{ConnectionState, StatusBoard, SymbolStatus};
use crate::venue::{IdOrder, LastSeen, TakerSide, Venue, VenueTrade};

/// What a feed is, resolved from config.
#[derive(Clone)]
pub struct FeedSpec {
    /// Unique name of the feed (its leases and status are under it).
    pub name: String,
    pub venue: Arc<dyn Venue>,
    /// Symbols as the venue spells them.
    pub symbols: Vec<String>,
    /// Prepended to the venue's symbol to make the mesh symbol ("bybit:").
    pub symbol_prefix: String,
    pub stall_timeout: Duration,
    /// Open a replacement connection at this age (before the venue's forced
    /// disconnect); `None`: the venue's `max_connection_age` less 30 minutes.
    pub rotate_after: Option<Duration>,
    pub lease_ttl: Duration,
    pub backoff_min: Duration,
    pub backoff_max: Duration,
    /// Register missing instruments from the venue's metadata at start.
    pub register_instruments: bool,
    /// Definitions from config, registered (or updated) at start whatever
    /// `register_instruments` says; the venue's metadata is not asked for them.
    pub instruments: Vec<ConfiguredInstrument>,
}

/// A symbol's definition from config (`[[feeds.instruments]]`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ConfiguredInstrument {
    /// The venue's symbol.
    pub symbol: String,
    pub price_scale: u32,
    pub quantity_scale: u32,
    /// IANA zone; empty: UTC.
    pub time_zone: String,
}

impl FeedSpec {
    pub fn mesh_symbol(&self, venue_symbol: &str) -> String {
        format!("{}{venue_symbol}", self.symbol_prefix)
    }

    fn rotation(&self) -> Option<Duration> {
        self.rotate_after.or_else(|| {
            self.venue
                .limits()
                .max_connection_age
                .map(|age| age.saturating_sub(Duration::from_secs(1800)))
        })
    }
}

/// A running feed.
pub struct Feed {
    pub spec: FeedSpec,
    marketfeed: Arc<MarketFeed>,
    http: Http,
    leases: FeedLeases,
    status: Arc<Mutex<BTreeMap<String, SymbolStatus>>>,
    board: StatusBoard,
}

impl Feed {
    pub fn new(spec: FeedSpec, marketfeed: Arc<MarketFeed>, instance: String) -> Arc<Self> {
        let leases = FeedLeases::new(
            marketfeed.redis().clone(),
            &spec.name,
            instance,
            spec.lease_ttl,
        );
        let status = spec
            .symbols
            .iter()
            .map(|s| {
                (
                    s.clone(),
                    SymbolStatus::new(&spec.name, spec.venue.name(), s, &spec.mesh_symbol(s)),
                )
            })
            .collect();
        let board = StatusBoard::new(marketfeed.redis().clone());
        Arc::new(Self {
            spec,
            marketfeed,
            http: Http::default(),
            leases,
            status: Arc::new(Mutex::new(status)),
            board,
        })
    }

    /// This instance's view of each symbol.
    pub fn status(&self) -> Vec<SymbolStatus> {
        self.status
            .lock()
            .expect("status lock")
            .values()
            .cloned()
            .collect()
    }

    /// The mesh's view of this feed's symbols: each owner's latest report.
    pub async fn mesh_status(&self) -> tickmesh_core::Result<Vec<SymbolStatus>> {
        let fresh_ms = 3 * self.spec.lease_ttl.as_millis() as i64;
        self.board.merged(self.status(), fresh_ms).await
    }

    fn update(&self, symbol: &str, f: impl FnOnce(&mut SymbolStatus)) {
        if let Some(s) = self.status.lock().expect("status lock").get_mut(symbol) {
            f(s);
        }
    }

    /// Runs until `shutdown`: leases, connections, backfills.
    pub async fn run(self: Arc<Self>, shutdown: CancellationToken) {
        self.register_configured_instruments().await;
        if self.spec.register_instruments {
            self.register_instruments(&shutdown).await;
        }
        let mut held: BTreeMap<String, String> = BTreeMap::new();
        let mut session: Option<(CancellationToken, tokio::task::JoinHandle<()>)> = None;
        let mut check = tokio::time::interval(self.spec.lease_ttl / 3);
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => break,
                _ = check.tick() => {}
            }
            let before: Vec<String> = held.keys().cloned().collect();
            for symbol in &self.spec.symbols {
                let outcome = match held.get(symbol) {
                    Some(value) => match self.leases.renew(symbol, value).await {
                        Ok(true) => Ok(Some(value.clone())),
                        Ok(false) => {
                            tracing::warn!(feed = %self.spec.name, symbol, "feed lease lost");
                            Ok(None)
                        }
                        Err(e) => Err(e),
                    },
                    None => self.leases.try_acquire(symbol).await,
                };
                match outcome {
                    Ok(Some(value)) => {
                        held.insert(symbol.clone(), value);
                    }
                    Ok(None) => {
                        held.remove(symbol);
                    }
                    Err(e) => {
                        // Redis is down: keep what we hold until the TTL
                        // would have run out; the next check decides.
                        tracing::debug!(feed = %self.spec.name, symbol, error = %e, "lease check failed");
                    }
                }
            }
            for symbol in &self.spec.symbols {
                let owner = if held.contains_key(symbol) {
                    Some(self.leases.instance.clone())
                } else {
                    self.leases.owner(symbol).await.ok().flatten()
                };
                self.update(symbol, |s| {
                    s.owned = held.contains_key(symbol);
                    s.owner = owner.unwrap_or_default();
                    if !s.owned {
                        s.state = ConnectionState::NotOwned;
                    }
                });
            }
            let owned: Vec<SymbolStatus> = self.status().into_iter().filter(|s| s.owned).collect();
            if let Err(e) = self.board.report(&owned).await {
                tracing::debug!(feed = %self.spec.name, error = %e, "writing the feed status");
            }
            let now: Vec<String> = held.keys().cloned().collect();
            if now != before {
                if let Some((cancel, task)) = session.take() {
                    cancel.cancel();
                    let _ = task.await;
                }
                if !now.is_empty() {
                    tracing::info!(feed = %self.spec.name, symbols = now.len(), "feed owns symbols; connecting");
                    let cancel = shutdown.child_token();
                    let task = tokio::spawn(self.clone().run_session(now, cancel.clone()));
                    session = Some((cancel, task));
                }
            }
        }
        if let Some((cancel, task)) = session.take() {
            cancel.cancel();
            let _ = task.await;
        }
        for (symbol, value) in held {
            self.leases.release(&symbol, &value).await;
        }
    }

    /// Stores the config's definitions where the mesh's differ (scales or
    /// zone), so a restart with the same config changes nothing.
    async fn register_configured_instruments(&self) {
        for given in &self.spec.instruments {
            let symbol = self.spec.mesh_symbol(&given.symbol);
            let time_zone = if given.time_zone.is_empty() {
                "UTC".to_string()
            } else {
                given.time_zone.clone()
            };
            let sessions = match self.marketfeed.get_instrument(&symbol).await {
                Ok(stored)
                    if stored.price_scale == given.price_scale
                        && stored.quantity_scale == given.quantity_scale
                        && stored.time_zone == time_zone =>
                {
                    continue;
                }
                Ok(stored) => stored.sessions,
                Err(_) => Vec::new(),
            };
            let instrument = Instrument {
                symbol,
                venue: self.spec.venue.name().to_string(),
                price_scale: given.price_scale,
                quantity_scale: given.quantity_scale,
                time_zone,
                sessions,
                update_time_ns: 0,
            };
            if let Err(e) = self.marketfeed.upsert_instrument(instrument).await {
                tracing::warn!(feed = %self.spec.name, symbol = %given.symbol, error = %e, "registering the configured instrument");
            }
        }
    }

    async fn register_instruments(&self, shutdown: &CancellationToken) {
        let mut missing = Vec::new();
        for symbol in &self.spec.symbols {
            if self.spec.instruments.iter().any(|i| &i.symbol == symbol) {
                continue;
            }
            if self
                .marketfeed
                .get_instrument(&self.spec.mesh_symbol(symbol))
                .await
                .is_err()
            {
                missing.push(symbol.clone());
            }
        }
        if missing.is_empty() {
            return;
        }
        let mut wait = self.spec.backoff_min;
        let specs = loop {
            match self.spec.venue.instruments(&self.http, &missing).await {
                Ok(specs) => break specs,
                Err(e) => {
                    tracing::warn!(feed = %self.spec.name, error = %e, "reading instrument metadata from the venue; retrying");
                    tokio::select! {
                        _ = shutdown.cancelled() => return,
                        _ = tokio::time::sleep(wait) => {}
                    }
                    wait = (wait * 2).min(self.spec.backoff_max);
                }
            }
        };
        for spec in specs {
            let instrument = Instrument {
                symbol: self.spec.mesh_symbol(&spec.symbol),
                venue: self.spec.venue.name().to_string(),
                price_scale: spec.price_scale,
                quantity_scale: spec.quantity_scale,
                time_zone: "UTC".into(),
                sessions: Vec::new(),
                update_time_ns: 0,
            };
            if let Err(e) = self.marketfeed.upsert_instrument(instrument).await {
                tracing::warn!(feed = %self.spec.name, symbol = %spec.symbol, error = %e, "registering the instrument");
            }
        }
    }

    /// The owned symbols' connections, each restarted until `cancel`.
    async fn run_session(self: Arc<Self>, symbols: Vec<String>, cancel: CancellationToken) {
        let per = self.spec.venue.limits().symbols_per_connection.max(1);
        let mut tasks = JoinSet::new();
        for chunk in symbols.chunks(per) {
            tasks.spawn(self.clone().run_group(chunk.to_vec(), cancel.clone()));
        }
        while tasks.join_next().await.is_some() {}
    }

    /// One group of symbols on one connection at a time (two while rotating).
    async fn run_group(self: Arc<Self>, symbols: Vec<String>, cancel: CancellationToken) {
        // Room for a batch's worth of one-trade frames: while a batch is
        // being published the socket keeps being read, and the next batch
        // is what queued meanwhile (bounded: the reader waits when full).
        let (tx, mut rx) = mpsc::channel::<Event>(EVENT_QUEUE);
        let (ended_tx, mut ended_rx) = mpsc::channel::<(u64, Ended)>(4);
        let mut next_id = 0u64;
        let mut last_ordinal: HashMap<String, u64> = HashMap::new();
        let mut attempt = 0u32;
        let mut backfills = JoinSet::new();
        let mut replacement: Option<(u64, CancellationToken)> = None;
        // Symbols whose first live trade since the last connect has not come
        // yet: the hole up to it is filled when it does (see `first_live`).
        let mut awaiting_first: HashSet<String> = HashSet::new();
        let start = |id: u64| {
            let token = cancel.child_token();
            let connection = Connection {
                venue: self.spec.venue.clone(),
                symbols: symbols.clone(),
                stall_timeout: self.spec.stall_timeout,
                id,
            };
            let (tx, ended_tx, t) = (tx.clone(), ended_tx.clone(), token.clone());
            tokio::spawn(async move {
                let ended = connection.run(tx, t).await;
                let _ = ended_tx.send((id, ended)).await;
            });
            token
        };
        // The connection in use, and the one replacing it during a rotation.
        let mut current: Option<(u64, CancellationToken)> = Some((next_id, start(next_id)));
        let rotation = self.spec.rotation();
        let mut rotate_at = rotation.map(|r| tokio::time::Instant::now() + r);
        'run: loop {
            let rotate = async {
                match rotate_at {
                    Some(at) => tokio::time::sleep_until(at).await,
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                _ = cancel.cancelled() => break,
                _ = rotate, if replacement.is_none() => {
                    next_id += 1;
                    tracing::info!(feed = %self.spec.name, connection = next_id, "rotating the connection before the venue's forced disconnect");
                    replacement = Some((next_id, start(next_id)));
                    rotate_at = None;
                }
                Some((id, ended)) = ended_rx.recv() => {
                    let is_current = current.as_ref().is_some_and(|(c, _)| *c == id);
                    if replacement.as_ref().is_some_and(|(r, _)| *r == id) {
                        replacement = None;
                        rotate_at = Some(tokio::time::Instant::now() + self.spec.backoff_min);
                    }
                    if !is_current || ended == Ended::Cancelled {
                        continue;
                    }
                    tracing::warn!(feed = %self.spec.name, connection = id, reason = ?ended, "feed connection ended; reconnecting");
                    for s in &symbols {
                        self.update(s, |st| {
                            st.state = ConnectionState::Reconnecting;
                            st.reconnects += 1;
                            st.last_error = format!("{ended:?}");
                        });
                    }
                    if let Some((id, token)) = replacement.take() {
                        current = Some((id, token));
                        continue;
                    }
                    let wait = backoff(self.spec.backoff_min, self.spec.backoff_max, attempt);
                    attempt = attempt.saturating_add(1);
                    tokio::select! {
                        _ = cancel.cancelled() => break,
                        _ = tokio::time::sleep(wait) => {}
                    }
                    next_id += 1;
                    current = Some((next_id, start(next_id)));
                    rotate_at = rotation.map(|r| tokio::time::Instant::now() + r);
                }
                Some(first) = rx.recv() => for event in coalesce(first, &mut rx) { match event {
                    Event::Connected { connection } => {
                        if replacement.as_ref().is_some_and(|(r, _)| *r == connection) {
                            // Let both deliver for a moment (ingest drops the
                            // overlap), then retire the old one.
                            tokio::time::sleep(Duration::from_millis(500)).await;
                            if let Some((_, old)) = current.take() {
                                old.cancel();
                            }
                            current = replacement.take();
                            rotate_at = rotation.map(|r| tokio::time::Instant::now() + r);
                            continue;
                        }
                        attempt = 0;
                        awaiting_first.extend(symbols.iter().cloned());
                        for s in &symbols {
                            self.update(s, |st| st.state = ConnectionState::Backfilling);
                            backfills.spawn(self.clone().backfill_after_tick_log(s.clone(), None, cancel.clone()));
                        }
                    }
                    Event::Trades { trades, .. } => {
                        if !awaiting_first.is_empty() {
                            self.first_live(&trades, &mut awaiting_first, &mut last_ordinal, &mut backfills, &cancel).await;
                        }
                        if self.spec.venue.id_order() == IdOrder::Contiguous {
                            for t in &trades {
                                let Some(ordinal) = t.ordinal else { continue };
                                match last_ordinal.get(&t.symbol).copied() {
                                    Some(last) if ordinal > last + 1 => {
                                        tracing::info!(feed = %self.spec.name, symbol = %t.symbol, from = last + 1, to = ordinal - 1, "trade ids jumped; backfilling the gap");
                                        let after = LastSeen { trade_id: last.to_string(), ordinal: Some(last), time_ms: t.time_ms };
                                        backfills.spawn(self.clone().backfill(t.symbol.clone(), after, Some(t.clone()), cancel.clone()));
                                    }
                                    _ => {}
                                }
                                let slot = last_ordinal.entry(t.symbol.clone()).or_insert(ordinal);
                                *slot = (*slot).max(ordinal);
                            }
                        }
                        if !self.publish(&trades, &cancel).await {
                            break 'run;
                        }
                        self.note_received(&trades);
                    }
                } },
                Some(_) = backfills.join_next(), if !backfills.is_empty() => {}
            }
        }
        if let Some((_, t)) = current {
            t.cancel();
        }
        if let Some((_, t)) = replacement {
            t.cancel();
        }
        backfills.shutdown().await;
    }

    /// Status of live trades: per symbol its count, last id and newest time,
    /// one status update per symbol and batch.
    fn note_received(&self, trades: &[VenueTrade]) {
        let mut per: BTreeMap<&str, (u64, &str, i64)> = BTreeMap::new();
        for t in trades {
            let e = per.entry(t.symbol.as_str()).or_insert((0, "", i64::MIN));
            e.0 += 1;
            e.1 = &t.trade_id;
            e.2 = e.2.max(t.time_ms);
        }
        let mut status = self.status.lock().expect("status lock");
        for (symbol, (n, last_id, newest)) in per {
            if let Some(st) = status.get_mut(symbol) {
                if st.state != ConnectionState::Backfilling {
                    st.state = ConnectionState::Live;
                }
                st.last_trade_id = last_id.to_string();
                st.last_trade_time_ms = st.last_trade_time_ms.max(newest);
                st.received += n;
            }
        }
    }

    /// The first live trades since a connect. A venue starts streaming a
    /// moment after the socket opens, so the backfill made at connect may end
    /// before the first trade the socket brings: whatever traded in between
    /// is filled now, up to that first trade, from the last trade stored
    /// (read before this batch is published). Venues with contiguous ids
    /// seed the jump check with the stored id, so a hole shows as a jump;
    /// the others fetch the hole by time.
    async fn first_live(
        self: &Arc<Self>,
        trades: &[VenueTrade],
        awaiting: &mut HashSet<String>,
        last_ordinal: &mut HashMap<String, u64>,
        backfills: &mut JoinSet<()>,
        cancel: &CancellationToken,
    ) {
        let mut firsts: BTreeMap<&str, &VenueTrade> = BTreeMap::new();
        for t in trades {
            if awaiting.contains(&t.symbol) {
                firsts.entry(t.symbol.as_str()).or_insert(t);
            }
        }
        for (symbol, first) in firsts {
            awaiting.remove(symbol);
            let stored = match self
                .marketfeed
                .last_trade(&self.spec.mesh_symbol(symbol))
                .await
            {
                Ok(Some(last)) => LastSeen {
                    ordinal: last.trade_id.parse().ok(),
                    trade_id: last.trade_id,
                    time_ms: last.time_ns / 1_000_000,
                },
                // Nothing stored: a new symbol starts from its first trade.
                Ok(None) => continue,
                Err(e) => {
                    tracing::warn!(feed = %self.spec.name, symbol, error = %e, "reading the tick log's last trade; the connect-time backfill stands alone");
                    continue;
                }
            };
            if self.spec.venue.id_order() == IdOrder::Contiguous {
                if let Some(ordinal) = stored.ordinal {
                    last_ordinal.insert(symbol.to_string(), ordinal);
                }
            } else if stored.trade_id != first.trade_id {
                backfills.spawn(self.clone().backfill(
                    symbol.to_string(),
                    stored,
                    Some(first.clone()),
                    cancel.clone(),
                ));
            }
        }
    }

    /// Backfills `symbol` from the last trade the tick log holds (a
    /// reconnect or a take-over).
    async fn backfill_after_tick_log(
        self: Arc<Self>,
        symbol: String,
        until: Option<VenueTrade>,
        cancel: CancellationToken,
    ) {
        let mesh_symbol = self.spec.mesh_symbol(&symbol);
        let last = loop {
            match self.marketfeed.last_trade(&mesh_symbol).await {
                Ok(last) => break last,
                Err(e) => {
                    tracing::debug!(symbol = %mesh_symbol, error = %e, "reading the tick log's last trade");
                    tokio::select! {
                        _ = cancel.cancelled() => return,
                        _ = tokio::time::sleep(Duration::from_millis(500)) => {}
                    }
                }
            }
        };
        match last {
            Some(last) => {
                let after = LastSeen {
                    ordinal: last.trade_id.parse().ok(),
                    trade_id: last.trade_id,
                    time_ms: last.time_ns / 1_000_000,
                };
                self.backfill(symbol, after, until, cancel).await
            }
            // Nothing stored yet: a new feed starts from now.
            None => self.update(&symbol, |s| s.state = ConnectionState::Live),
        }
    }

    /// Fetches and publishes what the venue's history holds after `after`.
    async fn backfill(
        self: Arc<Self>,
        symbol: String,
        after: LastSeen,
        until: Option<VenueTrade>,
        cancel: CancellationToken,
    ) {
        let mut wait = self.spec.backoff_min;
        let outcome = loop {
            let fetch = self
                .spec
                .venue
                .backfill(&self.http, &symbol, &after, until.as_ref());
            let result = tokio::select! {
                _ = cancel.cancelled() => return,
                r = fetch => r,
            };
            match result {
                Ok(outcome) => break outcome,
                Err(HttpError::RateLimited { retry_after, .. }) => {
                    tracing::warn!(feed = %self.spec.name, symbol, ?retry_after, "backfill rate limited by the venue; waiting");
                    wait = retry_after.max(self.spec.backoff_min);
                }
                Err(e) => {
                    tracing::warn!(feed = %self.spec.name, symbol, error = %e, "backfill failed; retrying");
                    wait = (wait * 2).min(self.spec.backoff_max);
                }
            }
            tokio::select! {
                _ = cancel.cancelled() => return,
                _ = tokio::time::sleep(wait) => {}
            }
        };
        let trades = outcome.trades;
        for chunk in trades.chunks(1000) {
            if !self.publish(chunk, &cancel).await {
                return;
            }
        }
        let missing = outcome
            .missing
            .map(|(a, b)| b.saturating_sub(a) + 1)
            .unwrap_or(0);
        if !outcome.complete {
            match outcome.missing {
                Some((first, last)) => tracing::error!(
                    feed = %self.spec.name, symbol, first_id = first, last_id = last,
                    "trades the venue no longer serves could not be backfilled"
                ),
                None => tracing::error!(
                    feed = %self.spec.name, symbol, after_id = %after.trade_id,
                    "the venue's history did not reach back to the last trade seen; trades in between may be missing"
                ),
            }
        }
        self.update(&symbol, |s| {
            s.backfilled += trades.len() as u64;
            s.unrecoverable += missing;
            if !outcome.complete {
                s.incomplete_backfills += 1;
            }
            s.state = ConnectionState::Live;
        });
    }

    /// Publishes through MarketFeed, retrying while Redis is unavailable
    /// (nothing received is dropped); false when cancelled first.
    /// Publishes `trades` in order, in calls MarketFeed takes (at most
    /// [`PUBLISH_BATCH`] and its `max_batch_trades`); false when cancelled.
    async fn publish(&self, trades: &[VenueTrade], cancel: &CancellationToken) -> bool {
        let per_call = PUBLISH_BATCH
            .min(self.marketfeed.config().max_batch_trades)
            .max(1);
        for chunk in trades.chunks(per_call) {
            if !self.publish_call(chunk, cancel).await {
                return false;
            }
        }
        true
    }

    async fn publish_call(&self, trades: &[VenueTrade], cancel: &CancellationToken) -> bool {
        let raw = || -> Vec<RawTrade> {
            trades
                .iter()
                .map(|t| RawTrade {
                    symbol: self.spec.mesh_symbol(&t.symbol),
                    trade_id: t.trade_id.clone(),
                    price: t.price.clone(),
                    quantity: t.quantity.clone(),
                    time_ns: Ok(t.time_ms.saturating_mul(1_000_000)),
                    side: match t.side {
                        TakerSide::Buy => 1,
                        TakerSide::Sell => 2,
                        TakerSide::Unknown => 0,
                    },
                })
                .collect()
        };
        let mut wait = Duration::from_millis(100);
        loop {
            // Built per attempt (a retry is rare), so the common case copies
            // each trade's text once.
            match self.marketfeed.publish(raw(), false).await {
                Ok(outcome) => {
                    for r in &outcome.rejections {
                        tracing::warn!(feed = %self.spec.name, symbol = %r.symbol, trade_id = %r.trade_id, field = %r.field, reason = %r.reason, "venue trade rejected");
                    }
                    if outcome.rejected > 0 {
                        for r in &outcome.rejections {
                            if let Some(venue_symbol) =
                                r.symbol.strip_prefix(&self.spec.symbol_prefix)
                            {
                                self.update(venue_symbol, |s| s.rejected += 1);
                            }
                        }
                    }
                    return true;
                }
                Err(e) => {
                    tracing::warn!(feed = %self.spec.name, error = %e, "publishing venue trades failed; retrying");
                    tokio::select! {
                        _ = cancel.cancelled() => return false,
                        _ = tokio::time::sleep(wait) => {}
                    }
                    wait = (wait * 2).min(Duration::from_secs(2));
                }
            }
        }
    }
}

/// Trades published in one MarketFeed call at most.
const PUBLISH_BATCH: usize = 2_000;

/// Socket events queued between a connection and its feed.
const EVENT_QUEUE: usize = 4_096;

/// `first` and whatever else is already queued, with runs of trade events
/// merged into batches of up to [`PUBLISH_BATCH`] (in order), so a busy
/// socket costs one Redis round trip per batch instead of one per message.
fn coalesce(first: Event, rx: &mut mpsc::Receiver<Event>) -> Vec<Event> {
    let mut out: Vec<Event> = vec![first];
    let mut taken = 0;
    // Bounded by the channel's own capacity, so this never spins.
    while taken < EVENT_QUEUE {
        let Ok(next) = rx.try_recv() else { break };
        taken += 1;
        match (out.last_mut(), next) {
            (
                Some(Event::Trades { trades, .. }),
                Event::Trades {
                    trades: more,
                    connection,
                },
            ) => {
                if trades.len() + more.len() <= PUBLISH_BATCH {
                    trades.extend(more);
                } else {
                    out.push(Event::Trades {
                        connection,
                        trades: more,
                    });
                }
            }
            (_, next) => out.push(next),
        }
    }
    out
}

/// Exponential backoff with full jitter: a random wait in
/// `[min, min(max, min·2^attempt)]`.
pub fn backoff(min: Duration, max: Duration, attempt: u32) -> Duration {
    let cap = min
        .saturating_mul(1u32 << attempt.min(16))
        .min(max)
        .max(min);
    let span = (cap - min).as_millis() as u64;
    min + Duration::from_millis(if span == 0 {
        0
    } else {
        fastrand::u64(0..=span)
    })
}

#[cfg(test)]
mod tests {
    use super::{Event, PUBLISH_BATCH, backoff, coalesce};
    use crate::venue::{TakerSide, VenueTrade};
    use std::time::Duration;
    use tokio::sync::mpsc;

    fn trades(ids: std::ops::Range<u64>) -> Event {
        Event::Trades {
            connection: 0,
            trades: ids
                .map(|i| VenueTrade {
                    symbol: "BTCUSDT".into(),
                    trade_id: i.to_string(),
                    ordinal: Some(i),
                    price: "1".into(),
                    quantity: "1".into(),
                    time_ms: 0,
                    side: TakerSide::Buy,
                })
                .collect(),
        }
    }

    fn shape(events: &[Event]) -> Vec<String> {
        events
            .iter()
            .map(|e| match e {
                Event::Connected { .. } => "connected".to_string(),
                Event::Trades { trades, .. } => {
                    format!(
                        "{}..{}",
                        trades[0].trade_id,
                        trades.last().unwrap().trade_id
                    )
                }
            })
            .collect()
    }

    #[tokio::test]
    async fn queued_trade_messages_merge_in_order_up_to_a_batch() {
        let (tx, mut rx) = mpsc::channel(64);
        tx.send(trades(3..5)).await.unwrap();
        tx.send(Event::Connected { connection: 1 }).await.unwrap();
        tx.send(trades(5..6)).await.unwrap();
        tx.send(trades(6..(PUBLISH_BATCH as u64 + 4)))
            .await
            .unwrap();
        tx.send(trades(7000..7002)).await.unwrap();
        let got = coalesce(trades(0..3), &mut rx);
        assert_eq!(
            shape(&got),
            [
                "0..4".to_string(),
                "connected".into(),
                format!("5..{}", PUBLISH_BATCH + 3),
                "7000..7001".into()
            ]
        );
        // Nothing queued: just the first.
        assert_eq!(shape(&coalesce(trades(9..10), &mut rx)), ["9..9"]);
    }

    #[test]
    fn backoff_grows_within_bounds() {
        let (min, max) = (Duration::from_millis(100), Duration::from_secs(5));
        for attempt in 0..40 {
            let w = backoff(min, max, attempt);
            assert!(w >= min && w <= max, "{w:?} at {attempt}");
        }
        assert_eq!(backoff(min, min, 10), min);
        // With attempt 0 the wait is exactly the minimum.
        assert_eq!(backoff(min, max, 0), min);
    }
}
