//! The CouponIssue domain: what each RPC does, in plain Rust. The gRPC
//! adapter ([`crate::grpc`]) only converts messages and errors.

use std::sync::Arc;
use std::time::Duration;

use tickmesh_core::ids::{check_symbol, check_text_id};
use tickmesh_core::{Error, FieldViolation, Result, page_token};
use tickmesh_runtime::RedisHandle;
use tickmesh_runtime::config::CouponConfig;
use tickmesh_runtime::redis_conn::unavailable;
use tickmesh_runtime::stream_hub::StreamHub;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::campaign::{Campaign, CampaignState, NewCampaign, new_secret};
use crate::campaigns::CampaignBook;
use crate::clock::Clock;
use crate::group_commit::GroupCommit;
use crate::issue_script::{Decision, IssueScript, ServerLink};
use crate::keys::Keys;
use crate::persist::Persister;
use crate::rebuild::{Rebuilder, ensure_waiting};
use crate::sold_out_report::SoldOutReporter;
use crate::store::IssuanceStore;
use crate::watch::LogCodec;

pub const MAX_USER_BYTES: usize = 256;
pub const MAX_REQUEST_ID_BYTES: usize = 128;
pub const DEFAULT_PAGE_SIZE: usize = 100;
pub const MAX_PAGE_SIZE: usize = 1000;
const PAGE_KIND: &str = "coupon-campaigns";
/// Log batches buffered per watched campaign per instance.
const WATCH_BUFFER: usize = 16;

/// KEYS: state. ARGV: the server's run id. Remaining and sold-out time, or
/// nothing while the state is absent or not confirmed in this server run
/// (see [`crate::rebuild`]).
const VIEW_LUA: &str = r#"
local st = redis.call('HMGET', KEYS[1], 'remaining', 'sold_out', 'run')
if not st[1] or st[3] ~= server_run(ARGV[1]) then return {false, false} end
return {st[1], st[2]}
"#;

/// KEYS: state, users. ARGV: the server's run id, user. {1 when the state is
/// confirmed in this server run else 0, the user's codes}.
const ISSUANCE_LUA: &str = r#"
if redis.call('HGET', KEYS[1], 'run') ~= server_run(ARGV[1]) then return {0, false} end
return {1, redis.call('HGET', KEYS[2], ARGV[2])}
"#;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Outcome {
    Issued,
    AlreadyIssued,
    SoldOut,
    NotStarted,
    Ended,
}

impl Outcome {
    /// The outcome as a metric label.
    pub fn as_str(self) -> &'static str {
        match self {
            Outcome::Issued => "issued",
            Outcome::AlreadyIssued => "already_issued",
            Outcome::SoldOut => "sold_out",
            Outcome::NotStarted => "not_started",
            Outcome::Ended => "ended",
        }
    }
}

fn count_issue(outcome: &'static str) {
    metrics::counter!(tickmesh_runtime::metrics::catalogue::COUPON_ISSUE, "outcome" => outcome)
        .increment(1);
}

/// The answer to one Issue call.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct IssueAnswer {
    pub outcome: Outcome,
    /// The code issued (Issued) or the first one held (AlreadyIssued).
    pub code: String,
    pub remaining: i64,
}

/// A campaign with its live counts.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CampaignView {
    pub campaign: Arc<Campaign>,
    pub remaining: i64,
    pub issued: i64,
    pub state: CampaignState,
    pub sold_out_ms: Option<i64>,
    pub read_ms: i64,
}

pub struct Coupons {
    pub(crate) config: CouponConfig,
    redis: RedisHandle,
    keys: Keys,
    campaigns: Arc<CampaignBook>,
    script: Arc<IssueScript>,
    committer: GroupCommit,
    rebuilder: Rebuilder,
    pub(crate) clock: Arc<dyn Clock>,
    pub(crate) hub: StreamHub<LogCodec>,
    pub(crate) shutdown: CancellationToken,
    /// The request path's connection (see [`ServerLink`]).
    link: Arc<ServerLink>,
    view_script: redis::Script,
    issuance_script: redis::Script,
}

