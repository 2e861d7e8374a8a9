//! `--ssh`: the session forwards ssh agents to `RUN --mount=type=ssh` steps.
//!
//! BuildKit asks `CheckAgent` whether an id (`default` when the Dockerfile names none) is
//! forwarded, then opens one `ForwardAgent` stream per connection a step makes to its agent
//! socket, naming the id in the `buildkit.ssh.id` metadata. lkpkg connects each stream to the
//! agent's unix socket on this machine and copies bytes both ways. Keys never leave the agent,
//! and nothing about them is printed or hashed.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::pin::Pin;

use bollard_buildkit_proto::moby::sshforward::v1::ssh_server::Ssh;
use bollard_buildkit_proto::moby::sshforward::v1::{
    BytesMessage, CheckAgentRequest, CheckAgentResponse,
};
use futures_util::{Stream, StreamExt};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tonic::{Request, Response, Status, Streaming};

/// The agents of a session, by id.
#[derive(Debug, Clone, Default)]
pub(crate) struct Agents {
    pub sockets: BTreeMap<String, PathBuf>,
}

impl Agents {
    fn socket(&self, id: &str) -> Result<&PathBuf, Status> {
        let id = if id.is_empty() { "default" } else { id };
        self.sockets.get(id).ok_or_else(|| {
            Status::not_found(format!(
                "no SSH agent `{id}` is forwarded to this build (pass `--ssh {id}` or `--ssh {id}=SOCKET`)"
            ))
        })
    }
}

#[tonic::async_trait]
impl Ssh for Agents {
    async fn check_agent(
        &self,
        request: Request<CheckAgentRequest>,
    ) -> Result<Response<CheckAgentResponse>, Status> {
        self.socket(&request.get_ref().id)?;
        Ok(Response::new(CheckAgentResponse {}))
    }

    type ForwardAgentStream = Pin<Box<dyn Stream<Item = Result<BytesMessage, Status>> + Send>>;

    async fn forward_agent(
        &self,
        request: Request<Streaming<BytesMessage>>,
    ) -> Result<Response<Self::ForwardAgentStream>, Status> {
        let id = request
            .metadata()
            .get("buildkit.ssh.id")
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .to_owned();
        let path = self.socket(&id)?.clone();
        let socket = tokio::net::UnixStream::connect(&path)
            .await
            .map_err(|e| Status::unavailable(format!("ssh agent `{}`: {e}", path.display())))?;
        let (mut read, mut write) = socket.into_split();
        let mut incoming = request.into_inner();
        tokio::spawn(async move {
            while let Some(Ok(message)) = incoming.next().await {
                if write.write_all(&message.data).await.is_err() {
                    break;
                }
            }
            let _ = write.shutdown().await;
        });
        let (tx, rx) = tokio::sync::mpsc::channel(8);
        tokio::spawn(async move {
            let mut buf = vec![0u8; 32 * 1024];
            loop {
                match read.read(&mut buf).await {
                    Ok(0) | Err(_) => break,
                    Ok(n) => {
                        let message = BytesMessage {
                            data: buf[..n].to_vec(),
                        };
                        if tx.send(Ok(message)).await.is_err() {
                            break;
                        }
                    }
                }
            }
        });
        Ok(Response::new(Box::pin(super::receiver_stream(rx))))
    }
}
