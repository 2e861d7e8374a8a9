//! The scheduler's decisions with a fake executor and no daemon: fresh, rebuilt with a reason,
//! early cutoff, failures skipping dependents, `--keep-going`, cancellation.
//!
//! The fake writes real (tiny) images into a real store on a temporary cache, so freshness is
//! decided exactly as in a build: by keys, records and the blobs the cache holds.

use std::collections::{BTreeMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use lkpkg_cache_format::layout::{Descriptor, Platform as OciPlatform};

use super::*;
use crate::package::Loader;
use crate::tag::TagOptions;

/// An executor that "builds" an image whose one layer holds what `content` says for the unit.
struct Fake {
    graph: Arc<BuildGraph>,
    store: Arc<Store>,
    /// Unit → the bytes of its image's layer (default: the unit's name).
    content: Mutex<BTreeMap<String, String>>,
    fail: Mutex<HashSet<String>>,
    /// Units whose build never ends (until cancelled).
    hang: Mutex<HashSet<String>>,
    /// Units whose build waits this long first.
    slow: Mutex<BTreeMap<String, u64>>,
    calls: Mutex<Vec<String>>,
    /// The units of each `build_together` call.
    groups: Mutex<Vec<Vec<String>>>,
    hung: AtomicUsize,
    dropped: Arc<AtomicBool>,
}

impl Fake {
    fn new(graph: Arc<BuildGraph>, store: Arc<Store>) -> Arc<Fake> {
        Arc::new(Fake {
            graph,
            store,
            content: Mutex::default(),
            fail: Mutex::default(),
            hang: Mutex::default(),
            slow: Mutex::default(),
            calls: Mutex::default(),
            groups: Mutex::default(),
            hung: AtomicUsize::new(0),
            dropped: Arc::new(AtomicBool::new(false)),
        })
    }

    fn calls(&self) -> Vec<String> {
        self.calls.lock().unwrap().clone()
    }

    fn groups(&self) -> Vec<Vec<String>> {
        self.groups.lock().unwrap().clone()
    }
}

/// Sets a flag when dropped: a cancelled build's future is dropped mid-way.
struct DropFlag(Arc<AtomicBool>);

impl Drop for DropFlag {
    fn drop(&mut self) {
        self.0.store(true, Ordering::SeqCst);
    }
}

impl Executor for Fake {
    fn build<'a>(&'a self, job: Job<'a>) -> BoxFuture<'a, Result<Descriptor, ExecError>> {
        Box::pin(async move {
            let unit = job.unit.to_owned();
            self.calls.lock().unwrap().push(unit.clone());
            (job.started)("fake://builder");
            let slow = self.slow.lock().unwrap().get(&unit).copied();
            if let Some(ms) = slow {
                tokio::time::sleep(std::time::Duration::from_millis(ms)).await;
            }
            let hang = self.hang.lock().unwrap().contains(&unit);
            if hang {
                let _flag = DropFlag(self.dropped.clone());
                self.hung.fetch_add(1, Ordering::SeqCst);
                std::future::pending::<()>().await;
            }
            let fail = self.fail.lock().unwrap().contains(&unit);
            if fail {
                (job.log)("step failed".into());
                return Err(ExecError::Failed {
                    message: format!("build of {unit} failed"),
                    log_tail: vec!["step failed".into()],
                });
            }
            let content = self
                .content
                .lock()
                .unwrap()
                .get(&unit)
                .cloned()
                .unwrap_or_else(|| unit.clone());
            let layer = crate::store::tests::layer_tar(&[("content", content.as_bytes())]);
            let archive = crate::store::tests::oci_archive(&job.platform.arch, &[layer]);
            let full = self.graph.packages[job.package].package.tag.full_tag();
            let platform = OciPlatform::linux(&job.platform.arch);
            self.store
                .ingest_oci_archive(&archive[..], &full, &platform)
                .map_err(|e| ExecError::Failed {
                    message: e.to_string(),
                    log_tail: Vec::new(),
                })
        })
    }

    fn build_together<'a>(
        &'a self,
        jobs: Vec<Job<'a>>,
    ) -> BoxFuture<'a, Vec<Result<Descriptor, ExecError>>> {
        let units = jobs.iter().map(|j| j.unit.to_owned()).collect();
        self.groups.lock().unwrap().push(units);
        Box::pin(futures_util::future::join_all(
            jobs.into_iter().map(|job| self.build(job)),
        ))
    }

    fn load_into_engine(&self, _package: usize) -> BoxFuture<'_, Result<(), BuildError>> {
        Box::pin(async { Ok(()) })
    }
}

