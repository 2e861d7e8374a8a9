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

pub mod credentials;

use std::collections::{BTreeSet, HashMap};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use futures_util::{StreamExt, TryStreamExt};
use lkpkg_cache_format::digest::Digest;
use oci_client::client::{Certificate, CertificateEncoding, ClientConfig, ClientProtocol};
use oci_client::errors::OciDistributionError;
use oci_client::secrets::RegistryAuth;
use oci_client::{Reference, RegistryOperation};

pub use credentials::{Credential, Credentials, Secret};

/// The largest manifest or index accepted (containerd's limit).
pub const MAX_MANIFEST: u64 = 4 * 1024 * 1024;
/// How many times a transiently failing request is tried.
const ATTEMPTS: u32 = 5;
/// The first pause between two tries; it doubles each time.
const FIRST_BACKOFF: Duration = Duration::from_millis(200);

/// The media types lkpkg asks manifests in.
pub const MANIFEST_ACCEPT: &str = "application/vnd.oci.image.index.v1+json, \
    application/vnd.oci.image.manifest.v1+json, \
    application/vnd.docker.distribution.manifest.list.v2+json, \
    application/vnd.docker.distribution.manifest.v2+json";

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
        /// that does not resolve).
        transient: bool,
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

impl RegistryError {
    /// Whether trying again may succeed.
    pub fn is_transient(&self) -> bool {
        match self {
            RegistryError::Unreachable { transient, .. } => *transient,
            RegistryError::Status { status, .. } => *status >= 500 || *status == 429,
            _ => false,
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
}

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
            .finish()
    }
}

/// A mirror for pulls: `host[:port]`, over HTTP or HTTPS.
#[derive(Debug, Clone)]
struct Mirror {
    host: String,
    insecure: bool,
}

/// A manifest or index as a registry served it, checked against its digest.
#[derive(Debug, Clone)]
pub struct RemoteManifest {
    pub bytes: Bytes,
    pub digest: Digest,
    pub media_type: String,
}

/// One registry host: an oci-client of its own (its token cache is per host) and the auth.
struct Host {
    name: String,
    client: oci_client::Client,
    http: reqwest::Client,
    insecure: bool,
    auth: RegistryAuth,
    credential: Credential,
    source: credentials::Source,
}

impl Host {
    /// What a denial means, given what was sent.
    fn denial_hint(&self) -> String {
        match (&self.credential, &self.source) {
            (Credential::Anonymous, _) => "lkpkg had no credentials for it (`docker login`, the \
                docker config's credential helpers, or --registry-creds give them)"
                .into(),
            (_, source) => format!("the credentials from {source} were refused"),
        }
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
}

impl std::fmt::Debug for Registry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Registry").finish_non_exhaustive()
    }
}

/// Whether `host` (`name[:port]`) is a loopback address, spoken to over HTTP as the engine
/// treats loopback registries as insecure.
fn is_loopback(host: &str) -> bool {
    let bare = if host.starts_with('[') {
        host.split(']').next().map_or(host, |h| &h[1..])
    } else {
        host.rsplit_once(':').map_or(host, |(h, _)| h)
    };
    bare == "localhost"
        || bare
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback())
}

