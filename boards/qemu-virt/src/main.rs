//! `tern-virt`: the Tern kernel for QEMU's aarch64 `virt` machine.
//!
//! QEMU loads this ELF, enters it at EL2 (with `virtualization=on`; EL1
//! works too) with the device tree at the start of RAM (or in `x0`). Here: the vectors, the
//! PL011 console (through `arm-pl011-uart`), the RAM size from the device
//! tree, then the shared aarch64 bring-up, and virtio-net and virtio-rng
//! over MMIO ([`devices`]) once the heap is up.
#![no_std]
#![no_main]

extern crate alloc;

mod devices;

use core::convert::Infallible;
use core::ptr::NonNull;

use arm_pl011_uart::{
    DataBits, LineConfig, PL011Registers, Parity, StopBits, Uart, UniqueMmioPointer,
};
use tern_board_aarch64::Devices;
use tern_board_aarch64::{exception, start_kernel_with_devices, KernelSetup};
use tern_board_common as _;
use tern_hal::{BoardFacts, Isa};

tern_board_aarch64::entry!(b"virt", main);

/// PL011 UART0.
const UART_BASE: usize = 0x0900_0000;
/// QEMU's PL011 reference clock (the `apb-pclk` of the device tree).
const UART_CLOCK_HZ: u32 = 24_000_000;
/// GICv2 distributor and CPU interface.
const GICD: usize = 0x0800_0000;
const GICC: usize = 0x0801_0000;
/// Start of RAM, where QEMU also places the device tree for ELF kernels.
const RAM_BASE: u64 = 0x4000_0000;
/// Every device of `virt` lives between the GIC and the start of RAM.
const MMIO: core::ops::Range<u64> = 0x0800_0000..RAM_BASE;
/// RAM assumed when the device tree cannot be read (QEMU's default `-m`).
const FALLBACK_RAM_BYTES: u64 = 128 << 20;

/// PL011 flag register offset and its "transmit FIFO full" bit.
const UARTFR: usize = 0x18;
const UARTFR_TXFF: u32 = 1 << 5;

fn main(dtb: usize) -> ! {
    exception::install_vectors();
    // SAFETY: UART_BASE is QEMU virt's PL011, identity-accessible with the
    // MMU off (and mapped as device memory later); this is its only owner.
    let regs =
        unsafe { UniqueMmioPointer::new(NonNull::new_unchecked(UART_BASE as *mut PL011Registers)) };
    let mut uart = Uart::new(regs);
    let line = LineConfig {
        data_bits: DataBits::Bits8,
        parity: Parity::None,
        stop_bits: StopBits::One,
    };
    let uart_error = uart.enable(line, 115_200, UART_CLOCK_HZ).err();
    exception::set_direct_output(write_direct);
    if let Some(error) = uart_error {
        exception::write_direct(format_args!("warning: UART setup: {error}\r\n"));
    }

    // QEMU passes the device tree in x0 only to Linux images; for an ELF
    // kernel it leaves it at the start of RAM.
    let dtb = if dtb == 0 { RAM_BASE as usize } else { dtb };
    let ram_bytes = ram_from_device_tree(dtb).unwrap_or_else(|error| {
        exception::write_direct(format_args!(
            "warning: device tree at {dtb:#x}: {error}; assuming {} MiB\r\n",
            FALLBACK_RAM_BYTES >> 20
        ));
        FALLBACK_RAM_BYTES
    });

    let setup = KernelSetup {
        facts: BoardFacts {
            board: "virt",
            isa: Isa::Aarch64,
            model: "QEMU virt",
            memory_bytes: ram_bytes,
            timer_hz: 0,
            serial_number: None,
            mac_address: None,
        },
        ram: RAM_BASE..RAM_BASE + ram_bytes,
        mmio: &[MMIO],
        gicd: GICD,
        gicc: GICC,
    };
    // SAFETY: called once at EL1 with the MMU off, vectors installed; RAM
    // comes from QEMU's device tree and holds this image, MMIO every device.
    unsafe {
        start_kernel_with_devices(setup, VirtSerial(uart), || {
            let found = devices::probe(dtb);
            Devices {
                net: found.net,
                entropy: found.entropy,
                boot_commands: tern_board_common::provision::boot_commands(&boot_commands(dtb)),
            }
        })
    }
}

/// The device tree's `/chosen/bootargs` (QEMU's `-append`): shell commands
/// the kernel runs at boot.
fn boot_commands(dtb: usize) -> alloc::string::String {
    // SAFETY: as in `ram_from_device_tree`: RAM that `from_ptr` checks.
    let Ok(fdt) = (unsafe { fdt::Fdt::from_ptr(dtb as *const u8) }) else {
        return alloc::string::String::new();
    };
    fdt.chosen().bootargs().unwrap_or_default().into()
}

/// Size of the RAM bank at [`RAM_BASE`], from the device tree at `dtb`.
fn ram_from_device_tree(dtb: usize) -> Result<u64, &'static str> {
    // SAFETY: `dtb` is RAM (x0 or the start of RAM); `from_ptr` checks the
    // header's magic and version before trusting its sizes.
    let fdt =
        unsafe { fdt::Fdt::from_ptr(dtb as *const u8) }.map_err(|_| "not a valid device tree")?;
    let size = fdt
        .memory()
        .regions()
        .find(|region| region.starting_address as u64 == RAM_BASE)
        .and_then(|region| region.size);
    size.map(|size| size as u64)
        .ok_or("no memory region at 0x40000000")
}

/// Writes straight to the PL011 registers, for the fault dump: it must work
/// while the console (which owns the `Uart`) is borrowed.
fn write_direct(bytes: &[u8]) {
    let base = UART_BASE as *mut u32;
    for &byte in bytes {
        // SAFETY: polling the flag register and writing the data register
        // of the PL011 only sends the byte.
        unsafe {
            while base.byte_add(UARTFR).read_volatile() & UARTFR_TXFF != 0 {
                core::hint::spin_loop();
            }
            base.write_volatile(u32::from(byte));
        }
    }
}

/// The console: the PL011 driver with blocking writes.
struct VirtSerial(Uart<'static>);

impl embedded_io::ErrorType for VirtSerial {
    type Error = Infallible;
}

impl embedded_io::Write for VirtSerial {
    fn write(&mut self, buf: &[u8]) -> Result<usize, Infallible> {
        for &byte in buf {
            while self.0.is_tx_fifo_full() {
                core::hint::spin_loop();
            }
            self.0.write_word(byte);
        }
        Ok(buf.len())
    }

    fn flush(&mut self) -> Result<(), Infallible> {
        while self.0.is_busy() {
            core::hint::spin_loop();
        }
        Ok(())
    }
}

impl tern_hal::SerialPort for VirtSerial {
    fn read_byte(&mut self) -> Option<u8> {
        // A byte with a line error is dropped: the shell cannot use it.
        self.0.read_word().ok().flatten()
    }
}
