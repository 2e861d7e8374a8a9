//! A client of the OCI distribution API: the operations lkpkg's pulls and pushes are made of
//! (manifests by tag or digest, blob existence, blob download and upload, cross-repository
//! mounts), each verified, bounded and retried.
//!
//! # What comes from where
//! The protocol is [`oci_client`]'s (the maintained Rust client of the distribution spec, on
//! reqwest): the token handshake (`WWW-Authenticate: Bearer` challenges, with basic
//! credentials when lkpkg has some), blob existence, streamed blob uploads and downloads,
//! mounts and manifest uploads. lkpkg adds what it lacks:
//! - **bounded, verified manifest reads**: oci-client reads a manifest body whole, however
//!   long; lkpkg reads at most [`MAX_MANIFEST`] bytes (containerd's bound) and checks the bytes
//!   against the digest asked for and the `Docker-Content-Digest` the registry sends; a blob
//!   longer than its descriptor is cut off and refused;
//! - **retries** with exponential backoff of what fails transiently (connections refused or
//!   cut, timeouts, 5xx, 429), each said through the log callback (`-v`);
//! - **where to speak and as whom**: one oci-client per registry host, over plain HTTP for
//!   loopback hosts and the engine's `insecure-registries`, HTTPS with the system's roots plus
//!   `--cert-file` otherwise; credentials from [`credentials`]; `--mirror` for pulls.
//!
//! Names are canonical references (`docker.io/org/image:tag`); Docker Hub is spoken to as
//! `index.docker.io`. The registry knows nothing of packages or of the store: moving images
//! between the two is [`crate::transfer`]'s.

mod blobs;
pub(crate) mod credentials;
mod error;
mod hosts;
mod manifests;
mod retry;

use std::collections::{BTreeSet, HashMap};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use lkpkg_cache_format::digest::Digest;
use oci_client::Reference;

pub(crate) use blobs::BlobSink;
pub use credentials::{Credential, Credentials, Secret};
pub use error::RegistryError;
pub(crate) use error::Retry;
use hosts::{Host, Mirror, parse_mirror};
pub use manifests::RemoteManifest;

/// What the user gave about registries (flags, environment, files).
#[derive(Clone, Default)]
pub struct Settings {
    /// `--registry-creds`.
    pub registry_creds: Vec<String>,
    /// The docker CLI config directory (`DOCKER_CONFIG`, else `~/.docker`).
    pub docker_config: Option<PathBuf>,
    /// `--cert-file`: extra CA certificates (PEM).
    pub cert_files: Vec<PathBuf>,
    /// `--mirror` values, `LINUXKIT_MIRROR`'s first: `<registry>=<url>` or `<url>`.
    pub mirrors: Vec<String>,
    /// Registries spoken to over plain HTTP besides loopback ones (the engine's
    /// `insecure-registries`).
    pub insecure: Vec<String>,
    /// Where retries and other diagnostics go.
    pub log: Option<Log>,
    /// How long a registry may keep lkpkg waiting for the next bytes of an answer
    /// (`LKPKG_REGISTRY_TIMEOUT`, else [`DEFAULT_TIMEOUT`]); `None` waits for ever.
    pub timeout: Option<Duration>,
}

/// How long a registry may be silent in the middle of an answer before the request fails (and
/// is tried once more, not five times: each try waits that long). Long enough for a slow registry's first byte of a
/// large manifest list, short enough that a wedged one is said within minutes, not hours.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(120);
/// Connecting takes at most this (or the timeout, when shorter): a registry that does not even
/// accept a connection in 15 s is not there.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(15);

/// How much a diagnostic matters: retries and fallbacks are said to people; where credentials
/// came from only at `-v 2`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Level {
    Info,
    Debug,
}

/// The receiver of the client's diagnostics.
pub type Log = Arc<dyn Fn(Level, String) + Send + Sync>;

impl std::fmt::Debug for Settings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Settings")
            .field("registry_creds", &self.registry_creds.len())
            .field("docker_config", &self.docker_config)
            .field("cert_files", &self.cert_files)
            .field("mirrors", &self.mirrors)
            .field("timeout", &self.timeout)
            .finish()
    }
}

/// The registry client. Cheap to share; connections are pooled per host.
pub struct Registry {
    credentials: Arc<Credentials>,
    certs: Vec<Vec<u8>>,
    mirrors: HashMap<String, Mirror>,
    default_mirror: Option<Mirror>,
    insecure: BTreeSet<String>,
    hosts: tokio::sync::Mutex<HashMap<String, Arc<Host>>>,
    /// Repositories known to hold a blob, per registry: the sources of cross-repository mounts.
    known_blobs: Mutex<HashMap<(String, Digest), String>>,
    log: Option<Log>,
    /// How long the registry may be silent ([`Settings::timeout`]).
    timeout: Option<Duration>,
}

