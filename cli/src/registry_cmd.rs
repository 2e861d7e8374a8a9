//! The registry client the command line and the environment describe; the registry
//! commands themselves are `lkpkg_engine::ops::registry`'s.

use std::path::PathBuf;
use std::sync::Arc;

use anyhow::Result;
use lkpkg_engine::ops::registry::{self, Registry, Settings};

use crate::args::GlobalArgs;

/// The registry client the command line and the environment describe: `--registry-creds`,
/// the docker CLI config (`DOCKER_CONFIG`, else `~/.docker`), `--cert-file`,
/// `LINUXKIT_MIRROR` then `--mirror`, the engine's `insecure-registries`
/// (`/etc/docker/daemon.json`). Retries and mirror fallbacks are said on stderr (not with
/// `-q`); where credentials come from, with `-v 2`.
pub fn client(global: &GlobalArgs, registry_creds: &[String]) -> Result<Arc<Registry>> {
    let docker_config = std::env::var_os("DOCKER_CONFIG")
        .filter(|d| !d.is_empty())
        .map(PathBuf::from)
        .or_else(|| {
            std::env::var_os("HOME")
                .filter(|h| !h.is_empty())
                .map(|h| PathBuf::from(h).join(".docker"))
        });
    let mut mirrors: Vec<String> = std::env::var("LINUXKIT_MIRROR")
        .unwrap_or_default()
        .split([',', ' '])
        .filter(|m| !m.is_empty())
        .map(str::to_owned)
        .collect();
    mirrors.extend(global.mirror.iter().cloned());
    let insecure = std::fs::read("/etc/docker/daemon.json")
        .ok()
        .and_then(|b| serde_json::from_slice::<serde_json::Value>(&b).ok())
        .and_then(|v| {
            v["insecure-registries"].as_array().map(|a| {
                a.iter()
                    .filter_map(|r| r.as_str().map(str::to_owned))
                    .collect::<Vec<_>>()
            })
        })
        .unwrap_or_default();
    let quiet = global.quiet;
    let debug = global.verbose >= 2;
    let log: registry::Log = Arc::new(move |level, message: String| {
        let shown = match level {
            registry::Level::Info => !quiet,
            registry::Level::Debug => debug,
        };
        if shown {
            crate::output::errln!("    Registry {message}");
        }
    });
    let settings = Settings {
        registry_creds: registry_creds.to_vec(),
        docker_config,
        cert_files: global.cert_file.clone(),
        mirrors,
        insecure,
        log: Some(log),
        timeout: crate::waits::registry()?,
    };
    Ok(Arc::new(Registry::new(settings)?))
}
