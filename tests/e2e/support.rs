//! Shared fixtures: temporary git repositories and a handle on the binary.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

/// A `lkpkg` command with a clean environment: no LINUXKIT_* variables leak in from the
/// caller (so `LINUXKIT_CACHE` too: a test passes `--cache` into its temporary directory, or
/// it would use the caller's `~/.linuxkit/cache`).
pub fn lkpkg(cwd: &Path) -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_lkpkg"));
    cmd.current_dir(cwd);
    for (key, _) in std::env::vars() {
        if key.starts_with("LINUXKIT_") {
            cmd.env_remove(key);
        }
    }
    cmd.env("USER", "tester");
    cmd
}

/// [`lkpkg`] in the repository, on `cache`, with a docker config of its own beside the cache
/// (no credentials of the caller's).
pub fn lkpkg_on(repo: &Repo, cache: &Path) -> Command {
    let mut cmd = repo.lkpkg();
    cmd.arg("--cache").arg(cache);
    cmd.env("DOCKER_CONFIG", cache.with_extension("docker"));
    cmd
}

/// The variables `scripts/dev-env.sh` writes.
const DEV_ENV: &str = "/var/lib/lkpkg-dev/env";

/// A dev-env variable: from the environment, else from `/var/lib/lkpkg-dev/env`.
pub fn dev_env(key: &str) -> String {
    if let Some(value) = std::env::var(key).ok().filter(|v| !v.is_empty()) {
        return value;
    }
    let file = std::fs::read_to_string(DEV_ENV).unwrap_or_default();
    file.lines()
        .filter_map(|l| {
            l.trim()
                .strip_prefix("export ")
                .unwrap_or(l.trim())
                .split_once('=')
        })
        .find(|(k, _)| *k == key)
        .map(|(_, v)| v.trim_matches('"').trim_matches('\'').to_owned())
        .filter(|v| !v.is_empty())
        .unwrap_or_else(|| panic!("{key} is not set and not in {DEV_ENV}: run scripts/dev-env.sh"))
}

/// Runs a command and returns (exit code, stdout, stderr).
pub fn run(cmd: &mut Command) -> (i32, String, String) {
    let Output {
        status,
        stdout,
        stderr,
    } = cmd.output().expect("spawn");
    (
        status.code().unwrap_or(-1),
        String::from_utf8_lossy(&stdout).into_owned(),
        String::from_utf8_lossy(&stderr).into_owned(),
    )
}

/// Runs a command that must succeed; returns its stdout.
pub fn ok(cmd: &mut Command) -> String {
    let (code, stdout, stderr) = run(cmd);
    assert_eq!(
        code, 0,
        "command failed: {cmd:?}\nstdout:\n{stdout}\nstderr:\n{stderr}"
    );
    stdout
}

/// A git repository in a temporary directory.
pub struct Repo {
    pub dir: tempfile::TempDir,
}

impl Repo {
    pub fn new() -> Repo {
        let repo = Repo {
            dir: tempfile::tempdir().expect("tempdir"),
        };
        repo.git(&["init", "-q", "-b", "main"]);
        repo.git(&["config", "user.email", "t@example.invalid"]);
        repo.git(&["config", "user.name", "t"]);
        repo.git(&["config", "commit.gpgsign", "false"]);
        repo
    }

    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    pub fn join(&self, rel: &str) -> PathBuf {
        self.path().join(rel)
    }

