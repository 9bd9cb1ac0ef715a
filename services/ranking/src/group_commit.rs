//! Group commit for events: concurrent RecordEvent calls share script calls.
//!
//! Each call hands its validated events to a small pool of committers. A
//! committer takes the first waiting call and every other call queued behind
//! it (up to `ranking.max_batch_events` events), records them with one script
//! per board in one pipelined round trip, and answers each call with its own
//! outcomes. A lone call is sent at once (no waiting for company); under load,
//! the calls that queue up while a round trip is in flight ride the next one,
//! so per-call script overhead and round trips are shared. Semantics do not
//! change: each event is still atomic across its board's windows, and events
//! are applied in arrival order (a repeated event id is a duplicate, as if the
//! calls had been made one after the other).

use std::sync::Arc;

use tickmesh_core::{Error, Result};
use tokio::sync::{Mutex, mpsc, oneshot};

use crate::clock::Clock;
use crate::record::{Outcome, Recorder, ValidEvent};

/// Committers working at once: while one waits for Redis, another gathers.
const COMMITTERS: usize = 2;
/// Calls waiting for a committer before callers wait to hand theirs over.
const QUEUE: usize = 4096;

struct Job {
    events: Vec<ValidEvent>,
    reply: oneshot::Sender<Result<Vec<Outcome>>>,
}

pub struct GroupCommit {
    tx: mpsc::Sender<Job>,
}

impl GroupCommit {
    /// Starts the committers; they stop when every `GroupCommit` handle is dropped.
    pub fn start(recorder: Arc<Recorder>, clock: Arc<dyn Clock>, max_events: usize) -> Self {
        let (tx, rx) = mpsc::channel::<Job>(QUEUE);
        let rx = Arc::new(Mutex::new(rx));
        for _ in 0..COMMITTERS {
            let (rx, recorder, clock) = (rx.clone(), recorder.clone(), clock.clone());
            tokio::spawn(async move {
                loop {
                    let jobs = {
                        let mut rx = rx.lock().await;
                        let Some(first) = rx.recv().await else {
                            return;
                        };
                        let mut size = first.events.len();
                        let mut jobs = vec![first];
                        while size < max_events {
                            match rx.try_recv() {
                                Ok(job) => {
                                    size += job.events.len();
                                    jobs.push(job);
                                }
                                Err(_) => break,
                            }
                        }
                        jobs
                    };
                    commit(&recorder, clock.now_ns(), jobs).await;
                }
            });
        }
        Self { tx }
    }

    /// Records `events` (with whatever else is waiting) and returns their outcomes.
    pub async fn record(&self, events: Vec<ValidEvent>) -> Result<Vec<Outcome>> {
        let (reply, answer) = oneshot::channel();
        self.tx
            .send(Job { events, reply })
            .await
            .map_err(|_| Error::ShuttingDown("event recording has stopped".into()))?;
        answer
            .await
            .map_err(|_| Error::Internal("event committer stopped mid-call".into()))?
    }
}

/// Records the jobs' events in one round trip and answers each job: its
/// outcomes, or the first error among its events (a board whose write the
/// replicas did not confirm fails the calls with events on it, not the
/// others of the group).
async fn commit(recorder: &Recorder, now_ns: i64, jobs: Vec<Job>) {
    if jobs.len() == 1 {
        let job = jobs.into_iter().next().expect("one job");
        let answer = recorder
            .record(&job.events, now_ns)
            .await
            .and_then(|each| each.into_iter().collect());
        let _ = job.reply.send(answer);
        return;
    }
    let mut all = Vec::with_capacity(jobs.iter().map(|j| j.events.len()).sum());
    let mut replies = Vec::with_capacity(jobs.len());
    for job in jobs {
        replies.push((job.events.len(), job.reply));
        all.extend(job.events);
    }
    match recorder.record(&all, now_ns).await {
        Ok(outcomes) => {
            let mut outcomes = outcomes.into_iter();
            for (n, reply) in replies {
                let _ = reply.send(outcomes.by_ref().take(n).collect());
            }
        }
        Err(e) => {
            for (_, reply) in replies {
                let _ = reply.send(Err(copy_error(&e)));
            }
        }
    }
}

/// The same failure for every call of a failed group.
fn copy_error(e: &Error) -> Error {
    match e {
        Error::InvalidArgument(v) => Error::InvalidArgument(v.clone()),
        Error::NotFound(m) => Error::NotFound(m.clone()),
        Error::FailedPrecondition(m) => Error::FailedPrecondition(m.clone()),
        Error::Unauthenticated(m) => Error::Unauthenticated(m.clone()),
        Error::PermissionDenied(m) => Error::PermissionDenied(m.clone()),
        Error::ResourceExhausted(m) => Error::ResourceExhausted(m.clone()),
        Error::Unavailable(m) => Error::Unavailable(m.clone()),
        Error::ShuttingDown(m) => Error::ShuttingDown(m.clone()),
        Error::Internal(m) => Error::Internal(m.clone()),
    }
}
