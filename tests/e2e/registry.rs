//! Registries, against the distribution registry (Debian's `docker-registry`) that each test
//! starts on a loopback port of its own (its log is then the test's alone), plain or with TLS
//! (a CA of the test's, given by `--cert-file`) and htpasswd basic auth:
//! pushes (`pkg build --push`, `pkg push`, `cache push`), pulls (`cache pull`, and before a
//! build: by shared build record, by tag), the index merge under concurrent pushes, and the
//! faults (unreachable, cut connections, bad content, bad credentials), checked with skopeo.

use std::io::{Read, Write};
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::support::{Repo, ok, run};

/// A distribution registry of the test's own.
pub(crate) struct TestRegistry {
    dir: tempfile::TempDir,
    port: u16,
    child: Child,
    /// The CA certificate, with TLS.
    ca: Option<PathBuf>,
}

const USER: &str = "pusher";
const PASSWORD: &str = "Pa55-w0rd-never-printed";

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn sh(dir: &Path, script: &str) {
    let out = Command::new("bash")
        .arg("-c")
        .arg(script)
        .current_dir(dir)
        .output()
        .expect("bash");
    assert!(
        out.status.success(),
        "{script}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

impl TestRegistry {
    pub(crate) fn plain() -> TestRegistry {
        TestRegistry::start(false)
    }

    fn tls_with_auth() -> TestRegistry {
        TestRegistry::start(true)
    }

    fn start(secure: bool) -> TestRegistry {
        let dir = tempfile::tempdir().unwrap();
        let port = free_port();
        let mut config = format!(
            "version: 0.1\nlog:\n  level: info\nstorage:\n  filesystem:\n    rootdirectory: {}\n  delete:\n    enabled: true\nhttp:\n  addr: 127.0.0.1:{port}\n",
            dir.path().join("data").display()
        );
        let mut ca = None;
        if secure {
            sh(
                dir.path(),
                &format!(
                    "openssl req -x509 -newkey rsa:2048 -nodes -keyout ca.key -out ca.pem -days 2 \
                       -subj /CN=lkpkg-test-ca -addext basicConstraints=critical,CA:TRUE 2>/dev/null && \
                     openssl req -newkey rsa:2048 -nodes -keyout server.key -out server.csr \
                       -subj /CN=127.0.0.1 2>/dev/null && \
                     printf 'subjectAltName=IP:127.0.0.1\\n' > ext && \
                     openssl x509 -req -in server.csr -CA ca.pem -CAkey ca.key -CAcreateserial \
                       -out server.pem -days 2 -extfile ext 2>/dev/null && \
                     htpasswd -Bbn {USER} {PASSWORD} > htpasswd"
                ),
            );
            config.push_str(&format!(
                "  tls:\n    certificate: {0}/server.pem\n    key: {0}/server.key\nauth:\n  htpasswd:\n    realm: lkpkg-test\n    path: {0}/htpasswd\n",
                dir.path().display()
            ));
            ca = Some(dir.path().join("ca.pem"));
        }
        std::fs::write(dir.path().join("config.yml"), config).unwrap();
        let log = std::fs::File::create(dir.path().join("log")).unwrap();
        let child = Command::new("docker-registry")
            .arg("serve")
            .arg(dir.path().join("config.yml"))
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .expect("docker-registry (scripts/dev-env.sh installs it)");
        let deadline = Instant::now() + Duration::from_secs(20);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(Instant::now() < deadline, "the registry did not start");
            std::thread::sleep(Duration::from_millis(50));
        }
        TestRegistry {
            dir,
            port,
            child,
            ca,
        }
    }

    pub(crate) fn host(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    /// How many blob uploads the registry started.
    fn uploads(&self) -> usize {
        let log = std::fs::read_to_string(self.dir.path().join("log")).unwrap();
        log.lines()
            .filter(|l| l.contains("\"POST /v2/") && l.contains("/blobs/uploads/"))
            .count()
    }

    /// `skopeo inspect --raw` of `reference` (in this registry) as JSON.
    fn raw(&self, reference: &str) -> serde_json::Value {
        let mut cmd = Command::new("skopeo");
        cmd.args(["inspect", "--raw"]);
        match &self.ca {
            Some(ca) => {
                let certs = self.dir.path().join("skopeo-certs");
                std::fs::create_dir_all(&certs).unwrap();
                std::fs::copy(ca, certs.join("ca.crt")).unwrap();
                cmd.arg(format!("--cert-dir={}", certs.display()));
                cmd.arg(format!("--creds={USER}:{PASSWORD}"));
            }
            None => {
                cmd.arg("--tls-verify=false");
            }
        }
        cmd.arg(format!("docker://{reference}"));
        let out = ok(&mut cmd);
        serde_json::from_str(&out).unwrap()
    }

    fn tags(&self, repository: &str) -> Vec<String> {
        let out = ok(Command::new("skopeo").args([
            "list-tags",
            "--tls-verify=false",
            &format!("docker://{}/{repository}", self.host()),
        ]));
        let v: serde_json::Value = serde_json::from_str(&out).unwrap();
        v["Tags"]
            .as_array()
            .unwrap()
            .iter()
            .map(|t| t.as_str().unwrap().to_owned())
            .collect()
    }
}

impl Drop for TestRegistry {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A repository with `base` (a file per platform) and `app` (`FROM` base through
/// `@lkt:pkg:`), both amd64 and arm64, published under `<registry>/e2e`.
fn chain(registry: &str, tag: &str) -> Repo {
    let repo = Repo::new();
    let org = format!("org: {registry}/e2e-{tag}\narches: [amd64, arm64]\n");
    repo.write("base/build.yml", &format!("image: base\n{org}"))
        .write(
            "base/Dockerfile",
            "FROM scratch\nARG TARGETARCH\nCOPY payload-${TARGETARCH} /payload\n",
        )
        .write("base/payload-amd64", "base amd64 v1\n")
        .write("base/payload-arm64", "base arm64 v1\n")
        .write(
            "app/build.yml",
            &format!("image: app\n{org}buildArgs:\n  - BASE=@lkt:pkg:../base\n"),
        )
        .write("app/Dockerfile", "ARG BASE\nFROM ${BASE}\nCOPY app.txt /\n")
        .write("app/app.txt", "app\n");
    repo.commit_all("chain");
    repo
}

/// `lkpkg` in `repo` with its own cache and docker config, and no engine unless `engine`.
fn lkpkg(repo: &Repo, cache: &Path, engine: bool) -> Command {
    let mut cmd = repo.lkpkg();
    cmd.arg("--cache").arg(cache);
    cmd.env("DOCKER_CONFIG", cache.with_extension("docker"));
    if !engine {
        // A machine that cannot build: whatever is not pulled fails.
        cmd.env("DOCKER_HOST", "unix:///nonexistent/docker.sock");
    }
    cmd
}

fn tag_of(repo: &Repo, dir: &str) -> String {
    ok(repo.lkpkg().args(["pkg", "show-tag", "--canonical", dir]))
        .trim()
        .to_owned()
}

fn local_digest(repo: &Repo, cache: &Path, name: &str) -> String {
    let out = ok(lkpkg(repo, cache, false).args(["cache", "ls", "--json"]));
    crate::support::listed_images(&out)
        .iter()
        .find(|i| i["name"] == name)
        .unwrap_or_else(|| panic!("{name} not in the cache: {out}"))["digest"]
        .as_str()
        .unwrap()
        .to_owned()
}

fn platforms_of(index: &serde_json::Value) -> Vec<String> {
    let mut out: Vec<String> = index["manifests"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|m| m["platform"]["architecture"].as_str().map(str::to_owned))
        .collect();
    out.sort();
    out
}

#[test]
fn a_pushed_chain_is_pulled_not_built_by_an_empty_machine_also_after_a_dependency_rebuild() {
    let registry = TestRegistry::plain();
    let repo = chain(&registry.host(), "pull");
    let tmp = tempfile::tempdir().unwrap();
    let a = tmp.path().join("a");
    let (app, base) = (tag_of(&repo, "app"), tag_of(&repo, "base"));

    let (code, _, stderr) = run(lkpkg(&repo, &a, true).args(["pkg", "build", "--push"]));
    assert_eq!(code, 0, "{stderr}");
    assert!(stderr.contains("4 built"), "{stderr}");
    let index = registry.raw(&app);
    assert_eq!(platforms_of(&index), ["amd64", "arm64"], "{index}");
    for arch in ["amd64", "arm64"] {
        let per_arch = registry.raw(&format!("{app}-{arch}"));
        assert_eq!(
            per_arch["mediaType"], "application/vnd.oci.image.manifest.v1+json",
            "{per_arch}"
        );
    }
    assert_eq!(
        local_digest(&repo, &a, &app),
        skopeo_digest(&registry, &app)
    );
    // Shared build records: one per unit, in each image's repository.
    let records = registry
        .tags("e2e-pull/app")
        .into_iter()
        .filter(|t| t.starts_with("lkpkg-key-"))
        .count();
    assert_eq!(records, 2);

    // The layer the app shares with its base went once, then by a cross-repository mount.
    let log = std::fs::read_to_string(registry.dir.path().join("log")).unwrap();
    let mounts: Vec<&str> = log
        .lines()
        .filter(|l| l.contains("\"POST /v2/e2e-pull/") && l.contains("mount=sha256"))
        .collect();
    assert!(!mounts.is_empty(), "no mount in the registry's log");

    // Pushing again uploads nothing.
    let before = registry.uploads();
    assert!(before > 0);
    ok(lkpkg(&repo, &a, true).args(["pkg", "push"]));
    assert_eq!(registry.uploads(), before, "a second push uploaded blobs");

    // An empty machine that cannot build pulls everything.
    let b = tmp.path().join("b");
    let (code, _, stderr) = run(lkpkg(&repo, &b, false).args(["pkg", "build"]));
    assert_eq!(code, 0, "{stderr}");
    assert!(stderr.contains("0 built, 4 pulled"), "{stderr}");
    assert_eq!(local_digest(&repo, &b, &app), local_digest(&repo, &a, &app));
    assert_eq!(
        local_digest(&repo, &b, &base),
        local_digest(&repo, &a, &base)
    );
    ok(lkpkg(&repo, &b, false).args(["cache", "verify"]));
    // Then it is fresh there, without a registry.
    drop(registry);
    let (code, _, stderr) = run(lkpkg(&repo, &b, false).args(["pkg", "build"]));
    assert_eq!(code, 0, "{stderr}");
    assert!(stderr.contains("0 built, 4 fresh"), "{stderr}");
}

#[test]
fn after_a_dependency_aware_rebuild_the_dependent_comes_by_its_build_record_not_its_stale_tag() {
    let registry = TestRegistry::plain();
    let repo = chain(&registry.host(), "dep");
    let tmp = tempfile::tempdir().unwrap();
    let a = tmp.path().join("a");
    ok(lkpkg(&repo, &a, true).args(["pkg", "build", "--push"]));
    let app = tag_of(&repo, "app");
    let old_app = skopeo_digest(&registry, &app);

    // The base changes; the app keeps its tag but is rebuilt on the new base.
    repo.write("base/payload-amd64", "base amd64 v2\n")
        .write("base/payload-arm64", "base arm64 v2\n");
    repo.commit_all("base v2");
    assert_eq!(tag_of(&repo, "app"), app);
    let (code, _, stderr) = run(lkpkg(&repo, &a, true).args(["pkg", "build", "--push"]));
    assert_eq!(code, 0, "{stderr}");
    assert!(stderr.contains("4 built"), "{stderr}");
    let new_app = local_digest(&repo, &a, &app);
    assert_ne!(new_app, old_app);
    assert_eq!(skopeo_digest(&registry, &app), new_app);

    let b = tmp.path().join("b");
    let (code, _, stderr) = run(lkpkg(&repo, &b, false).args(["pkg", "build"]));
    assert_eq!(code, 0, "{stderr}");
    assert!(stderr.contains("0 built, 4 pulled"), "{stderr}");
    for arch in ["amd64", "arm64"] {
        let line = stderr
            .lines()
            .find(|l| l.contains(&format!("Pulled app/{arch}")))
            .unwrap_or_else(|| panic!("{stderr}"));
        assert!(line.contains("lkpkg-key-"), "{line}");
    }
    assert_eq!(local_digest(&repo, &b, &app), new_app);
}

#[test]
fn cache_push_and_pull_agree_with_skopeo_and_a_build_pulls_by_tag() {
    let registry = TestRegistry::plain();
    let repo = chain(&registry.host(), "cache");
    let tmp = tempfile::tempdir().unwrap();
    let a = tmp.path().join("a");
    ok(lkpkg(&repo, &a, true).args(["pkg", "build", "base"]));
    let base = tag_of(&repo, "base");

    let (code, _, stderr) =
        run(lkpkg(&repo, &a, false).args(["cache", "push", &base, "--with-arch-tags"]));
    assert_eq!(code, 0, "{stderr}");
    assert!(
        stderr.contains(&format!("Pushing local {base} as {base}")),
        "{stderr}"
    );
    assert_eq!(
        skopeo_digest(&registry, &base),
        local_digest(&repo, &a, &base)
    );
    assert!(registry.raw(&format!("{base}-arm64"))["layers"].is_array());
    // Without --override an existing tag is left alone, as linuxkit leaves it.
    let (_, _, stderr) = run(lkpkg(&repo, &a, false).args(["cache", "push", &base]));
    assert!(
        stderr.contains("already available on remote registry"),
        "{stderr}"
    );

    let b = tmp.path().join("b");
    let (code, _, stderr) = run(lkpkg(&repo, &b, false).args(["cache", "pull", &base]));
    assert_eq!(code, 0, "{stderr}");
    ok(lkpkg(&repo, &b, false).args(["cache", "verify"]));
    assert_eq!(
        local_digest(&repo, &b, &base),
        local_digest(&repo, &a, &base)
    );
    for arch in ["amd64", "arm64"] {
        local_digest(&repo, &b, &format!("{base}-{arch}"));
    }

    // No build records were published: a build finds the tag (a foreign image, as linuxkit
    // would use it).
    let c = tmp.path().join("c");
    let (code, _, stderr) = run(lkpkg(&repo, &c, false).args(["pkg", "build", "base"]));
    assert_eq!(code, 0, "{stderr}");
    assert!(stderr.contains("published tag"), "{stderr}");
    assert!(stderr.contains("0 built, 2 pulled"), "{stderr}");
}

#[test]
fn concurrent_pushes_of_different_platforms_keep_both_in_the_index() {
    let registry = TestRegistry::plain();
    let repo = chain(&registry.host(), "race");
    let tmp = tempfile::tempdir().unwrap();
    for round in 0..3 {
        repo.write("base/payload-amd64", &format!("round {round}\n"));
        repo.commit_all(&format!("round {round}"));
        let base = tag_of(&repo, "base");
        let caches: Vec<PathBuf> = ["amd64", "arm64"]
            .iter()
            .map(|arch| tmp.path().join(format!("{round}-{arch}")))
            .collect();
        for (cache, arch) in caches.iter().zip(["amd64", "arm64"]) {
            ok(lkpkg(&repo, cache, true).args([
                "pkg",
                "build",
                "base",
                "--platforms",
                &format!("linux/{arch}"),
            ]));
        }
        let pushes: Vec<Child> = caches
            .iter()
            .map(|cache| {
                lkpkg(&repo, cache, false)
                    .args(["cache", "push", &base, "--override"])
                    .stdout(Stdio::null())
                    .stderr(Stdio::piped())
                    .spawn()
                    .unwrap()
            })
            .collect();
        for push in pushes {
            let out = push.wait_with_output().unwrap();
            assert!(
                out.status.success(),
                "{}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
        assert_eq!(
            platforms_of(&registry.raw(&base)),
            ["amd64", "arm64"],
            "round {round}"
        );
    }
}

/// A docker-credential helper answering for one registry, as a script on PATH.
fn credential_helper(dir: &Path, registry: &str, password: &str) -> String {
    let bin = dir.join("bin");
    std::fs::create_dir_all(&bin).unwrap();
    let script = bin.join("docker-credential-lkpkgtest");
    std::fs::write(
        &script,
        format!(
            "#!/bin/sh\n[ \"$1\" = get ] || exit 1\nread server\n\
             if [ \"$server\" = \"{registry}\" ]; then\n\
               printf '{{\"ServerURL\":\"%s\",\"Username\":\"{USER}\",\"Secret\":\"{password}\"}}' \"$server\"\n\
             else echo 'credentials not found in native keychain'; exit 1; fi\n"
        ),
    )
    .unwrap();
    std::fs::set_permissions(&script, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    format!(
        "{}:{}",
        bin.display(),
        std::env::var("PATH").unwrap_or_default()
    )
}

#[test]
fn tls_and_basic_auth_with_cert_file_docker_config_and_credential_helper_never_print_secrets() {
    let registry = TestRegistry::tls_with_auth();
    let host = registry.host();
    let repo = chain(&host, "auth");
    let tmp = tempfile::tempdir().unwrap();
    let a = tmp.path().join("a");
    ok(lkpkg(&repo, &a, true).args(["pkg", "build", "base"]));
    let base = tag_of(&repo, "base");
    let ca = registry.ca.clone().unwrap();
    let ca = ca.to_str().unwrap();
    let mut outputs = String::new();

    // Without the CA: the TLS failure names the registry.
    let (code, out, err) = run(lkpkg(&repo, &a, false).args(["cache", "push", &base]));
    assert_eq!(code, 3, "{err}");
    assert!(err.contains(&host), "{err}");
    outputs.push_str(&(out + &err));

    // With the CA but no credentials: refused, and said so.
    let (code, out, err) =
        run(lkpkg(&repo, &a, false).args(["--cert-file", ca, "cache", "push", &base]));
    assert_ne!(code, 0, "{err}");
    assert!(err.contains(&host) && err.contains("credentials"), "{err}");
    outputs.push_str(&(out + &err));

    // Credentials from the docker config.
    let config = a.with_extension("docker");
    std::fs::create_dir_all(&config).unwrap();
    let auth = base64_encode(&format!("{USER}:{PASSWORD}"));
    std::fs::write(
        config.join("config.json"),
        format!(r#"{{"auths": {{"{host}": {{"auth": "{auth}"}}}}}}"#),
    )
    .unwrap();
    let (code, out, err) = run(lkpkg(&repo, &a, false).args([
        "--cert-file",
        ca,
        "-v",
        "3",
        "cache",
        "push",
        &base,
        "--with-arch-tags",
    ]));
    assert_eq!(code, 0, "{err}");
    // `-v 3` shows the registry requests, with their timings (and, below, no secret).
    assert!(
        err.contains("lkpkg_engine::registry") && err.contains("time.busy"),
        "{err}"
    );
    outputs.push_str(&(out + &err));
    assert_eq!(platforms_of(&registry.raw(&base)), ["amd64", "arm64"]);

    // A wrong password: refused, exit 2, the registry named.
    std::fs::write(
        config.join("config.json"),
        format!(
            r#"{{"auths": {{"{host}": {{"auth": "{}"}}}}}}"#,
            base64_encode(&format!("{USER}:wrong-{PASSWORD}"))
        ),
    )
    .unwrap();
    let (code, out, err) = run(lkpkg(&repo, &a, false).args([
        "--cert-file",
        ca,
        "cache",
        "push",
        &base,
        "--override",
    ]));
    assert_eq!(code, 2, "{err}");
    assert!(err.contains(&host), "{err}");
    outputs.push_str(&(out + &err));

    // Credentials from a helper (credsStore), then a pull with them into an empty cache.
    std::fs::write(config.join("config.json"), r#"{"credsStore": "lkpkgtest"}"#).unwrap();
    let path = credential_helper(tmp.path(), &host, PASSWORD);
    let b = tmp.path().join("b");
    std::fs::create_dir_all(b.with_extension("docker")).unwrap();
    std::fs::copy(
        config.join("config.json"),
        b.with_extension("docker").join("config.json"),
    )
    .unwrap();
    let (code, out, err) = run(lkpkg(&repo, &b, false).env("PATH", &path).args([
        "--cert-file",
        ca,
        "-v",
        "3",
        "cache",
        "pull",
        &base,
    ]));
    assert_eq!(code, 0, "{err}");
    outputs.push_str(&(out + &err));
    assert_eq!(
        local_digest(&repo, &b, &base),
        local_digest(&repo, &a, &base)
    );
    // And the build pushes through --registry-creds.
    let (code, out, err) = run(lkpkg(&repo, &a, true).args([
        "--cert-file",
        ca,
        "-v",
        "3",
        "pkg",
        "build",
        "--push",
        "--registry-creds",
        &format!("{host}={USER}:{PASSWORD}"),
        "base",
    ]));
    assert_eq!(code, 0, "{err}");
    outputs.push_str(&(out + &err));

    assert!(
        !outputs.contains(PASSWORD),
        "a secret was printed:\n{outputs}"
    );
    assert!(!outputs.contains(&auth), "a secret was printed:\n{outputs}");
}

#[test]
fn registry_faults_give_clear_errors_and_leave_the_cache_as_it_was() {
    let repo = chain("127.0.0.1:1", "faults");
    let tmp = tempfile::tempdir().unwrap();
    let cache = tmp.path().join("c");
    let names = |cache: &Path| ok(lkpkg(&repo, cache, false).args(["cache", "ls", "--json"]));

    // Unreachable: named, exit 3, retried visibly.
    let (code, _, err) =
        run(lkpkg(&repo, &cache, false).args(["cache", "pull", "127.0.0.1:1/e2e/nothing:here"]));
    assert_eq!(code, 3, "{err}");
    assert!(
        err.contains("127.0.0.1:1") && err.contains("nothing:here"),
        "{err}"
    );
    assert!(err.contains("trying again"), "{err}");
    assert!(crate::support::listed_images(&names(&cache)).is_empty());

    // A registry whose manifest does not match its digest, and one whose body never ends.
    let fake = FakeRegistry::start();
    for (path, expected) in [
        ("bad/digest:t", "does not match its digest"),
        ("endless/body:t", "larger than a manifest may be"),
        ("long/blob:t", "longer than its descriptor"),
        ("wrong/blob:t", "does not match its digest"),
    ] {
        let (code, _, err) = run(lkpkg(&repo, &cache, false).args([
            "cache",
            "pull",
            &format!("127.0.0.1:{}/{path}", fake.port),
        ]));
        assert_eq!(code, 3, "{err}");
        assert!(
            err.contains(expected) && err.contains(&format!("127.0.0.1:{}", fake.port)),
            "{err}"
        );
        assert!(crate::support::listed_images(&names(&cache)).is_empty());
    }

    // A registry behind a bearer-token handshake: the token is fetched for the pull scope and
    // sent with manifests and blobs.
    let tokens = FakeRegistry::start_with_tokens();
    let pulled = tmp.path().join("tokens");
    std::fs::create_dir_all(pulled.with_extension("docker")).unwrap();
    std::fs::write(
        pulled.with_extension("docker").join("config.json"),
        format!(
            r#"{{"auths": {{"127.0.0.1:{}": {{"auth": "{}"}}}}}}"#,
            tokens.port,
            base64_encode(&format!("{USER}:{PASSWORD}"))
        ),
    )
    .unwrap();
    let (code, _, err) = run(lkpkg(&repo, &pulled, false).args([
        "cache",
        "pull",
        &format!("127.0.0.1:{}/tok/img:t", tokens.port),
    ]));
    assert_eq!(code, 0, "{err}");
    ok(lkpkg(&repo, &pulled, false).args(["cache", "verify"]));

    // 500s and cut connections on uploads, in front of a real registry: the push is retried
    // (visibly) and completes.
    let registry = TestRegistry::plain();
    let proxy = FailingProxy::start(registry.port, 2, 2);
    let repo = chain(&format!("127.0.0.1:{}", proxy.port), "cut");
    let a = tmp.path().join("a");
    ok(lkpkg(&repo, &a, true).args(["pkg", "build", "base"]));
    let base = tag_of(&repo, "base");
    let (code, _, err) = run(lkpkg(&repo, &a, false).args(["cache", "push", &base]));
    assert_eq!(code, 0, "{err}");
    assert!(err.contains("trying again"), "{err}");
    let direct = base.replace(
        &format!(":{}/", proxy.port),
        &format!(":{}/", registry.port),
    );
    assert_eq!(
        skopeo_digest(&registry, &direct),
        local_digest(&repo, &a, &base)
    );
}

/// sha256 of `{}`.
const EMPTY_OBJECT: &str = "44136fa355b3678a1146ad16f7e8649e94fb4fc21fe77e8310c060f61caaff8a";

/// A registry that accepts connections and reads requests but never answers, or goes silent
/// in the middle of an answer: each wedged call ends after `LKPKG_REGISTRY_TIMEOUT` (retried,
/// visibly, as a cut connection is), with one error naming the registry, the reference, the
/// wait and the variable that sets it; nothing is named in the cache. A value that is not a
/// number of seconds is bad input.
#[test]
fn a_wedged_registry_times_out_with_a_clear_configurable_error() {
    let fake = FakeRegistry::start();
    let registry = format!("127.0.0.1:{}", fake.port);
    let repo = chain(&format!("{registry}/hang"), "wedged");
    let tmp = tempfile::tempdir().unwrap();
    let cache = tmp.path().join("c");
    let names = |cache: &Path| ok(lkpkg(&repo, cache, false).args(["cache", "ls", "--json"]));
    let timed = |mut cmd: Command| {
        cmd.env("LKPKG_REGISTRY_TIMEOUT", "1");
        let started = Instant::now();
        let (code, _, err) = run(&mut cmd);
        (code, err, started.elapsed())
    };
    for reference in [
        format!("{registry}/hang/img:t"),
        format!("{registry}/stall/blob:t"),
    ] {
        let mut pull = lkpkg(&repo, &cache, false);
        pull.args(["cache", "pull", &reference]);
        let (code, err, took) = timed(pull);
        assert_eq!(code, 3, "{reference}: {err}");
        // A request never answered, or an answer that stops: both say the wait.
        assert!(
            err.contains(&registry)
                && err.contains(reference.rsplit('/').next().unwrap())
                && (err.contains("did not answer within 1 s")
                    || err.contains("stalled: nothing came for 1 s"))
                && err.contains("LKPKG_REGISTRY_TIMEOUT"),
            "{reference}: {err}"
        );
        assert!(err.contains("trying again"), "{reference}: {err}");
        // A wait that ran out is tried once more (not five times): two seconds and a pause,
        // not the default two minutes.
        assert!(took < Duration::from_secs(20), "{reference}: took {took:?}");
        assert!(crate::support::listed_images(&names(&cache)).is_empty());
        ok(lkpkg(&repo, &cache, false).args(["cache", "verify"]));
    }

    // A push to it: built here (the lookup of the published tag times out, is said, and the
    // build goes on), then the upload's first request is never answered.
    let built = tmp.path().join("built");
    let mut build = lkpkg(&repo, &built, true);
    build.args(["pkg", "build", "--platforms", "linux/amd64", "base"]);
    let (code, err, took) = timed(build);
    assert_eq!(code, 0, "{err}");
    assert!(err.contains("LKPKG_REGISTRY_TIMEOUT"), "{err}");
    assert!(took < Duration::from_secs(120), "took {took:?}");
    let before = names(&built);
    let base = tag_of(&repo, "base");
    let mut push = lkpkg(&repo, &built, false);
    push.args(["cache", "push", &base]);
    let (code, err, took) = timed(push);
    assert_eq!(code, 3, "{err}");
    assert!(
        err.contains(&registry) && err.contains("LKPKG_REGISTRY_TIMEOUT"),
        "{err}"
    );
    assert!(took < Duration::from_secs(20), "took {took:?}");
    assert_eq!(names(&built), before);

    let (code, _, err) = run(lkpkg(&repo, &cache, false)
        .env("LKPKG_REGISTRY_TIMEOUT", "soon")
        .args(["cache", "pull", &format!("{registry}/hang/img:t")]));
    assert_eq!(code, 2, "{err}");
    assert!(
        err.contains("LKPKG_REGISTRY_TIMEOUT: `soon` is not a number of seconds"),
        "{err}"
    );
}

/// A registry that serves bad content: `bad/digest` a manifest with a wrong
/// `Docker-Content-Digest`, `endless/body` a manifest body that never ends, `long/blob` a blob
/// longer than its descriptor, `wrong/blob` one of the right length and the wrong bytes;
/// `hang/…` never answers, `stall/blob` goes silent in the middle of its blob.
struct FakeRegistry {
    port: u16,
}

impl FakeRegistry {
    fn start() -> FakeRegistry {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        std::thread::spawn(move || {
            for stream in listener.incoming().flatten() {
                std::thread::spawn(move || serve_fake(stream));
            }
        });
        FakeRegistry { port }
    }

    /// A registry behind a bearer-token handshake (as Docker Hub's): `/v2/` answers 401 with a
    /// `WWW-Authenticate: Bearer realm=…/token` challenge; `/token` gives a token for a pull
    /// scope; `tok/img:t` (an image with a config and no layer) is served only with it.
    fn start_with_tokens() -> FakeRegistry {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        std::thread::spawn(move || {
            for stream in listener.incoming().flatten() {
                std::thread::spawn(move || serve_tokens(stream, port));
            }
        });
        FakeRegistry { port }
    }
}

const TOKEN_CONFIG: &str =
    r#"{"architecture":"amd64","os":"linux","rootfs":{"type":"layers","diff_ids":[]}}"#;

fn serve_tokens(mut stream: std::net::TcpStream, port: u16) {
    let Some(head) = read_head(&mut stream) else {
        return;
    };
    let path = head.split(' ').nth(1).unwrap_or("").to_owned();
    let authorized = head
        .lines()
        .any(|l| l.eq_ignore_ascii_case("authorization: bearer fake-token"));
    let reply = |stream: &mut std::net::TcpStream, status: &str, headers: &str, body: &[u8]| {
        let _ = write!(
            stream,
            "HTTP/1.1 {status}\r\n{headers}Content-Length: {}\r\nConnection: close\r\n\r\n",
            body.len()
        );
        let _ = stream.write_all(body);
    };
    let challenge = format!(
        "WWW-Authenticate: Bearer realm=\"http://127.0.0.1:{port}/token\",service=\"fake\"\r\n"
    );
    if path.starts_with("/token") {
        // Tokens for the pull scope, to `pusher` only: by basic auth (GET, the docker way) or
        // an OAuth password grant (POST, what containerd tries first).
        let basic = format!(
            "authorization: basic {}",
            base64_encode(&format!("{USER}:{PASSWORD}"))
        );
        let mut granted = head.lines().any(|l| l.eq_ignore_ascii_case(&basic));
        let mut scope = path.clone();
        if head.starts_with("POST ") {
            let length: usize = head
                .lines()
                .find_map(|l| {
                    let (k, v) = l.split_once(':')?;
                    k.eq_ignore_ascii_case("content-length")
                        .then(|| v.trim().parse().ok())?
                })
                .unwrap_or(0);
            let mut body = vec![0u8; length];
            let _ = stream.read_exact(&mut body);
            let body = String::from_utf8_lossy(&body).into_owned();
            granted |= body.contains(&format!("username={USER}"))
                && body.contains(&format!("password={PASSWORD}"));
            scope.push_str(&body);
        }
        let for_pull = scope.contains("repository%3Atok%2Fimg%3Apull")
            || scope.contains("repository:tok/img:pull");
        if granted && for_pull {
            reply(
                &mut stream,
                "200 OK",
                "Content-Type: application/json\r\n",
                br#"{"token":"fake-token","access_token":"fake-token"}"#,
            );
        } else {
            reply(&mut stream, "401 Unauthorized", "", b"");
        }
        return;
    }
    if !authorized {
        reply(&mut stream, "401 Unauthorized", &challenge, b"");
        return;
    }
    let config_digest = format!("sha256:{}", sha256_hex(TOKEN_CONFIG.as_bytes()));
    if path == "/v2/" {
        reply(&mut stream, "200 OK", "", b"");
    } else if path.starts_with("/v2/tok/img/manifests/") {
        let body = format!(
            r#"{{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json","config":{{"mediaType":"application/vnd.oci.image.config.v1+json","digest":"{config_digest}","size":{}}},"layers":[]}}"#,
            TOKEN_CONFIG.len()
        );
        reply(
            &mut stream,
            "200 OK",
            "Content-Type: application/vnd.oci.image.manifest.v1+json\r\n",
            body.as_bytes(),
        );
    } else if path == format!("/v2/tok/img/blobs/{config_digest}") {
        reply(&mut stream, "200 OK", "", TOKEN_CONFIG.as_bytes());
    } else {
        reply(&mut stream, "404 Not Found", "", b"");
    }
}

/// A request's head; `None` for a closed connection, or a TLS hello (answered 400, as Go's
/// HTTP server answers one).
fn read_head(stream: &mut std::net::TcpStream) -> Option<String> {
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        if stream.read(&mut byte).unwrap_or(0) == 0 {
            return None;
        }
        if head.is_empty() && byte[0] == 0x16 {
            let _ = stream.write_all(b"HTTP/1.0 400 Bad Request\r\n\r\nmalformed HTTP request\n");
            return None;
        }
        head.push(byte[0]);
    }
    Some(String::from_utf8_lossy(&head).into_owned())
}

fn serve_fake(mut stream: std::net::TcpStream) {
    let Some(head) = read_head(&mut stream) else {
        return;
    };
    let path = head.split(' ').nth(1).unwrap_or("").to_owned();
    if path.contains("/bad/digest/manifests/") {
        let body = br#"{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json","config":{"mediaType":"application/vnd.oci.image.config.v1+json","digest":"sha256:0000000000000000000000000000000000000000000000000000000000000000","size":2},"layers":[]}"#;
        let _ = write!(
            stream,
            "HTTP/1.1 200 OK\r\nContent-Type: application/vnd.oci.image.manifest.v1+json\r\n\
             Docker-Content-Digest: sha256:1111111111111111111111111111111111111111111111111111111111111111\r\n\
             Content-Length: {}\r\nConnection: close\r\n\r\n",
            body.len()
        );
        let _ = stream.write_all(body);
    } else if path.contains("/hang/") {
        // Reads the request and never answers (a wedged registry, a black-holing proxy).
        std::thread::sleep(Duration::from_secs(120));
    } else if path.contains("/stall/blob/blobs/") {
        // Starts the answer, then goes silent mid-body.
        let _ = write!(
            stream,
            "HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: close\r\n\r\n{{"
        );
        let _ = stream.flush();
        std::thread::sleep(Duration::from_secs(120));
    } else if path.contains("/long/blob/manifests/")
        || path.contains("/wrong/blob/manifests/")
        || path.contains("/stall/blob/manifests/")
    {
        // A valid manifest whose config blob ("{}", 2 bytes) is served far longer.
        let body = format!(
            r#"{{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json","config":{{"mediaType":"application/vnd.oci.image.config.v1+json","digest":"sha256:{EMPTY_OBJECT}","size":2}},"layers":[]}}"#
        );
        let _ = write!(
            stream,
            "HTTP/1.1 200 OK\r\nContent-Type: application/vnd.oci.image.manifest.v1+json\r\n\
             Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
            body.len()
        );
    } else if path.contains("/long/blob/blobs/") {
        let mut body = b"{}".to_vec();
        body.extend(vec![b' '; 1 << 20]);
        let _ = write!(
            stream,
            "HTTP/1.1 200 OK\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
            body.len()
        );
        let _ = stream.write_all(&body);
    } else if path.contains("/wrong/blob/blobs/") {
        // The right length, the wrong bytes.
        let _ = write!(
            stream,
            "HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: close\r\n\r\n[]"
        );
    } else if path.contains("/endless/body/manifests/") {
        let _ = write!(
            stream,
            "HTTP/1.1 200 OK\r\nContent-Type: application/vnd.oci.image.manifest.v1+json\r\n\
             Connection: close\r\n\r\n"
        );
        let chunk = vec![b' '; 64 * 1024];
        while stream.write_all(&chunk).is_ok() {}
    } else {
        // `/v2/` and everything else: an open registry with nothing in it.
        let status = if path == "/v2/" {
            "200 OK"
        } else {
            "404 Not Found"
        };
        let _ = write!(
            stream,
            "HTTP/1.1 {status}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
        );
    }
}

/// An HTTP proxy in front of a registry that fails some blob uploads: the first `fail`
/// answer 500, the next `cut` lose their connection mid-request. Every connection carries
/// one request (`Connection: close` both ways), so that each request is seen.
struct FailingProxy {
    port: u16,
}

impl FailingProxy {
    fn start(upstream: u16, fail: usize, cut: usize) -> FailingProxy {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let budget = std::sync::Arc::new(std::sync::Mutex::new((fail, cut)));
        std::thread::spawn(move || {
            for client in listener.incoming().flatten() {
                let budget = budget.clone();
                std::thread::spawn(move || proxy_one(client, upstream, &budget));
            }
        });
        FailingProxy { port }
    }
}

fn proxy_one(
    mut client: std::net::TcpStream,
    upstream: u16,
    budget: &std::sync::Mutex<(usize, usize)>,
) {
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        if client.read(&mut byte).unwrap_or(0) == 0 {
            return;
        }
        head.push(byte[0]);
    }
    let text = String::from_utf8_lossy(&head).into_owned();
    let length: usize = text
        .lines()
        .find_map(|l| {
            let (k, v) = l.split_once(':')?;
            k.eq_ignore_ascii_case("content-length")
                .then(|| v.trim().parse().ok())?
        })
        .unwrap_or(0);
    if text.starts_with("PUT ") && text.contains("/blobs/uploads/") {
        let mut budget = budget.lock().unwrap();
        if budget.0 > 0 {
            budget.0 -= 1;
            let mut body = vec![0u8; length];
            let _ = client.read_exact(&mut body);
            let _ = client.write_all(
                b"HTTP/1.1 500 Internal Server Error\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
            );
            return;
        }
        if budget.1 > 0 {
            budget.1 -= 1;
            let mut some = vec![0u8; length.min(1024)];
            let _ = client.read_exact(&mut some);
            return;
        }
    }
    let mut body = vec![0u8; length];
    if client.read_exact(&mut body).is_err() {
        return;
    }
    let mut forwarded: String = text
        .split("\r\n")
        .filter(|l| !l.to_ascii_lowercase().starts_with("connection:"))
        .take_while(|l| !l.is_empty())
        .map(|l| format!("{l}\r\n"))
        .collect();
    forwarded.push_str("Connection: close\r\n\r\n");
    let Ok(mut server) = std::net::TcpStream::connect(("127.0.0.1", upstream)) else {
        return;
    };
    if server.write_all(forwarded.as_bytes()).is_err() || server.write_all(&body).is_err() {
        return;
    }
    let mut answer = Vec::new();
    let _ = server.read_to_end(&mut answer);
    let _ = client.write_all(&answer);
}

/// The digest of what the (plain) registry serves for `reference`, as skopeo reads it.
fn skopeo_digest(registry: &TestRegistry, reference: &str) -> String {
    let raw = Command::new("skopeo")
        .args(["inspect", "--raw", "--tls-verify=false"])
        .arg(format!("docker://{reference}"))
        .output()
        .unwrap();
    assert!(
        raw.status.success(),
        "{}",
        String::from_utf8_lossy(&raw.stderr)
    );
    let _ = registry;
    format!("sha256:{}", sha256_hex(&raw.stdout))
}

fn sha256_hex(bytes: &[u8]) -> String {
    use sha2::Digest as _;
    hex::encode(sha2::Sha256::digest(bytes))
}

fn base64_encode(text: &str) -> String {
    use base64::Engine as _;
    base64::engine::general_purpose::STANDARD.encode(text)
}

#[test]
fn nobuild_manifest_release_remote_tag_and_mirror_as_linuxkit() {
    let registry = TestRegistry::plain();
    let host = registry.host();
    let repo = chain(&host, "misc");
    let tmp = tempfile::tempdir().unwrap();
    let a = tmp.path().join("a");
    ok(lkpkg(&repo, &a, true).args(["pkg", "build", "base"]));
    let base = tag_of(&repo, "base");
    let (name, hash) = base.rsplit_once(':').unwrap();

    // --nobuild pushes what the cache holds; --manifest=false leaves out the per-arch tags.
    let (code, _, err) = run(lkpkg(&repo, &a, false).args([
        "pkg",
        "build",
        "--push",
        "--nobuild",
        "--manifest=false",
        "base",
    ]));
    assert_eq!(code, 0, "{err}");
    let tags = registry.tags("e2e-misc/base");
    assert!(tags.contains(&hash.to_owned()), "{tags:?}");
    assert!(!tags.iter().any(|t| t.ends_with("-amd64")), "{tags:?}");
    // --nobuild without --push, and with --force, are refused.
    let (code, _, _) = run(lkpkg(&repo, &a, false).args(["pkg", "build", "--nobuild", "base"]));
    assert_eq!(code, 2);
    let (code, _, _) = run(lkpkg(&repo, &a, false).args([
        "pkg",
        "build",
        "--push",
        "--nobuild",
        "--force",
        "base",
    ]));
    assert_eq!(code, 2);

    // `pkg manifest` makes the index of the registry's `<tag>-<arch>` images.
    for arch in ["amd64", "arm64"] {
        ok(lkpkg(&repo, &a, false).args(["cache", "push", &format!("{base}-{arch}")]));
    }
    let (code, _, err) = run(lkpkg(&repo, &a, false).args(["pkg", "manifest", "base"]));
    assert_eq!(code, 0, "{err}");
    assert_eq!(platforms_of(&registry.raw(&base)), ["amd64", "arm64"]);

    // --release pushes the release tag; `pkg remote-tag` tags in the repository.
    ok(lkpkg(&repo, &a, false).args(["pkg", "push", "--nobuild", "--release", "v1.0", "base"]));
    assert_eq!(
        skopeo_digest(&registry, &format!("{name}:v1.0")),
        skopeo_digest(&registry, &base)
    );
    // Without --release, a git tag on HEAD is the release (linuxkit's default).
    repo.git(&["tag", "v2.0"]);
    ok(lkpkg(&repo, &a, false).args(["pkg", "push", "--nobuild", "base"]));
    assert_eq!(
        skopeo_digest(&registry, &format!("{name}:v2.0")),
        skopeo_digest(&registry, &base)
    );
    ok(lkpkg(&repo, &a, false).args(["pkg", "remote-tag", &base, &format!("{name}:stable")]));
    assert_eq!(
        skopeo_digest(&registry, &format!("{name}:stable")),
        skopeo_digest(&registry, &base)
    );

    // A mirror for Docker Hub serves `docker.io/...` pulls (the test registry holds the
    // repository `e2e-misc/base`).
    let hub_name = format!("docker.io/e2e-misc/base:{hash}");
    let b = tmp.path().join("b");
    let (code, _, err) = run(lkpkg(&repo, &b, false).args([
        "--mirror",
        &format!("docker.io=http://{host}"),
        "cache",
        "pull",
        &hub_name,
    ]));
    assert_eq!(code, 0, "{err}");
    assert_eq!(
        local_digest(&repo, &b, &hub_name),
        local_digest(&repo, &a, &base)
    );
}

/// The builder's own pull of a base image (`FROM` a private registry) gets the credentials
/// lkpkg has, through the session's Auth service, as linuxkit hands `--registry-creds` to its
/// builder; without them the registry refuses the pull.
#[test]
fn the_builder_pulls_a_private_base_image_with_lkpkgs_credentials() {
    let fake = FakeRegistry::start_with_tokens();
    let repo = Repo::new();
    repo.write(
        "app/build.yml",
        "image: app\norg: lkpkgtest-private-base\narches: [amd64]\n",
    )
    .write(
        "app/Dockerfile",
        &format!("FROM 127.0.0.1:{}/tok/img:t\nCOPY app.txt /\n", fake.port),
    )
    .write("app/app.txt", &format!("{}\n", std::process::id()));
    repo.commit_all("app");
    let tmp = tempfile::tempdir().unwrap();
    let cache = tmp.path().join("c");
    let (code, out, err) = run(lkpkg(&repo, &cache, true).args(["pkg", "build", "app"]));
    assert_eq!(code, 1, "{err}");
    let lower = err.to_ascii_lowercase();
    assert!(
        lower.contains("401") || lower.contains("unauthorized"),
        "{err}"
    );
    let mut outputs = out + &err;
    let (code, out, err) = run(lkpkg(&repo, &cache, true).args([
        "-v",
        "3",
        "pkg",
        "build",
        "--registry-creds",
        &format!("127.0.0.1:{}={USER}:{PASSWORD}", fake.port),
        "app",
    ]));
    assert_eq!(code, 0, "{err}");
    outputs.push_str(&(out + &err));
    assert!(
        !outputs.contains(PASSWORD),
        "a secret was printed:\n{outputs}"
    );
}

/// `--ignore-cached`: a base image that is not a package of the build comes from its registry
/// even when the cache holds an image of that name (here: another one, imported under it).
#[test]
fn ignore_cached_takes_external_bases_from_their_registry() {
    let registry = TestRegistry::plain();
    let host = registry.host();
    let base = format!("{host}/ext/base:1");
    let repo = Repo::new();
    for (dir, which) in [("published", "registry"), ("local", "cache")] {
        repo.write(
            &format!("{dir}/build.yml"),
            &format!("image: {dir}\norg: {host}/ext\narches: [amd64]\n"),
        )
        .write(&format!("{dir}/Dockerfile"), "FROM scratch\nCOPY which /\n")
        .write(&format!("{dir}/which"), &format!("{which}\n"));
    }
    repo.write(
        "app/build.yml",
        "image: app\norg: lkpkgtest-ignore-cached\narches: [amd64]\n",
    )
    .write("app/Dockerfile", &format!("FROM {base}\nCOPY app.txt /\n"))
    .write("app/app.txt", "app\n");
    repo.commit_all("packages");
    let tmp = tempfile::tempdir().unwrap();
    let cache = tmp.path().join("c");
    // The registry has `published` under the base's name; the cache, `local`.
    ok(lkpkg(&repo, &cache, true).args(["pkg", "build", "published", "local"]));
    let published = tag_of(&repo, "published");
    ok(lkpkg(&repo, &cache, false).args([
        "cache",
        "push",
        &format!("{published}-amd64"),
        "--remote-name",
        &base,
    ]));
    let archive = tmp.path().join("local.tar");
    ok(lkpkg(&repo, &cache, false).args([
        "cache",
        "export",
        &tag_of(&repo, "local"),
        "--platform",
        "linux/amd64",
        "--name",
        &base,
        "-o",
        archive.to_str().unwrap(),
    ]));
    ok(lkpkg(&repo, &cache, false).args(["cache", "import", archive.to_str().unwrap()]));

    ok(lkpkg(&repo, &cache, true).args(["pkg", "build", "app"]));
    assert_eq!(
        crate::support::file_in_image(&repo, &cache, "app", "/which"),
        "cache\n"
    );
    let (code, _, err) =
        run(lkpkg(&repo, &cache, true).args(["pkg", "build", "--ignore-cached", "app"]));
    assert_eq!(code, 0, "{err}");
    assert!(
        err.contains("--ignore-cached"),
        "the key says why it rebuilt: {err}"
    );
    assert_eq!(
        crate::support::file_in_image(&repo, &cache, "app", "/which"),
        "registry\n"
    );
}
