//! The fixture: a git repository of packages and a cache, loaded into a graph and built by
//! the scheduler with the fakes; and the events a test looks for.

use super::*;

/// What a scheduler run gave: its result, its events, the executor.
pub(super) type Run = (Result<Summary, BuildError>, Vec<Event>, Arc<Fake>);

/// A git repository of packages: `(dir, Dockerfile)`; `app`-like packages name their base
/// through `@lkt:pkg:`.
pub(super) struct Fixture {
    pub(super) dir: tempfile::TempDir,
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
    pub(super) fn new(packages: &[(&str, &str, &str)]) -> Fixture {
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

    pub(super) fn write(&self, rel: &str, text: &str) {
        let path = self.dir.path().join(rel);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, text).unwrap();
    }

    pub(super) fn commit(&self) {
        git(self.dir.path(), &["add", "-A"]);
        git(self.dir.path(), &["commit", "-q", "-m", "change"]);
    }

    pub(super) fn options(&self) -> BuildOptions {
        BuildOptions {
            jobs: 4,
            ..BuildOptions::default()
        }
    }

    /// Loads the graph and runs the scheduler with `fake` (made by `setup` for the graph).
    pub(super) fn run(&self, options: &BuildOptions, setup: impl FnOnce(&Fake)) -> Run {
        self.run_with_remote(options, setup, &[]).0
    }

    /// [`Fixture::run`] with a [`FakeRemote`] answering `published` (unit → answer).
    pub(super) fn run_with_remote(
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

    pub(super) fn load(&self) -> (Arc<BuildGraph>, Arc<Store>, Loader) {
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

pub(super) const BASE: (&str, &str, &str) = ("base", "", "FROM scratch\nCOPY build.yml /\n");
pub(super) const APP: (&str, &str, &str) = (
    "app",
    "buildArgs:\n  - BASE=@lkt:pkg:../base\n",
    "ARG BASE\nFROM ${BASE}\nCOPY build.yml /app.yml\n",
);

pub(super) fn fresh_reason(events: &[Event], unit: &str) -> Option<Freshness> {
    events.iter().find_map(|e| match e {
        Event::Fresh {
            unit: u, reason, ..
        } if u == unit => Some(reason.clone()),
        _ => None,
    })
}

pub(super) fn build_reason(events: &[Event], unit: &str) -> Option<BuildReason> {
    events.iter().find_map(|e| match e {
        Event::Started {
            unit: u, reason, ..
        } if u == unit => Some(reason.clone()),
        _ => None,
    })
}

pub(super) fn skipped(events: &[Event], unit: &str) -> Option<SkipReason> {
    events.iter().find_map(|e| match e {
        Event::Skipped { unit: u, reason } if u == unit => Some(reason.clone()),
        _ => None,
    })
}
