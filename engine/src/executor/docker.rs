//! A Docker engine, through the Docker API (bollard): its version, images and image loads.
//!
//! Builds go through the engine's BuildKit (`crate::buildkit`), which dials the same
//! endpoints; this module connects, tells what the engine is ([`Engine::check_buildkit`]: an
//! engine whose BuildKit cannot export images gets one clear error saying what to enable), and
//! serves `--docker` (loading an image from the cache) and `pkg builder ls/prune`.
//!
//! # Connections
//! An [`Endpoint`] is where an engine listens, as a docker context or `DOCKER_HOST` names it:
//! - `unix://PATH`: bollard's unix-socket transport;
//! - `tcp://HOST:PORT` (or `http://`): plain HTTP;
//! - `ssh://[USER@]HOST[:PORT]`: the way the docker CLI does it, by running
//!   `ssh [-p PORT] [-l USER] -o BatchMode=yes HOST -- docker system dial-stdio` and speaking
//!   HTTP/1.1 over the child's stdin/stdout. This is a bollard custom transport (one `ssh` per
//!   connection; bollard keeps no idle connections, so one per request): no local socket to
//!   create and clean up, the user's `~/.ssh/config` (keys, `ProxyJump`, `ControlMaster`)
//!   applies, and when `ssh` fails its own stderr (`Permission denied (publickey)`) is the
//!   error. `BatchMode` because nothing can answer a password prompt. bollard's own `ssh`
//!   feature was not used: it pulls the `openssh` crate and starts a control master per
//!   connection.
//! - `tcp://` with TLS material (a context's `ca.pem`, `cert.pem`, `key.pem`, or
//!   `DOCKER_TLS_VERIFY` with `DOCKER_CERT_PATH`): HTTPS through bollard's `ssl` feature, which
//!   is rustls with ring, no OpenSSL (ring's C and assembly build in ~30 s once; `openssl-probe`
//!   only looks for the system's CA directory). The engine's certificate is verified against
//!   `ca.pem` and lkpkg presents `cert.pem`/`key.pem`, as `docker --tlsverify` does; a context
//!   with `SkipTLSVerify` is refused (bollard cannot skip verification), and all three files
//!   must be there.
//!
//! # The API version
//! The version is negotiated with the engine at connection (`GET /version`, unversioned), so
//! that old (20.10, API 1.41) and current engines both work. bollard 0.21 computes a
//! `/v1.xx` prefix and then loses it (`Url::join` with an absolute path replaces the whole path),
//! so its requests reach the engine unversioned and the engine answers them at its *own*
//! newest API version. [`Engine::connect_endpoint`] therefore installs a request modifier that
//! puts the negotiated `/v<major>.<minor>` in front of every path; the e2e test
//! `builders::requests_carry_the_negotiated_api_version` checks the request lines on the wire.

use std::path::PathBuf;

use bollard::query_parameters::{ImportImageOptions, ListImagesOptions, RemoveImageOptions};
use bollard::{BollardRequest, Docker};
use futures_util::StreamExt;
use tokio::io::AsyncReadExt;

/// Seconds a request may take (a build or an export can be long).
const REQUEST_TIMEOUT: u64 = 3600;
/// How long an engine has to answer when lkpkg connects (the version handshake, each BuildKit
/// upgrade) and each liveness question during a build, unless the binary sets another wait
/// ([`set_builder_timeout`]).
pub const DEFAULT_BUILDER_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(30);
/// The wait the binary set (`LKPKG_BUILDER_TIMEOUT`; `None` inside: for ever).
static BUILDER_TIMEOUT: std::sync::OnceLock<Option<std::time::Duration>> =
    std::sync::OnceLock::new();

/// Sets, once for the process, how long an engine may take to answer lkpkg (its handshake,
/// each liveness question during a build; `None`: for ever). A process-wide setting, as the
/// cache lock's wait is: every connection of a run is to a builder the same user chose, and
/// threading it through each endpoint would make it part of what identifies one.
pub fn set_builder_timeout(timeout: Option<std::time::Duration>) {
    let _ = BUILDER_TIMEOUT.set(timeout);
}

