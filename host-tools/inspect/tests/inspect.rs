//! `inspect` on checkpoints written by `run-task` (built into `<target>/cross`,
//! shared with run-task's cross-ISA tests).

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::OnceLock;

fn run_task() -> &'static Path {
    static BIN: OnceLock<PathBuf> = OnceLock::new();
    BIN.get_or_init(|| {
        let exe = PathBuf::from(env!("CARGO_BIN_EXE_inspect"));
        let cross = exe
            .parent()
            .and_then(Path::parent)
            .expect("target dir")
            .join("cross");
        let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
        let status = Command::new(env!("CARGO"))
            .current_dir(&root)
            .env("CARGO_TARGET_DIR", &cross)
            .args([
                "build",
                "--release",
                "-p",
                "tern-run-task",
                "--bin",
                "run-task",
            ])
            .args(["--target", "x86_64-unknown-linux-gnu"])
            .status()
            .expect("running cargo");
        assert!(status.success(), "building run-task failed");
        cross.join("x86_64-unknown-linux-gnu/release/run-task")
    })
}

fn inspect(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_inspect"))
        .args(args)
        .output()
        .expect("running inspect")
}

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

/// Writes a checkpoint of `workload` class S stopped at `pct` percent.
fn checkpoint(dir: &Path, workload: &str, pct: &str) -> PathBuf {
    let path = dir.join(format!("{workload}-{pct}.ckpt"));
    let out = Command::new(run_task())
        .args([
            workload,
            "--class",
            "S",
            "--stop-at",
            pct,
            "--checkpoint",
            path.to_str().unwrap(),
        ])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    path
}

fn tempdir(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("tern-inspect-{name}-{}", std::process::id()));
    std::fs::create_dir_all(&d).unwrap();
    d
}

