//! Any module a peer or a user uploads: reassembled from its parts as the
//! node does, checked, rewritten, compiled and, when accepted, started and
//! stepped under a small fuel budget. Every outcome is a value or a typed
//! refusal, never a panic; an accepted module's rewrite is a fixed point
//! (a peer that gets the stored bytes names them alike).
#![no_main]

use std::sync::OnceLock;
use std::time::Instant;

use libfuzzer_sys::fuzz_target;
use tern_hal::MonotonicClock;
use tern_migration::TaskCatalog;
use tern_protocol::module::{ModuleUpload, MAX_MODULE_BYTES};
use tern_wasm::module::hex;
use tern_wasm::{prepare, Limits, WasmCatalog};

/// The host's monotonic clock (the fuel gauge times steps with it).
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

/// Small limits: the fuzzer explores structure, not run time or memory.
const LIMITS: Limits = Limits {
    max_module_bytes: 1 << 20,
    max_pages: 64,
    max_step_fuel: 20_000,
};

fuzz_target!(|data: &[u8]| {
    // The first byte sets the part size, the rest is the module.
    let Some((&size, module)) = data.split_first() else {
        return;
    };
    let size = usize::from(size).max(1);
    let mut upload = ModuleUpload::new();
    let mut whole = None;
    for (i, part) in module.chunks(size).enumerate() {
        let offset = (i * size) as u64;
        match upload.part(offset, module.len() as u64, part, MAX_MODULE_BYTES) {
            Ok(done) => whole = done,
            Err(_) => return,
        }
    }
    let Some(whole) = whole else {
        return;
    };
    assert_eq!(whole, module);

    let catalog = WasmCatalog::new(&HostClock, LIMITS);
    let Ok(id) = catalog.add_module(&whole) else {
        return;
    };
    let stored = catalog.module(&id).expect("an accepted module is held");
    let again = prepare(&stored, &LIMITS).expect("the stored module passes its own checks");
    assert_eq!(again.id, id);
    assert_eq!(&again.bytes[..], &stored[..]);

    // Its first steps: typed failures (traps, error codes, fuel) only.
    let Ok(mut task) = catalog.start(&["wasm", &hex(&id), "--", "3", "5"]) else {
        return;
    };
    for _ in 0..8 {
        if let tern_migration::Step::Finished { .. } = task.task.step() {
            break;
        }
    }
});
