//! The host-testable part of the PC board: parsing what the boot loader
//! hands over ([`bootinfo`]), building page tables ([`pagetable`]),
//! walking the PCI buses ([`pci`]), reading the ACPI tables
//! ([`platform`]) and judging TSC calibrations ([`calibration`]). The
//! kernel itself is the `tern-pc` binary (`src/main.rs`).
#![cfg_attr(not(test), no_std)]

extern crate alloc;

pub mod bootinfo;
pub mod calibration;
pub mod pagetable;
pub mod pci;
pub mod platform;
