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
