//! `tern-rpi4-chainloader`: loads a kernel over the serial line.
//!
//! The firmware loads this image at 0x80000; `boot.s` copies it to its link
//! address (32 MiB) and stays at EL2. It then speaks the device side of
//! `tern_chainload_protocol` (the host is `flash --serial`): announce readiness about
//! once a second, take a header, refuse images that would reach the
//! chainloader itself, receive the image to 0x80000, check its CRC-32C,
//! and jump to it as the firmware would have (EL2, MMU and caches off,
//! cores 1-3 parked, `x0` = the device tree pointer the firmware passed).
//! A bad checksum is reported and the chainloader waits for a new attempt.
#![no_std]
#![no_main]

use core::fmt::{self, Write as _};

use aarch64_cpu::registers::{CNTFRQ_EL0, CNTPCT_EL0};
use tern_board_rpi4::uart::{self, Uart0};
use tern_board_rpi4::KERNEL_LOAD_ADDRESS;
use tern_chainload_protocol as protocol;
use tock_registers::interfaces::Readable;

tern_board_aarch64::entry!(b"rpi4-chainloader", main);

/// The chainloader's own link address (see build.rs): images must end below.
const CHAINLOADER_BASE: usize = 0x0200_0000;
/// Largest image that fits between the load address and the chainloader.
const MAX_IMAGE_LEN: u32 = (CHAINLOADER_BASE - KERNEL_LOAD_ADDRESS) as u32;
/// Longest silence accepted inside a header or an image, in seconds.
const TRANSFER_TIMEOUT_S: u64 = 5;

/// Why a load attempt ended without a jump.
#[derive(Clone, Copy, Debug)]
enum LoadError {
    TooLarge(u32),
    Timeout { received: u32, expected: u32 },
    Checksum { expected: u32, actual: u32 },
}

impl fmt::Display for LoadError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            LoadError::TooLarge(len) => {
                write!(f, "image of {len} bytes is larger than {MAX_IMAGE_LEN}")
            }
            LoadError::Timeout { received, expected } => {
                write!(f, "timed out after {received} of {expected} bytes")
            }
            LoadError::Checksum { expected, actual } => {
                write!(
                    f,
                    "checksum mismatch: header {expected:#010x}, image {actual:#010x}"
                )
            }
        }
    }
}

/// Text output on the UART (the chainloader has no console layer).
struct Text;

impl fmt::Write for Text {
    fn write_str(&mut self, s: &str) -> fmt::Result {
        uart::write_direct(s.as_bytes());
        Ok(())
    }
}

fn main(dtb: usize) -> ! {
    // SAFETY: first and only initialisation of UART0 and GPIO 14/15.
    let mut uart = unsafe { Uart0::init() };
    let _ = write!(
        Text,
        "Tern chainloader {} on rpi4: waiting for a kernel\r\n",
        env!("CARGO_PKG_VERSION")
    );
    loop {
        let header = wait_for_header(&mut uart);
        match load(&mut uart, header) {
            Ok(()) => {
                uart::write_direct(&[protocol::IMAGE_VERIFIED]);
                uart.flush();
                // SAFETY: a complete image with a matching checksum is at
                // KERNEL_LOAD_ADDRESS.
                unsafe { jump_to_kernel(dtb) }
            }
            Err(error) => {
                if let LoadError::Checksum { .. } = error {
                    uart::write_direct(&[protocol::REJECT_CHECKSUM]);
                }
                let _ = write!(
                    Text,
                    "\r\nchainloader: {error}; waiting for a new attempt\r\n"
                );
            }
        }
    }
}

/// The physical counter and its frequency.
fn now() -> u64 {
    CNTPCT_EL0.get()
}

fn seconds(n: u64) -> u64 {
    CNTFRQ_EL0.get() * n
}

/// Sends the ready message every second until a header arrives.
fn wait_for_header(uart: &mut Uart0) -> protocol::Header {
    let ready = protocol::ready_message(MAX_IMAGE_LEN);
    let mut matched = 0;
    let mut next_ready = now();
    loop {
        if now() >= next_ready {
            uart::write_direct(&ready);
            next_ready = now() + seconds(1);
        }
        let Some(byte) = uart.try_read() else {
            continue;
        };
        // Match the header magic byte by byte; a stray byte restarts it.
        if byte == protocol::HEADER_MAGIC[matched] {
            matched += 1;
        } else {
            matched = usize::from(byte == protocol::HEADER_MAGIC[0]);
        }
        if matched < protocol::HEADER_MAGIC.len() {
            continue;
        }
        matched = 0;
        let mut bytes = [0; protocol::HEADER_LEN];
        bytes[..8].copy_from_slice(&protocol::HEADER_MAGIC);
        if read_exact(uart, &mut bytes[8..]).is_ok() {
            if let Some(header) = protocol::Header::decode(&bytes) {
                return header;
            }
        }
    }
}

/// Fills `buf` from the UART; on a silence longer than the transfer
/// timeout, returns how many bytes arrived.
fn read_exact(uart: &mut Uart0, buf: &mut [u8]) -> Result<(), usize> {
    for (index, slot) in buf.iter_mut().enumerate() {
        let deadline = now() + seconds(TRANSFER_TIMEOUT_S);
        *slot = loop {
            if let Some(byte) = uart.try_read() {
                break byte;
            }
            if now() > deadline {
                return Err(index);
            }
        };
    }
    Ok(())
}

/// Answers the header, receives the image to the load address and checks it.
fn load(uart: &mut Uart0, header: protocol::Header) -> Result<(), LoadError> {
    if header.len > MAX_IMAGE_LEN {
        uart::write_direct(&[protocol::REJECT_TOO_LARGE]);
        return Err(LoadError::TooLarge(header.len));
    }
    uart::write_direct(&[protocol::HEADER_ACCEPTED]);
    // SAFETY: KERNEL_LOAD_ADDRESS..+MAX_IMAGE_LEN is RAM below this
    // relocated chainloader, its stack and BSS, and used by nothing else.
    let image = unsafe {
        core::slice::from_raw_parts_mut(KERNEL_LOAD_ADDRESS as *mut u8, header.len as usize)
    };
    read_exact(uart, image).map_err(|received| LoadError::Timeout {
        received: received as u32,
        expected: header.len,
    })?;
    let actual = protocol::CRC32C.checksum(image);
    if actual != header.crc32c {
        return Err(LoadError::Checksum {
            expected: header.crc32c,
            actual,
        });
    }
    Ok(())
}

/// Enters the received kernel the way the firmware enters `kernel8.img`.
///
/// # Safety
///
/// A verified image must be at [`KERNEL_LOAD_ADDRESS`].
unsafe fn jump_to_kernel(dtb: usize) -> ! {
    // SAFETY: the data cache is off, so the image is in RAM; the
    // instruction cache is invalidated before the branch.
    unsafe {
        core::arch::asm!(
            "dsb sy",
            "ic iallu",
            "dsb sy",
            "isb",
            "br {entry}",
            entry = in(reg) KERNEL_LOAD_ADDRESS,
            in("x0") dtb,
            in("x1") 0,
            in("x2") 0,
            in("x3") 0,
            options(noreturn),
        )
    }
}
