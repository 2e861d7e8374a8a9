//! Build benchmarks through BuildKit (issue: builds through BuildKit), side by side in one run
//! on the same Docker engine (Docker 26.1 with the containerd image store; its own BuildKit).
//!
//! Baseline, "the linuxkit way": each package built one at a time, one platform at a time, with
//! `docker buildx build --builder default --provenance=false --no-cache --network none
//! --platform linux/<arch> --output type=oci,dest=FILE <dir>` (buildx's `docker` driver: the
//! engine's BuildKit, the one lkpkg talks to). lkpkg: `lkpkg --cache <fresh dir> -q pkg build
//! --disable-cache -j N <dirs>` (network `none` by default).
//!
//! Every package is `FROM scratch`, `ARG TARGETARCH`, `COPY bin-${TARGETARCH}/ /bin/` (Debian's
//! static busybox for that platform, `$LKPKG_TEST_BUSYBOX_ARM64` for arm64, and a file unique to
//! the package and the sample), then its own step. Each sample builds a freshly generated and
//! committed repository of its own, so nothing of BuildKit's cache can serve it; lkpkg gets a
//! fresh `--cache`, buildx fresh output files; the layer cache is off on both sides; every
//! process runs without `SOURCE_DATE_EPOCH`. Rounds are interleaved (the order rotates each
//! round). Generating, committing and checking outputs are not timed. Reported: samples,
//! medians, ratios; the temporary files are removed at the end (BuildKit's own build cache,
//! which `--no-cache` builds still fill, is left to `docker builder prune`).
//!
//! (a) Eight independent packages, each `RUN ["/bin/busybox","sleep","2"]`: `lkpkg -j JOBS`
//!     against the serial buildx loop (`lkpkg -j 1` too, to separate parallelism from
//!     overhead). Goal: ≥ 5×.
//! (b) B_PACKAGES trivial packages (`RUN ["/bin/busybox","true"]`), cold: `lkpkg -j JOBS` and
//!     lkpkg's default `-j` against the serial buildx loop. Goal: ≥ 3×.
//! (c) One package: lkpkg's overhead (`-j 1`) over one bare buildx build of it, for a
//!     `RUN sleep 2` (the goal: < 10 %) and, for reference, a `RUN true`.
//! (d) Four `RUN sleep 2` packages with `arches: [amd64, arm64]` (arm64 under qemu): `lkpkg -j
//!     JOBS` against the serial buildx loop (each package, each platform). Goal: ≥ 2×.
//! (e) One package whose Dockerfile `COPY`s an E_MIB MiB file from `/dev/urandom`: lkpkg's peak
//!     RSS while it sends the context and ingests the export (`/usr/bin/time -v`, else polling
//!     `VmHWM`); buildx's (the CLI's) for reference. Goal: lkpkg < 100 MiB.
//!
//! Run: `nice cargo build --release -p lkpkg -p lkpkg-benches && target/release/builds [KEY=N ...]`
//! with keys (defaults) `a=3 b=1 b-packages=200 c=5 d=3 e=1 e-mib=1024 jobs=8`: the rounds of
//! each comparison (0 skips it), the package count of (b), the file size of (e), lkpkg's `-j`.
//! A quick check: `target/release/builds a=1 b=1 b-packages=10 c=1 d=1 e=1 e-mib=64`.

use std::cell::Cell;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use lkpkg_benches::{git_commit_all, list_secs, lkpkg_bin, load_average, median_of, run, timed};

const DEV_ENV: &str = "/var/lib/lkpkg-dev/env";
const SLEEP: &str = r#"RUN ["/bin/busybox","sleep","2"]"#;
const TRUE: &str = r#"RUN ["/bin/busybox","true"]"#;
const AMD64: &[&str] = &["amd64"];
const BOTH: &[&str] = &["amd64", "arm64"];

/// The command line: rounds per comparison and sizes.
struct Config {
    a: usize,
    b: usize,
    b_packages: usize,
    c: usize,
    d: usize,
    e: usize,
    e_mib: usize,
    jobs: usize,
}

