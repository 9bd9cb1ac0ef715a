//! tickmesh's durable state in ScyllaDB, three stores on one driver session
//! ([`ScyllaSession`]):
//!
//! - [`ScyllaStore`], the [`CandleStore`](tickmesh_history::CandleStore):
//!   long-term candle history kept as compressed column blocks
//!   (`tickmesh-candle-blocks`), one block per symbol × interval × period
//!   (module `candle_history`);
//! - [`ScyllaSnapshotStore`], RankingService's
//!   [`SnapshotStore`](tickmesh_ranking::snapshot::SnapshotStore): closed
//!   leaderboard windows (module `ranking_snapshots`);
//! - [`ScyllaIssuanceStore`], CouponIssueService's
//!   [`IssuanceStore`](tickmesh_coupon::IssuanceStore): campaigns and
//!   issuance records, shared by every instance (module `coupon_issuances`).
//!
//! Connect once with [`ScyllaSession::connect`] and open each store on it
//! (`ScyllaStore::open(&session)`, …): one set of connection pools per
//! process. Each store also has a `connect(&ScyllaConfig)` of its own.
//!
//! # Data model of the candle store
//!
//! The schema is the versioned file `deploy/scylla/schema.cql`, embedded in
//! this crate ([`SCHEMA_CQL`]) so the code applies exactly that file:
//!
//! - `candle_blocks`: partition key `(symbol, interval, block)` where
//!   `block = block_id(interval, open_ns)` (a UTC day for minute and hour
//!   candles, a 365-day year for day and week candles, a century for month and
//!   year candles). The row holds the encoded block (`data` blob), its
//!   `price_scale` / `quantity_scale`, `candle_count` and `updated_at`. The
//!   scales are clustering columns because one encoded block has one scale
//!   pair: a partition normally has one row, and a candle re-published at other
//!   scales moves to a second row of the same partition.
//!   TimeWindowCompactionStrategy (30-day windows), zstd table compression,
//!   no TTL.
//! - `candle_block_index`: partition key `(symbol, interval)`, clustering key
//!   `block ASC`: which blocks exist, so a range read walks a few rows instead
//!   of probing an empty id space (a decade of daily blocks is 3,650 rows).
//!
//! The ranking and coupon tables are described in their modules and in the
//! schema file.
//!
//! # Why partitions stay bounded
//!
//! A block partition holds one period of one symbol and interval, at most
//! 1,440 candles for 1m (a few KB compressed); it never grows with the age of
//! the symbol. The index partition grows by one tiny row per period: ~365
//! rows a year for minute and hour intervals, one a year for days and weeks.
//!
//! # Consistency and idempotence
//!
//! Every statement is prepared once when a store opens, with
//! LOCAL_QUORUM (also the session default), so a read after an acknowledged
//! write sees it while a quorum of the local datacenter is up. Every write is
//! an upsert or delete by full primary key, marked idempotent, so the driver
//! may retry it or execute it speculatively; write timestamps are client-side
//! and monotonic. An upsert is a read-modify-write of each touched block:
//! safe because exactly one process writes a symbol at a time (the flusher
//! holds a lease), and a striped lock serializes one block inside the process.
//! The block row is written before its index row, so an index entry always
//! points to a written block. Routing is token-aware (the driver's
//! `DefaultPolicy`, all partition key columns bound) and, when
//! [`ScyllaConfig::local_datacenter`] is set, restricted to that datacenter.
//!
//! # Applying the schema
//!
//! Run [`apply_schema`] once per cluster (it is `IF NOT EXISTS` throughout, so
//! running it again is harmless), or apply `deploy/scylla/schema.cql` with
//! cqlsh after replacing `{keyspace}` and `{replication}`.
//! [`ScyllaSession::connect`] (and so every store's `connect`) checks that
//! every table of the file exists and carries `schema_version=1` in its
//! comment. The keyspace is created without tablets: the coupon store's
//! lightweight transactions need that on ScyllaDB 2025.3 (see the file).
//! Lines of the file that only some servers accept (the `tablets` keyspace
//! option, `ZstdCompressor`) end with `-- requires: NAME` / `-- unless: NAME`;
//! [`apply_schema`] detects the server's [`ServerFeatures`] from its
//! `system.local` and keeps only the lines that hold, so the same file
//! applies to ScyllaDB and to Apache Cassandra 3.11 (LZ4 there).
//!
//! ```no_run
//! # async fn example() -> Result<(), Box<dyn std::error::Error>> {
//! use tickmesh_scylla::{
//!     ScyllaConfig, ScyllaIssuanceStore, ScyllaSession, ScyllaSnapshotStore, ScyllaStore,
//!     apply_schema,
//! };
//! let config = ScyllaConfig {
//!     contact_points: vec!["10.0.0.1:9042".into(), "10.0.0.2:9042".into()],
//!     local_datacenter: Some("dc1".into()),
//!     replication: "'class': 'NetworkTopologyStrategy', 'dc1': 3".into(),
//!     ..ScyllaConfig::default()
//! };
//! apply_schema(&config).await?;
//! let session = ScyllaSession::connect(&config).await?;
//! let candles = ScyllaStore::open(&session).await?;
//! let snapshots = ScyllaSnapshotStore::open(&session).await?;
//! let issuances = ScyllaIssuanceStore::open(&session).await?;
//! # let _ = (candles, snapshots, issuances);
//! # Ok(())
//! # }
//! ```
//!
//! # TLS
//!
//! Always built, with OpenSSL (the `scylla` crate's `openssl-010` feature and
//! the `openssl` 0.10 crate; building needs the system packages `libssl-dev`
//! and `pkg-config`). Set [`ScyllaConfig::tls`] to a [`TlsConfig`] naming the
//! PEM file of the CA that signed the nodes' certificates, and list the
//! nodes' TLS port (`native_transport_port_ssl`, commonly 9142) as contact
//! points. The client context accepts TLS 1.2 or newer, trusts only the
//! certificates of `ca_file` (not the system store) and always verifies a
//! node's certificate chain against them. Give `cert_file` and `key_file`
//! (unencrypted PEM) for mutual TLS; the key must match the certificate.
//!
//! Hostname verification ([`TlsConfig::verify_hostname`]) is special: the
//! driver reaches every node by IP address (contact points given as names
//! are resolved; the other nodes are the addresses they advertise) and
//! checks the certificate against that IP, never a DNS name. It therefore
//! needs node certificates with an IP subject alternative name for each
//! address clients use; with certificates that name only DNS names, turn it
//! off (the chain is still verified, so any certificate of the CA is
//! accepted for any node).
//!
//! The files are read and the context built at [`ScyllaSession::connect`]
//! and [`apply_schema`], before any network traffic; a missing or unreadable
//! file, a file without a PEM certificate or key, or a key that does not
//! match the certificate fails there with an error naming the file.
//!
//! # Size
//!
//! [`CandleStore::size_on_disk`](tickmesh_history::CandleStore::size_on_disk)
//! reports the net bytes of encoded blocks this process has written, not the
//! cluster's disk usage.

pub(crate) use tickmesh_candle_blocks as blocks;

mod candle_history;
mod config;
pub mod coupon_issuances;
mod engine;
mod lwt;
mod model;
pub mod ranking_snapshots;
mod schema;
mod session;
mod tls;

pub use candle_history::ScyllaStore;
pub use config::{DEFAULT_REPLICATION, ScyllaConfig, TlsConfig, validate_keyspace};
pub use coupon_issuances::ScyllaIssuanceStore;
pub use ranking_snapshots::ScyllaSnapshotStore;
pub use schema::{
    BLOCKS_TABLE, CAMPAIGNS_TABLE, FEATURE_NAMES, INDEX_TABLE, ISSUANCE_BUCKETS_TABLE,
    ISSUANCES_TABLE, SCHEMA_CQL, SCHEMA_VERSION, SNAPSHOTS_TABLE, ServerFeatures, TABLES,
    apply_conditions, schema_statements, split_statements,
};
pub use session::{ScyllaSession, apply_schema};
