//! Where to speak and as whom: one oci-client per registry host (its token cache is per host),
//! over HTTPS with the system's roots plus `--cert-file`, or plain HTTP for loopback and
//! insecure registries that do not speak TLS; `--mirror` for pulls.

use std::sync::Arc;
use std::time::Duration;

use oci_client::Reference;
use oci_client::client::{Certificate, CertificateEncoding, ClientConfig, ClientProtocol};
use oci_client::secrets::RegistryAuth;

use super::credentials::{self, Credential};
use super::error::error_chain;
use super::{Level, Registry, RegistryError};

/// A mirror for pulls: `host[:port]`, over HTTP or HTTPS.
#[derive(Debug, Clone)]
pub(super) struct Mirror {
    host: String,
    insecure: bool,
}

/// One registry host: an oci-client of its own (its token cache is per host) and the auth.
pub(super) struct Host {
    pub(super) name: String,
    pub(super) client: oci_client::Client,
    pub(super) http: reqwest::Client,
    pub(super) insecure: bool,
    pub(super) auth: RegistryAuth,
    pub(super) credential: Credential,
    source: credentials::Source,
}

impl Host {
    /// What a denial means, given what was sent.
    pub(super) fn denial_hint(&self) -> String {
        match (&self.credential, &self.source) {
            (Credential::Anonymous, _) => "lkpkg had no credentials for it (`docker login`, the \
                docker config's credential helpers, or --registry-creds give them)"
                .into(),
            (_, source) => format!("the credentials from {source} were refused"),
        }
    }
}

/// Whether `host` (`name[:port]`) is a loopback address, spoken to over HTTP as the engine
/// treats loopback registries as insecure.
fn is_loopback(host: &str) -> bool {
    let bare = if host.starts_with('[') {
        host.split(']').next().map_or(host, |h| &h[1..])
    } else {
        host.rsplit_once(':').map_or(host, |(h, _)| h)
    };
    bare == "localhost"
        || bare
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback())
}

pub(super) fn parse_mirror(value: &str) -> Result<(Option<String>, Mirror), RegistryError> {
    let bad = |message: String| RegistryError::BadSetting {
        setting: format!("--mirror `{value}`"),
        message,
    };
    let (key, url) = match value.split_once('=') {
        Some((k, u)) => (Some(k.trim_end_matches('/').to_owned()), u),
        None => (None, value),
    };
    let (insecure, rest) = if let Some(rest) = url.strip_prefix("http://") {
        (true, rest)
    } else if let Some(rest) = url.strip_prefix("https://") {
        (false, rest)
    } else {
        return Err(bad("a mirror must start with http:// or https://".into()));
    };
    let host = rest.trim_end_matches('/');
    if host.is_empty() || host.contains('/') {
        return Err(bad(
            "lkpkg takes a mirror's host and port only (`https://mirror:5000`), not a path".into(),
        ));
    }
    let key = key.map(|k| match k.as_str() {
        "index.docker.io" | "registry-1.docker.io" => "docker.io".to_owned(),
        _ => k,
    });
    Ok((
        key,
        Mirror {
            host: host.to_owned(),
            insecure,
        },
    ))
}

