//! Remaining stock of the coupon campaign a room is linked to. The scheduler
//! asks every `queue.stock_check_interval`; at zero the room stops admitting
//! and its waiters are told SOLD_OUT.

use async_trait::async_trait;
use tickmesh_core::Result;

#[async_trait]
pub trait StockSource: Send + Sync + 'static {
    /// Coupons left in `campaign_id` (`NotFound` for an unknown campaign).
    async fn remaining(&self, campaign_id: &str) -> Result<i64>;
}
