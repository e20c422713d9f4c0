//! Checkpoint throughput and sizes, measured against `memcpy` in the same run.
//!
//! `cargo bench -p tern-migration --bench throughput`
//!
//! 1. capture (write_checkpoint into memory) of a 64 MiB bulk region whose
//!    chunks are all written since the last capture (every chunk hashed) and
//!    of the same region unchanged (hashes cached), and restore
//!    (read_checkpoint from memory: every chunk hashed), against copying the
//!    same bytes and against CRC-32C, SHA-256 and BLAKE3 alone;
//! 2. checkpoint size against raw state size for each workload (class S and W,
//!    stopped half way);
//! 3. delta size after 1% of a bulk region's chunks are dirtied;
//! 4. the longest step of each workload (class W), i.e. how long a migration
//!    request waits for the next migration point on this machine.

use std::hint::black_box;
use std::time::{Duration, Instant};
use tern_migration::{
    apply_delta, read_checkpoint, write_checkpoint, BulkRegion, HeaderInfo, Limits, Mode, Snapshot,
    Step,
};
use tern_workloads::{Class, Workload};

const BYTES: usize = 64 << 20;
const ROUNDS: usize = 7;

fn info(kind: &str, p: (u64, u64)) -> HeaderInfo {
    HeaderInfo {
        task_kind: kind.into(),
        task_version: 1,
        progress: p.0,
        progress_total: p.1,
        epoch: 1,
        created_unix_ms: 0,
        isa: std::env::consts::ARCH.into(),
        board: "bench".into(),
    }
}

/// Best of ROUNDS.
fn best(mut f: impl FnMut()) -> Duration {
    best_prepared(|| (), |()| f())
}

/// Best of ROUNDS of `f`, each given what an untimed `prepare` made.
fn best_prepared<T>(mut prepare: impl FnMut() -> T, mut f: impl FnMut(T)) -> Duration {
    (0..ROUNDS)
        .map(|_| {
            let input = prepare();
            let t = Instant::now();
            f(input);
            t.elapsed()
        })
        .min()
        .unwrap_or_default()
}

fn rate(d: Duration) -> f64 {
    BYTES as f64 / d.as_secs_f64() / 1e9
}

fn throughput() {
    let elems = BYTES / 8;
    let region = BulkRegion::from_vec(
        (0..elems as u64)
            .map(|i| (i as f64).sqrt())
            .collect::<Vec<f64>>(),
    );
    let src: Vec<u8> = region
        .as_slice()
        .iter()
        .flat_map(|x| x.to_le_bytes())
        .collect();
    let mut dst = vec![0u8; BYTES];
    let memcpy = best(|| {
        dst.copy_from_slice(black_box(&src));
        black_box(&dst);
    });
    // The integrity work alone on the same bytes: the floor under capture and restore.
    let crc = crc::Crc::<u32, crc::Table<16>>::new(&crc::CRC_32_ISCSI);
    let crc_t = best(|| {
        black_box(crc.checksum(black_box(&src)));
    });
    let sha_t = best(|| {
        use sha2::Digest;
        black_box(sha2::Sha256::digest(black_box(&src)));
    });
    let blake3_t = best(|| {
        black_box(blake3::hash(black_box(&src)));
    });
    let mut out = Vec::with_capacity(BYTES + (1 << 20));
    // A region fresh from its values: no chunk hashed yet (as after a round
    // in which the task wrote every chunk).
    let values = region.as_slice().to_vec();
    let cold = best_prepared(
        || BulkRegion::from_vec(values.clone()),
        |fresh| {
            out.clear();
            let mut snap = Snapshot::new();
            snap.bulk("data", &fresh);
            write_checkpoint(&mut out, &info("bench", (0, 1)), &snap, Mode::Full).unwrap();
            black_box(&out);
        },
    );
    // The same region again and again: its chunk hashes are cached.
    let capture = best(|| {
        out.clear();
        let mut snap = Snapshot::new();
        snap.bulk("data", &region);
        write_checkpoint(&mut out, &info("bench", (0, 1)), &snap, Mode::Full).unwrap();
        black_box(&out);
    });
    let restore = best(|| {
        black_box(read_checkpoint(black_box(&out[..]), &Limits::default()).unwrap());
    });
    println!(
        "bulk region of {} MiB (f64), best of {ROUNDS}:",
        BYTES >> 20
    );
    println!("  memcpy    {:6.2} GB/s", rate(memcpy));
    println!("  crc32c    {:6.2} GB/s  (alone)", rate(crc_t));
    println!("  sha256    {:6.2} GB/s  (alone)", rate(sha_t));
    println!("  blake3    {:6.2} GB/s  (alone)", rate(blake3_t));
    println!(
        "  capture, every chunk written since  {:6.2} GB/s  = {:.2} x memcpy",
        rate(cold),
        memcpy.as_secs_f64() / cold.as_secs_f64()
    );
    println!(
        "  capture, nothing written since      {:6.2} GB/s  = {:.2} x memcpy",
        rate(capture),
        memcpy.as_secs_f64() / capture.as_secs_f64()
    );
    println!(
        "  restore   {:6.2} GB/s  = {:.2} x memcpy",
        rate(restore),
        memcpy.as_secs_f64() / restore.as_secs_f64()
    );
    println!(
        "  file      {} bytes for {} bytes of state (+{:.3}%)",
        out.len(),
        BYTES,
        (out.len() - BYTES) as f64 * 100.0 / BYTES as f64
    );
}

