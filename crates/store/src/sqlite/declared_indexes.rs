//! Building declared indexes on SQLite at start-up, on the writer thread:
//! drops the entries of indexes no longer declared as they are and builds
//! new or changed ones from the stored documents, in one transaction that
//! no commit can interleave with. Which indexes to build or drop is
//! decided in [`crate::indexes`]; this only runs the statements.

use std::sync::Arc;

use protosync_schema::Collection;
use rusqlite::{Connection, TransactionBehavior, params};

use super::reads::parse_body;
use crate::StoreError;
use crate::declared_indexes::IndexChanges;

pub(super) fn sync_indexes(
    conn: &mut Connection,
    collections: &[Arc<Collection>],
) -> Result<(), StoreError> {
    let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
    let existing: Vec<(String, String, String)> = tx
        .prepare("SELECT collection, index_name, fingerprint FROM protosync_indexes")?
        .query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))?
        .collect::<Result<_, _>>()?;
    let changes = IndexChanges::between(&existing, collections);
    for (collection, index) in &changes.drop {
        tx.execute(
            "DELETE FROM protosync_index_entries WHERE collection = ?1 AND index_name = ?2",
            params![collection, index],
        )?;
        tx.execute(
            "DELETE FROM protosync_indexes WHERE collection = ?1 AND index_name = ?2",
            params![collection, index],
        )?;
    }
    for (collection, index) in changes.build {
        tracing::info!(collection = %collection.name, index = %index.name, "building index");
        let docs: Vec<(String, String)> = tx
            .prepare("SELECT id, body FROM protosync_documents WHERE collection = ?1")?
            .query_map([&collection.name], |r| Ok((r.get(0)?, r.get(1)?)))?
            .collect::<Result<_, _>>()?;
        let mut insert = tx.prepare("INSERT INTO protosync_index_entries (collection, index_name, key, doc_id) VALUES (?1, ?2, ?3, ?4)")?;
        for (id, body) in docs {
            let key = protosync_query::key::index_key(index, &id, &parse_body(&body)?);
            insert.execute(params![collection.name, index.name, key, id])?;
        }
        tx.execute(
            "INSERT INTO protosync_indexes (collection, index_name, fingerprint) VALUES (?1, ?2, ?3)",
            params![collection.name, index.name, index.fingerprint()],
        )?;
    }
    tx.commit()?;
    Ok(())
}
