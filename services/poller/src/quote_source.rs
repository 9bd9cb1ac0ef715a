//! A running poller as MarketFeed's [`QuoteSource`]: `GetQuotes` reads make
//! its symbols hot, a miss triggers one shared upstream call, and a closed
//! market marks the quote as the last session's.

use std::sync::Arc;
use std::time::Duration;

use tickmesh_marketfeed::quote_source::{Fetch, QuoteSource};

use crate::poller::Poller;

pub struct PollerQuotes {
    pub poller: Arc<Poller>,
    pub miss_wait: Duration,
}

impl QuoteSource for PollerQuotes {
    fn touch(&self, symbol: &str) -> bool {
        self.poller.touch(symbol)
    }

    fn fetch_now(&self, symbol: &str, deadline: tokio::time::Instant) -> Fetch<'_> {
        let symbol = symbol.to_string();
        // Asked on a GetQuotes miss only.
        Box::pin(async move { self.poller.fetch_missing(&symbol, deadline).await.is_some() })
    }

    fn market_open(&self, symbol: &str) -> Option<bool> {
        self.poller.market_open(symbol)
    }

    fn miss_wait(&self) -> Duration {
        self.miss_wait
    }
}
