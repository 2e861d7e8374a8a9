//! The registry before a build: units pulled by build record or by tag, when a tag may stand
//! for a unit, and an unreachable registry.

use super::*;

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
