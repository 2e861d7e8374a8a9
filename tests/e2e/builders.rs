//! Builders: which engine builds which platform (`--builders`, a `linuxkit-<os>-<arch>`
//! context, the default engine under qemu), reached over a unix socket, TCP and `ssh://`;
//! `pkg builder ls|prune`; the API version on the wire.
//!
//! These tests need `scripts/dev-env.sh`: the second dockerd (`LKPKG_TEST_DOCKER2_HOST`,
//! `LKPKG_TEST_DOCKER2_TCP`), the arm64 busybox (`LKPKG_TEST_BUSYBOX_ARM64`) with qemu binfmt,
//! and the loopback sshd (`LKPKG_TEST_SSH_CONFIG`, `LKPKG_TEST_SSH_HOST`). The variables come
//! from the environment or from `/var/lib/lkpkg-dev/env`; a missing one fails the test. The
//! docker CLI configuration is a temporary `DOCKER_CONFIG` in every test, so contexts on the
//! machine do not interfere.

use std::collections::{BTreeSet, HashMap};
use std::io::{Read, Write};
use std::path::Path;
use std::process::Command;
use std::sync::{Arc, Mutex};

use crate::support::{Repo, dev_env, ok, run};

/// A unique suffix for image names.
fn unique(prefix: &str) -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos();
    format!("{prefix}-{}-{}", std::process::id(), nanos % 1_000_000_000)
}

/// `docker` against the default engine (`docker_host` None) or another one.
fn docker_at(docker_host: Option<&str>, config: &Path, args: &[&str]) -> (i32, String, String) {
    let mut cmd = Command::new("docker");
    cmd.env_remove("DOCKER_CONTEXT")
        .env("DOCKER_CONFIG", config);
    match docker_host {
        Some(host) => cmd.env("DOCKER_HOST", host),
        None => cmd.env_remove("DOCKER_HOST"),
    };
    run(cmd.args(args))
}

/// The `repo:tag` names of an engine that start with `prefix`.
fn engine_names(docker_host: Option<&str>, config: &Path, prefix: &str) -> BTreeSet<String> {
    let (code, out, err) = docker_at(
        docker_host,
        config,
        &["image", "ls", "--format", "{{.Repository}}:{{.Tag}}"],
    );
    assert_eq!(code, 0, "docker image ls: {err}");
    out.lines()
        .filter(|l| l.starts_with(prefix))
        .map(str::to_owned)
        .collect()
}

/// Removes, when dropped, every image named `lkpkgtest/<image>…` from both engines.
struct Cleanup {
    image: String,
    config: tempfile::TempDir,
}

impl Drop for Cleanup {
    fn drop(&mut self) {
        let docker2 = dev_env("LKPKG_TEST_DOCKER2_HOST");
        let prefix = format!("lkpkgtest/{}", self.image);
        for host in [None, Some(docker2.as_str())] {
            for name in engine_names(host, self.config.path(), &prefix) {
                docker_at(host, self.config.path(), &["rmi", "-f", &name]);
            }
        }
    }
}

impl Cleanup {
    fn new(image: &str) -> Cleanup {
        Cleanup {
            image: image.to_owned(),
            config: tempfile::tempdir().unwrap(),
        }
    }

    fn config(&self) -> &Path {
        self.config.path()
    }

    /// `docker context create NAME --docker host=HOST` in the test's `DOCKER_CONFIG`.
    fn context(&self, name: &str, host: &str) {
        let (code, _, err) = docker_at(
            None,
            self.config(),
            &[
                "context",
                "create",
                name,
                "--docker",
                &format!("host={host}"),
            ],
        );
        assert_eq!(code, 0, "docker context create {name}: {err}");
    }
}

/// A one-package repository for `linux/amd64,linux/arm64`: each platform's static busybox
/// copied in (chosen by `TARGETARCH`, as BuildKit provides it), then `RUN uname -m > /arch`.
fn arch_repo(image: &str) -> Repo {
    let repo = Repo::new();
    std::fs::create_dir_all(repo.join("arch/bin")).unwrap();
    std::fs::copy("/bin/busybox", repo.join("arch/bin/busybox-amd64"))
        .expect("busybox-static (scripts/dev-env.sh installs it)");
    std::fs::copy(
        dev_env("LKPKG_TEST_BUSYBOX_ARM64"),
        repo.join("arch/bin/busybox-arm64"),
    )
    .expect("the arm64 busybox of scripts/dev-env.sh");
    repo.write(
        "arch/build.yml",
        &format!("image: {image}\norg: lkpkgtest\narches: [amd64, arm64]\n"),
    );
    // The amd64 busybox picks the platform's own (it runs natively on this machine either way).
    repo.write("arch/bin/test-id", image).write(
        "arch/Dockerfile",
        "FROM scratch\nCOPY bin/ /bin/\nARG TARGETARCH\n\
         RUN [\"/bin/busybox-amd64\", \"sh\", \"-c\", \"/bin/busybox-amd64 cp /bin/busybox-$TARGETARCH /bin/busybox\"]\n\
         RUN [\"/bin/busybox\", \"--install\", \"-s\", \"/bin\"]\nRUN uname -m > /arch\n",
    );
    repo.commit_all("init");
    repo
}

/// `lkpkg` in `repo` with the test's docker configuration and no DOCKER_HOST.
fn lkpkg_in(repo: &Repo, cleanup: &Cleanup) -> Command {
    let mut cmd = repo.lkpkg();
    cmd.env("DOCKER_CONFIG", cleanup.config())
        .env_remove("DOCKER_HOST")
        .env_remove("DOCKER_CONTEXT");
    cmd
}

/// The builder endpoint of each unit's build (`arch/arm64` → `unix://…`), from the JSON
/// events of a build (`started` names the builder).
fn builders_used(events: &str) -> HashMap<String, String> {
    events
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter(|e| e["type"] == "started")
        .map(|e| {
            let arch = e["unit"]
                .as_str()
                .unwrap_or_default()
                .rsplit('/')
                .next()
                .unwrap_or_default()
                .to_owned();
            (arch, e["builder"].as_str().unwrap_or_default().to_owned())
        })
        .collect()
}

