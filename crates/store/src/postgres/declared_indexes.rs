//! Building declared indexes on Postgres at start-up: drops the entries of
//! indexes no longer declared as they are and builds new or changed ones
//! from the stored documents, while holding the counter row so that no
//! commit (from any process) writes a document meanwhile. Which indexes to
//! build or drop is decided in [`crate::indexes`]; this only runs the
//! statements.

use std::sync::Arc;

use deadpool_postgres::Pool;
use protosync_schema::Collection;
use serde_json::Value;

use crate::StoreError;
use crate::declared_indexes::IndexChanges;

pub(super) async fn sync_indexes(
    pool: &Pool,
    collections: &[Arc<Collection>],
) -> Result<(), StoreError> {
    let mut client = pool.get().await?;
    let tx = client.transaction().await?;
    // Holding the counter row keeps writers (in any process) out while
    // indexes are rebuilt, so no write misses an index entry.
    tx.execute("SELECT seq FROM protosync_head FOR UPDATE", &[])
        .await?;
    let existing: Vec<(String, String, String)> = tx
        .query(
            "SELECT collection, index_name, fingerprint FROM protosync_indexes",
            &[],
        )
        .await?
        .iter()
        .map(|r| (r.get(0), r.get(1), r.get(2)))
        .collect();
    let changes = IndexChanges::between(&existing, collections);
    for (collection, index) in &changes.drop {
        tx.execute(
            "DELETE FROM protosync_index_entries WHERE collection = $1 AND index_name = $2",
            &[collection, index],
        )
        .await?;
        tx.execute(
            "DELETE FROM protosync_indexes WHERE collection = $1 AND index_name = $2",
            &[collection, index],
        )
        .await?;
    }
    for (collection, index) in changes.build {
        tracing::info!(collection = %collection.name, index = %index.name, "building index");
        let rows = tx
            .query(
                "SELECT id, body FROM protosync_documents WHERE collection = $1",
                &[&collection.name],
            )
            .await?;
        let insert = tx
            .prepare("INSERT INTO protosync_index_entries (collection, index_name, key, doc_id) VALUES ($1, $2, $3, $4)")
            .await?;
        for row in rows {
            let id: String = row.get(0);
            let body: Value = row.get(1);
            let key = protosync_query::key::index_key(index, &id, &body);
            tx.execute(&insert, &[&collection.name, &index.name, &key, &id])
                .await?;
        }
        tx.execute(
            "INSERT INTO protosync_indexes (collection, index_name, fingerprint) VALUES ($1, $2, $3)",
            &[&collection.name, &index.name, &index.fingerprint()],
        )
        .await?;
    }
    tx.commit().await?;
    Ok(())
}
