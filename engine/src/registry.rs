//! A minimal client of the OCI distribution API: what lkpkg needs of registries today, and the
//! seam for push, pull and release later.
//!
//! Today: [`Registry::manifest_digest`], the digest a registry serves for a name, asked
//! anonymously as linuxkit asks it for `cache clean --published-only` (a `HEAD` of
//! `/v2/<repository>/manifests/<tag>`, following the registry's bearer-token challenge, and a
//! `GET` whose body is hashed when the registry sends no `Docker-Content-Digest`).
//!
//! Names are canonical references (`docker.io/org/image:tag`); `docker.io` is served by
//! `registry-1.docker.io`. Registries on loopback (`localhost`, `127.0.0.1`, `[::1]`) are spoken
//! to over plain HTTP, as the Docker engine treats them as insecure by default; every other one
//! over HTTPS (rustls, the system's roots).

use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Empty};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use sha2::{Digest as _, Sha256};

/// A failure to ask a registry.
#[derive(Debug, thiserror::Error)]
pub enum RegistryError {
    #[error("`{reference}` is not a reference lkpkg can look up in a registry")]
    BadReference { reference: String },
    #[error("registry `{host}`: {message}")]
    Unreachable { host: String, message: String },
    #[error("registry `{host}` answered {status} for `{reference}`")]
    Status {
        host: String,
        reference: String,
        status: u16,
    },
}

const ACCEPT: &str = "application/vnd.oci.image.index.v1+json, \
    application/vnd.oci.image.manifest.v1+json, \
    application/vnd.docker.distribution.manifest.list.v2+json, \
    application/vnd.docker.distribution.manifest.v2+json";

/// How long one request may take.
const TIMEOUT: Duration = Duration::from_secs(30);

/// A registry client (connections are pooled per host).
pub struct Registry {
    client: Client<hyper_rustls::HttpsConnector<HttpConnector>, Empty<Bytes>>,
}

impl std::fmt::Debug for Registry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Registry").finish()
    }
}

/// Where a canonical reference lives.
#[derive(Debug, PartialEq, Eq)]
struct Location {
    host: String,
    repository: String,
    tag: String,
    insecure: bool,
}

fn locate(reference: &str) -> Option<Location> {
    let (name, tag) = lkpkg_cache_format::reference::split_tag(reference);
    let (host, repository) = name.split_once('/')?;
    if !(host.contains('.') || host.contains(':') || host == "localhost") || repository.is_empty() {
        return None;
    }
    let bare = host.rsplit_once(':').map_or(host, |(h, _)| h);
    let insecure = matches!(bare, "localhost" | "127.0.0.1" | "[::1]");
    let host = if host == "docker.io" {
        "registry-1.docker.io"
    } else {
        host
    };
    Some(Location {
        host: host.to_owned(),
        repository: repository.to_owned(),
        tag: tag.unwrap_or("latest").to_owned(),
        insecure,
    })
}

impl Registry {
    pub fn new() -> Result<Registry, RegistryError> {
        let unreachable = |message: String| RegistryError::Unreachable {
            host: "(tls setup)".into(),
            message,
        };
        let mut roots = rustls::RootCertStore::empty();
        for cert in rustls_native_certs::load_native_certs().certs {
            let _ = roots.add(cert);
        }
        let provider = std::sync::Arc::new(rustls::crypto::ring::default_provider());
        let config = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(|e| unreachable(e.to_string()))?
            .with_root_certificates(roots)
            .with_no_client_auth();
        let connector = hyper_rustls::HttpsConnectorBuilder::new()
            .with_tls_config(config)
            .https_or_http()
            .enable_http1()
            .build();
        Ok(Registry {
            client: Client::builder(TokioExecutor::new()).build(connector),
        })
    }

