//! `lkpkg cache …` end to end, against the real Docker engine and skopeo: images made by
//! `docker build` + `docker save`, imported, listed, verified, read by skopeo, exported and
//! loaded back into Docker; and eight processes sharing one cache. Docker tests fail (never
//! skip) when the engine is unreachable.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicUsize, Ordering};

use super::support::{lkpkg, ok, run};

/// A unique, lowercase image repository for this test process and call.
fn unique_repo(label: &str) -> String {
    static COUNTER: AtomicUsize = AtomicUsize::new(0);
    let n = COUNTER.fetch_add(1, Ordering::SeqCst);
    format!("lkpkg-e2e-{label}-{}-{n}", std::process::id())
}

/// Docker images created by a test, removed when it ends (even on failure).
struct DockerImages(Vec<String>);

impl Drop for DockerImages {
    fn drop(&mut self) {
        for image in &self.0 {
            let _ = Command::new("docker").args(["rmi", "-f", image]).output();
        }
    }
}

fn docker(args: &[&str]) -> String {
    let mut cmd = Command::new("docker");
    cmd.args(args);
    ok(&mut cmd)
}

fn require_docker() {
    let (code, _, stderr) =
        run(Command::new("docker").args(["version", "--format", "{{.Server.Version}}"]));
    assert_eq!(
        code, 0,
        "the Docker engine is unreachable (these tests need it): {stderr}"
    );
}

/// Builds `tag` FROM scratch with busybox and a file `/msg` holding `message`; its command
/// prints the file.
fn build_image(tag: &str, message: &str, images: &mut DockerImages) {
    let ctx = tempfile::tempdir().unwrap();
    std::fs::copy("/bin/busybox", ctx.path().join("busybox"))
        .expect("/bin/busybox (busybox-static)");
    std::fs::write(ctx.path().join("msg"), message).unwrap();
    std::fs::write(
        ctx.path().join("Dockerfile"),
        "FROM scratch\nCOPY msg /msg\nCOPY busybox /bin/busybox\nCMD [\"/bin/busybox\",\"cat\",\"/msg\"]\n",
    )
    .unwrap();
    let mut cmd = Command::new("docker");
    cmd.env("DOCKER_BUILDKIT", "0")
        // No step cache: a cached step shared with an earlier run can vanish under a
        // concurrent `rmi` (the classic builder's "unable to find image" race).
        .args(["build", "-q", "--no-cache", "--network", "none", "-t", tag])
        .arg(ctx.path());
    ok(&mut cmd);
    images.0.push(tag.to_owned());
}

fn cache_cmd(cache: &Path) -> Command {
    let mut cmd = lkpkg(cache.parent().unwrap_or(cache));
    cmd.arg("--cache").arg(cache).arg("cache");
    cmd
}

fn ls_names(cache: &Path) -> Vec<String> {
    let out = ok(cache_cmd(cache).args(["ls", "--json"]));
    crate::support::listed_images(&out)
        .iter()
        .map(|i| i["name"].as_str().unwrap().to_owned())
        .collect()
}