impl Config {
    fn from_args() -> Config {
        let mut config = Config {
            a: 3,
            b: 1,
            b_packages: 200,
            c: 5,
            d: 3,
            e: 1,
            e_mib: 1024,
            jobs: 8,
        };
        for arg in std::env::args().skip(1) {
            let (key, value) = arg
                .split_once('=')
                .unwrap_or_else(|| panic!("`{arg}`: expected KEY=N (see the top of build.rs)"));
            let value: usize = value
                .parse()
                .unwrap_or_else(|_| panic!("`{arg}`: not a number"));
            let slot = match key {
                "a" => &mut config.a,
                "b" => &mut config.b,
                "b-packages" => &mut config.b_packages,
                "c" => &mut config.c,
                "d" => &mut config.d,
                "e" => &mut config.e,
                "e-mib" => &mut config.e_mib,
                "jobs" => &mut config.jobs,
                other => panic!("unknown key `{other}` (see the top of build.rs)"),
            };
            *slot = value;
        }
        assert!(config.jobs > 0 && config.b_packages > 0 && config.e_mib > 0);
        config
    }
}

/// One package of a generated repository.
#[derive(Clone)]
struct Pkg {
    dir: String,
    arches: &'static [&'static str],
    step: &'static str,
    /// A file of this many MiB from `/dev/urandom`, `COPY big /big` before the step.
    big_mib: usize,
}

fn packages(
    prefix: &str,
    count: usize,
    arches: &'static [&'static str],
    step: &'static str,
) -> Vec<Pkg> {
    (0..count)
        .map(|i| Pkg {
            dir: format!("{prefix}/{prefix}{i:03}"),
            arches,
            step,
            big_mib: 0,
        })
        .collect()
}

/// What every sample shares: the binary, the scratch directory, the busybox per platform.
struct Bench {
    bin: PathBuf,
    scratch: tempfile::TempDir,
    busybox_arm64: PathBuf,
    samples: Cell<usize>,
}

impl Bench {
    fn busybox(&self, arch: &str) -> &Path {
        match arch {
            "amd64" => Path::new("/bin/busybox"),
            "arm64" => &self.busybox_arm64,
            other => panic!("no busybox for {other}"),
        }
    }

    /// A fresh committed repository of `pkgs`, its content unique to this sample.
    fn generate(&self, pkgs: &[Pkg]) -> tempfile::TempDir {
        let sample = self.samples.get();
        self.samples.set(sample + 1);
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_nanos();
        let repo = tempfile::Builder::new()
            .prefix("repo")
            .tempdir_in(self.scratch.path())
            .expect("tempdir");
        for p in pkgs {
            let path = repo.path().join(&p.dir);
            for arch in p.arches {
                let bin = path.join(format!("bin-{arch}"));
                std::fs::create_dir_all(&bin).unwrap();
                let busybox = self.busybox(arch);
                std::fs::copy(busybox, bin.join("busybox"))
                    .unwrap_or_else(|e| panic!("{}: {e}", busybox.display()));
                std::fs::write(
                    bin.join("run-id"),
                    format!("{} {sample} {nanos} {}\n", std::process::id(), p.dir),
                )
                .unwrap();
            }
            let name = p.dir.rsplit('/').next().unwrap();
            let mut yml = format!("image: bench-{name}\norg: lkpkgbench\narches:\n");
            for arch in p.arches {
                yml.push_str(&format!("  - {arch}\n"));
            }
            std::fs::write(path.join("build.yml"), yml).unwrap();
            let mut dockerfile =
                "FROM scratch\nARG TARGETARCH\nCOPY bin-${TARGETARCH}/ /bin/\n".to_owned();
            if p.big_mib > 0 {
                let mut urandom = std::fs::File::open("/dev/urandom")
                    .unwrap()
                    .take((p.big_mib as u64) << 20);
                let mut big = std::fs::File::create(path.join("big")).unwrap();
                std::io::copy(&mut urandom, &mut big).expect("write the big file");
                dockerfile.push_str("COPY big /big\n");
            }
            dockerfile.push_str(p.step);
            dockerfile.push('\n');
            std::fs::write(path.join("Dockerfile"), dockerfile).unwrap();
        }
        git_commit_all(repo.path());
        repo
    }

