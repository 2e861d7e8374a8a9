//! Build benchmarks (issue: real builds), side by side in one run on the same Docker engine.
//!
//! A generated git repository holds eight independent packages, each `FROM scratch` with Debian's
//! static busybox copied in and a `RUN ["/bin/busybox","sleep","2"]`, plus one trivial package
//! (`RUN ["/bin/busybox","true"]`). Every build runs without Docker's layer cache
//! (`--disable-cache` / `--no-cache`) and lkpkg gets a fresh `--cache` each run, so each run
//! really builds everything. Rounds are interleaved (the order rotates each round).
//!
//! (a) Eight packages: `lkpkg pkg build -j 4` against building them one after another as
//!     linuxkit does: `DOCKER_BUILDKIT=0 docker build --network none` then `docker save > file`,
//!     per package, serially. `lkpkg -j 1` is shown too, to separate parallelism from overhead.
//!     Goal (issue): lkpkg ≥ 3× faster wall time.
//! (b) Per-package overhead: `lkpkg pkg build` of one package (context tar, build, save, ingest
//!     into the cache) against a bare `docker build --network none` of the same Dockerfile (and,
//!     for reference, `docker build` + `docker save > file`). Goal (issue): under 15 %.
//!
//! Reported: samples, medians, ratios. Every image the runs built (labelled with this run's id)
//! and the temporary files are removed at the end.
//!
//! Run: `cargo build --release -p lkpkg -p lkpkg-benches && target/release/builds [RUNS_A] [RUNS_B] [JOBS]`
//! (defaults: 3 runs for (a), 5 for (b), `-j 4`).

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use lkpkg_benches::{
    LabelledImages, docker, git_commit_all, list_secs, lkpkg_bin, load_average, median_of, run,
    timed,
};

const PACKAGES: usize = 8;