impl Coupons {
    pub fn new(
        config: CouponConfig,
        redis: RedisHandle,
        store: Arc<dyn IssuanceStore>,
        clock: Arc<dyn Clock>,
        shutdown: CancellationToken,
    ) -> Arc<Self> {
        let keys = Keys::new(redis.prefix());
        let campaigns = Arc::new(CampaignBook::new(store.clone()));
        campaigns
            .clone()
            .spawn_refresh(config.campaign_refresh, shutdown.clone());
        let hub = StreamHub::new(
            redis.clone(),
            LogCodec { keys: keys.clone() },
            WATCH_BUFFER,
            shutdown.clone(),
        );
        let link = Arc::new(ServerLink::new(redis.clone()));
        let acks = crate::issue_script::ReplicaAcks {
            replicas: config.replicas_to_wait(redis.is_cluster()),
            timeout: config.replica_ack_timeout,
        };
        if acks.replicas > 0 {
            tracing::info!(
                replicas = acks.replicas,
                timeout_ms = acks.timeout.as_millis() as u64,
                "coupon issuances are answered once replicated (coupon.replica_acks)"
            );
        }
        let script = Arc::new(IssueScript::new(link.clone(), keys.clone(), acks));
        Arc::new(Self {
            committer: GroupCommit::start(script.clone(), clock.clone()),
            script,
            rebuilder: Rebuilder {
                link: link.clone(),
                keys: keys.clone(),
                store,
                lock_ttl: config.rebuild_lock_ttl,
            },
            config,
            redis,
            keys,
            campaigns,
            clock,
            hub,
            shutdown,
            link,
            view_script: crate::issue_script::script_with_node_run(VIEW_LUA),
            issuance_script: crate::issue_script::script_with_node_run(ISSUANCE_LUA),
        })
    }

    pub fn config(&self) -> &CouponConfig {
        &self.config
    }

    pub fn keys(&self) -> &Keys {
        &self.keys
    }

    pub fn store(&self) -> &Arc<dyn IssuanceStore> {
        self.campaigns.store()
    }

    pub fn now_ms(&self) -> i64 {
        self.clock.now_ns().div_euclid(1_000_000)
    }

    /// The SHA1 of the issue script (benchmarks call it with EVALSHA).
    pub fn issue_script_sha(&self) -> &str {
        self.script.sha()
    }

    /// Campaigns this instance follows for WatchCampaign streams.
    pub fn watched_campaigns(&self) -> usize {
        self.hub.followed()
    }

    /// A persist worker named `consumer` (unique per instance).
    pub fn persister(&self, consumer: &str) -> Arc<Persister> {
        Arc::new(Persister {
            redis: self.redis.clone(),
            keys: self.keys.clone(),
            store: self.store().clone(),
            consumer: consumer.to_string(),
            batch: self.config.persist_batch,
            claim_after: self.config.claim_after,
            clock: self.clock.clone(),
        })
    }

    /// Starts the persist worker and, with a RankingService endpoint, the
    /// sold-out reporter; both end with the shutdown token.
    pub fn spawn_workers(
        &self,
        consumer: &str,
        ranking_endpoint: Option<&str>,
    ) -> Result<Vec<JoinHandle<()>>> {
        let mut tasks = vec![self.persister(consumer).spawn(
            self.campaigns.clone(),
            self.config.persist_interval,
            self.shutdown.clone(),
        )];
        if let Some(endpoint) = ranking_endpoint {
            let reporter = Arc::new(SoldOutReporter::new(
                self.redis.clone(),
                self.keys.clone(),
                endpoint,
            )?);
            tasks.push(reporter.spawn(
                self.campaigns.clone(),
                self.config.report_interval,
                self.shutdown.clone(),
            ));
        }
        Ok(tasks)
    }

    /// Creates a campaign: durable first, then its Redis state. An identical
    /// campaign again is `created: false`; another definition under the same
    /// id is FAILED_PRECONDITION.
    pub async fn create_campaign(&self, new: NewCampaign) -> Result<(Campaign, bool)> {
        let mut campaign = new.validate("campaign.").map_err(Error::InvalidArgument)?;
        campaign.create_ms = self.now_ms();
        campaign.secret = new_secret()
            .map_err(|e| Error::Internal(format!("no randomness for the code secret: {e}")))?;
        let (stored, created) = self.store().create_campaign(&campaign).await?;
        if !created && !stored.same_definition(&campaign) {
            return Err(Error::FailedPrecondition(format!(
                "campaign {:?} exists with another definition; campaigns cannot change, create one with a new id",
                stored.id
            )));
        }
        self.campaigns.put(Arc::new(stored.clone()));
        ensure_waiting(&self.rebuilder, &stored, self.config.rebuild_lock_ttl).await?;
        if created {
            tracing::info!(campaign = %stored.id, stock = stored.total_stock, per_user = stored.per_user_limit, "campaign created");
        }
        Ok((stored, created))
    }