    fn lkpkg_command(
        &self,
        repo: &Path,
        cache: &Path,
        jobs: Option<usize>,
        pkgs: &[Pkg],
    ) -> Command {
        let mut cmd = Command::new(&self.bin);
        cmd.env_remove("SOURCE_DATE_EPOCH")
            .arg("--cache")
            .arg(cache)
            .args(["-q", "pkg", "build", "--disable-cache"]);
        if let Some(jobs) = jobs {
            cmd.arg("-j").arg(jobs.to_string());
        }
        cmd.args(pkgs.iter().map(|p| &p.dir)).current_dir(repo);
        cmd
    }

    /// Checks (untimed) that lkpkg's cache holds every unit of `pkgs`.
    fn check_cache(&self, cache: &Path, pkgs: &[Pkg]) {
        let ls = run(Command::new(&self.bin)
            .env_remove("SOURCE_DATE_EPOCH")
            .arg("--cache")
            .arg(cache)
            .args(["cache", "ls"]));
        for arch in ["amd64", "arm64"] {
            let want = pkgs.iter().filter(|p| p.arches.contains(&arch)).count();
            let built = ls
                .lines()
                .filter(|l| l.contains(&format!("-{arch} ")))
                .count();
            assert_eq!(built, want, "lkpkg did not build every {arch} unit:\n{ls}");
        }
    }

    /// lkpkg builds a fresh repository of `pkgs` into a fresh cache: the build's wall time.
    fn lkpkg(&self, jobs: Option<usize>, pkgs: &[Pkg]) -> Duration {
        let repo = self.generate(pkgs);
        let cache = tempfile::tempdir_in(self.scratch.path()).unwrap();
        let took = timed(|| {
            run(&mut self.lkpkg_command(repo.path(), cache.path(), jobs, pkgs));
        });
        self.check_cache(cache.path(), pkgs);
        took
    }

    fn buildx_command(&self, dir: &Path, arch: &str, dest: &Path) -> Command {
        let mut cmd = Command::new("docker");
        cmd.env_remove("SOURCE_DATE_EPOCH")
            .args([
                "buildx",
                "build",
                "--builder",
                "default",
                "-q",
                "--provenance=false",
                "--no-cache",
                "--network",
                "none",
                "--platform",
            ])
            .arg(format!("linux/{arch}"))
            .arg("--output")
            .arg(format!("type=oci,dest={}", dest.display()))
            .arg(dir);
        cmd
    }

    /// The linuxkit way: a fresh repository of `pkgs`, each package and platform built with
    /// buildx to an OCI tar, one after another: the wall time of the loop.
    fn serial(&self, pkgs: &[Pkg]) -> Duration {
        let repo = self.generate(pkgs);
        let out = tempfile::tempdir_in(self.scratch.path()).unwrap();
        let mut files = Vec::new();
        let took = timed(|| {
            for (i, p) in pkgs.iter().enumerate() {
                for arch in p.arches {
                    let dest = out.path().join(format!("{i}-{arch}.tar"));
                    run(&mut self.buildx_command(&repo.path().join(&p.dir), arch, &dest));
                    files.push(dest);
                }
            }
        });
        for file in &files {
            let len = std::fs::metadata(file).map_or(0, |m| m.len());
            assert!(
                len > 1024,
                "{}: no OCI archive ({len} bytes)",
                file.display()
            );
        }
        took
    }
}