fn main() {
    let mut args = std::env::args()
        .skip(1)
        .map(|a| a.parse::<usize>().expect("a number"));
    let runs_a = args.next().unwrap_or(3);
    let runs_b = args.next().unwrap_or(5);
    let jobs = args.next().unwrap_or(4);
    let bin = lkpkg_bin();
    let id = std::process::id();
    let label = format!("lkpkg.bench=build-{id}");
    let _images = LabelledImages(label.clone());
    let repo = tempfile::Builder::new()
        .prefix("lkpkg-bench-build")
        .tempdir()
        .expect("tempdir");
    let scratch = tempfile::tempdir().expect("tempdir");
    let arch = match std::env::consts::ARCH {
        "x86_64" => "amd64",
        "aarch64" => "arm64",
        other => other,
    };
    let sleep = r#"RUN ["/bin/busybox","sleep","2"]"#;
    let trivial = r#"RUN ["/bin/busybox","true"]"#;
    let packages: Vec<String> = (0..PACKAGES).map(|i| format!("pkg/p{i}")).collect();
    for dir in &packages {
        write_package(repo.path(), dir, arch, &label, sleep);
    }
    write_package(repo.path(), "solo/trivial", arch, &label, trivial);
    git_commit_all(repo.path());

    println!("lkpkg: {}", bin.display());
    println!("load average at start: {}", load_average());

    // lkpkg: a fresh cache, no layer cache; checks (untimed) that every package was ingested.
    let lkpkg = |jobs: usize, dirs: &[String]| {
        let cache = tempfile::tempdir_in(scratch.path()).unwrap();
        let took = timed(|| {
            run(Command::new(&bin)
                .arg("--cache")
                .arg(cache.path())
                .args(["-q", "pkg", "build", "--disable-cache", "-j"])
                .arg(jobs.to_string())
                .args(dirs)
                .current_dir(repo.path()));
        });
        let ls = run(Command::new(&bin)
            .arg("--cache")
            .arg(cache.path())
            .args(["cache", "ls"]));
        let built = ls
            .lines()
            .filter(|l| l.contains(&format!("-{arch} ")))
            .count();
        assert_eq!(
            built,
            dirs.len(),
            "lkpkg did not build every package:\n{ls}"
        );
        took
    };
    // The linuxkit way: `docker build` then `docker save > file`, one package after another.
    let serial = |dirs: &[String], save: bool| {
        let took = timed(|| {
            for (i, dir) in dirs.iter().enumerate() {
                let tag = format!("lkpkgbench/bench-{i}:serial");
                run(docker()
                    .args(["build", "-q", "--network", "none", "--no-cache", "-t", &tag])
                    .arg(repo.path().join(dir)));
                if save {
                    let file =
                        std::fs::File::create(scratch.path().join(format!("{i}.tar"))).unwrap();
                    let status = docker()
                        .args(["save", &tag])
                        .stdout(file)
                        .stderr(Stdio::inherit())
                        .status()
                        .expect("docker save");
                    assert!(status.success(), "docker save {tag} failed");
                }
            }
        });
        for i in 0..dirs.len() {
            let _ = std::fs::remove_file(scratch.path().join(format!("{i}.tar")));
        }
        took
    };

    // (a) eight packages.
    let names_a = [
        format!("lkpkg pkg build -j {jobs}"),
        "docker build + docker save, serially (baseline)".to_owned(),
        "lkpkg pkg build -j 1".to_owned(),
    ];
    let variants_a: [Box<dyn Fn() -> Duration + '_>; 3] = [
        Box::new(|| lkpkg(jobs, &packages)),
        Box::new(|| serial(&packages, true)),
        Box::new(|| lkpkg(1, &packages)),
    ];
    let samples_a = interleave(runs_a, &variants_a);
    let base = median_of(&samples_a[1]).as_secs_f64();
    println!();
    println!("(a) {PACKAGES} independent packages, `RUN sleep 2` each");
    println!("| variant | samples (s) | median | baseline / variant |");
    println!("|---|---|---:|---:|");
    for (name, times) in names_a.iter().zip(&samples_a) {
        let m = median_of(times).as_secs_f64();
        println!(
            "| {name} | {} | {m:.2} s | {:.2}× |",
            list_secs(times),
            base / m
        );
    }
    println!("load average after (a): {}", load_average());

    // (b) one package: lkpkg against a bare docker build of the same Dockerfile.
    println!();
    println!("(b) one package, overhead of lkpkg over a bare `docker build`");
    println!(
        "| Dockerfile | docker build (s) | docker build + save (s) | lkpkg pkg build (s) | \
         median docker build | median build + save | median lkpkg | lkpkg over docker build |"
    );
    println!("|---|---|---|---|---:|---:|---:|---:|");
    for (what, dir) in [
        ("`RUN sleep 2`", packages[0].clone()),
        ("`RUN true`", "solo/trivial".to_owned()),
    ] {
        let one = [dir];
        let variants_b: [Box<dyn Fn() -> Duration + '_>; 3] = [
            Box::new(|| serial(&one, false)),
            Box::new(|| serial(&one, true)),
            Box::new(|| lkpkg(1, &one)),
        ];
        let samples_b = interleave(runs_b, &variants_b);
        let [bare, saved, ours] = [0, 1, 2].map(|k| median_of(&samples_b[k]).as_secs_f64());
        println!(
            "| {what} | {} | {} | {} | {bare:.3} s | {saved:.3} s | {ours:.3} s | \
             {:+.0} ms ({:+.1} %) |",
            list_secs(&samples_b[0]),
            list_secs(&samples_b[1]),
            list_secs(&samples_b[2]),
            (ours - bare) * 1e3,
            (ours / bare - 1.0) * 100.0,
        );
    }
    println!();
    println!("load average at end: {}", load_average());
}

/// Runs every variant `runs` times, rotating the order each round; samples per variant.
fn interleave(runs: usize, variants: &[Box<dyn Fn() -> Duration + '_>]) -> Vec<Vec<Duration>> {
    let mut samples = vec![Vec::new(); variants.len()];
    for round in 0..runs {
        for k in 0..variants.len() {
            let v = (round + k) % variants.len();
            samples[v].push(variants[v]());
        }
    }
    samples
}

/// One package `FROM scratch` with the host's static busybox, labelled for clean-up.
fn write_package(repo: &Path, dir: &str, arch: &str, label: &str, step: &str) {
    let path = repo.join(dir);
    std::fs::create_dir_all(&path).unwrap();
    std::fs::copy("/bin/busybox", path.join("busybox")).expect("/bin/busybox (busybox-static)");
    let image = dir.rsplit('/').next().unwrap();
    std::fs::write(
        path.join("build.yml"),
        format!("image: bench-{image}\norg: lkpkgbench\narches:\n  - {arch}\n"),
    )
    .unwrap();
    std::fs::write(
        path.join("Dockerfile"),
        format!("FROM scratch\nLABEL {label}\nCOPY busybox /bin/busybox\n{step}\n"),
    )
    .unwrap();
}
