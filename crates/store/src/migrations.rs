//! Which migrations a database still needs, decided the same way for both
//! stores: migration N (from 1) is the Nth entry of a store's list, applied
//! once and in order, and recorded in `protosync_migrations`. The SQL is
//! each store's own (`sqlite/migrations.rs`, `postgres/migrations.rs`);
//! this module never runs any.

use crate::StoreError;

/// The migrations a database at version `applied` still needs, as
/// (version, SQL), in order. Refuses a database that a newer protosync has
/// migrated further than `migrations` reaches: this code cannot know what
/// those tables mean.
pub(crate) fn pending(
    applied: i64,
    migrations: &'static [&'static str],
) -> Result<impl Iterator<Item = (usize, &'static str)>, StoreError> {
    if applied as usize > migrations.len() {
        return Err(StoreError::Internal(format!(
            "the database was migrated to version {applied} by a newer protosync; this one knows {}",
            migrations.len()
        )));
    }
    Ok((1..).zip(migrations.iter().copied()).skip(applied as usize))
}

/// The error for migration `version` failing with `error`.
pub(crate) fn failed(version: usize, error: impl std::fmt::Display) -> StoreError {
    StoreError::Internal(format!("migration {version}: {error}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    const MIGRATIONS: &[&str] = &["first", "second", "third"];

    #[test]
    fn a_database_gets_the_migrations_after_its_version_numbered_from_one() {
        let all: Vec<_> = pending(0, MIGRATIONS).unwrap().collect();
        assert_eq!(all, [(1, "first"), (2, "second"), (3, "third")]);
        let rest: Vec<_> = pending(2, MIGRATIONS).unwrap().collect();
        assert_eq!(rest, [(3, "third")]);
        assert_eq!(pending(3, MIGRATIONS).unwrap().count(), 0);
    }

    #[test]
    fn a_database_migrated_by_a_newer_protosync_is_refused() {
        let Err(StoreError::Internal(message)) = pending(4, MIGRATIONS).map(|_| ()) else {
            panic!("a database at version 4 must be refused by code that knows 3");
        };
        assert!(message.contains("version 4"), "{message}");
    }
}
