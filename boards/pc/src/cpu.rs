//! CPU-level services: critical sections, idling, halting.

use core::arch::asm;
use core::fmt;

use x86_64::instructions::interrupts;
use x86_64::instructions::port::Port;
use x86_64::registers::rflags::{self, RFlags};

use crate::console::RawConsole;

/// QEMU's `isa-debug-exit` device (`-device isa-debug-exit,iobase=0xf4,iosize=0x04`).
const DEBUG_EXIT_PORT: u16 = 0xf4;

/// Critical sections mask interrupts: there is one core.
struct CliCriticalSection;
critical_section::set_impl!(CliCriticalSection);

// SAFETY: with a single core, masking interrupts excludes every other
// context; `release` restores exactly the IF state `acquire` found, so
// sections nest.
unsafe impl critical_section::Impl for CliCriticalSection {
    unsafe fn acquire() -> u64 {
        let flags = rflags::read_raw();
        interrupts::disable();
        flags
    }

    unsafe fn release(flags: u64) {
        if RFlags::from_bits_truncate(flags).contains(RFlags::INTERRUPT_FLAG) {
            interrupts::enable();
        }
    }
}

/// Enables interrupts and sleeps until the next one, atomically: `sti`
/// takes effect after the following instruction, so an interrupt cannot
/// slip in between and leave `hlt` waiting for the next tick.
pub fn wait_for_interrupt() {
    interrupts::enable_and_hlt();
}

/// Stops the machine. Under QEMU the `isa-debug-exit` device ends the
/// emulator with status `(code << 1) | 1`; on hardware (no such device) the
/// CPU prints `halted` and parks with interrupts off.
pub fn halt(code: u8) -> ! {
    let mut exit = Port::<u32>::new(DEBUG_EXIT_PORT);
    // SAFETY: port 0xf4 is unused on PCs; under QEMU it is the debug-exit
    // device, which stops the emulator here.
    unsafe { exit.write(u32::from(code)) };
    let _ = fmt::Write::write_str(&mut RawConsole, "\r\nhalted\r\n");
    loop {
        // SAFETY: parking the CPU for good; nothing runs after this.
        unsafe { asm!("cli", "hlt", options(nomem, nostack)) };
    }
}
