//! The ScyllaDB [`IssuanceStore`]: coupon campaigns and issuance records in
//! the cluster, so every CouponIssueService instance shares them (the
//! embedded store is one file per process).
//!
//! Tables (`deploy/scylla/schema.cql`):
//! - `coupon_campaigns`: one partition (`bucket = 0`) clustered by id, so
//!   `list_campaigns` reads them in id order; created with
//!   `INSERT … IF NOT EXISTS`.
//! - `coupon_issuances`: partition `(campaign_id, bucket)` with
//!   `bucket = seq / 100,000`, clustered by `seq`; and
//!   `coupon_issuance_buckets`, which buckets a campaign has, in order.
//!
//! Exactly the semantics of the trait, as the embedded store has them:
//! - `create_campaign` is one lightweight transaction: of two instances
//!   creating one id, one definition wins and both answer it.
//! - `put_issuances` writes each record only if its (campaign, seq) is free,
//!   in conditional batches of up to [`CONDITIONAL_BATCH`] records of one
//!   partition (one Paxos round each; all or nothing). A batch that finds
//!   some records stored writes nothing and names them; they are compared
//!   with what was sent (equal: `already`, different: `conflicting`, the
//!   stored one kept) and the batch is sent again without them. A record
//!   that appears twice in one call is decided once, like in one
//!   transaction: the later copy is compared with the first. The call
//!   returns only when every record is stored (or refused), so the persist
//!   worker acknowledges only durable records.
//! - `issuances` walks the bucket index, then each bucket, paged, in
//!   sequence order.
//!
//! A retried statement (a timeout the driver retries) can find the record
//! its own first attempt stored: the record is stored once either way, and
//! the answer counts it as `already` instead of `written` (only logged).
//! Likewise a retried `create_campaign` may answer `false` for the campaign
//! it created.

use std::collections::{BTreeMap, HashMap, HashSet};

use async_trait::async_trait;
use futures_util::stream::{self, StreamExt, TryStreamExt};
use scylla::statement::batch::{Batch, BatchType};
use scylla::statement::prepared::PreparedStatement;
use scylla::statement::{Consistency, SerialConsistency};
use scylla::{DeserializeRow, SerializeRow};
use tickmesh_coupon::campaign::Campaign;
use tickmesh_coupon::store::{Issuance, IssuanceStore, PutOutcome, StoreError};
use tracing::info;

use crate::config::ScyllaConfig;
use crate::lwt::{APPLIED, Conditional, NamedRow, answer_row, answer_rows, conditional};
use crate::schema::{CAMPAIGNS_TABLE, ISSUANCE_BUCKETS_TABLE, ISSUANCES_TABLE};
use crate::session::{Kind, ScyllaSession};

/// The one partition of `coupon_campaigns`.
const CAMPAIGN_BUCKET: i32 = 0;
/// Sequences per partition of `coupon_issuances` (part of the schema: data
/// written with one value is not found with another).
pub const ISSUANCE_BUCKET_SEQS: u64 = 100_000;
/// Most records in one conditional batch (a few dozen KB, under ScyllaDB's
/// batch size warning of 128 KB).
pub const CONDITIONAL_BATCH: usize = 100;

/// A row of `coupon_campaigns`, bound and read by column name.
#[derive(Clone, Debug, PartialEq, Eq, SerializeRow, DeserializeRow)]
pub(crate) struct CampaignRow {
    pub bucket: i32,
    pub id: String,
    pub display_name: String,
    pub total_stock: i64,
    pub per_user_limit: i64,
    pub start_ms: i64,
    pub end_ms: i64,
    pub ranking_board_id: String,
    pub create_ms: i64,
    pub secret: String,
}

/// A row of `coupon_issuances`, bound and read by column name.
#[derive(Clone, Debug, PartialEq, Eq, Hash, SerializeRow, DeserializeRow)]
pub(crate) struct IssuanceRow {
    pub campaign_id: String,
    pub bucket: i64,
    pub seq: i64,
    pub user_id: String,
    pub code: String,
    pub request_id: String,
    pub issued_ms: i64,
}

/// A row of `coupon_issuance_buckets`.
#[derive(Clone, Debug, PartialEq, Eq, SerializeRow)]
pub(crate) struct BucketRow {
    pub campaign_id: String,
    pub bucket: i64,
}

fn corrupt(what: &str, e: impl std::fmt::Display) -> StoreError {
    StoreError::Corrupt(format!("{what}: {e}"))
}

fn unavailable(what: &str, e: impl std::fmt::Display) -> StoreError {
    StoreError::Unavailable(format!("{what}: {e}"))
}

fn from_history(e: tickmesh_history::StoreError) -> StoreError {
    match e {
        tickmesh_history::StoreError::Unavailable(m) => StoreError::Unavailable(m),
        tickmesh_history::StoreError::Corrupt(m) => StoreError::Corrupt(m),
    }
}

pub(crate) fn campaign_row(c: &Campaign) -> CampaignRow {
    CampaignRow {
        bucket: CAMPAIGN_BUCKET,
        id: c.id.clone(),
        display_name: c.display_name.clone(),
        total_stock: c.total_stock,
        per_user_limit: i64::from(c.per_user_limit),
        start_ms: c.start_ms,
        end_ms: c.end_ms,
        ranking_board_id: c.ranking_board_id.clone(),
        create_ms: c.create_ms,
        secret: c.secret.clone(),
    }
}

