//! Import throughput of a ~1 GiB image (issue: cache).
//!
//! The image is built by the real Docker engine (classic builder) `FROM scratch` with `COPY`
//! of generated incompressible data (`/dev/urandom`), split over a few layers. Side by side in
//! one run, rounds interleaved (the order rotates each round), a fresh cache for every import:
//! - baseline: `docker save IMG > file` then `sha256sum file` (what the cheapest content-addressed
//!   copy of the image costs with standard tools);
//! - `docker save IMG | lkpkg --cache <fresh> cache import -` (the build issue's ingest path);
//! - `lkpkg --cache <fresh> cache import file` from a file saved beforehand;
//! - for reference, `docker save IMG > /dev/null` alone (the engine's export, the floor of
//!   anything that reads the image from the engine).
//!
//! Reported: each variant's samples, median, throughput (size of the `docker save` tar over the
//! median) and ratio to the baseline; for the two lkpkg variants, the peak RSS of every import
//! (GNU time's "Maximum resident set size", `/usr/bin/time -v`; issue #11's goal: under
//! 100 MiB for a 1 GiB image). The image and the temporary files are removed at the end.
//!
//! Run: `cargo build --release -p lkpkg -p lkpkg-benches && target/release/import [MIB] [LAYERS] [RUNS]`
//! (defaults: 1024 MiB in 4 layers, 3 runs each).

use std::fs::File;
use std::io::Read;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use lkpkg_benches::{
    LabelledImages, RssReport, docker, list_secs, lkpkg_bin, load_average, median_of, run, timed,
};

const MIB: u64 = 1024 * 1024;

