//! `lkpkg`: the binary is glue. It parses the command line ([`args`]), calls the engine, prints
//! what comes back, and classifies failures once ([`exit`]) into exit codes:
//! 0 success, 1 a build failed, 2 bad input or usage, 3 environment (engine, registry, git),
//! 70 internal error, 130 interrupted, 141 stdout closed (as `cat`: [`output`]).

mod args;
mod build_cmd;
mod builder_cmd;
mod cache_cmd;
mod diagnostics;
mod exit;
mod explain_cmd;
mod graph_cmd;
mod json;
mod output;
mod pkg;
mod progress;
mod registry_cmd;
mod waits;

use clap::Parser;

fn main() -> std::process::ExitCode {
    let cli = args::Cli::parse();
    exit::report_panics_as_bugs();
    diagnostics::init(cli.global.verbose);
    match std::panic::catch_unwind(|| run(cli)) {
        Ok(code) => code,
        // The hook has said what happened and asked for a report.
        Err(_) => std::process::ExitCode::from(exit::INTERNAL),
    }
}

fn run(cli: args::Cli) -> std::process::ExitCode {
    // A busy cache lock is said, never waited for in silence (as cargo's "Blocking").
    lkpkg_engine::ops::cache::report_waits_with(|message| output::errln!("    Blocking {message}"));
    let result = waits::configure().and_then(|()| match cli.command {
        args::Command::Pkg(pkg) => pkg::run(*pkg, &cli.global),
        args::Command::Cache(cmd) => cache_cmd::run(cmd, &cli.global),
        args::Command::Graph(graph) => graph_cmd::run(graph, &cli.global),
        args::Command::Explain(explain) => explain_cmd::run(explain, &cli.global),
    });
    match result {
        Ok(()) => std::process::ExitCode::SUCCESS,
        // `lkpkg … | head`: the reader is gone, nothing more to say (as `cat`).
        Err(error) if output::is_closed_pipe(&error) => {
            std::process::ExitCode::from(output::CLOSED_PIPE as u8)
        }
        Err(error) => exit::report(&error),
    }
}