#[test]
fn docker_save_import_round_trips_through_skopeo_and_docker_load() {
    require_docker();
    let mut images = DockerImages(Vec::new());
    let repo = unique_repo("rt");
    let tag = format!("org/{repo}:v1");
    build_image(&tag, "hello from lkpkg\n", &mut images);
    let work = tempfile::tempdir().unwrap();
    let archive = work.path().join("img.tar");
    docker(&["save", "-o", archive.to_str().unwrap(), &tag]);
    let cache = work.path().join("cache");

    let (code, _, stderr) = run(cache_cmd(&cache).arg("import").arg(&archive));
    assert_eq!(code, 0, "{stderr}");
    let full = format!("docker.io/org/{repo}:v1");
    assert_eq!(ls_names(&cache), vec![full.clone()]);
    // linuxkit's columns: header, then `%-80s %s`.
    let text = ok(cache_cmd(&cache).arg("ls"));
    let mut lines = text.lines();
    assert_eq!(
        lines.next().unwrap(),
        format!("{:<80} {}", "image name", "root manifest hash")
    );
    assert!(
        lines
            .next()
            .unwrap()
            .starts_with(&format!("{full:<80} sha256:"))
    );
    ok(cache_cmd(&cache).arg("verify"));

    // skopeo reads the layout lkpkg wrote, by linuxkit's reference annotation.
    let oci = format!("oci:{}:{full}", cache.display());
    let inspect = ok(Command::new("skopeo").args(["inspect", &oci]));
    let inspect: serde_json::Value = serde_json::from_str(&inspect).unwrap();
    assert_eq!(inspect["Architecture"], "amd64");
    // skopeo copies every blob out of it, verified against its digest.
    let copied = work.path().join("skopeo-dir");
    ok(Command::new("skopeo").args(["copy", "-q", &oci, &format!("dir:{}", copied.display())]));
    let manifest: serde_json::Value =
        serde_json::from_slice(&std::fs::read(copied.join("manifest.json")).unwrap()).unwrap();
    for layer in manifest["layers"].as_array().unwrap() {
        let digest = layer["digest"].as_str().unwrap();
        assert!(
            copied.join(&digest["sha256:".len()..]).is_file(),
            "{digest}"
        );
    }

    // The docker export loads into the engine and runs.
    let exported = work.path().join("docker.tar");
    let loaded = format!("org/{repo}:loaded");
    images.0.push(loaded.clone());
    ok(cache_cmd(&cache)
        .args([
            "export",
            &format!("org/{repo}:v1"),
            "--format",
            "docker",
            "--name",
            &loaded,
            "-o",
        ])
        .arg(&exported));
    let load = docker(&["load", "-i", exported.to_str().unwrap()]);
    assert!(load.contains(&loaded), "{load}");
    let out = docker(&["run", "--rm", "--network", "none", &loaded]);
    assert_eq!(out, "hello from lkpkg\n");

    // inspect shows the tree; the filesystem export holds the files.
    let tree = ok(cache_cmd(&cache).args(["inspect", &full]));
    assert!(tree.contains("config") && tree.contains("layer"), "{tree}");
    let fs_tar = work.path().join("fs.tar");
    ok(cache_cmd(&cache)
        .args(["export", &full, "--format", "filesystem", "-o"])
        .arg(&fs_tar));
    let listing = ok(Command::new("tar").arg("tf").arg(&fs_tar));
    assert!(listing.lines().any(|l| l == "msg"), "{listing}");
    assert!(listing.lines().any(|l| l == "bin/busybox"), "{listing}");

    // Removing the name leaves an empty, consistent cache.
    ok(cache_cmd(&cache).args(["rm", &full]));
    assert!(ls_names(&cache).is_empty());
    ok(cache_cmd(&cache).arg("verify"));
    let blobs = std::fs::read_dir(cache.join("blobs/sha256"))
        .unwrap()
        .count();
    assert_eq!(blobs, 0);
}

#[test]
fn bad_input_exits_2() {
    let work = tempfile::tempdir().unwrap();
    let cache = work.path().join("cache");
    let (code, _, stderr) = run(cache_cmd(&cache).args(["inspect", "org/nothing:here"]));
    assert_eq!(code, 2, "{stderr}");
    assert!(stderr.contains("org/nothing:here"), "{stderr}");
    let junk = work.path().join("junk.tar");
    std::fs::write(&junk, b"junk").unwrap();
    let (code, _, _) = run(cache_cmd(&cache).arg("import").arg(&junk));
    assert_eq!(code, 2);
}

