//! The persist worker: copies each campaign's issuance log (a Redis Stream)
//! to the durable store, through the consumer group `persist`.
//!
//! Per pass and campaign: entries another consumer took but did not
//! acknowledge within `claim_after` are claimed (`XAUTOCLAIM`: that consumer
//! died), new entries are read (`XREADGROUP`), written to the store in one
//! durable transaction — idempotently, keyed by campaign and sequence — and
//! only then acknowledged (`XACK`). A worker killed anywhere in between
//! leaves its entries pending for the next one: nothing is lost, and a record
//! written twice is stored once. Acknowledged entries are trimmed from the
//! log (`XTRIM MINID`, never past the oldest pending entry), so the log holds
//! only what is not yet durable.
//!
//! A campaign that has ended stops being visited once it is settled: its end
//! lies more than `claim_after` + [`CLOCK_SKEW`] in the past (no instance can
//! still issue, and a dead consumer's entries have become claimable), a pass
//! found nothing to persist, and no consumer holds a pending entry. Without
//! this, every campaign ever created would cost two Redis calls per pass for
//! as long as the process runs.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use redis::Value;
use redis::streams::{StreamAutoClaimReply, StreamId, StreamReadReply};
use tickmesh_core::{Error, Result};
use tickmesh_runtime::RedisHandle;
use tickmesh_runtime::redis_conn::unavailable;
use tickmesh_runtime::stream_hub::id_cmp;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::campaign::Campaign;
use crate::campaigns::CampaignBook;
use crate::clock::Clock;
use crate::keys::Keys;
use crate::store::{Issuance, IssuanceStore};

/// The consumer group of every campaign's log.
pub const GROUP: &str = "persist";

/// How far instances' clocks may disagree: an instance whose clock is behind
/// can still issue this long after a campaign's end by ours.
pub const CLOCK_SKEW: Duration = Duration::from_secs(5);

pub struct Persister {
    pub redis: RedisHandle,
    pub keys: Keys,
    pub store: Arc<dyn IssuanceStore>,
    /// This worker's consumer name (unique per instance).
    pub consumer: String,
    /// Entries per read and per store write.
    pub batch: usize,
    /// Entries pending this long in another consumer are taken over.
    pub claim_after: Duration,
    pub clock: Arc<dyn Clock>,
}

/// An issuance log entry as a record.
pub fn parse_entry(campaign: &str, entry: &StreamId) -> Result<Issuance> {
    let bad = |field: &str| {
        Error::Internal(format!(
            "issuance log entry {} of campaign {campaign:?} has no valid {field}",
            entry.id
        ))
    };
    Ok(Issuance {
        campaign_id: campaign.to_string(),
        seq: entry.get("seq").ok_or_else(|| bad("seq"))?,
        user_id: entry.get("user").ok_or_else(|| bad("user"))?,
        code: entry.get("code").ok_or_else(|| bad("code"))?,
        request_id: entry.get("request").ok_or_else(|| bad("request"))?,
        issued_ms: entry.get("at").ok_or_else(|| bad("at"))?,
    })
}

/// A campaign's entries not yet durable, from its log's `XLEN` and
/// `XINFO GROUPS` replies: the persist group's `lag` (entries it has not
/// read) plus its `pending` (read, not acknowledged); the whole log when no
/// group exists yet, or when Redis cannot tell the lag.
pub fn backlog(xlen: &Value, groups: &Value) -> u64 {
    let length = match xlen {
        Value::Int(n) => (*n).max(0) as u64,
        _ => 0,
    };
    let fields = |group: &Value| -> Vec<(String, Value)> {
        match group {
            Value::Map(pairs) => pairs.iter().map(|(k, v)| (text(k), v.clone())).collect(),
            Value::Array(flat) => flat
                .chunks(2)
                .filter(|kv| kv.len() == 2)
                .map(|kv| (text(&kv[0]), kv[1].clone()))
                .collect(),
            _ => Vec::new(),
        }
    };
    let Value::Array(groups) = groups else {
        return 0;
    };
    let Some(group) = groups
        .iter()
        .map(fields)
        .find(|f| f.iter().any(|(k, v)| k == "name" && text(v) == GROUP))
    else {
        return length;
    };
    let int = |name: &str| {
        group
            .iter()
            .find(|(k, _)| k == name)
            .and_then(|(_, v)| match v {
                Value::Int(n) => Some((*n).max(0) as u64),
                _ => None,
            })
    };
    match int("lag") {
        Some(lag) => lag + int("pending").unwrap_or(0),
        None => length,
    }
}

