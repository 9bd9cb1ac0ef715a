//! Events recorded, for the metrics endpoint (`ranking_events_total`): every
//! event reaches the service through RecordEvent(s), the coupon service's
//! sold-out reports included, so the adapter counts their outcomes.

use tickmesh_runtime::metrics::catalogue::RANKING_EVENTS;

use crate::record::Outcome;

/// Counts one call's event outcomes.
pub fn count_events(outcomes: &[Outcome]) {
    let (mut recorded, mut duplicate, mut refused) = (0u64, 0u64, 0u64);
    for outcome in outcomes {
        match outcome {
            Outcome::Recorded(_) => recorded += 1,
            Outcome::Duplicate => duplicate += 1,
            Outcome::OutOfRange => refused += 1,
        }
    }
    for (label, n) in [
        ("recorded", recorded),
        ("duplicate", duplicate),
        ("refused", refused),
    ] {
        if n > 0 {
            metrics::counter!(RANKING_EVENTS, "outcome" => label).increment(n);
        }
    }
}
