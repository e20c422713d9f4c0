//! Modules through the checks, the rewrite and the task kind: accepted and
//! refused modules, runs to a verified result, checkpoints taken mid-run and
//! resumed on a fresh catalog, fuel that bounds a step that never ends.

use std::sync::OnceLock;
use std::time::Instant;

use tern_hal::MonotonicClock;
use tern_migration::{
    read_checkpoint, write_checkpoint, HeaderInfo, Limits as ReadLimits, Mode, ModuleRefusal,
    ResumeError, Snapshot, Step, Task, TaskCatalog,
};
use tern_wasm::fixtures::{counter, expected_sum};
use tern_wasm::module::{global_export, hex};
use tern_wasm::{prepare, Limits, WasmCatalog};

/// The host's monotonic clock.
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

/// The counter fixture with `extra` in its step, as a module.
fn module(extra: &str) -> Vec<u8> {
    wat::parse_str(counter(extra)).unwrap()
}

fn catalog() -> WasmCatalog {
    WasmCatalog::new(&HostClock, Limits::default())
}

/// Steps `task` until it finishes (at most `max` steps).
fn run(task: &mut dyn Task, max: usize) -> (bool, String) {
    for _ in 0..max {
        if let Step::Finished { verified, report } = task.step() {
            return (verified, report);
        }
    }
    panic!("not finished after {max} steps");
}

fn checkpoint(task: &dyn Task) -> Vec<u8> {
    let mut snap = Snapshot::new();
    task.save(&mut snap).unwrap();
    let info = HeaderInfo::for_task(task, 1, 0, "x86_64", "linux-host");
    let mut bytes = Vec::new();
    write_checkpoint(&mut bytes, &info, &snap, Mode::Full).unwrap();
    bytes
}

#[test]
fn a_module_is_rewritten_to_export_its_mutable_globals_and_named_by_its_hash() {
    let raw = module("");
    let p = prepare(&raw, &Limits::default()).unwrap();
    // Two mutable globals (sum, limit); the constant one stays unexported.
    assert_eq!(p.info.mutable_globals.len(), 2);
    let exports: Vec<String> = wasmparser::Parser::new(0)
        .parse_all(&p.bytes)
        .filter_map(|payload| match payload.unwrap() {
            wasmparser::Payload::ExportSection(r) => Some(
                r.into_iter()
                    .map(|e| e.unwrap().name.to_string())
                    .collect::<Vec<_>>(),
            ),
            _ => None,
        })
        .flatten()
        .collect();
    assert!(exports.contains(&global_export(0)), "{exports:?}");
    assert!(exports.contains(&global_export(1)), "{exports:?}");
    assert!(!exports.contains(&global_export(2)), "{exports:?}");
    // The rewrite is idempotent, so a peer that gets the stored bytes
    // computes the same identity.
    let again = prepare(&p.bytes, &Limits::default()).unwrap();
    assert_eq!(again.bytes, p.bytes);
    assert_eq!(again.id, p.id);
    let c = catalog();
    assert_eq!(c.add_module(&raw).unwrap(), p.id);
    assert_eq!(c.add_module(&p.bytes).unwrap(), p.id);
    assert_eq!(c.modules().len(), 1);
    assert_eq!(&*c.module(&p.id).unwrap(), p.bytes.as_slice());
}

fn refusal(wat: &str) -> ModuleRefusal {
    let bytes = wat::parse_str(wat).unwrap();
    prepare(&bytes, &Limits::default()).unwrap_err().reason
}

/// A module with the ABI's exports and `extra` fields.
fn abi(extra: &str) -> String {
    format!(
        r#"(module {extra}
  (func (export "tern_args") (param i32) (result i32) (i32.const 0))
  (func (export "tern_init") (param i32) (result i64) (i64.const 1))
  (func (export "tern_step") (result i64) (i64.const 1))
  (func (export "tern_result") (result i64) (i64.const 0)))"#
    )
}

