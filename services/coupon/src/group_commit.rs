//! Group commit: concurrent Issue calls for one campaign share one script
//! call. A collector takes queued calls whenever one of a few in-flight
//! slots is free, groups them by campaign and runs one issue script per
//! group; the script decides them in order, each exactly as if it ran alone
//! (same checks, same atomicity per call). Under light load a call goes
//! alone at once; under a rush the calls that queued while the slots were
//! busy go together, so Redis runs one script instead of hundreds.

use std::collections::HashMap;
use std::sync::Arc;

use tickmesh_core::{Error, Result};
use tokio::sync::{Semaphore, mpsc, oneshot};

use crate::clock::Clock;
use crate::issue_script::{Decision, IssueScript};

/// Calls per script call at most.
const MAX_BATCH: usize = 256;
/// Script calls in flight at once.
const IN_FLIGHT: usize = 8;
/// Calls queued before callers wait.
const QUEUE: usize = 16_384;

struct Call {
    campaign: String,
    user: String,
    request: String,
    reply: oneshot::Sender<Result<Decision>>,
}

pub struct GroupCommit {
    tx: mpsc::Sender<Call>,
}

impl GroupCommit {
    pub fn start(script: Arc<IssueScript>, clock: Arc<dyn Clock>) -> Self {
        let (tx, rx) = mpsc::channel(QUEUE);
        tokio::spawn(collect(rx, script, clock));
        Self { tx }
    }

    pub async fn issue(&self, campaign: &str, user: &str, request: &str) -> Result<Decision> {
        let (reply, answer) = oneshot::channel();
        self.tx
            .send(Call {
                campaign: campaign.to_string(),
                user: user.to_string(),
                request: request.to_string(),
                reply,
            })
            .await
            .map_err(|_| Error::ShuttingDown("issue queue closed".into()))?;
        answer
            .await
            .map_err(|_| Error::Internal("issue batch dropped its calls".into()))?
    }
}

async fn collect(mut rx: mpsc::Receiver<Call>, script: Arc<IssueScript>, clock: Arc<dyn Clock>) {
    let slots = Arc::new(Semaphore::new(IN_FLIGHT));
    loop {
        let Ok(slot) = slots.clone().acquire_owned().await else {
            return;
        };
        let Some(first) = rx.recv().await else {
            return; // every sender is gone: the service was dropped
        };
        let mut calls = vec![first];
        while calls.len() < MAX_BATCH {
            match rx.try_recv() {
                Ok(c) => calls.push(c),
                Err(_) => break,
            }
        }
        let mut groups: HashMap<String, Vec<Call>> = HashMap::new();
        for c in calls {
            groups.entry(c.campaign.clone()).or_default().push(c);
        }
        let now_ms = clock.now_ns().div_euclid(1_000_000);
        let script = script.clone();
        tokio::spawn(async move {
            for (campaign, calls) in groups {
                let args: Vec<(String, String)> = calls
                    .iter()
                    .map(|c| (c.user.clone(), c.request.clone()))
                    .collect();
                match script.run_batch(&campaign, &args, now_ms).await {
                    Ok(decisions) => {
                        for (call, d) in calls.into_iter().zip(decisions) {
                            let _ = call.reply.send(Ok(d));
                        }
                    }
                    Err(e) => {
                        let message = e.to_string();
                        for call in calls {
                            let _ = call.reply.send(Err(match &e {
                                Error::Unavailable(_) => Error::Unavailable(message.clone()),
                                _ => Error::Internal(message.clone()),
                            }));
                        }
                    }
                }
            }
            drop(slot);
        });
    }
}
