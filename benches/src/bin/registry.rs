//! Registry transfers (issue: registries), side by side with skopeo in one run.
//!
//! One image of `LAYERS` layers of incompressible data (`MIB` in all) is built once by lkpkg
//! into a cache (which is an OCI layout, so skopeo reads it as `oci:<cache>:<name>`). Each
//! round starts a fresh distribution registry on a loopback port (an empty one: nothing can be
//! skipped or mounted), then, in an order that rotates with the round:
//! - push: `skopeo copy --all oci:<cache>:<name> docker://<registry>/skopeo/img:t` against
//!   `lkpkg cache push <name> --remote-name <registry>/lkpkg/img:t`;
//! - the unchanged push: `lkpkg cache push … --override` again, against lkpkg's first push;
//! - pull: `skopeo copy --all docker://… oci:<fresh dir>:img` against
//!   `lkpkg --cache <fresh> cache pull …`.
//!
//! Reported: samples, medians, and the ratios (goals: push and pull ≤ 1.0× skopeo, the
//! unchanged push ≤ 5 % of the first); the peak RSS of every push and pull of both tools
//! (GNU time, `/usr/bin/time -v`; issue #11: streamed, never buffered whole: under 100 MiB
//! however large the layer, e.g. `registry 2048 1 2`).
//!
//! Run: `cargo build --release -p lkpkg -p lkpkg-benches && target/release/registry [MIB] [LAYERS] [ROUNDS]`
//! (defaults: 200 MiB in 20 layers, 5 rounds). Needs the engine (scripts/dev-env.sh), skopeo
//! and docker-registry.

use std::fs::File;
use std::io::Read;
use std::net::TcpListener;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use std::cell::RefCell;

use lkpkg_benches::{
    RssReport, git_commit_all, list_secs, lkpkg_bin, load_average, median_of, run, timed,
};

/// Runs `cmd` (which must succeed) under GNU time: its wall time; its peak RSS (KiB) is
/// added to `peaks`.
fn measured(cmd: &mut Command, peaks: &RefCell<Vec<u64>>) -> Duration {
    let report = RssReport::new();
    let took = timed(|| {
        run(&mut report.wrap(cmd));
    });
    peaks.borrow_mut().push(report.kib());
    took
}

const MIB: u64 = 1024 * 1024;

struct Registry {
    child: Child,
    _dir: tempfile::TempDir,
    host: String,
}

impl Registry {
    fn start() -> Registry {
        let dir = tempfile::tempdir().unwrap();
        let port = TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let config = dir.path().join("config.yml");
        std::fs::write(
            &config,
            format!(
                "version: 0.1\nlog:\n  level: error\n  accesslog:\n    disabled: true\nstorage:\n  filesystem:\n    rootdirectory: {}\nhttp:\n  addr: 127.0.0.1:{port}\n",
                dir.path().join("data").display()
            ),
        )
        .unwrap();
        let child = Command::new("docker-registry")
            .arg("serve")
            .arg(&config)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("docker-registry");
        let deadline = Instant::now() + Duration::from_secs(20);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(Instant::now() < deadline, "the registry did not start");
            std::thread::sleep(Duration::from_millis(50));
        }
        Registry {
            child,
            _dir: dir,
            host: format!("127.0.0.1:{port}"),
        }
    }
}

