//! `protosync codegen ts`: typed TypeScript from a schema directory.

use std::path::{Path, PathBuf};

use anyhow::{Context, anyhow};
use clap::{Args, Subcommand};
use protosync_codegen::GENERATED_FILE_NAME;
use protosync_schema::Registry;

#[derive(Subcommand)]
pub(crate) enum CodegenCommand {
    /// Write `api.ts` (types and the typed `api` object) for the `protosync` npm package.
    Ts(TsArgs),
}

#[derive(Args)]
pub(crate) struct TsArgs {
    /// The schema directory.
    #[arg(long, env = "PROTOSYNC_SCHEMA")]
    schema: PathBuf,
    /// The directory to write `api.ts` into (created if missing).
    #[arg(long)]
    out: PathBuf,
    /// Write nothing; fail when the file in --out differs from what would be generated.
    #[arg(long)]
    check: bool,
}

pub(crate) fn run(command: CodegenCommand) -> anyhow::Result<()> {
    match command {
        CodegenCommand::Ts(args) => ts(&args),
    }
}

fn ts(args: &TsArgs) -> anyhow::Result<()> {
    let registry = Registry::load_dir(&args.schema)
        .map_err(|e| anyhow!("schema {}: {e}", args.schema.display()))?;
    let text = protosync_codegen::typescript(&registry)
        .map_err(|e| anyhow!("schema {}: {e}", args.schema.display()))?;
    let path = args.out.join(GENERATED_FILE_NAME);
    if args.check {
        return check(&path, &text);
    }
    std::fs::create_dir_all(&args.out)
        .with_context(|| format!("cannot create {}", args.out.display()))?;
    std::fs::write(&path, &text).with_context(|| format!("cannot write {}", path.display()))?;
    println!(
        "wrote {} (schema {})",
        path.display(),
        registry.fingerprint()
    );
    Ok(())
}

fn check(path: &Path, expected: &str) -> anyhow::Result<()> {
    match std::fs::read_to_string(path) {
        Ok(found) if found == expected => {
            println!("{} is up to date", path.display());
            Ok(())
        }
        Ok(_) => Err(anyhow!(
            "{} is stale: run `protosync codegen ts` without --check to regenerate it",
            path.display()
        )),
        Err(e) => Err(anyhow!(
            "{} cannot be read ({e}): run `protosync codegen ts` without --check to generate it",
            path.display()
        )),
    }
}
