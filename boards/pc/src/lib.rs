//! The host-testable part of the PC board: parsing the boot loader's
//! memory map. The kernel itself is the `tern-pc` binary (`src/main.rs`).
#![cfg_attr(not(test), no_std)]

pub mod bootinfo;
