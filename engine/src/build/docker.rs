//! A Docker engine as a builder, through the Docker API (bollard).
//!
//! lkpkg builds with the engine's classic builder (it works on every engine, 20.10 included,
//! needs no privileged container) and takes the result out with an image export (`docker
//! save`), which the store converts into the OCI cache. Build containers run with network `none`
//! unless the package asks for the network (linuxkit's default; the engine's default bridge may
//! be absent). `forcerm` removes the intermediate containers of failed builds too.
//!
//! The API version is negotiated with the engine at connection, so that old (20.10, API 1.41)
//! and current engines both work.

use std::collections::{BTreeMap, HashMap};

use bollard::Docker;
use bollard::query_parameters::{BuildImageOptions, ImportImageOptions, TagImageOptions};
use futures_util::StreamExt;

/// A failure talking to, or building on, an engine.
#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    #[error("the Docker engine at `{endpoint}` does not answer: {message}")]
    Unreachable { endpoint: String, message: String },
    #[error("build failed: {message}")]
    BuildFailed {
        message: String,
        log_tail: Vec<String>,
    },
    #[error("Docker engine at `{endpoint}`: {message}")]
    Api { endpoint: String, message: String },
}

/// One engine, connected.
#[derive(Debug, Clone)]
pub struct Engine {
    docker: Docker,
    endpoint: String,
    /// The engine's architecture, in GOARCH terms (`amd64`, `arm64`).
    pub arch: String,
    pub version: String,
}

/// What one build needs.
#[derive(Debug)]
pub struct BuildRequest {
    pub context: Vec<u8>,
    /// Path of the Dockerfile inside the context.
    pub dockerfile: String,
    /// The name the engine gives the result.
    pub tag: String,
    pub platform: String,
    pub args: BTreeMap<String, String>,
    pub labels: BTreeMap<String, String>,
    pub network: bool,
    pub no_cache: bool,
}

impl Engine {
    /// Connects to `DOCKER_HOST` (unix or tcp), or the local socket, and negotiates the API
    /// version.
    pub async fn connect_default() -> Result<Engine, EngineError> {
        let endpoint = std::env::var("DOCKER_HOST")
            .ok()
            .filter(|h| !h.is_empty())
            .unwrap_or_else(|| "unix:///var/run/docker.sock".into());
        Engine::connect(&endpoint).await
    }

    /// Connects to `unix://…`, `tcp://…` or `http://…`.
    pub async fn connect(endpoint: &str) -> Result<Engine, EngineError> {
        let unreachable = |message: String| EngineError::Unreachable {
            endpoint: endpoint.to_owned(),
            message,
        };
        let docker = if let Some(path) = endpoint.strip_prefix("unix://") {
            Docker::connect_with_unix(path, 600, bollard::API_DEFAULT_VERSION)
        } else if let Some(rest) = endpoint
            .strip_prefix("tcp://")
            .or_else(|| endpoint.strip_prefix("http://"))
        {
            Docker::connect_with_http(&format!("http://{rest}"), 600, bollard::API_DEFAULT_VERSION)
        } else {
            return Err(unreachable(
                "unsupported endpoint scheme (expected unix:// or tcp://)".to_owned(),
            ));
        }
        .map_err(|e| unreachable(e.to_string()))?;
        let docker = docker
            .negotiate_version()
            .await
            .map_err(|e| unreachable(e.to_string()))?;
        let version = docker
            .version()
            .await
            .map_err(|e| unreachable(e.to_string()))?;
        Ok(Engine {
            docker,
            endpoint: endpoint.to_owned(),
            arch: version.arch.clone().unwrap_or_default(),
            version: version.version.unwrap_or_default(),
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

    /// Builds; `log` receives each line of the build's output.
    pub async fn build(
        &self,
        request: BuildRequest,
        mut log: impl FnMut(&str),
    ) -> Result<(), EngineError> {
        let options = BuildImageOptions {
            dockerfile: request.dockerfile.clone(),
            t: Some(request.tag.clone()),
            rm: true,
            forcerm: true,
            nocache: request.no_cache,
            buildargs: Some(request.args.into_iter().collect::<HashMap<_, _>>()),
            labels: Some(request.labels.into_iter().collect::<HashMap<_, _>>()),
            networkmode: Some(if request.network { "host" } else { "none" }.into()),
            platform: request.platform.clone(),
            ..Default::default()
        };
        let body = bollard::body_full(request.context.into());
        let mut stream = self.docker.build_image(options, None, Some(body));
        let mut tail: Vec<String> = Vec::new();
        while let Some(item) = stream.next().await {
            let info = match item {
                Ok(info) => info,
                Err(bollard::errors::Error::DockerStreamError { error }) => {
                    return Err(EngineError::BuildFailed {
                        message: error,
                        log_tail: tail,
                    });
                }
                Err(e) => return Err(self.api(e)),
            };
            if let Some(text) = info.stream {
                for line in text.lines().filter(|l| !l.trim().is_empty()) {
                    log(line);
                    tail.push(line.to_owned());
                    if tail.len() > 20 {
                        tail.remove(0);
                    }
                }
            }
            if let Some(detail) = info.error_detail {
                return Err(EngineError::BuildFailed {
                    message: detail.message.unwrap_or_default(),
                    log_tail: tail,
                });
            }
        }
        Ok(())
    }

    /// `docker save` of one image, whole, in memory.
    pub async fn save(&self, image: &str) -> Result<Vec<u8>, EngineError> {
        let mut stream = self.docker.export_image(image);
        let mut out = Vec::new();
        while let Some(chunk) = stream.next().await {
            out.extend_from_slice(&chunk.map_err(|e| self.api(e))?);
        }
        Ok(out)
    }

    /// `docker load` of a tar.
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

    /// Whether the engine has an image of that name.
    pub async fn has_image(&self, name: &str) -> bool {
        self.docker.inspect_image(name).await.is_ok()
    }

    /// `docker tag SOURCE REPO:TAG`.
    pub async fn tag(&self, source: &str, target: &str) -> Result<(), EngineError> {
        let (repo, tag) = lkpkg_cache_format::reference::split_tag(target);
        let options = TagImageOptions {
            repo: Some(repo.to_owned()),
            tag: Some(tag.unwrap_or("latest").to_owned()),
        };
        self.docker
            .tag_image(source, Some(options))
            .await
            .map_err(|e| self.api(e))
    }
}

/// The engine architecture name of a platform's arch (they are the same GOARCH names, but
/// engines report `x86_64` / `aarch64` in some fields).
pub fn goarch(arch: &str) -> &str {
    match arch {
        "x86_64" => "amd64",
        "aarch64" => "arm64",
        other => other,
    }
}
