//! Opening the driver session, applying the schema and checking its version:
//! shared by every store of the crate, so one process keeps one set of
//! connection pools however many stores it opens.

use std::num::NonZeroUsize;
use std::sync::Arc;
use std::time::Duration;

use futures_util::TryStreamExt;
use scylla::client::PoolSize;
use scylla::client::execution_profile::ExecutionProfile;
use scylla::client::session::Session;
use scylla::client::session_builder::SessionBuilder;
use scylla::deserialize::row::DeserializeRow;
use scylla::policies::load_balancing::DefaultPolicy;
use scylla::policies::timestamp_generator::MonotonicTimestampGenerator;
use scylla::serialize::row::SerializeRow;
use scylla::statement::prepared::PreparedStatement;
use scylla::statement::{Consistency, SerialConsistency, Statement};
use tickmesh_history::StoreError;
use tracing::info;

use crate::config::ScyllaConfig;
use crate::schema::{
    SCHEMA_VERSION, ServerFeatures, TABLES, comment_version, schema_statements,
    table_comment_marker,
};
use crate::tls::tls_context;

/// Client-side timeout of one schema statement (DDL waits for agreement).
const DDL_TIMEOUT: Duration = Duration::from_secs(60);

pub(crate) fn unavailable(what: &str, e: impl std::fmt::Display) -> StoreError {
    StoreError::Unavailable(format!("{what}: {e}"))
}

/// Opens a session: token-aware routing, the local datacenter preferred
/// (and, without DC failover, the only one used), LOCAL_QUORUM by default,
/// client-side monotonic write timestamps.
async fn open_session(config: &ScyllaConfig) -> Result<Session, StoreError> {
    config.validate()?;
    // Before any network traffic: a bad certificate file fails here.
    let tls = config.tls.as_ref().map(tls_context).transpose()?;
    // The driver's DefaultPolicy is token-aware by default; said explicitly.
    let mut policy = DefaultPolicy::builder().token_aware(true);
    if let Some(dc) = &config.local_datacenter {
        policy = policy.prefer_datacenter(dc.clone());
    }
    let profile = ExecutionProfile::builder()
        .consistency(Consistency::LocalQuorum)
        .serial_consistency(Some(SerialConsistency::LocalSerial))
        .request_timeout(Some(config.request_timeout))
        .load_balancing_policy(policy.build())
        .build();
    let per_shard = NonZeroUsize::new(config.connections_per_shard)
        .ok_or_else(|| unavailable("invalid ScyllaDB config", "connections_per_shard is 0"))?;
    let mut builder = SessionBuilder::new()
        .known_nodes(&config.contact_points)
        .default_execution_profile_handle(profile.into_handle())
        .connection_timeout(config.connect_timeout)
        .pool_size(PoolSize::PerShard(per_shard))
        .timestamp_generator(Arc::new(MonotonicTimestampGenerator::new()));
    if let (Some(user), Some(password)) = (&config.username, &config.password) {
        builder = builder.user(user, password);
    }
    builder = builder.tls_context(tls);
    builder.build().await.map_err(|e| {
        unavailable(
            &format!("cannot connect to ScyllaDB at {:?}", config.contact_points),
            e,
        )
    })
}

/// One row of a system table read (`what` names it in errors).
async fn system_row<R>(session: &Session, text: &str, what: &str) -> Result<Option<R>, StoreError>
where
    R: for<'frame, 'metadata> DeserializeRow<'frame, 'metadata>,
{
    let mut statement = Statement::new(text);
    statement.set_consistency(Consistency::One);
    session
        .query_unpaged(statement, &[])
        .await
        .map_err(|e| unavailable(what, e))?
        .into_rows_result()
        .map_err(|e| unavailable(what, e))?
        .maybe_first_row::<R>()
        .map_err(|e| unavailable(what, e))
}

