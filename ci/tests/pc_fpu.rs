//! The PC kernel computes floating point on the FPU (SSE2,
//! docs/architecture.md "Floating point on the PC"): its ELF links none of
//! the soft-float helpers a `x86_64-unknown-none` build calls for every
//! `f64` operation, and NPB EP, CG and IS (EP and CG compute in `f64`) all
//! verify on a PC node while its local APIC timer interrupts them on every
//! tick: the interrupt entry saves and restores the SSE state, so an
//! interrupt that clobbered an XMM register mid-computation would fail NPB's
//! verification. Needs root (network namespace).

use std::time::Duration;

use object::{Object, ObjectSymbol};
use tern_client::random_key;
use tern_flash::{Board, Variant};
use tern_lab::cluster::Cluster;
use tern_lab::node::kernel;
use tern_protocol::{NodeEvent, Security};

/// compiler-builtins' soft-float arithmetic, comparisons and conversions
/// for `f64` and `f32`: a soft-float kernel links these, a hard-float one
/// needs none of them.
const SOFT_FLOAT_HELPERS: [&str; 16] = [
    "__adddf3",
    "__subdf3",
    "__muldf3",
    "__divdf3",
    "__addsf3",
    "__mulsf3",
    "__divsf3",
    "__floatsidf",
    "__floatdidf",
    "__floatundidf",
    "__fixdfsi",
    "__fixdfdi",
    "__extendsfdf2",
    "__truncdfsf2",
    "__ltdf2",
    "__unorddf2",
];

/// EP class S, the longest of the three, takes seconds with an FPU (and
/// 100 s without one); this bounds it with room for a loaded machine.
const RUN_TIMEOUT: Duration = Duration::from_secs(240);

#[test]
fn the_pc_kernel_links_no_soft_float_helpers() {
    let path = kernel(Board::Pc, Variant::Tern).unwrap();
    let bytes = std::fs::read(&path).unwrap();
    let elf = object::File::parse(&bytes[..]).unwrap();
    let linked: Vec<&str> = elf
        .symbols()
        .filter_map(|symbol| symbol.name().ok())
        .filter(|name| SOFT_FLOAT_HELPERS.contains(name))
        .collect();
    assert!(
        linked.is_empty(),
        "{} links soft-float helpers: {linked:?}",
        path.display()
    );
    // The check reads a real symbol table (a stripped kernel would pass
    // vacuously).
    assert!(elf.symbols().any(|s| s.name() == Ok("pc_main")));
}

#[test]
fn npb_verifies_on_the_pc_while_interrupts_run() {
    let cluster =
        Cluster::start("fpu", &[Board::Pc], Security::Key(random_key().unwrap())).unwrap();
    let mut client = cluster.client(0, Duration::from_secs(30)).unwrap();
    let started: Vec<(u64, &str)> = ["ep", "cg", "is"]
        .into_iter()
        .map(|kernel| (client.start_task(&[kernel, "S"]).unwrap(), kernel))
        .collect();
    let mut watch = cluster.watch();
    for (task_id, name) in started {
        let verified = watch
            .wait(&cluster, 0, name, RUN_TIMEOUT, |event| match event {
                NodeEvent::TaskFinished { task, verified, .. } if task.task_id == task_id => {
                    Some(*verified)
                }
                _ => None,
            })
            .unwrap();
        assert!(
            verified,
            "NPB {name} class S failed its verification on the PC"
        );
    }
}
