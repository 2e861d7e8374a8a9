//! Blobs: existence, streamed downloads checked against their digest and size, and uploads
//! that skip what the repository holds and mount what another repository of the registry does.

use futures_util::TryStreamExt;
use lkpkg_cache_format::digest::Digest;
use oci_client::Reference;
use oci_client::errors::OciDistributionError;

use super::retry::Backoff;
use super::{Host, Registry, RegistryError, Retry};

/// Where a downloaded blob goes, chunk by chunk; restartable for retries.
pub trait BlobSink: Send {
    /// Forgets what was written (a retry starts over).
    fn restart(&mut self) -> std::io::Result<()>;
    fn write(&mut self, chunk: &[u8]) -> std::io::Result<()>;
}

impl Registry {
    /// Whether `reference`'s repository holds the blob.
    #[tracing::instrument(level = "debug", skip_all, fields(%reference, %digest))]
    pub async fn has_blob(
        &self,
        reference: &Reference,
        digest: &Digest,
    ) -> Result<bool, RegistryError> {
        let host = self.origin(reference).await?;
        let found = self
            .retry(
                &format!("looking for {digest} in `{reference}`"),
                || async {
                    host.client
                        .blob_exists(reference, &digest.to_string())
                        .await
                        .map_err(|e| self.map_error(&host, reference, e))
                },
            )
            .await?;
        if found {
            self.remember_blob(reference, digest);
        }
        Ok(found)
    }

    fn remember_blob(&self, reference: &Reference, digest: &Digest) {
        self.known_blobs.lock().expect("blobs lock").insert(
            (reference.resolve_registry().to_owned(), *digest),
            reference.repository().to_owned(),
        );
    }

    /// Streams blob `digest` (of `size` bytes) of `reference`'s repository into `sink`, which
    /// sees verified-so-far chunks. The blob is checked against its digest and size; a longer
    /// body is cut off and refused. `sink` must be restartable: a retry calls `restart` first.
    #[tracing::instrument(level = "debug", skip_all, fields(%reference, %digest, size))]
    pub async fn pull_blob<S: BlobSink>(
        &self,
        reference: &Reference,
        digest: &Digest,
        size: u64,
        sink: &mut S,
    ) -> Result<(), RegistryError> {
        if let Some((host, redirected)) = self.mirror_for(reference).await {
            let what = format!("pulling {digest} from mirror");
            let mut backoff = Backoff::default();
            let result = loop {
                match self
                    .pull_blob_once(&host, &redirected, reference, digest, size, sink)
                    .await
                {
                    Ok(()) => break Ok(()),
                    Err(e) => {
                        if let Err(e) = self.pause_or_fail(&mut backoff, &what, e).await {
                            break Err(e);
                        }
                    }
                }
            };
            match result {
                Ok(()) => return Ok(()),
                Err(e) => self.say(format!("mirror `{}`: {e}; asking the registry", host.name)),
            }
        }
        let host = self.origin(reference).await?;
        let what = format!("pulling {digest} of `{reference}`");
        let mut backoff = Backoff::default();
        loop {
            match self
                .pull_blob_once(&host, reference, reference, digest, size, sink)
                .await
            {
                Ok(()) => return Ok(()),
                Err(e) => self.pause_or_fail(&mut backoff, &what, e).await?,
            }
        }
    }

    async fn pull_blob_once<S: BlobSink>(
        &self,
        host: &Host,
        reference: &Reference,
        shown: &Reference,
        digest: &Digest,
        size: u64,
        sink: &mut S,
    ) -> Result<(), RegistryError> {
        sink.restart()
            .map_err(|e| self.protocol(host, shown, format!("writing {digest}: {e}")))?;
        let descriptor = oci_client::manifest::OciDescriptor {
            digest: digest.to_string(),
            size: i64::try_from(size).unwrap_or(i64::MAX),
            ..Default::default()
        };
        let mut stream = host
            .client
            .pull_blob_stream(reference, &descriptor)
            .await
            .map_err(|e| self.map_error(host, shown, e))?;
        let bad = |message: String| RegistryError::BadContent {
            registry: host.name.clone(),
            reference: format!("{}@{digest}", shown.whole()),
            message,
        };
        // oci-client's stream checks the digest as it ends (an error after the last byte);
        // lkpkg bounds the length.
        let mut received = 0u64;
        loop {
            let chunk = match stream.try_next().await {
                Ok(Some(chunk)) => chunk,
                Ok(None) => break,
                Err(e) if received == size => {
                    return Err(bad(format!("does not match its digest ({e})")));
                }
                Err(e) => {
                    let (message, retry) = if super::error::is_timeout(&e) {
                        (
                            format!("the download of {digest} stalled: {}", self.silence()),
                            Retry::Once,
                        )
                    } else {
                        (
                            format!("the download of {digest} broke off ({e})"),
                            Retry::Yes,
                        )
                    };
                    return Err(RegistryError::Unreachable {
                        registry: host.name.clone(),
                        reference: shown.whole(),
                        message,
                        retry,
                    });
                }
            };
            received += chunk.len() as u64;
            if received > size {
                return Err(bad(format!("is longer than its descriptor's {size} bytes")));
            }
            sink.write(&chunk)
                .map_err(|e| self.protocol(host, shown, format!("writing {digest}: {e}")))?;
        }
        if received != size {
            return Err(RegistryError::Unreachable {
                registry: host.name.clone(),
                reference: shown.whole(),
                message: format!("the download of {digest} ended after {received} of {size} bytes"),
                retry: Retry::Yes,
            });
        }
        Ok(())
    }

    /// Makes blob `digest` (the file at `path`, `size` bytes) present in `reference`'s
    /// repository: nothing when it is there (a `HEAD` first), a cross-repository mount when
    /// another repository of the registry is known to hold it, else a streamed upload.
    /// Returns whether bytes were uploaded.
    #[tracing::instrument(level = "debug", skip_all, fields(%reference, %digest, size))]
    pub async fn push_blob(
        &self,
        reference: &Reference,
        digest: &Digest,
        size: u64,
        path: &std::path::Path,
    ) -> Result<bool, RegistryError> {
        if self.has_blob(reference, digest).await? {
            return Ok(false);
        }
        let host = self.origin(reference).await?;
        let source = self
            .known_blobs
            .lock()
            .expect("blobs lock")
            .get(&(reference.resolve_registry().to_owned(), *digest))
            .cloned();
        if let Some(repository) = source.filter(|r| r != reference.repository()) {
            let from =
                Reference::with_tag(reference.registry().to_owned(), repository, "latest".into());
            if host
                .client
                .mount_blob(reference, &from, &digest.to_string())
                .await
                .is_ok()
                && self.has_blob(reference, digest).await.unwrap_or(false)
            {
                return Ok(false);
            }
        }
        self.retry(&format!("pushing {digest} to `{reference}`"), || async {
            let file = tokio::fs::File::open(path)
                .await
                .map_err(|e| self.protocol(&host, reference, format!("{}: {e}", path.display())))?;
            let stream = tokio_util::io::ReaderStream::with_capacity(file, 256 * 1024)
                .map_err(OciDistributionError::from);
            host.client
                .push_blob_stream(reference, stream, &digest.to_string(), Some(size))
                .await
                .map_err(|e| self.map_error(&host, reference, e))
        })
        .await?;
        self.remember_blob(reference, digest);
        Ok(true)
    }
}
