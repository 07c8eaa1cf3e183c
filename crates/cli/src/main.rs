//! The `protosync` binary: a thin shell over the engine and gateway crates.

mod codegen;
mod config;
mod convex;
mod dev_token;
mod export;
mod import;
mod memory;
mod pg_table;
mod run;
mod schedules;
mod schema_history;
mod schema_watch;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(
    name = "protosync",
    version,
    about = "A self-hosted realtime sync engine whose schema is your .proto files"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run locally on embedded SQLite, with the example schema unless --schema is given.
    Dev(DevCommand),
    /// Run in production: Postgres (or SQLite), from flags, PROTOSYNC_* variables or a config file.
    Serve(run::ServeArgs),
    /// Work with a schema.
    Schema {
        #[command(subcommand)]
        command: SchemaCommand,
    },
    /// Write every document, as of one seq, to JSONL files and a manifest.
    Export(export::ExportArgs),
    /// Load an export directory into a database, validated and batched.
    Import(import::ImportArgs),
    /// List a running server's schedules and their recent runs.
    Schedules(schedules::SchedulesArgs),
    /// Generate typed client code from a schema.
    Codegen {
        #[command(subcommand)]
        command: codegen::CodegenCommand,
    },
}

#[derive(clap::Args)]
#[command(args_conflicts_with_subcommands = true)]
struct DevCommand {
    #[command(subcommand)]
    command: Option<DevSubcommand>,
    #[command(flatten)]
    args: run::DevArgs,
}

#[derive(Subcommand)]
enum DevSubcommand {
    /// Print a token for any user that `protosync dev` accepts, to try rules without an auth setup.
    Token(dev_token::TokenArgs),
}

#[derive(Subcommand)]
enum SchemaCommand {
    /// Compile a schema directory and list its collections, or say what is wrong.
    Check {
        /// The schema directory (default: the built-in example).
        #[arg(long, env = "PROTOSYNC_SCHEMA")]
        schema: Option<PathBuf>,
        /// A database (postgres://… or sqlite:PATH) whose recorded schema to
        /// compare with: breaking changes are listed and exit non-zero.
        #[arg(long)]
        against: Option<String>,
        /// With --against: list breaking changes but exit zero.
        #[arg(long)]
        allow_breaking: bool,
    },
}

fn main() -> ExitCode {
    memory::start_purging();
    let cli = Cli::parse();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let result = runtime.block_on(async {
        match cli.command {
            Command::Dev(DevCommand {
                command: Some(DevSubcommand::Token(args)),
                ..
            }) => dev_token::print(&args),
            Command::Dev(DevCommand { args, .. }) => run::dev(args).await,
            Command::Serve(args) => run::serve(args).await,
            Command::Schema {
                command:
                    SchemaCommand::Check {
                        schema,
                        against,
                        allow_breaking,
                    },
            } => run::schema_check(schema.as_deref(), against.as_deref(), allow_breaking).await,
            Command::Codegen { command } => codegen::run(command),
            Command::Schedules(args) => schedules::run(args).await,
            Command::Export(args) => export::run(args).await,
            Command::Import(args) => import::run(args).await,
        }
    });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}