/// The wait for an engine's answer the binary set ([`DEFAULT_BUILDER_TIMEOUT`] if it set
/// none; `None`: for ever).
pub(crate) fn builder_timeout() -> Option<std::time::Duration> {
    BUILDER_TIMEOUT
        .get()
        .copied()
        .unwrap_or(Some(DEFAULT_BUILDER_TIMEOUT))
}

/// `work` (talking to an engine that should answer at once), or the reason it did not
/// answer within the builder timeout, naming the variable that sets it.
pub(crate) async fn answered<T>(work: impl std::future::Future<Output = T>) -> Result<T, String> {
    match builder_timeout() {
        None => Ok(work.await),
        Some(limit) => tokio::time::timeout(limit, work).await.map_err(|_| {
            format!(
                "no answer within {} s (LKPKG_BUILDER_TIMEOUT sets the wait in seconds)",
                limit.as_secs_f64()
            )
        }),
    }
}

/// A failure talking to, or building on, an engine.
#[derive(Debug, Clone, thiserror::Error)]
pub enum EngineError {
    #[error("the Docker engine at `{endpoint}` does not answer: {message}")]
    Unreachable { endpoint: String, message: String },
    #[error("Docker engine at `{endpoint}`: {message}")]
    Api { endpoint: String, message: String },
    /// The engine has no BuildKit lkpkg can use.
    #[error("the Docker engine at `{endpoint}` cannot build: {message}")]
    NoBuildKit { endpoint: String, message: String },
    /// The user named a builder that does not exist, or wrote `--builders` wrongly.
    #[error("{message}")]
    BadBuilder { message: String },
    /// The docker CLI's configuration (contexts) could not be read.
    #[error("docker configuration `{path}`: {message}")]
    Config { path: PathBuf, message: String },
}

impl EngineError {
    /// The error's own words, without where it happened.
    pub fn message(&self) -> String {
        match self {
            EngineError::Unreachable { message, .. }
            | EngineError::Api { message, .. }
            | EngineError::NoBuildKit { message, .. }
            | EngineError::Config { message, .. }
            | EngineError::BadBuilder { message } => message.clone(),
        }
    }

    /// Whether the user's input is at fault (exit 2), not the environment (exit 3).
    pub fn is_user_error(&self) -> bool {
        matches!(self, EngineError::BadBuilder { .. })
    }
}

/// Where an engine listens and how to reach it.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Endpoint {
    /// `unix://…`, `tcp://…`, `http://…` or `ssh://…`.
    pub host: String,
    /// A directory with `ca.pem`, `cert.pem`, `key.pem` (a context's TLS material).
    pub tls: Option<PathBuf>,
    /// The context's `SkipTLSVerify`.
    pub skip_tls_verify: bool,
}

impl Endpoint {
    pub fn new(host: impl Into<String>) -> Endpoint {
        Endpoint {
            host: host.into(),
            tls: None,
            skip_tls_verify: false,
        }
    }
}

impl std::fmt::Display for Endpoint {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.host)
    }
}

/// One engine, connected.
#[derive(Debug, Clone)]
pub struct Engine {
    docker: Docker,
    endpoint: String,
    /// How to reach it again (BuildKit's upgrades dial it themselves).
    target: Endpoint,
    /// The engine's architecture, in GOARCH terms (`amd64`, `arm64`).
    pub arch: String,
    pub version: String,
    /// The API version requests carry (`1.41`).
    pub api_version: String,
}

impl Engine {
    /// Connects to `unix://…`, `tcp://…`, `http://…` or `ssh://…`.
    pub async fn connect(endpoint: &str) -> Result<Engine, EngineError> {
        Engine::connect_endpoint(&Endpoint::new(endpoint)).await
    }

