//! The process environment the engine depends on, read once, by the binary: no engine module
//! reads a variable of its own, so every input of a command is in its configuration (and a
//! test can give its own).

use std::collections::BTreeMap;

pub use crate::executor::builders::DockerConfig;

/// The proxy variables docker passes to builds as build arguments (`http_proxy`, …).
const PROXY_VARIABLES: [&str; 10] = [
    "http_proxy",
    "HTTP_PROXY",
    "https_proxy",
    "HTTPS_PROXY",
    "ftp_proxy",
    "FTP_PROXY",
    "no_proxy",
    "NO_PROXY",
    "all_proxy",
    "ALL_PROXY",
];

/// What a build or a builder command takes from the environment.
#[derive(Debug, Clone)]
pub struct Environment {
    /// `LINUXKIT_BUILDERS`: builders per platform, under `--builders`.
    pub linuxkit_builders: Option<String>,
    /// The docker CLI's configuration: `DOCKER_CONFIG` (else `~/.docker`), `DOCKER_HOST`,
    /// `DOCKER_CONTEXT`, `DOCKER_TLS_VERIFY`/`DOCKER_CERT_PATH`.
    pub docker: DockerConfig,
    /// The proxy variables set (passed to builds, as docker passes them; never hashed).
    pub proxies: BTreeMap<String, String>,
}

impl Environment {
    /// The environment of this process.
    pub fn from_process() -> Environment {
        Environment {
            linuxkit_builders: std::env::var("LINUXKIT_BUILDERS").ok(),
            docker: DockerConfig::from_env(),
            proxies: PROXY_VARIABLES
                .iter()
                .filter_map(|name| Some(((*name).to_owned(), std::env::var(name).ok()?)))
                .collect(),
        }
    }
}
