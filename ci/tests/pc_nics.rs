//! The PC's network cards behind a PCIe root port (so the kernel must walk
//! the bus behind a bridge): each model is pinged from Linux, serves the
//! banner on TCP port 4471, and carries a live migration of a running NPB
//! EP class S task to an aarch64 `virt` node, where it verifies. One boot
//! per model, two nodes on a lab bridge (`tern_lab::cluster`).
//!
//! The virtio node also has 6 GiB of RAM: its heap must see more than
//! 4 GiB, and SeaBIOS then places the card's 64-bit BAR above 4 GiB, which
//! the kernel must map to use the card at all. Needs root (network
//! namespace).

// Shared by the network tests; each uses part of it.
#[allow(dead_code)]
mod reach;

use std::time::Duration;

use tern_client::random_key;
use tern_flash::Board;
use tern_lab::cluster::{Cluster, NodeSpec};
use tern_protocol::{Security, TaskRole, TaskStatus};

const VERSION: &str = env!("CARGO_PKG_VERSION");
const POLL: Duration = Duration::from_millis(300);
const ANSWER: Duration = Duration::from_secs(10);
const SETTLE: Duration = Duration::from_secs(180);

/// The PC with `model` on a PCIe root port, plus `extra` QEMU arguments.
fn pc_behind_root_port(model: &str, extra: &[&str]) -> NodeSpec {
    let mut spec = NodeSpec::new(Board::Pc);
    spec.nic = format!("{model},bus=tern-rp0");
    spec.extra_args = ["-device", "pcie-root-port,id=tern-rp0,chassis=1,slot=1"]
        .iter()
        .chain(extra)
        .map(|arg| (*arg).to_owned())
        .collect();
    spec
}

/// Boots the PC (node 0, `pc`) and a virt node (node 1); Linux pings the PC
/// and reads its banner; a running EP S task migrates PC → virt and
/// verifies there. Returns the cluster for model-specific checks.
fn pings_talks_and_migrates(tag: &str, pc: NodeSpec) -> Cluster {
    let mut cluster = Cluster::start_specs(
        tag,
        &[pc, NodeSpec::new(Board::Virt)],
        Security::Key(random_key().unwrap()),
    )
    .unwrap();
    let address = Cluster::address(0).to_string();
    let netns = cluster.lab().netns();
    reach::pings(netns, &address);
    assert_eq!(
        reach::banner(netns, &address),
        format!("Tern {VERSION} on pc (x86_64)\n")
    );

    cluster.shell(0, "run ep S").unwrap();
    let task = cluster
        .wait_for_task(0, "EP S running", SETTLE, POLL, |tasks| {
            tasks
                .iter()
                .find(|t| t.kind == "npb-ep" && t.status == TaskStatus::Running)
                .cloned()
        })
        .unwrap();
    let report = cluster
        .client(0, ANSWER)
        .unwrap()
        .migrate(
            task.task_id,
            &Cluster::control(1).to_string(),
            Duration::from_secs(120),
        )
        .unwrap();
    assert_eq!(
        (report.from_isa.as_str(), report.to_isa.as_str()),
        ("x86_64", "aarch64")
    );
    let done = cluster
        .wait_for_task(1, "EP S finished on virt", SETTLE, POLL, |tasks| {
            tasks
                .iter()
                .find(|t| {
                    t.task_id == task.task_id
                        && t.role == TaskRole::Owner
                        && matches!(t.status, TaskStatus::Finished { .. })
                })
                .cloned()
        })
        .unwrap();
    assert_eq!(
        done.status,
        TaskStatus::Finished { verified: true },
        "{done:?}"
    );
    cluster
}

#[test]
fn virtio_net_behind_a_root_port_with_6_gib_of_ram() {
    let mut cluster = pings_talks_and_migrates(
        "nic-virtio",
        pc_behind_root_port("virtio-net-pci", &["-m", "6G"]),
    );
    // The heap took the RAM above 4 GiB.
    let mem = cluster.shell(0, "mem").unwrap();
    let total: u64 = mem
        .split(" of ")
        .nth(1)
        .and_then(|rest| rest.split(" KiB").next())
        .and_then(|kib| kib.parse().ok())
        .unwrap_or_else(|| panic!("no heap size in {mem:?}"));
    assert!(total > 5 << 20, "heap of {total} KiB: {mem}");
    // The card (virtio 1af4:1041, behind the root port on bus 1) has a BAR
    // above 4 GiB, and it is the one the traffic above went through.
    let hw = cluster.shell(0, "hw").unwrap();
    let card = hw
        .lines()
        .find(|line| line.starts_with("pci 0000:01:00.0 1af4:1041"))
        .unwrap_or_else(|| panic!("no virtio-net behind the root port in:\n{hw}"));
    let high = card
        .split_whitespace()
        .filter_map(|bar| bar.split(':').nth(1))
        .any(|at| {
            let address = at.split('+').next().unwrap_or("");
            u64::from_str_radix(address.trim_start_matches("0x"), 16).is_ok_and(|a| a >= 1 << 32)
        });
    assert!(high, "no BAR above 4 GiB: {card}");
}

#[test]
fn e1000e_behind_a_root_port() {
    let mut cluster = pings_talks_and_migrates("nic-e1000e", pc_behind_root_port("e1000e", &[]));
    let hw = cluster.shell(0, "hw").unwrap();
    assert!(hw.contains("pci 0000:01:00.0 8086:10d3"), "{hw}");
}

#[test]
fn igb_behind_a_root_port() {
    let mut cluster = pings_talks_and_migrates("nic-igb", pc_behind_root_port("igb", &[]));
    let hw = cluster.shell(0, "hw").unwrap();
    assert!(hw.contains("pci 0000:01:00.0 8086:10c9"), "{hw}");
}
