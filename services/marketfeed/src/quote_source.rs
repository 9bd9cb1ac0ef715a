//! Sources that refresh quotes on demand (the quote pollers): `GetQuotes`
//! tells them which symbols clients read, asks them once for a symbol that
//! has no quote yet, and learns from them whether a symbol's market is
//! closed (its quote is then the last session's, not stale).

use std::future::Future;
use std::pin::Pin;

pub type Fetch<'a> = Pin<Box<dyn Future<Output = bool> + Send + 'a>>;

pub trait QuoteSource: Send + Sync {
    /// A client read `symbol`: refresh it soon. False when this source does
    /// not poll it.
    fn touch(&self, symbol: &str) -> bool;
    /// One upstream call for `symbol` (shared by concurrent askers), stored
    /// before `deadline`: true when a fresh quote was stored in time.
    fn fetch_now(&self, symbol: &str, deadline: tokio::time::Instant) -> Fetch<'_>;
    /// `Some(false)` when this source polls `symbol` and its market is
    /// closed now; `None` when it does not poll it.
    fn market_open(&self, symbol: &str) -> Option<bool>;
    /// How long a miss waits for `fetch_now`.
    fn miss_wait(&self) -> std::time::Duration;
}