fn main() {
    let mut args = std::env::args()
        .skip(1)
        .map(|a| a.parse::<u64>().expect("a number"));
    let mib = args.next().unwrap_or(1024);
    let layers = args.next().unwrap_or(4).max(1);
    let runs = usize::try_from(args.next().unwrap_or(3)).expect("runs");
    let bin = lkpkg_bin();
    let id = std::process::id();
    let image = format!("lkpkgbench/import:{id}");
    let label = format!("lkpkg.bench=import-{id}");
    let _images = LabelledImages(label.clone());
    let work = tempfile::Builder::new()
        .prefix("lkpkg-bench-import")
        .tempdir()
        .expect("tempdir");

    println!("lkpkg: {}", bin.display());
    println!("load average at start: {}", load_average());
    let context = work.path().join("context");
    std::fs::create_dir(&context).unwrap();
    let mut dockerfile = format!("FROM scratch\nLABEL {label}\n");
    for layer in 0..layers {
        let bytes = mib * MIB / layers;
        let mut random = File::open("/dev/urandom").unwrap().take(bytes);
        let mut out = File::create(context.join(format!("l{layer}"))).unwrap();
        std::io::copy(&mut random, &mut out).unwrap();
        dockerfile.push_str(&format!("COPY l{layer} /l{layer}\n"));
    }
    std::fs::write(context.join("Dockerfile"), dockerfile).unwrap();
    let build = timed(|| {
        run(docker().args(["build", "-q", "-t", &image]).arg(&context));
    });
    std::fs::remove_dir_all(&context).unwrap();
    println!(
        "image {image}: {mib} MiB of random data in {layers} layers, built in {:.1} s",
        build.as_secs_f64()
    );

    // Saved once, untimed: the file for the import-from-file variant; it also warms the
    // engine's files in the page cache for every variant alike.
    let saved = work.path().join("saved.tar");
    save_to(&image, &saved);
    let size = std::fs::metadata(&saved).unwrap().len();
    println!("docker save tar: {size} bytes");

    let baseline = || {
        let file = work.path().join("baseline.tar");
        let took = timed(|| {
            save_to(&image, &file);
            run(Command::new("sha256sum").arg(&file));
        });
        std::fs::remove_file(&file).unwrap();
        took
    };
    let peaks: [std::cell::RefCell<Vec<u64>>; 2] = Default::default();
    let pipe = || {
        let cache = tempfile::tempdir_in(work.path()).unwrap();
        let rss = RssReport::new();
        let took = timed(|| {
            let mut save = docker()
                .args(["save", &image])
                .stdout(Stdio::piped())
                .spawn()
                .expect("docker save");
            let stdout = save.stdout.take().unwrap();
            let mut import = Command::new(&bin);
            import
                .arg("--cache")
                .arg(cache.path())
                .args(["cache", "import", "-"]);
            let import = rss
                .wrap(&import)
                .stdin(stdout)
                .output()
                .expect("lkpkg cache import -");
            assert!(save.wait().unwrap().success(), "docker save failed");
            assert!(
                import.status.success(),
                "lkpkg cache import -: {}",
                String::from_utf8_lossy(&import.stderr)
            );
        });
        peaks[0].borrow_mut().push(rss.kib());
        check_imported(&bin, cache.path(), &image);
        took
    };
    let from_file = || {
        let cache = tempfile::tempdir_in(work.path()).unwrap();
        let rss = RssReport::new();
        let mut import = Command::new(&bin);
        import
            .arg("--cache")
            .arg(cache.path())
            .args(["cache", "import"])
            .arg(&saved);
        let took = timed(|| {
            run(&mut rss.wrap(&import));
        });
        peaks[1].borrow_mut().push(rss.kib());
        check_imported(&bin, cache.path(), &image);
        took
    };
    let save_only = || {
        timed(|| {
            let status = docker()
                .args(["save", &image])
                .stdout(Stdio::null())
                .status()
                .expect("docker save");
            assert!(status.success(), "docker save failed");
        })
    };

    let names = [
        "docker save > file + sha256sum (baseline)",
        "docker save \\| lkpkg cache import -",
        "lkpkg cache import file",
        "docker save > /dev/null (reference)",
    ];
    let variants: [Box<dyn Fn() -> Duration + '_>; 4] = [
        Box::new(baseline),
        Box::new(pipe),
        Box::new(from_file),
        Box::new(save_only),
    ];
    let mut samples: Vec<Vec<Duration>> = vec![Vec::new(); variants.len()];
    for round in 0..runs {
        for k in 0..variants.len() {
            let v = (round + k) % variants.len();
            samples[v].push(variants[v]());
        }
    }

    let gib = size as f64 / (1024.0 * MIB as f64);
    let base = median_of(&samples[0]).as_secs_f64();
    println!();
    println!("| variant | samples (s) | median | GiB/s | time vs baseline |");
    println!("|---|---|---:|---:|---:|");
    for (name, times) in names.iter().zip(&samples) {
        let m = median_of(times).as_secs_f64();
        println!(
            "| {name} | {} | {m:.2} s | {:.2} | {:.2}× |",
            list_secs(times),
            gib / m,
            m / base,
        );
    }
    println!();
    for (name, peaks) in names[1..3].iter().zip(&peaks) {
        let peaks = peaks.borrow();
        let mib: Vec<String> = peaks
            .iter()
            .map(|kib| format!("{:.1}", *kib as f64 / 1024.0))
            .collect();
        println!(
            "peak RSS of {name}: {} MiB (highest {:.1} MiB; goal < 100 MiB)",
            mib.join(" "),
            peaks.iter().max().copied().unwrap_or(0) as f64 / 1024.0
        );
    }
    println!();
    println!("load average at end: {}", load_average());
}

/// `docker save IMG > file`.
fn save_to(image: &str, file: &Path) {
    let out = File::create(file).unwrap();
    let status = docker()
        .args(["save", image])
        .stdout(out)
        .status()
        .expect("docker save");
    assert!(status.success(), "docker save {image} failed");
}

/// The import named the image in the cache (untimed).
fn check_imported(bin: &Path, cache: &Path, image: &str) {
    let ls = run(Command::new(bin)
        .arg("--cache")
        .arg(cache)
        .args(["cache", "ls"]));
    assert!(
        ls.contains(&format!("docker.io/{image}")),
        "`{image}` not in the cache after import:\n{ls}"
    );
}
