//! The engine's error types, one enum per condition a caller acts on.
//!
//! Every error carries what a user needs to fix it: the file, the field (and the line where the
//! parser gives one) and the reason. [`ErrorKind`] classifies errors once, so the binary maps
//! them to exit codes in one place (2 bad input, 3 environment, 1 build failure).

use std::path::PathBuf;

/// How a failure should be reported to the user; the binary turns it into an exit code.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorKind {
    /// The user's input is wrong: a build.yml, a flag, a path, a reference.
    BadInput,
    /// Something around us failed: git, the Docker engine, a registry, the file system.
    Environment,
    /// A build ran and failed.
    BuildFailed,
    /// lkpkg's own fault: a bug to report.
    Internal,
    /// The user stopped the command (Ctrl-C).
    Interrupted,
}

/// An error that knows how it is to be reported: every public error type of the engine
/// implements it, next to where its variants are made, so the binary classifies nothing by
/// reading messages.
pub trait Classify {
    fn kind(&self) -> ErrorKind;
}

impl Classify for Error {
    fn kind(&self) -> ErrorKind {
        Error::kind(self)
    }
}

/// Errors whose only distinction is the user's fault (bad input) or the machine's
/// (environment).
macro_rules! classify_by_user_error {
    ($($type:ty),* $(,)?) => {$(
        impl Classify for $type {
            fn kind(&self) -> ErrorKind {
                if self.is_user_error() {
                    ErrorKind::BadInput
                } else {
                    ErrorKind::Environment
                }
            }
        }
    )*};
}

classify_by_user_error!(
    crate::store::StoreError,
    crate::registry::RegistryError,
    crate::transfer::TransferError,
    crate::executor::docker::EngineError,
);

/// An invalid package definition: build.yml, Dockerfile, extra sources, build arguments.
#[derive(Debug, thiserror::Error)]
#[error("{}: {message}", location(.file, .field.as_deref(), *.line))]
pub struct PackageError {
    pub file: PathBuf,
    pub field: Option<String>,
    pub line: Option<usize>,
    pub message: String,
}

fn location(file: &std::path::Path, field: Option<&str>, line: Option<usize>) -> String {
    let mut s = format!("`{}`", file.display());
    if let Some(line) = line {
        s.push_str(&format!(":{line}"));
    }
    if let Some(field) = field {
        s.push_str(&format!(": field `{field}`"));
    }
    s
}

impl PackageError {
    pub fn new(file: impl Into<PathBuf>, field: Option<&str>, message: impl Into<String>) -> Self {
        Self {
            file: file.into(),
            field: field.map(str::to_owned),
            line: None,
            message: message.into(),
        }
    }
}

/// A failure of git itself (not of the user's input).
///
/// Printed once, with libgit2's message only (`revspec 'nosuch' not found`, without its
/// `class=…; code=…` suffix): the git2 error is kept for callers, not as a `source` that would
/// print the same text a second time in the error chain.
#[derive(Debug, thiserror::Error)]
#[error("git: {context}: {}", .error.message())]
pub struct GitError {
    pub context: String,
    pub error: git2::Error,
}

/// Anything the package model, tags and graph can fail with.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(transparent)]
    Package(#[from] PackageError),
    #[error(transparent)]
    Git(#[from] GitError),
    #[error("`{path}`: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{0}")]
    Usage(String),
    #[error("dependency cycle: {}", .0.join(" -> "))]
    Cycle(Vec<String>),
    /// Several packages that cannot be loaded, each with its own error.
    #[error("{}", packages_message(.0))]
    Packages(Vec<Error>),
}

fn packages_message(errors: &[Error]) -> String {
    match errors {
        [one] => one.to_string(),
        many => {
            let mut message = format!("{} packages cannot be loaded:", many.len());
            for e in many {
                message.push_str(&format!("\n  {e}"));
            }
            message
        }
    }
}

impl Error {
    pub fn kind(&self) -> ErrorKind {
        match self {
            Error::Package(_) | Error::Usage(_) | Error::Cycle(_) => ErrorKind::BadInput,
            Error::Io { source, .. } if source.kind() == std::io::ErrorKind::NotFound => {
                ErrorKind::BadInput
            }
            Error::Git(_) | Error::Io { .. } => ErrorKind::Environment,
            // The most serious of them: a broken machine over a broken package.
            Error::Packages(errors) => errors
                .iter()
                .map(Error::kind)
                .find(|k| *k != ErrorKind::BadInput)
                .unwrap_or(ErrorKind::BadInput),
        }
    }

    pub fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        Error::Io {
            path: path.into(),
            source,
        }
    }
}

pub(crate) type Result<T, E = Error> = std::result::Result<T, E>;
