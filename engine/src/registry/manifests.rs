//! Manifests and indexes: read bounded (at most [`MAX_MANIFEST`] bytes) and checked against the
//! digest asked for and the one the registry sends, through the mirror first when there is
//! one; uploaded by tag or digest.

use bytes::Bytes;
use futures_util::StreamExt;
use lkpkg_cache_format::digest::Digest;
use oci_client::{Reference, RegistryOperation};

use super::credentials::Credential;
use super::{Host, Registry, RegistryError};

/// The largest manifest or index accepted (containerd's limit).
pub(crate) const MAX_MANIFEST: u64 = 4 * 1024 * 1024;

/// The media types lkpkg asks manifests in.
pub(crate) const MANIFEST_ACCEPT: &str = "application/vnd.oci.image.index.v1+json, \
    application/vnd.oci.image.manifest.v1+json, \
    application/vnd.docker.distribution.manifest.list.v2+json, \
    application/vnd.docker.distribution.manifest.v2+json";

/// A manifest or index as a registry served it, checked against its digest.
#[derive(Debug, Clone)]
pub struct RemoteManifest {
    pub bytes: Bytes,
    pub digest: Digest,
    pub media_type: String,
}

impl Registry {
    /// The manifest or index `reference` names, `None` when the registry has none. Pulls go
    /// through the mirror of the registry when there is one, and to the registry itself when
    /// the mirror fails or lacks it.
    #[tracing::instrument(level = "debug", skip_all, fields(%reference))]
    pub async fn manifest(
        &self,
        reference: &Reference,
    ) -> Result<Option<RemoteManifest>, RegistryError> {
        if let Some((mirror, redirected)) = self.mirror_for(reference).await {
            match self
                .retry(&format!("pulling `{reference}` from mirror"), || {
                    self.fetch_manifest(&mirror, &redirected, reference)
                })
                .await
            {
                Ok(Some(found)) => return Ok(Some(found)),
                Ok(None) => {}
                Err(e) => self.say(format!(
                    "mirror `{}`: {e}; asking the registry",
                    mirror.name
                )),
            }
        }
        let host = self.origin(reference).await?;
        self.retry(&format!("pulling `{reference}`"), || {
            self.fetch_manifest(&host, reference, reference)
        })
        .await
    }

    /// The `Authorization` header for `reference` on `host`, after oci-client's handshake.
    async fn authorization(
        &self,
        host: &Host,
        reference: &Reference,
        operation: RegistryOperation,
        shown: &Reference,
    ) -> Result<Option<String>, RegistryError> {
        let token = host
            .client
            .auth(reference, &host.auth, operation)
            .await
            .map_err(|e| self.map_error(host, shown, e))?;
        Ok(match (token, &host.credential) {
            (Some(token), _) => Some(format!("Bearer {token}")),
            (None, Credential::Basic { username, password }) => {
                use base64::Engine as _;
                let pair = format!("{username}:{}", password.expose());
                Some(format!(
                    "Basic {}",
                    base64::engine::general_purpose::STANDARD.encode(pair)
                ))
            }
            (None, Credential::Bearer(token)) => Some(format!("Bearer {}", token.expose())),
            (None, Credential::Anonymous) => None,
        })
    }

    fn manifest_url(&self, host: &Host, reference: &Reference) -> String {
        let scheme = if host.insecure { "http" } else { "https" };
        let target = reference
            .digest()
            .or(reference.tag())
            .unwrap_or("latest")
            .to_owned();
        let ns = reference
            .namespace()
            .map(|ns| format!("?ns={ns}"))
            .unwrap_or_default();
        format!(
            "{scheme}://{}/v2/{}/manifests/{target}{ns}",
            host.name,
            reference.repository()
        )
    }