    /// Connects to an endpoint, negotiates the API version and asks the engine what it is.
    #[tracing::instrument(level = "debug", skip_all, fields(endpoint = %endpoint.host))]
    pub async fn connect_endpoint(endpoint: &Endpoint) -> Result<Engine, EngineError> {
        let host = endpoint.host.as_str();
        let unreachable = |message: String| EngineError::Unreachable {
            endpoint: host.to_owned(),
            message,
        };
        let tls = endpoint.tls.as_ref().filter(|_| host.starts_with("tcp://"));
        if endpoint.skip_tls_verify {
            return Err(unreachable(
                "the context asks to skip TLS verification (`SkipTLSVerify`), which lkpkg does \
                 not do"
                    .to_owned(),
            ));
        }
        let docker = if let Some(dir) = tls {
            let [ca, cert, key] = ["ca.pem", "cert.pem", "key.pem"].map(|f| dir.join(f));
            if let Some(missing) = [&ca, &cert, &key].into_iter().find(|f| !f.is_file()) {
                return Err(unreachable(format!(
                    "TLS material `{}` is missing (lkpkg needs ca.pem, cert.pem and key.pem)",
                    missing.display()
                )));
            }
            Docker::connect_with_ssl(
                host,
                &key,
                &cert,
                &ca,
                REQUEST_TIMEOUT,
                bollard::API_DEFAULT_VERSION,
            )
        } else if let Some(path) = host.strip_prefix("unix://") {
            Docker::connect_with_unix(path, REQUEST_TIMEOUT, bollard::API_DEFAULT_VERSION)
        } else if let Some(rest) = host
            .strip_prefix("tcp://")
            .or_else(|| host.strip_prefix("http://"))
        {
            Docker::connect_with_http(
                &format!("http://{rest}"),
                REQUEST_TIMEOUT,
                bollard::API_DEFAULT_VERSION,
            )
        } else if host.starts_with("ssh://") {
            let target = SshTarget::parse(host).map_err(unreachable)?;
            Docker::connect_with_custom_transport(
                move |request: BollardRequest| ssh_request(target.clone(), request),
                Some("http://docker"),
                REQUEST_TIMEOUT,
                bollard::API_DEFAULT_VERSION,
            )
        } else {
            return Err(unreachable(
                "unsupported endpoint scheme (expected unix://, tcp:// or ssh://)".to_owned(),
            ));
        }
        .map_err(|e| unreachable(e.to_string()))?;
        // An engine that does not answer in time (a black-holed address, an ssh that hangs,
        // a wedged daemon) is unreachable; later requests have the long timeout builds need.
        let handshake = async {
            let docker = docker
                .negotiate_version()
                .await
                .map_err(|e| unreachable(e.to_string()))?;
            let negotiated = docker.client_version();
            let prefix = format!(
                "/v{}.{}",
                negotiated.major_version, negotiated.minor_version
            );
            let docker =
                docker.with_request_modifier(move |request| with_version(request, &prefix));
            let version = docker
                .version()
                .await
                .map_err(|e| unreachable(e.to_string()))?;
            Ok::<_, EngineError>((docker, negotiated, version))
        };
        let (docker, negotiated, version) = answered(handshake).await.map_err(unreachable)??;
        Ok(Engine {
            docker,
            endpoint: host.to_owned(),
            target: endpoint.clone(),
            arch: goarch(&version.arch.clone().unwrap_or_default()).to_owned(),
            version: version.version.unwrap_or_default(),
            api_version: negotiated.to_string(),
        })
    }

    pub fn endpoint(&self) -> &str {
        &self.endpoint
    }

    fn api(&self, e: impl std::fmt::Display) -> EngineError {
        EngineError::Api {
            endpoint: self.endpoint.clone(),
            message: e.to_string(),
        }
    }

    /// Where the engine listens.
    pub fn target(&self) -> &Endpoint {
        &self.target
    }

    /// The engine's API client.
    pub(crate) fn client(&self) -> &Docker {
        &self.docker
    }

