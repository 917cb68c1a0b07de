//! Command line: argument parsing and the commands of DESIGN §7.
//!
//! Commands return an [`Outcome`] (exit code) or an `anyhow` error; `main`
//! prints the error chain and exits 1. Usage errors exit 2 (clap's code).

mod args;
mod bench;
mod commands;
mod context;
mod enrichment;
mod explain;
mod follow;
mod groups;
mod init;
mod lambda;
mod queue;

pub use args::{Cli, Command, EnrichmentCommand, Format, GlobalArgs, Outcome};

use clap::Parser;
use std::process::ExitCode;

/// Parses arguments, runs the command and maps the result to an exit code.
pub fn main() -> ExitCode {
    let cli = Cli::parse();
    match commands::dispatch(cli) {
        Ok(outcome) => ExitCode::from(outcome as u8),
        Err(err) => {
            if is_broken_pipe(&err) {
                return ExitCode::SUCCESS;
            }
            eprintln!("error: {err:#}");
            if err.downcast_ref::<context::UsageError>().is_some() {
                return ExitCode::from(Outcome::Usage as u8);
            }
            ExitCode::from(Outcome::Failed as u8)
        }
    }
}

fn is_broken_pipe(err: &anyhow::Error) -> bool {
    err.chain().any(|e| {
        e.downcast_ref::<std::io::Error>()
            .is_some_and(|io| io.kind() == std::io::ErrorKind::BrokenPipe)
    })
}
