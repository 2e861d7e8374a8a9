//! Which Docker engine builds which platform.
//!
//! # Selection
//! The builder of a platform `os/arch` is, as linuxkit chooses it (`pkglib/build.go`,
//! `pkglib/dockerimpl.go`), the first of:
//!
//! | source | what it names | when it does not exist |
//! |---|---|---|
//! | `--builders plat=ctx,…` | a docker context | bad input (exit 2), naming it |
//! | `LINUXKIT_BUILDERS` (same syntax; `--builders` overrides it per platform) | a docker context | bad input (exit 2), naming it |
//! | a docker context named `linuxkit-<os>-<arch>` | itself | next row |
//! | the default context | `DOCKER_HOST`, else `DOCKER_CONTEXT`, else `currentContext` of `config.json`, else the local socket | — |
//!
//! A platform with no builder of its own therefore builds on the default engine, under qemu
//! emulation where the engine's architecture differs. A value that contains `://` is taken as
//! an endpoint (`ssh://host`, `tcp://…`) instead of a context name; the context `default` is
//! the default context. Differences from linuxkit, on purpose: a `linuxkit-<os>-<arch>` context
//! that does not answer is an error naming it (exit 3), where linuxkit silently falls back to
//! the default context and builds under emulation; and named builders are checked before any
//! build ([`Builders::check`]), not when their platform first builds.
//!
//! # Connections and limits
//! Engines are connected lazily, once per endpoint, so a build where nothing needs building
//! never contacts an engine, and two platforms on one engine share its connection and its
//! concurrency limit (the per-builder limit, a semaphore the scheduler takes around each
//! build on it).

mod docker_config;
mod prune;

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use tokio::sync::{Mutex, Semaphore};

use super::docker::{Endpoint, Engine, EngineError};
use crate::graph::Platform;
pub use docker_config::DockerConfig;
pub use prune::Pruned;
pub(crate) use prune::prune;

/// How builders are chosen, as given by the user.
#[derive(Debug, Clone, Default)]
pub struct BuilderSpec {
    /// `--builders`, else `LINUXKIT_BUILDERS`: `platform=context,…`.
    pub builders: Option<String>,
    /// Units built at once on one engine.
    pub per_builder_limit: usize,
}

/// An engine with its concurrency limit.
#[derive(Debug)]
pub struct Builder {
    pub engine: Engine,
    /// Why this builder was chosen for the platform (for `pkg builder ls` and logs).
    pub reason: String,
    pub limit: Arc<Semaphore>,
}

/// The builder chosen for a platform, before any connection.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Selection {
    /// The docker context (`default` for the default context), or the endpoint given as is.
    pub context: String,
    pub endpoint: Endpoint,
    /// Why: `` `--builders` names context `arm` ``, `` context `linuxkit-linux-arm64` exists ``…
    pub reason: String,
}

/// What `pkg builder ls` shows of one platform.
#[derive(Debug)]
pub struct BuilderStatus {
    pub platform: Platform,
    pub selection: Selection,
    /// The engine, or why it does not answer.
    pub engine: Result<Engine, EngineError>,
}

/// Where a named builder came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Source {
    Flag,
    Env,
}

impl Source {
    fn name(self) -> &'static str {
        match self {
            Source::Flag => "`--builders`",
            Source::Env => "`LINUXKIT_BUILDERS`",
        }
    }
}

/// The builders of one invocation, connected on first use.
#[derive(Debug)]
pub struct Builders {
    spec: BuilderSpec,
    config: DockerConfig,
    /// platform → (context, where it was named); or why `--builders` is malformed.
    named: Result<BTreeMap<String, (String, Source)>, String>,
    connected: Mutex<HashMap<Endpoint, (Engine, Arc<Semaphore>)>>,
}

impl Builders {
    /// Builders from `spec` (`--builders` over `LINUXKIT_BUILDERS`) and the docker CLI's
    /// configuration (`DOCKER_CONFIG`, `DOCKER_HOST`, `DOCKER_CONTEXT`), both as the binary
    /// read them from its environment ([`crate::ops::Environment`]).
    pub fn new(spec: BuilderSpec, env_builders: Option<&str>, config: DockerConfig) -> Builders {
        Builders::with(spec, env_builders, config)
    }

    /// Builders with an explicit `LINUXKIT_BUILDERS` value and docker configuration.
    pub fn with(spec: BuilderSpec, env: Option<&str>, config: DockerConfig) -> Builders {
        let named = named_builders(spec.builders.as_deref(), env);
        Builders {
            spec,
            config,
            named,
            connected: Mutex::new(HashMap::new()),
        }
    }

    /// Checks, without connecting, that `--builders` / `LINUXKIT_BUILDERS` are well formed and
    /// that every context they name exists.
    pub fn check(&self) -> Result<(), EngineError> {
        let named = self.named()?;
        for (context, source) in named.values() {
            self.named_endpoint(context, *source)?;
        }
        Ok(())
    }

