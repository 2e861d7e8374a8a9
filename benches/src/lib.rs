//! Shared pieces of lkpkg's benchmarks: generated package repositories and timing helpers.
//!
//! Benchmarks compare lkpkg side by side, in one run, with the baseline their issue names,
//! and report medians and ratios (machines are shared and noisy). Results: `RESULTS.md`.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

/// Runs `f` `runs` times and returns the median duration.
pub fn median(runs: usize, mut f: impl FnMut()) -> Duration {
    let mut times: Vec<Duration> = (0..runs)
        .map(|_| {
            let start = Instant::now();
            f();
            start.elapsed()
        })
        .collect();
    times.sort();
    times[times.len() / 2]
}

/// Runs a command, panicking with its output when it fails.
pub fn run(cmd: &mut Command) -> String {
    let out = cmd.output().unwrap_or_else(|e| panic!("{cmd:?}: {e}"));
    assert!(
        out.status.success(),
        "{cmd:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// The `lkpkg` binary to measure: `$LKPKG_BIN`, else the release build beside this harness.
pub fn lkpkg_bin() -> PathBuf {
    if let Some(bin) = std::env::var_os("LKPKG_BIN") {
        return bin.into();
    }
    let exe = std::env::current_exe().expect("current exe");
    exe.parent().expect("bin dir").join("lkpkg")
}

/// Generates a git repository of `count` packages under `pkg/`, with a realistic dependency
/// shape: one package in 50 is a base; every other package builds `FROM` a base through an
/// `@lkt:pkg:` build argument; one in 10 also has an extra source. Everything is committed.
pub fn generate_repository(root: &Path, count: usize) {
    std::fs::create_dir_all(root.join("shared")).unwrap();
    std::fs::write(root.join("shared/file"), "shared\n").unwrap();
    for i in 0..count {
        let dir = root.join(format!("pkg/p{i:05}"));
        std::fs::create_dir_all(&dir).unwrap();
        let is_base = i % 50 == 0;
        let mut yml = format!("image: p{i:05}\narches:\n  - amd64\n");
        let dockerfile = if is_base {
            "FROM scratch\nCOPY build.yml /\n".to_owned()
        } else {
            let base = (i / 50) * 50;
            yml.push_str(&format!("buildArgs:\n  - BASE=@lkt:pkg:../p{base:05}\n"));
            if i % 10 == 0 {
                yml.push_str("extra-sources:\n  - ../../shared:/shared\n");
            }
            "ARG BASE\nFROM ${BASE}\nCOPY build.yml /\n".to_owned()
        };
        std::fs::write(dir.join("build.yml"), yml).unwrap();
        std::fs::write(dir.join("Dockerfile"), dockerfile).unwrap();
    }
    git_commit_all(root);
}

/// Times one call of `f`.
pub fn timed(f: impl FnOnce()) -> Duration {
    let start = Instant::now();
    f();
    start.elapsed()
}

/// The median of samples (the upper one of an even count, as [`median`]).
pub fn median_of(samples: &[Duration]) -> Duration {
    let mut sorted = samples.to_vec();
    sorted.sort();
    sorted[sorted.len() / 2]
}

/// Samples in seconds, in run order: `2.91 3.02 2.95`.
pub fn list_secs(samples: &[Duration]) -> String {
    samples
        .iter()
        .map(|d| format!("{:.2}", d.as_secs_f64()))
        .collect::<Vec<_>>()
        .join(" ")
}

/// The machine's load averages (`/proc/loadavg`), to print beside figures taken on a shared
/// machine.
pub fn load_average() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|l| l.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_else(|_| "unknown".into())
}

/// The docker CLI with the classic builder (`DOCKER_BUILDKIT=0`), as linuxkit's engine path.
pub fn docker() -> Command {
    let mut cmd = Command::new("docker");
    cmd.env("DOCKER_BUILDKIT", "0");
    cmd
}

/// Removes every image (intermediate ones included) that carries `label` (`key=value`), so a
/// harness cleans up what it built, and only that, even when builds moved tags meanwhile.
pub fn remove_labelled_images(label: &str) {
    // Removing a child removes its untagged parents: a few passes until none is left.
    for _ in 0..5 {
        let Ok(out) = docker()
            .args(["images", "-qa", "--no-trunc", "--filter"])
            .arg(format!("label={label}"))
            .output()
        else {
            return;
        };
        let ids: Vec<String> = String::from_utf8_lossy(&out.stdout)
            .split_whitespace()
            .map(str::to_owned)
            .collect::<std::collections::BTreeSet<_>>()
            .into_iter()
            .collect();
        if ids.is_empty() {
            return;
        }
        let _ = docker()
            .args(["rmi", "-f"])
            .args(&ids)
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .status();
    }
}

/// Removes the images labelled `label` when dropped (at the end, or when a harness panics).
#[derive(Debug)]
pub struct LabelledImages(pub String);

impl Drop for LabelledImages {
    fn drop(&mut self) {
        remove_labelled_images(&self.0);
    }
}

/// Commits everything in `root` as a new git repository on `main`; objects are stored, not
/// deflated, and not synced (a generated 1 GiB file commits in seconds).
pub fn git_commit_all(root: &Path) {
    let git = |args: &[&str]| {
        run(Command::new("git")
            .args(["-c", "core.fsync=none", "-c", "core.compression=0"])
            .args(args)
            .current_dir(root));
    };
    git(&["init", "-q", "-b", "main"]);
    git(&["add", "-A"]);
    git(&[
        "-c",
        "user.email=b@example.invalid",
        "-c",
        "user.name=b",
        "commit",
        "-q",
        "-m",
        "generated",
    ]);
}

/// The peak resident set size of one command, from GNU time (`/usr/bin/time -v`, the measure
/// issue #11 names): [`RssReport::wrap`] runs the command under it, writing its report to a
/// temporary file that [`RssReport::kib`] reads afterwards.
pub struct RssReport(tempfile::NamedTempFile);

impl Default for RssReport {
    fn default() -> RssReport {
        RssReport::new()
    }
}

impl RssReport {
    /// A fresh report file; panics without GNU time (`apt install time`).
    pub fn new() -> RssReport {
        assert!(
            Path::new("/usr/bin/time").exists(),
            "GNU time (/usr/bin/time) measures peak RSS: apt install time"
        );
        RssReport(tempfile::NamedTempFile::new().expect("a temporary file"))
    }

    /// `cmd` run under `/usr/bin/time -v -o <report>`, with its directory and environment.
    pub fn wrap(&self, cmd: &Command) -> Command {
        let mut wrapped = Command::new("/usr/bin/time");
        wrapped.arg("-v").arg("-o").arg(self.0.path());
        wrapped.arg(cmd.get_program()).args(cmd.get_args());
        if let Some(dir) = cmd.get_current_dir() {
            wrapped.current_dir(dir);
        }
        for (key, value) in cmd.get_envs() {
            match value {
                Some(value) => wrapped.env(key, value),
                None => wrapped.env_remove(key),
            };
        }
        wrapped
    }

    /// The "Maximum resident set size" of the command's run, in KiB.
    pub fn kib(&self) -> u64 {
        let text = std::fs::read_to_string(self.0.path()).expect("GNU time's report");
        text.lines()
            .find_map(|l| l.trim().strip_prefix("Maximum resident set size (kbytes):"))
            .and_then(|v| v.trim().parse().ok())
            .unwrap_or_else(|| panic!("no maximum RSS in /usr/bin/time's report:\n{text}"))
    }
}