    #[tracing::instrument(level = "debug", skip_all, fields(%reference))]
    async fn fetch_manifest(
        &self,
        host: &Host,
        reference: &Reference,
        shown: &Reference,
    ) -> Result<Option<RemoteManifest>, RegistryError> {
        let authorization = self
            .authorization(host, reference, RegistryOperation::Pull, shown)
            .await?;
        let mut request = host
            .http
            .get(self.manifest_url(host, reference))
            .header("accept", MANIFEST_ACCEPT);
        if let Some(authorization) = authorization {
            request = request.header("authorization", authorization);
        }
        let response = request
            .send()
            .await
            .map_err(|e| self.unreachable(host, shown, &e))?;
        let status = response.status().as_u16();
        match status {
            200 => {}
            404 => return Ok(None),
            401 | 403 => {
                return Err(RegistryError::Denied {
                    registry: host.name.clone(),
                    reference: shown.whole(),
                    status,
                    hint: host.denial_hint(),
                });
            }
            _ => return Err(self.status(host, shown, status)),
        }
        let header_digest = response
            .headers()
            .get("docker-content-digest")
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned);
        let media_type = response
            .headers()
            .get("content-type")
            .and_then(|v| v.to_str().ok())
            .map(|v| v.split(';').next().unwrap_or(v).trim().to_owned())
            .unwrap_or_default();
        let bad = |message: String| RegistryError::BadContent {
            registry: host.name.clone(),
            reference: shown.whole(),
            message,
        };
        if response.content_length().is_some_and(|n| n > MAX_MANIFEST) {
            return Err(bad(format!(
                "is larger than a manifest may be ({MAX_MANIFEST} bytes)"
            )));
        }
        let mut body = Vec::new();
        let mut stream = response.bytes_stream();
        while let Some(chunk) = stream.next().await {
            let chunk = chunk.map_err(|e| self.unreachable(host, shown, &e))?;
            if body.len() as u64 + chunk.len() as u64 > MAX_MANIFEST {
                return Err(bad(format!(
                    "is larger than a manifest may be ({MAX_MANIFEST} bytes)"
                )));
            }
            body.extend_from_slice(&chunk);
        }
        let digest = Digest::of(&body);
        for claimed in [reference.digest().map(str::to_owned), header_digest]
            .into_iter()
            .flatten()
        {
            if claimed != digest.to_string() {
                return Err(bad(format!(
                    "does not match its digest {claimed} (it is {digest})"
                )));
            }
        }
        let media_type = if media_type.is_empty() || media_type == "application/json" {
            serde_json::from_slice::<serde_json::Value>(&body)
                .ok()
                .and_then(|v| v["mediaType"].as_str().map(str::to_owned))
                .unwrap_or_default()
        } else {
            media_type
        };
        Ok(Some(RemoteManifest {
            bytes: Bytes::from(body),
            digest,
            media_type,
        }))
    }

    /// The digest the registry serves for `reference`, `None` when it has none.
    pub async fn manifest_digest(
        &self,
        reference: &Reference,
    ) -> Result<Option<Digest>, RegistryError> {
        Ok(self.manifest(reference).await?.map(|m| m.digest))
    }

    /// Uploads a manifest or index under `reference` (a tag or its digest).
    #[tracing::instrument(level = "debug", skip_all, fields(%reference, media_type, bytes = bytes.len()))]
    pub async fn put_manifest(
        &self,
        reference: &Reference,
        bytes: &[u8],
        media_type: &str,
    ) -> Result<(), RegistryError> {
        let host = self.origin(reference).await?;
        let content_type = reqwest::header::HeaderValue::from_str(media_type)
            .map_err(|e| self.protocol(&host, reference, e.to_string()))?;
        let body = Bytes::copy_from_slice(bytes);
        self.retry(&format!("pushing `{reference}`"), || async {
            host.client
                .push_manifest_raw(reference, body.clone(), content_type.clone())
                .await
                .map_err(|e| self.map_error(&host, reference, e))
        })
        .await?;
        Ok(())
    }
}