    /// The builder chosen for `platform`, and why; no connection is made.
    pub fn select(&self, platform: &Platform) -> Result<Selection, EngineError> {
        let key = platform.to_string();
        if let Some((context, source)) = self.named()?.get(&key) {
            let endpoint = self.named_endpoint(context, *source)?;
            let what = if context.contains("://") {
                "endpoint"
            } else {
                "context"
            };
            return Ok(Selection {
                context: context.clone(),
                endpoint,
                reason: format!("{} names {what} `{context}` for {key}", source.name()),
            });
        }
        let own = format!("linuxkit-{}-{}", platform.os, platform.arch);
        if let Some(endpoint) = self.config.context(&own)? {
            return Ok(Selection {
                context: own.clone(),
                endpoint,
                reason: format!("context `{own}` exists"),
            });
        }
        let (context, endpoint, why) = self.config.default_context()?;
        Ok(Selection {
            context,
            endpoint,
            reason: format!("no builder named for {key}: {why}"),
        })
    }

    /// The builder for `platform`, connected.
    pub async fn for_platform(&self, platform: &Platform) -> Result<Arc<Builder>, EngineError> {
        let selection = self.select(platform)?;
        let (engine, limit) = self.connect(&selection).await?;
        Ok(Arc::new(Builder {
            engine,
            reason: selection.reason,
            limit,
        }))
    }

    /// Per platform, the builder chosen, why, and the engine or why it does not answer. A
    /// malformed `--builders` or a named context that does not exist is an error.
    pub async fn status(&self, platforms: &[Platform]) -> Result<Vec<BuilderStatus>, EngineError> {
        let mut out = Vec::new();
        for platform in platforms {
            let selection = self.select(platform)?;
            let engine = self.connect(&selection).await.map(|(engine, _)| engine);
            out.push(BuilderStatus {
                platform: platform.clone(),
                selection,
                engine,
            });
        }
        Ok(out)
    }

    async fn connect(
        &self,
        selection: &Selection,
    ) -> Result<(Engine, Arc<Semaphore>), EngineError> {
        let mut connected = self.connected.lock().await;
        if let Some((engine, limit)) = connected.get(&selection.endpoint) {
            return Ok((engine.clone(), limit.clone()));
        }
        let engine = Engine::connect_endpoint(&selection.endpoint)
            .await
            .map_err(|e| match e {
                EngineError::Unreachable { endpoint, message } if selection.context != endpoint => {
                    EngineError::Unreachable {
                        endpoint,
                        message: format!("(context `{}`) {message}", selection.context),
                    }
                }
                other => other,
            })?;
        let limit = Arc::new(Semaphore::new(self.spec.per_builder_limit.max(1)));
        connected.insert(selection.endpoint.clone(), (engine.clone(), limit.clone()));
        Ok((engine, limit))
    }

    fn named(&self) -> Result<&BTreeMap<String, (String, Source)>, EngineError> {
        self.named
            .as_ref()
            .map_err(|message| EngineError::BadBuilder {
                message: message.clone(),
            })
    }

    fn named_endpoint(&self, context: &str, source: Source) -> Result<Endpoint, EngineError> {
        if context.contains("://") {
            return Ok(Endpoint::new(context));
        }
        if context == "default" {
            return Ok(self.config.default_endpoint());
        }
        self.config
            .context(context)?
            .ok_or_else(|| EngineError::BadBuilder {
                message: format!(
                    "builder `{context}` named in {} is not a docker context (none in `{}`)",
                    source.name(),
                    self.config.dir.join("contexts").display()
                ),
            })
    }
}

