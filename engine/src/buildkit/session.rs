//! A BuildKit session: the services lkpkg offers the builder during one solve, served over the
//! engine's `/session` endpoint.
//!
//! The upgrade request names the session (`X-Docker-Expose-Session-Uuid`, `-Name`,
//! `-Sharedkey`) and lists every method the session serves (`X-Docker-Expose-Session-Grpc-
//! Method`, one header each): the builder calls only what is listed. The services:
//! - `grpc.health.v1.Health`: the builder checks the session is alive every few seconds and
//!   drops it when a check fails;
//! - `moby.filesync.v1.FileSync`: the context and the Dockerfile ([`super::filesync`]);
//! - `moby.filesync.v1.FileSend`: the exporter's archive ([`super::filesync`]);
//! - `containerd.services.content.v1.Content`: the linuxkit cache, read-only, for named
//!   contexts ([`super::content`]);
//! - `moby.sshforward.v1.SSH`: the ssh agents `--ssh` forwards ([`super::sshforward`]);
//! - `moby.filesync.v1.Auth`: registry credentials for the builder's pulls ([`super::auth`]).
//!
//! Requests are routed by their path's service name to one of these (tonic's own router would
//! bring axum in for five string comparisons).

use std::collections::HashMap;
use std::sync::Arc;
use std::task::{Context, Poll};

use bollard_buildkit_proto::health::health_check_response::ServingStatus;
use bollard_buildkit_proto::health::health_server::{Health, HealthServer};
use bollard_buildkit_proto::health::{
    HealthCheckRequest, HealthCheckResponse, HealthListRequest, HealthListResponse,
};
use bollard_buildkit_proto::moby::buildkit::v1::control_client::ControlClient;
use bollard_buildkit_proto::moby::filesync::v1::file_send_server::FileSendServer;
use bollard_buildkit_proto::moby::filesync::v1::file_sync_server::FileSyncServer;
use tonic::codegen::{BoxFuture, Service, http};
use tonic::server::NamedService;
use tonic::{Request, Response, Status};

use super::content::{self, ContentServer};
use super::dial;
use super::filesync::{ExportSink, SyncedDirs};
use super::sshforward::Agents;
use crate::executor::docker::{Endpoint, EngineError};
use bollard_buildkit_proto::moby::filesync::v1::auth_server::AuthServer;
use bollard_buildkit_proto::moby::sshforward::v1::ssh_server::SshServer;

use super::auth::RegistryAuth;

/// The largest message either side sends (BuildKit's own limit).
const MAX_MESSAGE: usize = 16 << 20;

#[derive(Debug, Default)]
struct Alive;

#[tonic::async_trait]
impl Health for Alive {
    async fn check(
        &self,
        _request: Request<HealthCheckRequest>,
    ) -> Result<Response<HealthCheckResponse>, Status> {
        Ok(Response::new(HealthCheckResponse {
            status: ServingStatus::Serving as i32,
        }))
    }

    async fn list(
        &self,
        _request: Request<HealthListRequest>,
    ) -> Result<Response<HealthListResponse>, Status> {
        Ok(Response::new(HealthListResponse {
            statuses: HashMap::new(),
        }))
    }

    type WatchStream = std::pin::Pin<
        Box<dyn futures_util::Stream<Item = Result<HealthCheckResponse, Status>> + Send>,
    >;

    async fn watch(
        &self,
        _request: Request<HealthCheckRequest>,
    ) -> Result<Response<Self::WatchStream>, Status> {
        Err(Status::unimplemented("watch"))
    }
}

/// What one session serves.
#[derive(Debug)]
pub(crate) struct Services {
    pub dirs: SyncedDirs,
    pub export: Arc<ExportSink>,
    pub blobs: content::Blobs,
    pub agents: Agents,
    pub auth: RegistryAuth,
}

/// The session's router; see the module docs.
#[derive(Clone)]
struct Router {
    health: HealthServer<Alive>,
    sync: FileSyncServer<SyncedDirs>,
    send: FileSendServer<ExportSinkRef>,
    content: ContentServer,
    ssh: SshServer<Agents>,
    auth: AuthServer<RegistryAuth>,
}

/// The export sink, shared with the solve that reads it.
#[derive(Debug, Clone)]
struct ExportSinkRef(Arc<ExportSink>);

#[tonic::async_trait]
impl bollard_buildkit_proto::moby::filesync::v1::file_send_server::FileSend for ExportSinkRef {
    type DiffCopyStream = <ExportSink as bollard_buildkit_proto::moby::filesync::v1::file_send_server::FileSend>::DiffCopyStream;
    async fn diff_copy(
        &self,
        request: Request<
            tonic::Streaming<bollard_buildkit_proto::moby::filesync::v1::BytesMessage>,
        >,
    ) -> Result<Response<Self::DiffCopyStream>, Status> {
        bollard_buildkit_proto::moby::filesync::v1::file_send_server::FileSend::diff_copy(
            self.0.as_ref(),
            request,
        )
        .await
    }
}

impl Router {
    fn new(services: Services) -> Router {
        Router {
            health: HealthServer::new(Alive),
            sync: FileSyncServer::new(services.dirs)
                .max_decoding_message_size(MAX_MESSAGE)
                .max_encoding_message_size(MAX_MESSAGE),
            send: FileSendServer::new(ExportSinkRef(services.export))
                .max_decoding_message_size(MAX_MESSAGE)
                .max_encoding_message_size(MAX_MESSAGE),
            content: ContentServer::new(services.blobs),
            ssh: SshServer::new(services.agents),
            auth: AuthServer::new(services.auth),
        }
    }