/// What the server supports, read from the server: whether `system.local`
/// has ScyllaDB's `supported_features` column (read from
/// `system_schema.columns`), that column's value and `release_version`;
/// the rule is [`ServerFeatures::from_system_local`].
async fn detect_features(session: &Session) -> Result<ServerFeatures, StoreError> {
    let what = "cannot read the server's features (system.local)";
    let mut statement = Statement::new(
        "SELECT column_name FROM system_schema.columns \
         WHERE keyspace_name = 'system' AND table_name = 'local'",
    );
    statement.set_consistency(Consistency::One);
    let columns: Vec<String> = session
        .query_unpaged(statement, &[])
        .await
        .map_err(|e| unavailable(what, e))?
        .into_rows_result()
        .map_err(|e| unavailable(what, e))?
        .rows::<(String,)>()
        .map_err(|e| unavailable(what, e))?
        .map(|row| row.map(|(name,)| name))
        .collect::<Result<_, _>>()
        .map_err(|e| unavailable(what, e))?;
    let (release, features) = if columns.iter().any(|c| c == "supported_features") {
        system_row::<(Option<String>, Option<String>)>(
            session,
            "SELECT release_version, supported_features FROM system.local WHERE key = 'local'",
            what,
        )
        .await?
        .map(|(r, f)| (r, Some(f.unwrap_or_default())))
        .unwrap_or_default()
    } else {
        let row = system_row::<(Option<String>,)>(
            session,
            "SELECT release_version FROM system.local WHERE key = 'local'",
            what,
        )
        .await?;
        (row.and_then(|(r,)| r), None)
    };
    let release = release.unwrap_or_default();
    let detected = ServerFeatures::from_system_local(features.as_deref(), &release);
    info!(
        release_version = %release,
        scylla = features.is_some(),
        tablets = detected.tablets,
        zstd = detected.zstd,
        "cql server features"
    );
    Ok(detected)
}

/// Applies `deploy/scylla/schema.cql` (embedded) to the cluster of `config`:
/// creates the keyspace with `config.replication` and the tables, if they do
/// not exist, keeping the file's conditional lines by what the server
/// supports (detected: [`ServerFeatures::from_system_local`]). Returns the
/// number of statements run. Safe to run repeatedly and concurrently with
/// running stores (it never alters or drops anything).
pub async fn apply_schema(config: &ScyllaConfig) -> Result<usize, StoreError> {
    // Validates the keyspace and replication before any network traffic.
    schema_statements(config, ServerFeatures::default())?;
    let session = open_session(config).await?;
    let features = detect_features(&session).await?;
    let statements = schema_statements(config, features)?;
    for text in &statements {
        let mut statement = Statement::new(text.as_str());
        statement.set_request_timeout(Some(DDL_TIMEOUT.max(config.request_timeout)));
        statement.set_is_idempotent(true);
        session
            .query_unpaged(statement, &[])
            .await
            .map_err(|e| unavailable(&format!("schema statement failed ({text})"), e))?;
    }
    session
        .await_schema_agreement()
        .await
        .map_err(|e| unavailable("schema agreement", e))?;
    info!(keyspace = %config.keyspace, version = SCHEMA_VERSION, statements = statements.len(), "scylla schema applied");
    Ok(statements.len())
}

/// Refuses to run against tables of another schema version (or none): every
/// table of the schema file is checked, whichever stores the process opens.
async fn check_schema_version(session: &Session, keyspace: &str) -> Result<(), StoreError> {
    let marker = table_comment_marker();
    let mut statement = Statement::new(
        "SELECT comment FROM system_schema.tables WHERE keyspace_name = ? AND table_name = ?",
    );
    statement.set_consistency(Consistency::One);
    for table in TABLES {
        let result = session
            .query_unpaged(statement.clone(), (keyspace, table))
            .await
            .map_err(|e| unavailable("cannot read system_schema.tables", e))?
            .into_rows_result()
            .map_err(|e| unavailable("cannot read system_schema.tables", e))?;
        let comment = result
            .maybe_first_row::<(Option<String>,)>()
            .map_err(|e| unavailable("cannot read system_schema.tables", e))?;
        match comment {
            None => {
                return Err(StoreError::Unavailable(format!(
                    "table {keyspace}.{table} does not exist: apply deploy/scylla/schema.cql first \
                     (`tickmesh history apply-schema`, history.scylla_apply_schema, or \
                     tickmesh_scylla::apply_schema)"
                )));
            }
            Some((comment,))
                if comment.as_deref().and_then(comment_version) == Some(SCHEMA_VERSION) => {}
            Some((comment,)) => {
                return Err(StoreError::Unavailable(format!(
                    "table {keyspace}.{table} is not at schema version {SCHEMA_VERSION}: its comment \
                     is {comment:?}, expected it to contain {marker:?}; migrate the schema"
                )));
            }
        }
    }
    Ok(())
}

