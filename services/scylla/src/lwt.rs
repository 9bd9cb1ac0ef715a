//! Answers of lightweight transactions (`INSERT … IF NOT EXISTS`).
//!
//! A conditional statement answers one row: `[applied]` and, when it was not
//! applied, the row that stopped it. Which other columns come back differs
//! between servers (ScyllaDB sends every column, null when applied; Cassandra
//! sends only `[applied]` when applied), so the answer is read by column
//! name from untyped values instead of a derived row type, which would
//! refuse either layout.

use scylla::response::query_result::QueryResult;
use scylla::value::{CqlValue, Row};

/// The name of the column that says whether a conditional statement applied.
pub(crate) const APPLIED: &str = "[applied]";

/// The columns of one result row by name.
#[derive(Clone, Debug, Default, PartialEq)]
pub(crate) struct NamedRow(pub(crate) Vec<(String, Option<CqlValue>)>);

impl NamedRow {
    /// True when the column is absent from the answer or null.
    pub(crate) fn is_null(&self, name: &str) -> bool {
        self.value(name).is_none()
    }

    fn value(&self, name: &str) -> Option<&CqlValue> {
        self.0
            .iter()
            .find(|(n, _)| n == name)
            .and_then(|(_, v)| v.as_ref())
    }

    fn required(&self, name: &str) -> Result<&CqlValue, String> {
        self.value(name)
            .ok_or_else(|| format!("column {name} is missing or null"))
    }

    pub(crate) fn text(&self, name: &str) -> Result<String, String> {
        match self.required(name)? {
            CqlValue::Text(s) | CqlValue::Ascii(s) => Ok(s.clone()),
            other => Err(format!("column {name} is not text: {other:?}")),
        }
    }

    /// A text column that may be null (an empty string written as null by
    /// another client).
    pub(crate) fn text_or_empty(&self, name: &str) -> Result<String, String> {
        match self.value(name) {
            None => Ok(String::new()),
            Some(_) => self.text(name),
        }
    }

    pub(crate) fn bigint(&self, name: &str) -> Result<i64, String> {
        match self.required(name)? {
            CqlValue::BigInt(v) => Ok(*v),
            other => Err(format!("column {name} is not a bigint: {other:?}")),
        }
    }

    pub(crate) fn boolean(&self, name: &str) -> Result<bool, String> {
        match self.required(name)? {
            CqlValue::Boolean(v) => Ok(*v),
            other => Err(format!("column {name} is not a boolean: {other:?}")),
        }
    }
}

/// What a conditional insert did.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Conditional<T> {
    /// The row did not exist and is now written.
    Applied,
    /// A row with the key existed (it is left as it was).
    Exists(T),
}

/// Reads the answer of a conditional insert: `[applied]`, and when it was
/// not applied, the existing row through `decode`.
pub(crate) fn conditional<T>(
    row: &NamedRow,
    decode: impl FnOnce(&NamedRow) -> Result<T, String>,
) -> Result<Conditional<T>, String> {
    if row.boolean(APPLIED)? {
        Ok(Conditional::Applied)
    } else {
        decode(row).map(Conditional::Exists)
    }
}

/// Every row a conditional statement or batch answers, by column name.
pub(crate) fn answer_rows(result: QueryResult) -> Result<Vec<NamedRow>, String> {
    let rows = result.into_rows_result().map_err(|e| e.to_string())?;
    let names: Vec<String> = rows
        .column_specs()
        .iter()
        .map(|spec| spec.name().to_string())
        .collect();
    rows.rows::<Row>()
        .map_err(|e| e.to_string())?
        .map(|row| {
            let row = row.map_err(|e| e.to_string())?;
            if row.columns.len() != names.len() {
                return Err(format!(
                    "{} values for {} columns",
                    row.columns.len(),
                    names.len()
                ));
            }
            Ok(NamedRow(names.iter().cloned().zip(row.columns).collect()))
        })
        .collect()
}

/// The single row a conditional statement answers, by column name.
pub(crate) fn answer_row(result: QueryResult) -> Result<NamedRow, String> {
    answer_rows(result)?
        .into_iter()
        .next()
        .ok_or_else(|| "a conditional statement answered no row".to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(columns: &[(&str, Option<CqlValue>)]) -> NamedRow {
        NamedRow(
            columns
                .iter()
                .map(|(n, v)| (n.to_string(), v.clone()))
                .collect(),
        )
    }

    fn decode(r: &NamedRow) -> Result<(String, i64), String> {
        Ok((r.text("id")?, r.bigint("n")?))
    }

    #[test]
    fn applied_in_either_server_layout() {
        // Cassandra: only [applied].
        let cassandra = row(&[(APPLIED, Some(CqlValue::Boolean(true)))]);
        assert_eq!(conditional(&cassandra, decode), Ok(Conditional::Applied));
        // ScyllaDB: every column, null.
        let scylla = row(&[
            (APPLIED, Some(CqlValue::Boolean(true))),
            ("id", None),
            ("n", None),
        ]);
        assert_eq!(conditional(&scylla, decode), Ok(Conditional::Applied));
    }

    #[test]
    fn not_applied_returns_the_existing_row() {
        let existing = row(&[
            ("n", Some(CqlValue::BigInt(7))),
            (APPLIED, Some(CqlValue::Boolean(false))),
            ("id", Some(CqlValue::Text("a".into()))),
        ]);
        assert_eq!(
            conditional(&existing, decode),
            Ok(Conditional::Exists(("a".to_string(), 7)))
        );
    }

    #[test]
    fn malformed_answers_are_errors() {
        let no_flag = row(&[("id", Some(CqlValue::Text("a".into())))]);
        assert!(conditional(&no_flag, decode).is_err());
        let missing = row(&[
            (APPLIED, Some(CqlValue::Boolean(false))),
            ("id", Some(CqlValue::Text("a".into()))),
        ]);
        let err = conditional(&missing, decode).expect_err("n is missing");
        assert!(err.contains("column n"), "{err}");
        let wrong = row(&[
            (APPLIED, Some(CqlValue::Boolean(false))),
            ("id", Some(CqlValue::Int(1))),
            ("n", Some(CqlValue::BigInt(1))),
        ]);
        assert!(conditional(&wrong, decode).is_err());
    }

    #[test]
    fn null_text_reads_as_empty_where_allowed() {
        let r = row(&[("display_name", None)]);
        assert_eq!(r.text_or_empty("display_name"), Ok(String::new()));
        assert!(r.text("display_name").is_err());
    }
}