pub(crate) fn campaign_of(row: CampaignRow) -> Result<Campaign, StoreError> {
    let per_user_limit = u32::try_from(row.per_user_limit).map_err(|_| {
        corrupt(
            &format!("campaign {:?}", row.id),
            format!("per_user_limit {} is out of range", row.per_user_limit),
        )
    })?;
    Ok(Campaign {
        id: row.id,
        display_name: row.display_name,
        total_stock: row.total_stock,
        per_user_limit,
        start_ms: row.start_ms,
        end_ms: row.end_ms,
        ranking_board_id: row.ranking_board_id,
        create_ms: row.create_ms,
        secret: row.secret,
    })
}

/// The existing campaign a conditional insert answered.
fn campaign_of_named(row: &NamedRow) -> Result<CampaignRow, String> {
    Ok(CampaignRow {
        bucket: CAMPAIGN_BUCKET,
        id: row.text("id")?,
        display_name: row.text_or_empty("display_name")?,
        total_stock: row.bigint("total_stock")?,
        per_user_limit: row.bigint("per_user_limit")?,
        start_ms: row.bigint("start_ms")?,
        end_ms: row.bigint("end_ms")?,
        ranking_board_id: row.text_or_empty("ranking_board_id")?,
        create_ms: row.bigint("create_ms")?,
        secret: row.text("secret")?,
    })
}

pub(crate) fn issuance_row(r: &Issuance, bucket_seqs: u64) -> Result<IssuanceRow, StoreError> {
    let seq = i64::try_from(r.seq).map_err(|_| {
        corrupt(
            &format!("issuance {} of campaign {:?}", r.seq, r.campaign_id),
            "the sequence does not fit a CQL bigint",
        )
    })?;
    Ok(IssuanceRow {
        campaign_id: r.campaign_id.clone(),
        // seq ≤ i64::MAX, so the bucket fits too.
        bucket: (r.seq / bucket_seqs) as i64,
        seq,
        user_id: r.user_id.clone(),
        code: r.code.clone(),
        request_id: r.request_id.clone(),
        issued_ms: r.issued_ms,
    })
}

pub(crate) fn issuance_of(row: IssuanceRow) -> Result<Issuance, StoreError> {
    let seq = u64::try_from(row.seq).map_err(|_| {
        corrupt(
            &format!("issuance of campaign {:?}", row.campaign_id),
            format!("negative sequence {}", row.seq),
        )
    })?;
    Ok(Issuance {
        campaign_id: row.campaign_id,
        seq,
        user_id: row.user_id,
        code: row.code,
        request_id: row.request_id,
        issued_ms: row.issued_ms,
    })
}

/// A stored record a conditional batch answered.
fn issuance_of_named(row: &NamedRow) -> Result<IssuanceRow, String> {
    Ok(IssuanceRow {
        campaign_id: row.text("campaign_id")?,
        bucket: row.bigint("bucket")?,
        seq: row.bigint("seq")?,
        user_id: row.text_or_empty("user_id")?,
        code: row.text_or_empty("code")?,
        request_id: row.text_or_empty("request_id")?,
        issued_ms: row.bigint("issued_ms")?,
    })
}

/// What a conditional batch of `INSERT … IF NOT EXISTS` did.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum BatchAnswer {
    /// No record existed; all are written.
    Applied,
    /// Some records existed (these, at least one): nothing was written.
    Exists(Vec<IssuanceRow>),
}

/// Reads a conditional batch's answer. ScyllaDB answers one row per
/// statement, in statement order, with the stored row or nulls; Cassandra
/// answers the stored rows only. A stored record always has `issued_ms`, so
/// the rows that have it are the stored ones in either layout.
pub(crate) fn batch_answer(rows: &[NamedRow]) -> Result<BatchAnswer, String> {
    let first = rows
        .first()
        .ok_or_else(|| "a conditional batch answered no row".to_string())?;
    if first.boolean(APPLIED)? {
        return Ok(BatchAnswer::Applied);
    }
    let existing = rows
        .iter()
        .filter(|r| !r.is_null("issued_ms"))
        .map(issuance_of_named)
        .collect::<Result<Vec<_>, _>>()?;
    if existing.is_empty() {
        return Err("a conditional batch was not applied but named no stored record".into());
    }
    Ok(BatchAnswer::Exists(existing))
}

/// What the store needs from the tables; each call is one statement (or one
/// conditional batch, or one paged read).
#[async_trait]
pub(crate) trait CouponBackend: Send + Sync {
    /// `INSERT … IF NOT EXISTS` of a campaign.
    async fn insert_campaign(
        &self,
        row: CampaignRow,
    ) -> Result<Conditional<CampaignRow>, StoreError>;
    async fn campaign(&self, id: &str) -> Result<Option<CampaignRow>, StoreError>;
    /// Up to `limit` (≥ 1) campaigns with ids after `after`, in id order.
    async fn campaigns_after(
        &self,
        after: &str,
        limit: i32,
    ) -> Result<Vec<CampaignRow>, StoreError>;
    /// Records that `bucket` of `campaign_id` exists (an idempotent upsert).
    async fn index_bucket(&self, row: BucketRow) -> Result<(), StoreError>;
    /// One conditional batch: records of one partition, each `IF NOT EXISTS`.
    async fn insert_issuances(&self, rows: &[IssuanceRow]) -> Result<BatchAnswer, StoreError>;
    /// The buckets of a campaign, ascending.
    async fn buckets(&self, campaign_id: &str) -> Result<Vec<i64>, StoreError>;
    /// The records of one bucket, by sequence.
    async fn bucket_issuances(
        &self,
        campaign_id: &str,
        bucket: i64,
    ) -> Result<Vec<IssuanceRow>, StoreError>;
}

