//! What can go wrong talking to a registry, and oci-client's and reqwest's errors turned into
//! it: the kind of each failure decides retries ([`RegistryError::is_transient`]) and exit codes,
//! so the mapping is in one place.

use oci_client::Reference;
use oci_client::errors::OciDistributionError;

use super::{Host, Registry};

/// A failure to talk to a registry. Each names the registry, and the reference where there is
/// one; none carries a credential.
#[derive(Debug, thiserror::Error)]
pub enum RegistryError {
    #[error("`{reference}` is not a reference lkpkg can look up in a registry: {message}")]
    BadReference { reference: String, message: String },
    #[error("{setting}: {message}")]
    BadSetting { setting: String, message: String },
    #[error("registry `{registry}` cannot be reached for `{reference}`: {message}")]
    Unreachable {
        registry: String,
        reference: String,
        message: String,
        /// Whether trying again may help (a refused or cut connection, a timeout; not a name
        /// that does not resolve), and how often.
        retry: Retry,
    },
    #[error("registry `{registry}` denied access to `{reference}` ({status}): {hint}")]
    Denied {
        registry: String,
        reference: String,
        status: u16,
        /// Which credentials were sent, and where they came from (never what they are).
        hint: String,
    },
    #[error("registry `{registry}` answered {status} for `{reference}`{message}")]
    Status {
        registry: String,
        reference: String,
        status: u16,
        message: String,
    },
    #[error("registry `{registry}` served content for `{reference}` that {message}")]
    BadContent {
        registry: String,
        reference: String,
        message: String,
    },
    #[error("registry `{registry}`, `{reference}`: {message}")]
    Protocol {
        registry: String,
        reference: String,
        message: String,
    },
    #[error("getting credentials for `{registry}` from {helper}: {message}")]
    Credentials {
        registry: String,
        helper: String,
        message: String,
    },
}

/// Whether a registry that could not be reached is worth another try, and how many.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Retry {
    /// A name that does not resolve: another try gives the same answer.
    No,
    /// A refused or cut connection, a body that broke off: tried again, with backoff.
    Yes,
    /// The registry was silent for the whole timeout: tried once more only, as each try waits
    /// that long (five tries of two minutes would keep a build waiting ten).
    Once,
}

impl RegistryError {
    /// Whether trying again may succeed.
    pub fn is_transient(&self) -> bool {
        self.tries() > 1
    }

    /// How many tries in all the failure is worth.
    pub(super) fn tries(&self) -> u32 {
        match self {
            RegistryError::Unreachable { retry, .. } => match retry {
                Retry::No => 1,
                Retry::Yes => super::retry::ATTEMPTS,
                Retry::Once => 2,
            },
            RegistryError::Status { status, .. } if *status >= 500 || *status == 429 => {
                super::retry::ATTEMPTS
            }
            _ => 1,
        }
    }

    /// Whether the user can fix it in what they gave lkpkg (a flag, a file, a credential).
    pub fn is_user_error(&self) -> bool {
        matches!(
            self,
            RegistryError::BadReference { .. }
                | RegistryError::BadSetting { .. }
                | RegistryError::Denied { .. }
        )
    }
}

impl Registry {
    /// How long the registry was allowed to be silent, and the variable that sets it: said
    /// with every timeout, so that a wedged registry is named and a slow one can be waited for.
    pub(super) fn silence(&self) -> String {
        let within = self
            .timeout
            .map_or(String::new(), |w| format!(" for {} s", w.as_secs_f64()));
        format!("nothing came{within} (LKPKG_REGISTRY_TIMEOUT sets the wait in seconds)")
    }

    pub(super) fn unreachable(
        &self,
        host: &Host,
        reference: &Reference,
        e: &reqwest::Error,
    ) -> RegistryError {
        let (message, retry) = describe(e, self.connect_timeout(), self.timeout);
        RegistryError::Unreachable {
            registry: host.name.clone(),
            reference: reference.whole(),
            message,
            retry,
        }
    }

    pub(super) fn status(&self, host: &Host, reference: &Reference, status: u16) -> RegistryError {
        RegistryError::Status {
            registry: host.name.clone(),
            reference: reference.whole(),
            status,
            message: String::new(),
        }
    }

    pub(super) fn protocol(
        &self,
        host: &Host,
        reference: &Reference,
        message: String,
    ) -> RegistryError {
        RegistryError::Protocol {
            registry: host.name.clone(),
            reference: reference.whole(),
            message,
        }
    }

