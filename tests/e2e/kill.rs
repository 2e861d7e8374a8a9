//! Crash safety, tested by killing (issue #11, item 1).
//!
//! One cache, one repository, one registry repository; then, again and again, one lkpkg
//! command started and SIGKILLed at a random moment of its run:
//! - `pkg build` of a base (amd64 + arm64, one solve) and a dependent through `@lkt:pkg:`,
//!   after a commit that changes the base (so every kill lands in a real build: the context,
//!   the solve, the exporter's stream, the ingest, the records, the index);
//! - `cache import` of an OCI archive with a layer of new random bytes;
//! - `cache rm`, `cache gc`, `cache gc --max-size`;
//! - `cache export -o FILE`;
//! - `cache pull` of an image the cache lost, and `cache push` to a new tag.
//!
//! After every kill:
//! - `cache verify --json` reports no problem: `index.json` and the redb index agree, every
//!   name reaches only blobs that are present, every blob matches its digest;
//! - an export killed leaves no file under its name, or the whole archive (byte for byte the
//!   archive an unkilled export writes);
//! - a build killed is followed by an unkilled build of the same commit, which must succeed
//!   and report fresh every unit the killed one had reported finished (what was complete is
//!   reused, not rebuilt).
//!
//! Kill times are drawn uniformly over the last unkilled duration of the same command (×1.3),
//! so kills land everywhere from process start to the last write. The suite runs
//! `LKPKG_KILLS` kills (default 200); the documented long run (docs/reliability.md) sets it to
//! 1,000 or more. `LKPKG_KILL_SEED` replays a run (the seed is printed).

use std::collections::BTreeMap;
use std::io::Read;
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use sha2::{Digest, Sha256};

use crate::support::{Repo, dev_env, ok, run};

/// A small, seeded generator (xorshift64*): runs are replayable from the printed seed.
pub(crate) struct Rng(pub(crate) u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n.max(1)
    }

    fn bytes(&mut self, n: usize) -> Vec<u8> {
        let mut out = Vec::with_capacity(n + 8);
        while out.len() < n {
            out.extend_from_slice(&self.next().to_le_bytes());
        }
        out.truncate(n);
        out
    }
}

fn sha256_hex(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}

/// An OCI layout tar of one amd64 image named `name`, whose one layer holds `size` random
/// bytes (new blobs for every archive).
pub(crate) fn oci_archive(dir: &Path, name: &str, rng: &mut Rng, size: usize) -> PathBuf {
    let work = tempfile::tempdir_in(dir).unwrap();
    let files = work.path().join("files");
    std::fs::create_dir_all(&files).unwrap();
    std::fs::write(files.join("data"), rng.bytes(size)).unwrap();
    let layer_tar = work.path().join("layer.tar");
    ok(Command::new("tar")
        .arg("-C")
        .arg(&files)
        .arg("-cf")
        .arg(&layer_tar)
        .arg("data"));
    let layer = std::fs::read(&layer_tar).unwrap();
    let layer_digest = sha256_hex(&layer);
    let config = serde_json::to_vec(&serde_json::json!({
        "architecture": "amd64",
        "os": "linux",
        "config": {},
        "rootfs": {"type": "layers", "diff_ids": [format!("sha256:{layer_digest}")]},
    }))
    .unwrap();
    let manifest = serde_json::to_vec(&serde_json::json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {
            "mediaType": "application/vnd.oci.image.config.v1+json",
            "digest": format!("sha256:{}", sha256_hex(&config)),
            "size": config.len(),
        },
        "layers": [{
            "mediaType": "application/vnd.oci.image.layer.v1.tar",
            "digest": format!("sha256:{layer_digest}"),
            "size": layer.len(),
        }],
    }))
    .unwrap();
    let index = serde_json::to_vec(&serde_json::json!({
        "schemaVersion": 2,
        "manifests": [{
            "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "digest": format!("sha256:{}", sha256_hex(&manifest)),
            "size": manifest.len(),
            "annotations": {"io.containerd.image.name": name},
            "platform": {"architecture": "amd64", "os": "linux"},
        }],
    }))
    .unwrap();
    let layout = work.path().join("layout");
    let blobs = layout.join("blobs/sha256");
    std::fs::create_dir_all(&blobs).unwrap();
    for blob in [&layer, &config, &manifest] {
        std::fs::write(blobs.join(sha256_hex(blob)), blob).unwrap();
    }
    std::fs::write(layout.join("index.json"), index).unwrap();
    std::fs::write(
        layout.join("oci-layout"),
        r#"{"imageLayoutVersion":"1.0.0"}"#,
    )
    .unwrap();
    let out = dir.join(format!("{}.tar", sha256_hex(name.as_bytes())));
    ok(Command::new("tar")
        .arg("-C")
        .arg(&layout)
        .arg("-cf")
        .arg(&out)
        .arg("."));
    out
}

