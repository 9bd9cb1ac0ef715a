//! The versioned schema file, its placeholders and statement splitting.

use tickmesh_history::StoreError;

use crate::config::{ScyllaConfig, validate_keyspace, validate_replication};

/// `deploy/scylla/schema.cql`, byte for byte: the code applies exactly the
/// versioned file.
pub const SCHEMA_CQL: &str = include_str!("../../../deploy/scylla/schema.cql");

/// The schema version this code reads and writes. Must equal the
/// `-- schema_version: N` header of [`SCHEMA_CQL`] (checked by a test) and
/// appear in the comment of every table (checked at connect).
pub const SCHEMA_VERSION: u32 = 1;

/// Table of encoded blocks, one partition per block.
pub const BLOCKS_TABLE: &str = "candle_blocks";
/// Table listing the blocks of each (symbol, interval) in order.
pub const INDEX_TABLE: &str = "candle_block_index";
/// Table of closed ranking windows, one partition per board and window.
pub const SNAPSHOTS_TABLE: &str = "ranking_snapshots";
/// Table of coupon campaigns, one partition in id order.
pub const CAMPAIGNS_TABLE: &str = "coupon_campaigns";
/// Table listing the issuance buckets of each campaign in order.
pub const ISSUANCE_BUCKETS_TABLE: &str = "coupon_issuance_buckets";
/// Table of coupon issuance records, one partition per campaign and bucket.
pub const ISSUANCES_TABLE: &str = "coupon_issuances";
/// Every table of [`SCHEMA_CQL`], in file order: all are checked at connect.
pub const TABLES: [&str; 6] = [
    BLOCKS_TABLE,
    INDEX_TABLE,
    SNAPSHOTS_TABLE,
    CAMPAIGNS_TABLE,
    ISSUANCE_BUCKETS_TABLE,
    ISSUANCES_TABLE,
];

/// The marker every table comment carries, e.g. `tickmesh schema_version=1`.
pub fn table_comment_marker() -> String {
    format!("tickmesh schema_version={SCHEMA_VERSION}")
}

/// The schema version named in a table comment (`tickmesh schema_version=N…`).
pub fn comment_version(comment: &str) -> Option<u32> {
    let marker = "tickmesh schema_version=";
    let at = comment.find(marker)?;
    let digits: String = comment[at + marker.len()..]
        .chars()
        .take_while(char::is_ascii_digit)
        .collect();
    digits.parse().ok()
}

/// The version named by the `-- schema_version: N` header line of `text`.
pub fn header_version(text: &str) -> Option<u32> {
    text.lines()
        .map(str::trim)
        .take_while(|line| line.starts_with("--") || line.is_empty())
        .find_map(|line| {
            line.trim_start_matches('-')
                .trim()
                .strip_prefix("schema_version:")
        })
        .and_then(|v| v.trim().parse().ok())
}

