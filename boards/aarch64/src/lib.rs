//! aarch64 code shared by the Tern boards `rpi4` and `virt`.
//!
//! - [`entry!`]: ties a board's `main` to the boot code (`boot.s`: park
//!   cores 1-3, relocate, EL2 to EL1, FP/SIMD, stack, BSS) and records the
//!   board name in the non-loaded `.tern_board` section of the ELF.
//! - [`exception`]: the EL1 vector table; faults print a register dump
//!   straight to the UART and halt.
//! - [`memory`]: the RAM of the device tree, less its reserved regions.
//! - [`mmu`]: identity map, RAM write-back cacheable, MMIO Device-nGnRE;
//!   the low 4 GiB and whole gigabytes of RAM above, to 512 GiB.
//! - [`cache`]: data-cache clean / invalidate for non-coherent DMA.
//! - [`probe`]: register reads and writes that report an absent device
//!   instead of faulting.
//! - [`irq`]: the GICv2 (GIC-400) and the generic timer's 100 Hz tick.
//! - [`semihosting`]: `halt(code)` through semihosting `SYS_EXIT_EXTENDED`.
//! - [`Aarch64Board`]: the [`tern_hal::Board`] both boards hand the kernel,
//!   and [`start_kernel`], the common tail of both boards' `main`.
//! - A [`critical_section`] implementation that masks IRQ and FIQ.
//!
//! The linker script `tern-aarch64.ld` (next to this crate's manifest) is
//! shared too; each board's build script passes it with the image's load
//! address (see that file).
#![no_std]

extern crate alloc;

mod board;
pub mod cache;
mod critical;
pub mod exception;
pub mod irq;
mod kernel;
pub mod memory;
pub mod mmu;
pub mod probe;
pub mod semihosting;

pub(crate) use board::claim_heap;
pub use board::{Aarch64Board, GenericTimerClock};
pub use kernel::{
    fault_command, report_no_network, start_kernel, start_kernel_with_devices, KernelSetup,
};
pub use tern_unikernel::Devices;

core::arch::global_asm!(include_str!("boot.s"));
core::arch::global_asm!(include_str!("vectors.s"));

/// Declares a board binary's entry point and its board name.
///
/// `entry!(b"rpi4", main)` makes the boot code call `main(dtb)` (with the
/// device tree pointer the firmware left in `x0`, maybe 0) on core 0 once
/// the stack and BSS are ready, and places the bytes `rpi4` (no terminator)
/// in the ELF section `.tern_board`, which the flash tool reads.
#[macro_export]
macro_rules! entry {
    ($board:literal, $main:path) => {
        #[used]
        #[unsafe(link_section = ".tern_board")]
        static TERN_BOARD_NAME: [u8; $board.len()] = *$board;

        /// Called by `boot.s` on core 0.
        #[unsafe(no_mangle)]
        extern "C" fn _tern_rust_entry(dtb: usize) -> ! {
            let main: fn(usize) -> ! = $main;
            main(dtb)
        }
    };
}

unsafe extern "C" {
    /// First byte after the image, its BSS and boot stack (page aligned);
    /// defined by `tern-aarch64.ld`.
    static __image_end: u8;
}

/// Address of the first free byte of RAM after the image (page aligned).
pub fn image_end() -> usize {
    core::ptr::addr_of!(__image_end) as usize
}
