//! The portable Tern kernel.
//!
//! Boards (`boards/*`) bring the machine up and call [`start`] with a
//! [`Board`], the serial console, the devices they found and the catalog of
//! task kinds they carry. From there everything is portable: the console
//! with its defmt framing ([`console`]), the shell ([`shell`]), the run loop
//! that polls [`Service`]s ([`kernel`]), the node's typed events
//! ([`events`]), the task runner ([`tasks`]), task migration over the
//! console ([`serial_migration`]), the network stack ([`net`]), its address
//! and wall clock from the LAN ([`netconf`], [`wallclock`]) and live
//! migration over Ethernet with its control service ([`control`]).
//! [`assemble`] puts the parts together; the kernel itself names none of
//! them. This crate contains no `unsafe` and no register access; it is
//! unit-tested on the host.
#![cfg_attr(not(test), no_std)]
#![forbid(unsafe_code)]

extern crate alloc;

pub mod console;
pub mod control;
pub mod events;
pub mod kernel;
pub mod net;
pub mod netconf;
pub mod serial_migration;
pub mod shell;
pub mod tasks;
#[cfg(test)]
mod testing;
pub mod wallclock;

pub use kernel::{Kernel, RemoteConsoles, Service, ServiceStatus, SharedConsole, Turn};
pub use tern_hal::{
    Board, BoardFacts, EntropyError, EntropySource, HeapStats, Isa, MonotonicClock, NetDevice,
    SerialPort,
};
pub use tern_migration::TaskCatalog;

/// Tern's version, as printed in the banner.
pub const VERSION: &str = env!("CARGO_PKG_VERSION");

/// The first line a node prints: names the board, the ISA and Tern's version.
pub fn banner(facts: &BoardFacts) -> alloc::string::String {
    alloc::format!("Tern {} on {} ({})", VERSION, facts.board, facts.isa)
}

/// The optional devices a board found, handed to the kernel at start.
#[derive(Default)]
pub struct Devices {
    /// The Ethernet controller: the kernel runs the network stack ([`net`]) on it.
    pub net: Option<alloc::boxed::Box<dyn NetDevice>>,
    /// The hardware random number generator (nonces of the migration
    /// protocol); without one the node refuses authenticated migration.
    pub entropy: Option<alloc::boxed::Box<dyn EntropySource>>,
    /// Shell commands to run at boot, separated by `;` (a board passes its
    /// command line: multiboot2's or PVH's, the device tree's
    /// `/chosen/bootargs`), so that a node with no console can be given an
    /// address or a key.
    pub boot_commands: alloc::string::String,
}

/// Puts a kernel together from its parts on `board`: the shell with the
/// board's own commands, the task table and runner making tasks from
/// `catalog`, the serial migration commands, and, when the board found a
/// network device, the network stack, its DHCP and SNTP clients and the
/// control service.
pub fn assemble(
    board: &'static dyn Board,
    board_commands: alloc::vec::Vec<shell::Command>,
    devices: Devices,
    catalog: alloc::rc::Rc<dyn TaskCatalog>,
) -> Kernel {
    let mut kernel = Kernel::new(board);
    if let Some(entropy) = devices.entropy {
        kernel.set_entropy(entropy);
    }
    let mac = devices
        .net
        .as_ref()
        .map(|device| device.mac_address())
        .or(board.facts().mac_address);
    let node_id = mac.map_or(0, control::node_id_from_mac);
    let tasks = tasks::install(&mut kernel, node_id, catalog);
    for command in serial_migration::commands(&tasks) {
        kernel.add_command(command);
    }
    for command in board_commands {
        kernel.add_command(command);
    }
    if let Some(device) = devices.net {
        let net = net::install(&mut kernel, device);
        netconf::install(&mut kernel, net.clone(), node_id);
        control::install(&mut kernel, net, tasks);
    }
    kernel.set_boot_commands(&devices.boot_commands);
    kernel
}

/// Hands the machine to the portable kernel; never returns.
///
/// The board calls this once it has a heap, a console, a clock and
/// interrupts, passing its own shell commands (bring-up and diagnostics),
/// the optional devices it found and the task kinds it carries. The kernel
/// prints the banner, runs the boot commands and the run loop until the
/// shell's `halt`.
pub fn start(
    board: &'static dyn Board,
    serial: &'static mut dyn SerialPort,
    board_commands: alloc::vec::Vec<shell::Command>,
    devices: Devices,
    catalog: alloc::rc::Rc<dyn TaskCatalog>,
) -> ! {
    console::install(serial);
    kernel::install_board(board);
    assemble(board, board_commands, devices, catalog).run()
}

/// Nanoseconds since boot on the board's monotonic clock (0 before
/// [`start`]); the time base of defmt timestamps.
pub fn uptime_ns() -> u64 {
    kernel::installed_board().map_or(0, |board| board.clock().now_ns())
}

#[cfg(target_os = "none")]
#[panic_handler]
fn panic(info: &core::panic::PanicInfo<'_>) -> ! {
    console::panic_print(format_args!("\r\nKERNEL PANIC: {info}\r\n"));
    kernel::halt_after_panic()
}