impl std::fmt::Debug for Registry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Registry").finish_non_exhaustive()
    }
}

/// `reference` (expanded as linuxkit expands names: `alpine` → `docker.io/library/alpine:latest`)
/// checked against the reference grammar and taken apart by lkpkg's own parser: oci-spec's
/// `Reference::from_str` compiles a large regular expression on first use, which measured
/// 100 ms of every command that talks to a registry.
pub fn parse_reference(reference: &str) -> Result<Reference, RegistryError> {
    let bad = |message: String| RegistryError::BadReference {
        reference: reference.to_owned(),
        message,
    };
    let canonical = lkpkg_cache_format::reference::expand(reference);
    lkpkg_cache_format::reference::validate(&canonical).map_err(bad)?;
    let (name, digest) = match canonical.split_once('@') {
        Some((name, digest)) => (name, Some(digest)),
        None => (canonical.as_str(), None),
    };
    let (name, tag) = lkpkg_cache_format::reference::split_tag(name);
    let (registry, repository) = name
        .split_once('/')
        .ok_or_else(|| bad("no registry host in it".into()))?;
    let (registry, repository) = (registry.to_owned(), repository.to_owned());
    Ok(match (tag, digest) {
        (Some(tag), Some(digest)) => {
            Reference::with_tag_and_digest(registry, repository, tag.into(), digest.into())
        }
        (None, Some(digest)) => Reference::with_digest(registry, repository, digest.into()),
        (tag, None) => Reference::with_tag(registry, repository, tag.unwrap_or("latest").into()),
    })
}

impl Registry {
    pub fn new(settings: Settings) -> Result<Registry, RegistryError> {
        // reqwest is built without a crypto provider: lkpkg's (ring) serves every TLS client.
        let _ = rustls::crypto::ring::default_provider().install_default();
        let credentials =
            Credentials::load(&settings.registry_creds, settings.docker_config.as_deref())?;
        let mut certs = Vec::new();
        for path in &settings.cert_files {
            let pem = std::fs::read(path).map_err(|e| RegistryError::BadSetting {
                setting: format!("--cert-file {}", path.display()),
                message: e.to_string(),
            })?;
            reqwest::Certificate::from_pem_bundle(&pem).map_err(|e| RegistryError::BadSetting {
                setting: format!("--cert-file {}", path.display()),
                message: format!("not a PEM certificate: {e}"),
            })?;
            certs.push(pem);
        }
        let mut mirrors = HashMap::new();
        let mut default_mirror = None;
        for value in settings.mirrors.iter().filter(|m| !m.is_empty()) {
            // Later values win, as linuxkit's flags win over its environment variable.
            match parse_mirror(value)? {
                (Some(key), mirror) => {
                    mirrors.insert(key, mirror);
                }
                (None, mirror) => default_mirror = Some(mirror),
            }
        }
        Ok(Registry {
            credentials: Arc::new(credentials),
            certs,
            mirrors,
            default_mirror,
            insecure: settings.insecure.iter().cloned().collect(),
            hosts: tokio::sync::Mutex::new(HashMap::new()),
            known_blobs: Mutex::new(HashMap::new()),
            log: settings.log,
            timeout: settings.timeout,
        })
    }

    /// How long connecting may take: [`CONNECT_TIMEOUT`], or the whole timeout when shorter.
    fn connect_timeout(&self) -> Duration {
        self.timeout
            .map_or(CONNECT_TIMEOUT, |t| t.min(CONNECT_TIMEOUT))
    }

    /// The credentials this client found, to hand on (the builder's pulls ask for them).
    pub fn credentials(&self) -> Arc<Credentials> {
        self.credentials.clone()
    }

    fn say(&self, message: String) {
        self.log_at(Level::Info, message);
    }

    fn log_at(&self, level: Level, message: String) {
        if let Some(log) = &self.log {
            log(level, message);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn references_are_canonical() {
        let r = parse_reference("docker.io/linuxkit/init:abc").unwrap();
        assert_eq!(r.resolve_registry(), "index.docker.io");
        assert_eq!(r.repository(), "linuxkit/init");
        let r = parse_reference("127.0.0.1:5000/org/img:t-amd64").unwrap();
        assert_eq!((r.registry(), r.tag()), ("127.0.0.1:5000", Some("t-amd64")));
        let r = parse_reference("alpine").unwrap();
        assert_eq!(
            (r.repository(), r.tag()),
            ("library/alpine", Some("latest"))
        );
        let digest = format!("sha256:{}", "a".repeat(64));
        let r = parse_reference(&format!("ghcr.io/o/i@{digest}")).unwrap();
        assert_eq!((r.tag(), r.digest()), (None, Some(digest.as_str())));
        assert!(parse_reference("UPPER/x:1").is_err());
    }
}
