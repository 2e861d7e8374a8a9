//! One solve: the session, the control call, the progress stream.
//!
//! The control API is reached through the engine's `/grpc` upgrade ([`super::dial`]). A solve
//! sends the dockerfile frontend's attributes and names the session; while it runs, `Status`
//! with the same ref streams the vertices (steps) and their logs, which become
//! [`ProgressLine`]s numbered as buildx numbers them (`#3 [2/4] RUN …`, `#3 CACHED`).

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use bollard_buildkit_proto::moby::buildkit::v1::control_client::ControlClient;
use bollard_buildkit_proto::moby::buildkit::v1::{
    CacheOptions, SolveRequest as WireSolve, StatusRequest,
};
use futures_util::StreamExt;

use super::content::Blobs;
use super::context_tree::ContextTree;
use super::filesync::{ExportSink, SyncedDirs};
use super::session::{self, Services};
use crate::executor::docker::{Endpoint, EngineError};

/// What one solve needs.
#[derive(Debug)]
pub(crate) struct Solve {
    /// Shown by the engine as the session's name.
    pub name: String,
    /// A stable key for the context (BuildKit reuses its copy of a context with the same key).
    pub shared_key: String,
    pub context: ContextTree,
    /// The Dockerfile (and its `.dockerignore`), under the name `filename` gives.
    pub dockerfile: ContextTree,
    pub frontend_attrs: BTreeMap<String, String>,
    pub exporter: String,
    pub exporter_attrs: BTreeMap<String, String>,
    /// What named contexts read from the session.
    pub blobs: Blobs,
    /// `--ssh`: agent sockets by id.
    pub ssh: BTreeMap<String, std::path::PathBuf>,
    /// Registry credentials for the builder's pulls.
    pub auth: super::auth::RegistryAuth,
}

/// One line of a build's progress, for people.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct ProgressLine {
    pub text: String,
    /// The platform of the step the line is about, when the solve builds several platforms
    /// (BuildKit then names each step `[linux/arm64 2/3] RUN …`); `None` for a solve of one
    /// platform and for steps of none (the context, the export).
    pub platform: Option<String>,
}

/// The platform a step's name starts with (`[linux/arm64 stage-1 2/3] RUN …` →
/// `linux/arm64`); `None` for names without one (`[2/3] RUN …`, `[internal] load …`).
fn step_platform(name: &str) -> Option<String> {
    let inner = name.strip_prefix('[')?;
    let token = inner.split([' ', ']']).next()?;
    let (os, rest) = token.split_once('/')?;
    (!os.is_empty() && os.bytes().all(|b| b.is_ascii_lowercase()) && !rest.is_empty())
        .then(|| token.to_owned())
}