/// What a record's (campaign, seq) holds after the writes: what this call
/// wrote, or what was stored before.
enum Stored {
    Written,
    Existing(IssuanceRow),
}

/// Counts the outcome of `rows` (in call order) from what each key holds.
fn tally(
    records: &[Issuance],
    rows: &[IssuanceRow],
    stored: &HashMap<(&str, i64), Stored>,
) -> PutOutcome {
    let mut outcome = PutOutcome::default();
    let mut first_of: HashMap<(&str, i64), usize> = HashMap::new();
    for (i, row) in rows.iter().enumerate() {
        let key = (row.campaign_id.as_str(), row.seq);
        let first = *first_of.entry(key).or_insert(i);
        let held = match stored.get(&key) {
            Some(Stored::Written) if first == i => {
                outcome.written += 1;
                continue;
            }
            Some(Stored::Written) => &rows[first],
            Some(Stored::Existing(existing)) => existing,
            // Every key was written or found; unreachable by construction.
            None => continue,
        };
        if held == row {
            outcome.already += 1;
        } else {
            outcome.conflicting.push(records[i].seq);
        }
    }
    outcome
}

/// The store's logic over a [`CouponBackend`].
pub(crate) struct IssuanceEngine<B> {
    pub(crate) backend: B,
    bucket_seqs: u64,
    write_concurrency: usize,
    read_concurrency: usize,
}

impl<B: CouponBackend> IssuanceEngine<B> {
    pub(crate) fn new(
        backend: B,
        bucket_seqs: u64,
        write_concurrency: usize,
        read_concurrency: usize,
    ) -> Self {
        IssuanceEngine {
            backend,
            bucket_seqs: bucket_seqs.max(1),
            write_concurrency: write_concurrency.max(1),
            read_concurrency: read_concurrency.max(1),
        }
    }

    async fn create_campaign(&self, campaign: &Campaign) -> Result<(Campaign, bool), StoreError> {
        match self.backend.insert_campaign(campaign_row(campaign)).await? {
            Conditional::Applied => Ok((campaign.clone(), true)),
            Conditional::Exists(stored) => Ok((campaign_of(stored)?, false)),
        }
    }

    async fn campaign(&self, id: &str) -> Result<Option<Campaign>, StoreError> {
        self.backend
            .campaign(id)
            .await?
            .map(campaign_of)
            .transpose()
    }

    async fn list_campaigns(&self, after: &str, limit: usize) -> Result<Vec<Campaign>, StoreError> {
        if limit == 0 {
            // CQL refuses LIMIT 0.
            return Ok(Vec::new());
        }
        let limit = i32::try_from(limit).unwrap_or(i32::MAX);
        self.backend
            .campaigns_after(after, limit)
            .await?
            .into_iter()
            .map(campaign_of)
            .collect()
    }

    /// Writes the records of one partition (unique keys) in conditional
    /// batches; returns what each key holds.
    async fn write_partition(
        &self,
        rows: Vec<IssuanceRow>,
    ) -> Result<Vec<(i64, Stored)>, StoreError> {
        let mut held = Vec::with_capacity(rows.len());
        for chunk in rows.chunks(CONDITIONAL_BATCH) {
            let mut pending = chunk.to_vec();
            while !pending.is_empty() {
                match self.backend.insert_issuances(&pending).await? {
                    BatchAnswer::Applied => {
                        held.extend(pending.drain(..).map(|r| (r.seq, Stored::Written)));
                    }
                    BatchAnswer::Exists(existing) => {
                        for stored in existing {
                            let Some(at) = pending.iter().position(|r| r.seq == stored.seq) else {
                                return Err(StoreError::Corrupt(format!(
                                    "a conditional batch of campaign {:?} answered sequence {}, \
                                     which it did not contain",
                                    stored.campaign_id, stored.seq
                                )));
                            };
                            pending.swap_remove(at);
                            held.push((stored.seq, Stored::Existing(stored)));
                        }
                    }
                }
            }
        }
        Ok(held)
    }

    async fn put_issuances(&self, records: &[Issuance]) -> Result<PutOutcome, StoreError> {
        if records.is_empty() {
            return Ok(PutOutcome::default());
        }
        let rows = records
            .iter()
            .map(|r| issuance_row(r, self.bucket_seqs))
            .collect::<Result<Vec<_>, _>>()?;
        // The first copy of each key, grouped by partition, in call order.
        let mut seen = HashSet::new();
        let mut partitions: BTreeMap<(&str, i64), Vec<IssuanceRow>> = BTreeMap::new();
        for row in &rows {
            if seen.insert((row.campaign_id.as_str(), row.seq)) {
                partitions
                    .entry((row.campaign_id.as_str(), row.bucket))
                    .or_default()
                    .push(row.clone());
            }
        }
        // The index first: a record is never stored without its bucket row.
        let indexes: Vec<_> = partitions
            .keys()
            .map(|&(campaign_id, bucket)| {
                self.backend.index_bucket(BucketRow {
                    campaign_id: campaign_id.to_string(),
                    bucket,
                })
            })
            .collect();
        stream::iter(indexes)
            .buffer_unordered(self.write_concurrency)
            .try_collect::<Vec<()>>()
            .await?;
        // Partitions in parallel; inside one, batches one after another (they
        // would contend for the same Paxos round anyway).
        let writes: Vec<_> = partitions
            .iter()
            .map(|(&(campaign_id, _), rows)| async move {
                let held = self.write_partition(rows.clone()).await?;
                Ok::<_, StoreError>((campaign_id, held))
            })
            .collect();
        let written: Vec<_> = stream::iter(writes)
            .buffer_unordered(self.write_concurrency)
            .try_collect()
            .await?;
        let stored: HashMap<(&str, i64), Stored> = written
            .into_iter()
            .flat_map(|(campaign_id, held)| {
                held.into_iter()
                    .map(move |(seq, stored)| ((campaign_id, seq), stored))
            })
            .collect();
        Ok(tally(records, &rows, &stored))
    }