/// `clean --published-only` removes exactly the names a registry serves with the same digest
/// (the registry of scripts/dev-env.sh, on loopback).
#[test]
fn clean_published_only_removes_what_the_registry_serves() {
    require_docker();
    let registry = std::env::var("LKPKG_TEST_REGISTRY").unwrap_or_else(|_| "127.0.0.1:5000".into());
    let mut images = DockerImages(Vec::new());
    let published = format!("{registry}/lkpkgtest/{}:v1", unique_repo("pub"));
    let local_only = format!("{registry}/lkpkgtest/{}:v1", unique_repo("unpub"));
    let changed = format!("{registry}/lkpkgtest/{}:v1", unique_repo("changed"));
    for (tag, message) in [
        (&published, "published\n"),
        (&local_only, "local only\n"),
        (&changed, "changed v1\n"),
    ] {
        build_image(tag, &format!("{message}{tag}\n"), &mut images);
    }
    let dir = tempfile::tempdir().unwrap();
    let cache = dir.path().join("cache");
    let archive = dir.path().join("images.tar");
    docker(&[
        "save",
        "-o",
        archive.to_str().unwrap(),
        &published,
        &local_only,
        &changed,
    ]);
    ok(cache_cmd(&cache).arg("import").arg(&archive));
    // Push two of them from the cache, byte for byte; then change one locally.
    for name in [&published, &changed] {
        let (code, _, stderr) = run(Command::new("skopeo").args([
            "copy",
            "--quiet",
            "--dest-tls-verify=false",
            "--preserve-digests",
            &format!("oci:{}:{name}", cache.display()),
            &format!("docker://{name}"),
        ]));
        assert_eq!(code, 0, "skopeo copy to the test registry: {stderr}");
    }
    build_image(&changed, "changed v2\n", &mut images);
    docker(&["save", "-o", archive.to_str().unwrap(), &changed]);
    ok(cache_cmd(&cache).arg("import").arg(&archive));

    let (code, _, stderr) = run(cache_cmd(&cache).args(["clean", "--published-only"]));
    assert_eq!(code, 0, "{stderr}");
    let ls = ok(cache_cmd(&cache).arg("ls"));
    let names: Vec<&str> = ls
        .lines()
        .skip(1)
        .filter_map(|l| l.split_whitespace().next())
        .collect();
    assert!(!names.contains(&published.as_str()), "{ls}\n{stderr}");
    assert!(names.contains(&local_only.as_str()), "{ls}");
    assert!(names.contains(&changed.as_str()), "{ls}");
    assert!(
        stderr.contains("not published") && stderr.contains("another digest"),
        "{stderr}"
    );
    let (code, _, stderr) = run(cache_cmd(&cache).arg("verify"));
    assert_eq!(code, 0, "{stderr}");
}

#[test]
fn eight_processes_share_one_cache() {
    require_docker();
    let mut images = DockerImages(Vec::new());
    let repo = unique_repo("conc");
    let work = tempfile::tempdir().unwrap();
    let seed = work.path().join("seed");
    for letter in ["a", "b", "c"] {
        let tag = format!("org/{repo}:{letter}");
        build_image(&tag, &format!("image {letter}\n"), &mut images);
        let archive = work.path().join(format!("{letter}.tar"));
        docker(&["save", "-o", archive.to_str().unwrap(), &tag]);
        ok(cache_cmd(&seed).arg("import").arg(&archive));
    }
    // Per-worker archives of the same content under distinct names (every blob shared).
    let archive_of =
        |w: usize, letter: &str| -> PathBuf { work.path().join(format!("w{w}-{letter}.tar")) };
    for w in 0..8 {
        for letter in ["a", "b", "c"] {
            ok(cache_cmd(&seed)
                .args(["export", &format!("org/{repo}:{letter}"), "--format", "oci"])
                .args(["--name", &format!("org/{repo}-w{w}:{letter}"), "-o"])
                .arg(archive_of(w, letter)));
        }
    }
    let cache = work.path().join("cache");
    ok(cache_cmd(&cache).arg("ls"));
    let workers: Vec<_> = (0..8)
        .map(|w| {
            let cache = cache.clone();
            let repo = repo.clone();
            let paths: Vec<PathBuf> = ["a", "b", "c"].iter().map(|l| archive_of(w, l)).collect();
            std::thread::spawn(move || {
                let name = |l: &str| format!("docker.io/org/{repo}-w{w}:{l}");
                for _round in 0..3 {
                    for path in &paths {
                        ok(cache_cmd(&cache).arg("import").arg(path));
                    }
                    ok(cache_cmd(&cache).args(["rm", &name("a"), &name("b")]));
                }
                ok(cache_cmd(&cache).arg("import").arg(&paths[0]));
            })
        })
        .collect();
    for worker in workers {
        worker.join().expect("worker");
    }
    let names = ls_names(&cache);
    let mut expected = Vec::new();
    for w in 0..8 {
        expected.push(format!("docker.io/org/{repo}-w{w}:a"));
        expected.push(format!("docker.io/org/{repo}-w{w}:c"));
    }
    expected.sort();
    assert_eq!(names, expected);
    let report = ok(cache_cmd(&cache).args(["verify", "--json"]));
    let report = crate::support::json_output("cache-verify", &report);
    assert_eq!(report["problems"], serde_json::json!([]), "{report}");
    for name in &expected {
        let oci = format!("oci:{}:{name}", cache.display());
        ok(Command::new("skopeo").args(["inspect", "--raw", &oci]));
    }
}