    /// Checks that the engine's BuildKit can export images: Docker 23 or newer, with the
    /// containerd image store (only then does its BuildKit have the `oci` exporter and
    /// `oci-layout` contexts).
    #[tracing::instrument(level = "debug", skip_all, fields(endpoint = %self.endpoint()))]
    pub async fn check_buildkit(&self) -> Result<(), EngineError> {
        let major: u32 = self
            .version
            .split('.')
            .next()
            .and_then(|m| m.parse().ok())
            .unwrap_or(0);
        if major < 23 {
            return Err(EngineError::NoBuildKit {
                endpoint: self.endpoint.clone(),
                message: format!(
                    "Docker {} has no BuildKit lkpkg can build with (Docker 23 or newer with the \
                     containerd image store is needed)",
                    self.version
                ),
            });
        }
        let info = self.docker.info().await.map_err(|e| self.api(e))?;
        let containerd_store = info
            .driver_status
            .unwrap_or_default()
            .iter()
            .flatten()
            .any(|v| v.contains("io.containerd.snapshotter"));
        if !containerd_store {
            return Err(EngineError::NoBuildKit {
                endpoint: self.endpoint.clone(),
                message: format!(
                    "the engine's image store is `{}`, whose BuildKit cannot export images: enable \
                     the containerd image store (`\"features\": {{\"containerd-snapshotter\": \
                     true}}` in the engine's daemon.json, then restart it)",
                    info.driver.unwrap_or_default()
                ),
            });
        }
        Ok(())
    }

    /// `docker save` of one image, whole, in memory.
    #[tracing::instrument(level = "debug", skip_all, fields(endpoint = %self.endpoint(), image))]
    pub async fn save(&self, image: &str) -> Result<Vec<u8>, EngineError> {
        let mut stream = self.docker.export_image(image);
        let mut out = Vec::new();
        while let Some(chunk) = stream.next().await {
            out.extend_from_slice(&chunk.map_err(|e| self.api(e))?);
        }
        Ok(out)
    }

    /// `docker load` of a tar.
    #[tracing::instrument(level = "debug", skip_all, fields(endpoint = %self.endpoint(), bytes = tar.len()))]
    pub async fn load(&self, tar: Vec<u8>) -> Result<(), EngineError> {
        let mut stream = self.docker.import_image(
            ImportImageOptions::default(),
            bollard::body_full(tar.into()),
            None,
        );
        while let Some(item) = stream.next().await {
            let info = item.map_err(|e| self.api(e))?;
            if let Some(detail) = info.error_detail {
                return Err(self.api(detail.message.unwrap_or_default()));
            }
        }
        Ok(())
    }
}

impl Engine {
    /// Every `repo:tag` name the engine holds (`docker image ls`, untagged images left out).
    #[tracing::instrument(level = "debug", skip_all, fields(endpoint = %self.endpoint()))]
    pub async fn image_names(&self) -> Result<Vec<String>, EngineError> {
        let images = self
            .docker
            .list_images(Some(ListImagesOptions::default()))
            .await
            .map_err(|e| self.api(e))?;
        let mut names: Vec<String> = images
            .into_iter()
            .flat_map(|image| image.repo_tags)
            .filter(|name| name != "<none>:<none>")
            .collect();
        names.sort();
        names.dedup();
        Ok(names)
    }

    /// `docker rmi NAME` without force: removes the name, and the image (with its untagged
    /// parents, the classic builder's step images) when no other name or container uses it.
    #[tracing::instrument(level = "debug", skip_all, fields(endpoint = %self.endpoint(), name))]
    pub async fn remove_name(&self, name: &str) -> Result<(), EngineError> {
        self.docker
            .remove_image(name, Some(RemoveImageOptions::default()), None)
            .await
            .map(|_| ())
            .map_err(|e| self.api(e))
    }
}

