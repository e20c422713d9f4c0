//! Compute benchmark: NPB in the kernels against the same code as a Linux
//! process under the same emulator (issue 12's first figure).
//!
//! Run with `sudo cargo bench -p tern-ci --bench compute` (root: the nodes
//! sit in a network namespace). For each workload the PC node (QEMU q35,
//! TCG) and the aarch64 `virt` node run it alone, timed from the node's own
//! `TaskStarted` to its `TaskFinished` event (their `at_ms` stamps, so no
//! host polling is counted); then `run-task`, built in release mode for
//! x86_64 and aarch64 Linux, runs it under `qemu-x86_64` / `qemu-aarch64`
//! user mode, timed as a whole process. The ratio is Linux ÷ kernel time
//! (1.0: the kernel is as fast as a Linux process under the same
//! emulator). Every run must verify.
//!
//! Arguments `KIND:CLASS ...` (e.g. `-- is:S is:W is:A`) choose other
//! workloads than the default three; the same code at several classes shows
//! how the ratio moves with the size of the working set.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use tern_client::random_key;
use tern_flash::build::Workspace;
use tern_flash::Board;
use tern_lab::cluster::Cluster;
use tern_protocol::Security;

/// Default workloads and classes: EP and CG are `f64` throughout, IS is integer.
const WORKLOADS: [(&str, &str); 3] = [("ep", "S"), ("cg", "S"), ("is", "W")];
/// Bounds one run (EP S took 100 s on the soft-float PC kernel).
const RUN_TIMEOUT: Duration = Duration::from_secs(600);

/// Builds `run-task` in release mode for `target` (None: the host) in a
/// target directory of its own (the outer `cargo bench` holds the lock on
/// the workspace's), and returns the binary's path.
fn build_run_task(workspace: &Workspace, target: Option<&str>) -> PathBuf {
    let dir = workspace.target_dir.join("bench-run-task");
    let mut command = Command::new(std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into()));
    command
        .current_dir(&workspace.root)
        .env("CARGO_TARGET_DIR", &dir)
        .args(["build", "--quiet", "--release", "--bin", "run-task"]);
    if let Some(target) = target {
        command.args(["--target", target]);
    }
    let status = command.status().expect("cargo runs");
    assert!(status.success(), "run-task builds for {target:?}");
    match target {
        Some(target) => dir.join(target).join("release/run-task"),
        None => dir.join("release/run-task"),
    }
}

/// Wall time of `run-task WORKLOAD --class CLASS` under `emulator`.
fn linux_time(emulator: &[&str], binary: &Path, workload: &str, class: &str) -> Duration {
    let start = Instant::now();
    let output = Command::new(emulator[0])
        .args(&emulator[1..])
        .arg(binary)
        .args([workload, "--class", class])
        .output()
        .expect("the emulator runs");
    let elapsed = start.elapsed();
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success() && stdout.contains("SUCCESSFUL"),
        "{workload} {class} under {emulator:?}: {stdout}{}",
        String::from_utf8_lossy(&output.stderr)
    );
    elapsed
}

/// The kernel's own time for one run on node `node`.
fn kernel_time(cluster: &Cluster, node: usize, workload: &str, class: &str) -> Duration {
    let run = tern_ci::timed_run(cluster, node, &[workload, class], RUN_TIMEOUT).unwrap();
    assert!(run.verified, "{workload} {class} verifies on node {node}");
    run.time.expect("TaskStarted comes before TaskFinished")
}

fn main() {
    let chosen: Vec<(String, String)> = std::env::args()
        .skip(1)
        .filter(|arg| !arg.starts_with("--"))
        .map(|arg| match arg.split_once(':') {
            Some((kind, class)) => (kind.to_owned(), class.to_owned()),
            None => panic!("{arg:?}: a workload is KIND:CLASS, e.g. is:W"),
        })
        .collect();
    let workloads: Vec<(String, String)> = if chosen.is_empty() {
        WORKLOADS
            .iter()
            .map(|(kind, class)| ((*kind).to_owned(), (*class).to_owned()))
            .collect()
    } else {
        chosen
    };
    let workspace = Workspace::locate().expect("in the workspace");
    let host = build_run_task(&workspace, None);
    let arm = build_run_task(&workspace, Some("aarch64-unknown-linux-gnu"));
    let boards = [Board::Pc, Board::Virt];
    let cluster = Cluster::start("compute", &boards, Security::Key(random_key().unwrap()))
        .expect("the nodes boot");
    println!(
        "{:<6} {:<6} {:>10} {:>14} {:>8}",
        "task", "board", "kernel s", "linux+qemu s", "ratio"
    );
    for (workload, class) in &workloads {
        let (workload, class) = (workload.as_str(), class.as_str());
        for (node, board) in boards.iter().enumerate() {
            let kernel = kernel_time(&cluster, node, workload, class);
            let linux = match board {
                Board::Pc => linux_time(&["qemu-x86_64"], &host, workload, class),
                _ => linux_time(
                    &["qemu-aarch64", "-L", "/usr/aarch64-linux-gnu"],
                    &arm,
                    workload,
                    class,
                ),
            };
            println!(
                "{:<6} {:<6} {:>10.2} {:>14.2} {:>8.2}",
                format!("{workload} {class}"),
                board.name(),
                kernel.as_secs_f64(),
                linux.as_secs_f64(),
                linux.as_secs_f64() / kernel.as_secs_f64()
            );
        }
    }
}
