//! Diagnostics for whoever debugs lkpkg: with `-v 2`, the engine's debug events and spans
//! (each engine call, BuildKit solve, registry request and lock wait, with its timings when
//! it closes); with `-v 3`, trace events too. `LKPKG_LOG` chooses precisely, in tracing's
//! target syntax (`lkpkg_engine::registry=trace,lkpkg_engine=debug`), at any `-v`.
//!
//! They go to stderr through [`crate::output`], uncoloured, one line each. No span or event
//! records a credential: registry spans name references and digests, never headers, tokens
//! or passwords (`tests/e2e/registry.rs` checks that a password never prints at `-v 3`).

use tracing::level_filters::LevelFilter;
use tracing_subscriber::filter::Targets;
use tracing_subscriber::fmt::format::FmtSpan;
use tracing_subscriber::prelude::*;

/// Starts the diagnostics `-v` and `LKPKG_LOG` ask for (none at `-v 0` and `-v 1`).
pub fn init(verbose: u8) {
    let filter = match std::env::var("LKPKG_LOG") {
        Ok(spec) if !spec.trim().is_empty() => match spec.parse::<Targets>() {
            Ok(filter) => filter,
            Err(e) => {
                crate::output::errln!("warning: LKPKG_LOG `{spec}` is not a filter ({e}); ignored");
                return;
            }
        },
        _ => {
            let level = match verbose {
                0 | 1 => return,
                2 => LevelFilter::DEBUG,
                _ => LevelFilter::TRACE,
            };
            Targets::new()
                .with_target("lkpkg_engine", level)
                .with_target("lkpkg", level)
        }
    };
    let layer = tracing_subscriber::fmt::layer()
        .with_writer(|| Stderr)
        .with_ansi(false)
        .with_timer(tracing_subscriber::fmt::time::uptime())
        .with_span_events(FmtSpan::CLOSE);
    tracing_subscriber::registry()
        .with(layer)
        .with(filter)
        .init();
}

/// stderr, through the binary's one printer.
struct Stderr;

impl std::io::Write for Stderr {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        crate::output::err(&String::from_utf8_lossy(buf));
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}