fn parse_mirror(value: &str) -> Result<(Option<String>, Mirror), RegistryError> {
    let bad = |message: String| RegistryError::BadSetting {
        setting: format!("--mirror `{value}`"),
        message,
    };
    let (key, url) = match value.split_once('=') {
        Some((k, u)) => (Some(k.trim_end_matches('/').to_owned()), u),
        None => (None, value),
    };
    let (insecure, rest) = if let Some(rest) = url.strip_prefix("http://") {
        (true, rest)
    } else if let Some(rest) = url.strip_prefix("https://") {
        (false, rest)
    } else {
        return Err(bad("a mirror must start with http:// or https://".into()));
    };
    let host = rest.trim_end_matches('/');
    if host.is_empty() || host.contains('/') {
        return Err(bad(
            "lkpkg takes a mirror's host and port only (`https://mirror:5000`), not a path".into(),
        ));
    }
    let key = key.map(|k| match k.as_str() {
        "index.docker.io" | "registry-1.docker.io" => "docker.io".to_owned(),
        _ => k,
    });
    Ok((
        key,
        Mirror {
            host: host.to_owned(),
            insecure,
        },
    ))
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
        })
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

    /// The client of `registry` (as oci-client resolves it: `index.docker.io` for Docker Hub).
    ///
    /// `insecure` (a mirror given as `http://`) means plain HTTP. A loopback registry, or one
    /// of the engine's `insecure-registries`, is spoken to as the engine speaks to it: HTTPS
    /// when it answers in TLS (with the certificate checked: a registry that presents one
    /// lkpkg cannot verify gets the error, not a silent downgrade), else plain HTTP.
    async fn host(&self, registry: &str, insecure: bool) -> Result<Arc<Host>, RegistryError> {
        // Held while a host is set up, so that concurrent first requests share one client.
        let mut hosts = self.hosts.lock().await;
        if let Some(host) = hosts.get(registry) {
            return Ok(host.clone());
        }
        let insecure = insecure
            || ((is_loopback(registry) || self.insecure.contains(registry))
                && !self.speaks_tls(registry).await);
        let setting = |e: String| RegistryError::BadSetting {
            setting: format!("registry `{registry}`"),
            message: e,
        };
        let certificates: Vec<Certificate> = self
            .certs
            .iter()
            .map(|pem| Certificate {
                encoding: CertificateEncoding::Pem,
                data: pem.clone(),
            })
            .collect();
        let config = ClientConfig {
            protocol: if insecure {
                ClientProtocol::Http
            } else {
                ClientProtocol::Https
            },
            extra_root_certificates: certificates,
            // lkpkg always knows a blob's size: one PUT per blob, streamed.
            use_monolithic_push: true,
            platform_resolver: None,
            connect_timeout: Some(Duration::from_secs(15)),
            read_timeout: Some(Duration::from_secs(120)),
            user_agent: concat!("lkpkg/", env!("CARGO_PKG_VERSION")),
            ..ClientConfig::default()
        };
        let client = oci_client::Client::try_from(config).map_err(|e| setting(e.to_string()))?;
        let mut http = reqwest::Client::builder()
            .user_agent(concat!("lkpkg/", env!("CARGO_PKG_VERSION")))
            .connect_timeout(Duration::from_secs(15))
            .read_timeout(Duration::from_secs(120));
        for pem in &self.certs {
            for cert in reqwest::Certificate::from_pem_bundle(pem).unwrap_or_default() {
                http = http.add_root_certificate(cert);
            }
        }
        let http = http.build().map_err(|e| setting(e.to_string()))?;
        let (credential, source) = self.credentials.lookup(registry)?;
        self.log_at(
            Level::Debug,
            format!("registry `{registry}`: credentials: {source}"),
        );
        let auth = match &credential {
            Credential::Anonymous => RegistryAuth::Anonymous,
            Credential::Basic { username, password } => {
                RegistryAuth::Basic(username.clone(), password.expose().to_owned())
            }
            Credential::Bearer(token) => RegistryAuth::Bearer(token.expose().to_owned()),
        };
        // oci-client's blob and manifest calls use the credentials stored for the registry, not
        // ones passed along: store them before the first.
        client.store_auth_if_needed(registry, &auth).await;
        let host = Arc::new(Host {
            name: registry.to_owned(),
            client,
            http,
            insecure,
            auth,
            credential,
            source,
        });
        hosts.insert(registry.to_owned(), host.clone());
        Ok(host)
    }

    /// Whether `registry` answers in TLS (any HTTP answer over TLS, or a certificate lkpkg
    /// refuses); `false` when it speaks plain HTTP or cannot be reached over TLS at all.
    async fn speaks_tls(&self, registry: &str) -> bool {
        // Loopback and insecure registries only: near, and quick to answer or refuse a TLS
        // hello (a plain-HTTP server answers 400 at once).
        let mut probe = reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(2))
            .timeout(Duration::from_secs(2));
        for pem in &self.certs {
            for cert in reqwest::Certificate::from_pem_bundle(pem).unwrap_or_default() {
                probe = probe.add_root_certificate(cert);
            }
        }
        let Ok(probe) = probe.build() else {
            return false;
        };
        match probe.get(format!("https://{registry}/v2/")).send().await {
            Ok(_) => true,
            Err(e) => {
                let chain = error_chain(&e).to_ascii_lowercase();
                chain.contains("certificate") || chain.contains("unknownissuer")
            }
        }
    }

    /// The host serving `reference`.
    async fn origin(&self, reference: &Reference) -> Result<Arc<Host>, RegistryError> {
        self.host(reference.resolve_registry(), false).await
    }

    /// The mirror configured for `reference`'s registry, and the reference redirected to it.
    async fn mirror_for(&self, reference: &Reference) -> Option<(Arc<Host>, Reference)> {
        let mirror = self
            .mirrors
            .get(reference.registry())
            .or(self.default_mirror.as_ref())?;
        let host = self.host(&mirror.host, mirror.insecure).await.ok()?;
        let mut redirected = reference.clone();
        redirected.set_mirror_registry(mirror.host.clone());
        Some((host, redirected))
    }

    /// Runs `op` until it succeeds, fails for good, or has been tried [`ATTEMPTS`] times.
    async fn retry<T, F, Fut>(&self, what: &str, mut op: F) -> Result<T, RegistryError>
    where
        F: FnMut() -> Fut,
        Fut: std::future::Future<Output = Result<T, RegistryError>>,
    {
        let mut backoff = Backoff::default();
        loop {
            match op().await {
                Err(e) => self.pause_or_fail(&mut backoff, what, e).await?,
                Ok(v) => return Ok(v),
            }
        }
    }

    /// After a failure: waits and returns `Ok` when it is worth another try, else the error.
    async fn pause_or_fail(
        &self,
        backoff: &mut Backoff,
        what: &str,
        e: RegistryError,
    ) -> Result<(), RegistryError> {
        if !e.is_transient() || backoff.attempt >= ATTEMPTS {
            return Err(e);
        }
        self.say(format!(
            "{what}: {e}; trying again in {} ms (attempt {} of {ATTEMPTS})",
            backoff.pause.as_millis(),
            backoff.attempt + 1
        ));
        tokio::time::sleep(backoff.pause).await;
        backoff.pause *= 2;
        backoff.attempt += 1;
        Ok(())
    }

    /// The manifest or index `reference` names, `None` when the registry has none. Pulls go
    /// through the mirror of the registry when there is one, and to the registry itself when
    /// the mirror fails or lacks it.
    pub async fn manifest(
        &self,
        reference: &Reference,
    ) -> Result<Option<RemoteManifest>, RegistryError> {
        if let Some((mirror, redirected)) = self.mirror_for(reference).await {
            match self
                .retry(&format!("pulling `{reference}` from mirror"), || {
                    self.fetch_manifest(&mirror, &redirected, reference)
                })
                .await
            {
                Ok(Some(found)) => return Ok(Some(found)),
                Ok(None) => {}
                Err(e) => self.say(format!(
                    "mirror `{}`: {e}; asking the registry",
                    mirror.name
                )),
            }
        }
        let host = self.origin(reference).await?;
        self.retry(&format!("pulling `{reference}`"), || {
            self.fetch_manifest(&host, reference, reference)
        })
        .await
    }

    /// The `Authorization` header for `reference` on `host`, after oci-client's handshake.
    async fn authorization(
        &self,
        host: &Host,
        reference: &Reference,
        operation: RegistryOperation,
        shown: &Reference,
    ) -> Result<Option<String>, RegistryError> {
        let token = host
            .client
            .auth(reference, &host.auth, operation)
            .await
            .map_err(|e| self.map_error(host, shown, e))?;
        Ok(match (token, &host.credential) {
            (Some(token), _) => Some(format!("Bearer {token}")),
            (None, Credential::Basic { username, password }) => {
                use base64::Engine as _;
                let pair = format!("{username}:{}", password.expose());
                Some(format!(
                    "Basic {}",
                    base64::engine::general_purpose::STANDARD.encode(pair)
                ))
            }
            (None, Credential::Bearer(token)) => Some(format!("Bearer {}", token.expose())),
            (None, Credential::Anonymous) => None,
        })
    }

    fn manifest_url(&self, host: &Host, reference: &Reference) -> String {
        let scheme = if host.insecure { "http" } else { "https" };
        let target = reference
            .digest()
            .or(reference.tag())
            .unwrap_or("latest")
            .to_owned();
        let ns = reference
            .namespace()
            .map(|ns| format!("?ns={ns}"))
            .unwrap_or_default();
        format!(
            "{scheme}://{}/v2/{}/manifests/{target}{ns}",
            host.name,
            reference.repository()
        )
    }

    async fn fetch_manifest(
        &self,
        host: &Host,
        reference: &Reference,
        shown: &Reference,
    ) -> Result<Option<RemoteManifest>, RegistryError> {
        let authorization = self
            .authorization(host, reference, RegistryOperation::Pull, shown)
            .await?;
        let mut request = host
            .http
            .get(self.manifest_url(host, reference))
            .header("accept", MANIFEST_ACCEPT);
        if let Some(authorization) = authorization {
            request = request.header("authorization", authorization);
        }
        let response = request
            .send()
            .await
            .map_err(|e| self.unreachable(host, shown, &e))?;
        let status = response.status().as_u16();
        match status {
            200 => {}
            404 => return Ok(None),
            401 | 403 => {
                return Err(RegistryError::Denied {
                    registry: host.name.clone(),
                    reference: shown.whole(),
                    status,
                    hint: host.denial_hint(),
                });
            }
            _ => return Err(self.status(host, shown, status)),
        }
        let header_digest = response
            .headers()
            .get("docker-content-digest")
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned);
        let media_type = response
            .headers()
            .get("content-type")
            .and_then(|v| v.to_str().ok())
            .map(|v| v.split(';').next().unwrap_or(v).trim().to_owned())
            .unwrap_or_default();
        let bad = |message: String| RegistryError::BadContent {
            registry: host.name.clone(),
            reference: shown.whole(),
            message,
        };
        if response.content_length().is_some_and(|n| n > MAX_MANIFEST) {
            return Err(bad(format!(
                "is larger than a manifest may be ({MAX_MANIFEST} bytes)"
            )));
        }
        let mut body = Vec::new();
        let mut stream = response.bytes_stream();
        while let Some(chunk) = stream.next().await {
            let chunk = chunk.map_err(|e| self.unreachable(host, shown, &e))?;
            if body.len() as u64 + chunk.len() as u64 > MAX_MANIFEST {
                return Err(bad(format!(
                    "is larger than a manifest may be ({MAX_MANIFEST} bytes)"
                )));
            }
            body.extend_from_slice(&chunk);
        }
        let digest = Digest::of(&body);
        for claimed in [reference.digest().map(str::to_owned), header_digest]
            .into_iter()
            .flatten()
        {
            if claimed != digest.to_string() {
                return Err(bad(format!(
                    "does not match its digest {claimed} (it is {digest})"
                )));
            }
        }
        let media_type = if media_type.is_empty() || media_type == "application/json" {
            serde_json::from_slice::<serde_json::Value>(&body)
                .ok()
                .and_then(|v| v["mediaType"].as_str().map(str::to_owned))
                .unwrap_or_default()
        } else {
            media_type
        };
        Ok(Some(RemoteManifest {
            bytes: Bytes::from(body),
            digest,
            media_type,
        }))
    }

    /// The digest the registry serves for `reference`, `None` when it has none.
    pub async fn manifest_digest(
        &self,
        reference: &Reference,
    ) -> Result<Option<Digest>, RegistryError> {
        Ok(self.manifest(reference).await?.map(|m| m.digest))
    }

    /// Whether `reference`'s repository holds the blob.
    pub async fn has_blob(
        &self,
        reference: &Reference,
        digest: &Digest,
    ) -> Result<bool, RegistryError> {
        let host = self.origin(reference).await?;
        let found = self
            .retry(
                &format!("looking for {digest} in `{reference}`"),
                || async {
                    host.client
                        .blob_exists(reference, &digest.to_string())
                        .await
                        .map_err(|e| self.map_error(&host, reference, e))
                },
            )
            .await?;
        if found {
            self.remember_blob(reference, digest);
        }
        Ok(found)
    }

    fn remember_blob(&self, reference: &Reference, digest: &Digest) {
        self.known_blobs.lock().expect("blobs lock").insert(
            (reference.resolve_registry().to_owned(), *digest),
            reference.repository().to_owned(),
        );
    }

    /// Streams blob `digest` (of `size` bytes) of `reference`'s repository into `sink`, which
    /// sees verified-so-far chunks. The blob is checked against its digest and size; a longer
    /// body is cut off and refused. `sink` must be restartable: a retry calls `restart` first.
    pub async fn pull_blob<S: BlobSink>(
        &self,
        reference: &Reference,
        digest: &Digest,
        size: u64,
        sink: &mut S,
    ) -> Result<(), RegistryError> {
        if let Some((host, redirected)) = self.mirror_for(reference).await {
            let what = format!("pulling {digest} from mirror");
            let mut backoff = Backoff::default();
            let result = loop {
                match self
                    .pull_blob_once(&host, &redirected, reference, digest, size, sink)
                    .await
                {
                    Ok(()) => break Ok(()),
                    Err(e) => {
                        if let Err(e) = self.pause_or_fail(&mut backoff, &what, e).await {
                            break Err(e);
                        }
                    }
                }
            };
            match result {
                Ok(()) => return Ok(()),
                Err(e) => self.say(format!("mirror `{}`: {e}; asking the registry", host.name)),
            }
        }
        let host = self.origin(reference).await?;
        let what = format!("pulling {digest} of `{reference}`");
        let mut backoff = Backoff::default();
        loop {
            match self
                .pull_blob_once(&host, reference, reference, digest, size, sink)
                .await
            {
                Ok(()) => return Ok(()),
                Err(e) => self.pause_or_fail(&mut backoff, &what, e).await?,
            }
        }
    }

    async fn pull_blob_once<S: BlobSink>(
        &self,
        host: &Host,
        reference: &Reference,
        shown: &Reference,
        digest: &Digest,
        size: u64,
        sink: &mut S,
    ) -> Result<(), RegistryError> {
        sink.restart()
            .map_err(|e| self.protocol(host, shown, format!("writing {digest}: {e}")))?;
        let descriptor = oci_client::manifest::OciDescriptor {
            digest: digest.to_string(),
            size: i64::try_from(size).unwrap_or(i64::MAX),
            ..Default::default()
        };
        let mut stream = host
            .client
            .pull_blob_stream(reference, &descriptor)
            .await
            .map_err(|e| self.map_error(host, shown, e))?;
        let bad = |message: String| RegistryError::BadContent {
            registry: host.name.clone(),
            reference: format!("{}@{digest}", shown.whole()),
            message,
        };
        // oci-client's stream checks the digest as it ends (an error after the last byte);
        // lkpkg bounds the length.
        let mut received = 0u64;
        loop {
            let chunk = match stream.try_next().await {
                Ok(Some(chunk)) => chunk,
                Ok(None) => break,
                Err(e) if received == size => {
                    return Err(bad(format!("does not match its digest ({e})")));
                }
                Err(e) => {
                    return Err(RegistryError::Unreachable {
                        registry: host.name.clone(),
                        reference: shown.whole(),
                        message: format!("the download of {digest} broke off ({e})"),
                        transient: true,
                    });
                }
            };
            received += chunk.len() as u64;
            if received > size {
                return Err(bad(format!("is longer than its descriptor's {size} bytes")));
            }
            sink.write(&chunk)
                .map_err(|e| self.protocol(host, shown, format!("writing {digest}: {e}")))?;
        }
        if received != size {
            return Err(RegistryError::Unreachable {
                registry: host.name.clone(),
                reference: shown.whole(),
                message: format!("the download of {digest} ended after {received} of {size} bytes"),
                transient: true,
            });
        }
        Ok(())
    }

    /// Makes blob `digest` (the file at `path`, `size` bytes) present in `reference`'s
    /// repository: nothing when it is there (a `HEAD` first), a cross-repository mount when
    /// another repository of the registry is known to hold it, else a streamed upload.
    /// Returns whether bytes were uploaded.
    pub async fn push_blob(
        &self,
        reference: &Reference,
        digest: &Digest,
        size: u64,
        path: &std::path::Path,
    ) -> Result<bool, RegistryError> {
        if self.has_blob(reference, digest).await? {
            return Ok(false);
        }
        let host = self.origin(reference).await?;
        let source = self
            .known_blobs
            .lock()
            .expect("blobs lock")
            .get(&(reference.resolve_registry().to_owned(), *digest))
            .cloned();
        if let Some(repository) = source.filter(|r| r != reference.repository()) {
            let from =
                Reference::with_tag(reference.registry().to_owned(), repository, "latest".into());
            if host
                .client
                .mount_blob(reference, &from, &digest.to_string())
                .await
                .is_ok()
                && self.has_blob(reference, digest).await.unwrap_or(false)
            {
                return Ok(false);
            }
        }
        self.retry(&format!("pushing {digest} to `{reference}`"), || async {
            let file = tokio::fs::File::open(path)
                .await
                .map_err(|e| self.protocol(&host, reference, format!("{}: {e}", path.display())))?;
            let stream = tokio_util::io::ReaderStream::with_capacity(file, 256 * 1024)
                .map_err(OciDistributionError::from);
            host.client
                .push_blob_stream(reference, stream, &digest.to_string(), Some(size))
                .await
                .map_err(|e| self.map_error(&host, reference, e))
        })
        .await?;
        self.remember_blob(reference, digest);
        Ok(true)
    }

    /// Uploads a manifest or index under `reference` (a tag or its digest).
    pub async fn put_manifest(
        &self,
        reference: &Reference,
        bytes: &[u8],
        media_type: &str,
    ) -> Result<(), RegistryError> {
        let host = self.origin(reference).await?;
        let content_type = reqwest::header::HeaderValue::from_str(media_type)
            .map_err(|e| self.protocol(&host, reference, e.to_string()))?;
        let body = Bytes::copy_from_slice(bytes);
        self.retry(&format!("pushing `{reference}`"), || async {
            host.client
                .push_manifest_raw(reference, body.clone(), content_type.clone())
                .await
                .map_err(|e| self.map_error(&host, reference, e))
        })
        .await?;
        Ok(())
    }

    fn unreachable(&self, host: &Host, reference: &Reference, e: &reqwest::Error) -> RegistryError {
        let (message, transient) = describe(e);
        RegistryError::Unreachable {
            registry: host.name.clone(),
            reference: reference.whole(),
            message,
            transient,
        }
    }

    fn status(&self, host: &Host, reference: &Reference, status: u16) -> RegistryError {
        RegistryError::Status {
            registry: host.name.clone(),
            reference: reference.whole(),
            status,
            message: String::new(),
        }
    }

    fn protocol(&self, host: &Host, reference: &Reference, message: String) -> RegistryError {
        RegistryError::Protocol {
            registry: host.name.clone(),
            reference: reference.whole(),
            message,
        }
    }

    /// oci-client's error as lkpkg's: the kind decides retries and exit codes.
    fn map_error(
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
                transient: true,
            },
            other => self.protocol(host, reference, other.to_string()),
        }
    }
}

