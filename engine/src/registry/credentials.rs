//! Where credentials for a registry come from, in the order linuxkit and the docker CLI look:
//!
//! 1. `--registry-creds <registry>=<user>:<password>` or `<registry>=<token>` (linuxkit's flag;
//!    a bare token is sent as a bearer token);
//! 2. the docker CLI's config (`$DOCKER_CONFIG/config.json`, else `~/.docker/config.json`):
//!    `credHelpers.<registry>`, then `auths.<registry>` (`auth` = base64 `user:password`, or
//!    `username`/`password`, or `identitytoken`), then `credsStore`; a helper is the program
//!    `docker-credential-<name>`, run with the registry on stdin (`get`), answering
//!    `{"Username": …, "Secret": …}`;
//! 3. anonymous.
//!
//! Docker Hub is keyed `https://index.docker.io/v1/` in the docker config; other registries by
//! `host[:port]`, with or without a scheme, as `docker login` writes them.
//!
//! A secret never reaches an error message, a log line or `Debug` output: [`Secret`] prints as
//! `<redacted>`, and errors name the file and the registry, never the value.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use base64::Engine as _;

use super::RegistryError;

/// A password or token. Its `Debug` and `Display` never show it.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    pub fn new(value: impl Into<String>) -> Secret {
        Secret(value.into())
    }

    pub(crate) fn expose(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("<redacted>")
    }
}

/// How lkpkg authenticates to one registry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Credential {
    Anonymous,
    Basic {
        username: String,
        password: Secret,
    },
    /// A registry token, sent as `Authorization: Bearer`.
    Bearer(Secret),
}

/// Where a credential was found, for messages (`-v`): never the credential itself.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Source {
    Flag,
    DockerConfig(PathBuf),
    Helper(String),
    None,
}

impl std::fmt::Display for Source {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Source::Flag => f.write_str("--registry-creds"),
            Source::DockerConfig(path) => write!(f, "{}", path.display()),
            Source::Helper(helper) => write!(f, "docker-credential-{helper}"),
            Source::None => f.write_str("anonymous"),
        }
    }
}

/// The docker CLI config's parts that concern registries.
#[derive(Debug, Default, serde::Deserialize)]
struct DockerConfig {
    #[serde(default)]
    auths: BTreeMap<String, AuthEntry>,
    #[serde(default, rename = "credHelpers")]
    cred_helpers: BTreeMap<String, String>,
    #[serde(default, rename = "credsStore")]
    creds_store: Option<String>,
}

#[derive(Default, serde::Deserialize)]
struct AuthEntry {
    #[serde(default)]
    auth: Option<String>,
    #[serde(default)]
    username: Option<String>,
    #[serde(default)]
    password: Option<String>,
    #[serde(default, rename = "identitytoken")]
    identity_token: Option<String>,
}

impl std::fmt::Debug for AuthEntry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("AuthEntry(<redacted>)")
    }
}

#[derive(serde::Deserialize)]
struct HelperAnswer {
    #[serde(rename = "Username", default)]
    username: String,
    #[serde(rename = "Secret", default)]
    secret: String,
}

/// Every credential lkpkg knows, looked up per registry.
#[derive(Debug, Default)]
pub struct Credentials {
    flags: BTreeMap<String, Credential>,
    config: DockerConfig,
    config_path: Option<PathBuf>,
}

/// `host[:port]` of a docker-config key (`https://index.docker.io/v1/` → `docker.io`).
fn normalize_host(key: &str) -> String {
    let rest = key
        .strip_prefix("https://")
        .or_else(|| key.strip_prefix("http://"))
        .unwrap_or(key);
    let host = rest.split('/').next().unwrap_or(rest);
    match host {
        "index.docker.io" | "registry-1.docker.io" | "registry.hub.docker.com" => {
            "docker.io".into()
        }
        h => h.to_owned(),
    }
}

