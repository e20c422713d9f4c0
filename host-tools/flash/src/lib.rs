//! The reusable pieces of `flash`: build a Tern kernel for its board, check and
//! convert its ELF, and deploy it (boot files, SD-card and USB images, the
//! serial chainloader, QEMU, and the Pi 4's RAM loading over JTAG through a
//! debug probe), with boot commands such as the cluster key provisioned into
//! the image ([`provision`]). The lab (`tern-lab`: QEMU nodes for tests and demos) uses the same board table and
//! QEMU command lines, so tests boot kernels exactly as `flash` does.

pub mod board;
pub mod build;
pub mod chainload;
mod error;
pub mod fsutil;
pub mod image;
pub mod jtag;
pub mod ports;
pub mod provision;
pub mod qemu;
pub mod rpi4;
pub mod usb;

pub use board::{Board, Variant};
pub use error::FlashError;
