//! Board devices found at boot, as the shell shows them: the hardware random
//! number generator (virtio-rng on the QEMU boards; the Pi 4's RNG200, which
//! QEMU's raspi4b does not model, gives a typed error) and, on raspi4b, the
//! reason there is no network (QEMU does not model GENET either).

use tern_flash::Board;
use tern_lab::node::{Node, BOOT_TIMEOUT};

/// Boots `board` to its prompt.
fn booted(board: Board) -> Node {
    let mut node = Node::boot(board).unwrap();
    node.expect(tern_lab::node::tern_prompt(), BOOT_TIMEOUT)
        .unwrap();
    node
}

/// The hex line `random 32` prints, checked for shape.
fn random_line(node: &mut Node) -> String {
    let answer = node.command("random 32").unwrap();
    let line = answer.trim_end().to_string();
    assert_eq!(line.len(), 64, "32 bytes in hex: {answer:?}");
    assert!(line.bytes().all(|b| b.is_ascii_hexdigit()), "{answer:?}");
    line
}

/// Two reads differ (a stuck or absent generator would repeat itself).
fn generator_answers(board: Board) {
    let mut node = booted(board);
    let first = random_line(&mut node);
    let second = random_line(&mut node);
    assert_ne!(first, second, "the generator repeats itself");
    let refused = node.command("random 65").unwrap();
    assert_eq!(
        refused,
        "error: random: byte count must be 1..=64, not '65'\r\n"
    );
}

#[test]
fn virt_reads_virtio_rng_over_mmio() {
    generator_answers(Board::Virt);
}

#[test]
fn pc_reads_virtio_rng_over_pci() {
    generator_answers(Board::Pc);
}

#[test]
fn rpi4_under_qemu_says_why_there_is_no_rng_and_no_network() {
    let mut node = booted(Board::Rpi4);
    assert_eq!(
        node.command("random").unwrap(),
        "error: random: the random number generator produced no data\r\n"
    );
    let net = node.command("net").unwrap();
    assert!(
        net.starts_with("error: net: no network device: no GENET v5 found"),
        "{net:?}"
    );
}