/// What a scheduler run gave: its result, its events, the executor.
type Run = (Result<Summary, BuildError>, Vec<Event>, Arc<Fake>);

/// What the fake registry holds for a unit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Answer {
    /// A shared build record for whatever key is asked.
    ByKey,
    /// The tag (answered only when the tag may stand for the unit).
    ByTag,
    /// Nothing.
    Unpublished,
    /// The registry cannot be reached.
    Unreachable,
}

/// A registry of published units: it "pulls" by writing an image into the store, as the
/// real one does, and remembers what it was asked (unit, whether by tag).
struct FakeRemote {
    graph: Arc<BuildGraph>,
    store: Arc<Store>,
    published: BTreeMap<String, Answer>,
    asks: Mutex<Vec<(String, bool)>>,
}

impl Remote for FakeRemote {
    fn fetch<'a>(
        &'a self,
        ask: RemoteAsk<'a>,
    ) -> BoxFuture<'a, Result<Option<(Descriptor, Pulled)>, String>> {
        Box::pin(async move {
            let package = &self.graph.packages[ask.package].package;
            let unit = format!("{}/{}", package.yml.image, ask.platform.arch);
            self.asks.lock().unwrap().push((unit.clone(), ask.by_tag));
            let how = match self.published.get(&unit).copied() {
                Some(Answer::ByKey) => Pulled::ByKey {
                    reference: "registry:lkpkg-key".into(),
                },
                Some(Answer::ByTag) if ask.by_tag => Pulled::ByTag {
                    reference: "registry:tag".into(),
                },
                Some(Answer::Unreachable) => return Err("registry down".into()),
                _ => return Ok(None),
            };
            let layer = crate::store::tests::layer_tar(&[("content", b"published")]);
            let archive = crate::store::tests::oci_archive(&ask.platform.arch, &[layer]);
            let descriptor = self
                .store
                .ingest_oci_archive(
                    &archive[..],
                    &package.tag.full_tag(),
                    &OciPlatform::linux(&ask.platform.arch),
                )
                .map_err(|e| e.to_string())?;
            Ok(Some((descriptor, how)))
        })
    }
}

/// A git repository of packages: `(dir, Dockerfile)`; `app`-like packages name their base
/// through `@lkt:pkg:`.
struct Fixture {
    dir: tempfile::TempDir,
    cache: tempfile::TempDir,
}

fn git(dir: &Path, args: &[&str]) {
    let out = std::process::Command::new("git")
        .args(args)
        .current_dir(dir)
        .output()
        .expect("git");
    assert!(out.status.success(), "git {args:?}: {out:?}");
}

impl Fixture {
    fn new(packages: &[(&str, &str, &str)]) -> Fixture {
        let fixture = Fixture {
            dir: tempfile::tempdir().unwrap(),
            cache: tempfile::tempdir().unwrap(),
        };
        let root = fixture.dir.path();
        git(root, &["init", "-q", "-b", "main"]);
        git(root, &["config", "user.email", "t@example.invalid"]);
        git(root, &["config", "user.name", "t"]);
        git(root, &["config", "commit.gpgsign", "false"]);
        for (dir, extra, dockerfile) in packages {
            fixture.write(
                &format!("{dir}/build.yml"),
                &format!("image: {dir}\norg: sched\narches: [amd64]\n{extra}"),
            );
            fixture.write(&format!("{dir}/Dockerfile"), dockerfile);
        }
        fixture.commit();
        fixture
    }