/// A cache with one built package (the examples' base), for output tests.
fn built_example(cache: &Path) -> String {
    let examples = Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples");
    let (code, _, err) = crate::support::run(
        crate::support::lkpkg(&examples)
            .arg("--cache")
            .arg(cache)
            .args(["pkg", "build", "base"]),
    );
    assert_eq!(code, 0, "{err}");
    ok(crate::support::lkpkg(&examples).args(["pkg", "show-tag", "base"]))
        .trim()
        .to_owned()
}

#[test]
fn a_closed_pipe_ends_quietly_and_outfile_may_be_dev_stdout() {
    let cache = tempfile::tempdir().unwrap();
    let tag = built_example(cache.path());
    // stdout and stderr are pipes whose readers are gone before lkpkg writes.
    for args in [
        vec!["cache", "ls"],
        vec!["cache", "export", tag.as_str(), "--outfile", "-"],
    ] {
        let (reader, writer) = std::io::pipe().unwrap();
        drop(reader);
        let (err_reader, err_writer) = std::io::pipe().unwrap();
        drop(err_reader);
        let status = cache_cmd(cache.path())
            .args(&args[1..])
            .stdout(writer)
            .stderr(err_writer)
            .status()
            .unwrap();
        // 141: what a shell reports for `cat` ended by a closed pipe; 101 would be a panic.
        assert_eq!(status.code(), Some(141), "{args:?}");
    }
    // `--outfile /dev/stdout` writes the archive there and succeeds.
    let out = tempfile::tempdir().unwrap();
    let file = std::fs::File::create(out.path().join("via-stdout.tar")).unwrap();
    let status = cache_cmd(cache.path())
        .args(["export", &tag, "--outfile", "/dev/stdout"])
        .stdout(file)
        .status()
        .unwrap();
    assert_eq!(status.code(), Some(0));
    let listing = ok(Command::new("tar")
        .arg("-tf")
        .arg(out.path().join("via-stdout.tar")));
    assert!(listing.contains("index.json"), "{listing}");
    // A file is written whole, beside its final name, then renamed: no leftovers.
    let target = out.path().join("image.tar");
    ok(cache_cmd(cache.path()).args(["export", &tag, "-o", target.to_str().unwrap()]));
    let names: Vec<String> = std::fs::read_dir(out.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert!(
        names.iter().all(|n| !n.starts_with(".lkpkg-export-")),
        "{names:?}"
    );
    assert!(target.is_file());
}

/// What other tools write imports: linuxkit's own `cache export --format docker` and `--format
/// oci` (stored archives, see tests/compat/archives), skopeo's `docker-archive:` and
/// `oci-archive:`; each gives the image's files back.
#[test]
fn archives_of_linuxkit_and_skopeo_import() {
    let archives = Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/compat/archives");
    let name = "docker.io/lkpkgcompat/tiny:c55cf2b119b317c3ca4d3711856c7c14c9581ca1";
    let work = tempfile::tempdir().unwrap();
    let hello = |cache: &Path| {
        let fs = work.path().join("fs.tar");
        ok(cache_cmd(cache)
            .args(["export", name, "--format", "filesystem", "-o"])
            .arg(&fs));
        ok(Command::new("tar").arg("xOf").arg(&fs).arg("hello.txt"))
    };
    let mut made = Vec::new();
    for file in [
        "linuxkit-cache-export-docker.tar",
        "linuxkit-cache-export-oci.tar",
    ] {
        let cache = work.path().join(file);
        let (code, _, stderr) = run(cache_cmd(&cache).arg("import").arg(archives.join(file)));
        assert_eq!(code, 0, "{file}: {stderr}");
        assert_eq!(ls_names(&cache), vec![name.to_owned()], "{file}");
        assert_eq!(hello(&cache), "hello from a tiny image\n", "{file}");
        ok(cache_cmd(&cache).arg("verify"));
        made.push(cache);
    }
    // skopeo's archives, made from the imported image.
    let source = format!("oci:{}:{name}", made[1].display());
    for transport in ["docker-archive", "oci-archive"] {
        let tar = work.path().join(format!("{transport}.tar"));
        ok(Command::new("skopeo").args([
            "copy",
            "-q",
            &source,
            &format!("{transport}:{}:{name}", tar.display()),
        ]));
        let cache = work.path().join(format!("{transport}-cache"));
        let (code, _, stderr) = run(cache_cmd(&cache).arg("import").arg(&tar));
        assert_eq!(code, 0, "{transport}: {stderr}");
        assert_eq!(ls_names(&cache), vec![name.to_owned()], "{transport}");
        assert_eq!(hello(&cache), "hello from a tiny image\n", "{transport}");
    }
}

/// A read-only bind mount of a directory, unmounted when dropped.
struct ReadOnlyMount(PathBuf);

impl ReadOnlyMount {
    fn new(source: &Path, target: &Path) -> ReadOnlyMount {
        std::fs::create_dir_all(target).unwrap();
        ok(Command::new("mount").arg("--bind").arg(source).arg(target));
        let mount = ReadOnlyMount(target.to_owned());
        ok(Command::new("mount")
            .args(["-o", "remount,ro,bind"])
            .arg(target));
        mount
    }
}

impl Drop for ReadOnlyMount {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(&self.0).output();
    }
}

