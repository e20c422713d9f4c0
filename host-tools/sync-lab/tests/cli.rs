//! End-to-end tests of the `sync-lab` binary on tiny synthetic traces, and of the
//! figures the sync layer's design rests on over the real traces in
//! `../shared/traces/dev` (which must be there: the tests fail if they are not).

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
fn cross_validation_on_traces() {
    let dir = TempDir::new("cv");
    traces(&dir);
    let d = dir.0.to_str().unwrap();
    let v = json(&["predict", "--trace", d, "--cv", "--json"]);
    let folds = v["folds"].as_array().unwrap();
    // Two groups (bus, fcc): each held out once, tuned on the other.
    let held: Vec<&str> = folds
        .iter()
        .map(|f| f["held_out"].as_str().unwrap())
        .collect();
    assert_eq!(held, ["bus", "fcc"]);
    for f in folds {
        assert!(f["chosen"]["decay"].as_f64().unwrap() > 0.0);
        assert_eq!(f["scores"].as_array().unwrap().len(), 10);
    }
    assert_eq!(v["pooled"].as_array().unwrap().len(), 2);
    let v = json(&[
        "policy",
        "--trace",
        d,
        "--cv",
        "--state-mb",
        "2",
        "--dirty-rate",
        "0.1",
        "--json",
    ]);
    for f in v["folds"].as_array().unwrap() {
        let ps = policies(f);
        assert!(ps.last().unwrap()["name"]
            .as_str()
            .unwrap()
            .starts_with("fixed-best-"));
        assert_eq!(ps.iter().filter(|p| p["used"] == true).count(), 1);
    }
    // Cross-validation needs traces to tune on.
    let out = sync_lab(&["policy", "--scenario", "fair", "--cv"]);
    assert!(!out.status.success());
}

#[test]
fn outage_prior_and_fresh_monitors() {
    // Without outages, a prior that gives the link no chance of being outage-free
    // keeps syncing; the kernel's learns that it is and syncs far less.
    let cost = |extra: &[&str]| {
        let mut args = vec!["policy", "--scenario", "good", "--runs", "3", "--json"];
        args.extend_from_slice(extra);
        let v = json(&args);
        let p = policies(&v)
            .iter()
            .find(|p| p["name"] == "cost-rate")
            .cloned()
            .unwrap();
        p["cost"].as_f64().unwrap()
    };
    let kernel = cost(&[]);
    let gamma = cost(&["--outage-prior", "0,1,3600"]);
    assert!(
        kernel < 0.5 * gamma,
        "kernel's prior {kernel}, Gamma {gamma}"
    );
    // Each run a new session: no history to learn from, so no better than the first.
    assert!(cost(&["--fresh-monitor"]) > kernel);
    for bad in ["1,1,3600", "0.5,0,3600", "0.5,1", "x,1,1"] {
        let out = sync_lab(&["policy", "--scenario", "good", "--outage-prior", bad]);
        assert!(!out.status.success(), "{bad}");
        assert!(String::from_utf8_lossy(&out.stderr).contains("P0,OUTAGES,SECONDS"));
    }
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

/// The shared development traces; a clear failure if they are missing.
fn dev_traces() -> String {
    let dev = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../../shared/traces/dev");
    assert!(
        dev.is_dir(),
        "{} is missing: these tests need the shared bandwidth traces, at \
         ../shared/traces/dev from the repository root (a sibling of the checkout)",
        dev.display()
    );
    dev.to_str().expect("a UTF-8 path").to_string()
}

fn mae(scores: &Value, name: &str) -> f64 {
    let s = scores
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["name"] == name);
    s.unwrap_or_else(|| panic!("no {name} in {scores}"))["mae"]
        .as_f64()
        .unwrap()
}

#[test]
fn predict_over_the_real_traces() {
    let dev = dev_traces();
    // The FCC group only: the whole directory takes a while in an unoptimised build.
    let v = json(&["predict", "--trace", &dev, "--group", "fcc", "--json"]);
    let preds = &v["predictors"];
    let used = preds.as_array().unwrap().iter().find(|p| p["used"] == true);
    assert_eq!(used.unwrap()["name"], "adaptive");
    let adaptive = mae(preds, "adaptive");
    assert!(adaptive < mae(preds, "last") && adaptive < mae(preds, "ewma"));
}

#[test]
fn the_predictor_beats_both_baselines_on_every_unseen_group() {
    let dev = dev_traces();
    let v = json(&["predict", "--trace", &dev, "--cv", "--json"]);
    let folds = v["folds"].as_array().unwrap();
    assert_eq!(folds.len(), 7, "bus car fcc ferry metro train tram");
    for f in folds {
        let s = &f["scores"];
        let adaptive = mae(s, "adaptive");
        assert!(
            adaptive < mae(s, "last") && adaptive < mae(s, "ewma"),
            "{} held out: {s}",
            f["held_out"]
        );
    }
    // The kernel runs what the procedure picks with every group in training.
    assert_eq!(v["chosen_on_all"], v["kernel_default"]);
}

#[test]
fn the_policy_beats_the_baselines_on_unseen_norway_groups() {
    let dev = dev_traces();
    let args = [
        "policy",
        "--trace",
        &dev,
        "--group",
        "norway",
        "--cv",
        "--state-mb",
        "4",
        "--dirty-rate",
        "0.5",
        "--json",
    ];
    let v = json(&args);
    let pooled = &v["pooled"][0];
    assert_eq!(pooled["group"], "norway");
    let ps = policies(pooled);
    let cost = |prefix: &str| -> Vec<f64> {
        ps.iter()
            .filter(|p| p["name"].as_str().unwrap().starts_with(prefix))
            .map(|p| p["cost"].as_f64().unwrap())
            .collect()
    };
    let ours = cost("cost-rate")[0];
    let best = cost("fixed-best-")[0];
    assert!(ours <= 1.2 * best, "cost-rate {ours}, best fixed {best}");
    for other in cost("naps-").into_iter().chain(cost("fixed-")) {
        assert!(ours < other, "cost-rate {ours} against {other}");
    }
}