/// `LINUXKIT_BUILDERS` with `--builders` over it, per platform (as linuxkit merges them).
fn named_builders(
    flag: Option<&str>,
    env: Option<&str>,
) -> Result<BTreeMap<String, (String, Source)>, String> {
    let mut map = BTreeMap::new();
    for (value, source) in [(env, Source::Env), (flag, Source::Flag)] {
        let Some(value) = value.filter(|v| !v.trim().is_empty()) else {
            continue;
        };
        for item in value.split(',') {
            let item = item.trim();
            let (platform, builder) = item
                .split_once('=')
                .filter(|(p, b)| !p.is_empty() && !b.is_empty())
                .ok_or_else(|| {
                    format!(
                        "invalid builder `{item}` in {}: expected `os/arch=context`",
                        source.name()
                    )
                })?;
            let valid_platform = platform
                .split_once('/')
                .is_some_and(|(os, arch)| !os.is_empty() && !arch.is_empty());
            if !valid_platform {
                return Err(format!(
                    "invalid platform `{platform}` in {}: expected `os/arch`",
                    source.name()
                ));
            }
            // The env value may be passed as the flag too: keep saying where it came from.
            let same_as_env = map
                .get(platform)
                .is_some_and(|(b, s): &(String, Source)| *s == Source::Env && b == builder);
            if !same_as_env {
                map.insert(platform.to_owned(), (builder.to_owned(), source));
            }
        }
    }
    Ok(map)
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::docker_config::DEFAULT_HOST;

    use sha2::{Digest, Sha256};

    use super::*;

    pub(super) fn config(dir: &Path) -> DockerConfig {
        DockerConfig {
            dir: dir.to_owned(),
            docker_host: None,
            docker_context: None,
            tls_dir: None,
        }
    }

    pub(super) fn write_context(dir: &Path, name: &str, host: &str, tls: bool) {
        let id = hex::encode(Sha256::digest(name.as_bytes()));
        let meta = dir.join("contexts/meta").join(&id);
        std::fs::create_dir_all(&meta).unwrap();
        let json = serde_json::json!({
            "Name": name, "Metadata": {},
            "Endpoints": {"docker": {"Host": host, "SkipTLSVerify": false}}
        });
        std::fs::write(meta.join("meta.json"), json.to_string()).unwrap();
        if tls {
            let tls = dir.join("contexts/tls").join(&id).join("docker");
            std::fs::create_dir_all(&tls).unwrap();
            std::fs::write(tls.join("ca.pem"), "x").unwrap();
        }
    }

    fn spec(builders: Option<&str>) -> BuilderSpec {
        BuilderSpec {
            builders: builders.map(str::to_owned),
            per_builder_limit: 1,
        }
    }

    #[test]
    fn selection_order_is_linuxkits() {
        let dir = tempfile::tempdir().unwrap();
        write_context(dir.path(), "arm", "tcp://arm:2375", false);
        write_context(dir.path(), "env-arm", "tcp://env:2375", false);
        write_context(dir.path(), "linuxkit-linux-arm64", "ssh://own", false);
        write_context(dir.path(), "linuxkit-linux-riscv64", "tcp://rv:1", true);
        let arm64 = Platform::linux("arm64");

        let b = Builders::with(spec(Some("linux/arm64=arm")), None, config(dir.path()));
        let s = b.select(&arm64).unwrap();
        assert_eq!(s.endpoint, Endpoint::new("tcp://arm:2375"));
        assert_eq!(s.reason, "`--builders` names context `arm` for linux/arm64");

        // The flag overrides the env per platform; the env alone names its own.
        let b = Builders::with(
            spec(Some("linux/arm64=arm")),
            Some("linux/arm64=env-arm,linux/amd64=default"),
            config(dir.path()),
        );
        assert_eq!(b.select(&arm64).unwrap().context, "arm");
        let amd = b.select(&Platform::linux("amd64")).unwrap();
        assert_eq!(amd.endpoint, Endpoint::new(DEFAULT_HOST));
        assert!(
            amd.reason.starts_with("`LINUXKIT_BUILDERS` names"),
            "{}",
            amd.reason
        );

        // The env passed as the flag still says it came from the env.
        let b = Builders::with(
            spec(Some("linux/arm64=env-arm")),
            Some("linux/arm64=env-arm"),
            config(dir.path()),
        );
        assert!(
            b.select(&arm64)
                .unwrap()
                .reason
                .starts_with("`LINUXKIT_BUILDERS`")
        );

        let b = Builders::with(spec(None), None, config(dir.path()));
        let s = b.select(&arm64).unwrap();
        assert_eq!(s.endpoint, Endpoint::new("ssh://own"));
        assert_eq!(s.reason, "context `linuxkit-linux-arm64` exists");
        let s = b.select(&Platform::linux("riscv64")).unwrap();
        assert!(s.endpoint.tls.is_some());
        let s = b.select(&Platform::linux("amd64")).unwrap();
        assert_eq!(s.endpoint, Endpoint::new(DEFAULT_HOST));
        assert_eq!(s.context, "default");
    }

    #[test]
    fn bad_builders_are_user_errors_naming_the_builder() {
        let dir = tempfile::tempdir().unwrap();
        let b = Builders::with(spec(Some("linux/arm64=nope")), None, config(dir.path()));
        let e = b.check().unwrap_err();
        assert!(e.is_user_error());
        assert!(e.to_string().contains("`nope`"), "{e}");
        assert!(b.select(&Platform::linux("arm64")).is_err());
        // Platforms the flag does not name are unaffected by select.
        assert!(b.select(&Platform::linux("amd64")).is_ok());

        for bad in ["linux/arm64", "arm64=x", "=x", "linux/arm64="] {
            let b = Builders::with(spec(Some(bad)), None, config(dir.path()));
            let e = b.check().unwrap_err();
            assert!(e.is_user_error(), "{bad}");
        }
        let b = Builders::with(spec(None), Some("garbage"), config(dir.path()));
        assert!(
            b.check()
                .unwrap_err()
                .to_string()
                .contains("`LINUXKIT_BUILDERS`")
        );
    }
}
