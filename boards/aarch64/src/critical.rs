//! The `critical-section` implementation of the aarch64 boards: one core
//! runs Tern, so masking IRQ and FIQ in DAIF is enough; the previous DAIF
//! value is the restore state, which makes nesting safe.

use aarch64_cpu::registers::DAIF;
use tock_registers::interfaces::{Readable, Writeable};

struct DaifCriticalSection;
critical_section::set_impl!(DaifCriticalSection);

// SAFETY: acquire masks IRQ/FIQ on the only running core and returns the old
// mask, release restores exactly that mask; nothing else can run in between.
unsafe impl critical_section::Impl for DaifCriticalSection {
    unsafe fn acquire() -> u64 {
        let daif = DAIF.get();
        // SAFETY: masking interrupts has no memory effects.
        unsafe { core::arch::asm!("msr daifset, #3", options(nomem, nostack)) };
        daif
    }

    unsafe fn release(daif: u64) {
        DAIF.set(daif);
    }
}
