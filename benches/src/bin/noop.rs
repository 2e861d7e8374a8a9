//! No-op build and `--dry-run` plan benchmark (issue: incremental builds).
//!
//! For generated repositories of 100, 1,000 and 10,000 packages (one base in 50, every other
//! package `FROM` a base through `@lkt:pkg:`, one in 10 with an extra source), where every
//! unit is already built, side by side in one run:
//! - `lkpkg pkg build` (every unit fresh: git index, build keys, redb records; no engine), and
//!   `lkpkg pkg build --dry-run` (the plan);
//! - the linuxkit way of deciding: per package, the git subprocesses of its tag (`rev-parse`,
//!   `ls-tree`, `diff --quiet`, `ls-files --others`) plus parsing the cache's `index.json` to look
//!   the image up (what `ImageInCache` does), serially.
//!
//! Setting up "every unit built" through Docker would take hours at 10,000 packages, so the
//! cache is seeded through the engine's public API with the state a build leaves: one small
//! image, every unit's per-arch name pointing at it, and a build record for every unit's
//! current build key (computed by `lkpkg_engine::ops::explain`, the code `pkg build` uses).
//!
//! Run: `cargo build --release -p lkpkg -p lkpkg-benches && target/release/noop [SIZES…]`;
//! `target/release/noop --setup DIR SIZE` only prepares `DIR/repo` and `DIR/cache`, for
//! profiling the no-op path by hand.

use std::io::Write;
use std::path::Path;
use std::process::Command;
use std::sync::Arc;
use std::time::Instant;

use lkpkg_benches::{generate_repository, lkpkg_bin, median, run};
use lkpkg_cache_format::build_record::BuildRecord;
use lkpkg_engine::ops::cache::Store;
use lkpkg_engine::ops::{self, Packages, Plan, PlanConfig, Selection, TagOptions};

/// The linuxkit way, per package: the git processes of its tag, then an index.json parse.
const LINUXKIT_GIT: &str = r#"for d in pkg/*/; do d=${d%/}
  git -C "$d" rev-parse --is-inside-work-tree >/dev/null
  git -C "$d" ls-tree --full-tree HEAD -- "$PWD/$d" >/dev/null
  git -C "$d" diff --no-ext-diff --exit-code --quiet HEAD -- "$PWD/$d"
  git -C "$d" ls-files --exclude-standard --others --error-unmatch -- "$PWD/$d" >/dev/null 2>&1 || true
done"#;

/// A `docker save` archive of a one-layer image, made in memory.
fn tiny_image() -> Vec<u8> {
    let layer = {
        let mut b = tar::Builder::new(Vec::new());
        let mut h = tar::Header::new_ustar();
        h.set_size(5);
        h.set_mode(0o644);
        h.set_cksum();
        b.append_data(&mut h, "hello", &b"hello"[..]).unwrap();
        b.into_inner().unwrap()
    };
    let diff_id = hex_sha256(&layer);
    let config = format!(
        r#"{{"architecture":"amd64","os":"linux","config":{{}},"rootfs":{{"type":"layers","diff_ids":["sha256:{diff_id}"]}}}}"#
    );
    let config_name = format!("{}.json", hex_sha256(config.as_bytes()));
    let manifest = format!(
        r#"[{{"Config":"{config_name}","RepoTags":["bench/seed:x-amd64"],"Layers":["l/layer.tar"]}}]"#
    );
    let mut b = tar::Builder::new(Vec::new());
    for (name, bytes) in [
        (config_name.as_str(), config.as_bytes()),
        ("l/layer.tar", &layer[..]),
        ("manifest.json", manifest.as_bytes()),
    ] {
        let mut h = tar::Header::new_ustar();
        h.set_size(bytes.len() as u64);
        h.set_mode(0o644);
        h.set_cksum();
        b.append_data(&mut h, name, bytes).unwrap();
    }
    b.into_inner().unwrap()
}

fn hex_sha256(bytes: &[u8]) -> String {
    use sha2::Digest;
    hex::encode(sha2::Sha256::digest(bytes))
}

