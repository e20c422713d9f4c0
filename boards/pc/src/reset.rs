//! Resetting the machine for `reboot`: the FADT's reset register where the
//! firmware says it works, else the chipset's reset control at 0xCF9, else
//! the 8042's reset line, else a triple fault. Each is given 50 ms.

use core::sync::atomic::{AtomicU64, Ordering};

use tern_board_pc::pagetable::Cache;
use tern_board_pc::pci::{ConfigSpace, PciAddress};
use tern_board_pc::platform::Register;
use x86_64::instructions::port::Port;
use x86_64::structures::DescriptorTablePointer;
use x86_64::VirtAddr;

use crate::paging;
use crate::pcicfg::PcConfigSpace;

/// The FADT's reset register, packed (kind in the top byte, value next,
/// address below), 0 when there is none.
static FADT_RESET: AtomicU64 = AtomicU64::new(0);

/// Remembers the FADT's reset register and value.
pub fn set_fadt_register(register: Register, value: u8) {
    let packed = match register {
        Register::Port(port) => 1 << 56 | u64::from(port),
        Register::Memory(address) if address < 1 << 48 => 2 << 56 | address,
        Register::PciConfig {
            device,
            function,
            offset,
        } => 3 << 56 | u64::from(device) << 24 | u64::from(function) << 16 | u64::from(offset),
        Register::Memory(_) => return,
    };
    FADT_RESET.store(packed | u64::from(value) << 48, Ordering::Relaxed);
}

/// Waits about `ms` milliseconds on the CPU (the clock may be the thing
/// that is broken).
fn pause(clock: &dyn tern_hal::MonotonicClock, ms: u64) {
    let end = clock.now_ns() + ms * 1_000_000;
    while clock.now_ns() < end {
        core::hint::spin_loop();
    }
}

/// Resets the machine.
pub fn reboot(clock: &dyn tern_hal::MonotonicClock) -> ! {
    x86_64::instructions::interrupts::disable();
    let packed = FADT_RESET.load(Ordering::Relaxed);
    let value = (packed >> 48) as u8;
    let address = packed & 0x0000_ffff_ffff_ffff;
    match packed >> 56 {
        // SAFETY: the reset register the FADT names, written with its value.
        1 => unsafe { Port::<u8>::new(address as u16).write(value) },
        2 if paging::map(address, 1, Cache::Uncached).is_ok() => {
            // SAFETY: as above, a memory-mapped reset register, mapped.
            unsafe { (address as *mut u8).write_volatile(value) };
        }
        3 => {
            let target = PciAddress {
                segment: 0,
                bus: 0,
                device: (address >> 24) as u8,
                function: (address >> 16) as u8,
            };
            let offset = address as u16;
            let mut space = PcConfigSpace::new(&[]);
            let aligned = offset & !3;
            let shift = u32::from(offset & 3) * 8;
            let word = space.read32(target, aligned);
            let word = (word & !(0xff << shift)) | u32::from(value) << shift;
            space.write32(target, aligned, word);
        }
        _ => {}
    }
    pause(clock, 50);
    // SAFETY: the chipset's reset control register: system reset (bit 1),
    // then a full reset (bits 1 and 2), as the ICH/PCH datasheets describe.
    unsafe {
        let mut cf9 = Port::<u8>::new(0xcf9);
        cf9.write(0x02);
        cf9.write(0x06);
    }
    pause(clock, 50);
    // SAFETY: the 8042's "pulse reset line" command.
    unsafe { Port::<u8>::new(0x64).write(0xfe) };
    pause(clock, 50);
    // A triple fault: no IDT, then an exception.
    let empty = DescriptorTablePointer {
        limit: 0,
        base: VirtAddr::zero(),
    };
    // SAFETY: deliberately unusable: the breakpoint below cannot be
    // delivered, which escalates to a triple fault and a CPU reset.
    unsafe {
        x86_64::instructions::tables::lidt(&empty);
        core::arch::asm!("int3", options(nomem, nostack));
    }
    loop {
        x86_64::instructions::hlt();
    }
}
