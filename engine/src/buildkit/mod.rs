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
//! into the cache while it arrives ([`build_images`]): no `docker save`, nothing in the engine's
//! image store, never the whole image in memory.

pub(crate) mod auth;
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

/// The most bytes of HTTP/2 headers (trailers included) a connection with a builder takes, as
/// the docker CLI's gRPC (16 MiB), both ways:
/// - on the control connection, BuildKit puts a failed solve's details in the
///   `grpc-status-details-bin` trailer, and those of a Dockerfile error carry the whole
///   Dockerfile as its source: hyper's default of 16 KiB turned the error of any Dockerfile
///   over ~16 KiB into "h2 protocol error: error reading a body from connection";
/// - on the session, BuildKit's file sync request carries the `.dockerignore` patterns and the
///   paths the Dockerfile copies as headers: a `.dockerignore` of a few hundred lines failed
///   the build ("header list size to send violates the maximum size (16384 bytes)").
const MAX_HEADER_LIST: u32 = 16 << 20;

/// The endpoint every connection to a builder's control API is made through (the connector
/// supplies the transport; the address is never dialled).
pub(crate) fn control_endpoint() -> tonic::transport::Endpoint {
    tonic::transport::Endpoint::from_static("http://buildkit.invalid")
        .http2_max_header_list_size(MAX_HEADER_LIST)
}

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

/// Builds the images of one solve (one platform or several) and ingests each under
/// `<full_name>-<arch>`; returns their manifest descriptors (with the platform), in the order
/// of `platforms`.
pub(crate) async fn build_images(
    target: &Target,
    solve: Solve,
    store: Arc<Store>,
    full_name: &str,
    platforms: &[Platform],
    progress: Arc<dyn Fn(ProgressLine) + Send + Sync>,
) -> Result<Vec<Descriptor>, ImageBuildError> {
    // Sixteen chunks in flight: the ingest's pace limits the builder's.
    let (tx, rx) = tokio::sync::mpsc::channel::<bytes::Bytes>(16);
    let ingest = {
        let store = store.clone();
        let full_name = full_name.to_owned();
        let platforms = platforms.to_vec();
        tokio::task::spawn_blocking(move || {
            let reader = ChannelReader {
                rx,
                current: bytes::Bytes::new(),
            };
            store.ingest_oci_archive_platforms(reader, &full_name, &platforms)
        })
    };
    let solved = solve::run(target, solve, tx, progress).await;
    let ingested = ingest
        .await
        .map_err(|e| ImageBuildError::Internal(format!("the ingest task failed: {e}")))?;
    match (solved, ingested) {
        // The cache could not take the export (a full disk, a read error): the ingest stopped
        // reading, and the builder's export failed because of it ("lkpkg stopped reading the
        // export"). The ingest's error is the cause, and the one to say.
        (Err(_), Err(e @ crate::store::StoreError::Io { .. })) => Err(e.into()),
        // Otherwise a failed solve is the cause (an ingest that saw its archive end early
        // failed because of it).
        (Err(e), _) => Err(e.into()),
        (Ok(_), ingested) => Ok(ingested?),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The session inside `Control.Session` (how a buildkitd in a container is reached),
    /// against the engine's own BuildKit, which serves that call too. Needs the engine of
    /// `scripts/dev-env.sh` (fails without it, as every engine test).
    #[test]
    fn a_session_inside_control_session_builds_an_image() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("hello"), "hijacked\n").unwrap();
        std::fs::write(
            dir.path().join("Dockerfile"),
            "FROM scratch\nCOPY hello /\n",
        )
        .unwrap();
        let mut context = context_tree::ContextTree::new();
        context.add_dir(dir.path(), "", &[]).unwrap();
        let mut dockerfile = context_tree::ContextTree::new();
        dockerfile
            .add_file(&dir.path().join("Dockerfile"), "Dockerfile")
            .unwrap();
        let cache = tempfile::tempdir().unwrap();
        let store = Arc::new(Store::open(cache.path()).unwrap());
        let solve = Solve {
            name: "lkpkg hijack test".into(),
            shared_key: "hijack-test".into(),
            context,
            dockerfile,
            frontend_attrs: [
                ("filename", "Dockerfile"),
                ("platform", "linux/amd64"),
                ("force-network-mode", "none"),
                ("no-cache", ""),
            ]
            .into_iter()
            .map(|(k, v)| (k.to_owned(), v.to_owned()))
            .collect(),
            exporter: "oci".into(),
            exporter_attrs: [("compression".to_owned(), "uncompressed".to_owned())].into(),
            blobs: content::Blobs::default(),
            ssh: Default::default(),
            auth: Default::default(),
        };
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        solve::HIJACK_ENGINE_SESSIONS.with(|h| h.set(true));
        let target = Target::Engine(crate::executor::docker::Endpoint::new(
            "unix:///var/run/docker.sock",
        ));
        let built = runtime.block_on(build_images(
            &target,
            solve,
            store.clone(),
            "docker.io/lkpkgtest/hijack:t",
            &[Platform::linux("amd64")],
            Arc::new(|_| {}),
        ));
        let descriptor = built.expect("a build through Control.Session").remove(0);
        let manifest = store.read_manifest(&descriptor.digest).unwrap();
        let layer = store.read_blob(&manifest.layers[0].digest).unwrap();
        let mut archive = tar::Archive::new(&layer[..]);
        let mut found = String::new();
        for entry in archive.entries().unwrap() {
            let mut entry = entry.unwrap();
            if entry.path().unwrap().to_string_lossy() == "hello" {
                std::io::Read::read_to_string(&mut entry, &mut found).unwrap();
            }
        }
        assert_eq!(found, "hijacked\n");
    }
}