/// What one command kind is, to start and to judge.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Op {
    Build,
    Import,
    Rm,
    Gc,
    GcMaxSize,
    Export,
    Pull,
    Push,
}

const OPS: [(Op, u64); 8] = [
    (Op::Build, 12),
    (Op::Import, 25),
    (Op::Rm, 10),
    (Op::Gc, 8),
    (Op::GcMaxSize, 5),
    (Op::Export, 15),
    (Op::Pull, 13),
    (Op::Push, 12),
];

struct Harness {
    repo: Repo,
    scratch: tempfile::TempDir,
    cache: PathBuf,
    registry: String,
    /// Names imported by the harness and still meant to be in the cache.
    imported: Vec<String>,
    serial: usize,
    /// The pulled image's name (pushed once at setup) and its archive, to restore it.
    pulled: String,
    /// The exported image, and the bytes an unkilled export gives.
    exported: (String, Vec<u8>),
    /// Per kind: how long its last unkilled run took.
    durations: BTreeMap<Op, Duration>,
}

impl Harness {
    fn cmd(&self) -> Command {
        let mut cmd = self.repo.lkpkg();
        cmd.env_remove("DOCKER_HOST")
            .env_remove("DOCKER_CONTEXT")
            .env_remove("SOURCE_DATE_EPOCH")
            .env("DOCKER_CONFIG", self.scratch.path().join("docker-config"))
            .arg("--cache")
            .arg(&self.cache);
        cmd
    }

    fn next_name(&mut self) -> String {
        self.serial += 1;
        format!("docker.io/lkpkgkill/img-{}:t", self.serial)
    }

    fn import_new(&mut self, rng: &mut Rng) -> (String, PathBuf) {
        let name = self.next_name();
        let size = 256 * 1024 + rng.below(4 * 1024 * 1024) as usize;
        let archive = oci_archive(self.scratch.path(), &name, rng, size);
        (name, archive)
    }