    fn write(&self, rel: &str, text: &str) {
        let path = self.dir.path().join(rel);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, text).unwrap();
    }

    fn commit(&self) {
        git(self.dir.path(), &["add", "-A"]);
        git(self.dir.path(), &["commit", "-q", "-m", "change"]);
    }

    fn options(&self) -> BuildOptions {
        BuildOptions {
            jobs: 4,
            ..BuildOptions::default()
        }
    }

    /// Loads the graph and runs the scheduler with `fake` (made by `setup` for the graph).
    fn run(&self, options: &BuildOptions, setup: impl FnOnce(&Fake)) -> Run {
        self.run_with_remote(options, setup, &[]).0
    }

    /// [`Fixture::run`] with a [`FakeRemote`] answering `published` (unit → answer).
    fn run_with_remote(
        &self,
        options: &BuildOptions,
        setup: impl FnOnce(&Fake),
        published: &[(&str, Answer)],
    ) -> (Run, Vec<(String, bool)>) {
        let (graph, store, loader) = self.load();
        let fake = Fake::new(graph.clone(), store.clone());
        setup(&fake);
        let remote = Arc::new(FakeRemote {
            graph: graph.clone(),
            store: store.clone(),
            published: published
                .iter()
                .map(|(u, a)| ((*u).to_owned(), *a))
                .collect(),
            asks: Mutex::default(),
        });
        let events = Arc::new(Mutex::new(Vec::new()));
        let sink = events.clone();
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap();
        let result = runtime.block_on(build(
            graph,
            loader.workspaces(),
            store,
            Backends {
                executor: fake.clone(),
                remote: (!published.is_empty()).then(|| remote.clone() as Arc<dyn Remote>),
            },
            options,
            self.dir.path(),
            Arc::new(move |e| sink.lock().unwrap().push(e)),
        ));
        let events = events.lock().unwrap().clone();
        let asks = remote.asks.lock().unwrap().clone();
        ((result, events, fake), asks)
    }

    fn load(&self) -> (Arc<BuildGraph>, Arc<Store>, Loader) {
        let root = self.dir.path();
        let loader = Loader::new(root, "build.yml", TagOptions::default()).unwrap();
        let dirs: Vec<PathBuf> =
            crate::discover::packages(root, "build.yml", loader.workspaces(), &[]).unwrap();
        let graph =
            BuildGraph::build(&loader, &dirs, &crate::graph::GraphOptions::default()).unwrap();
        let store = Arc::new(Store::open(self.cache.path()).unwrap());
        (Arc::new(graph), store, loader)
    }
}

const BASE: (&str, &str, &str) = ("base", "", "FROM scratch\nCOPY build.yml /\n");
const APP: (&str, &str, &str) = (
    "app",
    "buildArgs:\n  - BASE=@lkt:pkg:../base\n",
    "ARG BASE\nFROM ${BASE}\nCOPY build.yml /app.yml\n",
);

fn fresh_reason(events: &[Event], unit: &str) -> Option<Freshness> {
    events.iter().find_map(|e| match e {
        Event::Fresh {
            unit: u, reason, ..
        } if u == unit => Some(reason.clone()),
        _ => None,
    })
}

fn build_reason(events: &[Event], unit: &str) -> Option<BuildReason> {
    events.iter().find_map(|e| match e {
        Event::Started {
            unit: u, reason, ..
        } if u == unit => Some(reason.clone()),
        _ => None,
    })
}

fn skipped(events: &[Event], unit: &str) -> Option<SkipReason> {
    events.iter().find_map(|e| match e {
        Event::Skipped { unit: u, reason } if u == unit => Some(reason.clone()),
        _ => None,
    })
}

