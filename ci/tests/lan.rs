//! Two QEMU nodes on a LAN-like lab, driven with no serial console at all:
//! kernels keyed at flash time (the boot-command slot), addresses from
//! Debian's dnsmasq, wall clocks from the lab's SNTP server, found by their
//! beacons; then `tern nodes discover`, `inspect --node ID`, `tern console
//! --node ID` (and two network consoles at once, a wrong key refused) and
//! a migration to a node id, all by node id. One boot for every check (the
//! CI budget); the reduced soak runs on the same nodes. Needs root.

use std::process::Command;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use tern_ci::host_tool;
use tern_client::{key_hex, random_key, NodeError};
use tern_flash::Board;
use tern_lab::cluster::Cluster;
use tern_lab::lan::DHCP_RANGE;
use tern_migration::{Limits, Reader};
use tern_protocol::{format_node_id, NodeEvent, Psk, Security, TaskStatus};

const TIMEOUT: Duration = Duration::from_secs(30);

/// Runs a host tool inside the lab's namespace; its output and whether it
/// succeeded.
fn tool(cluster: &Cluster, bin: (&str, &str), args: &[&str]) -> (bool, String) {
    let path = host_tool(bin.0, bin.1).unwrap();
    let out = Command::new("ip")
        .args(["netns", "exec", cluster.lab().netns().name()])
        .arg(path)
        .args(args)
        .output()
        .unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), text)
}

fn key_file(dir: &std::path::Path, name: &str, key: &Psk) -> String {
    let path = dir.join(name);
    std::fs::write(&path, key_hex(key)).unwrap();
    path.display().to_string()
}

