//! Resources stay bounded with many units built through the real engine (issue #11): open
//! files, threads and memory do not grow with the number of packages. The plan of thousands
//! is `graph::three_thousand_packages_are_planned_within_64_open_files`; the scheduler's tasks
//! are `schedule::tests::bounds`; the long run of 3,000 builds is in `docs/reliability.md`.

use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use crate::support::{Repo, json_lines, ok, run};

/// How many packages the suite builds; `LKPKG_MANY_UNITS` makes the long run.
fn units() -> usize {
    std::env::var("LKPKG_MANY_UNITS")
        .ok()
        .and_then(|n| n.parse().ok())
        .unwrap_or(300)
}

/// The highest open-file and thread counts of a running process, sampled from `/proc`.
#[derive(Debug, Default, Clone, Copy)]
struct Peaks {
    files: usize,
    threads: usize,
    rss_kib: u64,
}

fn sample(pid: u32, peaks: &mut Peaks) {
    if let Ok(entries) = std::fs::read_dir(format!("/proc/{pid}/fd")) {
        peaks.files = peaks.files.max(entries.count());
    }
    if let Ok(status) = std::fs::read_to_string(format!("/proc/{pid}/status")) {
        for line in status.lines() {
            let value = |prefix: &str| {
                line.strip_prefix(prefix)
                    .and_then(|v| v.split_whitespace().next())
                    .and_then(|v| v.parse::<u64>().ok())
            };
            if let Some(threads) = value("Threads:") {
                peaks.threads = peaks.threads.max(threads as usize);
            }
            if let Some(rss) = value("VmRSS:") {
                peaks.rss_kib = peaks.rss_kib.max(rss);
            }
        }
    }
}

/// Hundreds of independent packages (thousands in the long run) built at `-j 8` under
/// `prlimit --nofile=64`: every unit builds, at most a few dozen threads are alive, memory
/// stays flat; the cache verifies clean and the next build finds every unit fresh.
#[test]
fn hundreds_of_units_build_within_64_open_files_and_bounded_threads() {
    let n = units();
    let repo = Repo::new();
    let org = format!("lkpkgmany{}", std::process::id());
    for i in 0..n {
        repo.package(
            &format!("pkg/p{i:04}"),
            &format!("p{i:04}"),
            &format!("org: {org}\narches: [amd64]\n"),
        );
    }
    repo.commit_all("many packages");
    let cache = tempfile::tempdir().unwrap();
    let docker_config = tempfile::tempdir().unwrap();
    let lkpkg = |limited: bool| {
        let mut cmd = if limited {
            let mut cmd = Command::new("prlimit");
            cmd.arg("--nofile=64")
                .arg("--")
                .arg(env!("CARGO_BIN_EXE_lkpkg"));
            cmd
        } else {
            Command::new(env!("CARGO_BIN_EXE_lkpkg"))
        };
        cmd.current_dir(repo.path())
            .env("DOCKER_CONFIG", docker_config.path())
            .env_remove("DOCKER_HOST")
            .env_remove("DOCKER_CONTEXT")
            .arg("--cache")
            .arg(cache.path());
        cmd
    };
    // prlimit execs lkpkg: the child's pid is lkpkg's.
    let child = lkpkg(true)
        .args(["--message-format", "json", "pkg", "build", "-j", "8"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let pid = child.id();
    let done = Arc::new(AtomicBool::new(false));
    let peaks = Arc::new(Mutex::new(Peaks::default()));
    let sampler = {
        let (done, peaks) = (done.clone(), peaks.clone());
        std::thread::spawn(move || {
            while !done.load(Ordering::SeqCst) {
                sample(pid, &mut peaks.lock().unwrap());
                std::thread::sleep(Duration::from_millis(20));
            }
        })
    };
    let started = std::time::Instant::now();
    let output = child.wait_with_output().unwrap();
    done.store(true, Ordering::SeqCst);
    sampler.join().unwrap();
    let elapsed = started.elapsed();
    let peaks = *peaks.lock().unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    let tail: String = stderr.lines().rev().take(20).collect::<Vec<_>>().join("\n");
    assert!(output.status.success(), "{tail}");
    let events = json_lines("build-event", &stdout);
    let finished = events.iter().filter(|e| e["type"] == "finished").count();
    assert_eq!(finished, n, "{tail}");
    eprintln!(
        "{n} units in {:.1} s: at most {} open files, {} threads, {} MiB resident",
        elapsed.as_secs_f64(),
        peaks.files,
        peaks.threads,
        peaks.rss_kib / 1024
    );
    // Under 64 by the limit itself (an EMFILE would have failed a unit); what was seen says
    // how far from it.
    assert!(peaks.files > 0 && peaks.files <= 64, "{peaks:?}");
    // The runtime's workers, the blocking pool's threads for -j 8 groups: not one per unit.
    assert!(peaks.threads <= 48, "{peaks:?}");
    assert!(peaks.rss_kib < 256 * 1024, "{peaks:?}");

    // Each package's per-arch name and its index.
    let (code, _, verified) = run(lkpkg(false).args(["cache", "verify"]));
    assert_eq!(code, 0, "{verified}");
    assert!(
        verified.contains(&format!("cache ok: {} blob(s), {} name(s)", 4 * n, 2 * n)),
        "{verified}"
    );
    let again = ok(lkpkg(true).args(["--message-format", "json", "pkg", "build"]));
    let fresh = json_lines("build-event", &again)
        .iter()
        .filter(|e| e["type"] == "fresh")
        .count();
    assert_eq!(fresh, n);
}