/// Splits CQL text into statements: drops `--`, `//` and `/* */` comments,
/// splits on `;` outside string literals ('…' with '' escapes, "…" quoted
/// identifiers, $$…$$ strings), trims, and skips empty statements.
pub fn split_statements(text: &str) -> Result<Vec<String>, String> {
    #[derive(PartialEq)]
    enum State {
        Code,
        Single,
        Double,
        Dollar,
        Line,
        Block,
    }
    let bytes = text.as_bytes();
    let mut state = State::Code;
    let mut statements = Vec::new();
    let mut current = String::new();
    let mut i = 0;
    // Copies whole UTF-8 characters, so multi-byte text inside literals survives.
    let char_at = |i: usize| text[i..].chars().next().expect("char boundary");
    while i < bytes.len() {
        let b = bytes[i];
        let next = bytes.get(i + 1).copied();
        match state {
            State::Code => match (b, next) {
                (b'-', Some(b'-')) | (b'/', Some(b'/')) => {
                    state = State::Line;
                    i += 2;
                    continue;
                }
                (b'/', Some(b'*')) => {
                    state = State::Block;
                    // A comment separates tokens.
                    current.push(' ');
                    i += 2;
                    continue;
                }
                (b'$', Some(b'$')) => {
                    state = State::Dollar;
                    current.push_str("$$");
                    i += 2;
                    continue;
                }
                (b';', _) => {
                    let statement = current.trim();
                    if !statement.is_empty() {
                        statements.push(statement.to_string());
                    }
                    current.clear();
                }
                (b'\'', _) => {
                    state = State::Single;
                    current.push('\'');
                }
                (b'"', _) => {
                    state = State::Double;
                    current.push('"');
                }
                _ => {
                    let c = char_at(i);
                    current.push(c);
                    i += c.len_utf8();
                    continue;
                }
            },
            State::Single | State::Double => {
                let quote = if state == State::Single { b'\'' } else { b'"' };
                if b == quote && next == Some(quote) {
                    // An escaped quote stays inside the literal.
                    current.push(quote as char);
                    current.push(quote as char);
                    i += 2;
                    continue;
                }
                if b == quote {
                    state = State::Code;
                }
                let c = char_at(i);
                current.push(c);
                i += c.len_utf8();
                continue;
            }
            State::Dollar => {
                if b == b'$' && next == Some(b'$') {
                    state = State::Code;
                    current.push_str("$$");
                    i += 2;
                    continue;
                }
                let c = char_at(i);
                current.push(c);
                i += c.len_utf8();
                continue;
            }
            State::Line => {
                if b == b'\n' {
                    state = State::Code;
                    current.push('\n');
                }
            }
            State::Block => {
                if b == b'*' && next == Some(b'/') {
                    state = State::Code;
                    i += 2;
                    continue;
                }
            }
        }
        i += 1;
    }
    match state {
        State::Code | State::Line => {}
        State::Single => return Err("unterminated '…' string literal".into()),
        State::Double => return Err("unterminated \"…\" quoted identifier".into()),
        State::Dollar => return Err("unterminated $$…$$ string literal".into()),
        State::Block => return Err("unterminated /* comment".into()),
    }
    let statement = current.trim();
    if !statement.is_empty() {
        statements.push(statement.to_string());
    }
    Ok(statements)
}

/// Replaces `{keyspace}` and `{replication}`; refuses any other `{name}`
/// placeholder left in the text.
pub fn substitute(statement: &str, keyspace: &str, replication: &str) -> Result<String, String> {
    let out = statement
        .replace("{keyspace}", keyspace)
        .replace("{replication}", replication);
    // A map literal starts with a quote or a space, a placeholder with a letter.
    let mut rest = out.as_str();
    while let Some(at) = rest.find('{') {
        let tail = &rest[at + 1..];
        let name: String = tail
            .chars()
            .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
            .collect();
        if !name.is_empty() && tail[name.len()..].starts_with('}') {
            return Err(format!(
                "unknown placeholder {{{name}}} in schema statement"
            ));
        }
        rest = tail;
    }
    Ok(out)
}

/// What the server supports, as far as the schema file cares: the features
/// its `-- requires: NAME` / `-- unless: NAME` lines name. Detected from the
/// server by [`ServerFeatures::detect`], never configured.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct ServerFeatures {
    /// `tablets`: the keyspace option `tablets = {...}` is known (a
    /// ScyllaDB whose `system.local.supported_features` lists `TABLETS`).
    pub tablets: bool,
    /// `zstd`: `ZstdCompressor` table compression exists (every ScyllaDB;
    /// Apache Cassandra 4.0 or newer).
    pub zstd: bool,
}

/// The feature names the schema file may use in its conditions.
pub const FEATURE_NAMES: [&str; 2] = ["tablets", "zstd"];

impl ServerFeatures {
    /// Everything on: a current ScyllaDB.
    pub const SCYLLA: ServerFeatures = ServerFeatures {
        tablets: true,
        zstd: true,
    };

