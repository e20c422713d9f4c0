//! Network test: a node's virtio-net (MMIO on `virt`, PCI on the PC) and
//! the kernel's smoltcp stack answer a real Linux `ping`, and a TCP client
//! (bash's `/dev/tcp`) reads the node's banner from its hello port (4471); a
//! stream into its sink port (4472) arrives in merged frames (virtio-net's
//! large receive) with no checksum refused.
//!
//! Each test makes a network lab of its own (`tern_lab::netlab`): a
//! namespace holding a bridge with the Linux side's address 10.0.2.1/24 and a
//! tap device that QEMU, started inside the namespace, attaches the node to.
//! The node gets 10.0.2.2/24 through its shell (`net 10.0.2.2/24`). Nothing
//! leaves the namespace; it is deleted (with its bridge and tap) when the test
//! ends. Needs root and the `ip` and `ping` commands: without them the test
//! fails and says why.

use tern_flash::{Board, Variant};
use tern_lab::netlab::Lab;
use tern_lab::node::{kernel, Boot, Node, SerialMode, BOOT_TIMEOUT};

/// Tern's version, as the kernels print it in their banner.
const VERSION: &str = env!("CARGO_PKG_VERSION");

/// The node's address, set through its shell.
const NODE_ADDRESS: &str = "10.0.2.2";

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
    let lab = Lab::create(&format!("net-{}", board.name()), 1).unwrap();
    let launch = lab.launch(0, nic, "52:54:00:7e:00:02");
    let elf = kernel(board, Variant::Tern).unwrap();
    let mut node = Node::start_with(board, Boot::Elf(elf), SerialMode::Pipes, &launch).unwrap();
    node.expect(tern_lab::node::tern_prompt(), BOOT_TIMEOUT)
        .unwrap();

    let report = node.command(&format!("net {NODE_ADDRESS}/24")).unwrap();
    for line in [
        "mac 52-54-00-7e-00-02\r\n",
        "address 10.0.2.2/24 (static)\r\n",
        "link up\r\n",
    ] {
        assert!(report.contains(line), "{line:?} missing from:\n{report}");
    }

    let ping = lab
        .netns()
        .exec("ping", &["-c", "3", "-W", "5", NODE_ADDRESS])
        .unwrap();
    let ping = String::from_utf8_lossy(&ping.stdout);
    assert!(
        ping.contains("3 packets transmitted, 3 received"),
        "ping:\n{ping}"
    );

    // TCP: the hello port answers with the banner line and closes.
    let hello = lab
        .netns()
        .exec(
            "timeout",
            &[
                "20",
                "bash",
                "-c",
                &format!("exec 3<>/dev/tcp/{NODE_ADDRESS}/4471 && cat <&3"),
            ],
        )
        .unwrap();
    assert_eq!(
        String::from_utf8_lossy(&hello.stdout),
        format!("Tern {VERSION} on {} ({})\n", board.name(), board.isa())
    );

    // The node counted the traffic: an ARP reply and three echo replies
    // at least (Linux may ask ARP again).
    let report = node.command("net").unwrap();
    assert!(frames(&report, "rx ") >= 4, "{report}");
    assert!(frames(&report, "tx ") >= 4, "{report}");

    // A stream into the sink port (4472) arrives in merged frames (large
    // receive): far fewer frames than 1514-byte segments, none dropped for
    // its checksum.
    let before = node.command("net").unwrap();
    let sent = stream_into_sink(&lab);
    let after = node.command("net").unwrap();
    let frames_in = frames(&after, "rx ") - frames(&before, "rx ");
    assert!(
        frames_in > 0 && frames_in < sent / 4000,
        "{frames_in} frames for {sent} bytes:\n{after}"
    );
    assert!(after.contains(" 0 bad checksums"), "{after}");

    node.send_line("halt 0").unwrap();
    assert_eq!(
        node.wait_exit(BOOT_TIMEOUT).unwrap(),
        tern_flash::qemu::halt_status(board, 0)
    );
}

/// Sends 4 MiB from the lab's namespace to the node's sink port and waits
/// until the node closes; returns the bytes sent.
fn stream_into_sink(lab: &Lab) -> u64 {
    use std::io::{Read, Write};
    use std::net::{Shutdown, SocketAddr};
    use std::time::Duration;

    let addr: SocketAddr = (NODE_ADDRESS.parse::<std::net::Ipv4Addr>().unwrap(), 4472).into();
    let mut sock = lab.netns().connect(addr, Duration::from_secs(10)).unwrap();
    sock.set_read_timeout(Some(Duration::from_secs(60)))
        .unwrap();
    let block = vec![0x5au8; 64 * 1024];
    for _ in 0..64 {
        sock.write_all(&block).unwrap();
    }
    sock.shutdown(Shutdown::Write).unwrap();
    while sock.read(&mut [0u8; 16]).unwrap() > 0 {}
    64 * block.len() as u64
}

#[test]
fn linux_pings_a_virt_node_over_virtio_mmio() {
    linux_pings_the_node(Board::Virt, "virtio-net-device");
}

#[test]
fn linux_pings_a_pc_node_over_virtio_pci() {
    linux_pings_the_node(Board::Pc, "virtio-net-pci");
}

/// The lab's Linux hosts (namespaces on veths) reach each other across the
/// bridge through sockets the test process opens inside their namespaces.
#[test]
fn linux_hosts_on_the_bridge_talk_through_sockets_opened_in_their_namespaces() {
    use std::io::{Read, Write};
    use std::net::SocketAddr;
    use std::time::Duration;

    let mut lab = Lab::create("hosts", 0).unwrap();
    lab.add_linux_host(100).unwrap();
    lab.add_linux_host(101).unwrap();
    let addr: SocketAddr = ([10, 0, 2, 101], 5001).into();
    let listener = lab.linux_host(101).unwrap().listen(addr).unwrap();
    let server = std::thread::spawn(move || {
        let (mut conn, peer) = listener.accept().unwrap();
        let mut got = Vec::new();
        conn.read_to_end(&mut got).unwrap();
        (peer, got)
    });
    let mut sock = lab
        .linux_host(100)
        .unwrap()
        .connect(addr, Duration::from_secs(10))
        .unwrap();
    sock.write_all(b"across the bridge").unwrap();
    drop(sock);
    let (peer, got) = server.join().unwrap();
    assert_eq!(peer.ip().to_string(), "10.0.2.100");
    assert_eq!(got, b"across the bridge");
}
