//! Resources stay bounded by `-j` with many units (issue #11): builds in flight, and the
//! tasks the scheduler keeps alive.

use super::*;

#[test]
fn many_ready_units_keep_builds_and_tasks_within_jobs() {
    let names: Vec<String> = (0..250).map(|i| format!("p{i:03}")).collect();
    let packages: Vec<(&str, &str, &str)> = names
        .iter()
        .map(|n| (n.as_str(), "", "FROM scratch\nCOPY build.yml /\n"))
        .collect();
    let fixture = Fixture::new(&packages);
    let options = BuildOptions {
        jobs: 4,
        ..fixture.options()
    };
    let (result, _events, fake) = fixture.run(&options, |fake| {
        let mut slow = fake.slow.lock().unwrap();
        for n in &names {
            slow.insert(format!("{n}/amd64"), 2);
        }
    });
    let summary = result.unwrap();
    assert_eq!(summary.built, 250);
    let in_flight = fake.max_in_flight.load(Ordering::SeqCst);
    let tasks = fake.max_tasks.load(Ordering::SeqCst);
    assert!(in_flight <= 4, "{in_flight} builds at once with -j 4");
    // One task per group in flight (and nothing queued as a task).
    assert!(
        tasks <= 4,
        "{tasks} tasks alive with -j 4 and 250 ready units"
    );
}
