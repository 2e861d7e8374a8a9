//! Failures and cancellation: a failed unit skips its dependents and records nothing,
//! `--keep-going` builds the rest, and Ctrl-C drops running builds.

use super::*;

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
