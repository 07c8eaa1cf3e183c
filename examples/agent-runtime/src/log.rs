//! The runtime's own event log: the truth its read models are derived
//! from. Here it lives in memory and is made up by [`simulate`]; a real
//! runtime keeps it in its own database. Positions start at 1 and have no
//! gaps, like a log table's sequence.

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

/// One event of the runtime.
#[derive(Debug, Clone, PartialEq)]
pub enum Event {
    /// A run was queued by `owner`.
    RunQueued {
        /// The run.
        run: String,
        /// Who started it.
        owner: String,
        /// What it does.
        title: String,
    },
    /// A worker picked the run up.
    RunStarted {
        /// The run.
        run: String,
        /// The worker running it.
        worker: String,
    },
    /// The run did some work and spent money doing it.
    RunProgressed {
        /// The run.
        run: String,
        /// What that step cost, in cents.
        cost_cents: u64,
    },
    /// The run ended.
    RunEnded {
        /// The run.
        run: String,
        /// Whether it succeeded.
        succeeded: bool,
    },
    /// A worker reported in.
    WorkerHeartbeat {
        /// The worker.
        worker: String,
        /// Where it runs.
        region: String,
    },
    /// A worker left for good: its summary is removed.
    WorkerRetired {
        /// The worker.
        worker: String,
    },
}

/// An event at its position in the log.
#[derive(Debug, Clone, PartialEq)]
pub struct Logged {
    /// Its position, from 1.
    pub seq: u64,
    /// What happened.
    pub event: Event,
}

/// A log of `events` events, the same for the same `seed`.
pub fn simulate(seed: u64, events: usize) -> Vec<Logged> {
    let mut rng = StdRng::seed_from_u64(seed);
    let workers: Vec<String> = (0..6).map(|w| format!("worker-{w}")).collect();
    let mut runs: Vec<String> = Vec::new();
    let mut log = Vec::with_capacity(events);
    for seq in 1..=events as u64 {
        let worker = workers[rng.random_range(0..workers.len())].clone();
        let event = match rng.random_range(0..100) {
            0..15 => {
                let run = format!("run-{}", runs.len());
                runs.push(run.clone());
                Event::RunQueued {
                    run,
                    owner: format!("user-{}", rng.random_range(0..4)),
                    title: format!("task {}", rng.random_range(0..1000)),
                }
            }
            _ if runs.is_empty() => Event::WorkerHeartbeat {
                worker,
                region: "eu-west".into(),
            },
            15..30 => Event::RunStarted {
                run: runs[rng.random_range(0..runs.len())].clone(),
                worker,
            },
            30..60 => Event::RunProgressed {
                run: runs[rng.random_range(0..runs.len())].clone(),
                cost_cents: rng.random_range(1..500),
            },
            60..70 => Event::RunEnded {
                run: runs[rng.random_range(0..runs.len())].clone(),
                succeeded: rng.random_bool(0.8),
            },
            70..97 => Event::WorkerHeartbeat {
                worker,
                region: ["eu-west", "us-east"][rng.random_range(0..2)].into(),
            },
            _ => Event::WorkerRetired { worker },
        };
        log.push(Logged { seq, event });
    }
    log
}
