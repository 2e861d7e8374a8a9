//! Raw connections to an engine endpoint, and the HTTP upgrades that turn one into a BuildKit
//! channel (`/grpc`) or a session (`/session`).
//!
//! The engine serves BuildKit's control API and its session protocol on two hijacked HTTP
//! endpoints: a `POST` with `Connection: Upgrade` and `Upgrade: h2c` is answered with `101
//! Switching Protocols`, and the connection then carries HTTP/2 (gRPC). On `/grpc` lkpkg is the
//! gRPC client; on `/session` the roles turn: the engine is the client and lkpkg serves the
//! session's services (the context, the exporter's output, the cache's content). This is what
//! buildx's `docker` driver does; bollard's `Moby` driver does it too but keeps it crate-private,
//! so lkpkg dials the same transports it uses for the rest of the API (unix, TCP, TLS with the
//! context's certificates, `ssh … docker system dial-stdio`) and upgrades them itself.

use std::path::Path;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

use crate::executor::docker::{Endpoint, EngineError, SshTarget};

/// A byte stream to an engine, whatever the transport.
pub(crate) trait Stream: AsyncRead + AsyncWrite + Send + Unpin + 'static {}
impl<T: AsyncRead + AsyncWrite + Send + Unpin + 'static> Stream for T {}

/// Opens a byte stream to the endpoint.
#[tracing::instrument(level = "debug", skip_all, fields(endpoint = %endpoint.host))]
pub(crate) async fn connect(endpoint: &Endpoint) -> Result<Box<dyn Stream>, EngineError> {
    let host = endpoint.host.as_str();
    let unreachable = |message: String| EngineError::Unreachable {
        endpoint: host.to_owned(),
        message,
    };
    if let Some(path) = host.strip_prefix("unix://") {
        let stream = tokio::net::UnixStream::connect(path)
            .await
            .map_err(|e| unreachable(format!("{path}: {e}")))?;
        return Ok(Box::new(stream));
    }
    if let Some(rest) = host
        .strip_prefix("tcp://")
        .or_else(|| host.strip_prefix("http://"))
    {
        let address = rest.trim_end_matches('/');
        let tcp = tokio::net::TcpStream::connect(address)
            .await
            .map_err(|e| unreachable(format!("{address}: {e}")))?;
        let _ = tcp.set_nodelay(true);
        return match endpoint
            .tls
            .as_deref()
            .filter(|_| host.starts_with("tcp://"))
        {
            Some(dir) => {
                let server = address.rsplit_once(':').map_or(address, |(h, _)| h);
                Ok(Box::new(tls(dir, server, tcp).await.map_err(unreachable)?))
            }
            None => Ok(Box::new(tcp)),
        };
    }
    if host.starts_with("ssh://") {
        let target = SshTarget::parse(host).map_err(unreachable)?;
        let mut child = target
            .spawn(std::process::Stdio::null())
            .map_err(|e| unreachable(format!("cannot run `ssh`: {e}")))?;
        let (Some(stdin), Some(stdout)) = (child.stdin.take(), child.stdout.take()) else {
            return Err(unreachable("`ssh` started without its pipes".to_owned()));
        };
        return Ok(Box::new(ChildStream {
            io: tokio::io::join(stdout, stdin),
            _child: child,
        }));
    }
    Err(unreachable(
        "unsupported endpoint scheme (expected unix://, tcp:// or ssh://)".to_owned(),
    ))
}

