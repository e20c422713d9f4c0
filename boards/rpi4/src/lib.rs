//! Raspberry Pi 4 (BCM2711) drivers shared by the Tern kernel and the
//! chainloader: the PL011 UART0 on GPIO 14/15 and the VideoCore mailbox,
//! both through the `bcm2711-lpa` peripheral access crate; and for the
//! kernel the GENET v5 Ethernet ([`net`], over `tern-genet`) and the RNG200
//! random number generator ([`rng`], over `tern-rng200`).
#![no_std]

extern crate alloc;

pub mod mailbox;
pub mod net;
pub mod rng;
pub mod uart;

/// Start of the peripheral window (ARM physical); everything from here to
/// 4 GiB is device memory, including the GIC-400.
pub const PERIPHERALS: core::ops::Range<u64> = 0xFC00_0000..0x1_0000_0000;
/// GIC-400 distributor.
pub const GICD: usize = 0xFF84_1000;
/// GIC-400 CPU interface.
pub const GICC: usize = 0xFF84_2000;
/// Where the firmware loads `kernel8.img` (`kernel_address` default).
pub const KERNEL_LOAD_ADDRESS: usize = 0x80000;
