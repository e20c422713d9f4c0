//! Failover and failback on QEMU, as users run them: `tern demo --sync
//! --report FILE` runs NPB EP class W on a PC node with a standby replica on an
//! aarch64 `virt` node, over a link shaped by `tc` after a real 3G trace,
//! cuts the PC's link at 30% for 6 s and restores it. Checked from the
//! report: syncs reached the standby before the cut; the standby took over
//! from its last replica, losing no more than one sync interval's progress;
//! the PC stood down when the link returned; the task finished on the
//! aarch64 node and passed NPB's verification. Needs root (the namespace).

use tern_ci::run_demo;

#[test]
fn a_standby_takes_over_through_an_outage_and_the_task_verifies() {
    let run = run_demo(&["--sync"]).unwrap();
    // The demo's own account, in the test log.
    println!("{}", run.stdout);
    let stdout = run.stdout;
    let json: serde_json::Value = serde_json::from_slice(&run.report).unwrap();
    assert_eq!(json["scenario"], "sync", "{json}");
    assert_eq!(json["verified"], true, "{json}");
    let s = &json["standby"];
    let number = |key: &str| {
        s[key]
            .as_f64()
            .unwrap_or_else(|| panic!("{key} missing: {json}"))
    };
    let syncs = s["syncs"].as_array().unwrap();
    let before_cut: Vec<_> = syncs.iter().filter(|y| y["from_isa"] == "x86_64").collect();
    assert!(!before_cut.is_empty(), "no sync before the cut: {json}");
    for sync in syncs {
        assert!(sync["wire_bytes"].as_u64().unwrap() > 0, "{json}");
        assert_eq!(sync["policy"], "cost-rate", "{json}");
    }
    // The standby resumed from the last sync the PC saw acknowledged (or a
    // newer one whose ack the cut lost), never from an older state.
    let last = before_cut.last().unwrap()["at_percent"].as_f64().unwrap();
    let resumed = number("resumed_at_percent");
    assert!(
        resumed >= last,
        "resumed at {resumed}%, last sync {last}%: {json}"
    );
    // Lost work is bounded by one sync interval's progress.
    let lost = number("lost_progress");
    assert!(lost >= 0.0, "{json}");
    assert!(lost <= number("interval_progress"), "{json}");
    // Failover waits for the lease (3 s) but not much longer; failback
    // follows the link's return.
    let failover = number("failover_ms");
    assert!((2_500.0..30_000.0).contains(&failover), "{json}");
    assert!(number("failback_ms") < 60_000.0, "{json}");
    assert!(
        number("stopped_at_percent") >= number("cut_at_percent"),
        "{json}"
    );
    assert_eq!(s["finished_on"], "aarch64", "{json}");
    assert!(number("link_mean_mbps") > 0.0, "{json}");
    assert!(
        stdout.contains("VERIFICATION SUCCESSFUL after failover and failback"),
        "{stdout}"
    );
}
