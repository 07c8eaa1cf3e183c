//! The schema a database last ran against the one starting: breaking
//! changes (`protosync_schema::compare`) are refused unless allowed, and an
//! accepted schema is recorded for the next start to compare with.

use anyhow::anyhow;
use protosync_schema::{Registry, SchemaChange, compare_recorded};
use protosync_store::Store;

/// The changes from the schema `store` last ran to `registry`; none for a
/// database that never recorded one.
pub(crate) async fn changes(
    store: &dyn Store,
    registry: &Registry,
) -> anyhow::Result<Vec<SchemaChange>> {
    Ok(match store.recorded_schema().await? {
        Some(recorded) => compare_recorded(&recorded.descriptor_set, registry.descriptor_pool())?,
        None => Vec::new(),
    })
}

/// Refuses `changes` if any is breaking and breaking is not allowed; allowed
/// ones are logged at warn.
pub(crate) fn refuse_breaking(
    changes: &[SchemaChange],
    allow_breaking: bool,
) -> anyhow::Result<()> {
    let breaking: Vec<&SchemaChange> = changes.iter().filter(|c| c.is_breaking()).collect();
    if breaking.is_empty() {
        return Ok(());
    }
    if !allow_breaking {
        return Err(anyhow!(
            "the schema makes breaking changes to the one the database last ran (--allow-breaking starts anyway): {}",
            list(&breaking, "; ")
        ));
    }
    for change in breaking {
        tracing::warn!(%change, "breaking schema change allowed (--allow-breaking)");
    }
    Ok(())
}

/// Compares, refuses or records: what `serve` and `dev` do before starting.
pub(crate) async fn accept(
    store: &dyn Store,
    registry: &Registry,
    allow_breaking: bool,
) -> anyhow::Result<()> {
    refuse_breaking(&changes(store, registry).await?, allow_breaking)?;
    store.record_schema(registry).await?;
    Ok(())
}

/// The changes, for a person, separated by `separator`.
pub(crate) fn list(changes: &[&SchemaChange], separator: &str) -> String {
    changes
        .iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join(separator)
}
