//! BuildKit in a container (linuxkit's `linuxkit-builder`), reached as linuxkit reaches it.
//!
//! - The control API: each connection is `buildctl dial-stdio` exec'd in the container, its
//!   stdin and stdout carrying gRPC to buildkitd's socket (linuxkit's `docker-container://`
//!   transport). The exec goes through the engine's API, so it works over every transport the
//!   engine is reached by.
//! - The session: buildkitd has no `/session` endpoint; the client opens `Control.Session`, a
//!   bidirectional stream of bytes, and serves the session's HTTP/2 inside it (BuildKit's
//!   `grpchijack`). The session's headers travel as the stream's gRPC metadata, lower-cased.

use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use bollard::exec::{CreateExecOptions, StartExecOptions, StartExecResults};
use bollard_buildkit_proto::moby::buildkit::v1::BytesMessage;
use bollard_buildkit_proto::moby::buildkit::v1::control_client::ControlClient;
use futures_util::{Stream, StreamExt};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

use super::dial::{Connecting, Connector};
use crate::executor::docker::EngineError;
use hyper_util::rt::TokioIo;

/// A stream to buildkitd through `buildctl dial-stdio` in a container.
pub(crate) struct ExecStream {
    output: Pin<
        Box<
            dyn Stream<Item = Result<bollard::container::LogOutput, bollard::errors::Error>> + Send,
        >,
    >,
    input: Pin<Box<dyn AsyncWrite + Send>>,
    pending: bytes::Bytes,
    /// Bytes of stdout seen, up to the first 256 (kept for errors).
    seen: usize,
    /// What the exec said on stderr, and the start of its stdout (why a connection failed).
    stderr: Arc<Mutex<String>>,
}

impl AsyncRead for ExecStream {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        loop {
            if super::dial::drain_pending(&mut self.pending, buf) {
                return Poll::Ready(Ok(()));
            }
            match self.output.as_mut().poll_next(cx) {
                Poll::Ready(Some(Ok(bollard::container::LogOutput::StdOut { message })))
                | Poll::Ready(Some(Ok(bollard::container::LogOutput::Console { message }))) => {
                    // The runtime says why an exec could not start on the exec's stdout: the
                    // first bytes are kept for the error (binary HTTP/2 otherwise).
                    if self.seen < 256 {
                        let take = message.len().min(256 - self.seen);
                        self.seen += take;
                        let text: String = String::from_utf8_lossy(&message[..take])
                            .chars()
                            .filter(|c| !c.is_control() || *c == '\n')
                            .collect();
                        if let Ok(mut said) = self.stderr.lock() {
                            said.push_str(&text);
                        }
                    }
                    self.pending = message;
                }
                // buildctl's (or the runtime's) complaints are not part of the connection.
                Poll::Ready(Some(Ok(bollard::container::LogOutput::StdErr { message }))) => {
                    if let Ok(mut said) = self.stderr.lock()
                        && said.len() < 4096
                    {
                        said.push_str(&String::from_utf8_lossy(&message));
                    }
                }
                Poll::Ready(Some(Ok(_))) => {}
                Poll::Ready(Some(Err(e))) => {
                    return Poll::Ready(Err(std::io::Error::other(e.to_string())));
                }
                Poll::Ready(None) => return Poll::Ready(Ok(())),
                Poll::Pending => return Poll::Pending,
            }
        }
    }
}

impl AsyncWrite for ExecStream {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        self.input.as_mut().poll_write(cx, buf)
    }
    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        self.input.as_mut().poll_flush(cx)
    }
    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        self.input.as_mut().poll_shutdown(cx)
    }
}

/// Starts `buildctl dial-stdio` in `container`.
pub(crate) async fn dial_stdio(
    docker: &bollard::Docker,
    container: &str,
    stderr: Arc<Mutex<String>>,
) -> Result<ExecStream, EngineError> {
    let api = |e: bollard::errors::Error| EngineError::Api {
        endpoint: format!("container `{container}`"),
        message: format!("buildctl dial-stdio: {e}"),
    };
    let exec = docker
        .create_exec(
            container,
            CreateExecOptions::<String> {
                cmd: Some(vec!["buildctl".into(), "dial-stdio".into()]),
                attach_stdin: Some(true),
                attach_stdout: Some(true),
                attach_stderr: Some(true),
                ..Default::default()
            },
        )
        .await
        .map_err(api)?;
    match docker
        .start_exec(
            &exec.id,
            Some(StartExecOptions {
                detach: false,
                tty: false,
                output_capacity: None,
            }),
        )
        .await
        .map_err(api)?
    {
        StartExecResults::Attached { output, input } => Ok(ExecStream {
            output,
            input,
            pending: bytes::Bytes::new(),
            seen: 0,
            stderr,
        }),
        StartExecResults::Detached => Err(EngineError::Api {
            endpoint: format!("container `{container}`"),
            message: "buildctl dial-stdio started detached".into(),
        }),
    }
}

/// A connector whose every connection is a fresh `buildctl dial-stdio` in `container`; what the
/// execs say on stderr goes to `stderr`.
pub(crate) fn exec_connector(
    docker: bollard::Docker,
    container: String,
    stderr: Arc<Mutex<String>>,
) -> Connector<impl Fn() -> Connecting<TokioIo<ExecStream>> + Clone> {
    Connector(move || {
        let (docker, container, stderr) = (docker.clone(), container.clone(), stderr.clone());
        Box::pin(async move {
            dial_stdio(&docker, &container, stderr)
                .await
                .map(TokioIo::new)
        }) as Connecting<TokioIo<ExecStream>>
    })
}