#[test]
fn a_second_build_of_unchanged_inputs_is_fresh_and_builds_nothing() {
    let fixture = Fixture::new(&[BASE, APP]);
    let options = fixture.options();
    let (result, events, fake) = fixture.run(&options, |_| {});
    let summary = result.unwrap();
    assert_eq!((summary.built, summary.fresh), (2, 0));
    assert_eq!(fake.calls(), ["base/amd64", "app/amd64"]);
    assert_eq!(
        build_reason(&events, "base/amd64"),
        Some(BuildReason::FirstBuild)
    );
    let (result, events, fake) = fixture.run(&options, |_| {});
    let summary = result.unwrap();
    assert_eq!((summary.built, summary.fresh), (0, 2));
    assert!(fake.calls().is_empty());
    assert_eq!(
        fresh_reason(&events, "app/amd64"),
        Some(Freshness::UpToDate)
    );
}

#[test]
fn a_changed_base_rebuilds_it_and_its_dependent_with_reasons() {
    let fixture = Fixture::new(&[BASE, APP]);
    let options = fixture.options();
    fixture.run(&options, |_| {}).0.unwrap();
    fixture.write("base/Dockerfile", "FROM scratch\nCOPY build.yml /b.yml\n");
    fixture.commit();
    let (result, events, fake) = fixture.run(&options, |f| {
        f.content
            .lock()
            .unwrap()
            .insert("base/amd64".into(), "base v2".into());
    });
    assert_eq!(result.unwrap().built, 2);
    assert_eq!(fake.calls(), ["base/amd64", "app/amd64"]);
    let Some(BuildReason::Changed(why)) = build_reason(&events, "base/amd64") else {
        panic!("{events:?}");
    };
    assert!(why.iter().any(|w| w.contains("Dockerfile")), "{why:?}");
    let Some(BuildReason::Changed(why)) = build_reason(&events, "app/amd64") else {
        panic!("{events:?}");
    };
    assert!(why.iter().any(|w| w.contains("dependency")), "{why:?}");
}

#[test]
fn a_base_rebuilt_to_the_same_bytes_leaves_its_dependent_fresh() {
    let fixture = Fixture::new(&[BASE, APP]);
    let options = fixture.options();
    fixture.run(&options, |_| {}).0.unwrap();
    fixture.write(
        "base/Dockerfile",
        "# a comment\nFROM scratch\nCOPY build.yml /\n",
    );
    fixture.commit();
    // The fake gives base the same content: the same output digest.
    let (result, events, fake) = fixture.run(&options, |_| {});
    let summary = result.unwrap();
    assert_eq!((summary.built, summary.fresh), (1, 1), "{events:?}");
    assert_eq!(fake.calls(), ["base/amd64"]);
    assert_eq!(
        fresh_reason(&events, "app/amd64"),
        Some(Freshness::UpToDate)
    );
}

#[test]
fn a_failure_skips_its_dependents_and_keeps_no_record() {
    let fixture = Fixture::new(&[BASE, APP]);
    let (result, events, fake) = fixture.run(&fixture.options(), |f| {
        f.fail.lock().unwrap().insert("base/amd64".into());
    });
    let summary = result.unwrap();
    assert_eq!((summary.failed, summary.skipped, summary.built), (1, 1, 0));
    assert_eq!(fake.calls(), ["base/amd64"]);
    assert_eq!(
        skipped(&events, "app/amd64"),
        Some(SkipReason::DependencyFailed("base/amd64".into()))
    );
    assert!(events.iter().any(|e| matches!(e,
        Event::Failed { unit, log_tail, .. } if unit == "base/amd64" && log_tail == &["step failed"])));
    // Nothing was recorded: the next build builds base again, for its first time.
    let (_, events, _) = fixture.run(&fixture.options(), |_| {});
    assert_eq!(
        build_reason(&events, "base/amd64"),
        Some(BuildReason::FirstBuild)
    );
}

