//! What a poller instance has done, for GetFeedStatus-style reports and benchmarks.

use std::sync::Mutex;
use std::time::Duration;

/// A snapshot of one poller instance.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PollerStatus {
    pub name: String,
    pub instance: String,
    /// Codes configured.
    pub symbols: usize,
    /// Codes whose market is open now.
    pub open_symbols: usize,
    /// Upstream quote requests sent by this instance.
    pub requests: u64,
    /// Of those, answered with a rate-limit refusal.
    pub rate_limited: u64,
    /// Failures other than rate limits: transport, refusals, token expiry, Redis.
    pub errors: u64,
    /// Quotes stored as the newest of their symbol.
    pub quotes_written: u64,
    /// Trades published from cumulative-volume growth.
    pub trades_published: u64,
    /// Requests for hot (recently read) codes.
    pub hot_codes: u64,
    /// Single-flight fetches that reached the upstream.
    pub fetches: u64,
    /// Single-flight fetches answered by another instance's request for the code.
    pub joined_elsewhere: u64,
    /// Rate-limit slots booked that found nothing left to ask for.
    pub wasted_slots: u64,
    /// Full refreshes this instance finished (it claimed the cycle's last codes).
    pub full_refreshes: u64,
    /// How long the last of those took, from the cycle's first claim anywhere in the mesh
    /// (Redis's clock) to the answer of its last request here (this host's wall clock).
    pub last_full_refresh: Option<Duration>,
    /// The last failure, for humans.
    pub last_error: Option<String>,
}

/// The live counters behind [`PollerStatus`].
#[derive(Default)]
pub(crate) struct StatusBoard {
    inner: Mutex<PollerStatus>,
}

impl StatusBoard {
    pub fn new(name: &str, instance: &str, symbols: usize) -> Self {
        Self {
            inner: Mutex::new(PollerStatus {
                name: name.to_string(),
                instance: instance.to_string(),
                symbols,
                ..Default::default()
            }),
        }
    }

    pub fn update(&self, f: impl FnOnce(&mut PollerStatus)) {
        f(&mut self.inner.lock().unwrap_or_else(|e| e.into_inner()));
    }

    pub fn snapshot(&self) -> PollerStatus {
        self.inner.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }
}