impl Registry {
    /// The client of `registry` (as oci-client resolves it: `index.docker.io` for Docker Hub).
    ///
    /// `insecure` (a mirror given as `http://`) means plain HTTP. A loopback registry, or one
    /// of the engine's `insecure-registries`, is spoken to as the engine speaks to it: HTTPS
    /// when it answers in TLS (with the certificate checked: a registry that presents one
    /// lkpkg cannot verify gets the error, not a silent downgrade), else plain HTTP.
    async fn host(&self, registry: &str, insecure: bool) -> Result<Arc<Host>, RegistryError> {
        // Held while a host is set up, so that concurrent first requests share one client.
        let mut hosts = self.hosts.lock().await;
        if let Some(host) = hosts.get(registry) {
            return Ok(host.clone());
        }
        let insecure = insecure
            || ((is_loopback(registry) || self.insecure.contains(registry))
                && !self.speaks_tls(registry).await);
        let setting = |e: String| RegistryError::BadSetting {
            setting: format!("registry `{registry}`"),
            message: e,
        };
        let certificates: Vec<Certificate> = self
            .certs
            .iter()
            .map(|pem| Certificate {
                encoding: CertificateEncoding::Pem,
                data: pem.clone(),
            })
            .collect();
        let config = ClientConfig {
            protocol: if insecure {
                ClientProtocol::Http
            } else {
                ClientProtocol::Https
            },
            extra_root_certificates: certificates,
            // lkpkg always knows a blob's size: one PUT per blob, streamed.
            use_monolithic_push: true,
            platform_resolver: None,
            connect_timeout: Some(self.connect_timeout()),
            read_timeout: self.timeout,
            user_agent: concat!("lkpkg/", env!("CARGO_PKG_VERSION")),
            ..ClientConfig::default()
        };
        let client = oci_client::Client::try_from(config).map_err(|e| setting(e.to_string()))?;
        let mut http = reqwest::Client::builder()
            .user_agent(concat!("lkpkg/", env!("CARGO_PKG_VERSION")))
            .connect_timeout(self.connect_timeout());
        if let Some(timeout) = self.timeout {
            http = http.read_timeout(timeout);
        }
        for pem in &self.certs {
            for cert in reqwest::Certificate::from_pem_bundle(pem).unwrap_or_default() {
                http = http.add_root_certificate(cert);
            }
        }
        let http = http.build().map_err(|e| setting(e.to_string()))?;
        let (credential, source) = self.credentials.lookup(registry)?;
        self.log_at(
            Level::Debug,
            format!("registry `{registry}`: credentials: {source}"),
        );
        let auth = match &credential {
            Credential::Anonymous => RegistryAuth::Anonymous,
            Credential::Basic { username, password } => {
                RegistryAuth::Basic(username.clone(), password.expose().to_owned())
            }
            Credential::Bearer(token) => RegistryAuth::Bearer(token.expose().to_owned()),
        };
        // oci-client's blob and manifest calls use the credentials stored for the registry, not
        // ones passed along: store them before the first.
        client.store_auth_if_needed(registry, &auth).await;
        let host = Arc::new(Host {
            name: registry.to_owned(),
            client,
            http,
            insecure,
            auth,
            credential,
            source,
        });
        hosts.insert(registry.to_owned(), host.clone());
        Ok(host)
    }

    /// Whether `registry` answers in TLS (any HTTP answer over TLS, or a certificate lkpkg
    /// refuses); `false` when it speaks plain HTTP or cannot be reached over TLS at all.
    async fn speaks_tls(&self, registry: &str) -> bool {
        // Loopback and insecure registries only: near, and quick to answer or refuse a TLS
        // hello (a plain-HTTP server answers 400 at once).
        let mut probe = reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(2))
            .timeout(Duration::from_secs(2));
        for pem in &self.certs {
            for cert in reqwest::Certificate::from_pem_bundle(pem).unwrap_or_default() {
                probe = probe.add_root_certificate(cert);
            }
        }
        let Ok(probe) = probe.build() else {
            return false;
        };
        match probe.get(format!("https://{registry}/v2/")).send().await {
            Ok(_) => true,
            Err(e) => {
                let chain = error_chain(&e).to_ascii_lowercase();
                chain.contains("certificate") || chain.contains("unknownissuer")
            }
        }
    }

    /// The host serving `reference`.
    pub(super) async fn origin(&self, reference: &Reference) -> Result<Arc<Host>, RegistryError> {
        self.host(reference.resolve_registry(), false).await
    }

    /// The mirror configured for `reference`'s registry, and the reference redirected to it.
    pub(super) async fn mirror_for(&self, reference: &Reference) -> Option<(Arc<Host>, Reference)> {
        let mirror = self
            .mirrors
            .get(reference.registry())
            .or(self.default_mirror.as_ref())?;
        let host = self.host(&mirror.host, mirror.insecure).await.ok()?;
        let mut redirected = reference.clone();
        redirected.set_mirror_registry(mirror.host.clone());
        Some((host, redirected))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn loopback_hosts_are_plain_http() {
        for host in [
            "localhost:5000",
            "127.0.0.1:5000",
            "[::1]:5000",
            "127.0.0.1",
        ] {
            assert!(is_loopback(host), "{host}");
        }
        for host in ["docker.io", "index.docker.io", "10.0.0.1:5000", "ghcr.io"] {
            assert!(!is_loopback(host), "{host}");
        }
    }

    #[test]
    fn mirrors_parse_as_linuxkit_takes_them() {
        let (key, m) = parse_mirror("docker.io=http://127.0.0.1:5001").unwrap();
        assert_eq!(key.as_deref(), Some("docker.io"));
        assert_eq!(m.host, "127.0.0.1:5001");
        assert!(m.insecure);
        let (key, m) = parse_mirror("https://mirror.example").unwrap();
        assert!(key.is_none() && !m.insecure);
        assert!(parse_mirror("mirror.example").is_err());
        assert!(parse_mirror("https://mirror.example/path").is_err());
    }
}
