//! show-tag and graph benchmark (issue: foundation).
//!
//! For generated repositories of 1,000 and 10,000 packages, side by side in one run:
//! - `lkpkg pkg show-tag` of every package (one process, one repository open), against
//! - the linuxkit way: per package, the git subprocesses linuxkit runs to decide a tag
//!   (`ls-tree`, `diff --quiet`, `ls-files --others`), as a shell loop;
//! - and `lkpkg graph` (load every package, resolve `@lkt:` arguments, read Dockerfiles, build
//!   the DAG, check for cycles).
//!
//! Run: `cargo build --release -p lkpkg -p lkpkg-benches && target/release/tags [SIZES…]`.

use std::process::Command;

use lkpkg_benches::{generate_repository, lkpkg_bin, median, run};

/// The linuxkit way, per package: what `linuxkit pkg show-tag` asks git (reference §3).
const LINUXKIT_WAY: &str = r#"for d in pkg/*/; do d=${d%/}
  git -C "$d" rev-parse --is-inside-work-tree >/dev/null
  git -C "$d" ls-tree --full-tree HEAD -- "$PWD/$d" >/dev/null
  git -C "$d" diff --no-ext-diff --exit-code --quiet HEAD -- "$PWD/$d"
  git -C "$d" ls-files --exclude-standard --others --error-unmatch -- "$PWD/$d" >/dev/null 2>&1 || true
done"#;

fn main() {
    let sizes: Vec<usize> = std::env::args()
        .skip(1)
        .map(|a| a.parse().expect("a size"))
        .collect();
    let sizes = if sizes.is_empty() {
        vec![1_000, 10_000]
    } else {
        sizes
    };
    let bin = lkpkg_bin();
    println!(
        "| packages | lkpkg show-tag (median) | linuxkit way (git per package) | ratio | lkpkg graph (median) |"
    );
    println!("|---:|---:|---:|---:|---:|");
    for size in sizes {
        let dir = tempfile::tempdir().expect("tempdir");
        generate_repository(dir.path(), size);
        let show_tag = || {
            let out = run(Command::new(&bin)
                .args(["pkg", "show-tag"])
                .current_dir(dir.path()));
            assert_eq!(out.lines().count(), size);
        };
        let graph = || {
            run(Command::new(&bin)
                .args(["graph", "--format", "json"])
                .current_dir(dir.path()));
        };
        let lkpkg = median(5, show_tag);
        let graph_time = median(5, graph);
        // The baseline takes long at 10,000 packages: one run at that size, three below.
        let runs = if size > 2_000 { 1 } else { 3 };
        let linuxkit = median(runs, || {
            run(Command::new("bash")
                .arg("-c")
                .arg(LINUXKIT_WAY)
                .current_dir(dir.path()));
        });
        println!(
            "| {size} | {:.1} ms | {:.1} ms | {:.0}× | {:.1} ms |",
            lkpkg.as_secs_f64() * 1e3,
            linuxkit.as_secs_f64() * 1e3,
            linuxkit.as_secs_f64() / lkpkg.as_secs_f64(),
            graph_time.as_secs_f64() * 1e3,
        );
    }
}
