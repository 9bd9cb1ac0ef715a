//! Feeds: the mesh's own connections to venues. Each venue is one file under
//! [`venues`] behind the [`venue::Venue`] trait; the connection runner
//! ([`connection`]), ownership leases ([`ownership`]) and the feed that
//! reconnects, rotates and backfills ([`feed`]) are shared.

pub mod connection;
pub mod decimal_text;
pub mod feed;
pub mod from_config;
pub mod grpc;
pub mod http;
pub mod ownership;
pub mod status;
pub mod venue;
pub mod venues;

use std::sync::Arc;

use tokio_util::sync::CancellationToken;

pub use feed::{Feed, FeedSpec};
pub use status::SymbolStatus;

/// The feeds one process runs.
#[derive(Clone, Default)]
pub struct Feeds {
    feeds: Vec<Arc<Feed>>,
}

impl Feeds {
    /// Starts every feed; each runs until `shutdown`.
    pub fn start(
        specs: Vec<FeedSpec>,
        marketfeed: Arc<tickmesh_marketfeed::MarketFeed>,
        instance: &str,
        shutdown: CancellationToken,
    ) -> Self {
        let feeds: Vec<Arc<Feed>> = specs
            .into_iter()
            .map(|spec| Feed::new(spec, marketfeed.clone(), instance.to_string()))
            .collect();
        for feed in &feeds {
            tokio::spawn(feed.clone().run(shutdown.clone()));
        }
        Self { feeds }
    }

    /// The mesh's view of every symbol of the feeds (or of the one named
    /// `only`), in feed then symbol order; NOT_FOUND for an unknown feed.
    pub async fn mesh_status(&self, only: &str) -> tickmesh_core::Result<Vec<SymbolStatus>> {
        if only.len() > 128 || only.chars().any(char::is_control) {
            return Err(tickmesh_core::Error::invalid(
                "feed",
                "is not a feed name (at most 128 characters, no control characters)",
            ));
        }
        let mut out = Vec::new();
        let mut found = only.is_empty();
        for feed in &self.feeds {
            if only.is_empty() || feed.spec.name == only {
                found = true;
                out.extend(feed.mesh_status().await?);
            }
        }
        if !found {
            return Err(tickmesh_core::Error::NotFound(format!("feed {only:?}")));
        }
        Ok(out)
    }

    /// Every symbol of every feed, as this instance sees it.
    pub fn status(&self) -> Vec<SymbolStatus> {
        self.feeds.iter().flat_map(|f| f.status()).collect()
    }
}