    async fn campaign(&self, id: &str) -> Result<Arc<Campaign>> {
        check_symbol(id).map_err(|r| Error::invalid("campaign_id", r))?;
        self.campaigns.resolve(id).await
    }

    pub async fn get_campaign(&self, id: &str) -> Result<CampaignView> {
        let campaign = self.campaign(id).await?;
        self.view(campaign).await
    }

    /// The campaign's live counts (restoring its state first if Redis lost it).
    pub(crate) async fn view(&self, campaign: Arc<Campaign>) -> Result<CampaignView> {
        for _ in 0..3 {
            let state = self.keys.state(&campaign.id);
            let (remaining, sold_out): (Option<i64>, Option<i64>) = self
                .link
                .invoke(|run| {
                    let mut invocation = self.view_script.key(&state);
                    invocation.arg(run);
                    invocation
                })
                .await?;
            let Some(remaining) = remaining else {
                ensure_waiting(&self.rebuilder, &campaign, self.config.rebuild_lock_ttl).await?;
                continue;
            };
            let now = self.now_ms();
            return Ok(CampaignView {
                remaining,
                issued: campaign.total_stock - remaining,
                state: campaign.state_at(now, remaining),
                sold_out_ms: sold_out,
                read_ms: now,
                campaign,
            });
        }
        Err(Error::Unavailable(format!(
            "campaign {:?} state keeps disappearing from redis; retry",
            campaign.id
        )))
    }

    pub async fn list_campaigns(
        &self,
        page_size: i32,
        token: &str,
    ) -> Result<(Vec<Campaign>, String)> {
        let size = match page_size {
            0 => DEFAULT_PAGE_SIZE,
            n if n < 0 => return Err(Error::invalid("page_size", "must not be negative")),
            n if n as usize > MAX_PAGE_SIZE => {
                return Err(Error::invalid(
                    "page_size",
                    format!("must be at most {MAX_PAGE_SIZE}"),
                ));
            }
            n => n as usize,
        };
        let after = if token.is_empty() {
            String::new()
        } else {
            page_token::decode(token, PAGE_KIND, 0).map_err(|r| Error::invalid("page_token", r))?
        };
        let mut page = self.store().list_campaigns(&after, size + 1).await?;
        let more = page.len() > size;
        page.truncate(size);
        let next = match (more, page.last()) {
            (true, Some(last)) => page_token::encode(PAGE_KIND, 0, &last.id),
            _ => String::new(),
        };
        Ok((page, next))
    }

    /// One Issue call: see [`crate::issue_script`] for the order of checks.
    pub async fn issue(
        &self,
        campaign_id: &str,
        user_id: &str,
        request_id: &str,
    ) -> Result<IssueAnswer> {
        let mut violations = Vec::new();
        if let Err(r) = check_symbol(campaign_id) {
            violations.push(FieldViolation::new("campaign_id", r));
        }
        if let Err(r) = check_text_id(user_id, MAX_USER_BYTES) {
            violations.push(FieldViolation::new("user_id", r));
        }
        if let Err(r) = check_text_id(request_id, MAX_REQUEST_ID_BYTES) {
            violations.push(FieldViolation::new("request_id", r));
        }
        Error::check(violations)?;
        for _ in 0..3 {
            let decision = self
                .committer
                .issue(campaign_id, user_id, request_id)
                .await?;
            let (outcome, code, remaining) = match decision {
                Decision::Issued { code, remaining } => (Outcome::Issued, code, remaining),
                Decision::AlreadyIssued { code, remaining } => {
                    (Outcome::AlreadyIssued, code, remaining)
                }
                Decision::SoldOut => (Outcome::SoldOut, String::new(), 0),
                Decision::NotStarted { remaining } => {
                    (Outcome::NotStarted, String::new(), remaining)
                }
                Decision::Ended { remaining } => (Outcome::Ended, String::new(), remaining),
                Decision::RequestIdReused => {
                    count_issue("request_id_reused");
                    return Err(Error::invalid(
                        "request_id",
                        "was already used for another user's Issue call; use a new request id per attempt",
                    ));
                }
                Decision::Missing => {
                    let campaign = self.campaigns.resolve(campaign_id).await?;
                    ensure_waiting(&self.rebuilder, &campaign, self.config.rebuild_lock_ttl)
                        .await?;
                    continue;
                }
            };
            count_issue(outcome.as_str());
            return Ok(IssueAnswer {
                outcome,
                code,
                remaining,
            });
        }
        Err(Error::Unavailable(format!(
            "campaign {campaign_id:?} state keeps disappearing from redis; retry"
        )))
    }

