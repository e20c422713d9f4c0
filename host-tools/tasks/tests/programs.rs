//! The nine programs built as users build them (cargo for Rust, clang for
//! C), each run in the nodes' interpreter (`tern-wasm`, as on a node) to the
//! reference answer of its native build: the same source gives the same
//! result natively and interpreted; and `npb`, the kernels' NPB code as a
//! Wasm task.

use std::sync::OnceLock;
use std::time::Instant;

use tern_flash::build::Workspace;
use tern_hal::MonotonicClock;
use tern_migration::{Step, TaskCatalog};
use tern_tasks::{build, build_all, manifest_path, program, Built, Manifest, TasksError, PROGRAMS};
use tern_wasm::module::hex;
use tern_wasm::{Limits, WasmCatalog};

struct HostClock;

impl MonotonicClock for HostClock {
    fn now_ns(&self) -> u64 {
        static START: OnceLock<Instant> = OnceLock::new();
        START.get_or_init(Instant::now).elapsed().as_nanos() as u64
    }
    fn counter_hz(&self) -> u64 {
        1_000_000_000
    }
}

/// Runs `built` in the interpreter as a node would, with its reference as
/// `--expect`: whether it verified, and its report.
fn run_in_interpreter(built: &Built) -> (bool, String) {
    let catalog = WasmCatalog::new(&HostClock, Limits::default());
    let bytes = std::fs::read(&built.wasm).unwrap();
    let id = catalog.add_module(&bytes).unwrap();
    let module = hex(&id);
    let expect = hex(built.expected.as_bytes());
    let mut args = vec![
        "wasm",
        &module,
        "--name",
        &built.name,
        "--expect",
        &expect,
        "--",
    ];
    args.extend(built.args.iter().map(String::as_str));
    let mut task = catalog.start(&args).unwrap().task;
    let started = Instant::now();
    let mut steps = 0u64;
    let (verified, report) = loop {
        steps += 1;
        if let Step::Finished { verified, report } = task.step() {
            break (verified, report);
        }
    };
    println!(
        "{:<10} {:>7} B module, {:>6} steps, {:>6.2} s here: {}",
        built.name,
        bytes.len(),
        steps,
        started.elapsed().as_secs_f64(),
        built.expected
    );
    (verified, report)
}

#[test]
fn each_program_builds_and_its_module_gives_the_native_answer() {
    let ws = Workspace::locate().unwrap();
    let manifest = build_all(&ws).unwrap();
    assert_eq!(Manifest::read(&manifest_path(&ws)).unwrap(), manifest);
    assert_eq!(manifest.tasks.len(), PROGRAMS.len());
    for built in &manifest.tasks {
        let (verified, report) = run_in_interpreter(built);
        assert!(verified, "{}: {report}", built.name);
    }
}

/// `npb` (not in the set) runs the kernels' NPB code interpreted to the
/// report of the same code run natively, NPB's verification included.
#[test]
fn npb_module_gives_the_native_report() {
    let ws = Workspace::locate().unwrap();
    let npb = program("npb").unwrap();
    let built = build(&ws, npb, Some(&["is", "S"])).unwrap();
    assert!(
        built.expected.contains("VERIFICATION SUCCESSFUL"),
        "{}",
        built.expected
    );
    let (verified, report) = run_in_interpreter(&built);
    assert!(verified, "{report}");
    let wrong = build(&ws, npb, Some(&["is", "Q"]));
    assert!(
        matches!(wrong, Err(TasksError::Reference { .. })),
        "{wrong:?}"
    );
}