/// Builds `arch` for both platforms into `cache` with extra arguments; returns the tag and
/// the builder of each architecture.
fn build_both(
    repo: &Repo,
    cleanup: &Cleanup,
    cache: &Path,
    extra: &[&str],
) -> (String, HashMap<String, String>) {
    let (code, out, err) = run(lkpkg_in(repo, cleanup)
        .arg("--cache")
        .arg(cache)
        .args(["--message-format", "json", "pkg", "build"])
        .args(["--platforms", "linux/amd64,linux/arm64"])
        .args(extra)
        .arg("arch"));
    assert_eq!(code, 0, "build failed\nstdout:\n{out}\nstderr:\n{err}");
    let tag = ok(repo.lkpkg().args(["pkg", "show-tag", "arch"]))
        .trim()
        .to_owned();
    (tag, builders_used(&out))
}

/// The content of `/arch` in the cached image of `name` for `platform`.
fn arch_file(repo: &Repo, cache: &Path, name: &str, platform: &str) -> String {
    let fs_tar = cache.with_extension(format!("{}.tar", platform.replace('/', "-")));
    ok(repo
        .lkpkg()
        .arg("--cache")
        .arg(cache)
        .args([
            "cache",
            "export",
            name,
            "--format",
            "filesystem",
            "--platform",
            platform,
            "-o",
        ])
        .arg(&fs_tar));
    let out = ok(Command::new("tar").arg("-xOf").arg(&fs_tar).arg("arch"));
    let _ = std::fs::remove_file(&fs_tar);
    out.trim().to_owned()
}

/// The architectures of the multi-arch index `name` in the cache's OCI layout.
fn index_arches(cache: &Path, name: &str) -> BTreeSet<String> {
    let full = format!("docker.io/{name}");
    let read_json = |path: &Path| -> serde_json::Value {
        serde_json::from_slice(&std::fs::read(path).unwrap()).unwrap()
    };
    let index = read_json(&cache.join("index.json"));
    let entry = index["manifests"]
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["annotations"]["org.opencontainers.image.ref.name"] == full.as_str())
        .unwrap_or_else(|| panic!("{full} not in the cache's index.json"));
    let digest = entry["digest"].as_str().unwrap();
    let blob = read_json(&cache.join("blobs/sha256").join(&digest["sha256:".len()..]));
    blob["manifests"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|m| m["platform"]["architecture"].as_str().map(str::to_owned))
        .collect()
}

#[test]
fn multi_arch_build_gives_an_index_with_arm64_under_qemu() {
    let image = unique("multiarch");
    let cleanup = Cleanup::new(&image);
    let repo = arch_repo(&image);
    let cache = tempfile::tempdir().unwrap();
    let (tag, builders) = build_both(&repo, &cleanup, cache.path(), &[]);
    assert_eq!(
        index_arches(cache.path(), &tag),
        BTreeSet::from(["amd64".to_owned(), "arm64".to_owned()])
    );
    assert_eq!(
        arch_file(&repo, cache.path(), &tag, "linux/arm64"),
        "aarch64"
    );
    assert_eq!(
        arch_file(&repo, cache.path(), &tag, "linux/amd64"),
        "x86_64"
    );
    // Both platforms built on the default engine, and nothing landed in its image store.
    let default = "unix:///var/run/docker.sock";
    assert_eq!(builders.get("arm64").map(String::as_str), Some(default));
    assert_eq!(builders.get("amd64").map(String::as_str), Some(default));
    let names = engine_names(None, cleanup.config(), &format!("lkpkgtest/{image}"));
    assert!(names.is_empty(), "{names:?}");
}

/// Builds the repository with `arm64` on the second engine (however `how` names it, at
/// `endpoint`) and checks that the arm64 unit ran there and the amd64 unit on the default
/// engine.
fn arm64_on_second_engine(endpoint: &str, how: impl FnOnce(&Cleanup) -> Vec<String>) {
    let image = unique("second");
    let cleanup = Cleanup::new(&image);
    let extra = how(&cleanup);
    let repo = arch_repo(&image);
    let cache = tempfile::tempdir().unwrap();
    let extra: Vec<&str> = extra.iter().map(String::as_str).collect();
    let (tag, builders) = build_both(&repo, &cleanup, cache.path(), &extra);
    assert_eq!(
        builders.get("arm64").map(String::as_str),
        Some(endpoint),
        "arm64 not built on the second engine: {builders:?}"
    );
    assert_eq!(
        builders.get("amd64").map(String::as_str),
        Some("unix:///var/run/docker.sock"),
        "amd64 not built on the default engine: {builders:?}"
    );
    assert_eq!(
        arch_file(&repo, cache.path(), &tag, "linux/arm64"),
        "aarch64"
    );
    assert_eq!(
        index_arches(cache.path(), &tag),
        BTreeSet::from(["amd64".to_owned(), "arm64".to_owned()])
    );
}

#[test]
fn builders_flag_sends_arm64_to_a_context_over_tcp() {
    let tcp = dev_env("LKPKG_TEST_DOCKER2_TCP");
    arm64_on_second_engine(&tcp, |cleanup| {
        cleanup.context("second-tcp", &tcp);
        vec!["--builders".into(), "linux/arm64=second-tcp".into()]
    });
}

#[test]
fn linuxkit_platform_context_is_the_arm64_builder() {
    let tcp = dev_env("LKPKG_TEST_DOCKER2_TCP");
    arm64_on_second_engine(&tcp, |cleanup| {
        cleanup.context("linuxkit-linux-arm64", &tcp);
        Vec::new()
    });
}