#[test]
fn nodes_on_a_lan_are_addressed_found_and_driven_by_node_id_without_a_console() {
    let key = random_key().unwrap();
    let cluster = Cluster::start_lan("lan", &[Board::Pc, Board::Virt], &key).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let keyf = key_file(dir.path(), "cluster.key", &key);
    let wrongf = key_file(dir.path(), "wrong.key", &random_key().unwrap());
    let ids: Vec<String> = (0..2)
        .map(|i| format_node_id(Cluster::node_id(i)))
        .collect();

    // DHCP: both addresses come from dnsmasq's range.
    for i in 0..2 {
        let ip = cluster.endpoint(i).ip().to_string();
        let host: u8 = ip.rsplit('.').next().unwrap().parse().unwrap();
        assert!((DHCP_RANGE.0..=DHCP_RANGE.1).contains(&host), "{ip}");
    }

    // `tern nodes discover` hears both, verified under the key.
    let (ok, out) = tool(
        &cluster,
        ("tern", "tern"),
        &[
            "nodes",
            "discover",
            "--key-file",
            &keyf,
            "--wait",
            "5",
            "--json",
        ],
    );
    assert!(ok, "{out}");
    let listed: serde_json::Value = serde_json::from_str(&out).unwrap();
    for (i, id) in ids.iter().enumerate() {
        let node = listed
            .as_array()
            .unwrap()
            .iter()
            .find(|n| n["id"] == id.as_str())
            .unwrap_or_else(|| panic!("{id} not listed: {out}"));
        assert_eq!(node["trust"], "verified", "{out}");
        assert_eq!(node["control"], cluster.endpoint(i).to_string(), "{out}");
        assert_eq!(node["isa"], ["x86_64", "aarch64"][i], "{out}");
    }
    // Under another key the same nodes are listed as such.
    let (ok, out) = tool(
        &cluster,
        ("tern", "tern"),
        &["nodes", "discover", "--key-file", &wrongf, "--wait", "3"],
    );
    assert!(
        ok && out.contains("OTHER KEY") && !out.contains("verified"),
        "{out}"
    );

    // The network console: the same shell, by node id.
    let (ok, out) = tool(
        &cluster,
        ("tern", "tern"),
        &[
            "console",
            "--node",
            &ids[1],
            "--key-file",
            &keyf,
            "--command",
            "net",
            "--command",
            "time",
            "--command",
            "peers",
            "--command",
            "key",
        ],
    );
    assert!(ok, "{out}");
    assert!(out.contains("(dhcp from 10.0.2.1, lease 120 s"), "{out}");
    assert!(out.contains("dns 10.0.2.1"), "{out}");
    assert!(out.contains("(sntp from 10.0.2.1"), "{out}");
    assert!(out.contains(&format!("{} pc    x86_64", ids[0])), "{out}");
    assert!(out.contains("key: set"), "{out}");
    // ... and never with a wrong key: the beacon does not verify, and a
    // connection by address fails the handshake.
    let (ok, out) = tool(
        &cluster,
        ("tern", "tern"),
        &[
            "console",
            "--node",
            &ids[1],
            "--key-file",
            &wrongf,
            "--command",
            "info",
        ],
    );
    assert!(!ok && out.contains("not this key's"), "{out}");
    let addr = cluster.endpoint(1).to_string();
    let (ok, out) = tool(
        &cluster,
        ("tern", "tern"),
        &[
            "console",
            "--node",
            &addr,
            "--key-file",
            &wrongf,
            "--command",
            "info",
        ],
    );
    assert!(!ok && out.contains("wrong key"), "{out}");
    assert!(matches!(
        cluster.client_with(1, Security::Key(random_key().unwrap()), TIMEOUT),
        Err(tern_lab::cluster::ClusterError::Node(
            NodeError::WrongKey { .. }
        ))
    ));

    // Wall-clock time: the node's clock came from SNTP.
    let now_ms = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64;
    assert!(
        cluster.sntp_answers() >= 2,
        "both nodes asked the time server"
    );

    // Two consoles at once on the aarch64 node; a task a client starts is a
    // log line on both, and a migration by node id sends it to the PC.
    let mut one = cluster.client(1, TIMEOUT).unwrap();
    let mut two = cluster.client(1, TIMEOUT).unwrap();
    assert!(one.open_console().unwrap().contains("network console from"));
    two.open_console().unwrap();
    let mut starter = cluster.client(1, TIMEOUT).unwrap();
    // IS class S started from the first console, paused at 30% (the
    // aarch64 node would finish it in seconds): it waits for the migration
    // and, resumed unpaused on the PC, ends there quickly.
    let answer = one.console_command("run is S --pause-at 30").unwrap();
    assert!(answer.contains("task 1 (is S) started"), "{answer}");
    one.console_until("task 1 (is S) paused at", TIMEOUT)
        .unwrap();
    // The other session sees the task's log line too.
    two.console_until("task 1 (is S) paused at", TIMEOUT)
        .unwrap();
    let task_id = starter
        .list()
        .unwrap()
        .iter()
        .find(|task| task.kind == "npb-is")
        .expect("the started task is listed")
        .task_id;
    assert_eq!(two.console_command("ps").unwrap().lines().count(), 2);
    // The checkpoint carries the wall-clock time it was taken at.
    let bytes = starter.fetch(task_id).unwrap();
    let created = Reader::open(&bytes[..], &Limits::default())
        .unwrap()
        .header()
        .created_unix_ms;
    assert!(
        created.abs_diff(now_ms) < 120_000,
        "created {created}, now {now_ms}"
    );

    let (ok, out) = tool(
        &cluster,
        ("tern-inspect", "inspect"),
        &["--node", &ids[1], "--key-file", &keyf, "list"],
    );
    assert!(ok && out.contains("npb-is"), "{out}");
    let (ok, out) = tool(
        &cluster,
        ("tern-inspect", "inspect"),
        &[
            "--node",
            &ids[1],
            "--key-file",
            &keyf,
            "migrate",
            &format!("{task_id:#x}"),
            "--to",
            &ids[0],
        ],
    );
    assert!(ok, "{out}");
    let moved = one.console_until("migrated task 1", TIMEOUT).unwrap();
    assert!(
        moved.contains(&format!("to {}", cluster.endpoint(0))),
        "{moved}"
    );
    let on_pc = cluster
        .wait_for_task(
            0,
            "the migrated task",
            TIMEOUT,
            Duration::from_millis(300),
            |tasks| tasks.iter().find(|t| t.task_id == task_id).cloned(),
        )
        .unwrap();
    assert!(matches!(
        on_pc.status,
        TaskStatus::Running | TaskStatus::Paused | TaskStatus::Finished { verified: true }
    ));
    let mut watch = cluster.watch();
    let verified = watch
        .wait(
            &cluster,
            0,
            "the task's end",
            Duration::from_secs(300),
            |e| match e {
                NodeEvent::TaskFinished { task, verified, .. } if task.task_id == task_id => {
                    Some(*verified)
                }
                _ => None,
            },
        )
        .unwrap();
    assert!(verified);
}