impl Credentials {
    /// Reads `--registry-creds` values and the docker config at `docker_config` (a directory,
    /// as `DOCKER_CONFIG` names it; `None`: no docker config). A missing config file is no
    /// credentials; an unreadable or malformed one is an error naming it.
    pub fn load(
        flags: &[String],
        docker_config: Option<&Path>,
    ) -> Result<Credentials, RegistryError> {
        let mut parsed = BTreeMap::new();
        for flag in flags {
            let Some((registry, value)) = flag.split_once('=') else {
                return Err(RegistryError::BadSetting {
                    setting: "--registry-creds".into(),
                    message: "expected `<registry>=<user>:<password>` or `<registry>=<token>`"
                        .into(),
                });
            };
            if registry.is_empty() || value.is_empty() {
                return Err(RegistryError::BadSetting {
                    setting: "--registry-creds".into(),
                    message: "the registry and the credential must not be empty".into(),
                });
            }
            let credential = match value.split_once(':') {
                Some((username, password)) => Credential::Basic {
                    username: username.to_owned(),
                    password: Secret::new(password),
                },
                None => Credential::Bearer(Secret::new(value)),
            };
            parsed.insert(normalize_host(registry), credential);
        }
        let mut credentials = Credentials {
            flags: parsed,
            ..Credentials::default()
        };
        if let Some(dir) = docker_config {
            let path = dir.join("config.json");
            match std::fs::read(&path) {
                Ok(bytes) => {
                    credentials.config =
                        serde_json::from_slice(&bytes).map_err(|e| RegistryError::BadSetting {
                            setting: path.display().to_string(),
                            // serde_json's message names a line and column, never a value.
                            message: format!("not a docker CLI config: {e}"),
                        })?;
                    credentials.config_path = Some(path);
                }
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => {
                    return Err(RegistryError::BadSetting {
                        setting: path.display().to_string(),
                        message: e.to_string(),
                    });
                }
            }
        }
        Ok(credentials)
    }

    /// The credential for `registry` (`host[:port]`, `docker.io` for Docker Hub) and where it
    /// came from.
    pub fn lookup(&self, registry: &str) -> Result<(Credential, Source), RegistryError> {
        let registry = normalize_host(registry);
        if let Some(credential) = self.flags.get(&registry) {
            return Ok((credential.clone(), Source::Flag));
        }
        let config_path = || self.config_path.clone().unwrap_or_default();
        if let Some(helper) = self
            .config
            .cred_helpers
            .iter()
            .find(|(k, _)| normalize_host(k) == registry)
            .map(|(_, v)| v)
        {
            return Ok((
                run_helper(helper, &registry)?,
                Source::Helper(helper.clone()),
            ));
        }
        if let Some(entry) = self
            .config
            .auths
            .iter()
            .find(|(k, _)| normalize_host(k) == registry)
            .map(|(_, v)| v)
        {
            let bad = |message: &str| RegistryError::BadSetting {
                setting: format!("{} (auths.{registry})", config_path().display()),
                message: message.to_owned(),
            };
            if let Some(token) = &entry.identity_token
                && !token.is_empty()
            {
                return Ok((
                    Credential::Bearer(Secret::new(token.clone())),
                    Source::DockerConfig(config_path()),
                ));
            }
            if let Some(auth) = entry.auth.as_deref().filter(|a| !a.is_empty()) {
                let decoded = base64::engine::general_purpose::STANDARD
                    .decode(auth.trim())
                    .map_err(|_| bad("`auth` is not base64"))?;
                let decoded = String::from_utf8(decoded).map_err(|_| bad("`auth` is not UTF-8"))?;
                let (username, password) = decoded
                    .split_once(':')
                    .ok_or_else(|| bad("`auth` is not `user:password`"))?;
                return Ok((
                    Credential::Basic {
                        username: username.to_owned(),
                        password: Secret::new(password),
                    },
                    Source::DockerConfig(config_path()),
                ));
            }
            if let (Some(username), Some(password)) = (&entry.username, &entry.password) {
                return Ok((
                    Credential::Basic {
                        username: username.clone(),
                        password: Secret::new(password.clone()),
                    },
                    Source::DockerConfig(config_path()),
                ));
            }
            // An entry without credentials (what `docker login` leaves beside a credsStore).
        }
        if let Some(store) = self.config.creds_store.as_deref().filter(|s| !s.is_empty()) {
            return Ok((
                run_helper(store, &registry)?,
                Source::Helper(store.to_owned()),
            ));
        }
        Ok((Credential::Anonymous, Source::None))
    }
}