    /// The command for `op`, with what the harness must check or restore after it.
    fn prepare(&mut self, op: Op, rng: &mut Rng) -> (Command, Option<String>) {
        match op {
            Op::Build => {
                self.serial += 1;
                self.repo
                    .write("base/stamp", &format!("build {}\n", self.serial));
                self.repo.commit_all("stamp");
                let mut cmd = self.cmd();
                cmd.args(["--message-format", "json", "pkg", "build"]);
                (cmd, None)
            }
            Op::Import => {
                let (name, archive) = self.import_new(rng);
                let mut cmd = self.cmd();
                cmd.args(["cache", "import"]).arg(&archive);
                (cmd, Some(name))
            }
            Op::Rm => {
                let index = rng.below(self.imported.len() as u64) as usize;
                let name = self.imported.get(index).cloned().unwrap_or_default();
                let mut cmd = self.cmd();
                cmd.args(["cache", "rm", &name]);
                (cmd, Some(name))
            }
            Op::Gc => {
                let mut cmd = self.cmd();
                cmd.args(["cache", "gc"]);
                (cmd, None)
            }
            Op::GcMaxSize => {
                let mut cmd = self.cmd();
                cmd.args(["cache", "gc", "--max-size", "60MiB"]);
                (cmd, None)
            }
            Op::Export => {
                let out = self.scratch.path().join("export.tar");
                let _ = std::fs::remove_file(&out);
                let mut cmd = self.cmd();
                cmd.args(["cache", "export", &self.exported.0, "--format", "oci", "-o"])
                    .arg(&out);
                (cmd, None)
            }
            Op::Pull => {
                // The cache loses the image (unkilled), then pulls it back (killed).
                let (code, _, stderr) = run(self.cmd().args(["cache", "rm", &self.pulled]));
                assert!(
                    code == 0 || stderr.contains("no image named"),
                    "cache rm: {stderr}"
                );
                let mut cmd = self.cmd();
                cmd.args(["cache", "pull", &self.pulled]);
                (cmd, None)
            }
            Op::Push => {
                self.serial += 1;
                let index = rng.below(self.imported.len() as u64) as usize;
                let name = self
                    .imported
                    .get(index)
                    .cloned()
                    .unwrap_or_else(|| self.exported.0.clone());
                let remote = format!(
                    "{}/lkpkg-kill-{}/p:{}",
                    self.registry,
                    std::process::id(),
                    self.serial
                );
                let mut cmd = self.cmd();
                cmd.args(["cache", "push", &name, "--remote-name", &remote]);
                (cmd, Some(name))
            }
        }
    }

    /// `cache verify --json` must find nothing wrong.
    fn verify(&self, after: &str) {
        let (code, stdout, stderr) = run(self.cmd().args(["cache", "verify", "--json"]));
        assert!(
            !stdout.trim().is_empty(),
            "after {after}: verify printed no report: {stderr}"
        );
        let report = crate::support::json_output("cache-verify", &stdout);
        assert_eq!(
            (code, &report["problems"]),
            (0, &serde_json::json!([])),
            "after {after}: {report}\n{stderr}"
        );
    }

    fn names(&self) -> Vec<String> {
        let out = ok(self.cmd().args(["cache", "ls", "--json"]));
        crate::support::listed_images(&out)
            .iter()
            .filter_map(|e| e["name"].as_str().map(str::to_owned))
            .collect()
    }
}

/// Units a JSON event stream reports as `kind` (`finished`, `fresh`, …).
fn units(events: &str, kind: &str) -> Vec<String> {
    events
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter(|e| e["type"] == kind)
        .filter_map(|e| e["unit"].as_str().map(str::to_owned))
        .collect()
}

/// Starts `cmd`, kills it after `delay` (if it still runs); returns whether it was killed,
/// its stdout, and how long it ran.
fn run_and_kill(mut cmd: Command, delay: Duration) -> (bool, String, Duration) {
    let started = Instant::now();
    let mut child = cmd
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn lkpkg");
    let mut stdout = child.stdout.take().unwrap();
    let reader = std::thread::spawn(move || {
        let mut out = String::new();
        let _ = stdout.read_to_string(&mut out);
        out
    });
    let deadline = started + delay;
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        let now = Instant::now();
        if now >= deadline {
            let _ = child.kill(); // SIGKILL

            break child.wait().unwrap();
        }
        std::thread::sleep((deadline - now).min(Duration::from_millis(2)));
    };
    let elapsed = started.elapsed();
    let out = reader.join().unwrap_or_default();
    (status.signal() == Some(9), out, elapsed)
}

