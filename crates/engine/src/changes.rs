//! The change feed's reads: committed changes after a seq, in seq order,
//! with who made each commit, filtered to the collections asked for and
//! the caller may use. Only services read it: it carries every document's
//! body, past every read rule.

use protosync_auth::Identity;
use protosync_core::{ErrorCode, Seq};
use protosync_store::{CommitRecord, Store, StoreError};

use crate::error::EngineError;

/// Commits one feed read returns at most.
pub const MAX_CHANGES_PAGE: usize = 500;

/// One read of the feed.
#[derive(Debug, Clone, PartialEq)]
pub struct ChangePage {
    /// The commits found, each with its matching changes only.
    pub commits: Vec<CommitRecord>,
    /// The last seq the read covered (commits up to it without matching
    /// changes were skipped): read on after it.
    pub through: Seq,
}

pub(crate) async fn read(
    store: &dyn Store,
    identity: &Identity,
    after: Seq,
    collections: Option<&[String]>,
    max: usize,
) -> Result<ChangePage, EngineError> {
    let allowed = match identity {
        Identity::Service { collections, .. } => collections
            .as_ref()
            .filter(|list| !list.iter().any(|c| c == "*")),
        _ => {
            return Err(EngineError::Forbidden {
                code: ErrorCode::PermissionDenied,
                message: "the change feed is for services only".into(),
            });
        }
    };
    if let (Some(allowed), Some(asked)) = (allowed, collections)
        && let Some(refused) = asked.iter().find(|c| !allowed.contains(c))
    {
        return Err(EngineError::Forbidden {
            code: ErrorCode::PermissionDenied,
            message: format!("this service may not read collection {refused:?}"),
        });
    }
    let filter = collections
        .map(<[String]>::to_vec)
        .or_else(|| allowed.cloned());
    let log = store
        .read_log(after, max.clamp(1, MAX_CHANGES_PAGE))
        .await
        .map_err(|e| match e {
            StoreError::LogTruncated { floor } => EngineError::ChangesTruncated { floor },
            other => other.into(),
        })?;
    let through = log.last().map_or(after, |c| c.seq);
    let commits = match filter {
        None => log,
        Some(names) => log
            .into_iter()
            .filter_map(|mut commit| {
                commit.changes.retain(|c| names.contains(&c.collection));
                (!commit.changes.is_empty()).then_some(commit)
            })
            .collect(),
    };
    Ok(ChangePage { commits, through })
}
