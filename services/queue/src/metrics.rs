//! The rooms' sizes for the metrics endpoint, read when it is scraped:
//! totals over every room (rooms are not labels, so the series stay few
//! however many rooms come and go).

use tickmesh_core::{Error, Result};
use tickmesh_runtime::metrics::catalogue::{QUEUE_ACTIVE, QUEUE_ROOMS, QUEUE_WAITING};

use crate::service::Queue;

/// Sets the queue gauges: rooms, users waiting (pre-queue included) and
/// users active, over every room.
pub async fn report(queue: &Queue) -> Result<()> {
    let (mut rooms, mut waiting, mut active) = (0u64, 0u64, 0u64);
    for id in queue.rooms.ids().await? {
        let stats = match queue.get_room(&id).await {
            Ok((_, stats)) => stats,
            // Removed since the listing.
            Err(Error::NotFound(_)) => continue,
            Err(e) => return Err(e),
        };
        rooms += 1;
        waiting += stats.waiting + stats.pre_queue;
        active += stats.active;
    }
    metrics::gauge!(QUEUE_ROOMS).set(rooms as f64);
    metrics::gauge!(QUEUE_WAITING).set(waiting as f64);
    metrics::gauge!(QUEUE_ACTIVE).set(active as f64);
    Ok(())
}
