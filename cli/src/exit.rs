//! Failures, classified once into exit codes and printed once, on stderr.

use std::process::ExitCode;

use lkpkg_engine::ops::BuildError;
use lkpkg_engine::ops::OpError;
use lkpkg_engine::ops::builders::EngineError;
use lkpkg_engine::ops::cache::StoreError;
use lkpkg_engine::ops::registry::RegistryError;
use lkpkg_engine::ops::registry::TransferError;
use lkpkg_engine::ops::{Classify, Error, ErrorKind};

/// Exit codes (README, ARCHITECTURE.md).
pub const BUILD_FAILED: u8 = 1;
pub const BAD_INPUT: u8 = 2;
pub const ENVIRONMENT: u8 = 3;
/// lkpkg's own fault (a bug: the message asks for a report).
pub const INTERNAL: u8 = 70;

/// An error the binary raises itself, already classified.
#[derive(Debug)]
pub struct Classified {
    pub kind: ErrorKind,
    pub message: String,
}

impl std::fmt::Display for Classified {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for Classified {}

pub const INTERRUPTED: u8 = 130;

/// A bad-input error raised by the binary.
pub fn bad_input(message: impl Into<String>) -> anyhow::Error {
    Classified {
        kind: ErrorKind::BadInput,
        message: message.into(),
    }
    .into()
}

/// The kind of the first classified error in the chain: the engine's errors say their own
/// ([`Classify`], decided where each is made), the binary's own are [`Classified`]. What no
/// one classified (a file the binary could not read) is the environment's.
fn kind_of(error: &anyhow::Error) -> ErrorKind {
    fn classified<E: Classify + std::error::Error + 'static>(
        cause: &(dyn std::error::Error + 'static),
    ) -> Option<ErrorKind> {
        cause.downcast_ref::<E>().map(Classify::kind)
    }
    for cause in error.chain() {
        let kind = cause
            .downcast_ref::<OpError>()
            .map(OpError::kind)
            .or_else(|| cause.downcast_ref::<Classified>().map(|c| c.kind))
            .or_else(|| classified::<Error>(cause))
            .or_else(|| classified::<BuildError>(cause))
            .or_else(|| classified::<StoreError>(cause))
            .or_else(|| classified::<RegistryError>(cause))
            .or_else(|| classified::<TransferError>(cause))
            .or_else(|| classified::<EngineError>(cause));
        if let Some(kind) = kind {
            return kind;
        }
    }
    ErrorKind::Environment
}

/// The message of an error and its causes, as `error: …` then one `caused by: …` line per
/// cause (a cause whose text its parent already shows is not repeated).
pub fn message(error: &anyhow::Error) -> String {
    let mut text = format!("error: {error}");
    let mut shown = error.to_string();
    for cause in error.chain().skip(1) {
        let line = cause.to_string();
        if shown.contains(&line) {
            continue;
        }
        text.push_str(&format!("\ncaused by: {line}"));
        shown = line;
    }
    text
}

/// Prints `error` with its causes and returns its exit code.
pub fn report(error: &anyhow::Error) -> ExitCode {
    crate::output::errln!("{}", message(error));
    ExitCode::from(match kind_of(error) {
        ErrorKind::BadInput => BAD_INPUT,
        ErrorKind::Environment => ENVIRONMENT,
        ErrorKind::BuildFailed => BUILD_FAILED,
        ErrorKind::Internal => INTERNAL,
        ErrorKind::Interrupted => INTERRUPTED,
    })
}

/// A panic is a bug in lkpkg, not the user's input or machine: it is said as such, once, with
/// where it happened and what to report, and the process exits with [`INTERNAL`] (`main`
/// catches the unwind), never Rust's 101 with a bare backtrace. A panic inside a build task is
/// said the same way, and the scheduler reports the task as an internal error.
/// `RUST_BACKTRACE=1` adds the backtrace.
pub fn report_panics_as_bugs() {
    std::panic::set_hook(Box::new(|info| {
        let message = info
            .payload()
            .downcast_ref::<&str>()
            .map(|s| (*s).to_owned())
            .or_else(|| info.payload().downcast_ref::<String>().cloned())
            .unwrap_or_else(|| "(no message)".to_owned());
        let location = info
            .location()
            .map(|l| format!(" at {}:{}", l.file(), l.line()))
            .unwrap_or_default();
        let backtrace = match std::env::var("RUST_BACKTRACE").as_deref() {
            Ok("1" | "full") => format!("\n{}", std::backtrace::Backtrace::force_capture()),
            _ => String::new(),
        };
        crate::output::errln!(
            "error: internal error (a bug in lkpkg {}): {message}{location}\n\
             please report it with the command you ran and this message{backtrace}",
            env!("CARGO_PKG_VERSION")
        );
    }));
}