    async fn issuances(&self, campaign_id: &str) -> Result<Vec<Issuance>, StoreError> {
        let buckets = self.backend.buckets(campaign_id).await?;
        let reads: Vec<_> = buckets
            .into_iter()
            .map(|bucket| self.backend.bucket_issuances(campaign_id, bucket))
            .collect();
        let mut out = Vec::new();
        let mut pages = stream::iter(reads).buffered(self.read_concurrency);
        while let Some(rows) = pages.next().await {
            for row in rows? {
                out.push(issuance_of(row)?);
            }
        }
        Ok(out)
    }
}

/// The CQL text of every statement, by keyspace (unit-tested).
pub(crate) fn statement_texts(ks: &str) -> [(&'static str, String, Kind); 7] {
    let (c, b, i) = (CAMPAIGNS_TABLE, ISSUANCE_BUCKETS_TABLE, ISSUANCES_TABLE);
    let campaign_columns = "bucket, id, display_name, total_stock, per_user_limit, start_ms, \
                            end_ms, ranking_board_id, create_ms, secret";
    let issuance_columns = "campaign_id, bucket, seq, user_id, code, request_id, issued_ms";
    [
        (
            "insert_campaign",
            format!(
                "INSERT INTO {ks}.{c} ({campaign_columns}) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?) \
                 IF NOT EXISTS"
            ),
            Kind::Conditional,
        ),
        (
            "select_campaign",
            format!("SELECT {campaign_columns} FROM {ks}.{c} WHERE bucket = ? AND id = ?"),
            Kind::Plain,
        ),
        (
            "select_campaigns_after",
            format!("SELECT {campaign_columns} FROM {ks}.{c} WHERE bucket = ? AND id > ? LIMIT ?"),
            Kind::Plain,
        ),
        (
            "insert_bucket",
            format!("INSERT INTO {ks}.{b} (campaign_id, bucket) VALUES (?, ?)"),
            Kind::Plain,
        ),
        (
            "insert_issuance",
            format!(
                "INSERT INTO {ks}.{i} ({issuance_columns}) VALUES (?, ?, ?, ?, ?, ?, ?) \
                 IF NOT EXISTS"
            ),
            Kind::Conditional,
        ),
        (
            "select_buckets",
            format!("SELECT bucket FROM {ks}.{b} WHERE campaign_id = ?"),
            Kind::Plain,
        ),
        (
            "select_issuances",
            format!("SELECT {issuance_columns} FROM {ks}.{i} WHERE campaign_id = ? AND bucket = ?"),
            Kind::Plain,
        ),
    ]
}

struct Statements {
    insert_campaign: PreparedStatement,
    select_campaign: PreparedStatement,
    select_campaigns_after: PreparedStatement,
    insert_bucket: PreparedStatement,
    insert_issuance: PreparedStatement,
    select_buckets: PreparedStatement,
    select_issuances: PreparedStatement,
}

impl Statements {
    async fn prepare(session: &ScyllaSession) -> Result<Statements, StoreError> {
        let mut prepared = Vec::new();
        for (name, text, kind) in statement_texts(&session.config().keyspace) {
            prepared.push(
                session
                    .prepare(name, &text, kind)
                    .await
                    .map_err(from_history)?,
            );
        }
        let [
            insert_campaign,
            select_campaign,
            select_campaigns_after,
            insert_bucket,
            insert_issuance,
            select_buckets,
            select_issuances,
        ] = <[PreparedStatement; 7]>::try_from(prepared)
            .map_err(|_| unavailable("prepare", "statement count"))?;
        Ok(Statements {
            insert_campaign,
            select_campaign,
            select_campaigns_after,
            insert_bucket,
            insert_issuance,
            select_buckets,
            select_issuances,
        })
    }
}

/// Prepared statements over a shared session.
pub(crate) struct ScyllaCouponBackend {
    session: ScyllaSession,
    statements: Statements,
}

#[async_trait]
impl CouponBackend for ScyllaCouponBackend {
    async fn insert_campaign(
        &self,
        row: CampaignRow,
    ) -> Result<Conditional<CampaignRow>, StoreError> {
        let what = format!("cannot create campaign {:?}", row.id);
        let result = self
            .session
            .session()
            .execute_unpaged(&self.statements.insert_campaign, row)
            .await
            .map_err(|e| unavailable(&what, e))?;
        let answer = answer_row(result).map_err(|e| corrupt(&what, e))?;
        conditional(&answer, campaign_of_named).map_err(|e| corrupt(&what, e))
    }

    /// One row of the campaigns partition (unpaged).
    async fn campaign(&self, id: &str) -> Result<Option<CampaignRow>, StoreError> {
        let what = format!("cannot read campaign {id:?}");
        self.session
            .session()
            .execute_unpaged(&self.statements.select_campaign, (CAMPAIGN_BUCKET, id))
            .await
            .map_err(|e| unavailable(&what, e))?
            .into_rows_result()
            .map_err(|e| unavailable(&what, e))?
            .maybe_first_row::<CampaignRow>()
            .map_err(|e| corrupt(&what, e))
    }

    /// Paged (`page_size` rows per page) up to `limit`.
    async fn campaigns_after(
        &self,
        after: &str,
        limit: i32,
    ) -> Result<Vec<CampaignRow>, StoreError> {
        let what = format!("cannot list campaigns after {after:?}");
        self.session
            .collect_rows(
                &self.statements.select_campaigns_after,
                (CAMPAIGN_BUCKET, after, limit),
                &what,
            )
            .await
            .map_err(from_history)
    }

    async fn index_bucket(&self, row: BucketRow) -> Result<(), StoreError> {
        let what = format!(
            "cannot index bucket {} of campaign {:?}",
            row.bucket, row.campaign_id
        );
        self.session
            .session()
            .execute_unpaged(&self.statements.insert_bucket, row)
            .await
            .map_err(|e| unavailable(&what, e))?;
        Ok(())
    }

    async fn insert_issuances(&self, rows: &[IssuanceRow]) -> Result<BatchAnswer, StoreError> {
        let Some(first) = rows.first() else {
            return Ok(BatchAnswer::Applied);
        };
        let what = format!(
            "cannot store {} issuances of campaign {:?} (bucket {})",
            rows.len(),
            first.campaign_id,
            first.bucket
        );
        // A single-partition conditional batch: one Paxos round, all or nothing.
        let mut batch = Batch::new(BatchType::Logged);
        batch.set_consistency(Consistency::LocalQuorum);
        batch.set_serial_consistency(Some(SerialConsistency::LocalSerial));
        batch.set_is_idempotent(true);
        for _ in rows {
            batch.append_statement(self.statements.insert_issuance.clone());
        }
        let result = self
            .session
            .session()
            .batch(&batch, rows)
            .await
            .map_err(|e| unavailable(&what, e))?;
        let answer = answer_rows(result).map_err(|e| corrupt(&what, e))?;
        batch_answer(&answer).map_err(|e| corrupt(&what, e))
    }

    async fn buckets(&self, campaign_id: &str) -> Result<Vec<i64>, StoreError> {
        let what = format!("cannot read the issuance buckets of campaign {campaign_id:?}");
        let rows: Vec<(i64,)> = self
            .session
            .collect_rows(&self.statements.select_buckets, (campaign_id,), &what)
            .await
            .map_err(from_history)?;
        Ok(rows.into_iter().map(|(bucket,)| bucket).collect())
    }

    /// Paged (`page_size` rows per page): a bucket holds up to 100,000 records.
    async fn bucket_issuances(
        &self,
        campaign_id: &str,
        bucket: i64,
    ) -> Result<Vec<IssuanceRow>, StoreError> {
        let what = format!("cannot read issuances of campaign {campaign_id:?} (bucket {bucket})");
        self.session
            .collect_rows(
                &self.statements.select_issuances,
                (campaign_id, bucket),
                &what,
            )
            .await
            .map_err(from_history)
    }
}

/// Coupon campaigns and issuance records in ScyllaDB (see the module docs).
pub struct ScyllaIssuanceStore {
    engine: IssuanceEngine<ScyllaCouponBackend>,
}

impl ScyllaIssuanceStore {
    /// Connects a session of its own (see [`ScyllaSession::connect`]) and
    /// prepares the store's statements.
    pub async fn connect(config: &ScyllaConfig) -> Result<ScyllaIssuanceStore, StoreError> {
        let session = ScyllaSession::connect(config).await.map_err(from_history)?;
        ScyllaIssuanceStore::open(&session).await
    }

    /// Prepares the store's statements on a shared session.
    pub async fn open(session: &ScyllaSession) -> Result<ScyllaIssuanceStore, StoreError> {
        let statements = Statements::prepare(session).await?;
        info!(keyspace = %session.config().keyspace, "scylla coupon issuance store ready");
        let config = session.config();
        let engine = IssuanceEngine::new(
            ScyllaCouponBackend {
                session: session.clone(),
                statements,
            },
            ISSUANCE_BUCKET_SEQS,
            config.write_concurrency,
            config.read_concurrency,
        );
        Ok(ScyllaIssuanceStore { engine })
    }
}

#[async_trait]
impl IssuanceStore for ScyllaIssuanceStore {
    /// One lightweight transaction (`INSERT … IF NOT EXISTS`).
    async fn create_campaign(&self, campaign: &Campaign) -> Result<(Campaign, bool), StoreError> {
        self.engine.create_campaign(campaign).await
    }

    async fn campaign(&self, id: &str) -> Result<Option<Campaign>, StoreError> {
        self.engine.campaign(id).await
    }

    /// One paged read of the campaigns partition (`id > after LIMIT limit`).
    async fn list_campaigns(&self, after: &str, limit: usize) -> Result<Vec<Campaign>, StoreError> {
        self.engine.list_campaigns(after, limit).await
    }

    /// The bucket rows, then conditional batches per partition (see the
    /// module docs); returns once every record is stored or refused.
    async fn put_issuances(&self, records: &[Issuance]) -> Result<PutOutcome, StoreError> {
        self.engine.put_issuances(records).await
    }

    /// The bucket index, then every bucket in order, paged.
    async fn issuances(&self, campaign_id: &str) -> Result<Vec<Issuance>, StoreError> {
        self.engine.issuances(campaign_id).await
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::{Arc, Mutex};

    use scylla::value::CqlValue;

    use super::*;

    /// The tables as maps; a conditional batch is decided and applied under
    /// one lock, as one Paxos round is.
    #[derive(Default)]
    struct Memory {
        campaigns: Mutex<BTreeMap<String, CampaignRow>>,
        buckets: Mutex<BTreeMap<String, BTreeSet<i64>>>,
        issuances: Mutex<BTreeMap<(String, i64), BTreeMap<i64, IssuanceRow>>>,
        batches: AtomicUsize,
        /// Fail the n-th conditional batch (1-based), to check error paths.
        fail_batch: AtomicUsize,
    }

    #[async_trait]
    impl CouponBackend for Memory {
        async fn insert_campaign(
            &self,
            row: CampaignRow,
        ) -> Result<Conditional<CampaignRow>, StoreError> {
            let mut campaigns = self.campaigns.lock().expect("lock");
            if let Some(existing) = campaigns.get(&row.id) {
                return Ok(Conditional::Exists(existing.clone()));
            }
            campaigns.insert(row.id.clone(), row);
            Ok(Conditional::Applied)
        }

        async fn campaign(&self, id: &str) -> Result<Option<CampaignRow>, StoreError> {
            Ok(self.campaigns.lock().expect("lock").get(id).cloned())
        }

        async fn campaigns_after(
            &self,
            after: &str,
            limit: i32,
        ) -> Result<Vec<CampaignRow>, StoreError> {
            assert!(limit >= 1, "CQL refuses LIMIT {limit}");
            let campaigns = self.campaigns.lock().expect("lock");
            Ok(campaigns
                .values()
                .filter(|c| c.id.as_str() > after)
                .take(limit as usize)
                .cloned()
                .collect())
        }

        async fn index_bucket(&self, row: BucketRow) -> Result<(), StoreError> {
            self.buckets
                .lock()
                .expect("lock")
                .entry(row.campaign_id)
                .or_default()
                .insert(row.bucket);
            Ok(())
        }

        async fn insert_issuances(&self, rows: &[IssuanceRow]) -> Result<BatchAnswer, StoreError> {
            let n = self.batches.fetch_add(1, Ordering::SeqCst) + 1;
            if n == self.fail_batch.load(Ordering::SeqCst) {
                return Err(StoreError::Unavailable("injected batch failure".into()));
            }
            assert!(
                !rows.is_empty() && rows.len() <= CONDITIONAL_BATCH,
                "{}",
                rows.len()
            );
            let partition = (rows[0].campaign_id.clone(), rows[0].bucket);
            let keys: HashSet<i64> = rows.iter().map(|r| r.seq).collect();
            assert_eq!(keys.len(), rows.len(), "one statement per key");
            let indexed = self.buckets.lock().expect("lock");
            assert!(
                indexed
                    .get(&partition.0)
                    .is_some_and(|b| b.contains(&partition.1)),
                "the bucket is indexed before its records"
            );
            let mut issuances = self.issuances.lock().expect("lock");
            let stored = issuances.entry(partition.clone()).or_default();
            let mut existing = Vec::new();
            for r in rows {
                assert_eq!(
                    (r.campaign_id.clone(), r.bucket),
                    partition,
                    "one partition per batch"
                );
                assert_eq!(r.bucket, r.seq / 3, "the test engine uses buckets of 3");
                if let Some(s) = stored.get(&r.seq) {
                    existing.push(s.clone());
                }
            }
            if !existing.is_empty() {
                return Ok(BatchAnswer::Exists(existing));
            }
            for r in rows {
                stored.insert(r.seq, r.clone());
            }
            Ok(BatchAnswer::Applied)
        }

        async fn buckets(&self, campaign_id: &str) -> Result<Vec<i64>, StoreError> {
            Ok(self
                .buckets
                .lock()
                .expect("lock")
                .get(campaign_id)
                .map(|b| b.iter().copied().collect())
                .unwrap_or_default())
        }

        async fn bucket_issuances(
            &self,
            campaign_id: &str,
            bucket: i64,
        ) -> Result<Vec<IssuanceRow>, StoreError> {
            Ok(self
                .issuances
                .lock()
                .expect("lock")
                .get(&(campaign_id.to_string(), bucket))
                .map(|rows| rows.values().cloned().collect())
                .unwrap_or_default())
        }
    }

    struct MemoryStore(IssuanceEngine<Memory>);

    #[async_trait]
    impl IssuanceStore for MemoryStore {
        async fn create_campaign(
            &self,
            campaign: &Campaign,
        ) -> Result<(Campaign, bool), StoreError> {
            self.0.create_campaign(campaign).await
        }
        async fn campaign(&self, id: &str) -> Result<Option<Campaign>, StoreError> {
            self.0.campaign(id).await
        }
        async fn list_campaigns(
            &self,
            after: &str,
            limit: usize,
        ) -> Result<Vec<Campaign>, StoreError> {
            self.0.list_campaigns(after, limit).await
        }
        async fn put_issuances(&self, records: &[Issuance]) -> Result<PutOutcome, StoreError> {
            self.0.put_issuances(records).await
        }
        async fn issuances(&self, campaign_id: &str) -> Result<Vec<Issuance>, StoreError> {
            self.0.issuances(campaign_id).await
        }
    }

    /// Buckets of 3 sequences, so a few records span several partitions.
    fn store() -> Arc<MemoryStore> {
        Arc::new(MemoryStore(IssuanceEngine::new(Memory::default(), 3, 8, 2)))
    }

    fn record(campaign: &str, seq: u64, user: &str) -> Issuance {
        Issuance {
            campaign_id: campaign.into(),
            seq,
            user_id: user.into(),
            code: format!("C-{seq}"),
            request_id: format!("r-{seq}"),
            issued_ms: 10 + (seq % 1_000_000) as i64,
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn the_store_logic_passes_the_coupon_conformance_suite() {
        tickmesh_coupon::conformance::run(store()).await;
    }

    #[tokio::test]
    async fn many_records_in_any_order_read_back_in_sequence_order() {
        let store = store();
        // 1..=1000 in a scrambled order, in batches of 250 with overlaps.
        let mut seqs: Vec<u64> = (1..=1000).collect();
        seqs.sort_by_key(|s| (s * 7919) % 1009);
        for chunk in seqs.chunks(250) {
            let batch: Vec<Issuance> = chunk.iter().map(|&s| record("big", s, "u")).collect();
            let outcome = store.put_issuances(&batch).await.expect("put");
            assert_eq!(outcome.written, batch.len());
        }
        let again: Vec<Issuance> = (990..=1010).map(|s| record("big", s, "u")).collect();
        let outcome = store.put_issuances(&again).await.expect("put");
        assert_eq!((outcome.written, outcome.already), (10, 11));
        let all = store.issuances("big").await.expect("read");
        assert_eq!(
            all.iter().map(|r| r.seq).collect::<Vec<_>>(),
            (1..=1010).collect::<Vec<_>>()
        );
        assert_eq!(all[499], record("big", 500, "u"));
        assert!(
            store.0.backend.batches.load(Ordering::SeqCst) >= 1010 / 3,
            "one batch per partition at least"
        );
    }

    #[tokio::test]
    async fn repeated_keys_in_one_call_are_decided_once_in_call_order() {
        let store = store();
        store
            .put_issuances(&[record("d", 2, "stored")])
            .await
            .expect("put");
        let outcome = store
            .put_issuances(&[
                record("d", 1, "a"),
                record("d", 1, "a"),
                record("d", 1, "b"),
                record("d", 2, "stored"),
                record("d", 2, "other"),
                record("d", 3, "c"),
            ])
            .await
            .expect("put");
        assert_eq!(outcome.written, 2, "{outcome:?}");
        assert_eq!(outcome.already, 2, "{outcome:?}");
        assert_eq!(outcome.conflicting, [1, 2], "{outcome:?}");
        let all = store.issuances("d").await.expect("read");
        assert_eq!(
            all.iter().map(|r| r.user_id.as_str()).collect::<Vec<_>>(),
            ["a", "stored", "c"]
        );
    }

    #[tokio::test]
    async fn a_failed_batch_surfaces_and_a_retry_completes_the_call() {
        let store = store();
        store.0.backend.fail_batch.store(3, Ordering::SeqCst);
        let records: Vec<Issuance> = (1..=20).map(|s| record("f", s, "u")).collect();
        let err = store.put_issuances(&records).await.expect_err("injected");
        assert!(err.to_string().contains("injected"), "{err}");
        let outcome = store.put_issuances(&records).await.expect("retry");
        assert_eq!(outcome.written + outcome.already, 20);
        assert!(outcome.conflicting.is_empty());
        assert_eq!(store.issuances("f").await.expect("read"), records);
    }

    #[tokio::test]
    async fn list_campaigns_with_a_zero_limit_reads_nothing() {
        let store = store();
        assert!(store.list_campaigns("", 0).await.expect("list").is_empty());
    }

    fn campaign() -> Campaign {
        Campaign {
            id: "spring-sale".into(),
            display_name: String::new(),
            total_stock: 1000,
            per_user_limit: 3,
            start_ms: 1,
            end_ms: 2,
            ranking_board_id: "fastest".into(),
            create_ms: 5,
            secret: "00ff".into(),
        }
    }

    #[test]
    fn campaign_rows_round_trip() {
        let c = campaign();
        let row = campaign_row(&c);
        assert_eq!(row.bucket, CAMPAIGN_BUCKET);
        assert_eq!(row.per_user_limit, 3);
        assert_eq!(campaign_of(row.clone()).expect("back"), c);
        let max = Campaign {
            per_user_limit: u32::MAX,
            ..c.clone()
        };
        assert_eq!(campaign_of(campaign_row(&max)).expect("back"), max);
        let bad = CampaignRow {
            per_user_limit: -1,
            ..row
        };
        let err = campaign_of(bad).expect_err("negative limit").to_string();
        assert!(
            err.contains("per_user_limit") && err.contains("spring-sale"),
            "{err}"
        );
    }

    #[test]
    fn issuance_rows_round_trip_with_their_bucket() {
        let r = record("c", 250_001, "u");
        let row = issuance_row(&r, ISSUANCE_BUCKET_SEQS).expect("row");
        assert_eq!((row.bucket, row.seq), (2, 250_001));
        assert_eq!(issuance_of(row).expect("back"), r);
        assert_eq!(
            issuance_row(&record("c", 99_999, "u"), ISSUANCE_BUCKET_SEQS)
                .expect("row")
                .bucket,
            0
        );
        let top = issuance_row(&record("c", i64::MAX as u64, "u"), ISSUANCE_BUCKET_SEQS)
            .expect("the largest sequence fits");
        assert_eq!(top.bucket, i64::MAX / 100_000);
        let err = issuance_row(&record("c", u64::MAX, "u"), ISSUANCE_BUCKET_SEQS)
            .expect_err("too large")
            .to_string();
        assert!(err.contains("bigint"), "{err}");
        let negative = IssuanceRow {
            seq: -1,
            ..issuance_row(&r, ISSUANCE_BUCKET_SEQS).expect("row")
        };
        assert!(issuance_of(negative).is_err());
    }

    fn named(columns: &[(&str, Option<CqlValue>)]) -> NamedRow {
        NamedRow(
            columns
                .iter()
                .map(|(n, v)| (n.to_string(), v.clone()))
                .collect(),
        )
    }

    fn text(s: &str) -> Option<CqlValue> {
        Some(CqlValue::Text(s.into()))
    }

    fn big(v: i64) -> Option<CqlValue> {
        Some(CqlValue::BigInt(v))
    }

    fn answer(applied: bool, seq: Option<i64>) -> NamedRow {
        let stored = seq.is_some();
        let value = |v: Option<CqlValue>| if stored { v } else { None };
        named(&[
            (APPLIED, Some(CqlValue::Boolean(applied))),
            ("campaign_id", value(text("c"))),
            ("bucket", value(big(0))),
            ("seq", seq.and_then(big)),
            ("code", value(text("C"))),
            ("issued_ms", value(big(9))),
            ("request_id", value(text("r"))),
            ("user_id", value(text("u"))),
        ])
    }

    #[test]
    fn batch_answers_in_either_server_layout() {
        // ScyllaDB: a row per statement, stored rows or nulls.
        assert_eq!(
            batch_answer(&[answer(true, None), answer(true, None)]),
            Ok(BatchAnswer::Applied)
        );
        let scylla = [
            answer(false, None),
            answer(false, Some(7)),
            answer(false, None),
        ];
        let Ok(BatchAnswer::Exists(rows)) = batch_answer(&scylla) else {
            panic!("not applied")
        };
        assert_eq!(rows.len(), 1);
        assert_eq!(
            rows[0],
            IssuanceRow {
                campaign_id: "c".into(),
                bucket: 0,
                seq: 7,
                user_id: "u".into(),
                code: "C".into(),
                request_id: "r".into(),
                issued_ms: 9,
            }
        );
        // Cassandra: only [applied] when applied, only stored rows when not.
        let applied = named(&[(APPLIED, Some(CqlValue::Boolean(true)))]);
        assert_eq!(batch_answer(&[applied]), Ok(BatchAnswer::Applied));
        let cassandra = [answer(false, Some(3)), answer(false, Some(4))];
        let Ok(BatchAnswer::Exists(rows)) = batch_answer(&cassandra) else {
            panic!("not applied")
        };
        assert_eq!(rows.iter().map(|r| r.seq).collect::<Vec<_>>(), [3, 4]);
        // Not applied with nothing stored, or nothing at all: an error.
        assert!(batch_answer(&[answer(false, None)]).is_err());
        assert!(batch_answer(&[]).is_err());
    }

    #[test]
    fn a_conditional_campaign_answer_reads_the_stored_campaign() {
        let row = campaign_row(&campaign());
        let stored = named(&[
            (APPLIED, Some(CqlValue::Boolean(false))),
            ("bucket", Some(CqlValue::Int(0))),
            ("id", text(&row.id)),
            ("display_name", None),
            ("total_stock", big(row.total_stock)),
            ("per_user_limit", big(row.per_user_limit)),
            ("start_ms", big(row.start_ms)),
            ("end_ms", big(row.end_ms)),
            ("ranking_board_id", text(&row.ranking_board_id)),
            ("create_ms", big(row.create_ms)),
            ("secret", text(&row.secret)),
        ]);
        assert_eq!(
            conditional(&stored, campaign_of_named),
            Ok(Conditional::Exists(row))
        );
    }

    #[test]
    fn statements_name_their_tables_and_bind_their_keys() {
        let texts = statement_texts("ks");
        let names: Vec<_> = texts.iter().map(|(n, _, _)| *n).collect();
        assert_eq!(
            names,
            [
                "insert_campaign",
                "select_campaign",
                "select_campaigns_after",
                "insert_bucket",
                "insert_issuance",
                "select_buckets",
                "select_issuances"
            ]
        );
        for (name, text, kind) in &texts {
            assert!(
                text.contains("ks.coupon_campaigns")
                    || text.contains("ks.coupon_issuance_buckets")
                    || text.contains("ks.coupon_issuances "),
                "{name}: {text}"
            );
            assert_eq!(
                *kind == Kind::Conditional,
                text.ends_with(" IF NOT EXISTS"),
                "{name}: only the inserts of campaigns and records are conditional"
            );
            if let Some(rest) = text.strip_prefix("INSERT INTO ") {
                let columns = rest[rest.find('(').expect("(")..rest.find(')').expect(")")]
                    .split(',')
                    .count();
                assert_eq!(text.matches('?').count(), columns, "{text}");
            }
        }
        let by_name = |n: &str| &texts.iter().find(|(name, _, _)| *name == n).expect(n).1;
        // Every partition key column is bound, so routing is token-aware.
        assert!(by_name("select_campaign").contains("WHERE bucket = ? AND id = ?"));
        assert!(by_name("select_campaigns_after").ends_with("WHERE bucket = ? AND id > ? LIMIT ?"));
        assert!(by_name("select_buckets").ends_with("WHERE campaign_id = ?"));
        assert!(by_name("select_issuances").ends_with("WHERE campaign_id = ? AND bucket = ?"));
        // The derives bind and read by name: the fields are the columns.
        for column in [
            "bucket",
            "id",
            "display_name",
            "total_stock",
            "per_user_limit",
            "start_ms",
            "end_ms",
            "ranking_board_id",
            "create_ms",
            "secret",
        ] {
            assert!(by_name("insert_campaign").contains(column), "{column}");
        }
        for column in [
            "campaign_id",
            "bucket",
            "seq",
            "user_id",
            "code",
            "request_id",
            "issued_ms",
        ] {
            assert!(by_name("insert_issuance").contains(column), "{column}");
            assert!(by_name("select_issuances").contains(column), "{column}");
        }
    }
}
