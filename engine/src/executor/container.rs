//! linuxkit's `linuxkit-builder` container: a buildkitd beside an engine whose own BuildKit
//! cannot export images (no containerd image store).
//!
//! As linuxkit does it (reference §5.4): the container `NAME` (default `linuxkit-builder`,
//! `--builder-name` / `LINUXKIT_BUILDER_NAME`) is inspected, and recreated when
//! `--builder-restart` asks, when its image is not the wanted one (`--builder-image` /
//! `LINUXKIT_BUILDER_IMAGE`; its state volume `NAME-state` goes too), when it is not
//! privileged, or when its `/etc/buildkit/buildkitd.toml` differs from `--builder-config`.
//! It is created as `--privileged -v NAME-state:/var/lib/buildkit IMAGE
//! --allow-insecure-entitlement network.host --addr unix:///run/buildkit/buildkitd.sock --debug
//! [--config /etc/buildkit/buildkitd.toml]`, the config copied in, started, and waited for.
//!
//! A privileged container is only ever created in `--builder-mode container`: in the default
//! mode lkpkg uses such a container when one is already there, and otherwise says what to do.

use std::path::PathBuf;

use bollard::models::{ContainerCreateBody, HostConfig};
use bollard::query_parameters::{
    CreateContainerOptions, DownloadFromContainerOptions, InspectContainerOptions,
    RemoveContainerOptions, RemoveVolumeOptions, StartContainerOptions, UploadToContainerOptions,
};
use futures_util::StreamExt;
use sha2::Digest;

use super::docker::{Engine, EngineError};

/// linuxkit's default builder container name.
pub(crate) const DEFAULT_NAME: &str = "linuxkit-builder";
/// linuxkit's default builder image.
pub(crate) const DEFAULT_IMAGE: &str = "moby/buildkit:v0.26.3";
/// Where the config goes in the container.
const CONFIG_FILE: &str = "/etc/buildkit/buildkitd.toml";

/// Which BuildKit builds on an engine.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum BuilderMode {
    /// The engine's own BuildKit when it can export images; else an existing builder
    /// container.
    #[default]
    Auto,
    /// The engine's own BuildKit only.
    Engine,
    /// The builder container, created or recreated as needed.
    Container,
}

/// The builder container wanted.
#[derive(Debug, Clone)]
pub struct ContainerSpec {
    pub name: String,
    pub image: String,
    /// A `buildkitd.toml` to install.
    pub config: Option<PathBuf>,
    /// `--builder-restart`.
    pub restart: bool,
}

impl Default for ContainerSpec {
    fn default() -> Self {
        ContainerSpec {
            name: DEFAULT_NAME.to_owned(),
            image: DEFAULT_IMAGE.to_owned(),
            config: None,
            restart: false,
        }
    }
}

/// What is wrong with an existing container, if anything (why it is recreated).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Stale {
    Restart,
    Image { found: String },
    NotPrivileged,
    Config,
}

impl std::fmt::Display for Stale {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Stale::Restart => f.write_str("--builder-restart"),
            Stale::Image { found } => write!(f, "it runs `{found}`"),
            Stale::NotPrivileged => f.write_str("it is not privileged"),
            Stale::Config => f.write_str("its buildkitd.toml differs from --builder-config"),
        }
    }
}

/// The arguments buildkitd runs with in the container.
pub(crate) fn command(spec: &ContainerSpec) -> Vec<String> {
    let mut cmd: Vec<String> = [
        "--allow-insecure-entitlement",
        "network.host",
        "--addr",
        "unix:///run/buildkit/buildkitd.sock",
        "--debug",
    ]
    .iter()
    .map(|s| (*s).to_owned())
    .collect();
    if spec.config.is_some() {
        cmd.extend(["--config".to_owned(), CONFIG_FILE.to_owned()]);
    }
    cmd
}

fn api(engine: &Engine, what: &str, e: impl std::fmt::Display) -> EngineError {
    EngineError::Api {
        endpoint: engine.endpoint().to_owned(),
        message: format!("{what}: {e}"),
    }
}

/// Whether the container exists, and if so what (if anything) makes it stale.
pub(crate) async fn inspect(
    engine: &Engine,
    spec: &ContainerSpec,
) -> Result<Option<Option<Stale>>, EngineError> {
    let docker = engine.client();
    let found = match docker
        .inspect_container(&spec.name, None::<InspectContainerOptions>)
        .await
    {
        Ok(found) => found,
        Err(bollard::errors::Error::DockerResponseServerError {
            status_code: 404, ..
        }) => return Ok(None),
        Err(e) => return Err(api(engine, &format!("inspecting `{}`", spec.name), e)),
    };
    if spec.restart {
        return Ok(Some(Some(Stale::Restart)));
    }
    let image = found
        .config
        .as_ref()
        .and_then(|c| c.image.clone())
        .unwrap_or_default();
    if image != spec.image {
        return Ok(Some(Some(Stale::Image { found: image })));
    }
    let privileged = found
        .host_config
        .as_ref()
        .and_then(|h| h.privileged)
        .unwrap_or(false);
    if !privileged {
        return Ok(Some(Some(Stale::NotPrivileged)));
    }
    if let Some(config) = &spec.config {
        let wanted = std::fs::read(config)
            .map_err(|e| api(engine, &format!("reading `{}`", config.display()), e))?;
        if installed_config(engine, &spec.name).await
            != Some(sha2::Sha256::digest(&wanted).to_vec())
        {
            return Ok(Some(Some(Stale::Config)));
        }
    }
    Ok(Some(None))
}

