//! The candle store: its prepared statements on the shared session and the
//! `CandleStore` implementation.

use async_trait::async_trait;
use futures_util::stream::{BoxStream, StreamExt};
use scylla::client::session::Session;
use scylla::errors::SerializationError;
use scylla::serialize::row::{RowSerializationContext, SerializeRow};
use scylla::serialize::writers::RowWriter;
use scylla::statement::Consistency;
use scylla::statement::batch::{Batch, BatchType};
use scylla::statement::prepared::PreparedStatement;
use tickmesh_calendar::Interval;
use tickmesh_history::{BlockKey, CandleStore, StoreError, StoredCandle};
use tracing::info;

use crate::config::ScyllaConfig;
use crate::engine::{Backend, Engine};
use crate::model::{BlockRow, IndexRange, IndexRow, ScaleRowKey, StoredBlockRow, partition_key};
use crate::schema::{BLOCKS_TABLE, INDEX_TABLE};
use crate::session::{Kind, ScyllaSession, unavailable};

/// The statements of the store, prepared once at connect.
struct Statements {
    select_block: PreparedStatement,
    insert_block: PreparedStatement,
    delete_scale_row: PreparedStatement,
    insert_index: PreparedStatement,
    select_index_asc: PreparedStatement,
    select_index_desc: PreparedStatement,
}

/// The CQL text of every statement, by keyspace (unit-tested).
pub(crate) fn statement_texts(ks: &str) -> [(&'static str, String); 6] {
    let (b, i) = (BLOCKS_TABLE, INDEX_TABLE);
    let index_select = |order: &str| {
        format!(
            "SELECT block FROM {ks}.{i} WHERE symbol = :symbol AND interval = :interval \
             AND block >= :first AND block <= :last ORDER BY block {order}"
        )
    };
    [
        (
            "select_block",
            format!(
                "SELECT price_scale, quantity_scale, data FROM {ks}.{b} \
                 WHERE symbol = ? AND interval = ? AND block = ?"
            ),
        ),
        (
            "insert_block",
            format!(
                "INSERT INTO {ks}.{b} (symbol, interval, block, price_scale, quantity_scale, data, \
                 candle_count, updated_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?)"
            ),
        ),
        (
            "delete_scale_row",
            format!(
                "DELETE FROM {ks}.{b} WHERE symbol = ? AND interval = ? AND block = ? \
                 AND price_scale = ? AND quantity_scale = ?"
            ),
        ),
        (
            "insert_index",
            format!(
                "INSERT INTO {ks}.{i} (symbol, interval, block, candle_count, updated_at) \
                 VALUES (?, ?, ?, ?, ?)"
            ),
        ),
        ("select_index_asc", index_select("ASC")),
        ("select_index_desc", index_select("DESC")),
    ]
}

impl Statements {
    async fn prepare(session: &ScyllaSession) -> Result<Statements, StoreError> {
        let mut prepared = Vec::new();
        for (name, text) in statement_texts(&session.config().keyspace) {
            // Every statement is a plain upsert, delete or read: running it
            // twice (a retry, a speculative execution) ends in the same state.
            prepared.push(session.prepare(name, &text, Kind::Plain).await?);
        }
        let [
            select_block,
            insert_block,
            delete_scale_row,
            insert_index,
            select_index_asc,
            select_index_desc,
        ] = <[PreparedStatement; 6]>::try_from(prepared)
            .map_err(|_| unavailable("prepare", "statement count"))?;
        Ok(Statements {
            select_block,
            insert_block,
            delete_scale_row,
            insert_index,
            select_index_asc,
            select_index_desc,
        })
    }
}

/// One write of a block partition inside a single-partition batch.
enum PartitionWrite {
    Insert(BlockRow),
    Delete(ScaleRowKey),
}

impl SerializeRow for PartitionWrite {
    fn serialize(
        &self,
        ctx: &RowSerializationContext<'_>,
        writer: &mut RowWriter,
    ) -> Result<(), SerializationError> {
        match self {
            PartitionWrite::Insert(row) => row.serialize(ctx, writer),
            PartitionWrite::Delete(key) => key.serialize(ctx, writer),
        }
    }

    fn is_empty(&self) -> bool {
        false
    }
}

/// Prepared statements over a session: the engine's storage.
pub(crate) struct ScyllaBackend {
    session: ScyllaSession,
    statements: Statements,
}

fn block_what(key: &BlockKey) -> String {
    format!("block {} {} {}", key.symbol, key.interval, key.block)
}

#[async_trait]
impl Backend for ScyllaBackend {
    /// A partition is one bounded block (normally one row), so it is read
    /// unpaged.
    async fn read_block(&self, key: &BlockKey) -> Result<Vec<StoredBlockRow>, StoreError> {
        let what = || format!("cannot read {}", block_what(key));
        let result = self
            .session
            .session()
            .execute_unpaged(&self.statements.select_block, partition_key(key))
            .await
            .map_err(|e| unavailable(&what(), e))?
            .into_rows_result()
            .map_err(|e| unavailable(&what(), e))?;
        result
            .rows::<StoredBlockRow>()
            .map_err(|e| StoreError::Corrupt(format!("{}: {e}", what())))?
            .map(|row| row.map_err(|e| StoreError::Corrupt(format!("{}: {e}", what()))))
            .collect()
    }

    async fn write_block(
        &self,
        key: &BlockKey,
        rows: Vec<BlockRow>,
        deletes: Vec<ScaleRowKey>,
    ) -> Result<(), StoreError> {
        let what = || format!("cannot write {}", block_what(key));
        if rows.len() == 1 && deletes.is_empty() {
            let row = rows.into_iter().next().expect("one row");
            self.session
                .session()
                .execute_unpaged(&self.statements.insert_block, row)
                .await
                .map_err(|e| unavailable(&what(), e))?;
            return Ok(());
        }
        // Several scale pairs: one single-partition batch, which replicas
        // apply atomically and in isolation.
        let mut batch = Batch::new(BatchType::Unlogged);
        batch.set_consistency(Consistency::LocalQuorum);
        batch.set_is_idempotent(true);
        let mut values = Vec::with_capacity(rows.len() + deletes.len());
        for key in deletes {
            batch.append_statement(self.statements.delete_scale_row.clone());
            values.push(PartitionWrite::Delete(key));
        }
        for row in rows {
            batch.append_statement(self.statements.insert_block.clone());
            values.push(PartitionWrite::Insert(row));
        }
        self.session
            .session()
            .batch(&batch, values)
            .await
            .map_err(|e| unavailable(&what(), e))?;
        Ok(())
    }

    async fn write_index(&self, row: IndexRow) -> Result<(), StoreError> {
        let what = format!(
            "cannot index block {} {} {}",
            row.symbol, row.interval, row.block
        );
        self.session
            .session()
            .execute_unpaged(&self.statements.insert_index, row)
            .await
            .map_err(|e| unavailable(&what, e))?;
        Ok(())
    }

    /// Paged (`page_size` rows per page), fetched as the engine consumes it.
    async fn index_blocks(
        &self,
        range: IndexRange,
        newest_first: bool,
    ) -> Result<BoxStream<'_, Result<i64, StoreError>>, StoreError> {
        let what = format!(
            "cannot read the block index of {} {}",
            range.symbol, range.interval
        );
        let statement = if newest_first {
            &self.statements.select_index_desc
        } else {
            &self.statements.select_index_asc
        };
        let rows = self
            .session
            .session()
            .execute_iter(statement.clone(), range)
            .await
            .map_err(|e| unavailable(&what, &e))?
            .rows_stream::<(i64,)>()
            .map_err(|e| StoreError::Corrupt(format!("{what}: {e}")))?;
        Ok(rows
            .map(move |row| row.map(|(id,)| id).map_err(|e| unavailable(&what, e)))
            .boxed())
    }
}