/// Puts the negotiated `/vX.Y` in front of a request's path (see the module docs).
fn with_version(mut request: BollardRequest, prefix: &str) -> BollardRequest {
    let uri = request.uri();
    let path = uri.path();
    let versioned = path
        .strip_prefix("/v")
        .and_then(|rest| rest.split('/').next())
        .is_some_and(|v| !v.is_empty() && v.chars().all(|c| c.is_ascii_digit() || c == '.'));
    if versioned {
        return request;
    }
    let mut text = String::new();
    if let Some(scheme) = uri.scheme_str() {
        text.push_str(scheme);
        text.push_str("://");
    }
    if let Some(authority) = uri.authority() {
        text.push_str(authority.as_str());
    }
    text.push_str(prefix);
    text.push_str(uri.path_and_query().map_or(path, |pq| pq.as_str()));
    if let Ok(new_uri) = text.parse() {
        *request.uri_mut() = new_uri;
    }
    request
}

/// `ssh://[user@]host[:port]`, as the docker CLI reads it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct SshTarget {
    user: Option<String>,
    host: String,
    port: Option<u16>,
}

impl SshTarget {
    pub(crate) fn parse(endpoint: &str) -> Result<SshTarget, String> {
        let rest = endpoint
            .strip_prefix("ssh://")
            .ok_or_else(|| "not an ssh:// endpoint".to_owned())?;
        let authority = rest.strip_suffix('/').unwrap_or(rest);
        if authority.contains('/') || authority.contains('?') {
            return Err("an ssh:// endpoint has no path or query".to_owned());
        }
        let (user, host_port) = match authority.rsplit_once('@') {
            Some((user, rest)) if !user.is_empty() => (Some(user.to_owned()), rest),
            Some(_) => return Err("empty user name".to_owned()),
            None => (None, authority),
        };
        let (host, port) = match host_port.rsplit_once(':') {
            Some((host, port)) if !host.contains(':') || host.starts_with('[') => (
                host.trim_start_matches('[').trim_end_matches(']'),
                Some(
                    port.parse::<u16>()
                        .map_err(|_| format!("invalid port `{port}`"))?,
                ),
            ),
            _ => (host_port, None),
        };
        if host.is_empty() || host.starts_with('-') {
            return Err(format!("invalid host `{host}`"));
        }
        Ok(SshTarget {
            user,
            host: host.to_owned(),
            port,
        })
    }

    /// `ssh … docker system dial-stdio` with piped stdin and stdout (the connection), stderr
    /// as given; the child dies with its handle.
    pub(crate) fn spawn(
        &self,
        stderr: std::process::Stdio,
    ) -> std::io::Result<tokio::process::Child> {
        tokio::process::Command::new("ssh")
            .args(self.args())
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .stderr(stderr)
            .kill_on_drop(true)
            .spawn()
    }

    /// The `ssh` arguments, as the docker CLI passes them.
    pub(crate) fn args(&self) -> Vec<String> {
        let mut args = vec!["-o".to_owned(), "BatchMode=yes".to_owned()];
        if let Some(port) = self.port {
            args.extend(["-p".to_owned(), port.to_string()]);
        }
        if let Some(user) = &self.user {
            args.extend(["-l".to_owned(), user.clone()]);
        }
        args.extend(
            [&self.host, "--", "docker", "system", "dial-stdio"]
                .iter()
                .map(|s| (*s).to_owned()),
        );
        args
    }
}