fn main() {
    let config = Config::from_args();
    let bench = Bench {
        bin: lkpkg_bin(),
        scratch: tempfile::Builder::new()
            .prefix("lkpkg-bench-builds")
            .tempdir()
            .expect("tempdir"),
        busybox_arm64: dev_env("LKPKG_TEST_BUSYBOX_ARM64").into(),
        samples: Cell::new(0),
    };
    let jobs = config.jobs;
    println!("lkpkg: {}", bench.bin.display());
    println!(
        "docker: {}",
        run(Command::new("docker").args(["version", "--format", "{{.Server.Version}}"])).trim()
    );
    println!("load average at start: {}", load_average());

    if config.a > 0 {
        let pkgs = packages("a", 8, AMD64, SLEEP);
        let samples = interleave(
            config.a,
            &[
                Box::new(|| bench.serial(&pkgs)),
                Box::new(|| bench.lkpkg(Some(jobs), &pkgs)),
                Box::new(|| bench.lkpkg(Some(1), &pkgs)),
            ],
        );
        println!();
        println!("(a) 8 independent packages, `RUN sleep 2` each (goal ≥ 5×)");
        table(
            &[
                "buildx, one package at a time (baseline)".to_owned(),
                format!("lkpkg pkg build -j {jobs}"),
                "lkpkg pkg build -j 1".to_owned(),
            ],
            &samples,
        );
        println!("load average: {}", load_average());
    }

    if config.b > 0 {
        let pkgs = packages("b", config.b_packages, AMD64, TRUE);
        let samples = interleave(
            config.b,
            &[
                Box::new(|| bench.serial(&pkgs)),
                Box::new(|| bench.lkpkg(Some(jobs), &pkgs)),
                Box::new(|| bench.lkpkg(None, &pkgs)),
            ],
        );
        println!();
        println!(
            "(b) {} trivial packages (`RUN true`), cold (goal ≥ 3×)",
            config.b_packages
        );
        table(
            &[
                "buildx, one package at a time (baseline)".to_owned(),
                format!("lkpkg pkg build -j {jobs}"),
                format!(
                    "lkpkg pkg build (default -j {})",
                    std::thread::available_parallelism()
                        .map_or(2, |n| n.get())
                        .max(2)
                ),
            ],
            &samples,
        );
        println!("load average: {}", load_average());
    }

    if config.c > 0 {
        println!();
        println!(
            "(c) one package: lkpkg over one bare buildx build (goal < 10 % for `RUN sleep 2`)"
        );
        println!(
            "| Dockerfile step | buildx (s) | lkpkg -j 1 (s) | median buildx | median lkpkg | lkpkg over buildx |"
        );
        println!("|---|---|---|---:|---:|---:|");
        for (what, step) in [("`RUN sleep 2`", SLEEP), ("`RUN true`", TRUE)] {
            let pkgs = packages("c", 1, AMD64, step);
            let samples = interleave(
                config.c,
                &[
                    Box::new(|| bench.serial(&pkgs)),
                    Box::new(|| bench.lkpkg(Some(1), &pkgs)),
                ],
            );
            let [bare, ours] = [0, 1].map(|k| median_of(&samples[k]).as_secs_f64());
            println!(
                "| {what} | {} | {} | {bare:.3} s | {ours:.3} s | {:+.0} ms ({:+.1} %) |",
                list_secs(&samples[0]),
                list_secs(&samples[1]),
                (ours - bare) * 1e3,
                (ours / bare - 1.0) * 100.0,
            );
        }
        println!("load average: {}", load_average());
    }

    if config.d > 0 {
        let pkgs = packages("d", 4, BOTH, SLEEP);
        let samples = interleave(
            config.d,
            &[
                Box::new(|| bench.serial(&pkgs)),
                Box::new(|| bench.lkpkg(Some(jobs), &pkgs)),
            ],
        );
        println!();
        println!("(d) 4 packages × amd64 + arm64 (qemu), `RUN sleep 2` each (goal ≥ 2×)");
        table(
            &[
                "buildx, one package and platform at a time (baseline)".to_owned(),
                format!("lkpkg pkg build -j {jobs}"),
            ],
            &samples,
        );
        println!("load average: {}", load_average());
    }

    if config.e > 0 {
        let mut pkgs = packages("e", 1, AMD64, TRUE);
        pkgs[0].big_mib = config.e_mib;
        println!();
        println!(
            "(e) one package `COPY`ing a {} MiB file of random data: peak RSS (goal lkpkg < 100 MiB)",
            config.e_mib
        );
        println!("| variant | round | wall time | peak RSS |");
        println!("|---|---:|---:|---:|");
        let mut peaks = Vec::new();
        for round in 0..config.e {
            // lkpkg first, then buildx, alternating each round.
            for k in 0..2 {
                let v = (round + k) % 2;
                let repo = bench.generate(&pkgs);
                let (name, took, kib) = if v == 0 {
                    let cache = tempfile::tempdir_in(bench.scratch.path()).unwrap();
                    let cmd = bench.lkpkg_command(repo.path(), cache.path(), Some(1), &pkgs);
                    let (took, kib) = peak_rss(cmd);
                    bench.check_cache(cache.path(), &pkgs);
                    peaks.push(kib);
                    ("lkpkg pkg build -j 1", took, kib)
                } else {
                    let out = tempfile::tempdir_in(bench.scratch.path()).unwrap();
                    let dest = out.path().join("out.tar");
                    let cmd = bench.buildx_command(&repo.path().join(&pkgs[0].dir), "amd64", &dest);
                    let (took, kib) = peak_rss(cmd);
                    let len = std::fs::metadata(&dest).map_or(0, |m| m.len());
                    assert!(
                        len > (config.e_mib as u64) << 19,
                        "buildx wrote {len} bytes"
                    );
                    ("docker buildx build (the CLI; reference)", took, kib)
                };
                println!(
                    "| {name} | {} | {:.2} s | {:.1} MiB |",
                    round + 1,
                    took.as_secs_f64(),
                    kib as f64 / 1024.0
                );
            }
        }
        let max = peaks.iter().max().copied().unwrap_or(0);
        println!(
            "lkpkg's peak RSS, the highest of {} run(s): {:.1} MiB",
            peaks.len(),
            max as f64 / 1024.0
        );
        println!("load average: {}", load_average());
    }
    println!();
    println!("load average at end: {}", load_average());
}

