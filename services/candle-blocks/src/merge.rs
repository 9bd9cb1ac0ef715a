//! Upserting late corrections into a block's candles.

use crate::BlockCandle;

/// Merges `updates` into `existing` (sorted by `open_ns`): an update replaces
/// the candle with the same `open_ns`, the others are inserted in order. If
/// `updates` holds the same `open_ns` twice, the later one wins. Applying the
/// same updates twice gives the same result as applying them once.
///
/// A stored revision never goes back: an update whose revision is not above
/// the stored candle's replaces it only if its values differ, and then at
/// the stored revision + 1. That happens when Redis came back from a crash or
/// failover with less than it had and the candle was rebuilt from its tick
/// log: what Redis holds now wins (it is what the tick log says), and readers
/// see a new revision rather than an old one.
pub fn merge(existing: &mut Vec<BlockCandle>, updates: &[BlockCandle]) {
    if updates.is_empty() {
        return;
    }
    // Stable sort keeps the input order among equal times; keep the last of each run.
    let mut sorted: Vec<&BlockCandle> = updates.iter().collect();
    sorted.sort_by_key(|c| c.open_ns);
    let mut fresh: Vec<&BlockCandle> = Vec::with_capacity(sorted.len());
    for c in sorted {
        match fresh.last_mut() {
            Some(last) if last.open_ns == c.open_ns => *last = c,
            _ => fresh.push(c),
        }
    }

    // Fast path: everything lands after the last existing candle.
    if existing
        .last()
        .is_none_or(|last| last.open_ns < fresh[0].open_ns)
    {
        existing.extend(fresh.into_iter().cloned());
        return;
    }

    let old = std::mem::take(existing);
    existing.reserve(old.len() + fresh.len());
    let mut fresh = fresh.into_iter().peekable();
    for c in old {
        while let Some(u) = fresh.next_if(|u| u.open_ns < c.open_ns) {
            existing.push(u.clone());
        }
        match fresh.next_if(|u| u.open_ns == c.open_ns) {
            Some(u) => existing.push(replace(c, u)),
            None => existing.push(c),
        }
    }
    existing.extend(fresh.cloned());
}

/// What an update makes of the stored candle with the same open time.
fn replace(stored: BlockCandle, update: &BlockCandle) -> BlockCandle {
    if update.revision > stored.revision {
        return update.clone();
    }
    let same = BlockCandle {
        revision: stored.revision,
        ..update.clone()
    };
    if same == stored {
        return stored;
    }
    BlockCandle {
        revision: stored.revision.saturating_add(1),
        ..update.clone()
    }
}
