//! A PC with no COM port (QEMU `-nodefaults`: no serial port, no default
//! devices): the kernel must not mistake the absent UART's 0xFF for input
//! (that livelocked the run loop), must take its address from the kernel
//! command line (PVH: QEMU's `-append`) and answer on the network: Linux
//! pings it and reads the banner from TCP port 4471. Needs root (network
//! namespace).

use tern_ci::{kernel, Boot, Node, SerialMode};
use tern_flash::netlab::Lab;
use tern_flash::{Board, Variant};

const VERSION: &str = env!("CARGO_PKG_VERSION");
const NODE_ADDRESS: &str = "10.0.2.2";

#[test]
fn a_pc_without_com1_takes_its_address_from_the_command_line_and_answers() {
    let lab = Lab::create("headless", 1).unwrap();
    let mut launch = lab.launch(0, "virtio-net-pci", "52:54:00:7e:00:02");
    launch
        .extra_args
        .extend(["-nodefaults", "-append", &format!("net {NODE_ADDRESS}/24")].map(String::from));
    let elf = kernel(Board::Pc, Variant::Tern).unwrap();
    let node = Node::start_with(Board::Pc, Boot::Elf(elf), SerialMode::None, &launch).unwrap();

    // The node has no console to wait on: ping until it answers (boot
    // takes seconds under TCG on a loaded machine).
    let answered = (0..60).any(|_| {
        lab.netns()
            .exec("ping", &["-c", "1", "-W", "2", NODE_ADDRESS])
            .is_ok()
    });
    assert!(answered, "no answer to ping; QEMU:\n{}", node.qemu_stderr());
    let ping = lab
        .netns()
        .exec("ping", &["-c", "3", "-W", "5", NODE_ADDRESS])
        .unwrap();
    let ping = String::from_utf8_lossy(&ping.stdout);
    assert!(ping.contains("3 packets transmitted, 3 received"), "{ping}");
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
        format!("Tern {VERSION} on pc (x86_64)\n")
    );
}