/// The sha256 of the container's `buildkitd.toml`, if it has one.
async fn installed_config(engine: &Engine, name: &str) -> Option<Vec<u8>> {
    let mut stream = engine.client().download_from_container(
        name,
        Some(DownloadFromContainerOptions {
            path: CONFIG_FILE.to_owned(),
        }),
    );
    let mut tar_bytes = Vec::new();
    while let Some(chunk) = stream.next().await {
        tar_bytes.extend_from_slice(&chunk.ok()?);
        if tar_bytes.len() > 16 << 20 {
            return None;
        }
    }
    let mut archive = tar::Archive::new(&tar_bytes[..]);
    let mut entry = archive.entries().ok()?.next()?.ok()?;
    let mut content = Vec::new();
    std::io::Read::read_to_end(&mut entry, &mut content).ok()?;
    Some(sha2::Sha256::digest(&content).to_vec())
}

/// Makes sure the builder container runs as `spec` asks; returns its name. Creates a
/// privileged container: only call it in `--builder-mode container`.
pub(crate) async fn ensure(engine: &Engine, spec: &ContainerSpec) -> Result<String, EngineError> {
    let docker = engine.client();
    match inspect(engine, spec).await? {
        Some(None) => {}
        Some(Some(stale)) => {
            docker
                .remove_container(
                    &spec.name,
                    Some(RemoveContainerOptions {
                        force: true,
                        ..Default::default()
                    }),
                )
                .await
                .map_err(|e| api(engine, &format!("removing `{}` ({stale})", spec.name), e))?;
            if matches!(stale, Stale::Image { .. }) {
                // A state made by another BuildKit version is not reused.
                let _ = docker
                    .remove_volume(
                        &format!("{}-state", spec.name),
                        Some(RemoveVolumeOptions { force: true }),
                    )
                    .await;
            }
            create(engine, spec).await?;
        }
        None => create(engine, spec).await?,
    }
    docker
        .start_container(&spec.name, None::<StartContainerOptions>)
        .await
        .map_err(|e| {
            api(
                engine,
                &format!(
                    "starting the builder container `{}` (it must run privileged)",
                    spec.name
                ),
                e,
            )
        })?;
    Ok(spec.name.clone())
}

async fn create(engine: &Engine, spec: &ContainerSpec) -> Result<(), EngineError> {
    let docker = engine.client();
    let body = ContainerCreateBody {
        image: Some(spec.image.clone()),
        cmd: Some(command(spec)),
        host_config: Some(HostConfig {
            privileged: Some(true),
            binds: Some(vec![format!("{}-state:/var/lib/buildkit", spec.name)]),
            ..Default::default()
        }),
        ..Default::default()
    };
    let options = || {
        Some(CreateContainerOptions {
            name: Some(spec.name.clone()),
            ..Default::default()
        })
    };
    let creating = format!("creating `{}` from `{}`", spec.name, spec.image);
    match docker.create_container(options(), body.clone()).await {
        Ok(_) => {}
        // As `docker container create` does: pull a missing image, then create.
        Err(bollard::errors::Error::DockerResponseServerError {
            status_code: 404, ..
        }) => {
            pull(engine, &spec.image)
                .await
                .map_err(|e| api(engine, &creating, e))?;
            docker
                .create_container(options(), body)
                .await
                .map_err(|e| api(engine, &creating, e))?;
        }
        Err(e) => return Err(api(engine, &creating, e)),
    }
    if let Some(config) = &spec.config {
        let bytes = std::fs::read(config)
            .map_err(|e| api(engine, &format!("reading `{}`", config.display()), e))?;
        let mut archive = tar::Builder::new(Vec::new());
        let mut header = tar::Header::new_gnu();
        header.set_size(bytes.len() as u64);
        header.set_mode(0o644);
        archive
            // From `/`, so that the directories are made where the image lacks them.
            .append_data(&mut header, CONFIG_FILE.trim_start_matches('/'), &bytes[..])
            .map_err(|e| api(engine, "packing the config", e))?;
        let archive = archive
            .into_inner()
            .map_err(|e| api(engine, "packing the config", e))?;
        docker
            .upload_to_container(
                &spec.name,
                Some(UploadToContainerOptions {
                    path: "/".to_owned(),
                    ..Default::default()
                }),
                bollard::body_full(archive.into()),
            )
            .await
            .map_err(|e| {
                api(
                    engine,
                    &format!("copying the config into `{}`", spec.name),
                    e,
                )
            })?;
    }
    Ok(())
}

/// Pulls `image` into the engine.
async fn pull(engine: &Engine, image: &str) -> Result<(), String> {
    let options = bollard::query_parameters::CreateImageOptions {
        from_image: Some(image.to_owned()),
        ..Default::default()
    };
    let mut progress = engine.client().create_image(Some(options), None, None);
    while let Some(item) = progress.next().await {
        item.map_err(|e| format!("`{image}` is not in the engine and cannot be pulled: {e}"))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buildkitd_runs_as_linuxkit_runs_it() {
        let mut spec = ContainerSpec::default();
        assert_eq!(
            command(&spec),
            [
                "--allow-insecure-entitlement",
                "network.host",
                "--addr",
                "unix:///run/buildkit/buildkitd.sock",
                "--debug"
            ]
        );
        spec.config = Some("/x/buildkitd.toml".into());
        assert_eq!(
            command(&spec)[5..],
            ["--config", "/etc/buildkit/buildkitd.toml"]
        );
    }
}