/// Every file under `dir` with its size and modification time.
fn tree_state(dir: &Path) -> Vec<(PathBuf, u64, std::time::SystemTime)> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_owned()];
    while let Some(d) = stack.pop() {
        for entry in std::fs::read_dir(&d).unwrap().flatten() {
            let meta = entry.metadata().unwrap();
            if meta.is_dir() {
                stack.push(entry.path());
            } else {
                out.push((entry.path(), meta.len(), meta.modified().unwrap()));
            }
        }
    }
    out.sort();
    out
}

/// A cache on a read-only mount (a CI runner's prebuilt cache, another user's): everything
/// that only reads works, with the build records (a no-op build is fresh, not "foreign"), and
/// everything that would write fails with one error that says so (exit 3), the cache untouched.
#[test]
fn a_read_only_cache_is_listed_verified_exported_and_built_from_but_never_written() {
    require_docker();
    let repo = super::support::Repo::new();
    let image = unique_repo("ro");
    repo.package("pkg", &image, "org: lkpkgtest\narches: [amd64]\n")
        .busybox_bin("pkg", "ro")
        .write(
            "pkg/Dockerfile",
            "FROM scratch\nCOPY bin/ /bin/\nCOPY build.yml /\n",
        );
    repo.commit_all("ro");
    let work = tempfile::tempdir().unwrap();
    let cache = work.path().join("cache");
    let lk = |cache: &Path| {
        let mut cmd = repo.lkpkg();
        cmd.env_remove("DOCKER_HOST")
            .env_remove("DOCKER_CONTEXT")
            .arg("--cache")
            .arg(cache);
        cmd
    };
    ok(lk(&cache).args(["pkg", "build", "pkg"]));
    let tag = ok(repo.lkpkg().args(["pkg", "show-tag", "pkg"]))
        .trim()
        .to_owned();
    let ro = work.path().join("ro");
    let _mount = ReadOnlyMount::new(&cache, &ro);
    let before = tree_state(&cache);

    let listed = ok(lk(&ro).args(["cache", "ls", "--json"]));
    assert!(listed.contains(&tag), "{listed}");
    ok(lk(&ro).args(["cache", "inspect", &tag]));
    let inspect = crate::support::json_output(
        "cache-inspect",
        &ok(lk(&ro).args(["cache", "inspect", "--json", &tag])),
    );
    assert!(
        inspect["root"]["manifests"][0]["layers"].is_array(),
        "{inspect:#}"
    );
    ok(lk(&ro).args(["cache", "du"]));
    let du = crate::support::json_output("cache-du", &ok(lk(&ro).args(["cache", "du", "--json"])));
    assert!(du["blob_bytes"].as_u64().unwrap() > 0, "{du}");
    let report = ok(lk(&ro).args(["cache", "verify", "--json"]));
    let report = crate::support::json_output("cache-verify", &report);
    assert_eq!(report["problems"], serde_json::json!([]), "{report}");
    let exported = work.path().join("out.tar");
    ok(lk(&ro)
        .args(["cache", "export", &tag, "--format", "oci", "-o"])
        .arg(&exported));
    assert!(std::fs::metadata(&exported).unwrap().len() > 0);
    // The build records came along: the unit is fresh because it was built, not foreign.
    let out = ok(lk(&ro).args(["--message-format", "json", "pkg", "build", "pkg"]));
    let fresh: Vec<serde_json::Value> = out
        .lines()
        .map(|l| crate::support::json_output("build-event", l))
        .filter(|e: &serde_json::Value| e["type"] == "fresh")
        .collect();
    assert_eq!(fresh.len(), 1, "{out}");
    assert_eq!(fresh[0]["reason"], "fresh", "{out}");

    // Writes: one clear error each, exit 3.
    repo.write("pkg/extra", "changed\n");
    repo.commit_all("change");
    let archive = work.path().join("again.tar");
    std::fs::copy(&exported, &archive).unwrap();
    for args in [
        vec!["pkg", "build", "pkg"],
        vec!["cache", "import", archive.to_str().unwrap()],
        vec!["cache", "rm", &tag],
        vec!["cache", "gc"],
        vec!["cache", "verify", "--repair"],
    ] {
        let (code, stdout, stderr) = run(lk(&ro).args(&args));
        assert_eq!(code, 3, "{args:?}\n{stdout}\n{stderr}");
        assert!(
            stderr.contains("is read-only") && stderr.lines().count() <= 3,
            "{args:?}: {stderr}"
        );
    }
    assert_eq!(tree_state(&cache), before, "the read-only cache changed");
}