    /// oci-client's error as lkpkg's: the kind decides retries and exit codes.
    pub(super) fn map_error(
        &self,
        host: &Host,
        reference: &Reference,
        e: OciDistributionError,
    ) -> RegistryError {
        match e {
            OciDistributionError::RequestError(e) => match e.status() {
                Some(status) if matches!(status.as_u16(), 401 | 403) => RegistryError::Denied {
                    registry: host.name.clone(),
                    reference: reference.whole(),
                    status: status.as_u16(),
                    hint: host.denial_hint(),
                },
                Some(status) => self.status(host, reference, status.as_u16()),
                None => self.unreachable(host, reference, &e),
            },
            OciDistributionError::ServerError { code, message, .. } => RegistryError::Status {
                registry: host.name.clone(),
                reference: reference.whole(),
                status: code,
                message: if message.is_empty() {
                    String::new()
                } else {
                    format!(": {}", message.chars().take(300).collect::<String>())
                },
            },
            OciDistributionError::AuthenticationFailure(_)
            | OciDistributionError::UnauthorizedError { .. } => RegistryError::Denied {
                registry: host.name.clone(),
                reference: reference.whole(),
                status: 401,
                hint: host.denial_hint(),
            },
            OciDistributionError::RegistryError { envelope, .. } => {
                let text = envelope.to_string();
                if text.contains("UNAUTHORIZED") || text.contains("DENIED") {
                    RegistryError::Denied {
                        registry: host.name.clone(),
                        reference: reference.whole(),
                        status: 401,
                        hint: host.denial_hint(),
                    }
                } else {
                    self.protocol(host, reference, text)
                }
            }
            OciDistributionError::DigestError(e) => RegistryError::BadContent {
                registry: host.name.clone(),
                reference: reference.whole(),
                message: e.to_string(),
            },
            OciDistributionError::IoError(e) => RegistryError::Unreachable {
                registry: host.name.clone(),
                reference: reference.whole(),
                message: e.to_string(),
                retry: Retry::Yes,
            },
            other => self.protocol(host, reference, other.to_string()),
        }
    }
}

/// What went wrong with a request, in words (reqwest's own say "error sending request for url
/// (…): client error (Connect): …"), and whether trying again may help.
fn describe(
    e: &reqwest::Error,
    connect: std::time::Duration,
    timeout: Option<std::time::Duration>,
) -> (String, Retry) {
    let chain = error_chain(e);
    let mut innermost: &dyn std::error::Error = e;
    while let Some(source) = innermost.source() {
        innermost = source;
    }
    let cause = innermost.to_string();
    if chain.contains("dns error") {
        return (format!("its name does not resolve ({cause})"), Retry::No);
    }
    if e.is_timeout() {
        // Said with the variable that sets the wait: a wedged registry is named, and the user
        // can wait longer for a slow one.
        let (what, waited) = if e.is_connect() {
            ("accept a connection", Some(connect))
        } else {
            ("answer", timeout)
        };
        let within = waited.map_or(String::new(), |w| format!(" within {} s", w.as_secs_f64()));
        return (
            format!("it did not {what}{within} (LKPKG_REGISTRY_TIMEOUT sets the wait in seconds)"),
            Retry::Once,
        );
    }
    if e.is_connect() {
        return (format!("cannot connect ({cause})"), Retry::Yes);
    }
    if e.is_body() || e.is_decode() {
        return (format!("the answer broke off ({cause})"), Retry::Yes);
    }
    (chain, Retry::Yes)
}

/// Whether `e`, or one of its causes, is a timeout (reqwest's own, or an I/O one a stream
/// carries it in).
pub(super) fn is_timeout(e: &(dyn std::error::Error + 'static)) -> bool {
    let mut next = Some(e);
    while let Some(cause) = next {
        let timed_out = cause
            .downcast_ref::<reqwest::Error>()
            .is_some_and(reqwest::Error::is_timeout)
            || cause
                .downcast_ref::<std::io::Error>()
                .is_some_and(|e| e.kind() == std::io::ErrorKind::TimedOut)
            || cause.to_string().contains("timed out");
        if timed_out {
            return true;
        }
        next = cause.source();
    }
    false
}

/// An error and its causes on one line (reqwest's top level says only "error sending
/// request").
pub(super) fn error_chain(e: &dyn std::error::Error) -> String {
    let mut out = e.to_string();
    let mut source = e.source();
    while let Some(cause) = source {
        let text = cause.to_string();
        if !out.contains(&text) {
            out.push_str(": ");
            out.push_str(&text);
        }
        source = cause.source();
    }
    out
}