#[test]
fn killed_at_random_points_the_cache_stays_whole_and_the_next_run_reuses_what_was_complete() {
    let kills: usize = std::env::var("LKPKG_KILLS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(200);
    let seed: u64 = std::env::var("LKPKG_KILL_SEED")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .as_nanos() as u64
                | 1
        });
    eprintln!("kill harness: {kills} kills, LKPKG_KILL_SEED={seed}");
    let mut rng = Rng(seed);
    let registry = dev_env("LKPKG_TEST_REGISTRY");
    let scratch = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(scratch.path().join("docker-config")).unwrap();
    let repo = Repo::new();
    let prefix = format!("kill-{}", std::process::id());
    repo.write(
        "base/build.yml",
        &format!("image: {prefix}-base\norg: lkpkgtest\narches: [amd64, arm64]\n"),
    )
    .write(
        "base/Dockerfile",
        "FROM scratch\nARG TARGETARCH\nCOPY busybox-${TARGETARCH} /bin/busybox\nCOPY stamp /stamp\n",
    )
    .write("base/stamp", "first\n")
    .write(
        "app/build.yml",
        &format!(
            "image: {prefix}-app\norg: lkpkgtest\narches: [amd64, arm64]\n\
             buildArgs:\n  - BASE=@lkt:pkg:../base\n"
        ),
    )
    .write(
        "app/Dockerfile",
        "ARG BASE\nFROM ${BASE}\nCOPY build.yml /app.yml\n",
    );
    std::fs::copy("/bin/busybox", repo.join("base/busybox-amd64"))
        .expect("busybox-static (scripts/dev-env.sh installs it)");
    std::fs::copy(
        dev_env("LKPKG_TEST_BUSYBOX_ARM64"),
        repo.join("base/busybox-arm64"),
    )
    .expect("the arm64 busybox of scripts/dev-env.sh");
    repo.commit_all("packages");
    let mut h = Harness {
        cache: scratch.path().join("cache"),
        repo,
        registry: registry.clone(),
        imported: Vec::new(),
        serial: 0,
        pulled: String::new(),
        exported: (String::new(), Vec::new()),
        durations: BTreeMap::new(),
        scratch,
    };

    // Setup, unkilled, timing each kind of command once.
    let timed = |mut cmd: Command| -> Duration {
        let started = Instant::now();
        ok(&mut cmd);
        started.elapsed()
    };
    let (cmd, _) = h.prepare(Op::Build, &mut rng);
    h.durations.insert(Op::Build, timed(cmd));
    for _ in 0..6 {
        let (cmd, name) = h.prepare(Op::Import, &mut rng);
        let d = timed(cmd);
        let longest = h.durations.get(&Op::Import).copied().unwrap_or_default();
        h.durations.insert(Op::Import, d.max(longest));
        h.imported.extend(name);
    }
    h.exported.0 = h.imported[0].clone();
    let reference = h.scratch.path().join("reference.tar");
    let mut cmd = h.cmd();
    cmd.args(["cache", "export", &h.exported.0, "--format", "oci", "-o"])
        .arg(&reference);
    h.durations.insert(Op::Export, timed(cmd));
    h.exported.1 = std::fs::read(&reference).unwrap();
    h.pulled = format!("{registry}/lkpkg-kill-{}/pulled:1", std::process::id());
    let mut cmd = h.cmd();
    cmd.args(["cache", "push", &h.imported[1], "--remote-name", &h.pulled]);
    h.durations.insert(Op::Push, timed(cmd));
    let mut cmd = h.cmd();
    cmd.args(["cache", "pull", &h.pulled]);
    h.durations.insert(Op::Pull, timed(cmd));
    for op in [Op::Rm, Op::Gc, Op::GcMaxSize] {
        h.durations.insert(op, Duration::from_millis(40));
    }
    h.verify("setup");

    let total_weight: u64 = OPS.iter().map(|(_, w)| w).sum();
    let mut killed: BTreeMap<Op, usize> = BTreeMap::new();
    let mut completed: BTreeMap<Op, usize> = BTreeMap::new();
    let mut reused = 0usize;
    let mut attempts = 0usize;
    let started = Instant::now();
    while killed.values().sum::<usize>() < kills {
        attempts += 1;
        assert!(attempts < kills * 4, "too few runs were killed: {killed:?}");
        let mut pick = rng.below(total_weight);
        let op = OPS
            .iter()
            .find(|(_, w)| {
                if pick < *w {
                    true
                } else {
                    pick -= w;
                    false
                }
            })
            .map(|(op, _)| *op)
            .unwrap();
        if matches!(op, Op::Rm) && h.imported.len() < 3 {
            continue;
        }
        let (cmd, subject) = h.prepare(op, &mut rng);
        let typical = h.durations[&op].mul_f64(1.3);
        let delay = Duration::from_micros(rng.below(typical.as_micros() as u64));
        let (was_killed, stdout, elapsed) = run_and_kill(cmd, delay);
        let what = format!("{op:?} {subject:?} killed={was_killed} after {elapsed:?}");
        if was_killed {
            *killed.entry(op).or_default() += 1;
        } else {
            *completed.entry(op).or_default() += 1;
            h.durations.insert(op, elapsed);
        }
        h.verify(&what);
        // No name is lost: each name the harness knew stays, unless this command was meant
        // to remove it (`rm` of it, `gc --max-size` trimming least recently used names).
        let names = h.names();
        for name in &h.imported {
            let meant = (op == Op::Rm && subject.as_ref() == Some(name)) || op == Op::GcMaxSize;
            assert!(
                names.contains(name) || meant,
                "after {what}: `{name}` was lost"
            );
        }
        match op {
            Op::Import => {
                let name = subject.unwrap();
                let present = names.contains(&name);
                assert!(
                    present || was_killed,
                    "after {what}: the import published nothing"
                );
                if present {
                    h.imported.push(name);
                }
            }
            Op::Rm => {
                let name = subject.unwrap();
                assert!(
                    was_killed || !names.contains(&name),
                    "after {what}: still there"
                );
            }
            Op::Pull => assert!(
                was_killed || names.contains(&h.pulled),
                "after {what}: not pulled"
            ),
            Op::Export => {
                let out = h.scratch.path().join("export.tar");
                if let Ok(bytes) = std::fs::read(&out) {
                    assert!(
                        bytes == h.exported.1,
                        "after {what}: a partial export ({} of {} bytes) under its final name",
                        bytes.len(),
                        h.exported.1.len()
                    );
                }
            }
            Op::Build if was_killed => {
                // The next build of the same commit succeeds and reuses what was complete.
                let finished = units(&stdout, "finished");
                let out = ok(h.cmd().args(["--message-format", "json", "pkg", "build"]));
                let fresh = units(&out, "fresh");
                for unit in &finished {
                    assert!(
                        fresh.contains(unit),
                        "after {what}: {unit} had finished but was not reused\n{out}"
                    );
                }
                reused += finished.len();
                h.verify(&format!("the build after {what}"));
            }
            Op::Build | Op::Gc | Op::GcMaxSize | Op::Push => {}
        }
        h.imported.retain(|n| names.contains(n));
        // The exported image comes back if `gc --max-size` trimmed it.
        if !h.names().contains(&h.exported.0) {
            ok(h.cmd().args(["cache", "import"]).arg(&reference));
        }
        if !h.imported.contains(&h.exported.0) {
            h.imported.push(h.exported.0.clone());
        }
    }
    eprintln!(
        "kill harness: {} kills in {:?} ({attempts} runs): killed {killed:?}, completed \
         {completed:?}; {reused} units finished before a kill were reused",
        killed.values().sum::<usize>(),
        started.elapsed()
    );
    // A last build and a no-op after it.
    ok(h.cmd().args(["pkg", "build"]));
    let out = ok(h.cmd().args(["--message-format", "json", "pkg", "build"]));
    assert!(units(&out, "finished").is_empty(), "a no-op rebuilt: {out}");
    h.verify("the end");
}
