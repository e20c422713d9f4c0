//! The README's first command, as users run it: `tern demo --report FILE`
//! boots a PC and an aarch64 `virt` node on a network namespace, migrates a
//! running NPB task x86_64 → aarch64 → x86_64 and writes the report; with
//! `--wasm` it does the same with a Wasm task of the task set. Needs
//! root (the namespace), like the network tests.

use tern_ci::run_demo;

#[test]
fn the_demo_migrates_a_running_task_both_ways_and_it_verifies() {
    let run = run_demo(&[]).unwrap();
    // The demo's own account, in the test log.
    println!("{}", run.stdout);
    let stdout = run.stdout;
    let json: serde_json::Value = serde_json::from_slice(&run.report).unwrap();
    assert_eq!(json["workload"], "ep", "{json}");
    assert_eq!(json["class"], "S", "{json}");
    assert_eq!(json["verified"], true, "{json}");
    let migrations = json["migrations"].as_array().unwrap();
    assert_eq!(migrations.len(), 2, "{json}");
    for (i, (m, (from, to))) in migrations
        .iter()
        .zip([("x86_64", "aarch64"), ("aarch64", "x86_64")])
        .enumerate()
    {
        assert_eq!(m["from_isa"], from, "{json}");
        assert_eq!(m["to_isa"], to, "{json}");
        let state = m["state_bytes"].as_u64().unwrap();
        let wire = m["wire_bytes"].as_u64().unwrap();
        let total = m["total_ms"].as_u64().unwrap();
        let downtime = m["downtime_ms"].as_u64().unwrap();
        // The first migration's receiver holds no replica: the whole state
        // crossed the wire, sealed and framed (EP's three small chunks go
        // raw: no transfer that short gives the codec selector a
        // bandwidth). The way back may reuse the replica the PC kept
        // (unchanged chunks are not sent again).
        assert!(state > 0 && wire > 0, "{json}");
        if i == 0 {
            assert!(wire > state, "{json}");
        }
        assert!(downtime <= total, "{json}");
    }
    assert!(stdout.contains("VERIFICATION SUCCESSFUL"), "{stdout}");
}

#[test]
fn the_demo_migrates_a_wasm_task_both_ways_and_it_verifies() {
    // Matrix multiplication in floating point, sized to run long enough on
    // each node to be caught mid-run.
    let run = run_demo(&["--wasm", "matrix", "--wasm-args", "360 5"]).unwrap();
    println!("{}", run.stdout);
    let json: serde_json::Value = serde_json::from_slice(&run.report).unwrap();
    assert_eq!(json["workload"], "matrix", "{json}");
    assert_eq!(json["class"], "wasm", "{json}");
    assert_eq!(json["verified"], true, "{json}");
    let migrations = json["migrations"].as_array().unwrap();
    let hops: Vec<_> = migrations
        .iter()
        .map(|m| {
            (
                m["from_isa"].as_str().unwrap(),
                m["to_isa"].as_str().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        hops,
        [("x86_64", "aarch64"), ("aarch64", "x86_64")],
        "{json}"
    );
    for m in migrations {
        // The matrices live in the module's memory: well over a page.
        assert!(m["state_bytes"].as_u64().unwrap() > 65536, "{json}");
    }
    assert!(
        run.stdout
            .contains("Wasm task matrix: VERIFICATION SUCCESSFUL"),
        "{}",
        run.stdout
    );
}