/// A process holding `<cache>/.lock`, then stopped with SIGSTOP: linuxkit's protocol (a POSIX
/// record lock, `F_SETLKW`) or lkpkg's (an OFD lock), taken by python so that the lock is
/// held at a known moment. Dropping it resumes and kills it.
struct StoppedHolder(std::process::Child);

impl StoppedHolder {
    fn new(lock: &Path, ofd: bool) -> StoppedHolder {
        // struct flock on x86_64 and aarch64: type, whence (shorts), start, len (off_t), pid.
        let script = if ofd {
            "import fcntl,struct,sys,time\n\
             f=open(sys.argv[1],'a+')\n\
             fcntl.fcntl(f, 38, struct.pack('hh4xqqi4x', fcntl.F_WRLCK, 0, 0, 0, 0))\n\
             print('locked', flush=True)\ntime.sleep(600)\n"
        } else {
            "import fcntl,sys,time\nf=open(sys.argv[1],'a+')\nfcntl.lockf(f, fcntl.LOCK_EX)\n\
             print('locked', flush=True)\ntime.sleep(600)\n"
        };
        let mut child = Command::new("python3")
            .arg("-c")
            .arg(script)
            .arg(lock)
            .stdout(std::process::Stdio::piped())
            .spawn()
            .expect("python3");
        let mut line = String::new();
        std::io::BufRead::read_line(
            &mut std::io::BufReader::new(child.stdout.take().unwrap()),
            &mut line,
        )
        .unwrap();
        assert_eq!(line.trim(), "locked");
        ok(Command::new("kill").args(["-STOP", &child.id().to_string()]));
        StoppedHolder(child)
    }
}

