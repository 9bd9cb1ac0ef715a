//! Campaign definitions as each instance sees them: the durable store is
//! the source of truth (it survives Redis), cached in memory. The cache is
//! refreshed on a timer and on a miss, so a campaign created on another
//! instance is usable at once.

use std::collections::HashMap;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use tickmesh_core::{Error, Result};
use tokio_util::sync::CancellationToken;

use crate::campaign::Campaign;
use crate::store::IssuanceStore;

const LIST_PAGE: usize = 1000;

pub struct CampaignBook {
    store: Arc<dyn IssuanceStore>,
    cache: RwLock<HashMap<String, Arc<Campaign>>>,
}

impl CampaignBook {
    pub fn new(store: Arc<dyn IssuanceStore>) -> Self {
        Self {
            store,
            cache: RwLock::new(HashMap::new()),
        }
    }

    pub fn store(&self) -> &Arc<dyn IssuanceStore> {
        &self.store
    }

    /// The campaign for serving a call: from the cache, else the store.
    pub async fn resolve(&self, id: &str) -> Result<Arc<Campaign>> {
        if let Some(c) = self.cache.read().expect("campaign cache lock").get(id) {
            return Ok(c.clone());
        }
        let campaign = self
            .store
            .campaign(id)
            .await?
            .ok_or_else(|| Error::NotFound(format!("campaign {id:?}")))?;
        let campaign = Arc::new(campaign);
        self.put(campaign.clone());
        Ok(campaign)
    }

    pub fn put(&self, campaign: Arc<Campaign>) {
        self.cache
            .write()
            .expect("campaign cache lock")
            .insert(campaign.id.clone(), campaign);
    }

    /// Every cached campaign.
    pub fn cached(&self) -> Vec<Arc<Campaign>> {
        self.cache
            .read()
            .expect("campaign cache lock")
            .values()
            .cloned()
            .collect()
    }

    /// Reloads every definition from the store.
    pub async fn refresh(&self) -> Result<()> {
        let mut fresh = HashMap::new();
        let mut after = String::new();
        loop {
            let page = self.store.list_campaigns(&after, LIST_PAGE).await?;
            let done = page.len() < LIST_PAGE;
            for c in page {
                after = c.id.clone();
                fresh.insert(c.id.clone(), Arc::new(c));
            }
            if done {
                break;
            }
        }
        *self.cache.write().expect("campaign cache lock") = fresh;
        Ok(())
    }

    /// Refreshes the cache every `every` until shutdown.
    pub fn spawn_refresh(self: Arc<Self>, every: Duration, shutdown: CancellationToken) {
        tokio::spawn(async move {
            loop {
                if let Err(e) = self.refresh().await {
                    tracing::debug!(error = %e, "campaign refresh failed; keeping the cache");
                }
                tokio::select! {
                    _ = shutdown.cancelled() => break,
                    _ = tokio::time::sleep(every) => {}
                }
            }
        });
    }
}