#[test]
fn linuxkit_builders_env_over_ssh() {
    // `ssh` reads ~/.ssh/config of the passwd entry, not $HOME: a wrapper first in PATH gives
    // it the test sshd's configuration (host alias, port, key) with `-F`. The sshd runs on this
    // machine, where `docker` reaches the default engine; the wrapper checks that lkpkg asks
    // for exactly `-- docker system dial-stdio` and points that docker at the second engine,
    // as if the sshd ran on the second engine's machine. It logs each call.
    let wrapper = tempfile::tempdir().unwrap();
    let ssh = wrapper.path().join("ssh");
    let calls = wrapper.path().join("calls.log");
    std::fs::write(
        &ssh,
        format!(
            "#!/bin/bash\nargs=(\"$@\")\nn=${{#args[@]}}\n\
             if [ \"${{args[*]: -4}}\" != \"-- docker system dial-stdio\" ]; then\n\
             echo \"unexpected ssh command: $*\" >&2; exit 97; fi\n\
             echo \"$*\" >> '{calls}'\n\
             exec /usr/bin/ssh -F '{config}' \"${{args[@]:0:n-4}}\" -- \
             env DOCKER_HOST={docker2} docker system dial-stdio\n",
            calls = calls.display(),
            config = dev_env("LKPKG_TEST_SSH_CONFIG"),
            docker2 = dev_env("LKPKG_TEST_DOCKER2_HOST"),
        ),
    )
    .unwrap();
    let (code, _, err) = run(Command::new("chmod").arg("+x").arg(&ssh));
    assert_eq!(code, 0, "{err}");
    let path = format!(
        "{}:{}",
        wrapper.path().display(),
        std::env::var("PATH").unwrap_or_default()
    );

    let image = unique("ssh");
    let cleanup = Cleanup::new(&image);
    let host = format!("ssh://{}", dev_env("LKPKG_TEST_SSH_HOST"));
    cleanup.context("second-ssh", &host);
    let repo = arch_repo(&image);
    let cache = tempfile::tempdir().unwrap();
    // LINUXKIT_BUILDERS (support::lkpkg clears LINUXKIT_*; set it after).
    let (code, out, err) = run(lkpkg_in(&repo, &cleanup)
        .env("PATH", &path)
        .env("LINUXKIT_BUILDERS", "linux/arm64=second-ssh")
        .arg("--cache")
        .arg(cache.path())
        .args(["--message-format", "json", "pkg", "build"])
        .args(["--platforms", "linux/amd64,linux/arm64", "arch"]));
    assert_eq!(code, 0, "build failed\nstdout:\n{out}\nstderr:\n{err}");
    let tag = ok(repo.lkpkg().args(["pkg", "show-tag", "arch"]))
        .trim()
        .to_owned();
    let builders = builders_used(&out);
    assert_eq!(
        builders.get("arm64"),
        Some(&host),
        "arm64 not built over ssh: {builders:?}"
    );
    assert_eq!(
        arch_file(&repo, cache.path(), &tag, "linux/arm64"),
        "aarch64"
    );
    let logged = std::fs::read_to_string(&calls).unwrap_or_default();
    assert!(
        logged.contains("-o BatchMode=yes lkpkg-test-ssh -- docker system dial-stdio"),
        "{logged}"
    );

    // `builder ls` says the same, reached through ssh.
    let out = ok(lkpkg_in(&repo, &cleanup)
        .env("PATH", &path)
        .env("LINUXKIT_BUILDERS", "linux/arm64=second-ssh")
        .args(["--message-format", "json", "pkg", "builder", "ls"])
        .args(["--platforms", "linux/arm64"]));
    let row = crate::support::json_output("builder", out.trim());
    assert_eq!(row["endpoint"], host.as_str(), "{row}");
    assert_eq!(row["answers"], true, "{row}");
    assert_eq!(
        row["reason"],
        "`LINUXKIT_BUILDERS` names context `second-ssh` for linux/arm64"
    );
}

#[test]
fn builder_ls_shows_choice_reason_endpoint_and_engine() {
    let cleanup = Cleanup::new(&unique("ls"));
    let tcp = dev_env("LKPKG_TEST_DOCKER2_TCP");
    cleanup.context("linuxkit-linux-arm64", &tcp);
    let work = tempfile::tempdir().unwrap();
    let mut cmd = crate::support::lkpkg(work.path());
    cmd.env("DOCKER_CONFIG", cleanup.config())
        .env_remove("DOCKER_HOST")
        .env_remove("DOCKER_CONTEXT")
        .args(["--message-format", "json", "pkg", "builder", "ls"])
        .args(["--platforms", "linux/amd64,linux/arm64"]);
    let out = ok(&mut cmd);
    let rows = crate::support::json_lines("builder", &out);
    assert_eq!(rows.len(), 2, "{out}");
    let (amd, arm) = (&rows[0], &rows[1]);
    assert_eq!(amd["platform"], "linux/amd64");
    assert_eq!(amd["context"], "default");
    assert_eq!(amd["endpoint"], "unix:///var/run/docker.sock");
    assert_eq!(
        amd["reason"],
        "no builder named for linux/amd64: the default context (the local socket)"
    );
    assert_eq!(amd["answers"], true, "{amd}");
    assert_eq!(amd["native"], true, "{amd}");
    assert_eq!(arm["platform"], "linux/arm64");
    assert_eq!(arm["context"], "linuxkit-linux-arm64");
    assert_eq!(arm["endpoint"], tcp.as_str());
    assert_eq!(arm["reason"], "context `linuxkit-linux-arm64` exists");
    assert_eq!(arm["answers"], true, "{arm}");
    // The second engine runs on this amd64 machine: arm64 is emulated there too.
    assert_eq!(arm["arch"], "amd64");
    assert_eq!(arm["native"], false);
    let (_, api, _) = docker_at(
        Some(&tcp),
        cleanup.config(),
        &["version", "--format", "{{.Server.APIVersion}}"],
    );
    assert_eq!(arm["api_version"], api.trim(), "{arm}");

    // Human output: one block per platform.
    let mut cmd = crate::support::lkpkg(work.path());
    cmd.env("DOCKER_CONFIG", cleanup.config())
        .env_remove("DOCKER_HOST")
        .env_remove("DOCKER_CONTEXT")
        .args(["pkg", "builder", "ls", "--platforms", "linux/arm64"])
        .args(["--builders", "linux/arm64=tcp://127.0.0.1:1"]);
    let out = ok(&mut cmd);
    assert!(out.starts_with("linux/arm64\n"), "{out}");
    assert!(out.contains("endpoint: tcp://127.0.0.1:1"), "{out}");
    assert!(out.contains("does not answer"), "{out}");
    assert!(
        out.contains("chosen:   `--builders` names endpoint `tcp://127.0.0.1:1` for linux/arm64"),
        "{out}"
    );
}

