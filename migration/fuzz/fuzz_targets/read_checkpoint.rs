//! Any input to the checkpoint reader: an error or a checkpoint, never a panic.
#![no_main]

use libfuzzer_sys::fuzz_target;
use tern_migration::{read_checkpoint, Limits};

fuzz_target!(|data: &[u8]| {
    // Small limit: the fuzzer explores structure, not allocation sizes.
    let limits = Limits {
        max_total_bytes: 1 << 20,
    };
    let _ = read_checkpoint(data, &limits);
});
