//! End-to-end tests of the `sync-lab` binary on tiny synthetic traces, plus one run of
//! `predict` over the real traces when they are present.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use serde_json::Value;

fn sync_lab(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_sync-lab"))
        .args(args)
        .output()
        .expect("sync-lab runs")
}

fn json(args: &[&str]) -> Value {
    let out = sync_lab(args);
    assert!(
        out.status.success(),
        "{args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).expect("valid JSON")
}

/// A fresh directory under the system temp dir, removed on drop.
struct TempDir(PathBuf);

impl TempDir {
    fn new(name: &str) -> Self {
        let p = std::env::temp_dir().join(format!("sync-lab-{}-{name}", std::process::id()));
        let _ = std::fs::remove_dir_all(&p);
        std::fs::create_dir_all(&p).expect("temp dir");
        TempDir(p)
    }
    fn write(&self, name: &str, text: &str) -> PathBuf {
        let p = self.0.join(name);
        std::fs::write(&p, text).expect("write fixture");
        p
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn traces(dir: &TempDir) {
    // A constant 3G-like trace (1 s samples) and a square-wave broadband one (5 s)
    // with a 30 s gap.
    dir.write(
        "bus.test.log",
        &(0..300).map(|t| format!("{t} 2.0\n")).collect::<String>(),
    );
    let mut fcc = String::new();
    for k in 0..120 {
        let t = if k < 60 { k * 5 } else { k * 5 + 30 };
        fcc.push_str(&format!(
            "{t} {}\n",
            if (k / 10) % 2 == 0 { 8.0 } else { 2.0 }
        ));
    }
    dir.write("trace_1_http---test", &fcc);
    dir.write("README.md", "not a trace\n");
}

fn policies(v: &Value) -> &Vec<Value> {
    v["policies"].as_array().expect("policies array")
}

#[test]
fn predict_reports_every_predictor_and_one_used() {
    let dir = TempDir::new("predict");
    traces(&dir);
    let d = dir.0.to_str().unwrap();
    let v = json(&["predict", "--trace", d, "--horizon", "5", "--json"]);
    assert_eq!(v["horizon_s"], 5.0);
    let preds = v["predictors"].as_array().unwrap();
    assert!(preds.len() >= 8);
    assert_eq!(preds.iter().filter(|p| p["used"] == true).count(), 1);
    for p in preds {
        assert!(p["mae"].as_f64().unwrap() >= 0.0 && p["mre"].as_f64().unwrap() >= 0.0);
    }
    // The constant trace alone is forecast exactly by everyone.
    let v = json(&["predict", "--trace", d, "--group", "norway", "--json"]);
    for p in v["predictors"].as_array().unwrap() {
        assert!(p["mae"].as_f64().unwrap() < 1e-9, "{p}");
    }
    // Table form names both groups.
    let out = sync_lab(&["predict", "--trace", d]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("group norway") && text.contains("group fcc"),
        "{text}"
    );
}

#[test]
fn policy_on_traces_and_scenarios() {
    let dir = TempDir::new("policy");
    traces(&dir);
    let d = dir.0.to_str().unwrap();
    let v = json(&[
        "policy",
        "--trace",
        d,
        "--state-mb",
        "2",
        "--dirty-rate",
        "0.1",
        "--json",
    ]);
    let ps = policies(&v);
    assert_eq!(ps.iter().filter(|p| p["used"] == true).count(), 1);
    assert!(ps
        .iter()
        .any(|p| p["name"].as_str().unwrap().starts_with("naps-I")));
    assert!(ps
        .iter()
        .any(|p| p["name"].as_str().unwrap().starts_with("fixed-best-")));
    for p in ps {
        let cost = p["cost"].as_f64().unwrap();
        assert!(cost >= p["lost_progress"].as_f64().unwrap());
    }
    // Good scenario: no outages, so nothing is ever lost.
    let v = json(&["policy", "--scenario", "good", "--json"]);
    assert!(policies(&v).iter().all(|p| p["lost_progress"] == 0.0));
    // Same seed, same answer.
    let a = json(&["policy", "--scenario", "poor", "--seed", "3", "--json"]);
    let b = json(&["policy", "--scenario", "poor", "--seed", "3", "--json"]);
    assert_eq!(a, b);
    let out = sync_lab(&["policy", "--table-4-3"]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("scenario poor") && text.contains("16/120"),
        "{text}"
    );
}

#[test]
fn codec_reports_every_codec() {
    let dir = TempDir::new("codec");
    let data: String = (0..20_000).map(|i| format!("page {} ", i % 97)).collect();
    let f = dir.write("delta.bin", &data);
    let v = json(&[
        "codec",
        "--data",
        f.to_str().unwrap(),
        "--bandwidth",
        "500",
        "--chunk-kb",
        "16",
        "--json",
    ]);
    let names: Vec<&str> = v["codecs"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["name"].as_str().unwrap())
        .collect();
    assert_eq!(
        names,
        ["none", "lz4", "zstd-1", "zstd-3", "zstd-9", "adaptive"]
    );
    assert!(v["selected"].is_string());
}

#[test]
fn bad_input_gives_a_clear_error() {
    let dir = TempDir::new("bad");
    let bad = dir.write("bus.bad.log", "0 1\nnonsense\n");
    let out = sync_lab(&["predict", "--trace", bad.to_str().unwrap()]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("bus.bad.log:2"));
    let out = sync_lab(&["predict", "--trace", "/nonexistent/trace"]);
    assert!(!out.status.success());
    let out = sync_lab(&["policy", "--scenario", "fair", "--state-mb", "0"]);
    assert!(!out.status.success());
}

#[test]
fn predict_over_the_real_traces() {
    let dev = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../../shared/traces/dev");
    if !dev.is_dir() {
        println!(
            "note: {} absent, skipping the real-trace run",
            dev.display()
        );
        return;
    }
    // The FCC group only: the whole directory takes minutes in an unoptimised build.
    let v = json(&[
        "predict",
        "--trace",
        dev.to_str().unwrap(),
        "--group",
        "fcc",
        "--json",
    ]);
    let preds = v["predictors"].as_array().unwrap();
    let used = preds.iter().find(|p| p["used"] == true).unwrap();
    let last = preds.iter().find(|p| p["name"] == "last").unwrap();
    // The sync layer's predictor must at least match last value on real data.
    assert!(used["mae"].as_f64().unwrap() <= last["mae"].as_f64().unwrap());
}
