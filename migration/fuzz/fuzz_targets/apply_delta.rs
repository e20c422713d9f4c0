//! Deltas against a fixed valid base: an error leaves the base unchanged, and
//! nothing panics. Input starting with 0 is taken as a raw delta; otherwise it is
//! a list of edits (2-byte offset, 1-byte value) and a cut applied to a valid
//! delta, so the fuzzer also works close to well-formed input.
#![no_main]

use libfuzzer_sys::fuzz_target;
use std::sync::OnceLock;
use tern_migration::{
    apply_delta, read_checkpoint, write_checkpoint, BulkRegion, HeaderInfo, Limits, Mode, Restored,
    Snapshot,
};

/// The base, and a valid delta against it.
fn fixture() -> &'static (Restored, Vec<u8>) {
    static FIXTURE: OnceLock<(Restored, Vec<u8>)> = OnceLock::new();
    FIXTURE.get_or_init(|| {
        let mut region = BulkRegion::from_vec((0..20_000u32).collect::<Vec<_>>());
        let mut snap = Snapshot::new();
        snap.typed("state", &(7u32, 1.5f64)).unwrap();
        snap.bulk("data", &region);
        let info = HeaderInfo {
            task_kind: "fuzz".into(),
            task_version: 1,
            progress: 1,
            progress_total: 2,
            epoch: 1,
            created_unix_ms: 0,
            isa: "x86_64".into(),
            board: "fuzz".into(),
        };
        let mut bytes = Vec::new();
        let hash = write_checkpoint(&mut bytes, &info, &snap, Mode::Full).unwrap();
        let base = read_checkpoint(&bytes[..], &Limits::default()).unwrap();
        region.clear_dirty();
        region.set(17_000, 1);
        let mut snap = Snapshot::new();
        snap.typed("state", &(8u32, 2.5f64)).unwrap();
        snap.bulk("data", &region);
        let mut delta = Vec::new();
        write_checkpoint(&mut delta, &info, &snap, Mode::Delta { base_hash: hash }).unwrap();
        (base, delta)
    })
}

fuzz_target!(|data: &[u8]| {
    let (base, valid) = fixture();
    let input = match data.split_first() {
        Some((0, raw)) => raw.to_vec(),
        Some((cut, edits)) => {
            let mut d = valid.clone();
            for e in edits.chunks_exact(3) {
                let at = usize::from(u16::from_le_bytes([e[0], e[1]])) % d.len();
                d[at] = e[2];
            }
            if *cut < 128 {
                d.truncate(d.len() * usize::from(*cut) / 128);
            }
            d
        }
        None => Vec::new(),
    };
    let mut target = base.clone();
    if apply_delta(&mut target, &input[..], &Limits::default()).is_err() {
        assert!(&target == base, "a rejected delta modified the base");
    }
});
