//! The admission task every instance runs: one [`Admitter::pass`] per room
//! every `queue.admission_interval` (the passes of all instances interleave
//! safely: see `admission.rs`), and, every `queue.stock_check_interval`, the
//! remaining stock of linked campaigns, which sets or clears the room's
//! sold-out flag.

use std::sync::Arc;
use std::time::Instant;

use tickmesh_core::Result;
use tokio::task::JoinHandle;

use crate::service::Queue;

pub fn spawn(queue: Arc<Queue>) -> JoinHandle<()> {
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(queue.config.admission_interval);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut last_stock_check: Option<Instant> = None;
        loop {
            tokio::select! {
                _ = tick.tick() => {}
                _ = queue.shutdown.cancelled() => return,
            }
            if queue.stock.is_some()
                && last_stock_check.is_none_or(|t| t.elapsed() >= queue.config.stock_check_interval)
            {
                last_stock_check = Some(Instant::now());
                if let Err(e) = check_stock(&queue).await {
                    tracing::debug!(error = %e, "stock check failed; retrying next interval");
                }
            }
            if let Err(e) = queue.admit_all().await {
                tracing::debug!(error = %e, "admission pass failed; retrying next interval");
            }
        }
    })
}

/// Sets each linked room's sold-out flag from its campaign's stock.
pub async fn check_stock(queue: &Queue) -> Result<()> {
    let Some(stock) = &queue.stock else {
        return Ok(());
    };
    for id in queue.rooms.ids().await? {
        let room = match queue.rooms.get(&id).await {
            Ok(room) => room,
            Err(_) => continue,
        };
        if room.campaign_id.is_empty() {
            continue;
        }
        match stock.remaining(&room.campaign_id).await {
            Ok(left) => {
                if queue.set_sold_out(&room.id, left <= 0).await? && left <= 0 {
                    tracing::info!(room = %room.id, campaign = %room.campaign_id, "campaign sold out; admission stopped");
                }
            }
            Err(e) => {
                tracing::warn!(room = %room.id, campaign = %room.campaign_id, error = %e, "cannot read the campaign's stock")
            }
        }
    }
    Ok(())
}