/// One request over a fresh `ssh … docker system dial-stdio` child.
async fn ssh_request(
    target: SshTarget,
    mut request: BollardRequest,
) -> Result<hyper::Response<hyper::body::Incoming>, bollard::errors::Error> {
    let io_error = |message: String| bollard::errors::Error::IOError {
        err: std::io::Error::other(message),
    };
    let mut child = target
        .spawn(std::process::Stdio::piped())
        .map_err(|e| io_error(format!("cannot run `ssh`: {e}")))?;
    let (Some(stdin), Some(stdout), Some(mut stderr)) =
        (child.stdin.take(), child.stdout.take(), child.stderr.take())
    else {
        return Err(io_error("`ssh` started without its pipes".to_owned()));
    };
    // What ssh says about a failure (authentication, host keys) is the useful error.
    let stderr_text = tokio::spawn(async move {
        let mut text = String::new();
        let _ = stderr.read_to_string(&mut text).await;
        text
    });
    // The engine sees an origin-form request line, as over a socket.
    let origin = request
        .uri()
        .path_and_query()
        .map_or("/", |pq| pq.as_str())
        .to_owned();
    if let Ok(uri) = origin.parse() {
        *request.uri_mut() = uri;
    }
    if let Ok(host) = "docker".parse() {
        request.headers_mut().insert(hyper::header::HOST, host);
    }
    let stream = hyper_util::rt::TokioIo::new(tokio::io::join(stdout, stdin));
    let failed = |error: String, stderr_text: tokio::task::JoinHandle<String>| async move {
        let said = match tokio::time::timeout(std::time::Duration::from_secs(5), stderr_text).await
        {
            Ok(Ok(text)) => text.trim().to_owned(),
            _ => String::new(),
        };
        if said.is_empty() {
            io_error(format!(
                "through `ssh {}`: {error}",
                target_display(&target)
            ))
        } else {
            io_error(format!("`ssh {}`: {said}", target_display(&target)))
        }
    };
    let (mut sender, connection) = match hyper::client::conn::http1::handshake(stream).await {
        Ok(pair) => pair,
        Err(e) => return Err(failed(e.to_string(), stderr_text).await),
    };
    tokio::spawn(async move {
        let _ = connection.await;
        // The connection is done (the response body was read): the child goes with it.
        let _ = child.kill().await;
    });
    match sender.send_request(request).await {
        Ok(response) => Ok(response),
        Err(e) => Err(failed(e.to_string(), stderr_text).await),
    }
}

fn target_display(target: &SshTarget) -> String {
    let mut s = String::new();
    if let Some(user) = &target.user {
        s.push_str(user);
        s.push('@');
    }
    s.push_str(&target.host);
    if let Some(port) = target.port {
        s.push_str(&format!(":{port}"));
    }
    s
}

/// The engine architecture name of a platform's arch (they are the same GOARCH names, but
/// engines report `x86_64` / `aarch64` in some fields).
pub(crate) fn goarch(arch: &str) -> &str {
    match arch {
        "x86_64" => "amd64",
        "aarch64" => "arm64",
        other => other,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ssh_targets_parse_like_the_docker_cli() {
        let t = SshTarget::parse("ssh://root@box:2222").unwrap();
        assert_eq!(
            t.args(),
            [
                "-o",
                "BatchMode=yes",
                "-p",
                "2222",
                "-l",
                "root",
                "box",
                "--",
                "docker",
                "system",
                "dial-stdio"
            ]
        );
        let t = SshTarget::parse("ssh://box").unwrap();
        assert_eq!((t.user, t.host.as_str(), t.port), (None, "box", None));
        assert!(SshTarget::parse("ssh://box:notaport").is_err());
        assert!(SshTarget::parse("ssh://-oProxyCommand=x").is_err());
        assert!(SshTarget::parse("ssh://box/path").is_err());
    }

    #[test]
    fn requests_get_the_version_prefix_once() {
        let request = |uri: &str| {
            hyper::Request::builder()
                .uri(uri)
                .body(bollard::body_full(bytes::Bytes::new()))
                .unwrap()
        };
        let out = with_version(request("http://h:1/images/json?all=1"), "/v1.41");
        assert_eq!(out.uri().to_string(), "http://h:1/v1.41/images/json?all=1");
        let out = with_version(request("http://h:1/v1.41/version"), "/v1.41");
        assert_eq!(out.uri().to_string(), "http://h:1/v1.41/version");
        let out = with_version(request("http://h:1/volumes"), "/v1.41");
        assert_eq!(out.uri().to_string(), "http://h:1/v1.41/volumes");
    }
}