    /// The rule, from what the server's `system.local` says:
    /// `supported_features` is that column's value, `None` when the table has
    /// no such column (only ScyllaDB has it), and `release_version` its
    /// release version. ScyllaDB: `tablets` if the feature list contains
    /// `TABLETS`, `zstd` always (ScyllaDB reports a fixed Cassandra-compatible
    /// release version, 3.0.8, so that says nothing). Anything else (Apache
    /// Cassandra): no `tablets`, `zstd` if the release's major version is 4 or
    /// more.
    pub fn from_system_local(
        supported_features: Option<&str>,
        release_version: &str,
    ) -> ServerFeatures {
        match supported_features {
            Some(list) => ServerFeatures {
                tablets: list.split(',').any(|f| f.trim() == "TABLETS"),
                zstd: true,
            },
            None => {
                let major = release_version
                    .split('.')
                    .next()
                    .and_then(|m| m.trim().parse::<u32>().ok())
                    .unwrap_or(0);
                ServerFeatures {
                    tablets: false,
                    zstd: major >= 4,
                }
            }
        }
    }

    fn has(&self, name: &str) -> Option<bool> {
        match name {
            "tablets" => Some(self.tablets),
            "zstd" => Some(self.zstd),
            _ => None,
        }
    }
}

/// Keeps or blanks each line of `text` that ends with a condition comment
/// (`-- requires: NAME` / `-- unless: NAME` after some CQL on the same
/// line), by `features`. Whole-line comments are left alone. An unknown
/// feature name is an error.
pub fn apply_conditions(text: &str, features: ServerFeatures) -> Result<String, String> {
    let mut out = String::with_capacity(text.len());
    for line in text.lines() {
        let code = line.trim_start();
        let condition = if code.starts_with("--") {
            None
        } else {
            line.rfind("--").and_then(|at| {
                let comment = line[at + 2..].trim();
                comment
                    .strip_prefix("requires:")
                    .map(|n| (true, n.trim()))
                    .or_else(|| comment.strip_prefix("unless:").map(|n| (false, n.trim())))
            })
        };
        let keep = match condition {
            None => true,
            Some((wanted, name)) => {
                let has = features.has(name).ok_or_else(|| {
                    format!(
                        "unknown feature {name:?} in a condition (known: {FEATURE_NAMES:?}): {line}"
                    )
                })?;
                has == wanted
            }
        };
        if keep {
            out.push_str(line);
        }
        out.push('\n');
    }
    Ok(out)
}

/// The statements of [`SCHEMA_CQL`] for `config` on a server with
/// `features`: conditional lines resolved, placeholders substituted, in file
/// order (the keyspace first).
pub fn schema_statements(
    config: &ScyllaConfig,
    features: ServerFeatures,
) -> Result<Vec<String>, StoreError> {
    validate_keyspace(&config.keyspace)?;
    validate_replication(&config.replication)?;
    render(SCHEMA_CQL, &config.keyspace, &config.replication, features)
}

