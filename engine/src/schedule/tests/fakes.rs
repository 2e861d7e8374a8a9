//! The fakes the scheduler runs with: an executor that "builds" tiny real images into the
//! store (or fails, hangs, or is slow, as a test asks), and a registry of published units.

use super::*;

/// An executor that "builds" an image whose one layer holds what `content` says for the unit.
pub(super) struct Fake {
    graph: Arc<BuildGraph>,
    store: Arc<Store>,
    /// Unit → the bytes of its image's layer (default: the unit's name).
    pub(super) content: Mutex<BTreeMap<String, String>>,
    pub(super) fail: Mutex<HashSet<String>>,
    /// Units whose build never ends (until cancelled).
    pub(super) hang: Mutex<HashSet<String>>,
    /// Units whose build waits this long first.
    pub(super) slow: Mutex<BTreeMap<String, u64>>,
    calls: Mutex<Vec<String>>,
    /// The units of each `build_together` call.
    groups: Mutex<Vec<Vec<String>>>,
    pub(super) hung: AtomicUsize,
    pub(super) dropped: Arc<AtomicBool>,
    /// Builds running now, the most ever at once, and the most tokio tasks alive seen by a
    /// build (what `-j` must bound).
    in_flight: AtomicUsize,
    pub(super) max_in_flight: AtomicUsize,
    pub(super) max_tasks: AtomicUsize,
}

impl Fake {
    pub(super) fn new(graph: Arc<BuildGraph>, store: Arc<Store>) -> Arc<Fake> {
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
            in_flight: AtomicUsize::new(0),
            max_in_flight: AtomicUsize::new(0),
            max_tasks: AtomicUsize::new(0),
        })
    }

    pub(super) fn calls(&self) -> Vec<String> {
        self.calls.lock().unwrap().clone()
    }

    pub(super) fn groups(&self) -> Vec<Vec<String>> {
        self.groups.lock().unwrap().clone()
    }
}

/// Counts a build in flight until dropped (also when cancelled).
struct InFlight<'a>(&'a AtomicUsize);

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
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
            let now = self.in_flight.fetch_add(1, Ordering::SeqCst) + 1;
            self.max_in_flight.fetch_max(now, Ordering::SeqCst);
            let tasks = tokio::runtime::Handle::current()
                .metrics()
                .num_alive_tasks();
            self.max_tasks.fetch_max(tasks, Ordering::SeqCst);
            let _running = InFlight(&self.in_flight);
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

/// What the fake registry holds for a unit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Answer {
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
pub(super) struct FakeRemote {
    pub(super) graph: Arc<BuildGraph>,
    pub(super) store: Arc<Store>,
    pub(super) published: BTreeMap<String, Answer>,
    pub(super) asks: Mutex<Vec<(String, bool)>>,
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