impl Drop for StoppedHolder {
    fn drop(&mut self) {
        let _ = Command::new("kill")
            .args(["-CONT", &self.0.id().to_string()])
            .output();
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// A lock holder stopped with SIGSTOP (issue #11: writers waited for ever in silence, and
/// Ctrl-C did not end the wait): a writer says after a second whom it waits for, gives up
/// after `LKPKG_LOCK_TIMEOUT` with a reason (exit 3), readers are not held up, and once the
/// holder is gone the write goes through.
#[test]
fn a_stopped_lock_holder_makes_writers_wait_visibly_then_give_up_and_readers_go_on() {
    let work = tempfile::tempdir().unwrap();
    let cache = work.path().join("cache");
    let mut rng = super::kill::Rng(0x5eed);
    let first = super::kill::oci_archive(work.path(), "docker.io/lkpkgstop/a:1", &mut rng, 50_000);
    ok(cache_cmd(&cache).arg("import").arg(&first));
    for (ofd, holder_says) in [(false, "linuxkit, or another tool"), (true, "(`python")] {
        let name = format!("docker.io/lkpkgstop/b{ofd}:1");
        let archive = super::kill::oci_archive(work.path(), &name, &mut rng, 50_000);
        let holder = StoppedHolder::new(&cache.join(".lock"), ofd);
        let started = std::time::Instant::now();
        let (code, stdout, stderr) = run(cache_cmd(&cache)
            .env("LKPKG_LOCK_TIMEOUT", "3")
            .arg("import")
            .arg(&archive));
        let waited = started.elapsed();
        assert_eq!(code, 3, "{stdout}\n{stderr}");
        assert!(
            waited >= std::time::Duration::from_secs(3)
                && waited < std::time::Duration::from_secs(20),
            "{waited:?}"
        );
        assert!(
            stderr.contains("waiting for the cache lock") && stderr.contains(holder_says),
            "{stderr}"
        );
        // The holder is named by its pid, an OFD lock's too (found through `/proc/*/fdinfo`).
        assert!(
            stderr.contains(&format!("process {}", holder.0.id())),
            "{stderr}"
        );
        assert!(
            stderr.contains("gave up waiting") && stderr.contains("LKPKG_LOCK_TIMEOUT"),
            "{stderr}"
        );
        // Readers do not wait for writers.
        let started = std::time::Instant::now();
        assert!(ok(cache_cmd(&cache).args(["ls"])).contains("lkpkgstop/a:1"));
        ok(cache_cmd(&cache).args(["inspect", "docker.io/lkpkgstop/a:1"]));
        assert!(started.elapsed() < std::time::Duration::from_secs(2));
        drop(holder);
        ok(cache_cmd(&cache).arg("import").arg(&archive));
        assert!(ls_names(&cache).contains(&name));
    }
    let report = ok(cache_cmd(&cache).args(["verify", "--json"]));
    let report = crate::support::json_output("cache-verify", &report);
    assert_eq!(report["problems"], serde_json::json!([]), "{report}");
}

/// A full disk (issue #11): an import that does not fit fails with the file system's reason
/// (exit 3), and leaves the cache as it was: the names it held, nothing half-written, no
/// temporary file, `verify` clean; once space is freed, the same import succeeds.
#[test]
fn a_full_disk_fails_the_write_and_leaves_the_cache_whole() {
    require_docker();
    let mut images = DockerImages(Vec::new());
    let repo = unique_repo("full");
    let work = tempfile::tempdir().unwrap();
    let small = format!("org/{repo}:small");
    build_image(&small, "small\n", &mut images);
    // 6 MiB of hex digits (about 4.4 MB in the engine's compressed export).
    let big_message: String = {
        let mut bytes = vec![0u8; 3 << 20];
        let mut f = std::fs::File::open("/dev/urandom").unwrap();
        std::io::Read::read_exact(&mut f, &mut bytes).unwrap();
        hex::encode(bytes)
    };
    let big = format!("org/{repo}:big");
    build_image(&big, &big_message, &mut images);
    let small_tar = work.path().join("small.tar");
    let big_tar = work.path().join("big.tar");
    docker(&["save", "-o", small_tar.to_str().unwrap(), &small]);
    docker(&["save", "-o", big_tar.to_str().unwrap(), &big]);

    // Room for the big image alone (and the index database), not for both.
    let small_len = std::fs::metadata(&small_tar).unwrap().len();
    let big_len = std::fs::metadata(&big_tar).unwrap().len();
    let room = big_len + 700_000;
    assert!(
        small_len + big_len > room,
        "{small_len} + {big_len} fit in {room}"
    );
    let mount = work.path().join("disk");
    let _tmpfs = crate::support::Tmpfs::new(&mount, &format!("{}k", room / 1024));
    let cache = mount.join("cache");
    ok(cache_cmd(&cache).arg("import").arg(&small_tar));
    let before = ls_names(&cache);

    let (code, _, err) = run(cache_cmd(&cache).arg("import").arg(&big_tar));
    assert_eq!(code, 3, "{err}");
    assert!(
        err.to_ascii_lowercase().contains("no space left"),
        "the reason is the file system's: {err}"
    );
    assert_eq!(ls_names(&cache), before, "the names are as they were");
    ok(cache_cmd(&cache).arg("verify"));
    let leftovers: Vec<_> = std::fs::read_dir(cache.join("lkpkg-tmp"))
        .map(|d| d.flatten().map(|e| e.path()).collect())
        .unwrap_or_default();
    assert!(leftovers.is_empty(), "temporary files left: {leftovers:?}");

    // Space freed (the small image removed and its blobs collected): the import fits.
    ok(cache_cmd(&cache).args(["rm", &format!("docker.io/{small}")]));
    ok(cache_cmd(&cache).arg("gc"));
    ok(cache_cmd(&cache).arg("import").arg(&big_tar));
    assert!(ls_names(&cache).contains(&format!("docker.io/{big}")));
    ok(cache_cmd(&cache).arg("verify"));
}

/// An `index.json` that is garbage (not JSON, as a disk or another tool may leave it) while
/// the index database still names images: every command says so and how to repair, exit 3;
/// `gc` and `rm` delete nothing on its word; `verify` reports it; `verify --repair` writes it
/// back from the database (the garbage kept aside) and the names are all there again.
#[test]
fn a_garbage_index_json_is_reported_never_acted_on_and_repaired_from_the_database() {
    let dir = tempfile::tempdir().unwrap();
    let cache = dir.path().join("c");
    let tag = built_example(&cache);
    let names = ls_names(&cache);
    assert!(names.iter().any(|n| n.ends_with(&tag)), "{names:?}");
    let blobs = |cache: &Path| -> Vec<PathBuf> {
        let mut all: Vec<_> = std::fs::read_dir(cache.join("blobs/sha256"))
            .unwrap()
            .flatten()
            .map(|e| e.path())
            .collect();
        all.sort();
        all
    };
    let before = blobs(&cache);
    std::fs::write(cache.join("index.json"), b"\x00\xffnot json{{").unwrap();

    for args in [
        &["ls"][..],
        &["gc"],
        &["rm", &tag],
        &["du"],
        &["inspect", &tag],
    ] {
        let (code, _, err) = run(cache_cmd(&cache).args(args));
        assert_eq!(code, 3, "{args:?}: {err}");
        assert!(
            err.contains("index.json") && err.contains("verify --repair"),
            "{args:?}: {err}"
        );
        assert_eq!(blobs(&cache), before, "{args:?} deleted blobs");
    }
    let (code, out, err) = run(cache_cmd(&cache).arg("verify"));
    assert_ne!(code, 0, "{out}{err}");
    assert!(format!("{out}{err}").contains("index.json"), "{out}{err}");

    ok(cache_cmd(&cache).args(["verify", "--repair"]));
    assert_eq!(ls_names(&cache), names);
    assert_eq!(blobs(&cache), before);
    ok(cache_cmd(&cache).arg("verify"));
    let aside = std::fs::read_dir(&cache)
        .unwrap()
        .flatten()
        .filter(|e| {
            e.file_name()
                .to_string_lossy()
                .starts_with("index.json.unreadable-")
        })
        .count();
    assert_eq!(aside, 1, "the garbage is kept aside");
}
