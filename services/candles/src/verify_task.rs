//! The periodic self-check beside the flusher: every
//! `candles.verify_interval` it continues a [`Progress`] per symbol this
//! instance's aggregator owns — replays the trades applied since the last
//! pass (at most [`PASS_BUDGET`] per symbol), compares the candles that
//! became final since with Redis and the history store, and repairs them.
//! Larger candles that began before the replay did are checked against the
//! smaller candles tiling them once final. A pass therefore costs about one
//! XRANGE of the new trades plus a few range reads per interval with newly
//! final candles; each candle is compared once. A symbol's first pass (at
//! start, or when the symbol changes hands) starts at most
//! [`crate::verify::FIRST_PASS_TRADES`] back. `tickmesh candles verify`
//! checks everything again on demand.

use std::collections::{BTreeSet, HashMap};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio_util::sync::CancellationToken;

use crate::directory::Directory;
use crate::verify::{Progress, Verifier};

/// Most trades replayed per symbol and pass; a symbol with more waits for
/// the next pass (its candles are compared later, never early).
pub const PASS_BUDGET: u64 = 100_000;

pub struct VerifyTask {
    pub verifier: Verifier,
    pub directory: Arc<Directory>,
    /// Symbols this instance's aggregator owns (shared with it).
    pub owned: Arc<Mutex<BTreeSet<String>>>,
    pub every: Duration,
    pub shutdown: CancellationToken,
}

impl VerifyTask {
    pub async fn run(self) {
        let mut progress: HashMap<String, Option<Progress>> = HashMap::new();
        loop {
            tokio::select! {
                _ = tokio::time::sleep(self.every) => {}
                _ = self.shutdown.cancelled() => break,
            }
            let owned: Vec<String> = self
                .owned
                .lock()
                .expect("owned lock")
                .iter()
                .cloned()
                .collect();
            progress.retain(|s, _| owned.contains(s));
            let started = std::time::Instant::now();
            let (mut replayed, mut checked, mut mismatched, mut repaired) = (0, 0, 0, 0);
            for symbol in owned {
                if self.shutdown.is_cancelled() {
                    return;
                }
                let info = match self.directory.get(&symbol).await {
                    Ok(info) => info,
                    Err(e) => {
                        tracing::debug!(symbol, error = %e, "candle self-check: no instrument");
                        continue;
                    }
                };
                let state = progress.entry(symbol.clone()).or_default();
                match self
                    .verifier
                    .pass(&info, state, true, PASS_BUDGET, false)
                    .await
                {
                    Ok(r) => {
                        replayed += r.replayed;
                        checked += r.checked;
                        mismatched += r.mismatched;
                        repaired += r.repaired;
                    }
                    Err(e) => {
                        // Start this symbol over next pass.
                        *state = None;
                        if matches!(e, tickmesh_core::Error::Unavailable(_)) {
                            // Redis or the store is down: once per pass, not per symbol.
                            tracing::warn!(symbol, error = %e, "candle self-check pass stopped; retrying next pass");
                            break;
                        }
                        tracing::warn!(symbol, error = %e, "candle self-check failed; retrying next pass");
                    }
                }
            }
            tracing::debug!(
                symbols = progress.len(),
                trades_replayed = replayed,
                candles_checked = checked,
                mismatched,
                repaired,
                ms = started.elapsed().as_millis() as u64,
                "candle self-check pass"
            );
        }
    }
}
