//! Which declared indexes a store must build or drop at start-up.

use std::sync::Arc;

use protosync_schema::{Collection, IndexDef};

/// The difference between the indexes a store has built (collection, index,
/// fingerprint) and the ones the schema declares.
pub(crate) struct IndexChanges<'s> {
    /// (collection, index) built but no longer declared as they are.
    pub drop: Vec<(String, String)>,
    /// Declared but not built (or built from another definition).
    pub build: Vec<(&'s Arc<Collection>, &'s IndexDef)>,
}

impl<'s> IndexChanges<'s> {
    pub(crate) fn between(
        existing: &[(String, String, String)],
        collections: &'s [Arc<Collection>],
    ) -> IndexChanges<'s> {
        let declared: Vec<(&Arc<Collection>, &IndexDef)> = collections
            .iter()
            .flat_map(|c| c.indexes.iter().map(move |i| (c, i)))
            .collect();
        let same = |c: &Arc<Collection>, i: &IndexDef, (ec, ei, ef): &(String, String, String)| {
            c.name == *ec && i.name == *ei && i.fingerprint() == *ef
        };
        IndexChanges {
            drop: existing
                .iter()
                .filter(|e| !declared.iter().any(|(c, i)| same(c, i, e)))
                .map(|(c, i, _)| (c.clone(), i.clone()))
                .collect(),
            build: declared
                .into_iter()
                .filter(|(c, i)| !existing.iter().any(|e| same(c, i, e)))
                .collect(),
        }
    }
}
