//! Failures, classified once into exit codes and printed once, on stderr.

use std::process::ExitCode;

use lkpkg_engine::error::{Error, ErrorKind};

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

/// The user interrupted the command (Ctrl-C): exit code 130.
#[derive(Debug)]
pub struct Interrupted;

impl std::fmt::Display for Interrupted {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("interrupted; running builds were cancelled")
    }
}

impl std::error::Error for Interrupted {}

pub const INTERRUPTED: u8 = 130;

/// A bad-input error raised by the binary.
pub fn bad_input(message: impl Into<String>) -> anyhow::Error {
    Classified {
        kind: ErrorKind::BadInput,
        message: message.into(),
    }
    .into()
}

fn kind_of(error: &anyhow::Error) -> ErrorKind {
    for cause in error.chain() {
        if let Some(e) = cause.downcast_ref::<Error>() {
            return e.kind();
        }
        if let Some(e) = cause.downcast_ref::<lkpkg_engine::schedule::BuildError>() {
            return match e {
                lkpkg_engine::schedule::BuildError::Package(e) => e.kind(),
                lkpkg_engine::schedule::BuildError::Internal(_) => ErrorKind::Internal,
                _ => ErrorKind::Environment,
            };
        }
        if let Some(e) = cause.downcast_ref::<Classified>() {
            return e.kind;
        }
        if let Some(e) = cause.downcast_ref::<lkpkg_engine::transfer::TransferError>() {
            return if e.is_user_error() {
                ErrorKind::BadInput
            } else {
                ErrorKind::Environment
            };
        }
        if let Some(e) = cause.downcast_ref::<lkpkg_engine::registry::RegistryError>() {
            return if e.is_user_error() {
                ErrorKind::BadInput
            } else {
                ErrorKind::Environment
            };
        }
        if let Some(e) = cause.downcast_ref::<lkpkg_engine::store::StoreError>() {
            return if e.is_user_error() {
                ErrorKind::BadInput
            } else {
                ErrorKind::Environment
            };
        }
    }
    ErrorKind::Environment
}

/// Prints `error` with its causes and returns its exit code.
pub fn report(error: &anyhow::Error) -> ExitCode {
    if error.downcast_ref::<Interrupted>().is_some() {
        crate::output::errln!("error: {error}");
        return ExitCode::from(INTERRUPTED);
    }
    crate::output::errln!("error: {error:#}");
    ExitCode::from(match kind_of(error) {
        ErrorKind::BadInput => BAD_INPUT,
        ErrorKind::Environment => ENVIRONMENT,
        ErrorKind::BuildFailed => BUILD_FAILED,
        ErrorKind::Internal => INTERNAL,
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
