//! All of a board's RAM: the aarch64 kernels take their memory from the
//! device tree (every memory node, less its reserved regions), map the RAM
//! above 1 GiB and above 4 GiB, and give it to the heap.
//!
//! - raspi4b models a 2 GiB Pi 4: the RAM below the VideoCore's share of the
//!   first GiB (what the mailbox reports alone: 960 MiB) and the GiB above.
//!   QEMU passes a device tree only when given a file, so the test writes one
//!   (`vm-fdt`) with a reserved region and a `/memreserve/` entry. QEMU 10
//!   replaces every `memory` node with one of the 960 MiB (its
//!   `raspi4_modify_dtb` never adds the upper bank, although the machine has
//!   it), so the upper GiB is described by a node of `device_type = "memory"`
//!   under another name, which QEMU leaves alone and a device tree reader
//!   must honour; the firmware of a real Pi lists both banks in `memory@0`.
//!   raspi4b has no network: `info` and `mem` on the serial console are the
//!   node's only answers.
//! - virt with 6 GiB (RAM from 1 GiB to 7 GiB): the node status query's
//!   memory and heap sizes.

use std::time::Duration;

use tern_client::random_key;
use tern_flash::qemu::Launch;
use tern_flash::{Board, Variant};
use tern_lab::cluster::{Cluster, NodeSpec};
use tern_lab::node::{Boot, Node, SerialMode, BOOT_TIMEOUT};
use tern_protocol::Security;

const MIB: u64 = 1 << 20;
const GIB: u64 = 1 << 30;

/// A reserved region in the upper GiB of the test's device tree.
const RESERVED: (u64, u64) = (0x6000_0000, 64 * MIB);

/// A Pi-4-like device tree: two address cells and one size cell as the real
/// one, the RAM above 1 GiB (QEMU adds the bank below), a `/reserved-memory`
/// child, a `/memreserve/` entry for the firmware's spin tables, and the
/// RGMII switch on the command line.
fn raspi4b_device_tree() -> Vec<u8> {
    let spin_tables = vm_fdt::FdtReserveEntry::new(0, 0x1000).unwrap();
    let mut fdt = vm_fdt::FdtWriter::new_with_mem_reserv(&[spin_tables]).unwrap();
    let root = fdt.begin_node("").unwrap();
    fdt.property_string("compatible", "raspberrypi,4-model-b")
        .unwrap();
    fdt.property_u32("#address-cells", 2).unwrap();
    fdt.property_u32("#size-cells", 1).unwrap();
    let upper = fdt.begin_node("sdram@40000000").unwrap();
    fdt.property_string("device_type", "memory").unwrap();
    fdt.property_array_u32("reg", &[0, 0x4000_0000, 0x4000_0000])
        .unwrap();
    fdt.end_node(upper).unwrap();
    let chosen = fdt.begin_node("chosen").unwrap();
    fdt.property_string("bootargs", "genet.rgmii=id").unwrap();
    fdt.end_node(chosen).unwrap();
    let reserved = fdt.begin_node("reserved-memory").unwrap();
    fdt.property_u32("#address-cells", 2).unwrap();
    fdt.property_u32("#size-cells", 1).unwrap();
    fdt.property_null("ranges").unwrap();
    let region = fdt.begin_node("tern-test@60000000").unwrap();
    let (start, size) = RESERVED;
    fdt.property_array_u32("reg", &[(start >> 32) as u32, start as u32, size as u32])
        .unwrap();
    fdt.property_null("no-map").unwrap();
    fdt.end_node(region).unwrap();
    fdt.end_node(reserved).unwrap();
    fdt.end_node(root).unwrap();
    fdt.finish().unwrap()
}

/// The number after `prefix` on the line starting with it.
fn number_after(text: &str, prefix: &str) -> u64 {
    text.lines()
        .find_map(|line| line.strip_prefix(prefix))
        .and_then(|rest| rest.split(' ').next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no {prefix:?} number in {text:?}"))
}

#[test]
fn rpi4_takes_all_of_its_ram_from_the_device_tree() {
    let dir = tempfile::tempdir().unwrap();
    let dtb = dir.path().join("tern-test.dtb");
    std::fs::write(&dtb, raspi4b_device_tree()).unwrap();
    let launch = Launch {
        netns: None,
        extra_args: vec!["-dtb".into(), dtb.display().to_string()],
    };
    let elf = tern_lab::node::kernel(Board::Rpi4, Variant::Tern).unwrap();
    let mut node =
        Node::start_with(Board::Rpi4, Boot::Elf(elf), SerialMode::Pipes, &launch).unwrap();
    let before = node
        .expect(tern_lab::node::tern_prompt(), BOOT_TIMEOUT)
        .unwrap();
    // A known setting of the RGMII switch is taken silently.
    assert!(!before.contains("warning"), "{before}");
    let info = node.command("info").unwrap();
    let memory = number_after(&info, "memory: ");
    // 960 MiB below the VideoCore's share, 1 GiB above: not the mailbox's 960.
    assert_eq!(memory, 1984, "{info}");
    // The ARM clock, raised through the mailbox, is shown.
    assert!(number_after(&info, "cpu clock: ") > 0, "{info}");
    let mem = node.command("mem").unwrap();
    let heap_kib = mem
        .split(" of ")
        .nth(1)
        .and_then(|rest| rest.split(" KiB").next())
        .and_then(|kib| kib.parse::<u64>().ok())
        .unwrap_or_else(|| panic!("no heap size in {mem:?}"));
    let heap = heap_kib * 1024;
    // The heap has the RAM above 1 GiB, but not the reserved region, the
    // device tree or the image.
    let bound = memory * MIB - RESERVED.1;
    assert!(
        heap > bound - 32 * MIB && heap < bound,
        "heap {heap} of {memory} MiB: {mem}"
    );
}

#[test]
fn virt_uses_its_ram_above_4_gib() {
    let mut spec = NodeSpec::new(Board::Virt);
    spec.extra_args = vec!["-m".into(), "6G".into()];
    let cluster =
        Cluster::start_specs("mem-virt", &[spec], Security::Key(random_key().unwrap())).unwrap();
    let status = cluster
        .client(0, Duration::from_secs(30))
        .unwrap()
        .status()
        .unwrap();
    assert_eq!(status.memory_bytes, 6 * GIB, "{status:?}");
    // Everything but the device tree, the image and the heap's bookkeeping:
    // the 3 GiB above 4 GiB included.
    assert!(status.heap_bytes > 6 * GIB - 64 * MIB, "{status:?}");
    assert!(status.heap_free_bytes > 5 * GIB, "{status:?}");
}