/// Leaves `cache` as a build of every unit of `repo` would.
fn seed(repo: &Path, cache: &Path) {
    let store = Arc::new(Store::open(cache).unwrap());
    let packages = Packages::find(&Selection {
        cwd: repo.to_owned(),
        dirs: Vec::new(),
        build_yml: "build.yml".into(),
        tags: TagOptions::default(),
        exclude: Vec::new(),
    })
    .unwrap();
    let plan = Plan::new(packages, &PlanConfig::default()).unwrap();
    // One image; every unit's per-arch name, and every package's index name, point at it.
    let manifest = store
        .import(&tiny_image()[..])
        .unwrap()
        .remove(0)
        .descriptor;
    let reports = ops::explain(&plan, store.clone()).unwrap();
    let mut names: Vec<(String, _)> = reports
        .iter()
        .map(|r| (r.cache_name.clone(), manifest.clone()))
        .collect();
    for p in &plan.graph().packages {
        names.push((p.package.tag.full_tag(), manifest.clone()));
    }
    store.ingest().publish(names).unwrap();
    // Records: the keys `pkg build` computes, now that dependencies have digests.
    let reports = ops::explain(&plan, store.clone()).unwrap();
    for report in reports {
        let key = report.key;
        let record = BuildRecord {
            unit: report.id.clone(),
            manifest: manifest.clone(),
            inputs: report.current.clone(),
            files: Default::default(),
            builder: "seeded".into(),
            started_unix_ms: 0,
            duration_ms: 0,
        };
        store.put_build_record(&key, &record).unwrap();
    }
}

fn main() {
    // `noop --setup DIR SIZE`: only generate and seed a repository (`DIR/repo`, `DIR/cache`),
    // to profile the no-op path by hand.
    let argv: Vec<String> = std::env::args().collect();
    if argv.get(1).map(String::as_str) == Some("--setup") {
        let dir = Path::new(&argv[2]);
        let size: usize = argv[3].parse().expect("a size");
        std::fs::create_dir_all(dir.join("repo")).unwrap();
        generate_repository(&dir.join("repo"), size);
        seed(&dir.join("repo"), &dir.join("cache"));
        return;
    }
    let sizes: Vec<usize> = std::env::args()
        .skip(1)
        .map(|a| a.parse().expect("a size"))
        .collect();
    let sizes = if sizes.is_empty() {
        vec![100, 1_000, 10_000]
    } else {
        sizes
    };
    let bin = lkpkg_bin();
    println!(
        "| packages | lkpkg no-op build (median) | lkpkg --dry-run (median) | linuxkit way (git + index.json per package) | ratio (no-op) |"
    );
    println!("|---:|---:|---:|---:|---:|");
    for size in sizes {
        let dir = tempfile::tempdir().expect("tempdir");
        let repo = dir.path().join("repo");
        let cache = dir.path().join("cache");
        std::fs::create_dir_all(&repo).unwrap();
        generate_repository(&repo, size);
        let setup = Instant::now();
        seed(&repo, &cache);
        eprintln!(
            "seeded {size} packages in {:.1}s",
            setup.elapsed().as_secs_f64()
        );
        let lkpkg = |extra: &[&str]| {
            let out = Command::new(&bin)
                .env("DOCKER_HOST", "tcp://127.0.0.1:1") // proves no engine is contacted
                .args(["--cache", cache.to_str().unwrap(), "pkg", "build"])
                .args(extra)
                .current_dir(&repo)
                .output()
                .unwrap();
            let stderr = String::from_utf8_lossy(&out.stderr);
            assert!(
                out.status.success()
                    && (stderr.contains(" 0 built") || stderr.contains(" 0 to build")),
                "{stderr}"
            );
        };
        let noop = median(5, || lkpkg(&[]));
        let dry_run = median(5, || lkpkg(&["--dry-run"]));
        let runs = if size > 2_000 { 1 } else { 3 };
        let index_json = cache.join("index.json");
        let linuxkit = median(runs, || {
            run(Command::new("bash")
                .arg("-c")
                .arg(LINUXKIT_GIT)
                .current_dir(&repo));
            // One index.json parse and lookup per package, as linuxkit's cache lookup does.
            for i in 0..size {
                let text = std::fs::read(&index_json).unwrap();
                let index: serde_json::Value = serde_json::from_slice(&text).unwrap();
                let wanted = format!("p{i:05}");
                let _found = index["manifests"].as_array().unwrap().iter().any(|m| {
                    m["annotations"]["org.opencontainers.image.ref.name"]
                        .as_str()
                        .is_some_and(|n| n.contains(&wanted))
                });
            }
        });
        println!(
            "| {size} | {:.1} ms | {:.1} ms | {:.1} ms | {:.0}× |",
            noop.as_secs_f64() * 1e3,
            dry_run.as_secs_f64() * 1e3,
            linuxkit.as_secs_f64() * 1e3,
            linuxkit.as_secs_f64() / noop.as_secs_f64(),
        );
        std::io::stdout().flush().unwrap();
    }
}