/// Asks `docker-credential-<helper> get` for `registry`'s credential. A helper that knows
/// nothing of the registry ("credentials not found in native keychain") means anonymous.
fn run_helper(helper: &str, registry: &str) -> Result<Credential, RegistryError> {
    if helper.contains('/') || helper.is_empty() {
        return Err(RegistryError::BadSetting {
            setting: format!("credential helper `{helper}`"),
            message: "a helper is named by the suffix of `docker-credential-<name>`".into(),
        });
    }
    let program = format!("docker-credential-{helper}");
    let failed = |message: String| RegistryError::Credentials {
        registry: registry.to_owned(),
        helper: program.clone(),
        message,
    };
    // Docker Hub's helpers know it by its v1 URL, as `docker login` stored it.
    let server = if registry == "docker.io" {
        "https://index.docker.io/v1/".to_owned()
    } else {
        registry.to_owned()
    };
    let mut child = Command::new(&program)
        .arg("get")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| failed(format!("cannot run it: {e}")))?;
    if let Some(mut stdin) = child.stdin.take() {
        let _ = stdin.write_all(server.as_bytes());
    }
    let output = child
        .wait_with_output()
        .map_err(|e| failed(e.to_string()))?;
    if !output.status.success() {
        let said = String::from_utf8_lossy(&output.stdout).trim().to_owned();
        if said.contains("credentials not found") {
            return Ok(Credential::Anonymous);
        }
        // What a helper prints on failure is its own message, not a secret; still, keep it to
        // one short line.
        let said: String = said
            .lines()
            .next()
            .unwrap_or("")
            .chars()
            .take(200)
            .collect();
        return Err(failed(format!("it failed ({}): {said}", output.status)));
    }
    let answer: HelperAnswer = serde_json::from_slice(&output.stdout)
        .map_err(|_| failed("it did not answer `{\"Username\": …, \"Secret\": …}`".into()))?;
    Ok(if answer.username == "<token>" {
        Credential::Bearer(Secret::new(answer.secret))
    } else {
        Credential::Basic {
            username: answer.username,
            password: Secret::new(answer.secret),
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(json: &str) -> (tempfile::TempDir, Credentials) {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("config.json"), json).unwrap();
        let creds = Credentials::load(&[], Some(dir.path())).unwrap();
        (dir, creds)
    }

    #[test]
    fn docker_config_auths_and_hub_keys() {
        let auth = base64::engine::general_purpose::STANDARD.encode("alice:s3cret");
        let (_dir, creds) = config(&format!(
            r#"{{"auths": {{"https://index.docker.io/v1/": {{"auth": "{auth}"}},
                "localhost:5000": {{"username": "bob", "password": "pw"}}}}}}"#
        ));
        let (hub, _) = creds.lookup("docker.io").unwrap();
        assert_eq!(
            hub,
            Credential::Basic {
                username: "alice".into(),
                password: Secret::new("s3cret")
            }
        );
        let (local, _) = creds.lookup("localhost:5000").unwrap();
        assert!(matches!(local, Credential::Basic { username, .. } if username == "bob"));
        assert_eq!(creds.lookup("quay.io").unwrap().0, Credential::Anonymous);
    }

    #[test]
    fn flags_win_and_secrets_never_print() {
        let creds = Credentials::load(
            &["127.0.0.1:5000=u:topsecret".into(), "ghcr.io=tok3n".into()],
            None,
        )
        .unwrap();
        let (c, source) = creds.lookup("127.0.0.1:5000").unwrap();
        assert_eq!(source, Source::Flag);
        let shown = format!("{c:?} {source}");
        assert!(!shown.contains("topsecret"), "{shown}");
        assert!(matches!(
            creds.lookup("ghcr.io").unwrap().0,
            Credential::Bearer(_)
        ));
        assert!(Credentials::load(&["nonsense".into()], None).is_err());
    }

    #[test]
    fn a_malformed_config_names_its_file_not_its_content() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("config.json"), "{\"auths\": \"hunter2").unwrap();
        let e = Credentials::load(&[], Some(dir.path()))
            .unwrap_err()
            .to_string();
        assert!(e.contains("config.json"), "{e}");
        assert!(!e.contains("hunter2"), "{e}");
    }
}