fn text(value: &Value) -> String {
    match value {
        Value::BulkString(b) => String::from_utf8_lossy(b).into_owned(),
        Value::SimpleString(s) => s.clone(),
        _ => String::new(),
    }
}

fn is_nogroup(e: &redis::RedisError) -> bool {
    e.code() == Some("NOGROUP") || e.to_string().contains("NOGROUP")
}

impl Persister {
    /// Persists everything the campaign's log holds for this worker now;
    /// returns the entries handled.
    pub async fn persist_campaign(&self, campaign: &str) -> Result<usize> {
        let mut handled = 0;
        loop {
            let entries = match self.next_entries(campaign).await {
                Ok(e) => e,
                Err(e) if is_nogroup(&e) => {
                    self.create_group(campaign).await?;
                    continue;
                }
                Err(e) => return Err(unavailable(e)),
            };
            if entries.is_empty() {
                return Ok(handled);
            }
            let full = entries.len() >= self.batch;
            let records = entries
                .iter()
                .map(|e| parse_entry(campaign, e))
                .collect::<Result<Vec<_>>>()?;
            let outcome = self.store.put_issuances(&records).await?;
            if !outcome.conflicting.is_empty() {
                tracing::error!(
                    campaign,
                    seqs = ?outcome.conflicting,
                    "issuance log entries differ from the durable records of the same sequence; the durable records are kept"
                );
            }
            let ids: Vec<&str> = entries.iter().map(|e| e.id.as_str()).collect();
            self.acknowledge(campaign, &ids).await?;
            metrics::counter!(tickmesh_runtime::metrics::catalogue::COUPON_PERSISTED)
                .increment(entries.len() as u64);
            handled += entries.len();
            tracing::debug!(
                campaign,
                entries = entries.len(),
                written = outcome.written,
                "issuances persisted"
            );
            if !full {
                return Ok(handled);
            }
        }
    }

    /// Entries abandoned by dead consumers first, then new ones.
    async fn next_entries(&self, campaign: &str) -> redis::RedisResult<Vec<StreamId>> {
        let log = self.keys.log(campaign);
        let mut conn = self.redis.conn();
        let claimed: StreamAutoClaimReply = redis::cmd("XAUTOCLAIM")
            .arg(&log)
            .arg(GROUP)
            .arg(&self.consumer)
            .arg(self.claim_after.as_millis() as u64)
            .arg("0-0")
            .arg("COUNT")
            .arg(self.batch)
            .query_async(&mut conn)
            .await?;
        let mut entries = claimed.claimed;
        if entries.len() < self.batch {
            let read: Option<StreamReadReply> = redis::cmd("XREADGROUP")
                .arg("GROUP")
                .arg(GROUP)
                .arg(&self.consumer)
                .arg("COUNT")
                .arg(self.batch - entries.len())
                .arg("STREAMS")
                .arg(&log)
                .arg(">")
                .query_async(&mut conn)
                .await?;
            if let Some(read) = read {
                for key in read.keys {
                    entries.extend(key.ids);
                }
            }
        }
        Ok(entries)
    }

    async fn create_group(&self, campaign: &str) -> Result<()> {
        let mut conn = self.redis.conn();
        let created: redis::RedisResult<String> = redis::cmd("XGROUP")
            .arg("CREATE")
            .arg(self.keys.log(campaign))
            .arg(GROUP)
            .arg("0")
            .arg("MKSTREAM")
            .query_async(&mut conn)
            .await;
        match created {
            Ok(_) => Ok(()),
            Err(e) if e.code() == Some("BUSYGROUP") || e.to_string().contains("BUSYGROUP") => {
                Ok(())
            }
            Err(e) => Err(unavailable(e)),
        }
    }