#[test]
fn keep_going_builds_what_does_not_depend_on_a_failure() {
    let packages = [
        ("bad", "", "FROM scratch\nCOPY build.yml /\n"),
        ("one", "", "FROM scratch\nCOPY build.yml /one\n"),
        (
            "two",
            "buildArgs:\n  - ONE=@lkt:pkg:../one\n",
            "ARG ONE\nFROM ${ONE}\nCOPY build.yml /two\n",
        ),
    ];
    let setup = |f: &Fake| {
        f.fail.lock().unwrap().insert("bad/amd64".into());
        f.slow.lock().unwrap().insert("one/amd64".into(), 300);
    };
    // Without --keep-going: `bad` fails while `one` runs; `two` is never started.
    let fixture = Fixture::new(&packages);
    let (result, events, _) = fixture.run(&fixture.options(), setup);
    let summary = result.unwrap();
    assert_eq!((summary.failed, summary.built, summary.skipped), (1, 1, 1));
    assert_eq!(skipped(&events, "two/amd64"), Some(SkipReason::Stopped));
    // With it: everything that does not consume `bad` builds.
    let fixture = Fixture::new(&packages);
    let options = BuildOptions {
        keep_going: true,
        ..fixture.options()
    };
    let (result, events, _) = fixture.run(&options, setup);
    let summary = result.unwrap();
    assert_eq!((summary.failed, summary.built, summary.skipped), (1, 2, 0));
    assert_eq!(
        build_reason(&events, "two/amd64"),
        Some(BuildReason::FirstBuild)
    );
}

#[test]
fn forced_and_dry_run_decisions() {
    let fixture = Fixture::new(&[BASE, APP]);
    fixture.run(&fixture.options(), |_| {}).0.unwrap();
    let forced = BuildOptions {
        force: true,
        ..fixture.options()
    };
    let (_, events, _) = fixture.run(&forced, |_| {});
    assert_eq!(
        build_reason(&events, "base/amd64"),
        Some(BuildReason::Forced)
    );
    fixture.write("base/Dockerfile", "FROM scratch\nCOPY build.yml /c.yml\n");
    fixture.commit();
    let dry = BuildOptions {
        dry_run: true,
        ..fixture.options()
    };
    let (result, events, fake) = fixture.run(&dry, |_| {});
    assert_eq!(result.unwrap().built, 2);
    assert!(fake.calls().is_empty(), "a dry run builds nothing");
    let would = |unit: &str| {
        events.iter().find_map(|e| match e {
            Event::WouldBuild { unit: u, reason } if u == unit => Some(reason.clone()),
            _ => None,
        })
    };
    assert!(matches!(would("base/amd64"), Some(BuildReason::Changed(_))));
    assert_eq!(
        would("app/amd64"),
        Some(BuildReason::AfterDependencies(vec!["base/amd64".into()]))
    );
}

#[test]
fn cancelling_drops_running_builds_and_records_nothing() {
    let fixture = Fixture::new(&[BASE, APP]);
    let (graph, store, loader) = fixture.load();
    let fake = Fake::new(graph.clone(), store.clone());
    fake.hang.lock().unwrap().insert("base/amd64".into());
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let options = fixture.options();
    let executor: Arc<dyn Executor> = fake.clone();
    let outcome = runtime.block_on(async {
        let building = build(
            graph.clone(),
            loader.workspaces(),
            store.clone(),
            Backends {
                executor,
                remote: None,
            },
            &options,
            fixture.dir.path(),
            Arc::new(|_| {}),
        );
        // What the CLI does on Ctrl-C: stop waiting for the build, which drops it.
        tokio::select! {
            _ = building => "finished",
            _ = async {
                while fake.hung.load(Ordering::SeqCst) == 0 {
                    tokio::time::sleep(std::time::Duration::from_millis(10)).await;
                }
            } => "interrupted",
        }
    });
    drop(runtime);
    assert_eq!(outcome, "interrupted");
    assert!(
        fake.dropped.load(Ordering::SeqCst),
        "the hung build was not dropped"
    );
    assert_eq!(fake.calls(), ["base/amd64"], "app never started");
    let base = graph
        .packages
        .iter()
        .find(|p| p.package.dir.ends_with("base"))
        .unwrap();
    let name = lkpkg_cache_format::reference::per_arch(&base.package.tag.full_tag(), "amd64");
    assert!(store.lookup(&name).unwrap().is_none());
    assert!(store.last_build("base/amd64").unwrap().is_none());
}