#[test]
fn unknown_builder_exits_2_naming_it() {
    let image = unique("unknown");
    let cleanup = Cleanup::new(&image);
    let repo = arch_repo(&image);
    let cache = tempfile::tempdir().unwrap();
    let (code, _, err) = run(lkpkg_in(&repo, &cleanup)
        .arg("--cache")
        .arg(cache.path())
        .args([
            "pkg",
            "build",
            "--builders",
            "linux/arm64=no-such-builder",
            "arch",
        ]));
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("`no-such-builder`"), "{err}");
    let (code, _, err) = run(lkpkg_in(&repo, &cleanup).args([
        "pkg",
        "builder",
        "ls",
        "--builders",
        "linux/arm64=no-such-builder",
    ]));
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("`no-such-builder`"), "{err}");
    let (code, _, err) =
        run(lkpkg_in(&repo, &cleanup).args(["pkg", "builder", "ls", "--builders", "arm64"]));
    assert_eq!(code, 2, "{err}");
}

#[test]
fn builder_prune_removes_only_what_the_cache_names() {
    let image = unique("prune");
    let cleanup = Cleanup::new(&image);
    let repo = arch_repo(&image);
    let cache = tempfile::tempdir().unwrap();
    let (code, out, err) = run(lkpkg_in(&repo, &cleanup)
        .arg("--cache")
        .arg(cache.path())
        .args([
            "pkg",
            "build",
            "--platforms",
            "linux/amd64",
            "--docker",
            "arch",
        ]));
    assert_eq!(code, 0, "stdout:\n{out}\nstderr:\n{err}");
    let tag = ok(repo.lkpkg().args(["pkg", "show-tag", "arch"]))
        .trim()
        .to_owned();
    let prefix = format!("lkpkgtest/{image}");
    // A name the cache does not know, on the same image: it must stay.
    let foreign = format!("{prefix}-mine:keep");
    let (code, _, err) = docker_at(None, cleanup.config(), &["tag", &tag, &foreign]);
    assert_eq!(code, 0, "{err}");
    let before = engine_names(None, cleanup.config(), &prefix);
    assert!(before.contains(&tag), "{before:?}");

    let prune = |dry_run: bool| {
        let mut cmd = lkpkg_in(&repo, &cleanup);
        cmd.arg("--cache").arg(cache.path()).args([
            "pkg",
            "builder",
            "prune",
            "--platforms",
            "linux/amd64",
        ]);
        if dry_run {
            cmd.arg("--dry-run");
        }
        ok(&mut cmd)
    };
    let listed = prune(true);
    assert!(listed.contains(&tag), "{listed}");
    assert!(!listed.contains("-mine:keep"), "{listed}");
    assert_eq!(engine_names(None, cleanup.config(), &prefix), before);

    let removed = prune(false);
    assert!(removed.contains(&tag), "{removed}");
    let after = engine_names(None, cleanup.config(), &prefix);
    assert_eq!(after, BTreeSet::from([foreign.clone()]), "{removed}");
    // The foreign name still runs: the image it shares was not removed.
    let (code, out, err) = docker_at(
        None,
        cleanup.config(),
        &["run", "--rm", "--network", "none", &foreign, "cat", "/arch"],
    );
    assert_eq!((code, out.trim()), (0, "x86_64"), "{err}");
}

/// A loopback TCP proxy in front of `upstream` that records what clients send.
fn recording_proxy(upstream: &str) -> (u16, Arc<Mutex<Vec<u8>>>) {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let seen = Arc::new(Mutex::new(Vec::new()));
    let upstream = upstream.to_owned();
    let recorded = seen.clone();
    std::thread::spawn(move || {
        for client in listener.incoming() {
            let Ok(mut client) = client else { break };
            let Ok(mut server) = std::net::TcpStream::connect(&upstream) else {
                break;
            };
            let mut client_back = client.try_clone().unwrap();
            let mut server_back = server.try_clone().unwrap();
            let recorded = recorded.clone();
            std::thread::spawn(move || {
                let mut buf = [0u8; 16384];
                while let Ok(n) = client.read(&mut buf) {
                    if n == 0 {
                        break;
                    }
                    recorded.lock().unwrap().extend_from_slice(&buf[..n]);
                    if server.write_all(&buf[..n]).is_err() {
                        break;
                    }
                }
                let _ = server.shutdown(std::net::Shutdown::Write);
            });
            std::thread::spawn(move || {
                let _ = std::io::copy(&mut server_back, &mut client_back);
                let _ = client_back.shutdown(std::net::Shutdown::Write);
            });
        }
    });
    (port, seen)
}

#[test]
fn requests_carry_the_negotiated_api_version() {
    let cleanup = Cleanup::new(&unique("api"));
    let tcp = dev_env("LKPKG_TEST_DOCKER2_TCP");
    let upstream = tcp.trim_start_matches("tcp://");
    let (port, seen) = recording_proxy(upstream);
    let (_, api, err) = docker_at(
        Some(&tcp),
        cleanup.config(),
        &["version", "--format", "{{.Server.APIVersion}}"],
    );
    let api = api.trim().to_owned();
    assert!(api.starts_with("1."), "{err}");
    let work = tempfile::tempdir().unwrap();
    let mut cmd = crate::support::lkpkg(work.path());
    cmd.env("DOCKER_CONFIG", cleanup.config())
        .env_remove("DOCKER_HOST")
        .args(["--message-format", "json", "pkg", "builder", "ls"])
        .args(["--platforms", "linux/arm64", "--builders"])
        .arg(format!("linux/arm64=tcp://127.0.0.1:{port}"));
    let out = ok(&mut cmd);
    assert!(out.contains("\"answers\":true"), "{out}");
    let recorded = String::from_utf8_lossy(&seen.lock().unwrap()).into_owned();
    let request_lines: Vec<&str> = recorded
        .lines()
        .filter(|l| l.ends_with(" HTTP/1.1") || l.ends_with(" HTTP/1.1\r"))
        .map(str::trim_end)
        .collect();
    // The negotiation itself is unversioned; everything after carries the negotiated version.
    assert_eq!(
        request_lines.first(),
        Some(&"GET /version HTTP/1.1"),
        "{request_lines:?}"
    );
    assert!(request_lines.len() >= 2, "{request_lines:?}");
    for line in &request_lines[1..] {
        let path = line.split(' ').nth(1).unwrap_or_default();
        assert!(
            path.starts_with(&format!("/v{api}/")),
            "request without the /v{api} prefix: {line}"
        );
    }
}