    /// Acknowledges durable entries, then trims what no consumer still needs.
    async fn acknowledge(&self, campaign: &str, ids: &[&str]) -> Result<()> {
        let log = self.keys.log(campaign);
        let mut conn = self.redis.conn();
        let _: i64 = redis::cmd("XACK")
            .arg(&log)
            .arg(GROUP)
            .arg(ids)
            .query_async(&mut conn)
            .await
            .map_err(unavailable)?;
        // Entries never delivered are newer than anything acknowledged here;
        // pending ones are kept from the oldest on.
        let newest = ids
            .iter()
            .copied()
            .max_by(|a, b| id_cmp(a, b))
            .expect("non-empty");
        let pending: Value = redis::cmd("XPENDING")
            .arg(&log)
            .arg(GROUP)
            .query_async(&mut conn)
            .await
            .map_err(unavailable)?;
        let mut min_id = newest.to_string();
        if let Value::Array(parts) = pending
            && let Some(Value::BulkString(oldest)) = parts.get(1)
        {
            let oldest = String::from_utf8_lossy(oldest).into_owned();
            if id_cmp(&oldest, &min_id).is_lt() {
                min_id = oldest;
            }
        }
        let _: i64 = redis::cmd("XTRIM")
            .arg(&log)
            .arg("MINID")
            .arg(&min_id)
            .query_async(&mut conn)
            .await
            .map_err(unavailable)?;
        Ok(())
    }

    /// One pass over `campaigns`: persists each one's log, skipping those
    /// in `settled` and adding those that settle now. Returns the campaigns
    /// visited.
    pub async fn pass(&self, campaigns: &[Arc<Campaign>], settled: &mut HashSet<String>) -> usize {
        if !settled.is_empty() {
            // Forget campaigns no longer known; a set, so a pass stays linear
            // in the number of campaigns however many have settled.
            let known: HashSet<&str> = campaigns.iter().map(|c| c.id.as_str()).collect();
            settled.retain(|id| known.contains(id.as_str()));
        }
        let mut visited = 0;
        for c in campaigns {
            if settled.contains(&c.id) {
                continue;
            }
            visited += 1;
            match self.persist_campaign(&c.id).await {
                Ok(0) => match self.is_settled(c).await {
                    Ok(true) => {
                        tracing::debug!(campaign = %c.id, "campaign ended and fully persisted; no longer visited");
                        settled.insert(c.id.clone());
                    }
                    Ok(false) => {}
                    Err(e) => {
                        tracing::warn!(campaign = %c.id, error = %e, "reading the issuance log failed")
                    }
                },
                Ok(_) => {}
                Err(e) => {
                    tracing::warn!(campaign = %c.id, error = %e, "persisting issuances failed; retrying next pass")
                }
            }
        }
        visited
    }

    /// Ended long enough ago that nothing new can reach the log, and no
    /// consumer holds an entry that is not durable yet.
    async fn is_settled(&self, campaign: &Campaign) -> Result<bool> {
        let quiet_ms = (self.claim_after + CLOCK_SKEW).as_millis() as i64;
        let now_ms = self.clock.now_ns().div_euclid(1_000_000);
        if now_ms < campaign.end_ms.saturating_add(quiet_ms) {
            return Ok(false);
        }
        let mut conn = self.redis.conn();
        let pending: redis::RedisResult<Value> = redis::cmd("XPENDING")
            .arg(self.keys.log(&campaign.id))
            .arg(GROUP)
            .query_async(&mut conn)
            .await;
        match pending {
            Ok(Value::Array(parts)) => Ok(matches!(parts.first(), Some(Value::Int(0)))),
            Ok(_) => Ok(false),
            // No group: nothing was ever read, and the pass just found the
            // log empty of new entries.
            Err(e) if is_nogroup(&e) => Ok(true),
            Err(e) => Err(unavailable(e)),
        }
    }

    /// Persists every known campaign's log every `interval` until shutdown.
    pub fn spawn(
        self: Arc<Self>,
        campaigns: Arc<CampaignBook>,
        interval: Duration,
        shutdown: CancellationToken,
    ) -> JoinHandle<()> {
        tokio::spawn(async move {
            let mut settled = HashSet::new();
            loop {
                self.pass(&campaigns.cached(), &mut settled).await;
                tokio::select! {
                    _ = shutdown.cancelled() => break,
                    _ = tokio::time::sleep(interval) => {}
                }
            }
        })
    }
}