fn render(
    text: &str,
    keyspace: &str,
    replication: &str,
    features: ServerFeatures,
) -> Result<Vec<String>, StoreError> {
    let broken = |e: String| StoreError::Corrupt(format!("deploy/scylla/schema.cql: {e}"));
    match header_version(text) {
        Some(SCHEMA_VERSION) => {}
        other => {
            return Err(broken(format!(
                "header says schema_version {other:?}, the code expects {SCHEMA_VERSION}"
            )));
        }
    }
    let text = apply_conditions(text, features).map_err(broken)?;
    split_statements(&text)
        .map_err(broken)?
        .iter()
        .map(|s| substitute(s, keyspace, replication).map_err(broken))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The file as a current ScyllaDB gets it, placeholders kept.
    fn statements() -> Vec<String> {
        statements_for(ServerFeatures::SCYLLA)
    }

    fn statements_for(features: ServerFeatures) -> Vec<String> {
        let text = apply_conditions(SCHEMA_CQL, features).expect("known features");
        split_statements(&text).expect("the schema file splits")
    }

    fn table<'a>(all: &'a [String], name: &str) -> &'a str {
        let head = format!("CREATE TABLE IF NOT EXISTS {{keyspace}}.{name} (");
        all.iter()
            .find(|s| s.starts_with(&head))
            .unwrap_or_else(|| panic!("no {name}"))
    }

    #[test]
    fn header_version_matches_the_code() {
        assert_eq!(header_version(SCHEMA_CQL), Some(SCHEMA_VERSION));
        assert_eq!(
            header_version("-- x\n-- schema_version: 7\nCREATE"),
            Some(7)
        );
        assert_eq!(
            header_version("CREATE x;\n-- schema_version: 7"),
            None,
            "only the header counts"
        );
        assert!(
            render(
                "-- schema_version: 2\nCREATE TABLE t (a int);",
                "k",
                "'a': 1",
                ServerFeatures::SCYLLA
            )
            .is_err()
        );
    }

    #[test]
    fn comment_versions() {
        assert_eq!(
            comment_version("tickmesh schema_version=1: blocks"),
            Some(1)
        );
        assert_eq!(
            comment_version("tickmesh schema_version=10"),
            Some(10),
            "10 is not 1"
        );
        assert_eq!(comment_version("x tickmesh schema_version=2"), Some(2));
        assert_eq!(comment_version(""), None);
        assert_eq!(comment_version("tickmesh schema_version="), None);
    }

    #[test]
    fn schema_file_statements() {
        let all = statements();
        assert_eq!(
            all.len(),
            1 + TABLES.len(),
            "the keyspace and one statement per table: {all:#?}"
        );
        for s in &all {
            assert!(s.starts_with("CREATE "), "{s}");
            assert!(
                s.contains(" IF NOT EXISTS "),
                "applying twice must be harmless: {s}"
            );
            assert!(
                !s.contains("--") && !s.contains(';'),
                "comments and separators are gone: {s}"
            );
        }
        assert!(
            all[0].starts_with("CREATE KEYSPACE IF NOT EXISTS {keyspace}"),
            "{}",
            all[0]
        );
        assert!(
            all[0].contains("replication = { {replication} }"),
            "{}",
            all[0]
        );
        assert!(
            all[0].contains("AND tablets = {'enabled': false}"),
            "lightweight transactions need a keyspace without tablets: {}",
            all[0]
        );
        assert!(all[0].ends_with("AND durable_writes = true"), "{}", all[0]);
        let marker = table_comment_marker();
        for (statement, name) in all[1..].iter().zip(TABLES) {
            assert!(
                statement.starts_with(&format!("CREATE TABLE IF NOT EXISTS {{keyspace}}.{name} (")),
                "TABLES lists the tables in file order: {statement}"
            );
        }
        for name in TABLES {
            let t = table(&all, name);
            assert!(
                t.contains(&format!("comment = '{marker}")),
                "{name} carries the version: {t}"
            );
            assert!(
                t.contains("default_time_to_live = 0"),
                "{name} keeps rows forever"
            );
            assert!(
                t.contains("'sstable_compression': 'ZstdCompressor'")
                    && !t.contains("LZ4Compressor"),
                "{name} compression"
            );
        }
    }

    #[test]
    fn conditional_lines_follow_the_server() {
        // Apache Cassandra 3.11: no tablets option, LZ4 instead of zstd, and
        // otherwise the same statements.
        let old = ServerFeatures::from_system_local(None, "3.11.12");
        assert_eq!(
            old,
            ServerFeatures {
                tablets: false,
                zstd: false
            }
        );
        let scylla = statements();
        let cassandra = statements_for(old);
        assert_eq!(cassandra.len(), scylla.len());
        assert!(!cassandra[0].contains("tablets"), "{}", cassandra[0]);
        assert!(
            cassandra[0].contains("replication = { {replication} }")
                && cassandra[0].ends_with("AND durable_writes = true"),
            "{}",
            cassandra[0]
        );
        for (c, s) in cassandra[1..].iter().zip(&scylla[1..]) {
            assert!(
                c.contains("AND compression = {'sstable_compression': 'LZ4Compressor'}")
                    && !c.contains("Zstd"),
                "{c}"
            );
            assert_eq!(
                c.replace("'LZ4Compressor'", "'ZstdCompressor'")
                    .split_whitespace()
                    .collect::<Vec<_>>(),
                s.split_whitespace().collect::<Vec<_>>(),
                "only the compressor differs"
            );
        }
        // Cassandra 4.x and 5.x have zstd; ScyllaDB reports release 3.0.8
        // whatever its version, and its feature list decides tablets.
        assert!(ServerFeatures::from_system_local(None, "4.0.11").zstd);
        assert!(ServerFeatures::from_system_local(None, "5.0.2").zstd);
        assert!(!ServerFeatures::from_system_local(None, "").zstd);
        assert_eq!(
            ServerFeatures::from_system_local(Some("CDC,TABLETS,UDA"), "3.0.8"),
            ServerFeatures::SCYLLA
        );
        assert_eq!(
            ServerFeatures::from_system_local(Some("CDC,TABLETS_ROUTING,UDA"), "3.0.8"),
            ServerFeatures {
                tablets: false,
                zstd: true
            }
        );
        // Whole-line comments are never conditions; unknown features fail.
        let text = "-- requires: zstd\nA -- requires: zstd\nB -- unless: zstd\nC\n";
        assert_eq!(
            apply_conditions(text, ServerFeatures::SCYLLA).expect("known"),
            "-- requires: zstd\nA -- requires: zstd\n\nC\n"
        );
        assert!(apply_conditions("X -- requires: paxos\n", ServerFeatures::SCYLLA).is_err());
    }

    #[test]
    fn blocks_table_design() {
        let all = statements();
        let t = table(&all, BLOCKS_TABLE);
        assert!(
            t.contains("PRIMARY KEY ((symbol, interval, block), price_scale, quantity_scale)"),
            "one partition per block: {t}"
        );
        assert!(t.contains("'class': 'TimeWindowCompactionStrategy'"), "{t}");
        assert!(t.contains("'compaction_window_unit': 'DAYS'"), "{t}");
        assert!(t.contains("'compaction_window_size': 30"), "{t}");
        for column in [
            "symbol         text",
            "interval       text",
            "block          bigint",
            "price_scale    int",
            "quantity_scale int",
            "data           blob",
            "candle_count   int",
            "updated_at     timestamp",
        ] {
            assert!(t.contains(column), "{column}: {t}");
        }
    }

    #[test]
    fn index_table_design() {
        let all = statements();
        let t = table(&all, INDEX_TABLE);
        assert!(t.contains("PRIMARY KEY ((symbol, interval), block)"), "{t}");
        assert!(t.contains("WITH CLUSTERING ORDER BY (block ASC)"), "{t}");
    }

    #[test]
    fn ranking_snapshots_table_design() {
        let all = statements();
        let t = table(&all, SNAPSHOTS_TABLE);
        assert!(
            t.contains("PRIMARY KEY ((board_id, window_name), generation, chunk)"),
            "one partition per window: {t}"
        );
        assert!(
            t.contains("WITH CLUSTERING ORDER BY (generation DESC, chunk ASC)"),
            "{t}"
        );
        assert!(t.contains("'class': 'SizeTieredCompactionStrategy'"), "{t}");
        for column in [
            "board_id      text",
            "window_name   text",
            "head          bigint STATIC",
            "generation    bigint",
            "chunk         int",
            "chunks        int",
            "close_ns      bigint",
            "taken_ns      bigint",
            "total_members bigint",
            "entries_json  text",
        ] {
            assert!(t.contains(column), "{column}: {t}");
        }
    }

    #[test]
    fn coupon_tables_design() {
        let all = statements();
        let t = table(&all, CAMPAIGNS_TABLE);
        assert!(
            t.contains("PRIMARY KEY ((bucket), id)")
                && t.contains("WITH CLUSTERING ORDER BY (id ASC)"),
            "one partition in id order: {t}"
        );
        for column in [
            "bucket           int",
            "id               text",
            "display_name     text",
            "total_stock      bigint",
            "per_user_limit   bigint",
            "start_ms         bigint",
            "end_ms           bigint",
            "ranking_board_id text",
            "create_ms        bigint",
            "secret           text",
        ] {
            assert!(t.contains(column), "{column}: {t}");
        }
        let t = table(&all, ISSUANCE_BUCKETS_TABLE);
        assert!(t.contains("PRIMARY KEY ((campaign_id), bucket)"), "{t}");
        assert!(t.contains("WITH CLUSTERING ORDER BY (bucket ASC)"), "{t}");
        let t = table(&all, ISSUANCES_TABLE);
        assert!(
            t.contains("PRIMARY KEY ((campaign_id, bucket), seq)")
                && t.contains("WITH CLUSTERING ORDER BY (seq ASC)"),
            "bounded partitions in sequence order: {t}"
        );
        for column in [
            "campaign_id text",
            "bucket      bigint",
            "seq         bigint",
            "user_id     text",
            "code        text",
            "request_id  text",
            "issued_ms   bigint",
        ] {
            assert!(t.contains(column), "{column}: {t}");
        }
    }

    #[test]
    fn placeholders_are_substituted() {
        let config = ScyllaConfig {
            keyspace: "tick_test".into(),
            replication: "'class': 'NetworkTopologyStrategy', 'dc1': 3".into(),
            ..Default::default()
        };
        let all = schema_statements(&config, ServerFeatures::SCYLLA).expect("statements");
        assert_eq!(all.len(), 7);
        assert!(
            all[0].starts_with(
                "CREATE KEYSPACE IF NOT EXISTS tick_test\n    WITH replication = \
                 { 'class': 'NetworkTopologyStrategy', 'dc1': 3 }"
            ),
            "{}",
            all[0]
        );
        assert!(
            all[1].starts_with("CREATE TABLE IF NOT EXISTS tick_test.candle_blocks ("),
            "{}",
            all[1]
        );
        assert!(
            all[2].starts_with("CREATE TABLE IF NOT EXISTS tick_test.candle_block_index ("),
            "{}",
            all[2]
        );
        for (statement, name) in all[1..].iter().zip(TABLES) {
            assert!(
                statement.starts_with(&format!("CREATE TABLE IF NOT EXISTS tick_test.{name} (")),
                "{statement}"
            );
        }
        for s in &all {
            assert!(
                !s.contains("{keyspace}") && !s.contains("{replication}"),
                "{s}"
            );
        }
        // The default replication is NetworkTopologyStrategy.
        let default =
            schema_statements(&ScyllaConfig::default(), ServerFeatures::SCYLLA).expect("default");
        assert!(
            default[0].contains("{ 'class': 'NetworkTopologyStrategy', 'replication_factor': 3 }")
        );
    }

    #[test]
    fn bad_keyspace_or_replication_is_refused() {
        let config = ScyllaConfig {
            keyspace: "tick-mesh".into(),
            ..Default::default()
        };
        let err = schema_statements(&config, ServerFeatures::SCYLLA)
            .expect_err("dash")
            .to_string();
        assert!(
            err.contains("\"tick-mesh\" is not a valid CQL identifier"),
            "{err}"
        );
        let config = ScyllaConfig {
            replication: "'class': 'X'}; DROP TABLE x".into(),
            ..Default::default()
        };
        assert!(schema_statements(&config, ServerFeatures::default()).is_err());
        assert!(
            substitute("CREATE {tabel}", "k", "r").is_err(),
            "unknown placeholders are refused"
        );
        assert_eq!(
            substitute("WITH m = {'a': 1}", "k", "r").as_deref(),
            Ok("WITH m = {'a': 1}")
        );
    }

    #[test]
    fn splitting() {
        let text = "-- header; with a semicolon\nCREATE TABLE a (x text); /* block; comment */\n\
                    INSERT INTO a (x) VALUES ('it''s; -- not a comment');\n\
                    // slash comment;\nCREATE FUNCTION f() AS $$ a; b $$ ;\n\
                    SELECT \"we;ird\" FROM a\n;;  \nCREATE TABLE é (x text)";
        let got = split_statements(text).expect("split");
        assert_eq!(
            got,
            vec![
                "CREATE TABLE a (x text)".to_string(),
                "INSERT INTO a (x) VALUES ('it''s; -- not a comment')".to_string(),
                "CREATE FUNCTION f() AS $$ a; b $$".to_string(),
                "SELECT \"we;ird\" FROM a".to_string(),
                "CREATE TABLE é (x text)".to_string(),
            ]
        );
        assert!(split_statements("SELECT 'open").is_err());
        assert!(split_statements("SELECT 1 /* open").is_err());
        assert!(
            split_statements("-- only a comment\n\n")
                .expect("empty")
                .is_empty()
        );
    }
}
