//! WatchCampaign: a campaign's remaining stock and state, pushed whenever
//! they change.
//!
//! Every issuance appends to the campaign's log stream; each instance
//! follows the logs its watchers need with one shared tailer
//! (`tickmesh_runtime::stream_hub`), so an issuance on any instance reaches
//! watchers on every instance. A watcher does not look at the entries: any
//! entry marks its view dirty, and a dirty view is re-read (one `HMGET`) at
//! most once per `coupon.watch_interval`, and sent only if it differs from
//! the last one sent. So a sell-out rush of thousands of issuances costs
//! each watcher a few reads, and memory per watcher is one small state and
//! a bounded channel. The state is also re-read once a second, which covers
//! the start and end times passing and log entries trimmed before the
//! tailer saw them. The task ends when the client goes away or the server
//! shuts down.

use std::sync::Arc;
use std::time::Duration;

use redis::Value;
use tickmesh_core::{Error, Result};
use tickmesh_runtime::stream_hub::HubCodec;
use tokio::sync::{broadcast, mpsc};

use crate::campaign::Campaign;
use crate::keys::Keys;
use crate::service::{CampaignView, Coupons};

/// Messages queued per watcher before its task waits for the client.
const QUEUE: usize = 2;
/// How often a watcher re-reads the state whatever the log says.
const RECHECK: Duration = Duration::from_secs(1);

/// Issuance logs as hub topics (one per campaign); items are entry ids.
pub struct LogCodec {
    pub keys: Keys,
}

impl HubCodec for LogCodec {
    type Item = String;

    fn key(&self, topic: &str) -> String {
        self.keys.log(topic)
    }

    fn topic<'a>(&self, key: &'a str) -> Option<&'a str> {
        self.keys.campaign_of_log(key)
    }

    fn decode(&self, _topic: &Arc<str>, entries: Value) -> Result<Vec<String>> {
        tickmesh_runtime::stream_hub::entry_ids(entries, "issuance log")
    }

    fn entry_id(&self, item: &String) -> String {
        item.clone()
    }
}

fn same(a: &CampaignView, b: &CampaignView) -> bool {
    a.remaining == b.remaining && a.state == b.state && a.sold_out_ms == b.sold_out_ms
}

/// Starts a watcher task; its states arrive on the returned channel.
pub fn spawn(
    coupons: Arc<Coupons>,
    campaign: Arc<Campaign>,
) -> mpsc::Receiver<Result<CampaignView>> {
    let (tx, rx) = mpsc::channel(QUEUE);
    tokio::spawn(async move {
        run(coupons, campaign, tx).await;
    });
    rx
}

async fn run(
    coupons: Arc<Coupons>,
    campaign: Arc<Campaign>,
    tx: mpsc::Sender<Result<CampaignView>>,
) {
    let mut sub = coupons.hub.subscribe(&campaign.id);
    let interval = coupons.watch_interval();
    let shutdown = coupons.shutdown.clone();
    let mut last: Option<CampaignView> = None;
    let mut dirty = true;
    let mut recheck = tokio::time::interval(RECHECK);
    loop {
        if dirty {
            dirty = false;
            match coupons.view(campaign.clone()).await {
                Ok(view) => {
                    if last.as_ref().is_none_or(|l| !same(l, &view)) {
                        if tx.send(Ok(view.clone())).await.is_err() {
                            return; // the client went away
                        }
                        last = Some(view);
                    }
                }
                Err(e) => {
                    tracing::debug!(campaign = %campaign.id, error = %e, "watch read failed; ending the stream");
                    let _ = tx.send(Err(e)).await;
                    return;
                }
            }
            // Coalesce: whatever happens meanwhile is covered by the next read.
            tokio::select! {
                _ = tokio::time::sleep(interval) => {}
                _ = tx.closed() => return,
                _ = shutdown.cancelled() => break,
            }
            loop {
                match sub.rx.try_recv() {
                    Ok(_) | Err(broadcast::error::TryRecvError::Lagged(_)) => dirty = true,
                    Err(broadcast::error::TryRecvError::Empty) => break,
                    Err(broadcast::error::TryRecvError::Closed) => return,
                }
            }
            if dirty {
                continue;
            }
        }
        tokio::select! {
            r = sub.rx.recv() => match r {
                Ok(_) | Err(broadcast::error::RecvError::Lagged(_)) => dirty = true,
                Err(broadcast::error::RecvError::Closed) => return,
            },
            _ = recheck.tick() => dirty = true,
            _ = tx.closed() => return,
            _ = shutdown.cancelled() => break,
        }
    }
    // Never wait for a client that does not read: the stream just ends.
    let _ = tx.try_send(Err(Error::ShuttingDown(
        "reconnect to watch the campaign again".into(),
    )));
}
