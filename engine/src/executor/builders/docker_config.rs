//! The docker CLI's configuration: its directory, the environment that selects the default
//! context, and the contexts it stores, each an endpoint a builder can be.
//!
//! # Docker contexts
//! Read from the docker CLI's store, `$DOCKER_CONFIG` (else `~/.docker`):
//! `contexts/meta/<sha256 of the name>/meta.json` holds `Endpoints.docker.Host`;
//! `contexts/tls/<sha256 of the name>/docker/` holds TLS material when the context has any.

use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};

use crate::executor::docker::{Endpoint, EngineError};

/// The endpoint of the default context when nothing else names one.
pub(crate) const DEFAULT_HOST: &str = "unix:///var/run/docker.sock";

/// The docker CLI's configuration directory and the environment that selects its default
/// context.
#[derive(Debug, Clone)]
pub struct DockerConfig {
    pub dir: PathBuf,
    /// `DOCKER_HOST`.
    pub docker_host: Option<String>,
    /// `DOCKER_CONTEXT`.
    pub docker_context: Option<String>,
    /// `DOCKER_TLS_VERIFY` and `DOCKER_CERT_PATH`: TLS material for `DOCKER_HOST`.
    pub tls_dir: Option<PathBuf>,
}

impl DockerConfig {
    /// `DOCKER_CONFIG` (else `~/.docker`), `DOCKER_HOST`, `DOCKER_CONTEXT`, `DOCKER_TLS_VERIFY`.
    pub fn from_env() -> DockerConfig {
        let var = |name: &str| std::env::var(name).ok().filter(|v| !v.is_empty());
        let dir = var("DOCKER_CONFIG").map_or_else(
            || PathBuf::from(std::env::var_os("HOME").unwrap_or_default()).join(".docker"),
            PathBuf::from,
        );
        let tls_dir = var("DOCKER_TLS_VERIFY")
            .map(|_| var("DOCKER_CERT_PATH").map_or_else(|| dir.clone(), PathBuf::from));
        DockerConfig {
            docker_host: var("DOCKER_HOST"),
            docker_context: var("DOCKER_CONTEXT"),
            tls_dir,
            dir,
        }
    }

    /// The endpoint of the `default` context: `DOCKER_HOST`, else the local socket.
    pub fn default_endpoint(&self) -> Endpoint {
        match &self.docker_host {
            Some(host) => Endpoint {
                host: host.clone(),
                tls: self.tls_dir.clone(),
                skip_tls_verify: false,
            },
            None => Endpoint::new(DEFAULT_HOST),
        }
    }

    /// The context the docker CLI would use with no `--context`: its name, endpoint and why.
    pub fn default_context(&self) -> Result<(String, Endpoint, String), EngineError> {
        if let Some(host) = &self.docker_host {
            return Ok((
                "default".into(),
                self.default_endpoint(),
                format!("the default context (`DOCKER_HOST={host}`)"),
            ));
        }
        let (name, source) = if let Some(name) = &self.docker_context {
            (name.clone(), "`DOCKER_CONTEXT`")
        } else if let Some(name) = self.current_context()? {
            (name, "`currentContext` in config.json")
        } else {
            return Ok((
                "default".into(),
                self.default_endpoint(),
                "the default context (the local socket)".into(),
            ));
        };
        if name == "default" {
            return Ok((
                name,
                self.default_endpoint(),
                format!("the default context ({source})"),
            ));
        }
        let endpoint = self
            .context(&name)?
            .ok_or_else(|| EngineError::BadBuilder {
                message: format!("context `{name}` named by {source} does not exist"),
            })?;
        let why = format!("context `{name}` ({source})");
        Ok((name, endpoint, why))
    }

    /// `currentContext` of `config.json`, if set.
    fn current_context(&self) -> Result<Option<String>, EngineError> {
        let path = self.dir.join("config.json");
        let Some(value) = read_json(&path)? else {
            return Ok(None);
        };
        Ok(value
            .get("currentContext")
            .and_then(|c| c.as_str())
            .filter(|c| !c.is_empty())
            .map(str::to_owned))
    }

    /// The endpoint of the context `name`, if it exists.
    pub fn context(&self, name: &str) -> Result<Option<Endpoint>, EngineError> {
        let id = hex::encode(Sha256::digest(name.as_bytes()));
        let meta = self
            .dir
            .join("contexts")
            .join("meta")
            .join(&id)
            .join("meta.json");
        let Some(value) = read_json(&meta)? else {
            return Ok(None);
        };
        let host = value
            .pointer("/Endpoints/docker/Host")
            .and_then(|h| h.as_str())
            .filter(|h| !h.is_empty())
            .map_or_else(|| DEFAULT_HOST.to_owned(), str::to_owned);
        let tls = self
            .dir
            .join("contexts")
            .join("tls")
            .join(&id)
            .join("docker");
        let tls = has_files(&tls).then_some(tls);
        let skip_tls_verify = value
            .pointer("/Endpoints/docker/SkipTLSVerify")
            .and_then(|v| v.as_bool())
            .unwrap_or(false);
        Ok(Some(Endpoint {
            host,
            tls,
            skip_tls_verify,
        }))
    }
}

fn read_json(path: &Path) -> Result<Option<serde_json::Value>, EngineError> {
    let error = |message: String| EngineError::Config {
        path: path.to_owned(),
        message,
    };
    match std::fs::read(path) {
        Ok(bytes) => serde_json::from_slice(&bytes)
            .map(Some)
            .map_err(|e| error(e.to_string())),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(error(e.to_string())),
    }
}

fn has_files(dir: &Path) -> bool {
    std::fs::read_dir(dir).is_ok_and(|mut entries| entries.next().is_some())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::executor::builders::tests::{config, write_context};

    #[test]
    fn default_context_follows_the_docker_cli() {
        let dir = tempfile::tempdir().unwrap();
        write_context(dir.path(), "remote", "tcp://remote:2375", false);
        std::fs::write(
            dir.path().join("config.json"),
            r#"{"currentContext":"remote"}"#,
        )
        .unwrap();
        let mut c = config(dir.path());
        assert_eq!(
            c.default_context().unwrap().1,
            Endpoint::new("tcp://remote:2375")
        );
        c.docker_context = Some("default".into());
        assert_eq!(c.default_context().unwrap().1, Endpoint::new(DEFAULT_HOST));
        c.docker_context = Some("missing".into());
        assert!(c.default_context().unwrap_err().is_user_error());
        // DOCKER_HOST wins over DOCKER_CONTEXT, as in the docker CLI.
        c.docker_host = Some("tcp://h:1".into());
        assert_eq!(c.default_context().unwrap().1, Endpoint::new("tcp://h:1"));
    }
}
