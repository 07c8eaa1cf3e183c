//! `GET /v1/changes`: the change feed (docs/http-api.md#get-v1changes), one
//! NDJSON line per commit, in seq order, with who made it; a heartbeat
//! line when nothing happened for a while. The engine reads; this only
//! streams and shapes lines.

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use axum::extract::rejection::QueryRejection;
use axum::extract::{ConnectInfo, Query, State};
use axum::http::{HeaderMap, HeaderValue, header};
use axum::response::{IntoResponse, Response};
use protosync_core::{ErrorCode, Seq};
use protosync_engine::changes::{ChangePage, MAX_CHANGES_PAGE};
use protosync_engine::{Engine, EngineError, Identity};
use protosync_store::CommitRecord;
use serde_json::{Value, json};
use tokio::sync::watch;

use super::error::ApiError;
use crate::AppState;

/// How long the feed waits for a commit before it sends a heartbeat line,
/// which also tells a filtered consumer how far the feed has looked.
pub(crate) const FEED_HEARTBEAT: Duration = Duration::from_secs(15);

/// `?after=SEQ&collections=a,b`
#[derive(Debug, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct FeedParams {
    #[serde(default)]
    after: Option<String>,
    #[serde(default)]
    collections: Option<String>,
}

pub(super) async fn changes(
    State(state): State<AppState>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    params: Result<Query<FeedParams>, QueryRejection>,
) -> Result<Response, ApiError> {
    let identity = state.identity(&headers, peer).await?;
    let Query(params) = params.map_err(|e| ApiError::new(ErrorCode::BadRequest, e.body_text()))?;
    let after = match params.after.as_deref() {
        None => Seq::ZERO,
        Some(text) => Seq(text.parse().map_err(|_| {
            ApiError::new(
                ErrorCode::BadRequest,
                format!("after must be a seq (uint64), got {text:?}"),
            )
        })?),
    };
    let collections: Option<Vec<String>> = params
        .collections
        .map(|list| list.split(',').map(str::to_owned).collect());
    if let Some(unknown) = collections
        .iter()
        .flatten()
        .find(|c| state.engine.registry().collection(c).is_none())
    {
        return Err(EngineError::UnknownCollection(unknown.clone()).into());
    }
    // The first read answers errors (the floor, access) as a status; later
    // ones can only end the stream with an error line.
    let first = state
        .engine
        .changes(&identity, after, collections.as_deref(), MAX_CHANGES_PAGE)
        .await?;
    let feed = Feed {
        engine: state.engine.clone(),
        identity,
        collections,
        after,
        lines: VecDeque::new(),
        committed: state.engine.committed(),
        closing: state.closing.clone(),
        done: false,
    };
    let mut feed = feed;
    feed.take(&first);
    let stream = futures::stream::unfold(feed, |mut feed| async move {
        let line = feed.next_line().await?;
        Some((Ok::<_, std::convert::Infallible>(line), feed))
    });
    let mut response = Body::from_stream(stream).into_response();
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/x-ndjson"),
    );
    Ok(response)
}

struct Feed {
    engine: Arc<Engine>,
    identity: Identity,
    collections: Option<Vec<String>>,
    /// The last seq read: the next read starts after it.
    after: Seq,
    lines: VecDeque<String>,
    committed: watch::Receiver<Seq>,
    closing: watch::Receiver<bool>,
    done: bool,
}

impl Feed {
    fn take(&mut self, page: &ChangePage) {
        // Invariant: the feed never moves back, so a consumer that resumes
        // after the last seq it received misses nothing and sees nothing twice.
        debug_assert!(page.through >= self.after);
        self.lines.extend(page.commits.iter().map(commit_line));
        self.after = page.through;
    }

    async fn next_line(&mut self) -> Option<String> {
        loop {
            if let Some(line) = self.lines.pop_front() {
                return Some(line);
            }
            if self.done {
                return None;
            }
            let read = self
                .engine
                .changes(
                    &self.identity,
                    self.after,
                    self.collections.as_deref(),
                    MAX_CHANGES_PAGE,
                )
                .await;
            match read {
                Ok(page) if page.through > self.after => {
                    self.take(&page);
                    continue;
                }
                Ok(_) => {}
                Err(e) => {
                    self.done = true;
                    return Some(error_line(&e));
                }
            }
            let after = self.after;
            tokio::select! {
                news = tokio::time::timeout(FEED_HEARTBEAT, self.committed.wait_for(|s| *s > after)) => {
                    match news {
                        Ok(Ok(_)) => {}
                        Ok(Err(_)) => return None,
                        Err(_) => return Some(line(&json!({"type": "heartbeat", "seq": after.to_string()}))),
                    }
                }
                _ = self.closing.wait_for(|c| *c) => return None,
            }
        }
    }
}

fn line(value: &Value) -> String {
    let mut text = value.to_string();
    text.push('\n');
    text
}

fn commit_line(commit: &CommitRecord) -> String {
    let changes: Vec<Value> = commit
        .changes
        .iter()
        .map(|c| {
            let mut change =
                json!({"collection": c.collection, "id": c.id, "version": c.version.to_string()});
            match &c.body {
                Some(body) => change["doc"] = body.clone(),
                None => change["deleted"] = json!(true),
            }
            change
        })
        .collect();
    line(&json!({
        "type": "commit",
        "seq": commit.seq.to_string(),
        "committedAtMs": commit.committed_at_ms.to_string(),
        "actor": commit.audit.actor,
        "requestId": commit.audit.request_id,
        "changes": changes,
    }))
}

fn error_line(e: &EngineError) -> String {
    let mut error = json!({"type": "error", "code": e.code().as_str(), "message": e.to_string()});
    if let EngineError::ChangesTruncated { floor } = e {
        error["floor"] = json!(floor.to_string());
    }
    line(&error)
}