/// Candle history in ScyllaDB (see the crate docs for the data model).
pub struct ScyllaStore {
    engine: Engine<ScyllaBackend>,
}

impl ScyllaStore {
    /// Connects, checks the schema version of the tables and prepares every
    /// statement (LOCAL_QUORUM, idempotent, paged). To share one session
    /// with the other stores, [`ScyllaSession::connect`] then
    /// [`ScyllaStore::open`].
    pub async fn connect(config: &ScyllaConfig) -> Result<ScyllaStore, StoreError> {
        ScyllaStore::open(&ScyllaSession::connect(config).await?).await
    }

    /// Prepares the store's statements on an open session.
    pub async fn open(session: &ScyllaSession) -> Result<ScyllaStore, StoreError> {
        let statements = Statements::prepare(session).await?;
        info!(keyspace = %session.config().keyspace, "scylla candle store ready");
        let config = session.config();
        let engine = Engine::new(
            ScyllaBackend {
                session: session.clone(),
                statements,
            },
            config.write_concurrency,
            config.read_concurrency,
        );
        Ok(ScyllaStore { engine })
    }

    /// The driver session (for operational queries and tests).
    pub fn session(&self) -> &Session {
        self.engine.backend.session.session()
    }
}

#[async_trait]
impl CandleStore for ScyllaStore {
    /// Groups candles by block; for each block (up to `write_concurrency` at
    /// a time): read it, merge the new candles in, encode, write the block
    /// row, then the index row. All or nothing per block.
    async fn upsert(&self, candles: &[StoredCandle]) -> Result<(), StoreError> {
        self.engine.upsert(candles).await
    }