    pub fn write(&self, rel: &str, content: &str) -> &Self {
        let path = self.join(rel);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, content).unwrap();
        self
    }

    /// A minimal package: build.yml with `image` (plus `extra` lines) and a Dockerfile.
    pub fn package(&self, dir: &str, image: &str, extra: &str) -> &Self {
        self.write(
            &format!("{dir}/build.yml"),
            &format!("image: {image}\n{extra}"),
        );
        self.write(
            &format!("{dir}/Dockerfile"),
            "FROM scratch\nCOPY build.yml /\n",
        )
    }

    /// `<dir>/bin/busybox` (Debian's static busybox) and `<dir>/bin/test-id`, a file unique
    /// to the test and the run: a Dockerfile's first step `COPY bin/ /bin/` then has an engine
    /// step cache of its own, which no other test's clean-up (`rmi -f`) can remove under it.
    pub fn busybox_bin(&self, dir: &str, tag: &str) -> &Self {
        std::fs::create_dir_all(self.join(&format!("{dir}/bin"))).unwrap();
        std::fs::copy("/bin/busybox", self.join(&format!("{dir}/bin/busybox")))
            .expect("busybox-static (scripts/dev-env.sh installs it)");
        self.write(
            &format!("{dir}/bin/test-id"),
            &format!("{tag} {}", std::process::id()),
        )
    }

    pub fn git(&self, args: &[&str]) -> String {
        let out = Command::new("git")
            .args(args)
            .current_dir(self.path())
            .output()
            .expect("git");
        assert!(
            out.status.success(),
            "git {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).trim_end().to_owned()
    }

    pub fn commit_all(&self, message: &str) {
        self.git(&["add", "-A"]);
        self.git(&["commit", "-q", "-m", message]);
    }

    /// Runs a shell snippet in `dir` of the repository (the plain-git reference computations).
    pub fn sh(&self, dir: &str, script: &str) -> String {
        let out = Command::new("bash")
            .arg("-c")
            .arg(script)
            .current_dir(self.join(dir))
            .output()
            .expect("bash");
        assert!(
            out.status.success(),
            "{script}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).trim_end().to_owned()
    }

    pub fn lkpkg(&self) -> Command {
        lkpkg(self.path())
    }
}

/// A file of a package's image for linux/amd64, read from the lkpkg cache (flattened rootfs).
pub fn file_in_image(repo: &Repo, cache: &std::path::Path, package: &str, path: &str) -> String {
    let tag = ok(repo.lkpkg().args(["pkg", "show-tag", package]))
        .trim()
        .to_owned();
    let out = tempfile::tempdir().unwrap();
    let tar = out.path().join("fs.tar");
    ok(repo.lkpkg().args([
        "--cache",
        cache.to_str().unwrap(),
        "cache",
        "export",
        &tag,
        "--format",
        "filesystem",
        "--platform",
        "linux/amd64",
        "-o",
        tar.to_str().unwrap(),
    ]));
    let listing = std::process::Command::new("tar")
        .args(["-xOf", tar.to_str().unwrap(), path.trim_start_matches('/')])
        .output()
        .unwrap();
    String::from_utf8_lossy(&listing.stdout).into_owned()
}

/// A JSON output of lkpkg, parsed and checked against its published schema
/// (`docs/json/<schema>.schema.json`, generated from the CLI's types).
pub fn json_output(schema: &str, text: &str) -> serde_json::Value {
    let value: serde_json::Value =
        serde_json::from_str(text).unwrap_or_else(|e| panic!("not JSON ({e}):\n{text}"));
    check_schema(schema, &value);
    value
}

/// A JSON Lines output of lkpkg, each line checked as [`json_output`] checks a document.
pub fn json_lines(schema: &str, text: &str) -> Vec<serde_json::Value> {
    text.lines().map(|line| json_output(schema, line)).collect()
}

/// The images `cache ls --json` lists (each with `name`, `digest`, `mediaType`, `size`).
pub fn listed_images(text: &str) -> Vec<serde_json::Value> {
    json_output("cache-ls", text)["images"]
        .as_array()
        .unwrap_or_else(|| panic!("no images in {text}"))
        .clone()
}

fn check_schema(schema: &str, value: &serde_json::Value) {
    let path =
        Path::new(env!("CARGO_MANIFEST_DIR")).join(format!("../docs/json/{schema}.schema.json"));
    let schema_value: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display())),
    )
    .unwrap();
    let validator = jsonschema::validator_for(&schema_value)
        .unwrap_or_else(|e| panic!("{}: not a schema: {e}", path.display()));
    let errors: Vec<String> = validator
        .iter_errors(value)
        .map(|e| format!("{} at {}", e, e.instance_path()))
        .collect();
    assert!(
        errors.is_empty(),
        "output does not match {}:\n{}\n{value:#}",
        path.display(),
        errors.join("\n")
    );
}

/// A tmpfs mounted for one test, unmounted when dropped.
pub struct Tmpfs(PathBuf);

impl Tmpfs {
    pub fn new(target: &Path, size: &str) -> Tmpfs {
        std::fs::create_dir_all(target).unwrap();
        ok(Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(target));
        Tmpfs(target.to_owned())
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(&self.0).output();
    }
}