    /// Issuances in the known campaigns' logs that are not durable yet: per
    /// campaign, the entries the persist group has not read (its `lag`) plus
    /// those it read and has not acknowledged (`pending`); the whole log
    /// when no worker has read it yet.
    pub async fn persist_backlog(&self) -> Result<u64> {
        let campaigns = self.campaigns.cached();
        if campaigns.is_empty() {
            return Ok(0);
        }
        let mut pipe = redis::pipe();
        // A log that does not exist answers XINFO with an error: not fatal.
        pipe.ignore_errors();
        for c in &campaigns {
            let log = self.keys.log(&c.id);
            pipe.cmd("XLEN").arg(&log);
            pipe.cmd("XINFO").arg("GROUPS").arg(&log);
        }
        let replies: Vec<redis::Value> = pipe
            .query_async(&mut self.redis.conn())
            .await
            .map_err(unavailable)?;
        Ok(replies
            .chunks(2)
            .map(|pair| crate::persist::backlog(&pair[0], &pair[1]))
            .sum())
    }

    /// The codes a user holds in a campaign, in issue order.
    pub async fn issuance(&self, campaign_id: &str, user_id: &str) -> Result<Vec<String>> {
        let mut violations = Vec::new();
        if let Err(r) = check_symbol(campaign_id) {
            violations.push(FieldViolation::new("campaign_id", r));
        }
        if let Err(r) = check_text_id(user_id, MAX_USER_BYTES) {
            violations.push(FieldViolation::new("user_id", r));
        }
        Error::check(violations)?;
        let campaign = self.campaigns.resolve(campaign_id).await?;
        for _ in 0..3 {
            let keys = [self.keys.state(campaign_id), self.keys.users(campaign_id)];
            let (confirmed, held): (bool, Option<String>) = self
                .link
                .invoke(|run| {
                    let mut invocation = self.issuance_script.key(&keys[..]);
                    invocation.arg(run).arg(user_id);
                    invocation
                })
                .await?;
            if !confirmed {
                ensure_waiting(&self.rebuilder, &campaign, self.config.rebuild_lock_ttl).await?;
                continue;
            }
            return Ok(held
                .map(|h| h.split_whitespace().map(String::from).collect())
                .unwrap_or_default());
        }
        Err(Error::Unavailable(format!(
            "campaign {campaign_id:?} state keeps disappearing from redis; retry"
        )))
    }

    /// Starts watching a campaign's stock.
    pub async fn watch(
        self: &Arc<Self>,
        campaign_id: &str,
    ) -> Result<mpsc::Receiver<Result<CampaignView>>> {
        let campaign = self.campaign(campaign_id).await?;
        // Fail the call, not the stream, when the campaign cannot be read.
        self.view(campaign.clone()).await?;
        Ok(crate::watch::spawn(self.clone(), campaign))
    }

    /// Restores a campaign's Redis state from the store if it is missing.
    pub async fn ensure_state(&self, campaign_id: &str) -> Result<()> {
        let campaign = self.campaign(campaign_id).await?;
        ensure_waiting(&self.rebuilder, &campaign, self.config.rebuild_lock_ttl).await
    }

    pub(crate) fn watch_interval(&self) -> Duration {
        self.config.watch_interval
    }
}