#[test]
fn modules_that_break_the_abi_get_typed_refusals() {
    let limits = Limits::default();
    assert_eq!(
        prepare(b"\0asm\x01\0\0\0garbage", &limits)
            .unwrap_err()
            .reason,
        ModuleRefusal::Malformed
    );
    assert_eq!(
        prepare(b"not wasm", &limits).unwrap_err().reason,
        ModuleRefusal::Malformed
    );
    let ok = abi(r#"(memory (export "memory") 1)"#);
    assert!(prepare(&wat::parse_str(&ok).unwrap(), &limits).is_ok());
    assert_eq!(
        refusal(&abi(
            r#"(import "env" "clock" (func)) (memory (export "memory") 1)"#
        )),
        ModuleRefusal::UnknownImport
    );
    assert_eq!(
        refusal(&abi(
            r#"(import "tern" "log" (func (param i64))) (memory (export "memory") 1)"#
        )),
        ModuleRefusal::UnknownImport
    );
    assert_eq!(
        refusal(&abi(
            r#"(import "tern" "mem" (memory 1)) (memory (export "memory") 1)"#
        )),
        // Two memories: multi-memory is not a feature tasks may use.
        ModuleRefusal::Malformed
    );
    assert_eq!(
        refusal(&abi(r#"(memory (export "memory") 1) (func $s) (start $s)"#)),
        ModuleRefusal::StartFunction
    );
    assert_eq!(
        refusal(&abi(r#"(memory (export "memory") 1) (table 1 funcref)
               (func (table.set (i32.const 0) (ref.null func)))"#)),
        ModuleRefusal::TableMutation
    );
    assert_eq!(
        refusal(&abi(
            r#"(memory (export "memory") 1) (data "x") (func (data.drop 0))"#
        )),
        ModuleRefusal::SegmentDrop
    );
    assert_eq!(refusal(&abi("")), ModuleRefusal::Memory);
    assert_eq!(refusal(&abi(r#"(memory 1)"#)), ModuleRefusal::MissingExport);
    assert_eq!(
        refusal(&abi(r#"(memory (export "memory") 4096)"#)),
        ModuleRefusal::MemoryTooLarge
    );
    assert_eq!(
        refusal(&abi(
            r#"(memory (export "memory") 1) (global (mut funcref) (ref.null func))"#
        )),
        ModuleRefusal::UnsupportedGlobal
    );
    assert_eq!(
        refusal(
            r#"(module (memory (export "memory") 1)
                 (func (export "tern_args") (param i32) (result i32) (i32.const 0))
                 (func (export "tern_init") (param i32) (result i32) (i32.const 1))
                 (func (export "tern_step") (result i64) (i64.const 1))
                 (func (export "tern_result") (result i64) (i64.const 0)))"#
        ),
        ModuleRefusal::WrongExportType
    );
    assert_eq!(
        refusal(
            r#"(module (memory (export "memory") 1)
                 (func (export "tern_args") (param i32) (result i32) (i32.const 0)))"#
        ),
        ModuleRefusal::MissingExport
    );
    let small = Limits {
        max_module_bytes: 10,
        ..limits
    };
    assert_eq!(
        prepare(&wat::parse_str(&ok).unwrap(), &small)
            .unwrap_err()
            .reason,
        ModuleRefusal::TooLarge
    );
}

/// Starts the counter task for `n` on `c`, expecting `expect` (hex).
fn start(c: &WasmCatalog, id: &[u8; 32], n: u64, expect: Option<String>) -> Box<dyn Task> {
    let module = hex(id);
    let n = n.to_string();
    let mut args = vec!["wasm", &module, "--name", "counter"];
    if let Some(e) = &expect {
        args.extend(["--expect", e]);
    }
    args.push(&n);
    let plan = c.plan(&args).unwrap();
    assert_eq!(plan.name, "counter");
    assert_eq!(plan.state_bytes, 65_536);
    c.start(&args).unwrap().task
}

#[test]
fn a_task_runs_to_its_expected_result_and_logs() {
    let c = catalog();
    let id = c.add_module(&module("")).unwrap();
    let n = 25_000;
    let mut task = start(&c, &id, n, Some(hex(&expected_sum(n))));
    assert_eq!(task.kind(), "wasm");
    assert_eq!(task.module(), Some(id));
    let (verified, report) = run(&mut *task, 10_000);
    assert!(verified, "{report}");
    assert!(report.starts_with("VERIFICATION SUCCESSFUL"), "{report}");
    assert_eq!(task.progress().done, n);
    assert_eq!(task.take_log(), vec!["started".to_string()]);
    assert!(task.take_log().is_empty());

    let mut wrong = start(&c, &id, n, Some("00".into()));
    let (verified, report) = run(&mut *wrong, 10_000);
    assert!(!verified);
    assert!(report.contains("VERIFICATION FAILED"), "{report}");
    let mut unchecked = start(&c, &id, 10, None);
    let (verified, report) = run(&mut *unchecked, 100);
    assert!(!verified);
    assert!(report.contains("VERIFICATION SKIPPED"), "{report}");
    // Bad arguments are the module's own error code.
    let module = hex(&id);
    let mut bad = c.start(&["wasm", &module, "x1"]).unwrap().task;
    let (verified, report) = run(&mut *bad, 10);
    assert!(!verified);
    assert!(
        report.contains("tern_init returned error code -2"),
        "{report}"
    );
}

#[test]
fn bad_run_arguments_are_refused_before_anything_starts() {
    let c = catalog();
    assert!(!c.claims(&["ep", "S"]));
    assert!(c.claims(&["wasm"]));
    assert!(c.plan(&["wasm"]).unwrap_err().contains("usage"));
    assert!(c
        .plan(&["wasm", "12"])
        .unwrap_err()
        .contains("not a module id"));
    let absent = hex(&[7; 32]);
    assert!(c
        .plan(&["wasm", &absent])
        .unwrap_err()
        .contains("not held here"));
    let id = c.add_module(&module("")).unwrap();
    let module = hex(&id);
    assert!(c
        .plan(&["wasm", &module, "--expect", "xyz"])
        .unwrap_err()
        .contains("not hex"));
}

#[test]
fn a_checkpoint_taken_mid_run_resumes_on_another_catalog_and_ends_alike() {
    let raw = module("");
    let here = catalog();
    let id = here.add_module(&raw).unwrap();
    let n = 40_000;
    let expect = hex(&expected_sum(n));
    let mut task = start(&here, &id, n, Some(expect.clone()));
    for _ in 0..15 {
        assert_eq!(task.step(), Step::Running);
    }
    while !task.at_migration_point() {
        task.step();
    }
    let progress = task.progress();
    assert!(progress.done > 0 && progress.done < n, "{progress:?}");
    let bytes = checkpoint(&*task);
    let restored = read_checkpoint(&bytes[..], &ReadLimits::default()).unwrap();
    assert_eq!(restored.header.task_kind, "wasm");

    // A node without the module refuses, naming it.
    let there = catalog();
    match there.resume(restored) {
        Err(ResumeError::MissingModule(m)) => assert_eq!(m, id),
        other => panic!("{:?}", other.map(|t| t.name)),
    }
    // With the module (as a peer sends it: the stored bytes) it resumes.
    let stored = here.module(&id).unwrap();
    assert_eq!(there.add_module(&stored).unwrap(), id);
    let restored = read_checkpoint(&bytes[..], &ReadLimits::default()).unwrap();
    let mut moved = there.resume(restored).unwrap();
    assert_eq!(moved.name, "counter");
    assert_eq!(moved.task.progress(), progress);
    // The checkpoint of the resumed task is the same bytes (same state).
    assert_eq!(checkpoint(&*moved.task), bytes);
    let (verified, report) = run(&mut *moved.task, 10_000);
    assert!(verified, "{report}");
    let (verified, report) = run(&mut *task, 10_000);
    assert!(verified, "{report}");
    // inspect's decoding of the regions.
    let restored = read_checkpoint(&bytes[..], &ReadLimits::default()).unwrap();
    let text: Vec<String> = restored
        .regions
        .iter()
        .filter_map(|r| match &r.data {
            tern_migration::BulkData::U8(b) => tern_wasm::describe(&r.name, b),
            _ => None,
        })
        .collect();
    assert!(text.iter().any(|t| t.contains(&hex(&id))), "{text:?}");
    assert!(text.iter().any(|t| t.contains("1 pages")), "{text:?}");
    assert!(
        text.iter().any(|t| t.contains("2 mutable globals")),
        "{text:?}"
    );
}

#[test]
fn a_step_that_never_ends_is_bounded_by_fuel_and_is_never_checkpointed() {
    let c = catalog();
    let id = c
        .add_module(&module("(loop $forever (br $forever))"))
        .unwrap();
    let mut task = start(&c, &id, 10, None);
    // Init ends; then each step returns after its budget.
    assert_eq!(task.step(), Step::Running);
    assert!(task.at_migration_point());
    for _ in 0..20 {
        let t = Instant::now();
        assert_eq!(task.step(), Step::Running);
        // Far below a second even in a loaded debug run.
        assert!(t.elapsed().as_millis() < 500);
        assert!(!task.at_migration_point());
    }
    let mut snap = Snapshot::new();
    assert_eq!(
        task.save(&mut snap).unwrap_err(),
        tern_migration::WriteError::NotAtMigrationPoint
    );
    assert!(c.gauge().per_ms() > 0);
}

#[test]
fn a_trap_or_memory_growth_past_the_limit_ends_the_task_unverified() {
    let c = catalog();
    let id = c.add_module(&module("(unreachable)")).unwrap();
    let mut task = start(&c, &id, 10, None);
    let (verified, report) = run(&mut *task, 10);
    assert!(!verified);
    assert!(report.contains("trap"), "{report}");

    let small = WasmCatalog::new(
        &HostClock,
        Limits {
            max_pages: 4,
            ..Limits::default()
        },
    );
    // memory.grow past the cap returns -1 (here: an error code the step returns).
    let id = small
        .add_module(&module(
            "(if (i32.lt_s (memory.grow (i32.const 8)) (i32.const 0)) (then (return (i64.const -3))))",
        ))
        .unwrap();
    let mut task = start(&small, &id, 10, None);
    let (verified, report) = run(&mut *task, 10);
    assert!(!verified);
    assert!(
        report.contains("tern_step returned error code -3 (its memory may not grow past 256 KiB)"),
        "{report}"
    );
}
