//! Building images with BuildKit: the executor of a unit.
//!
//! lkpkg speaks BuildKit's own protocols to the builder, as buildx and linuxkit do, with no
//! `docker buildx` or `buildctl` binary at run time:
//! - [`dial`]: the engine's `/grpc` and `/session` HTTP upgrades over each transport lkpkg
//!   knows (unix, TCP, TLS, ssh);
//! - [`hijack`]: buildkitd in a container (linuxkit's `linuxkit-builder`): `buildctl
//!   dial-stdio` for the control API, `Control.Session` for the session;
//! - [`session`]: the services the builder calls back during a solve;
//! - [`filesync`]: the context and Dockerfile (fsutil's DiffCopy, lkpkg sending) and the
//!   exporter's archive (FileSend, lkpkg receiving);
//! - [`content`]: the linuxkit cache as the session's content store, which is how
//!   `oci-layout://` named contexts give a build another package's image, per platform;
//! - [`context_tree`], [`patterns`]: what a context holds, and `.dockerignore` semantics;
//! - [`solve`]: the `Solve` call and its `Status` progress stream;
//! - [`sshforward`]: `--ssh` agents for `RUN --mount=type=ssh`.
//!
//! What came from where: the protobuf messages and tonic stubs of BuildKit's control API, the
//! file sync, health and fsutil types are `bollard-buildkit-proto`'s (generated from BuildKit's
//! `.proto` files); the messages of containerd's content API are declared in [`content`] with
//! prost's derive. Everything that runs (the upgrades, the session's services and router, the
//! fsutil sender, the export receiver, the content reader) is lkpkg's: bollard's own BuildKit
//! code keeps its session crate-private and takes contexts as in-memory tars.
//!
//! An image leaves the builder through the `oci` exporter as a tar stream, which is ingested
//! into the cache while it arrives ([`build_image`]): no `docker save`, nothing in the engine's
//! image store, never the whole image in memory.

pub(crate) mod content;
pub(crate) mod context_tree;
pub(crate) mod dial;
pub(crate) mod filesync;
pub(crate) mod hijack;
pub(crate) mod patterns;
pub(crate) mod session;
pub(crate) mod solve;
pub(crate) mod sshforward;

use std::sync::Arc;

use futures_util::Stream;
use lkpkg_cache_format::layout::{Descriptor, Platform};

use crate::store::Store;
pub(crate) use solve::{ProgressLine, Solve, SolveError, Target};

/// A stream over a channel's receiver.
pub(crate) fn receiver_stream<T: Send + 'static>(
    mut rx: tokio::sync::mpsc::Receiver<T>,
) -> impl Stream<Item = T> + Send {
    futures_util::stream::poll_fn(move |cx| rx.poll_recv(cx))
}

/// A blocking reader over the chunks of the exporter's stream.
struct ChannelReader {
    rx: tokio::sync::mpsc::Receiver<bytes::Bytes>,
    current: bytes::Bytes,
}

impl std::io::Read for ChannelReader {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        while self.current.is_empty() {
            match self.rx.blocking_recv() {
                Some(chunk) => self.current = chunk,
                None => return Ok(0),
            }
        }
        let n = buf.len().min(self.current.len());
        buf[..n].copy_from_slice(&self.current[..n]);
        bytes::Buf::advance(&mut self.current, n);
        Ok(n)
    }
}

/// How a build of one image failed.
#[derive(Debug, thiserror::Error)]
pub(crate) enum ImageBuildError {
    #[error(transparent)]
    Solve(#[from] SolveError),
    /// The exporter's archive could not be taken into the cache.
    #[error("taking the built image into the cache: {0}")]
    Ingest(#[from] crate::store::StoreError),
    #[error("{0}")]
    Internal(String),
}

/// Builds one image for `platform` and ingests it under `<full_name>-<arch>`; returns its
/// manifest descriptor (with the platform).
pub(crate) async fn build_image(
    target: &Target,
    solve: Solve,
    store: Arc<Store>,
    full_name: &str,
    platform: &Platform,
    progress: Arc<dyn Fn(ProgressLine) + Send + Sync>,
) -> Result<Descriptor, ImageBuildError> {
    // Sixteen chunks in flight: the ingest's pace limits the builder's.
    let (tx, rx) = tokio::sync::mpsc::channel::<bytes::Bytes>(16);
    let ingest = {
        let store = store.clone();
        let full_name = full_name.to_owned();
        let platform = platform.clone();
        tokio::task::spawn_blocking(move || {
            let reader = ChannelReader {
                rx,
                current: bytes::Bytes::new(),
            };
            store.ingest_oci_archive(reader, &full_name, &platform)
        })
    };
    let solved = solve::run(target, solve, tx, progress).await;
    let ingested = ingest
        .await
        .map_err(|e| ImageBuildError::Internal(format!("the ingest task failed: {e}")))?;
    solved?;
    Ok(ingested?)
}