fn sizes() {
    println!("checkpoint size against raw state, stopped at 50%:");
    for class in [Class::S, Class::W] {
        for (name, w) in [
            ("ep", Workload::Ep),
            ("is", Workload::Is),
            ("cg", Workload::Cg),
        ] {
            let mut t = w.start(class);
            while t.progress().done * 2 < t.progress().total {
                if t.step() != Step::Running {
                    break;
                }
            }
            let mut snap = Snapshot::new();
            t.save(&mut snap).unwrap();
            let raw = snap.state_bytes();
            let mut out = Vec::new();
            let p = t.progress();
            write_checkpoint(
                &mut out,
                &info(t.kind(), (p.done, p.total)),
                &snap,
                Mode::Full,
            )
            .unwrap();
            println!(
                "  {name} {}: state {:>10} B, checkpoint {:>10} B, overhead {:>6} B ({:.2}%)",
                class.letter(),
                raw,
                out.len(),
                out.len() as u64 - raw,
                (out.len() as u64 - raw) as f64 * 100.0 / raw as f64
            );
        }
    }
}

fn delta() {
    let elems = BYTES / 8;
    let mut region = BulkRegion::from_vec(vec![1.0f64; elems]);
    let mut snap = Snapshot::new();
    snap.bulk("data", &region);
    let mut full = Vec::new();
    let h = write_checkpoint(&mut full, &info("bench", (0, 1)), &snap, Mode::Full).unwrap();
    region.clear_dirty();
    let chunks = region.chunk_count();
    let dirty = chunks.div_ceil(100);
    // Spread the writes: one element in each of `dirty` chunks.
    for i in 0..dirty {
        let chunk = i * chunks / dirty;
        region.set(chunk * BulkRegion::<f64>::CHUNK_ELEMS, 2.0);
    }
    let mut snap = Snapshot::new();
    snap.bulk("data", &region);
    let mut d = Vec::new();
    write_checkpoint(
        &mut d,
        &info("bench", (1, 1)),
        &snap,
        Mode::Delta { base_hash: h },
    )
    .unwrap();
    let mut base = read_checkpoint(&full[..], &Limits::default()).unwrap();
    apply_delta(&mut base, &d[..], &Limits::default()).unwrap();
    println!(
        "delta after dirtying {dirty} of {chunks} chunks (1%): {} bytes = {:.2}% of the full checkpoint ({} bytes)",
        d.len(),
        d.len() as f64 * 100.0 / full.len() as f64,
        full.len()
    );
}

fn steps() {
    println!("step length, class W (the wait for a migration point):");
    for (name, w) in [
        ("ep", Workload::Ep),
        ("is", Workload::Is),
        ("cg", Workload::Cg),
    ] {
        let mut t = w.start(Class::W);
        let (mut longest, mut total, mut n) = (Duration::ZERO, Duration::ZERO, 0u32);
        loop {
            let start = Instant::now();
            let s = t.step();
            let d = start.elapsed();
            longest = longest.max(d);
            total += d;
            n += 1;
            if let Step::Finished { verified, .. } = s {
                assert!(verified, "{name} W did not verify");
                break;
            }
        }
        println!(
            "  {name} W: {n} steps, mean {:.3} ms, longest {:.3} ms",
            total.as_secs_f64() * 1e3 / f64::from(n),
            longest.as_secs_f64() * 1e3
        );
    }
}

fn main() {
    // `cargo test --benches` runs this binary too; keep that cheap.
    if std::env::args().any(|a| a == "--bench") {
        throughput();
        sizes();
        delta();
        steps();
    } else {
        println!("throughput bench: run with `cargo bench -p tern-migration --bench throughput`");
    }
}