/// A dev-env variable: from the environment, else from `/var/lib/lkpkg-dev/env`.
fn dev_env(key: &str) -> String {
    if let Some(value) = std::env::var(key).ok().filter(|v| !v.is_empty()) {
        return value;
    }
    let file = std::fs::read_to_string(DEV_ENV).unwrap_or_default();
    file.lines()
        .filter_map(|l| {
            let l = l.trim();
            l.strip_prefix("export ").unwrap_or(l).split_once('=')
        })
        .find(|(k, _)| *k == key)
        .map(|(_, v)| v.trim_matches('"').trim_matches('\'').to_owned())
        .filter(|v| !v.is_empty())
        .unwrap_or_else(|| panic!("{key} is not set and not in {DEV_ENV}: run scripts/dev-env.sh"))
}

type Variant<'a> = Box<dyn Fn() -> Duration + 'a>;

/// Runs every variant `rounds` times, rotating the order each round; samples per variant.
fn interleave(rounds: usize, variants: &[Variant<'_>]) -> Vec<Vec<Duration>> {
    let mut samples = vec![Vec::new(); variants.len()];
    for round in 0..rounds {
        for k in 0..variants.len() {
            let v = (round + k) % variants.len();
            samples[v].push(variants[v]());
        }
    }
    samples
}

/// Samples, medians and the speed-up over the first variant (the baseline).
fn table(names: &[String], samples: &[Vec<Duration>]) {
    let base = median_of(&samples[0]).as_secs_f64();
    println!("| variant | samples (s) | median | speed-up over baseline |");
    println!("|---|---|---:|---:|");
    for (name, times) in names.iter().zip(samples) {
        let m = median_of(times).as_secs_f64();
        println!(
            "| {name} | {} | {m:.2} s | {:.2}× |",
            list_secs(times),
            base / m
        );
    }
}

/// Runs `cmd` (which must succeed): its wall time and peak resident set size in KiB, from
/// `/usr/bin/time -v`, else from polling the process's `VmHWM`.
fn peak_rss(mut cmd: Command) -> (Duration, u64) {
    if Path::new("/usr/bin/time").exists() {
        let report = lkpkg_benches::RssReport::new();
        let took = timed(|| {
            run(&mut report.wrap(&cmd));
        });
        return (took, report.kib());
    }
    let start = Instant::now();
    let mut child = cmd
        .stdout(Stdio::null())
        .spawn()
        .unwrap_or_else(|e| panic!("{cmd:?}: {e}"));
    let status_file = format!("/proc/{}/status", child.id());
    let mut kib = 0;
    let status = loop {
        if let Some(v) = std::fs::read_to_string(&status_file).ok().and_then(|text| {
            text.lines()
                .find_map(|l| l.strip_prefix("VmHWM:"))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        }) {
            kib = kib.max(v);
        }
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    assert!(status.success(), "{cmd:?}: {status}");
    (start.elapsed(), kib)
}