    /// Every method served, as the session's headers list them.
    fn methods() -> Vec<String> {
        let of = |service: &str, methods: &[&str]| -> Vec<String> {
            methods.iter().map(|m| format!("/{service}/{m}")).collect()
        };
        let mut all = of(HealthServer::<Alive>::NAME, &["Check"]);
        all.extend(of(
            FileSyncServer::<SyncedDirs>::NAME,
            &["DiffCopy", "TarStream"],
        ));
        all.extend(of(FileSendServer::<ExportSinkRef>::NAME, &["DiffCopy"]));
        all.extend(of(content::SERVICE, &["Info", "Read"]));
        all.extend(of(
            SshServer::<Agents>::NAME,
            &["CheckAgent", "ForwardAgent"],
        ));
        all.extend(of(
            AuthServer::<RegistryAuth>::NAME,
            &[
                "Credentials",
                "FetchToken",
                "GetTokenAuthority",
                "VerifyTokenAuthority",
            ],
        ));
        all
    }
}

impl Service<http::Request<tonic::body::Body>> for Router {
    type Response = http::Response<tonic::body::Body>;
    type Error = std::convert::Infallible;
    type Future = BoxFuture<Self::Response, Self::Error>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, request: http::Request<tonic::body::Body>) -> Self::Future {
        let service = request
            .uri()
            .path()
            .trim_start_matches('/')
            .split('/')
            .next()
            .unwrap_or_default()
            .to_owned();
        if service == HealthServer::<Alive>::NAME {
            self.health.call(request)
        } else if service == FileSyncServer::<SyncedDirs>::NAME {
            self.sync.call(request)
        } else if service == FileSendServer::<ExportSinkRef>::NAME {
            self.send.call(request)
        } else if service == content::SERVICE {
            self.content.call(request)
        } else if service == SshServer::<Agents>::NAME {
            self.ssh.call(request)
        } else if service == AuthServer::<RegistryAuth>::NAME {
            self.auth.call(request)
        } else {
            Box::pin(async move {
                Ok(Status::unimplemented(format!("`{service}` is not offered")).into_http())
            })
        }
    }
}

/// A running session; dropping it ends it.
pub(crate) struct Session {
    pub id: String,
    server: tokio::task::JoinHandle<()>,
    closer: dial::Closer,
}

impl Drop for Session {
    fn drop(&mut self) {
        self.closer.close();
        self.server.abort();
    }
}

/// A random identifier (BuildKit's are 25 base-36 characters; any unique token works).
pub(crate) fn new_id() -> String {
    use std::sync::atomic::{AtomicU64, Ordering};
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let mut seed = [0u8; 16];
    let _ = std::fs::File::open("/dev/urandom")
        .and_then(|mut f| std::io::Read::read_exact(&mut f, &mut seed));
    let mut hasher = blake3::Hasher::new();
    hasher.update(&seed);
    hasher.update(&std::process::id().to_le_bytes());
    hasher.update(&COUNTER.fetch_add(1, Ordering::Relaxed).to_le_bytes());
    hasher.update(
        &std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos())
            .to_le_bytes(),
    );
    hasher.finalize().to_hex()[..25].to_owned()
}

/// Where a session is opened: the engine's `/session` endpoint, or `Control.Session` of a
/// buildkitd reached through the control client ([`super::hijack`]).
pub(crate) enum Opener<'a> {
    Engine(&'a Endpoint),
    Control(&'a mut ControlClient<tonic::transport::Channel>),
}

/// Opens a session and serves `services` on it.
pub(crate) async fn start(
    opener: Opener<'_>,
    name: &str,
    shared_key: &str,
    services: Services,
) -> Result<Session, EngineError> {
    let id = new_id();
    let mut headers = vec![
        ("X-Docker-Expose-Session-Uuid", id.clone()),
        ("X-Docker-Expose-Session-Name", name.to_owned()),
        ("X-Docker-Expose-Session-Sharedkey", shared_key.to_owned()),
    ];
    for method in Router::methods() {
        headers.push(("X-Docker-Expose-Session-Grpc-Method", method));
    }
    let router = Router::new(services);
    let (server, closer) = match opener {
        Opener::Engine(endpoint) => {
            let upgraded = dial::upgrade(endpoint, "/session", &headers).await?;
            let (io, closer) = dial::Upgraded::new(upgraded);
            (serve(router, io), closer)
        }
        Opener::Control(client) => {
            let closer = dial::Closer::default();
            let io = super::hijack::open_session(client, &headers, closer.clone()).await?;
            (serve(router, io), closer)
        }
    };
    Ok(Session { id, server, closer })
}

/// Serves the session's router on its one connection.
fn serve<IO>(router: Router, io: IO) -> tokio::task::JoinHandle<()>
where
    IO: tokio::io::AsyncRead
        + tokio::io::AsyncWrite
        + tonic::transport::server::Connected
        + Unpin
        + Send
        + 'static,
{
    tokio::spawn(async move {
        let incoming = futures_util::stream::iter([Ok::<_, std::io::Error>(io)]);
        let _ = tonic::transport::Server::builder()
            .http2_max_header_list_size(super::MAX_HEADER_LIST)
            .serve_with_incoming(router, incoming)
            .await;
    })
}
