//! Cross-ISA migration on the host: the same run-task source built for x86_64
//! and aarch64 (run under `qemu-aarch64`), a task started on one ISA, stopped,
//! resumed on the other, stopped again, and finished on the first; it must
//! verify and print exactly what an uninterrupted run prints.
//!
//! Needs the `aarch64-unknown-linux-gnu` rustup target, `aarch64-linux-gnu-gcc`
//! and `qemu-aarch64` (CI installs them); the test fails, naming what is missing.

use std::fs::File;
use std::io::BufReader;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::OnceLock;
use tern_migration::std_io::ReadSource;
use tern_migration::{read_checkpoint, Limits};

#[derive(Clone, Copy, PartialEq, Debug)]
enum Isa {
    X86_64,
    Aarch64,
}

struct Bins {
    x86: PathBuf,
    arm: PathBuf,
}

/// Builds run-task (release) for both ISAs once, in `<target>/cross`.
fn bins() -> &'static Bins {
    static BINS: OnceLock<Bins> = OnceLock::new();
    BINS.get_or_init(|| {
        let exe = PathBuf::from(env!("CARGO_BIN_EXE_run-task"));
        let target = exe.parent().and_then(Path::parent).expect("target dir").to_path_buf();
        let cross = target.join("cross");
        let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
        let status = Command::new(env!("CARGO"))
            .current_dir(&root)
            .env("CARGO_TARGET_DIR", &cross)
            .args(["build", "--release", "-p", "tern-run-task", "--bin", "run-task"])
            .args(["--target", "x86_64-unknown-linux-gnu", "--target", "aarch64-unknown-linux-gnu"])
            .status()
            .expect("running cargo");
        assert!(
            status.success(),
            "cross build failed: needs `rustup target add aarch64-unknown-linux-gnu` and aarch64-linux-gnu-gcc (the linker .cargo/config.toml names)"
        );
        Bins {
            x86: cross.join("x86_64-unknown-linux-gnu/release/run-task"),
            arm: cross.join("aarch64-unknown-linux-gnu/release/run-task"),
        }
    })
}

fn run(isa: Isa, args: &[&str]) -> Output {
    let b = bins();
    let out = match isa {
        Isa::X86_64 => Command::new(&b.x86).args(args).output(),
        Isa::Aarch64 => Command::new("qemu-aarch64")
            .args(["-L", "/usr/aarch64-linux-gnu"])
            .arg(&b.arm)
            .args(args)
            .output(),
    }
    .unwrap_or_else(|e| panic!("running run-task on {isa:?}: {e} (is qemu-aarch64 installed?)"));
    assert!(
        out.status.success(),
        "run-task {args:?} on {isa:?} failed: {}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

fn header_isa(path: &Path) -> (String, u64) {
    let f = File::open(path).unwrap();
    let r = read_checkpoint(ReadSource(BufReader::new(f)), &Limits::default()).unwrap();
    (r.header.isa, r.header.progress)
}

/// The report lines after the benchmark completed (no resume banners).
fn report(out: &Output) -> String {
    let s = String::from_utf8_lossy(&out.stdout);
    let at = s
        .find("Benchmark Completed")
        .expect("a completed benchmark");
    s[at..].to_string()
}

fn migrate(workload: &str, first: Isa, second: Isa) {
    let dir = std::env::temp_dir().join(format!(
        "tern-cross-{workload}-{first:?}-{}",
        std::process::id()
    ));
    std::fs::create_dir_all(&dir).unwrap();
    let c1 = dir.join("one.ckpt");
    let c2 = dir.join("two.ckpt");
    let (c1s, c2s) = (c1.to_str().unwrap(), c2.to_str().unwrap());
    let straight = run(first, &[workload, "--class", "S"]);
    run(
        first,
        &[
            workload,
            "--class",
            "S",
            "--stop-at",
            "30",
            "--checkpoint",
            c1s,
        ],
    );
    run(
        second,
        &[
            workload,
            "--resume",
            c1s,
            "--stop-at",
            "65",
            "--checkpoint",
            c2s,
        ],
    );
    let end = run(first, &[workload, "--class", "S", "--resume", c2s]);
    let (isa1, p1) = header_isa(&c1);
    let (isa2, p2) = header_isa(&c2);
    let name = |i: Isa| match i {
        Isa::X86_64 => "x86_64",
        Isa::Aarch64 => "aarch64",
    };
    assert_eq!((isa1.as_str(), isa2.as_str()), (name(first), name(second)));
    assert!(p1 > 0 && p2 > p1, "progress {p1} then {p2}");
    let r = report(&end);
    assert!(r.contains("VERIFICATION SUCCESSFUL"), "{r}");
    assert_eq!(
        r,
        report(&straight),
        "migrated run differs from a straight run"
    );
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn ep_x86_to_arm_and_back() {
    migrate("ep", Isa::X86_64, Isa::Aarch64);
}

#[test]
fn ep_arm_to_x86_and_back() {
    migrate("ep", Isa::Aarch64, Isa::X86_64);
}

#[test]
fn is_x86_to_arm_and_back() {
    migrate("is", Isa::X86_64, Isa::Aarch64);
}

#[test]
fn is_arm_to_x86_and_back() {
    migrate("is", Isa::Aarch64, Isa::X86_64);
}

#[test]
fn cg_x86_to_arm_and_back() {
    migrate("cg", Isa::X86_64, Isa::Aarch64);
}

#[test]
fn cg_arm_to_x86_and_back() {
    migrate("cg", Isa::Aarch64, Isa::X86_64);
}