/// What went wrong with a request, in words (reqwest's own say "error sending request for url
/// (…): client error (Connect): …"), and whether trying again may help.
fn describe(e: &reqwest::Error) -> (String, bool) {
    let chain = error_chain(e);
    let mut innermost: &dyn std::error::Error = e;
    while let Some(source) = innermost.source() {
        innermost = source;
    }
    let cause = innermost.to_string();
    if chain.contains("dns error") {
        return (format!("its name does not resolve ({cause})"), false);
    }
    if e.is_timeout() {
        return ("it did not answer in time".into(), true);
    }
    if e.is_connect() {
        return (format!("cannot connect ({cause})"), true);
    }
    if e.is_body() || e.is_decode() {
        return (format!("the answer broke off ({cause})"), true);
    }
    (chain, true)
}

/// An error and its causes on one line (reqwest's top level says only "error sending
/// request").
fn error_chain(e: &dyn std::error::Error) -> String {
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

/// Where a retried request stands.
struct Backoff {
    attempt: u32,
    pause: Duration,
}

impl Default for Backoff {
    fn default() -> Backoff {
        Backoff {
            attempt: 1,
            pause: FIRST_BACKOFF,
        }
    }
}

/// Where a downloaded blob goes, chunk by chunk; restartable for retries.
pub trait BlobSink: Send {
    /// Forgets what was written (a retry starts over).
    fn restart(&mut self) -> std::io::Result<()>;
    fn write(&mut self, chunk: &[u8]) -> std::io::Result<()>;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn loopback_hosts_are_plain_http() {
        for host in [
            "localhost:5000",
            "127.0.0.1:5000",
            "[::1]:5000",
            "127.0.0.1",
        ] {
            assert!(is_loopback(host), "{host}");
        }
        for host in ["docker.io", "index.docker.io", "10.0.0.1:5000", "ghcr.io"] {
            assert!(!is_loopback(host), "{host}");
        }
    }

    #[test]
    fn mirrors_parse_as_linuxkit_takes_them() {
        let (key, m) = parse_mirror("docker.io=http://127.0.0.1:5001").unwrap();
        assert_eq!(key.as_deref(), Some("docker.io"));
        assert_eq!(m.host, "127.0.0.1:5001");
        assert!(m.insecure);
        let (key, m) = parse_mirror("https://mirror.example").unwrap();
        assert!(key.is_none() && !m.insecure);
        assert!(parse_mirror("mirror.example").is_err());
        assert!(parse_mirror("https://mirror.example/path").is_err());
    }

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
