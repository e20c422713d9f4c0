//! Network test: a node's virtio-net (MMIO on `virt`, PCI on the PC) and
//! the kernel's smoltcp stack answer a real Linux `ping`, and a TCP client
//! (bash's `/dev/tcp`) reads the node's banner from its hello port (4471).
//!
//! Each test makes a network namespace of its own holding a bridge with the
//! Linux side's address 10.0.2.1/24 and a tap device that QEMU, started
//! inside the namespace, attaches the node to. The node gets 10.0.2.2/24
//! through its shell (`net 10.0.2.2/24`). Nothing leaves the namespace; it is
//! deleted (with its bridge and tap) when the test ends. Needs root and the
//! `ip` and `ping` commands: without them the test fails and says why.

use std::process::{Command, Output};

use tern_ci::{kernel, Boot, Launch, Node, SerialMode, BOOT_TIMEOUT};
use tern_flash::{Board, Variant};

/// The Linux side of the test link.
const HOST_CIDR: &str = "10.0.2.1/24";
/// The node's address, set through its shell.
const NODE_ADDRESS: &str = "10.0.2.2";

/// Runs `program args`, panicking with its output when it fails.
fn run(program: &str, args: &[&str]) -> Output {
    let output = Command::new(program)
        .args(args)
        .output()
        .unwrap_or_else(|error| panic!("cannot run {program}: {error}"));
    assert!(
        output.status.success(),
        "{program} {} failed ({}):\n{}{}",
        args.join(" "),
        output.status,
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    output
}

/// Fails the test with a clear message unless it runs as root with `ip`
/// and `ping` available.
fn require_root_and_tools() {
    let uid = run("id", &["-u"]);
    assert_eq!(
        String::from_utf8_lossy(&uid.stdout).trim(),
        "0",
        "the network test creates network namespaces and tap devices: run it as root"
    );
    for tool in ["ip", "ping"] {
        let found = Command::new("sh")
            .args(["-c", &format!("command -v {tool}")])
            .output()
            .is_ok_and(|output| output.status.success());
        assert!(
            found,
            "the network test needs '{tool}' (Debian: iproute2, iputils-ping)"
        );
    }
}

/// A network namespace with a bridge (`br0`, the host side's address) and
/// a tap device (`tap0`) on it; deleted on drop.
struct Namespace {
    name: String,
}

impl Namespace {
    fn create(tag: &str) -> Self {
        require_root_and_tools();
        let name = format!("tern-net-{tag}-{}", std::process::id());
        run("ip", &["netns", "add", &name]);
        // From here on a failure still deletes the namespace (drop).
        let namespace = Self { name };
        for args in [
            "link set lo up",
            "link add br0 type bridge",
            "tuntap add tap0 mode tap",
            "link set tap0 master br0",
            &format!("addr add {HOST_CIDR} dev br0"),
            "link set br0 up",
            "link set tap0 up",
        ] {
            let mut full = vec!["-n", &namespace.name];
            full.extend(args.split(' '));
            run("ip", &full);
        }
        namespace
    }

    /// Runs `program args` inside the namespace.
    fn exec(&self, program: &str, args: &[&str]) -> Output {
        let mut full = vec!["netns", "exec", &self.name, program];
        full.extend(args);
        run("ip", &full)
    }
}

impl Drop for Namespace {
    fn drop(&mut self) {
        // Best effort: a leftover namespace would only hold a bridge and a
        // dead tap, and its name is unique per test process.
        let _ = Command::new("ip")
            .args(["netns", "del", &self.name])
            .status();
    }
}

/// The count after `label` in a `net` report line such as `tx 4 frames`.
fn frames(report: &str, label: &str) -> u64 {
    report
        .lines()
        .find_map(|line| line.strip_prefix(label))
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|count| count.parse().ok())
        .unwrap_or_else(|| panic!("no '{label}' count in:\n{report}"))
}

/// Boots `board` with `nic` (a QEMU `-device` on the namespace's tap),
/// gives it an address, and pings it from Linux.
fn linux_pings_the_node(board: Board, nic: &str) {
    let namespace = Namespace::create(board.name());
    let launch = Launch {
        netns: Some(namespace.name.clone()),
        extra_args: [
            "-netdev",
            "tap,id=n0,ifname=tap0,script=no,downscript=no",
            "-device",
            &format!("{nic},netdev=n0,mac=52:54:00:7e:00:02"),
        ]
        .map(String::from)
        .to_vec(),
    };
    let elf = kernel(board, Variant::Tern).unwrap();
    let mut node = Node::start_with(board, Boot::Elf(elf), SerialMode::Pipes, &launch).unwrap();
    node.expect(tern_ci::tern_prompt(), BOOT_TIMEOUT).unwrap();

    let report = node.command(&format!("net {NODE_ADDRESS}/24")).unwrap();
    for line in [
        "mac 52-54-00-7e-00-02\r\n",
        "address 10.0.2.2/24\r\n",
        "link up\r\n",
    ] {
        assert!(report.contains(line), "{line:?} missing from:\n{report}");
    }

    let ping = namespace.exec("ping", &["-c", "3", "-W", "5", NODE_ADDRESS]);
    let ping = String::from_utf8_lossy(&ping.stdout);
    assert!(
        ping.contains("3 packets transmitted, 3 received"),
        "ping:\n{ping}"
    );

    // TCP: the hello port answers with the banner line and closes.
    let hello = namespace.exec(
        "timeout",
        &[
            "20",
            "bash",
            "-c",
            &format!("exec 3<>/dev/tcp/{NODE_ADDRESS}/4471 && cat <&3"),
        ],
    );
    assert_eq!(
        String::from_utf8_lossy(&hello.stdout),
        format!("Tern 0.1.0 on {} ({})\n", board.name(), board.isa())
    );

    // The node counted the traffic: an ARP reply and three echo replies
    // at least (Linux may ask ARP again).
    let report = node.command("net").unwrap();
    assert!(frames(&report, "rx ") >= 4, "{report}");
    assert!(frames(&report, "tx ") >= 4, "{report}");

    node.send_line("halt 0").unwrap();
    assert_eq!(
        node.wait_exit(BOOT_TIMEOUT).unwrap(),
        tern_flash::qemu::halt_status(board, 0)
    );
}

#[test]
fn linux_pings_a_virt_node_over_virtio_mmio() {
    linux_pings_the_node(Board::Virt, "virtio-net-device");
}

#[test]
fn linux_pings_a_pc_node_over_virtio_pci() {
    linux_pings_the_node(Board::Pc, "virtio-net-pci");
}