/// TLS to the engine with the context's `ca.pem`, presenting `cert.pem`/`key.pem`, as
/// `docker --tlsverify` does.
async fn tls(
    dir: &Path,
    server: &str,
    tcp: tokio::net::TcpStream,
) -> Result<tokio_rustls::client::TlsStream<tokio::net::TcpStream>, String> {
    use rustls_pki_types::pem::PemObject;
    use rustls_pki_types::{CertificateDer, PrivateKeyDer, ServerName};
    let [ca, cert, key] = ["ca.pem", "cert.pem", "key.pem"].map(|f| dir.join(f));
    let mut roots = rustls::RootCertStore::empty();
    for c in CertificateDer::pem_file_iter(&ca).map_err(|e| format!("{}: {e}", ca.display()))? {
        roots
            .add(c.map_err(|e| format!("{}: {e}", ca.display()))?)
            .map_err(|e| format!("{}: {e}", ca.display()))?;
    }
    let chain = CertificateDer::pem_file_iter(&cert)
        .map_err(|e| format!("{}: {e}", cert.display()))?
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| format!("{}: {e}", cert.display()))?;
    let key_der =
        PrivateKeyDer::from_pem_file(&key).map_err(|e| format!("{}: {e}", key.display()))?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?
        .with_root_certificates(roots)
        .with_client_auth_cert(chain, key_der)
        .map_err(|e| e.to_string())?;
    let name = ServerName::try_from(server.trim_matches(['[', ']']).to_owned())
        .map_err(|e| format!("`{server}`: {e}"))?;
    tokio_rustls::TlsConnector::from(Arc::new(config))
        .connect(name, tcp)
        .await
        .map_err(|e| format!("TLS with `{server}`: {e}"))
}

/// An `ssh` child's stdout and stdin as one stream; the child dies with it.
struct ChildStream {
    io: tokio::io::Join<tokio::process::ChildStdout, tokio::process::ChildStdin>,
    _child: tokio::process::Child,
}

impl AsyncRead for ChildStream {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.io).poll_read(cx, buf)
    }
}

impl AsyncWrite for ChildStream {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.io).poll_write(cx, buf)
    }
    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.io).poll_flush(cx)
    }
    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.io).poll_shutdown(cx)
    }
}

/// Dials the endpoint and upgrades `path` (`/grpc` or `/session`) to h2c with `headers`.
pub(crate) async fn upgrade(
    endpoint: &Endpoint,
    path: &str,
    headers: &[(&str, String)],
) -> Result<hyper::upgrade::Upgraded, EngineError> {
    let work = async {
        let stream = connect(endpoint).await?;
        let failed = |message: String| EngineError::Api {
            endpoint: endpoint.host.clone(),
            message: format!("upgrading `{path}`: {message}"),
        };
        let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
            .await
            .map_err(|e| failed(e.to_string()))?;
        tokio::spawn(async move {
            let _ = connection.with_upgrades().await;
        });
        let mut request = hyper::Request::post(path)
            .header(hyper::header::HOST, "docker")
            .header(hyper::header::CONNECTION, "Upgrade")
            .header(hyper::header::UPGRADE, "h2c");
        for (name, value) in headers {
            request = request.header(*name, value.as_str());
        }
        let request = request
            .body(http_body_util::Empty::<bytes::Bytes>::new())
            .map_err(|e| failed(e.to_string()))?;
        let response: hyper::Response<Incoming> = sender
            .send_request(request)
            .await
            .map_err(|e| failed(e.to_string()))?;
        if response.status() != hyper::StatusCode::SWITCHING_PROTOCOLS {
            let status = response.status();
            let body = http_body_util::BodyExt::collect(response.into_body())
                .await
                .map(|b| String::from_utf8_lossy(&b.to_bytes()).trim().to_owned())
                .unwrap_or_default();
            return Err(failed(format!(
                "the engine answered {status}{}{body} (lkpkg builds through the engine's BuildKit: \
                 Docker 23 or newer)",
                if body.is_empty() { "" } else { ": " }
            )));
        }
        hyper::upgrade::on(response)
            .await
            .map_err(|e| failed(e.to_string()))
    };
    // Dialling and the upgrade's answer take the builder timeout.
    crate::executor::docker::answered(work)
        .await
        .map_err(|message| EngineError::Unreachable {
            endpoint: endpoint.host.clone(),
            message: format!("`{path}`: {message}"),
        })?
}

