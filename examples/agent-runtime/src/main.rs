//! `cargo run -p protosync-example-agent-runtime -- [URL] [EVENTS] [SEED]`:
//! simulates a runtime's log and projects it into the protosync server at
//! URL (default `http://127.0.0.1:4000`, as `protosync dev` listens),
//! resuming from the server's checkpoint.

use protosync_example_agent_runtime::{log, projector::Projector};

/// Events projected per commit.
const BATCH: usize = 100;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let mut args = std::env::args().skip(1);
    let base = args
        .next()
        .unwrap_or_else(|| "http://127.0.0.1:4000".into());
    let events: usize = args.next().map_or(Ok(1_000), |a| a.parse())?;
    let seed: u64 = args.next().map_or(Ok(1), |a| a.parse())?;
    let log = log::simulate(seed, events);
    let mut projector = Projector::resume(&base, &log).await?;
    let from = projector.position();
    projector.run(&log, BATCH).await?;
    println!(
        "projected events {}..={} into {base}",
        from + 1,
        projector.position()
    );
    Ok(())
}