    /// The digest the registry serves for `reference` (canonical), `None` when it has no such
    /// manifest.
    pub async fn manifest_digest(&self, reference: &str) -> Result<Option<String>, RegistryError> {
        let location = locate(reference).ok_or_else(|| RegistryError::BadReference {
            reference: reference.to_owned(),
        })?;
        let scheme = if location.insecure { "http" } else { "https" };
        let url = format!(
            "{scheme}://{}/v2/{}/manifests/{}",
            location.host, location.repository, location.tag
        );
        let mut token: Option<String> = None;
        for method in ["HEAD", "GET"] {
            let mut response = self
                .send(method, &url, token.as_deref(), &location.host)
                .await?;
            if response.status() == 401 && token.is_none() {
                token = self.token(&response, &location).await?;
                response = self
                    .send(method, &url, token.as_deref(), &location.host)
                    .await?;
            }
            match response.status().as_u16() {
                404 => return Ok(None),
                200 => {}
                status => {
                    return Err(RegistryError::Status {
                        host: location.host.clone(),
                        reference: reference.to_owned(),
                        status,
                    });
                }
            }
            if let Some(digest) = response
                .headers()
                .get("docker-content-digest")
                .and_then(|v| v.to_str().ok())
            {
                return Ok(Some(digest.to_owned()));
            }
            if method == "GET" {
                let body = body(response, &location.host).await?;
                return Ok(Some(format!(
                    "sha256:{}",
                    hex::encode(Sha256::digest(&body))
                )));
            }
        }
        Ok(None)
    }

    async fn send(
        &self,
        method: &str,
        url: &str,
        token: Option<&str>,
        host: &str,
    ) -> Result<hyper::Response<hyper::body::Incoming>, RegistryError> {
        let unreachable = |message: String| RegistryError::Unreachable {
            host: host.to_owned(),
            message,
        };
        let mut request = hyper::Request::builder()
            .method(method)
            .uri(url)
            .header("accept", ACCEPT)
            .header("user-agent", concat!("lkpkg/", env!("CARGO_PKG_VERSION")));
        if let Some(token) = token {
            request = request.header("authorization", format!("Bearer {token}"));
        }
        let request = request
            .body(Empty::new())
            .map_err(|e| unreachable(e.to_string()))?;
        tokio::time::timeout(TIMEOUT, self.client.request(request))
            .await
            .map_err(|_| unreachable("timed out".into()))?
            .map_err(|e| unreachable(format!("{e:?}")))
    }

    /// Follows a `WWW-Authenticate: Bearer realm=…,service=…,scope=…` challenge anonymously.
    async fn token(
        &self,
        challenge: &hyper::Response<hyper::body::Incoming>,
        location: &Location,
    ) -> Result<Option<String>, RegistryError> {
        let Some(header) = challenge
            .headers()
            .get("www-authenticate")
            .and_then(|v| v.to_str().ok())
        else {
            return Ok(None);
        };
        let Some(params) = header.strip_prefix("Bearer ") else {
            return Ok(None);
        };
        let mut realm = None;
        let mut query = Vec::new();
        for part in params.split(',') {
            let Some((key, value)) = part.trim().split_once('=') else {
                continue;
            };
            let value = value.trim_matches('"');
            match key {
                "realm" => realm = Some(value.to_owned()),
                "service" | "scope" => query.push(format!("{key}={value}")),
                _ => {}
            }
        }
        if !query.iter().any(|q| q.starts_with("scope=")) {
            query.push(format!("scope=repository:{}:pull", location.repository));
        }
        let Some(realm) = realm else { return Ok(None) };
        let url = format!("{realm}?{}", query.join("&"));
        let response = self.send("GET", &url, None, &location.host).await?;
        if response.status() != 200 {
            return Ok(None);
        }
        let body = body(response, &location.host).await?;
        let json: serde_json::Value = serde_json::from_slice(&body).unwrap_or_default();
        Ok(json["token"]
            .as_str()
            .or_else(|| json["access_token"].as_str())
            .map(str::to_owned))
    }
}

/// A response's whole body.
async fn body(
    response: hyper::Response<hyper::body::Incoming>,
    host: &str,
) -> Result<Bytes, RegistryError> {
    Ok(response
        .into_body()
        .collect()
        .await
        .map_err(|e| RegistryError::Unreachable {
            host: host.to_owned(),
            message: e.to_string(),
        })?
        .to_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn locations() {
        let l = locate("docker.io/linuxkit/init:abc").unwrap();
        assert_eq!(
            (
                l.host.as_str(),
                l.repository.as_str(),
                l.tag.as_str(),
                l.insecure
            ),
            ("registry-1.docker.io", "linuxkit/init", "abc", false)
        );
        let l = locate("127.0.0.1:5000/org/img:t-amd64").unwrap();
        assert_eq!((l.host.as_str(), l.insecure), ("127.0.0.1:5000", true));
        assert!(locate("img:tag").is_none());
    }
}