/// An upgraded connection as tonic's server wants it, which its owner can close: hyper runs
/// each served connection in a task of its own, which stopping the server does not end, so
/// the session closes the connection itself when the solve is over.
pub(crate) struct Upgraded {
    io: TokioIo<hyper::upgrade::Upgraded>,
    closer: Closer,
}

/// Closes an [`Upgraded`] from outside: reads then see the end, writes fail.
#[derive(Clone, Default)]
pub(crate) struct Closer {
    inner: Arc<CloserInner>,
}

#[derive(Default)]
struct CloserInner {
    closed: std::sync::atomic::AtomicBool,
    waker: futures_util::task::AtomicWaker,
}

impl Closer {
    pub(crate) fn close(&self) {
        self.inner
            .closed
            .store(true, std::sync::atomic::Ordering::SeqCst);
        self.inner.waker.wake();
    }

    pub(crate) fn is_closed(&self, cx: &mut Context<'_>) -> bool {
        self.inner.waker.register(cx.waker());
        self.inner.closed.load(std::sync::atomic::Ordering::SeqCst)
    }
}

impl Upgraded {
    pub(crate) fn new(io: hyper::upgrade::Upgraded) -> (Upgraded, Closer) {
        let closer = Closer::default();
        (
            Upgraded {
                io: TokioIo::new(io),
                closer: closer.clone(),
            },
            closer,
        )
    }
}

impl tonic::transport::server::Connected for Upgraded {
    type ConnectInfo = ();
    fn connect_info(&self) -> Self::ConnectInfo {}
}

fn closed_error() -> std::io::Error {
    std::io::Error::new(std::io::ErrorKind::BrokenPipe, "the session is over")
}

impl AsyncRead for Upgraded {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        if self.closer.is_closed(cx) {
            return Poll::Ready(Ok(()));
        }
        Pin::new(&mut self.io).poll_read(cx, buf)
    }
}

impl AsyncWrite for Upgraded {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        if self.closer.is_closed(cx) {
            return Poll::Ready(Err(closed_error()));
        }
        Pin::new(&mut self.io).poll_write(cx, buf)
    }
    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        if self.closer.is_closed(cx) {
            return Poll::Ready(Err(closed_error()));
        }
        Pin::new(&mut self.io).poll_flush(cx)
    }
    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.io).poll_shutdown(cx)
    }
}

/// A tonic connector that makes each connection the channel needs with `connect` (an upgrade
/// of the engine's `/grpc`, a `buildctl dial-stdio` in a container).
#[derive(Clone)]
pub(crate) struct Connector<F>(pub F);

impl<F, Fut, IO> tower_service::Service<hyper::Uri> for Connector<F>
where
    F: Fn() -> Fut,
    Fut: std::future::Future<Output = Result<IO, EngineError>> + Send + 'static,
{
    type Response = IO;
    type Error = EngineError;
    type Future = Pin<Box<dyn std::future::Future<Output = Result<IO, EngineError>> + Send>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, _uri: hyper::Uri) -> Self::Future {
        Box::pin((self.0)())
    }
}

/// A connection being made.
pub(crate) type Connecting<IO> =
    Pin<Box<dyn std::future::Future<Output = Result<IO, EngineError>> + Send>>;

/// A connector to the engine's own BuildKit: each connection upgrades `/grpc`.
pub(crate) fn grpc_connector(
    endpoint: Endpoint,
) -> Connector<impl Fn() -> Connecting<hyper::upgrade::Upgraded> + Clone> {
    Connector(move || {
        let endpoint = endpoint.clone();
        Box::pin(async move { upgrade(&endpoint, "/grpc", &[]).await })
            as Connecting<hyper::upgrade::Upgraded>
    })
}

/// Copies what is left of `pending` into `buf`; false when nothing was left.
pub(crate) fn drain_pending(pending: &mut bytes::Bytes, buf: &mut ReadBuf<'_>) -> bool {
    if pending.is_empty() {
        return false;
    }
    let n = buf.remaining().min(pending.len());
    buf.put_slice(&pending[..n]);
    bytes::Buf::advance(pending, n);
    true
}
