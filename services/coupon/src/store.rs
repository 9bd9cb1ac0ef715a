//! The durable store of campaigns and issuance records.
//!
//! Redis holds the hot state; this store is what survives losing it. The
//! persist worker writes every issuance here (idempotently: keyed by
//! campaign and sequence, a record written twice is stored once), and a
//! campaign whose Redis state is gone is rebuilt from it. Campaign
//! definitions live here too, so the rebuild knows stock and limits.

use async_trait::async_trait;
use serde::{Deserialize, Serialize};

use crate::campaign::Campaign;

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("issuance store unavailable: {0}")]
    Unavailable(String),
    #[error("issuance store record unreadable: {0}")]
    Corrupt(String),
}

impl From<StoreError> for tickmesh_core::Error {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::Unavailable(m) => tickmesh_core::Error::Unavailable(m),
            StoreError::Corrupt(m) => tickmesh_core::Error::Internal(m),
        }
    }
}

/// One coupon handed out.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Issuance {
    pub campaign_id: String,
    /// 1, 2, … in issue order within the campaign.
    pub seq: u64,
    pub user_id: String,
    pub code: String,
    pub request_id: String,
    pub issued_ms: i64,
}

/// What a batch of records did to the store.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PutOutcome {
    /// Records not stored before.
    pub written: usize,
    /// Records already stored exactly so (a retry).
    pub already: usize,
    /// Sequences already stored with other contents; the stored record is
    /// kept. Only a Redis state lost without being rebuilt can cause this.
    pub conflicting: Vec<u64>,
}

#[async_trait]
pub trait IssuanceStore: Send + Sync + 'static {
    /// Stores `campaign` unless one with its id exists; returns the stored
    /// campaign and whether it was created now.
    async fn create_campaign(&self, campaign: &Campaign) -> Result<(Campaign, bool), StoreError>;
    async fn campaign(&self, id: &str) -> Result<Option<Campaign>, StoreError>;
    /// Up to `limit` campaigns with ids after `after` ("" for the first), in id order.
    async fn list_campaigns(&self, after: &str, limit: usize) -> Result<Vec<Campaign>, StoreError>;
    /// Stores records durably (one transaction); idempotent per (campaign, seq).
    async fn put_issuances(&self, records: &[Issuance]) -> Result<PutOutcome, StoreError>;
    /// Every record of a campaign in sequence order.
    async fn issuances(&self, campaign_id: &str) -> Result<Vec<Issuance>, StoreError>;
    /// The highest sequence stored for a campaign (0 with none): what a
    /// Redis state is confirmed against after a restart. The default reads
    /// every record; a store that can find the last one directly should.
    async fn last_seq(&self, campaign_id: &str) -> Result<u64, StoreError> {
        Ok(self
            .issuances(campaign_id)
            .await?
            .last()
            .map_or(0, |r| r.seq))
    }
}