/// How a solve failed.
#[derive(Debug, thiserror::Error)]
pub(crate) enum SolveError {
    /// The builder could not be reached or used.
    #[error(transparent)]
    Engine(#[from] EngineError),
    /// The build itself failed (the message is BuildKit's).
    #[error("{message}")]
    Failed { message: String },
}

/// Where a solve's BuildKit is.
#[derive(Debug, Clone)]
pub(crate) enum Target {
    /// The engine's own BuildKit, through its `/grpc` and `/session` endpoints.
    Engine(Endpoint),
    /// buildkitd in a container of the engine (linuxkit's `linuxkit-builder`), through
    /// `buildctl dial-stdio` ([`super::hijack`]).
    Container {
        docker: bollard::Docker,
        container: String,
        /// The engine's endpoint, for messages.
        endpoint: String,
    },
}

impl Target {
    fn describe(&self) -> String {
        match self {
            Target::Engine(endpoint) => endpoint.host.clone(),
            Target::Container {
                container,
                endpoint,
                ..
            } => format!("container `{container}` on {endpoint}"),
        }
    }
}

thread_local! {
    /// Tests: open sessions on the engine through `Control.Session`, as with a buildkitd in a
    /// container, to exercise that path where no such container can run.
    pub(crate) static HIJACK_ENGINE_SESSIONS: std::cell::Cell<bool> =
        const { std::cell::Cell::new(false) };
}

/// Runs a solve; the exporter's archive goes to `sink` as it arrives.
#[tracing::instrument(level = "debug", skip_all)]
pub(crate) async fn run(
    target: &Target,
    solve: Solve,
    sink: tokio::sync::mpsc::Sender<bytes::Bytes>,
    progress: Arc<dyn Fn(ProgressLine) + Send + Sync>,
) -> Result<HashMap<String, String>, SolveError> {
    let export = Arc::new(ExportSink::default());
    *export.sink.lock().expect("fresh mutex") = Some(sink);
    let mut dirs = SyncedDirs::default();
    dirs.dirs.insert("context".into(), Arc::new(solve.context));
    dirs.dirs
        .insert("dockerfile".into(), Arc::new(solve.dockerfile));
    let endpoint = super::control_endpoint();
    let channel = match target {
        Target::Engine(engine) => {
            endpoint
                .connect_with_connector(super::dial::grpc_connector(engine.clone()))
                .await
        }
        Target::Container {
            docker, container, ..
        } => {
            endpoint
                .connect_with_connector(super::hijack::exec_connector(
                    docker.clone(),
                    container.clone(),
                    Default::default(),
                ))
                .await
        }
    }
    .map_err(|e| control_channel_error(target, &e))?;
    let mut client = ControlClient::new(channel)
        .max_decoding_message_size(16 << 20)
        .max_encoding_message_size(16 << 20);
    let services = Services {
        dirs,
        export: export.clone(),
        blobs: solve.blobs,
        agents: super::sshforward::Agents { sockets: solve.ssh },
        auth: solve.auth,
    };
    let opener = match target {
        Target::Engine(engine) if !HIJACK_ENGINE_SESSIONS.with(|h| h.get()) => {
            session::Opener::Engine(engine)
        }
        _ => session::Opener::Control(&mut client),
    };
    let session = session::start(opener, &solve.name, &solve.shared_key, services).await?;
    let reference = session::new_id();
    let request = WireSolve {
        r#ref: reference.clone(),
        definition: None,
        exporter_deprecated: solve.exporter,
        exporter_attrs_deprecated: solve.exporter_attrs.into_iter().collect(),
        session: session.id.clone(),
        frontend: "dockerfile.v0".into(),
        frontend_attrs: solve.frontend_attrs.into_iter().collect(),
        cache: Some(CacheOptions::default()),
        entitlements: Vec::new(),
        frontend_inputs: HashMap::new(),
        internal: false,
        source_policy: None,
        exporters: Vec::new(),
        enable_session_exporter: false,
        source_policy_session: String::new(),
    };
    let status = tokio::spawn(follow_status(client.clone(), reference, progress));
    let mut solving = client.clone();
    let result = tokio::select! {
        result = solving.solve(request) => result.map_err(|status| failure(&target.describe(), status)),
        wedged = watch_liveness(client.clone(), target) => Err(SolveError::Engine(wedged)),
    };
    // The status stream ends with the solve; give it a moment to deliver the last lines.
    let _ = tokio::time::timeout(std::time::Duration::from_secs(2), status).await;
    drop(session);
    // Without an export (a failed solve), the ingest waits for a stream that never comes:
    // dropping the sender ends it.
    if let Ok(mut sink) = export.sink.lock() {
        sink.take();
    }
    result.map(|response| response.into_inner().exporter_response)
}

/// Returns only when the builder has stopped answering during a solve: every builder timeout
/// (`LKPKG_BUILDER_TIMEOUT`, 30 s by default; never if `0`) it is asked for its `Info` on the
/// solve's own connection, and one that gives no answer within the timeout is wedged (a
/// stopped buildkitd or dockerd, a dead proxy, a network gone quiet). A solve itself has no
/// time limit: a `RUN` may be silent for an hour, and BuildKit sends no progress meanwhile;
/// the question tells a slow build from a builder that no longer answers. Any answer, an error
/// included (an old BuildKit without `Info` says `Unimplemented`), proves it alive.
async fn watch_liveness(
    client: ControlClient<tonic::transport::Channel>,
    target: &Target,
) -> EngineError {
    let Some(every) = crate::executor::docker::builder_timeout() else {
        return std::future::pending().await;
    };
    loop {
        tokio::time::sleep(every).await;
        let mut asking = client.clone();
        if let Err(reason) = crate::executor::docker::answered(
            asking.info(bollard_buildkit_proto::moby::buildkit::v1::InfoRequest {}),
        )
        .await
        {
            return EngineError::Api {
                endpoint: target.describe(),
                message: format!("the builder stopped answering during the build: {reason}"),
            };
        }
    }
}

/// Why the control channel could not be opened. tonic says only "transport error"; the
/// connector's own error is inside (the dial's, with the endpoint and the timeout it waited):
/// that one is returned as it is, anything else with its causes.
fn control_channel_error(target: &Target, e: &tonic::transport::Error) -> EngineError {
    let mut next: Option<&(dyn std::error::Error + 'static)> = Some(e);
    let mut words = Vec::new();
    while let Some(cause) = next {
        if let Some(engine) = cause.downcast_ref::<EngineError>() {
            return engine.clone();
        }
        words.push(cause.to_string());
        next = cause.source();
    }
    words.dedup();
    EngineError::Api {
        endpoint: target.describe(),
        message: format!("BuildKit control channel: {}", words.join(": ")),
    }
}

/// Classifies a solve's gRPC failure: transport problems are the environment's, the rest is
/// the build's.
fn failure(endpoint: &str, status: tonic::Status) -> SolveError {
    match status.code() {
        tonic::Code::Unavailable | tonic::Code::Unimplemented => {
            SolveError::Engine(EngineError::Api {
                endpoint: endpoint.to_owned(),
                message: format!("BuildKit: {}", status.message()),
            })
        }
        _ => SolveError::Failed {
            message: status.message().to_owned(),
        },
    }
}

/// Turns the `Status` stream of a solve into progress lines.
async fn follow_status(
    mut client: ControlClient<tonic::transport::Channel>,
    reference: String,
    progress: Arc<dyn Fn(ProgressLine) + Send + Sync>,
) {
    let Ok(response) = client
        .status(StatusRequest {
            r#ref: reference.clone(),
        })
        .await
    else {
        return;
    };
    let mut stream = response.into_inner();
    let mut numbers: HashMap<String, usize> = HashMap::new();
    let mut started: HashMap<String, bool> = HashMap::new();
    let mut partial: HashMap<String, String> = HashMap::new();
    let number = |numbers: &mut HashMap<String, usize>, digest: &str| -> usize {
        let next = numbers.len() + 1;
        *numbers.entry(digest.to_owned()).or_insert(next)
    };
    let mut platforms: HashMap<String, String> = HashMap::new();
    let say = |text: String, platform: Option<&String>| {
        progress(ProgressLine {
            text,
            platform: platform.cloned(),
        })
    };
    while let Some(Ok(update)) = stream.next().await {
        for vertex in &update.vertexes {
            let n = number(&mut numbers, &vertex.digest);
            if !platforms.contains_key(&vertex.digest)
                && let Some(platform) = step_platform(&vertex.name)
            {
                platforms.insert(vertex.digest.clone(), platform);
            }
            let platform = platforms.get(&vertex.digest);
            let was_started = started.get(&vertex.digest).copied().unwrap_or(false);
            if (vertex.started.is_some() || vertex.cached) && !was_started {
                started.insert(vertex.digest.clone(), true);
                say(format!("#{n} {}", vertex.name), platform);
            }
            if vertex.completed.is_some() {
                if vertex.cached {
                    say(format!("#{n} CACHED"), platform);
                } else if !vertex.error.is_empty() {
                    say(format!("#{n} ERROR: {}", vertex.error), platform);
                }
            }
        }
        for log in &update.logs {
            let n = number(&mut numbers, &log.vertex);
            let buffer = partial.entry(log.vertex.clone()).or_default();
            buffer.push_str(&String::from_utf8_lossy(&log.msg));
            while let Some(end) = buffer.find('\n') {
                let line: String = buffer.drain(..=end).collect();
                let line = line.trim_end_matches(['\n', '\r']);
                say(format!("#{n} {line}"), platforms.get(&log.vertex));
            }
        }
        for warning in &update.warnings {
            say(
                format!(
                    "warning: {}",
                    String::from_utf8_lossy(&warning.short).trim()
                ),
                platforms.get(&warning.vertex),
            );
        }
    }
    for (vertex, rest) in partial {
        if !rest.trim().is_empty() {
            let n = number(&mut numbers, &vertex);
            say(format!("#{n} {}", rest.trim_end()), platforms.get(&vertex));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::step_platform;

    #[test]
    fn a_step_of_a_multi_platform_solve_names_its_platform() {
        let platform = |name: &str| step_platform(name);
        assert_eq!(
            platform("[linux/arm64 2/3] RUN uname -m").as_deref(),
            Some("linux/arm64")
        );
        assert_eq!(
            platform("[linux/arm64/v8 build 1/2] FROM docker.io/x").as_deref(),
            Some("linux/arm64/v8")
        );
        assert_eq!(platform("[2/3] RUN uname -m"), None);
        assert_eq!(
            platform("[internal] load build definition from Dockerfile"),
            None
        );
        assert_eq!(platform("[stage-1 2/3] COPY a /"), None);
        assert_eq!(platform("exporting to oci image format"), None);
    }
}
