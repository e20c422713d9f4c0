//! The last, board-independent part of bringing up an aarch64 kernel:
//! MMU, heap, interrupts, then the portable kernel.

use alloc::boxed::Box;
use alloc::string::String;
use alloc::vec::Vec;
use core::cell::Cell;
use core::fmt::Write;
use core::ops::Range;

use critical_section::Mutex;

use crate::memory::RamRanges;

use tern_hal::{BoardFacts, SerialPort};
use tern_unikernel::shell::{Command, CommandResult};
use tern_unikernel::{Devices, Kernel};

use crate::mmu::{self, MemoryMap};
use crate::{irq, Aarch64Board};

/// What a board knows once its console works.
#[derive(Debug)]
pub struct KernelSetup<'a> {
    /// Facts for `info` (`timer_hz` is filled in from CNTFRQ_EL0).
    pub facts: BoardFacts,
    /// RAM the kernel may use (reserved regions already taken out); the
    /// image must lie inside one of the ranges.
    pub ram: RamRanges,
    /// From the lowest to the highest address of the installed RAM, for the
    /// boot log.
    pub installed: Range<u64>,
    /// Device register ranges.
    pub mmio: &'a [Range<u64>],
    /// GICv2 distributor base.
    pub gicd: usize,
    /// GICv2 CPU interface base.
    pub gicc: usize,
}

/// The `fault` command: a bring-up aid that takes a data abort on purpose,
/// to show the exception handler's register dump.
pub fn fault_command() -> Command {
    Command::new(
        "fault",
        "",
        "take a data abort on purpose (shows the register dump, then halts)",
        fault,
    )
}

/// Why the board's probe found no network device, if it said.
static NO_NETWORK: Mutex<Cell<Option<&'static str>>> = Mutex::new(Cell::new(None));

/// Records why the board has no network device (called from the `probe` of
/// [`start_kernel_with_devices`]). The reason is logged once the console is
/// up (the banner stays the first line) and answers the `net` command,
/// which the kernel only has with a network device.
pub fn report_no_network(why: String) {
    let why: &'static str = why.leak();
    critical_section::with(|cs| NO_NETWORK.borrow(cs).set(Some(why)));
}

/// The reason recorded by [`report_no_network`].
pub(crate) fn no_network_reason() -> Option<&'static str> {
    critical_section::with(|cs| NO_NETWORK.borrow(cs).get())
}

/// Stands in for the kernel's `net` on a board without a network device.
fn no_network_command() -> Command {
    Command::new("net", "", "why this node has no network device", no_network)
}

fn no_network(_: &mut Kernel, _: &[&str], _: &mut dyn Write) -> CommandResult {
    let why = no_network_reason().unwrap_or("the board found none");
    Err(alloc::format!("no network device: {why}"))
}

/// An address outside the identity map: reading it is a translation fault.
const UNMAPPED: usize = 0x0000_dead_0000_0000;

fn fault(_: &mut Kernel, _: &[&str], out: &mut dyn Write) -> CommandResult {
    let _ = write!(out, "reading {UNMAPPED:#x}\r\n");
    // SAFETY: deliberately invalid: the read faults before it returns, and
    // the fault handler halts the machine.
    let value = unsafe { core::ptr::read_volatile(UNMAPPED as *const u64) };
    Err(alloc::format!("read {value:#x} from an unmapped address"))
}

/// Turns on the MMU and caches, gives the rest of RAM to the heap, starts
/// the GIC and the timer tick, and runs the portable kernel on `serial`.
///
/// # Safety
///
/// Call once from the board's `main`, at EL1 with the MMU off, after
/// [`crate::exception::install_vectors`]; `setup` must describe the machine
/// (see [`mmu::enable`] and [`irq::init`]).
pub unsafe fn start_kernel<S: SerialPort + 'static>(setup: KernelSetup<'_>, serial: S) -> ! {
    // SAFETY: the caller's contract is this function's.
    unsafe { start_kernel_with_devices(setup, serial, Devices::default) }
}

/// [`start_kernel`] for a board with optional devices (network, random
/// number generator): `probe` runs once the heap and the MMU are up and
/// returns what it found (and may say why it found no network device with
/// [`report_no_network`]).
///
/// # Safety
///
/// As for [`start_kernel`].
pub unsafe fn start_kernel_with_devices<S: SerialPort + 'static>(
    setup: KernelSetup<'_>,
    serial: S,
    probe: impl FnOnce() -> Devices,
) -> ! {
    // What the identity map covers: everything up to 512 GiB, whole
    // gigabytes above 4 GiB.
    let mut ram = setup.ram;
    ram.clip(0..mmu::MAPPED_END);
    ram.align_above(mmu::LOW_END, mmu::HIGH_BLOCK);
    // SAFETY: the caller guarantees the memory map and the call order.
    unsafe {
        mmu::enable(&MemoryMap {
            ram: &ram,
            mmio: setup.mmio,
        });
        crate::claim_heap(&ram);
        irq::init(setup.gicd, setup.gicc);
    }
    let board = Box::leak(Box::new(Aarch64Board::new(setup.facts, setup.installed)));
    let serial = Box::leak(Box::new(serial));
    let devices = probe();
    let mut commands = Vec::from([fault_command(), tern_board_common::random::random_command()]);
    if devices.net.is_none() && no_network_reason().is_some() {
        commands.push(no_network_command());
    }
    tern_unikernel::start(
        board,
        serial,
        commands,
        devices,
        tern_board_common::task_catalog(board),
    )
}
