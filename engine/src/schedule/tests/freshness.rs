//! Fresh or rebuilt, and why: unchanged inputs, a changed base, early cutoff on the same bytes,
//! `--force` and `--dry-run`, and a forced build that is not reproducible.

use super::*;

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