/// What kind of statement [`ScyllaSession::prepare`] prepares.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Kind {
    /// A read, an upsert or a delete by key: running it twice (a retry, a
    /// speculative execution) ends in the same state.
    Plain,
    /// A lightweight transaction (`IF NOT EXISTS`): Paxos at LOCAL_SERIAL,
    /// committed at LOCAL_QUORUM. Running it twice ends in the same state
    /// too (the second run finds the row and changes nothing), so it is
    /// marked idempotent; only the answer of a retried one may say "exists"
    /// for the row its own first attempt wrote.
    Conditional,
}

/// One driver session over the cluster of a [`ScyllaConfig`], with the schema
/// version checked: the candle store, the ranking snapshot store and the
/// coupon issuance store all run on it (clone it to share; it is an `Arc`).
#[derive(Clone)]
pub struct ScyllaSession {
    session: Arc<Session>,
    config: Arc<ScyllaConfig>,
}

impl ScyllaSession {
    /// Connects (see [`ScyllaConfig`]: TLS, credentials, DC-local
    /// token-aware routing, LOCAL_QUORUM) and checks that every table of
    /// `deploy/scylla/schema.cql` exists at this code's schema version.
    pub async fn connect(config: &ScyllaConfig) -> Result<ScyllaSession, StoreError> {
        let session = open_session(config).await?;
        check_schema_version(&session, &config.keyspace).await?;
        info!(
            keyspace = %config.keyspace,
            contact_points = ?config.contact_points,
            local_datacenter = ?config.local_datacenter,
            "scylla session open"
        );
        Ok(ScyllaSession {
            session: Arc::new(session),
            config: Arc::new(config.clone()),
        })
    }

    /// The driver session (for operational queries and tests).
    pub fn session(&self) -> &Session {
        &self.session
    }

    /// The settings the session was opened with.
    pub fn config(&self) -> &ScyllaConfig {
        &self.config
    }

    /// What the server supports, as [`apply_schema`] detects it.
    pub async fn server_features(&self) -> Result<ServerFeatures, StoreError> {
        detect_features(&self.session).await
    }

    /// Every row of a paged read (`page_size` rows per page); `what` names
    /// the read in errors: a failed page is `Unavailable`, rows of another
    /// shape than `R` are `Corrupt`.
    pub(crate) async fn collect_rows<R>(
        &self,
        statement: &PreparedStatement,
        values: impl SerializeRow,
        what: &str,
    ) -> Result<Vec<R>, StoreError>
    where
        R: for<'frame, 'metadata> DeserializeRow<'frame, 'metadata> + 'static,
    {
        self.session
            .execute_iter(statement.clone(), values)
            .await
            .map_err(|e| unavailable(what, e))?
            .rows_stream::<R>()
            .map_err(|e| StoreError::Corrupt(format!("{what}: {e}")))?
            .map_err(|e| unavailable(what, e))
            .try_collect()
            .await
    }

    /// Prepares one statement of a store: LOCAL_QUORUM, idempotent, paged
    /// by `page_size`; conditional ones also LOCAL_SERIAL.
    pub(crate) async fn prepare(
        &self,
        name: &str,
        text: &str,
        kind: Kind,
    ) -> Result<PreparedStatement, StoreError> {
        let mut s = self
            .session
            .prepare(text)
            .await
            .map_err(|e| unavailable(&format!("cannot prepare {name} ({text})"), e))?;
        s.set_consistency(Consistency::LocalQuorum);
        s.set_is_idempotent(true);
        s.set_page_size(self.config.page_size);
        if kind == Kind::Conditional {
            s.set_serial_consistency(Some(SerialConsistency::LocalSerial));
        }
        Ok(s)
    }
}
