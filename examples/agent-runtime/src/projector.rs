//! The projector: reads the log from where protosync's checkpoint says it
//! stopped, folds it, and sends the documents in batches. It keeps nothing
//! of its own that a crash could lose: on start it asks for the checkpoint
//! and re-folds the log up to it.

use anyhow::{Context, bail};
use serde_json::{Value, json};

use crate::log::Logged;
use crate::read_models::{Projected, ReadModels};

/// The projector's name in protosync.
pub const PROJECTOR: &str = "agent-runtime";

/// A projector on one server, positioned in the log.
pub struct Projector {
    http: reqwest::Client,
    base: String,
    models: ReadModels,
    /// The last log position folded.
    position: u64,
}

/// How long one request may take before the projector gives up on it.
const REQUEST_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);

impl Projector {
    /// Starts after the checkpoint of the server at `base`
    /// (`http://host:port`), re-folding `log` up to it.
    pub async fn resume(base: &str, log: &[Logged]) -> anyhow::Result<Projector> {
        let http = reqwest::Client::builder()
            .timeout(REQUEST_TIMEOUT)
            .build()?;
        let checkpoint: Value = http
            .get(format!("{base}/v1/projections/{PROJECTOR}"))
            .send()
            .await?
            .error_for_status()?
            .json()
            .await?;
        let position: u64 = checkpoint["sourceSeq"]
            .as_str()
            .context("the checkpoint has a sourceSeq")?
            .parse()?;
        let mut models = ReadModels::default();
        for logged in log.iter().take_while(|l| l.seq <= position) {
            models.apply(logged);
        }
        Ok(Projector {
            http,
            base: base.to_owned(),
            models,
            position,
        })
    }

    /// The last log position folded (and, once sent, acknowledged).
    pub fn position(&self) -> u64 {
        self.position
    }

    /// Folds the next `max` events after the position into a batch, without
    /// sending it; [`Projector::sent`] moves the position once it is applied.
    pub fn next_batch(&self, log: &[Logged], max: usize) -> (Vec<Projected>, ReadModels) {
        let mut models = self.models.clone();
        let batch = log
            .iter()
            .filter(|l| l.seq > self.position)
            .take(max)
            .map(|l| models.apply(l))
            .collect();
        (batch, models)
    }

    /// Records that `batch` (folded into `models`) was applied.
    pub fn sent(&mut self, batch: &[Projected], models: ReadModels) {
        if let Some(last) = batch.last() {
            self.position = last.source_seq;
            self.models = models;
        }
    }

    /// Sends `batch` as one commit and returns each document's status.
    pub async fn send(&self, batch: &[Projected]) -> anyhow::Result<Vec<String>> {
        send(&self.http, &self.base, "apply", batch).await
    }

    /// Projects everything after the position, `batch` events at a time.
    pub async fn run(&mut self, log: &[Logged], batch: usize) -> anyhow::Result<()> {
        loop {
            let (next, models) = self.next_batch(log, batch);
            if next.is_empty() {
                return Ok(());
            }
            self.send(&next).await?;
            self.sent(&next, models);
        }
    }
}

/// POSTs `batch` to `/v1/projections/{PROJECTOR}/{path}`; the statuses of
/// an apply, or nothing for a stage.
pub async fn send(
    http: &reqwest::Client,
    base: &str,
    path: &str,
    batch: &[Projected],
) -> anyhow::Result<Vec<String>> {
    let documents: Vec<Value> = batch.iter().map(Projected::to_json).collect();
    let response = http
        .post(format!("{base}/v1/projections/{PROJECTOR}/{path}"))
        .json(&json!({ "documents": documents }))
        .send()
        .await?;
    let status = response.status();
    let answer: Value = response.json().await?;
    if !status.is_success() {
        bail!("{path} answered {status}: {answer}");
    }
    Ok(answer["documents"]
        .as_array()
        .map(|d| {
            d.iter()
                .map(|d| d["status"].as_str().unwrap_or_default().to_owned())
                .collect()
        })
        .unwrap_or_default())
}

/// Rebuilds the projector's documents from the whole `log` on the server
/// at `base`: stage everything, then swap it in with one commit. Returns
/// the swap's answer.
pub async fn rebuild(base: &str, log: &[Logged], batch: usize) -> anyhow::Result<Value> {
    let http = reqwest::Client::builder()
        .timeout(REQUEST_TIMEOUT)
        .build()?;
    let root = format!("{base}/v1/projections/{PROJECTOR}/rebuild");
    let rebuild: Value = http
        .post(&root)
        .send()
        .await?
        .error_for_status()?
        .json()
        .await?;
    let generation = rebuild["generation"]
        .as_str()
        .context("a rebuild has a generation")?
        .to_owned();
    let mut models = ReadModels::default();
    let folded: Vec<Projected> = log.iter().map(|l| models.apply(l)).collect();
    for chunk in folded.chunks(batch) {
        send(&http, base, &format!("rebuild/{generation}/stage"), chunk).await?;
    }
    Ok(http
        .post(format!("{root}/{generation}/swap"))
        .send()
        .await?
        .error_for_status()?
        .json()
        .await?)
}