#[test]
fn units_published_by_build_record_are_pulled_recorded_and_then_fresh() {
    let fixture = Fixture::new(&[BASE, APP]);
    let options = fixture.options();
    let published = [("base/amd64", Answer::ByKey), ("app/amd64", Answer::ByKey)];
    let ((result, events, fake), asks) = fixture.run_with_remote(&options, |_| {}, &published);
    let summary = result.unwrap();
    assert_eq!((summary.built, summary.pulled), (0, 2));
    assert!(fake.calls().is_empty());
    assert!(events.iter().any(|e| matches!(e, Event::Pulled { unit, how: Pulled::ByKey { .. }, .. } if unit == "app/amd64")));
    // The app was asked after its base came by key: its tag may not stand for it.
    assert_eq!(
        asks,
        [("base/amd64".into(), true), ("app/amd64".into(), false)]
    );
    // Records were written: the next run is fresh without asking.
    let ((result, events, _), asks) = fixture.run_with_remote(&options, |_| {}, &published);
    assert_eq!(result.unwrap().fresh, 2);
    assert!(asks.is_empty());
    assert_eq!(
        fresh_reason(&events, "app/amd64"),
        Some(Freshness::UpToDate)
    );
}

#[test]
fn a_base_pulled_by_tag_leaves_the_dependents_tag_standing_and_a_built_base_does_not() {
    let fixture = Fixture::new(&[BASE, APP]);
    let options = fixture.options();
    let ((result, _, fake), asks) = fixture.run_with_remote(
        &options,
        |_| {},
        &[("base/amd64", Answer::ByTag), ("app/amd64", Answer::ByTag)],
    );
    let summary = result.unwrap();
    assert_eq!((summary.built, summary.pulled), (0, 2));
    assert!(fake.calls().is_empty());
    assert_eq!(
        asks,
        [("base/amd64".into(), true), ("app/amd64".into(), true)]
    );
    // Pulled by tag: foreign entries, fresh as linuxkit would use them.
    let (result, events, _) = fixture.run(&options, |_| {});
    assert_eq!(result.unwrap().fresh, 2);
    assert_eq!(fresh_reason(&events, "app/amd64"), Some(Freshness::Foreign));

    // A base built here makes its dependent's published tag stale: asked by key only.
    let fixture = Fixture::new(&[BASE, APP]);
    let ((result, _, fake), asks) = fixture.run_with_remote(
        &options,
        |_| {},
        &[
            ("base/amd64", Answer::Unpublished),
            ("app/amd64", Answer::ByTag),
        ],
    );
    assert_eq!(result.unwrap().built, 2);
    assert_eq!(fake.calls(), ["base/amd64", "app/amd64"]);
    assert_eq!(
        asks,
        [("base/amd64".into(), true), ("app/amd64".into(), false)]
    );
}

#[test]
fn an_unreachable_registry_is_a_warning_and_force_never_asks() {
    let fixture = Fixture::new(&[BASE, APP]);
    let options = fixture.options();
    let published = [
        ("base/amd64", Answer::Unreachable),
        ("app/amd64", Answer::ByKey),
    ];
    let ((result, events, fake), _) = fixture.run_with_remote(&options, |_| {}, &published);
    let summary = result.unwrap();
    assert_eq!((summary.built, summary.pulled), (1, 1));
    assert_eq!(fake.calls(), ["base/amd64"]);
    assert!(
        events
            .iter()
            .any(|e| matches!(e, Event::RegistryUnavailable { .. }))
    );

    let forced = BuildOptions {
        force: true,
        ..fixture.options()
    };
    let ((result, _, _), asks) = fixture.run_with_remote(&forced, |_| {}, &published);
    assert_eq!(result.unwrap().built, 2);
    assert!(asks.is_empty());
}

