//! `buildArgs` lines with linuxkit's `@lkt:pkg:` / `@lkt:pkgs:` values, resolved against a
//! small git repository made once (two packages): any line resolves or is an error, never a
//! panic, and every package an argument names lies inside a git work tree (linuxkit's rule:
//! a package's tag is its git tree; lkpkg refuses directories outside every repository).
#![no_main]

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

use libfuzzer_sys::fuzz_target;
use lkpkg_engine::ops::fuzzing::{ArgOrigin, resolve};
use lkpkg_engine::ops::fuzzing::Loader;
use lkpkg_engine::ops::TagOptions;

struct Repo {
    _dir: tempfile::TempDir,
    root: PathBuf,
    loader: Loader,
}

fn repo() -> &'static Repo {
    static REPO: OnceLock<Repo> = OnceLock::new();
    REPO.get_or_init(|| {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().to_owned();
        for (pkg, image) in [("pkg/a", "a"), ("pkg/b", "b")] {
            std::fs::create_dir_all(root.join(pkg)).unwrap();
            std::fs::write(
                root.join(pkg).join("build.yml"),
                format!("image: {image}\norg: fuzz\n"),
            )
            .unwrap();
            std::fs::write(root.join(pkg).join("Dockerfile"), "FROM scratch\n").unwrap();
        }
        let git = |args: &[&str]| {
            let ok = Command::new("git")
                .args(args)
                .current_dir(&root)
                .output()
                .unwrap()
                .status
                .success();
            assert!(ok, "git {args:?}");
        };
        git(&["init", "-q", "-b", "main"]);
        git(&["-c", "user.email=f@example.invalid", "-c", "user.name=f", "add", "-A"]);
        git(&[
            "-c",
            "user.email=f@example.invalid",
            "-c",
            "user.name=f",
            "-c",
            "commit.gpgsign=false",
            "commit",
            "-q",
            "-m",
            "fuzz",
        ]);
        let loader = Loader::new(&root, "build.yml", TagOptions::default()).unwrap();
        Repo {
            _dir: dir,
            root,
            loader,
        }
    })
}

fn in_a_work_tree(dir: &Path) -> bool {
    dir.canonicalize()
        .map(|d| d.ancestors().any(|a| a.join(".git").exists()))
        .unwrap_or(false)
}

fuzz_target!(|data: &[u8]| {
    let Ok(line) = std::str::from_utf8(data) else {
        return;
    };
    let repo = repo();
    let origin = ArgOrigin::BuildYml(repo.root.join("pkg/a/build.yml"));
    if let Ok(args) = resolve(line, &origin, &repo.loader) {
        for arg in args {
            if let Some(dir) = &arg.package {
                assert!(in_a_work_tree(dir), "{line:?} loaded {dir:?}");
            }
        }
    }
});