impl Drop for Registry {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn lkpkg(cache: &Path) -> Command {
    let mut cmd = Command::new(lkpkg_bin());
    cmd.arg("--cache").arg(cache).arg("-q");
    // No docker config of the machine's: anonymous, as skopeo's run.
    cmd.env("DOCKER_CONFIG", cache.with_extension("docker"));
    cmd
}

fn skopeo() -> Command {
    let mut cmd = Command::new("skopeo");
    cmd.args([
        "copy",
        "--all",
        "-q",
        "--src-tls-verify=false",
        "--dest-tls-verify=false",
    ]);
    cmd
}

fn main() {
    let mut args = std::env::args()
        .skip(1)
        .map(|a| a.parse::<u64>().expect("a number"));
    let mib = args.next().unwrap_or(200);
    let layers = args.next().unwrap_or(20).max(1);
    let rounds = usize::try_from(args.next().unwrap_or(5)).expect("rounds");
    let work = tempfile::Builder::new()
        .prefix("lkpkg-bench-registry")
        .tempdir()
        .unwrap();
    println!("lkpkg: {}", lkpkg_bin().display());
    println!("load average at start: {}", load_average());

    // The image, built once by lkpkg.
    let repo = work.path().join("repo");
    let pkg = repo.join("img");
    std::fs::create_dir_all(&pkg).unwrap();
    let mut dockerfile = String::from("FROM scratch\n");
    for layer in 0..layers {
        let mut random = File::open("/dev/urandom").unwrap().take(mib * MIB / layers);
        let mut out = File::create(pkg.join(format!("l{layer}"))).unwrap();
        std::io::copy(&mut random, &mut out).unwrap();
        dockerfile.push_str(&format!("COPY l{layer} /l{layer}\n"));
    }
    std::fs::write(pkg.join("Dockerfile"), dockerfile).unwrap();
    std::fs::write(
        pkg.join("build.yml"),
        "image: img\norg: bench.invalid/bench\narches: [amd64]\n",
    )
    .unwrap();
    git_commit_all(&repo);
    let cache = work.path().join("cache");
    run(lkpkg(&cache)
        .current_dir(&repo)
        .args(["pkg", "build", "img"]));
    let name =
        run(lkpkg(&cache)
            .current_dir(&repo)
            .args(["pkg", "show-tag", "--canonical", "img"]))
        .trim()
        .to_owned();
    println!("image: {name}, {mib} MiB in {layers} layers");

    let (mut skopeo_push, mut lkpkg_push, mut again, mut skopeo_pull, mut lkpkg_pull) =
        (Vec::new(), Vec::new(), Vec::new(), Vec::new(), Vec::new());
    // Peak RSS (KiB): skopeo push, lkpkg push, skopeo pull, lkpkg pull.
    let peaks: [RefCell<Vec<u64>>; 4] = Default::default();
    for round in 0..rounds {
        let registry = Registry::start();
        let skopeo_ref = format!("{}/skopeo/img:t", registry.host);
        let lkpkg_ref = format!("{}/lkpkg/img:t", registry.host);
        let push_skopeo = || {
            measured(
                skopeo()
                    .arg(format!("oci:{}:{name}", cache.display()))
                    .arg(format!("docker://{skopeo_ref}")),
                &peaks[0],
            )
        };
        let push_lkpkg = || {
            measured(
                lkpkg(&cache).args(["cache", "push", &name, "--remote-name", &lkpkg_ref]),
                &peaks[1],
            )
        };
        if round % 2 == 0 {
            skopeo_push.push(push_skopeo());
            lkpkg_push.push(push_lkpkg());
        } else {
            lkpkg_push.push(push_lkpkg());
            skopeo_push.push(push_skopeo());
        }
        again.push(timed(|| {
            run(lkpkg(&cache).args([
                "cache",
                "push",
                &name,
                "--remote-name",
                &lkpkg_ref,
                "--override",
            ]));
        }));
        let layout = work.path().join(format!("layout-{round}"));
        let fresh = work.path().join(format!("cache-{round}"));
        let pull_skopeo = || {
            measured(
                skopeo()
                    .arg(format!("docker://{skopeo_ref}"))
                    .arg(format!("oci:{}:img", layout.display())),
                &peaks[2],
            )
        };
        let pull_lkpkg = || measured(lkpkg(&fresh).args(["cache", "pull", &lkpkg_ref]), &peaks[3]);
        if round % 2 == 0 {
            skopeo_pull.push(pull_skopeo());
            lkpkg_pull.push(pull_lkpkg());
        } else {
            lkpkg_pull.push(pull_lkpkg());
            skopeo_pull.push(pull_skopeo());
        }
        let _ = std::fs::remove_dir_all(&layout);
        let _ = std::fs::remove_dir_all(&fresh);
    }
    let show = |what: &str, samples: &[Duration]| {
        println!(
            "{what:<28} median {:>6.2} s   samples {}",
            median_of(samples).as_secs_f64(),
            list_secs(samples)
        );
    };
    show("push: skopeo copy", &skopeo_push);
    show("push: lkpkg cache push", &lkpkg_push);
    show("unchanged push: lkpkg", &again);
    show("pull: skopeo copy", &skopeo_pull);
    show("pull: lkpkg cache pull", &lkpkg_pull);
    let ratio =
        |a: &[Duration], b: &[Duration]| median_of(a).as_secs_f64() / median_of(b).as_secs_f64();
    println!(
        "push lkpkg/skopeo: {:.2}x (goal <= 1.0)",
        ratio(&lkpkg_push, &skopeo_push)
    );
    println!(
        "pull lkpkg/skopeo: {:.2}x (goal <= 1.0)",
        ratio(&lkpkg_pull, &skopeo_pull)
    );
    println!(
        "unchanged push / first push: {:.1} % (goal <= 5 %)",
        100.0 * ratio(&again, &lkpkg_push)
    );
    for (what, peaks) in [
        "push: skopeo copy",
        "push: lkpkg cache push",
        "pull: skopeo copy",
        "pull: lkpkg cache pull",
    ]
    .iter()
    .zip(&peaks)
    {
        let mib: Vec<String> = peaks
            .borrow()
            .iter()
            .map(|kib| format!("{:.1}", *kib as f64 / 1024.0))
            .collect();
        println!("peak RSS of {what:<24} {} MiB", mib.join(" "));
    }
    println!("load average at end: {}", load_average());
}
