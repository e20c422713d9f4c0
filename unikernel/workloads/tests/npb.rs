//! NPB class S runs verify, with and without a checkpoint/restore in the middle.

use tern_migration::{
    read_checkpoint, write_checkpoint, HeaderInfo, Limits, Mode, Snapshot, Step, Task,
};
use tern_workloads::{registry, Class, Workload};

fn run(t: &mut dyn Task) -> (bool, String, u64) {
    let mut steps = 0;
    loop {
        steps += 1;
        if let Step::Finished { verified, report } = t.step() {
            let p = t.progress();
            assert_eq!(p.done, p.total, "progress ends at its total");
            return (verified, report, steps);
        }
    }
}

fn migrate(t: &dyn Task) -> Box<dyn Task> {
    let mut snap = Snapshot::new();
    t.save(&mut snap).unwrap();
    let info = HeaderInfo::for_task(t, 1, 0, "x86_64", "test");
    let mut bytes = Vec::new();
    write_checkpoint(&mut bytes, &info, &snap, Mode::Full).unwrap();
    registry()
        .load(read_checkpoint(&bytes[..], &Limits::default()).unwrap())
        .unwrap()
}

fn check(w: Workload) {
    let (ok, report, steps) = run(&mut *w.start(Class::S));
    assert!(ok, "{report}");
    assert!(report.contains("VERIFICATION SUCCESSFUL"));
    // Stop at a third of the way, move the state through a checkpoint, finish.
    let mut t = w.start(Class::S);
    for _ in 0..steps / 3 {
        assert_eq!(t.step(), Step::Running);
    }
    let before = t.progress();
    let mut moved = migrate(&*t);
    assert_eq!(moved.progress(), before);
    let (ok2, report2, _) = run(&mut *moved);
    assert!(ok2);
    assert_eq!(
        report2, report,
        "a migrated run gives bit-identical results"
    );
}

#[test]
fn ep_class_s_verifies() {
    check(Workload::Ep);
}

#[test]
fn is_class_s_verifies() {
    check(Workload::Is);
}

#[test]
fn cg_class_s_verifies() {
    check(Workload::Cg);
}

#[test]
fn state_bytes_covers_the_saved_state() {
    for w in [Workload::Ep, Workload::Is, Workload::Cg] {
        for c in [Class::S, Class::W] {
            let t = w.start(c);
            let mut snap = Snapshot::new();
            t.save(&mut snap).unwrap();
            let estimate = w.state_bytes(c);
            assert!(
                snap.state_bytes() <= estimate + 1024,
                "{} {c:?}: saved {} > estimate {estimate}",
                w.name(),
                snap.state_bytes()
            );
            // IS and CG hold their state in bulk regions: the estimate is tight.
            if w != Workload::Ep {
                assert!(
                    snap.state_bytes() >= estimate / 10 * 9,
                    "{} {c:?}",
                    w.name()
                );
            }
        }
    }
}