    /// Walks the block index (paged, in the requested order) between the
    /// blocks of `from_ns` and `to_ns - 1`, reads up to `read_concurrency`
    /// blocks ahead, filters by open time and stops at `limit`.
    async fn range(
        &self,
        symbol: &str,
        interval: Interval,
        from_ns: i64,
        to_ns: i64,
        newest_first: bool,
        limit: usize,
    ) -> Result<Vec<StoredCandle>, StoreError> {
        self.engine
            .range(symbol, interval, from_ns, to_ns, newest_first, limit)
            .await
    }

    /// The net blob bytes this process has written: each block rewrite adds
    /// the new blob sizes and subtracts the sizes it replaced. It counts the
    /// encoded blocks only (not index rows, replication, SSTable overhead or
    /// table compression) and nothing written by other processes; for a store
    /// filled by this process from empty, it is the compressed size of the
    /// data once (per replica).
    async fn size_on_disk(&self) -> Result<u64, StoreError> {
        Ok(self.engine.written_bytes())
    }

    fn name(&self) -> &'static str {
        "scylla"
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::apply_schema;

    #[test]
    fn statements_name_their_tables_and_bind_markers() {
        let texts = statement_texts("ks");
        let names: Vec<_> = texts.iter().map(|(n, _)| *n).collect();
        assert_eq!(
            names,
            [
                "select_block",
                "insert_block",
                "delete_scale_row",
                "insert_index",
                "select_index_asc",
                "select_index_desc"
            ]
        );
        for (name, text) in &texts {
            assert!(
                text.contains("ks.candle_blocks") || text.contains("ks.candle_block_index"),
                "{name}: {text}"
            );
            // Every partition key column is bound, so routing is token-aware.
            let columns: &[&str] = if name.starts_with("insert") {
                &["(symbol, interval, block, "]
            } else if name.contains("index") {
                &["symbol = :symbol", "interval = :interval"]
            } else {
                &["symbol = ?", "interval = ?", "block = ?"]
            };
            for column in columns {
                assert!(text.contains(column), "{name} binds {column}: {text}");
            }
        }
        let insert = &texts[1].1;
        assert_eq!(insert.matches('?').count(), 8, "{insert}");
        assert!(
            texts[4].1.ends_with("ORDER BY block ASC")
                && texts[5].1.ends_with("ORDER BY block DESC")
        );
        assert!(texts[4].1.contains("block >= :first AND block <= :last"));
    }

    #[test]
    fn block_row_fields_match_the_insert_columns() {
        // The derive binds by name: the field names must be the insert's columns.
        let insert = &statement_texts("ks")[1].1;
        for column in [
            "symbol",
            "interval",
            "block",
            "price_scale",
            "quantity_scale",
            "data",
            "candle_count",
            "updated_at",
        ] {
            assert!(insert.contains(column), "{column}");
        }
    }

    #[test]
    fn bad_tls_files_fail_before_any_network() {
        let missing = std::env::temp_dir().join("tickmesh-no-such-dir/ca.pem");
        let config = ScyllaConfig {
            // Unroutable (TEST-NET-1): reaching the network would hang, not fail.
            contact_points: vec!["192.0.2.1:9142".into()],
            tls: Some(crate::TlsConfig {
                ca_file: missing.clone(),
                cert_file: None,
                key_file: None,
                verify_hostname: true,
            }),
            ..Default::default()
        };
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime");
        for result in [
            rt.block_on(ScyllaStore::connect(&config)).map(|_| ()),
            rt.block_on(apply_schema(&config)).map(|_| ()),
        ] {
            let text = result.expect_err("connected without a CA file").to_string();
            assert!(
                text.contains("cannot read tls.ca_file")
                    && text.contains(&missing.display().to_string()),
                "{text}"
            );
        }
    }

    #[test]
    fn bad_config_fails_before_any_network() {
        let config = ScyllaConfig {
            keyspace: "bad-name".into(),
            ..Default::default()
        };
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime");
        let Err(err) = rt.block_on(ScyllaStore::connect(&config)) else {
            panic!("connected")
        };
        assert!(
            err.to_string().contains("not a valid CQL identifier"),
            "{err}"
        );
        let Err(err) = rt.block_on(apply_schema(&config)) else {
            panic!("applied")
        };
        assert!(
            err.to_string().contains("not a valid CQL identifier"),
            "{err}"
        );
    }
}