#[test]
fn a_forced_build_that_gives_other_bytes_is_unreproducible_and_its_record_not_shared() {
    let fixture = Fixture::new(&[BASE]);
    let options = fixture.options();
    let (result, _, _) = fixture.run(&options, |_| {});
    let summary = result.unwrap();
    assert!(summary.units[0].recorded_key.is_some());
    let forced = BuildOptions {
        force: true,
        ..fixture.options()
    };
    // The same inputs, the same bytes: reproducible.
    let (result, events, _) = fixture.run(&forced, |_| {});
    assert!(result.unwrap().units[0].recorded_key.is_some());
    assert!(
        !events
            .iter()
            .any(|e| matches!(e, Event::Unreproducible { .. }))
    );
    // The same inputs, other bytes.
    let (result, events, _) = fixture.run(&forced, |fake| {
        fake.content
            .lock()
            .unwrap()
            .insert("base/amd64".into(), "other bytes".into());
    });
    let summary = result.unwrap();
    assert_eq!(summary.built, 1);
    assert!(summary.units[0].recorded_key.is_none());
    assert!(
        events
            .iter()
            .any(|e| matches!(e, Event::Unreproducible { unit, .. } if unit == "base/amd64"))
    );
}

#[test]
fn the_platforms_of_a_package_ready_at_once_go_to_the_executor_together() {
    // BASE and APP, each for amd64 and arm64.
    let two_platforms = || {
        let fixture = Fixture::new(&[BASE, APP]);
        for dir in ["base", "app"] {
            let path = fixture.dir.path().join(dir).join("build.yml");
            let yml = std::fs::read_to_string(path).unwrap();
            fixture.write(
                &format!("{dir}/build.yml"),
                &yml.replace("arches: [amd64]", "arches: [amd64, arm64]"),
            );
        }
        fixture.commit();
        fixture
    };
    let fixture = two_platforms();
    // `-j 1`: a group of two still runs (it takes every permit there is, not two).
    let options = BuildOptions {
        jobs: 1,
        keep_going: true,
        ..fixture.options()
    };
    let (result, events, fake) = fixture.run(&options, |f| {
        f.fail.lock().unwrap().insert("base/arm64".into());
    });
    let summary = result.unwrap();
    assert_eq!((summary.built, summary.failed, summary.skipped), (2, 1, 1));
    assert_eq!(
        fake.groups(),
        [
            vec!["base/amd64".to_owned(), "base/arm64".to_owned()],
            vec!["app/amd64".to_owned()],
        ]
    );
    assert_eq!(
        build_reason(&events, "base/arm64"),
        Some(BuildReason::FirstBuild)
    );
    // The next run hands over only what is left, each unit alone.
    let (result, _, fake) = fixture.run(&options, |_| {});
    let summary = result.unwrap();
    assert_eq!((summary.built, summary.fresh), (2, 2));
    assert_eq!(
        fake.groups(),
        [vec!["base/arm64".to_owned()], vec!["app/arm64".to_owned()]]
    );
    // Both platforms ready at once: one hand-over per package.
    let fixture = two_platforms();
    let (result, _, fake) = fixture.run(&options, |_| {});
    assert_eq!(result.unwrap().built, 4);
    assert_eq!(
        fake.groups(),
        [
            vec!["base/amd64".to_owned(), "base/arm64".to_owned()],
            vec!["app/amd64".to_owned(), "app/arm64".to_owned()],
        ]
    );
}