/// A session's connection inside `Control.Session`: reads are the messages BuildKit sends,
/// writes become messages to it.
pub(crate) struct SessionStream {
    inbound: tonic::Streaming<BytesMessage>,
    outbound: tokio_util::sync::PollSender<BytesMessage>,
    pending: bytes::Bytes,
    closer: super::dial::Closer,
}

impl tonic::transport::server::Connected for SessionStream {
    type ConnectInfo = ();
    fn connect_info(&self) -> Self::ConnectInfo {}
}

impl AsyncRead for SessionStream {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        if self.closer.is_closed(cx) {
            return Poll::Ready(Ok(()));
        }
        loop {
            if super::dial::drain_pending(&mut self.pending, buf) {
                return Poll::Ready(Ok(()));
            }
            match self.inbound.poll_next_unpin(cx) {
                Poll::Ready(Some(Ok(message))) => self.pending = message.data.into(),
                Poll::Ready(Some(Err(status))) => {
                    return Poll::Ready(Err(std::io::Error::other(status.message().to_owned())));
                }
                Poll::Ready(None) => return Poll::Ready(Ok(())),
                Poll::Pending => return Poll::Pending,
            }
        }
    }
}

impl AsyncWrite for SessionStream {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        if self.closer.is_closed(cx) {
            return Poll::Ready(Err(std::io::Error::new(
                std::io::ErrorKind::BrokenPipe,
                "the session is over",
            )));
        }
        match self.outbound.poll_reserve(cx) {
            Poll::Ready(Ok(())) => {
                let message = BytesMessage { data: buf.to_vec() };
                self.outbound
                    .send_item(message)
                    .map_err(|_| std::io::Error::from(std::io::ErrorKind::BrokenPipe))?;
                Poll::Ready(Ok(buf.len()))
            }
            Poll::Ready(Err(_)) => Poll::Ready(Err(std::io::ErrorKind::BrokenPipe.into())),
            Poll::Pending => Poll::Pending,
        }
    }
    fn poll_flush(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Poll::Ready(Ok(()))
    }
    fn poll_shutdown(mut self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        self.outbound.close();
        Poll::Ready(Ok(()))
    }
}

/// Opens `Control.Session` with the session's headers as metadata; the returned stream is the
/// connection the session's services are served on.
pub(crate) async fn open_session(
    client: &mut ControlClient<tonic::transport::Channel>,
    headers: &[(&str, String)],
    closer: super::dial::Closer,
) -> Result<SessionStream, EngineError> {
    let (tx, rx) = tokio::sync::mpsc::channel::<BytesMessage>(16);
    let mut request = tonic::Request::new(super::receiver_stream(rx));
    for (name, value) in headers {
        let key = tonic::metadata::MetadataKey::from_bytes(name.to_ascii_lowercase().as_bytes())
            .map_err(|e| EngineError::Api {
                endpoint: "buildkitd".into(),
                message: e.to_string(),
            })?;
        let value = value.parse().map_err(|_| EngineError::Api {
            endpoint: "buildkitd".into(),
            message: format!("session header `{name}` is not ASCII"),
        })?;
        request.metadata_mut().append(key, value);
    }
    let inbound = client
        .session(request)
        .await
        .map_err(|status| EngineError::Api {
            endpoint: "buildkitd".into(),
            message: format!("Control.Session: {}", status.message()),
        })?
        .into_inner();
    Ok(SessionStream {
        inbound,
        outbound: tokio_util::sync::PollSender::new(tx),
        pending: bytes::Bytes::new(),
        closer,
    })
}

/// How long a started builder container has to answer (linuxkit waits as long).
const READY_WITHIN: Duration = Duration::from_secs(30);

/// Waits until buildkitd in `container` answers `Info` through `buildctl dial-stdio`, polling
/// every second as linuxkit does; a container that cannot run `buildctl` fails at once.
pub(crate) async fn wait_ready(
    docker: &bollard::Docker,
    container: &str,
    endpoint: &str,
) -> Result<(), EngineError> {
    let deadline = Instant::now() + READY_WITHIN;
    loop {
        let stderr = Arc::new(Mutex::new(String::new()));
        let connector = exec_connector(docker.clone(), container.to_owned(), stderr.clone());
        let attempt = async {
            let channel = super::control_endpoint()
                .connect_with_connector(connector)
                .await
                .map_err(|e| e.to_string())?;
            ControlClient::new(channel)
                .info(bollard_buildkit_proto::moby::buildkit::v1::InfoRequest {})
                .await
                .map_err(|s| s.message().to_owned())
        };
        let failure = match tokio::time::timeout(Duration::from_secs(5), attempt).await {
            Ok(Ok(_)) => return Ok(()),
            Ok(Err(e)) => e,
            Err(_) => "no answer within 5 s".to_owned(),
        };
        let said = stderr
            .lock()
            .map(|s| s.split_whitespace().collect::<Vec<_>>().join(" "))
            .unwrap_or_default();
        let hopeless = said.contains("executable file not found") || said.contains("no such file");
        if hopeless || Instant::now() >= deadline {
            return Err(EngineError::NoBuildKit {
                endpoint: endpoint.to_owned(),
                message: format!(
                    "the builder container `{container}` does not answer as buildkitd ({})",
                    if said.is_empty() { failure } else { said }
                ),
            });
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
}
