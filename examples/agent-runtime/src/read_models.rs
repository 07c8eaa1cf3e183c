//! Folding the log into read models: each event changes exactly one
//! document, and the document's state after event N is a function of the
//! log up to N alone. That is what makes replays, duplicates and retries
//! safe: the same position always projects the same document.

use std::collections::BTreeMap;

use serde_json::{Value, json};

use crate::log::{Event, Logged};

/// One document as the projection API takes it: `doc` `None` deletes.
#[derive(Debug, Clone, PartialEq)]
pub struct Projected {
    /// `run_summary` or `codex_worker_summary`.
    pub collection: &'static str,
    /// The run or worker id.
    pub id: String,
    /// The event this state reflects.
    pub source_seq: u64,
    /// The whole document, proto JSON; `None` for a deletion.
    pub doc: Option<Value>,
}

impl Projected {
    /// The document as an item of `POST /v1/projections/{p}/apply`.
    pub fn to_json(&self) -> Value {
        let mut item = json!({
            "collection": self.collection,
            "id": self.id,
            "sourceSeq": self.source_seq.to_string(),
        });
        match &self.doc {
            Some(doc) => item["doc"] = doc.clone(),
            None => item["deleted"] = json!(true),
        }
        item
    }
}

/// The runtime's read models, folded event by event.
#[derive(Debug, Clone, Default)]
pub struct ReadModels {
    runs: BTreeMap<String, Value>,
    workers: BTreeMap<String, Value>,
    cost_cents: BTreeMap<String, u64>,
}

/// A made-up but deterministic clock: event N happened N seconds after the
/// log began.
fn at(seq: u64) -> String {
    let (h, m, s) = (seq / 3600, (seq / 60) % 60, seq % 60);
    format!("2026-01-01T{:02}:{m:02}:{s:02}Z", h % 24)
}

impl ReadModels {
    /// Folds `logged` in and returns the one document it changed.
    pub fn apply(&mut self, logged: &Logged) -> Projected {
        let seq = logged.seq;
        let now = at(seq);
        match &logged.event {
            Event::RunQueued { run, owner, title } => {
                self.runs.insert(
                    run.clone(),
                    json!({"ownerId": owner, "title": title, "status": "RUN_STATUS_QUEUED",
                           "startedAt": now, "labels": {"source": "simulator"}}),
                );
                self.run(run, seq, &now)
            }
            Event::RunStarted { run, worker } => {
                self.runs.get_mut(run).expect("a run is queued first")["status"] =
                    json!("RUN_STATUS_RUNNING");
                self.runs.get_mut(run).expect("a run is queued first")["labels"]["worker"] =
                    json!(worker);
                self.run(run, seq, &now)
            }
            Event::RunProgressed { run, cost_cents } => {
                *self.cost_cents.entry(run.clone()).or_default() += cost_cents;
                let cents = self.cost_cents[run];
                self.runs.get_mut(run).expect("a run is queued first")["costUsd"] =
                    json!(cents as f64 / 100.0);
                self.run(run, seq, &now)
            }
            Event::RunEnded { run, succeeded } => {
                let status = if *succeeded {
                    "RUN_STATUS_SUCCEEDED"
                } else {
                    "RUN_STATUS_FAILED"
                };
                self.runs.get_mut(run).expect("a run is queued first")["status"] = json!(status);
                self.run(run, seq, &now)
            }
            Event::WorkerHeartbeat { worker, region } => {
                let summary = self.workers.entry(worker.clone()).or_insert_with(
                    || json!({"ownerId": "ops", "status": "WORKER_STATUS_STARTING"}),
                );
                summary["status"] = json!(if summary["heartbeatAt"].is_null() {
                    "WORKER_STATUS_STARTING"
                } else {
                    "WORKER_STATUS_IDLE"
                });
                summary["heartbeatAt"] = json!(now);
                summary["lastEventSeq"] = json!(seq.to_string());
                summary["host"] = json!({"hostname": format!("{worker}.local"), "region": region});
                Projected {
                    collection: "codex_worker_summary",
                    id: worker.clone(),
                    source_seq: seq,
                    doc: Some(summary.clone()),
                }
            }
            Event::WorkerRetired { worker } => {
                self.workers.remove(worker);
                Projected {
                    collection: "codex_worker_summary",
                    id: worker.clone(),
                    source_seq: seq,
                    doc: None,
                }
            }
        }
    }

    fn run(&mut self, run: &str, seq: u64, now: &str) -> Projected {
        let summary = self.runs.get_mut(run).expect("a run is queued first");
        let count = summary["eventCount"]
            .as_str()
            .and_then(|c| c.parse::<u64>().ok())
            .unwrap_or(0);
        summary["eventCount"] = json!((count + 1).to_string());
        summary["lastEventSeq"] = json!(seq.to_string());
        summary["updatedAt"] = json!(now);
        Projected {
            collection: "run_summary",
            id: run.to_owned(),
            source_seq: seq,
            doc: Some(summary.clone()),
        }
    }
}
