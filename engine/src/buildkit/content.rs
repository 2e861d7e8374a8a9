//! The linuxkit cache as a session content store: how a build takes in-repo images (another
//! package's output, an image imported into the cache) without any registry and without the
//! engine's image store.
//!
//! BuildKit resolves a named context `oci-layout://<store>@<digest>` by reading blobs from the
//! session through containerd's content API (`containerd.services.content.v1.Content`): `Info`
//! for a blob's size, `Read` for its bytes at an offset. lkpkg serves those two calls from the
//! cache's `blobs/sha256/` and from a few blobs it makes for the build (the index that lists
//! exactly the platforms of a dependency this build may use). Every other call of the API
//! (writes, deletes, listings) is refused: a build only reads. The messages are written here
//! with prost's derive from containerd's `api/services/content/v1/content.proto` (field
//! numbers as there): bollard's generated protos do not include containerd's API, and two
//! calls do not justify a proto build step.

use std::collections::HashMap;
use std::path::PathBuf;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use futures_util::Stream;
use tokio::io::{AsyncReadExt, AsyncSeekExt};
use tonic::codegen::{BoxFuture, Service, http};
use tonic::{Request, Response, Status};

/// The gRPC service name.
pub(crate) const SERVICE: &str = "containerd.services.content.v1.Content";
/// Bytes per `Read` response message.
const CHUNK: usize = 1 << 20;

#[derive(Clone, PartialEq, prost::Message)]
pub(crate) struct InfoRequest {
    #[prost(string, tag = "1")]
    pub digest: String,
}

#[derive(Clone, PartialEq, prost::Message)]
pub(crate) struct Info {
    #[prost(string, tag = "1")]
    pub digest: String,
    #[prost(int64, tag = "2")]
    pub size: i64,
    #[prost(message, optional, tag = "3")]
    pub created_at: Option<bollard_buildkit_proto::google::protobuf::Timestamp>,
    #[prost(message, optional, tag = "4")]
    pub updated_at: Option<bollard_buildkit_proto::google::protobuf::Timestamp>,
    #[prost(map = "string, string", tag = "5")]
    pub labels: HashMap<String, String>,
}

#[derive(Clone, PartialEq, prost::Message)]
pub(crate) struct InfoResponse {
    #[prost(message, optional, tag = "1")]
    pub info: Option<Info>,
}

#[derive(Clone, PartialEq, prost::Message)]
pub(crate) struct ReadContentRequest {
    #[prost(string, tag = "1")]
    pub digest: String,
    #[prost(int64, tag = "2")]
    pub offset: i64,
    #[prost(int64, tag = "3")]
    pub size: i64,
}

#[derive(Clone, PartialEq, prost::Message)]
pub(crate) struct ReadContentResponse {
    #[prost(int64, tag = "1")]
    pub offset: i64,
    #[prost(bytes = "vec", tag = "2")]
    pub data: Vec<u8>,
}

/// What the store serves: the cache's blobs and blobs made for this build.
#[derive(Debug, Clone, Default)]
pub(crate) struct Blobs {
    /// The cache's root (blobs under `blobs/sha256/`), if any.
    pub cache: Option<PathBuf>,
    /// Blobs made for the build, by digest (`sha256:…`).
    pub made: HashMap<String, Arc<Vec<u8>>>,
}

enum Blob {
    Made(Arc<Vec<u8>>),
    File(PathBuf, u64),
}

impl Blobs {
    fn find(&self, digest: &str) -> Result<Blob, Status> {
        if let Some(bytes) = self.made.get(digest) {
            return Ok(Blob::Made(bytes.clone()));
        }
        let hex = digest
            .strip_prefix("sha256:")
            .filter(|h| h.len() == 64 && h.bytes().all(|b| b.is_ascii_hexdigit()))
            .ok_or_else(|| Status::invalid_argument(format!("unsupported digest `{digest}`")))?;
        let not_found = || Status::not_found(format!("content {digest}: not found"));
        let root = self.cache.as_ref().ok_or_else(not_found)?;
        let path = root.join("blobs/sha256").join(hex);
        let meta = std::fs::metadata(&path).map_err(|_| not_found())?;
        Ok(Blob::File(path, meta.len()))
    }

    fn info(&self, digest: &str) -> Result<Info, Status> {
        let size = match self.find(digest)? {
            Blob::Made(bytes) => bytes.len() as u64,
            Blob::File(_, size) => size,
        };
        Ok(Info {
            digest: digest.to_owned(),
            size: size as i64,
            created_at: None,
            updated_at: None,
            labels: HashMap::new(),
        })
    }
}

type ReadStream = Pin<Box<dyn Stream<Item = Result<ReadContentResponse, Status>> + Send>>;

