//! An existing Postgres table as a source for `protosync import`: every row
//! (read as `row_to_json`, in id order, from one read-only snapshot through
//! a cursor) becomes a document whose id is the `--id-column` value and
//! whose fields are the other columns, renamed by `--map`. The rows then go
//! through the same validation and batching as protosync's own format.

use std::collections::HashMap;

use anyhow::{Context, bail};
use serde_json::{Map, Value};
use sha2::{Digest, Sha256};
use tokio_postgres::{IsolationLevel, NoTls};

use crate::import::{Sink, short_hex};

/// Rows fetched from the cursor at a time (and held in memory at once).
const PAGE: usize = 5_000;

/// What `--from-postgres` names.
pub(crate) struct Source<'a> {
    /// The database to read from.
    pub(crate) url: &'a str,
    /// The table, `name` or `schema.name`.
    pub(crate) table: &'a str,
    /// The column holding the document id.
    pub(crate) id_column: &'a str,
    /// The collection the rows go to.
    pub(crate) collection: &'a str,
    /// Column → field renames.
    pub(crate) columns: HashMap<String, String>,
}

/// Imports every row of the table through `sink`.
pub(crate) async fn import(source: &Source<'_>, sink: &mut Sink) -> anyhow::Result<()> {
    if sink.registry.collection(source.collection).is_none() {
        bail!(
            "collection {:?} is not in the schema (choose one with --collection)",
            source.collection
        );
    }
    let (mut client, connection) = tokio_postgres::connect(source.url, NoTls)
        .await
        .context("cannot connect to --from-postgres")?;
    let driver = tokio::spawn(connection);
    let table = source
        .table
        .split('.')
        .map(quote)
        .collect::<Vec<_>>()
        .join(".");
    // One snapshot for the count and every page: rows written meanwhile
    // are not half-seen.
    let tx = client
        .build_transaction()
        .read_only(true)
        .isolation_level(IsolationLevel::RepeatableRead)
        .start()
        .await?;
    let total: i64 = tx
        .query_one(&format!("SELECT count(*) FROM {table}"), &[])
        .await
        .with_context(|| format!("cannot read table {}", source.table))?
        .get(0);
    sink.expect(total as u64);
    tx.batch_execute(&format!(
        "DECLARE import_rows NO SCROLL CURSOR FOR \
         SELECT row_to_json(t)::text FROM {table} t ORDER BY t.{}",
        quote(source.id_column)
    ))
    .await?;
    let mut number = 1;
    loop {
        let rows = tx
            .query(&format!("FETCH {PAGE} FROM import_rows"), &[])
            .await?;
        if rows.is_empty() {
            break;
        }
        let lines: Vec<String> = rows.iter().map(|row| row.get(0)).collect();
        // A page's batches are keyed by its content, so a rerun skips only
        // the pages that have not changed since they committed.
        let mut hasher = Sha256::new();
        for line in &lines {
            hasher.update(line.as_bytes());
            hasher.update(b"\n");
        }
        let key = format!("import:postgres:{}:{}", source.table, short_hex(hasher));
        let count = lines.len();
        sink.table(
            source.table,
            source.collection,
            &key,
            lines.into_iter().map(Ok),
            number,
            |line| document(line, source),
        )
        .await?;
        number += count;
    }
    tx.commit().await?;
    drop(client);
    driver.await??;
    Ok(())
}

/// `"name"`, with inner quotes doubled.
fn quote(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

/// One row's JSON → (id, document), before validation.
fn document(line: &str, source: &Source<'_>) -> Result<(String, Value), String> {
    let Ok(Value::Object(mut columns)) = serde_json::from_str::<Value>(line) else {
        return Err("not a JSON object".into());
    };
    let id = match columns.remove(source.id_column) {
        Some(Value::String(id)) => id,
        Some(Value::Number(id)) => id.to_string(),
        other => {
            return Err(format!(
                "id column {:?} is {}",
                source.id_column,
                other.map_or("missing".into(), |v| v.to_string())
            ));
        }
    };
    let doc: Map<String, Value> = columns
        .into_iter()
        .map(|(column, value)| {
            let field = source.columns.get(&column).cloned().unwrap_or(column);
            (field, value)
        })
        .collect();
    Ok((id, Value::Object(doc)))
}