#[test]
fn show_json_has_the_documented_fields() {
    let dir = tempdir("show");
    let ck = checkpoint(&dir, "cg", "50");
    let out = inspect(&["show", ck.to_str().unwrap(), "--json"]);
    assert!(out.status.success());
    let j: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(j["format_version"], 2);
    assert_eq!(j["ok"], true);
    assert!(j["root"].is_string(), "{j}");
    assert_eq!(j["task"]["kind"], "npb-cg");
    assert_eq!(j["task"]["version"], 2);
    assert_eq!(j["source"]["isa"], std::env::consts::ARCH);
    assert_eq!(j["source"]["board"], "linux-host");
    assert!(j["progress"].as_u64().unwrap() * 2 >= j["progress_total"].as_u64().unwrap());
    let regions = j["regions"].as_array().unwrap();
    let names: Vec<&str> = regions
        .iter()
        .map(|r| r["name"].as_str().unwrap())
        .collect();
    assert_eq!(names[..3], ["state", "a", "colidx"]);
    for r in regions {
        assert_eq!(r["ok"], true);
        assert!(r["bytes"].is_u64() && r["chunks"].is_u64() && r["kind"].is_string());
    }
    assert!(regions[0]["decoded"].as_str().unwrap().contains("class: S"));
    // The human form shows the same.
    let text = stdout(&inspect(&["show", ck.to_str().unwrap()]));
    assert!(
        text.contains("npb-cg v2") && text.contains("status          OK"),
        "{text}"
    );
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn verify_names_the_damaged_region_and_chunk() {
    let dir = tempdir("verify");
    let ck = checkpoint(&dir, "is", "40");
    assert!(inspect(&["verify", ck.to_str().unwrap()]).status.success());
    // key_array's second chunk lies 64 KiB + a few hundred bytes into the file.
    let mut bytes = std::fs::read(&ck).unwrap();
    bytes[100_000] ^= 0x01;
    let bad = dir.join("bad.ckpt");
    std::fs::write(&bad, &bytes).unwrap();
    let out = inspect(&["verify", bad.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stdout(&out).contains("region key_array chunk 1: hash mismatch"),
        "{}",
        stdout(&out)
    );
    let j: serde_json::Value =
        serde_json::from_slice(&inspect(&["show", bad.to_str().unwrap(), "--json"]).stdout)
            .unwrap();
    assert_eq!(j["ok"], false);
    assert_eq!(j["regions"][1]["ok"], false);
    // Truncated file.
    std::fs::write(&bad, &bytes[..bytes.len() - 10]).unwrap();
    assert_eq!(
        inspect(&["verify", bad.to_str().unwrap()]).status.code(),
        Some(1)
    );
    // Not a file at all.
    assert_eq!(
        inspect(&["verify", dir.join("missing").to_str().unwrap()])
            .status
            .code(),
        Some(2)
    );
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn diff_reports_progress_and_changed_chunks() {
    let dir = tempdir("diff");
    let a = checkpoint(&dir, "ep", "20");
    let b = checkpoint(&dir, "ep", "70");
    let out = inspect(&["diff", a.to_str().unwrap(), b.to_str().unwrap()]);
    assert!(out.status.success());
    let text = stdout(&out);
    let line = text.lines().find(|l| l.starts_with("progress")).unwrap();
    let delta: i64 = line
        .rsplit('(')
        .next()
        .unwrap()
        .trim_end_matches(')')
        .parse()
        .unwrap();
    assert!(delta > 0, "{text}");
    assert!(
        text.contains("state        changed: 1 of 1 chunks [0]"),
        "{text}"
    );
    let same = stdout(&inspect(&[
        "diff",
        a.to_str().unwrap(),
        a.to_str().unwrap(),
    ]));
    assert!(
        same.contains("(+0)") && same.contains("1 regions unchanged"),
        "{same}"
    );
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn export_writes_the_region_bytes() {
    let dir = tempdir("export");
    let ck = checkpoint(&dir, "is", "60");
    let out_file = dir.join("keys.bin");
    let out = inspect(&[
        "export",
        ck.to_str().unwrap(),
        "--region",
        "key_array",
        "-o",
        out_file.to_str().unwrap(),
    ]);
    assert!(out.status.success(), "{}", stdout(&out));
    let f = std::fs::File::open(&ck).unwrap();
    let mut r = tern_migration::read_checkpoint(
        tern_migration::std_io::ReadSource(std::io::BufReader::new(f)),
        &tern_migration::Limits::default(),
    )
    .unwrap();
    let keys = r.take_bulk::<i32>("key_array", 1 << 16).unwrap();
    let le: Vec<u8> = keys
        .as_slice()
        .iter()
        .flat_map(|k| k.to_le_bytes())
        .collect();
    assert_eq!(std::fs::read(&out_file).unwrap(), le);
    let missing = inspect(&[
        "export",
        ck.to_str().unwrap(),
        "--region",
        "nope",
        "-o",
        out_file.to_str().unwrap(),
    ]);
    assert_eq!(missing.status.code(), Some(2));
    std::fs::remove_dir_all(&dir).unwrap();
}

/// Deltas are not written by run-task; the library writes one here, as a sync
/// service would, and inspect must show, verify and refuse to export it whole.
#[test]
fn delta_checkpoints_show_their_base() {
    use tern_migration::{write_checkpoint, HeaderInfo, Mode, Snapshot, Step};
    let dir = tempdir("delta");
    let mut t = tern_workloads::Workload::Is.start(tern_workloads::Class::S);
    for _ in 0..10 {
        assert_eq!(t.step(), Step::Running);
    }
    let write = |t: &dyn tern_migration::Task, mode: Mode, path: &Path| {
        let mut snap = Snapshot::new();
        t.save(&mut snap).unwrap();
        let p = t.progress();
        let info = HeaderInfo {
            task_kind: t.kind().into(),
            task_version: t.version(),
            progress: p.done,
            progress_total: p.total,
            epoch: 1,
            created_unix_ms: 0,
            isa: "x86_64".into(),
            board: "test".into(),
        };
        let mut bytes = Vec::new();
        let h = write_checkpoint(&mut bytes, &info, &snap, mode).unwrap();
        std::fs::write(path, bytes).unwrap();
        h
    };
    let (full, delta) = (dir.join("full.ckpt"), dir.join("delta.ckpt"));
    let base = write(&*t, Mode::Full, &full);
    t.clear_dirty();
    t.step();
    write(&*t, Mode::Delta { base_hash: base }, &delta);
    let j: serde_json::Value =
        serde_json::from_slice(&inspect(&["show", delta.to_str().unwrap(), "--json"]).stdout)
            .unwrap();
    assert_eq!(j["ok"], true);
    assert_eq!(j["delta"], true);
    let base_hex: String = base.iter().map(|b| format!("{b:02x}")).collect();
    assert_eq!(j["base_root"], base_hex.as_str());
    assert_eq!(j["format_version"], 2);
    let full_j: serde_json::Value =
        serde_json::from_slice(&inspect(&["show", full.to_str().unwrap(), "--json"]).stdout)
            .unwrap();
    assert_eq!(full_j["root"], base_hex.as_str());
    assert_eq!(full_j["sha256"], serde_json::Value::Null);
    // Fewer bulk chunks than the full checkpoint holds.
    let chunks = |v: &serde_json::Value| -> u64 {
        v["regions"]
            .as_array()
            .unwrap()
            .iter()
            .map(|r| r["chunks"].as_u64().unwrap())
            .sum()
    };
    assert!(
        chunks(&j) < chunks(&full_j),
        "{} vs {}",
        chunks(&j),
        chunks(&full_j)
    );
    assert!(inspect(&["verify", delta.to_str().unwrap()])
        .status
        .success());
    let out = dir.join("x.bin");
    let e = inspect(&[
        "export",
        delta.to_str().unwrap(),
        "--region",
        "key_array",
        "-o",
        out.to_str().unwrap(),
    ]);
    assert_eq!(e.status.code(), Some(2));
    assert!(!out.exists());
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn version_1_checkpoints_still_show_verify_and_diff() {
    // Written by run-task before format v2 (EP class S stopped at 50%).
    let v1 = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/ep-S-v1.ckpt");
    let v1 = v1.to_str().unwrap();
    let j: serde_json::Value =
        serde_json::from_slice(&inspect(&["show", v1, "--json"]).stdout).unwrap();
    assert_eq!(j["ok"], true, "{j}");
    assert_eq!(j["format_version"], 1);
    assert!(j["sha256"].is_string() && j["root"].is_null(), "{j}");
    assert_eq!(j["task"]["kind"], "npb-ep");
    let verified = inspect(&["verify", v1]);
    assert!(verified.status.success());
    assert!(stdout(&verified).contains(": OK (1 regions, sha256 "));
    // The same state written as v2 today: a diff across versions names the
    // progress, and its region's chunk differs (a CRC against a hash).
    let dir = tempdir("v1");
    let v2 = checkpoint(&dir, "ep", "50");
    let j2: serde_json::Value =
        serde_json::from_slice(&inspect(&["show", v2.to_str().unwrap(), "--json"]).stdout).unwrap();
    assert_eq!(
        (j2["format_version"].as_u64(), j2["ok"].as_bool()),
        (Some(2), Some(true))
    );
    assert!(j2["root"].is_string() && j2["sha256"].is_null(), "{j2}");
    assert_eq!(j2["progress"], j["progress"]);
    let diff = inspect(&["diff", v1, v2.to_str().unwrap()]);
    assert!(diff.status.success(), "{}", stdout(&diff));
}