/// Reads `size` bytes (0: to the end) at `offset`, as messages of [`CHUNK`] bytes.
fn read_stream(blob: Blob, offset: u64, size: u64) -> ReadStream {
    let (tx, rx) = tokio::sync::mpsc::channel(4);
    tokio::spawn(async move {
        let result: Result<(), Status> = async {
            match blob {
                Blob::Made(bytes) => {
                    let start = (offset as usize).min(bytes.len());
                    let end = if size == 0 {
                        bytes.len()
                    } else {
                        (start + size as usize).min(bytes.len())
                    };
                    let mut at = start;
                    while at < end {
                        let n = CHUNK.min(end - at);
                        let message = ReadContentResponse {
                            offset: at as i64,
                            data: bytes[at..at + n].to_vec(),
                        };
                        if tx.send(Ok(message)).await.is_err() {
                            return Ok(());
                        }
                        at += n;
                    }
                }
                Blob::File(path, len) => {
                    let mut file = tokio::fs::File::open(&path)
                        .await
                        .map_err(|e| Status::internal(format!("{}: {e}", path.display())))?;
                    file.seek(std::io::SeekFrom::Start(offset))
                        .await
                        .map_err(|e| Status::internal(e.to_string()))?;
                    let end = if size == 0 {
                        len
                    } else {
                        (offset + size).min(len)
                    };
                    let mut at = offset;
                    while at < end {
                        let mut buf = vec![0u8; CHUNK.min((end - at) as usize)];
                        let n = file
                            .read(&mut buf)
                            .await
                            .map_err(|e| Status::internal(e.to_string()))?;
                        if n == 0 {
                            break;
                        }
                        buf.truncate(n);
                        let message = ReadContentResponse {
                            offset: at as i64,
                            data: buf,
                        };
                        if tx.send(Ok(message)).await.is_err() {
                            return Ok(());
                        }
                        at += n as u64;
                    }
                }
            }
            Ok(())
        }
        .await;
        if let Err(status) = result {
            let _ = tx.send(Err(status)).await;
        }
    });
    Box::pin(super::receiver_stream(rx))
}

/// The content service, as a tower service tonic's server can route to.
#[derive(Debug, Clone)]
pub(crate) struct ContentServer {
    blobs: Arc<Blobs>,
}

impl ContentServer {
    pub(crate) fn new(blobs: Blobs) -> ContentServer {
        ContentServer {
            blobs: Arc::new(blobs),
        }
    }
}

impl tonic::server::NamedService for ContentServer {
    const NAME: &'static str = SERVICE;
}

struct InfoCall(Arc<Blobs>);

impl tonic::server::UnaryService<InfoRequest> for InfoCall {
    type Response = InfoResponse;
    type Future = BoxFuture<Response<InfoResponse>, Status>;
    fn call(&mut self, request: Request<InfoRequest>) -> Self::Future {
        let blobs = self.0.clone();
        Box::pin(async move {
            let info = blobs.info(&request.get_ref().digest)?;
            Ok(Response::new(InfoResponse { info: Some(info) }))
        })
    }
}

struct ReadCall(Arc<Blobs>);

impl tonic::server::ServerStreamingService<ReadContentRequest> for ReadCall {
    type Response = ReadContentResponse;
    type ResponseStream = ReadStream;
    type Future = BoxFuture<Response<ReadStream>, Status>;
    fn call(&mut self, request: Request<ReadContentRequest>) -> Self::Future {
        let blobs = self.0.clone();
        Box::pin(async move {
            let r = request.into_inner();
            let blob = blobs.find(&r.digest)?;
            let offset =
                u64::try_from(r.offset).map_err(|_| Status::invalid_argument("negative offset"))?;
            let size =
                u64::try_from(r.size).map_err(|_| Status::invalid_argument("negative size"))?;
            Ok(Response::new(read_stream(blob, offset, size)))
        })
    }
}

impl<B> Service<http::Request<B>> for ContentServer
where
    B: tonic::codegen::Body + Send + 'static,
    B::Error: Into<tonic::codegen::StdError> + Send + 'static,
{
    type Response = http::Response<tonic::body::Body>;
    type Error = std::convert::Infallible;
    type Future = BoxFuture<Self::Response, Self::Error>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, request: http::Request<B>) -> Self::Future {
        let blobs = self.blobs.clone();
        let method = request
            .uri()
            .path()
            .rsplit('/')
            .next()
            .unwrap_or_default()
            .to_owned();
        Box::pin(async move {
            Ok(match method.as_str() {
                "Info" => {
                    tonic::server::Grpc::new(tonic_prost::ProstCodec::default())
                        .unary(InfoCall(blobs), request)
                        .await
                }
                "Read" => {
                    tonic::server::Grpc::new(tonic_prost::ProstCodec::default())
                        .server_streaming(ReadCall(blobs), request)
                        .await
                }
                other => Status::unimplemented(format!(
                    "the lkpkg cache is read-only to builds (`{other}`)"
                ))
                .into_http(),
            })
        })
    }
}