/// A TLS-terminating proxy (Python's `ssl`, client certificates required) in front of
/// `upstream`, on a loopback port; killed when dropped.
struct TlsProxy {
    child: std::process::Child,
    port: u16,
}

impl Drop for TlsProxy {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

const TLS_PROXY: &str = r#"
import socket, ssl, sys, threading
ca, cert, key, upstream = sys.argv[1:5]
host, port = upstream.rsplit(":", 1)
ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
ctx.load_cert_chain(cert, key)
ctx.verify_mode = ssl.CERT_REQUIRED
ctx.load_verify_locations(ca)
ls = socket.socket()
ls.bind(("127.0.0.1", 0))
ls.listen(16)
print(ls.getsockname()[1], flush=True)
def pipe(a, b):
    try:
        while True:
            d = a.recv(65536)
            if not d:
                break
            b.sendall(d)
    except OSError:
        pass
    try:
        b.shutdown(socket.SHUT_WR)
    except OSError:
        pass
def serve(c):
    try:
        t = ctx.wrap_socket(c, server_side=True)
    except (ssl.SSLError, OSError):
        c.close()
        return
    u = socket.create_connection((host, int(port)))
    threading.Thread(target=pipe, args=(u, t), daemon=True).start()
    pipe(t, u)
while True:
    c, _ = ls.accept()
    threading.Thread(target=serve, args=(c,), daemon=True).start()
"#;

/// A CA, a server certificate for 127.0.0.1 and a client certificate, made with `openssl`.
fn make_certificates(dir: &Path) {
    let script = "set -e
        q() { \"$@\" >/dev/null 2>&1; }
        q openssl req -x509 -newkey rsa:2048 -nodes -keyout ca-key.pem -out ca.pem -days 1 \
            -subj /CN=lkpkg-test-ca
        q openssl req -newkey rsa:2048 -nodes -keyout server-key.pem -out server.csr \
            -subj /CN=127.0.0.1
        printf 'subjectAltName=IP:127.0.0.1\\nextendedKeyUsage=serverAuth\\n' > server.ext
        q openssl x509 -req -in server.csr -CA ca.pem -CAkey ca-key.pem -CAcreateserial \
            -out server-cert.pem -days 1 -extfile server.ext
        q openssl req -newkey rsa:2048 -nodes -keyout key.pem -out client.csr -subj /CN=client
        printf 'extendedKeyUsage=clientAuth\\n' > client.ext
        q openssl x509 -req -in client.csr -CA ca.pem -CAkey ca-key.pem -CAcreateserial \
            -out cert.pem -days 1 -extfile client.ext";
    ok(Command::new("bash").arg("-c").arg(script).current_dir(dir));
}

fn tls_proxy(dir: &Path, upstream: &str) -> TlsProxy {
    let mut child = Command::new("python3")
        .arg("-c")
        .arg(TLS_PROXY)
        .args(["ca.pem", "server-cert.pem", "server-key.pem", upstream])
        .current_dir(dir)
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("python3");
    let mut line = String::new();
    let stdout = child.stdout.take().unwrap();
    std::io::BufRead::read_line(&mut std::io::BufReader::new(stdout), &mut line).unwrap();
    let port = line.trim().parse().expect("the proxy's port");
    TlsProxy { child, port }
}

#[test]
fn tls_context_is_reached_with_its_certificates() {
    let cleanup = Cleanup::new(&unique("tls"));
    let certs = tempfile::tempdir().unwrap();
    make_certificates(certs.path());
    let tcp = dev_env("LKPKG_TEST_DOCKER2_TCP");
    let proxy = tls_proxy(certs.path(), tcp.trim_start_matches("tcp://"));
    let host = format!("tcp://127.0.0.1:{}", proxy.port);
    let pem = |f: &str| certs.path().join(f).display().to_string();
    cleanup.context(
        "tls-builder",
        &format!(
            "{host},ca={},cert={},key={}",
            pem("ca.pem"),
            pem("cert.pem"),
            pem("key.pem")
        ),
    );
    // The same endpoint with only the CA: lkpkg says what is missing.
    cleanup.context(
        "tls-no-client-cert",
        &format!("{host},ca={}", pem("ca.pem")),
    );
    let work = tempfile::tempdir().unwrap();
    let ls = |builder: &str| {
        let mut cmd = crate::support::lkpkg(work.path());
        cmd.env("DOCKER_CONFIG", cleanup.config())
            .env_remove("DOCKER_HOST")
            .args(["--message-format", "json", "pkg", "builder", "ls"])
            .args(["--platforms", "linux/arm64", "--builders"])
            .arg(format!("linux/arm64={builder}"));
        let out = ok(&mut cmd);
        crate::support::json_output("builder", out.trim())
    };
    let row = ls("tls-builder");
    assert_eq!(row["answers"], true, "{row}");
    assert_eq!(row["endpoint"], host.as_str());
    let (_, version, _) = docker_at(
        Some(&tcp),
        cleanup.config(),
        &["version", "--format", "{{.Server.Version}}"],
    );
    assert_eq!(row["engine_version"], version.trim(), "{row}");
    let row = ls("tls-no-client-cert");
    assert_eq!(row["answers"], false, "{row}");
    assert!(row["error"].as_str().unwrap().contains("cert.pem"), "{row}");
}

/// A dockerd of its own, without the containerd image store (the classic one of older
/// installs), on a unix socket; stopped and removed when dropped.
struct ClassicEngine {
    child: std::process::Child,
    dir: tempfile::TempDir,
}

impl ClassicEngine {
    fn start() -> ClassicEngine {
        // Under the dev-env state directory: overlay storage wants a real file system.
        let dir = tempfile::Builder::new()
            .prefix("classic-engine")
            .tempdir_in("/var/lib/lkpkg-dev")
            .expect("/var/lib/lkpkg-dev (scripts/dev-env.sh makes it)");
        let d = dir.path();
        std::fs::write(d.join("daemon.json"), "{}").unwrap();
        let log = std::fs::File::create(d.join("log")).unwrap();
        // In a network namespace of its own: with `--bridge none` a dockerd deletes the host's
        // `docker0`, which the default engine's builds need. The socket is a file: reachable
        // from here all the same.
        let child = Command::new("unshare")
            .args(["--net", "dockerd"])
            .arg("--config-file")
            .arg(d.join("daemon.json"))
            .arg("--data-root")
            .arg(d.join("data"))
            .arg("--exec-root")
            .arg(d.join("exec"))
            .arg("--pidfile")
            .arg(d.join("pid"))
            .arg("-H")
            .arg(format!("unix://{}", d.join("docker.sock").display()))
            .args(["--bridge", "none", "--iptables=false"])
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .expect("dockerd");
        let engine = ClassicEngine { child, dir };
        let start = std::time::Instant::now();
        while run(Command::new("docker")
            .env("DOCKER_HOST", engine.host())
            .args(["version"]))
        .0 != 0
        {
            assert!(
                start.elapsed().as_secs() < 60,
                "the classic engine did not start: {}",
                std::fs::read_to_string(engine.dir.path().join("log")).unwrap_or_default()
            );
            std::thread::sleep(std::time::Duration::from_millis(200));
        }
        engine
    }

    fn host(&self) -> String {
        format!("unix://{}", self.dir.path().join("docker.sock").display())
    }
}

impl Drop for ClassicEngine {
    fn drop(&mut self) {
        let _ = Command::new("kill")
            .arg(self.child.id().to_string())
            .status();
        let _ = self.child.wait();
        let _ = Command::new("umount")
            .arg("-R")
            .arg(self.dir.path().join("exec"))
            .status();
    }
}

#[test]
fn an_engine_without_the_containerd_image_store_is_refused_saying_what_to_enable() {
    let engine = ClassicEngine::start();
    let image = unique("classic");
    let cleanup = Cleanup::new(&image);
    let repo = arch_repo(&image);
    let cache = tempfile::tempdir().unwrap();
    let (code, out, err) = run(lkpkg_in(&repo, &cleanup)
        .arg("--cache")
        .arg(cache.path())
        .args(["pkg", "build", "--platforms", "linux/amd64", "--builders"])
        .arg(format!("linux/amd64={}", engine.host()))
        .arg("arch"));
    assert_eq!(code, 3, "stdout:\n{out}\nstderr:\n{err}");
    assert!(
        err.contains(&engine.host())
            && err.contains("containerd-snapshotter")
            && err.contains("--builder-mode container"),
        "{err}"
    );
    assert_eq!(err.matches("error:").count(), 1, "{err}");
    // Nothing reached the cache.
    let listed = ok(lkpkg_in(&repo, &cleanup)
        .arg("--cache")
        .arg(cache.path())
        .args(["cache", "ls"]));
    assert!(!listed.contains(&image), "{listed}");
}

/// Removes a container and its state volume from the default engine when dropped.
struct RemoveContainer(String, tempfile::TempDir);

impl Drop for RemoveContainer {
    fn drop(&mut self) {
        docker_at(None, self.1.path(), &["rm", "-f", &self.0]);
        docker_at(
            None,
            self.1.path(),
            &["volume", "rm", "-f", &format!("{}-state", self.0)],
        );
    }
}

/// `docker inspect` of a container, as JSON.
fn inspect_container(name: &str, config: &Path) -> serde_json::Value {
    let (code, out, err) = docker_at(None, config, &["container", "inspect", name]);
    assert_eq!(code, 0, "{err}");
    serde_json::from_str::<serde_json::Value>(&out).unwrap()[0].clone()
}

#[test]
fn builder_container_is_created_found_and_recreated_as_linuxkit_does() {
    // No BuildKit image can be had here: a stand-in (busybox that ignores buildkitd's
    // arguments) shows how lkpkg finds, creates and recreates the container. The build stops
    // where the stand-in cannot be buildkitd: at the start where privileged containers cannot
    // run, else at `buildctl dial-stdio`, which it lacks (said at once): exit 3 either way.
    let image = unique("bkcontainer");
    let cleanup = Cleanup::new(&image);
    let name = format!("lkpkg-test-builder-{}", std::process::id());
    let _remove = RemoveContainer(name.clone(), tempfile::tempdir().unwrap());
    let standin = |tag: &str| {
        let ctx = tempfile::tempdir().unwrap();
        std::fs::copy("/bin/busybox", ctx.path().join("busybox")).unwrap();
        std::fs::write(
            ctx.path().join("Dockerfile"),
            format!(
                "FROM scratch\nCOPY busybox /bin/busybox\nLABEL lkpkg.test={image}\n\
                 ENTRYPOINT [\"/bin/busybox\", \"sh\", \"-c\", \"exec /bin/busybox sleep 3600\", \"buildkitd\"]\n"
            ),
        )
        .unwrap();
        let reference = format!("lkpkgtest/{image}-standin:{tag}");
        let (code, _, err) = docker_at(
            None,
            cleanup.config(),
            &[
                "build",
                "-q",
                "-t",
                &reference,
                ctx.path().to_str().unwrap(),
            ],
        );
        assert_eq!(code, 0, "{err}");
        reference
    };
    let first = standin("one");
    let repo = arch_repo(&image);
    let config = tempfile::tempdir().unwrap();
    let toml = config.path().join("buildkitd.toml");
    std::fs::write(&toml, "debug = true\n").unwrap();
    let build = |builder_image: &str, extra: &[&str]| {
        let cache = tempfile::tempdir().unwrap();
        run(lkpkg_in(&repo, &cleanup)
            .arg("--cache")
            .arg(cache.path())
            .args([
                "pkg",
                "build",
                "--platforms",
                "linux/amd64",
                "--builder-mode",
                "container",
            ])
            .args(["--builder-name", &name, "--builder-image", builder_image])
            .arg("--builder-config")
            .arg(&toml)
            .args(extra)
            .arg("arch"))
    };
    let (code, _, err) = build(&first, &[]);
    assert_eq!(code, 3, "{err}");
    assert!(err.contains(&name), "{err}");
    let created = inspect_container(&name, cleanup.config());
    assert_eq!(created["Config"]["Image"], first.as_str());
    assert_eq!(created["HostConfig"]["Privileged"], true);
    assert_eq!(
        created["HostConfig"]["Binds"],
        serde_json::json!([format!("{name}-state:/var/lib/buildkit")])
    );
    assert_eq!(
        created["Config"]["Cmd"],
        serde_json::json!([
            "--allow-insecure-entitlement",
            "network.host",
            "--addr",
            "unix:///run/buildkit/buildkitd.sock",
            "--debug",
            "--config",
            "/etc/buildkit/buildkitd.toml"
        ])
    );
    // The config went in.
    let copied = config.path().join("copied.toml");
    let (code, _, err) = docker_at(
        None,
        cleanup.config(),
        &[
            "cp",
            &format!("{name}:/etc/buildkit/buildkitd.toml"),
            copied.to_str().unwrap(),
        ],
    );
    assert_eq!(code, 0, "{err}");
    assert_eq!(std::fs::read_to_string(&copied).unwrap(), "debug = true\n");
    let id = |c: &serde_json::Value| c["Id"].as_str().unwrap().to_owned();
    let first_id = id(&created);
    // Found again as it is: the same container.
    build(&first, &[]);
    assert_eq!(id(&inspect_container(&name, cleanup.config())), first_id);
    // --builder-restart: a new one.
    build(&first, &["--builder-restart"]);
    let restarted = id(&inspect_container(&name, cleanup.config()));
    assert_ne!(restarted, first_id);
    // Another image (linuxkit's version check): recreated from it.
    let second = standin("two");
    build(&second, &[]);
    let recreated = inspect_container(&name, cleanup.config());
    assert_ne!(id(&recreated), restarted);
    assert_eq!(recreated["Config"]["Image"], second.as_str());
    // Another config: recreated too.
    std::fs::write(&toml, "debug = false\n").unwrap();
    build(&second, &[]);
    assert_ne!(
        id(&inspect_container(&name, cleanup.config())),
        id(&recreated)
    );
}

/// A loopback TCP proxy in front of `upstream` that forwards the engine's API but holds every
/// connection whose first request is a BuildKit upgrade (`/grpc`, `/session`) without ever
/// answering: an engine that answers `version` and then wedges.
fn wedging_proxy(upstream: &str) -> u16 {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let upstream = upstream.to_owned();
    std::thread::spawn(move || {
        for client in listener.incoming() {
            let Ok(mut client) = client else { break };
            let upstream = upstream.clone();
            std::thread::spawn(move || {
                let mut first = [0u8; 16384];
                let Ok(n) = client.read(&mut first) else {
                    return;
                };
                let line = String::from_utf8_lossy(&first[..n]);
                let line = line.lines().next().unwrap_or_default();
                if line.contains("/grpc ") || line.contains("/session ") {
                    std::thread::sleep(std::time::Duration::from_secs(120));
                    return;
                }
                let Ok(mut server) = std::net::TcpStream::connect(&upstream) else {
                    return;
                };
                if server.write_all(&first[..n]).is_err() {
                    return;
                }
                let mut client_back = client.try_clone().unwrap();
                let mut server_back = server.try_clone().unwrap();
                std::thread::spawn(move || {
                    let _ = std::io::copy(&mut server_back, &mut client_back);
                    let _ = client_back.shutdown(std::net::Shutdown::Write);
                });
                let _ = std::io::copy(&mut client, &mut server);
                let _ = server.shutdown(std::net::Shutdown::Write);
            });
        }
    });
    port
}

/// A builder that accepts the connection and never answers, and one that answers the API but
/// never its BuildKit upgrade: the build fails after `LKPKG_BUILDER_TIMEOUT` with one error
/// naming the endpoint, the wait and the variable that sets it (never a silent hang); the
/// cache gets nothing. A value that is not a number of seconds is bad input.
#[test]
fn a_wedged_builder_times_out_with_a_clear_configurable_error() {
    let image = unique("wedged");
    let cleanup = Cleanup::new(&image);
    let repo = arch_repo(&image);
    let work = tempfile::tempdir().unwrap();
    // Accepts, reads nothing, answers nothing.
    let socket = work.path().join("wedged.sock");
    let listener = std::os::unix::net::UnixListener::bind(&socket).unwrap();
    std::thread::spawn(move || {
        let mut held = Vec::new();
        for stream in listener.incoming().flatten() {
            held.push(stream);
        }
    });
    let docker2 = dev_env("LKPKG_TEST_DOCKER2_TCP");
    let proxy = wedging_proxy(docker2.trim_start_matches("tcp://"));
    for endpoint in [
        format!("unix://{}", socket.display()),
        format!("tcp://127.0.0.1:{proxy}"),
    ] {
        let cache = work.path().join(format!("cache-{}", endpoint.len()));
        let started = std::time::Instant::now();
        let (code, out, err) = run(lkpkg_in(&repo, &cleanup)
            .env("LKPKG_BUILDER_TIMEOUT", "2")
            .arg("--cache")
            .arg(&cache)
            .args(["pkg", "build", "--platforms", "linux/amd64", "--builders"])
            .arg(format!("linux/amd64={endpoint}"))
            .arg("arch"));
        let took = started.elapsed();
        assert_ne!(code, 0, "{endpoint}: {out}{err}");
        assert!(
            err.contains(&endpoint)
                && err.contains("no answer within 2 s")
                && err.contains("LKPKG_BUILDER_TIMEOUT"),
            "{endpoint}: {err}"
        );
        assert!(
            took < std::time::Duration::from_secs(60),
            "{endpoint}: took {took:?}"
        );
        let listed = ok(lkpkg_in(&repo, &cleanup)
            .arg("--cache")
            .arg(&cache)
            .args(["cache", "ls", "--json"]));
        assert!(
            crate::support::listed_images(&listed).is_empty(),
            "{listed}"
        );
    }
    let (code, _, err) = run(lkpkg_in(&repo, &cleanup)
        .env("LKPKG_BUILDER_TIMEOUT", "-1")
        .args(["pkg", "builder", "ls"]));
    assert_eq!(code, 2, "{err}");
    assert!(
        err.contains("LKPKG_BUILDER_TIMEOUT: `-1` is not a number of seconds"),
        "{err}"
    );
}

/// A TCP proxy to `upstream` that forwards both ways until `frozen` is set; then it holds
/// every byte (of open connections and new ones) and answers nothing, as a builder whose
/// dockerd was stopped, or a network gone quiet, would.
fn freezing_proxy(upstream: &str, frozen: Arc<std::sync::atomic::AtomicBool>) -> u16 {
    use std::sync::atomic::Ordering;
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let upstream = upstream.to_owned();
    let pipe = |mut from: std::net::TcpStream,
                mut to: std::net::TcpStream,
                frozen: Arc<std::sync::atomic::AtomicBool>| {
        std::thread::spawn(move || {
            let mut buffer = [0u8; 65536];
            loop {
                let n = match from.read(&mut buffer) {
                    Ok(0) | Err(_) => break,
                    Ok(n) => n,
                };
                while frozen.load(Ordering::SeqCst) {
                    std::thread::sleep(std::time::Duration::from_millis(50));
                }
                if to.write_all(&buffer[..n]).is_err() {
                    break;
                }
            }
            let _ = to.shutdown(std::net::Shutdown::Write);
        });
    };
    std::thread::spawn(move || {
        for client in listener.incoming() {
            let Ok(client) = client else { break };
            let Ok(server) = std::net::TcpStream::connect(&upstream) else {
                continue;
            };
            pipe(
                client.try_clone().unwrap(),
                server.try_clone().unwrap(),
                frozen.clone(),
            );
            pipe(server, client, frozen.clone());
        }
    });
    port
}

/// A builder that stops answering in the middle of a build (the proxy to the second engine
/// freezes while a `RUN` sleeps): the build fails within a few `LKPKG_BUILDER_TIMEOUT`s,
/// saying the builder stopped answering (exit 3, the environment's), and the cache gets
/// nothing. A build whose step is
/// silent for four times the timeout, on a builder that answers, is not cut short: the wait
/// is for the builder's answers, not for the build.
#[test]
fn a_builder_that_stops_answering_mid_build_fails_the_build_saying_so() {
    use std::sync::atomic::{AtomicBool, Ordering};
    let image = unique("frozen");
    let cleanup = Cleanup::new(&image);
    let repo = Repo::new();
    for (dir, seconds) in [("slow", 8), ("frozen", 40)] {
        std::fs::create_dir_all(repo.join(dir)).unwrap();
        std::fs::copy("/bin/busybox", repo.join(&format!("{dir}/busybox")))
            .expect("busybox-static (scripts/dev-env.sh installs it)");
        repo.write(
            &format!("{dir}/build.yml"),
            &format!("image: {image}-{dir}\norg: lkpkgtest\narches: [amd64]\n"),
        )
        .write(
            &format!("{dir}/Dockerfile"),
            &format!(
                "FROM scratch\nCOPY busybox /bin/busybox\n\
                 RUN [\"/bin/busybox\", \"sh\", \"-c\", \"/bin/busybox sleep {seconds}; echo {image} > /done\"]\n"
            ),
        );
    }
    repo.commit_all("slow steps");
    let frozen = Arc::new(AtomicBool::new(false));
    let docker2 = dev_env("LKPKG_TEST_DOCKER2_TCP");
    let proxy = freezing_proxy(docker2.trim_start_matches("tcp://"), frozen.clone());
    let endpoint = format!("tcp://127.0.0.1:{proxy}");
    let work = tempfile::tempdir().unwrap();
    let build = |package: &str| {
        let mut cmd = lkpkg_in(&repo, &cleanup);
        cmd.env("LKPKG_BUILDER_TIMEOUT", "2")
            .arg("--cache")
            .arg(work.path().join(package))
            .args(["pkg", "build", "--builders"])
            .arg(format!("linux/amd64={endpoint}"))
            .arg(package);
        cmd
    };
    ok(&mut build("slow"));

    let freezer = {
        let frozen = frozen.clone();
        std::thread::spawn(move || {
            std::thread::sleep(std::time::Duration::from_secs(8));
            frozen.store(true, Ordering::SeqCst);
        })
    };
    let started = std::time::Instant::now();
    let (code, out, err) = run(&mut build("frozen"));
    let took = started.elapsed();
    freezer.join().unwrap();
    frozen.store(false, Ordering::SeqCst);
    // The environment's failure (exit 3), naming the builder, the wait and its variable.
    assert_eq!(code, 3, "{out}{err}");
    assert!(
        err.contains(&endpoint)
            && err.contains("the builder stopped answering during the build: no answer within 2 s")
            && err.contains("LKPKG_BUILDER_TIMEOUT"),
        "{err}"
    );
    // Frozen at 8 s, in a step of 40 s: given up long before the step would have ended.
    assert!(took < std::time::Duration::from_secs(30), "took {took:?}");
    let listed = ok(lkpkg_in(&repo, &cleanup)
        .arg("--cache")
        .arg(work.path().join("frozen"))
        .args(["cache", "ls", "--json"]));
    assert!(
        crate::support::listed_images(&listed).is_empty(),
        "{listed}"
    );
}
