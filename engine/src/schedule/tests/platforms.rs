//! A package's platforms ready at once go to the executor together (`build_together`), and
//! what a later run has left goes alone.

use super::*;

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
