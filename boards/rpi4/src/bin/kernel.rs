//! `tern-rpi4`: the Tern kernel for the Raspberry Pi 4 (`kernel8.img`).
//!
//! Boot: firmware at 0x80000, EL2 → EL1 in `boot.s`; here the vectors, the
//! UART (after asking the firmware for a 48 MHz UART clock), the board's
//! identity and memory from the mailbox, then the shared aarch64 bring-up,
//! and once the heap is up the devices: GENET Ethernet and the RNG200.
#![no_std]
#![no_main]

extern crate alloc;

use alloc::boxed::Box;

use tern_board_aarch64::{
    exception, start_kernel_with_devices, Devices, GenericTimerClock, KernelSetup,
};
use tern_board_common as _;
use tern_board_rpi4::rng::Rng200Entropy;
use tern_board_rpi4::uart::{self, Uart0, UART_CLOCK_HZ};
use tern_board_rpi4::{mailbox, net, GICC, GICD, PERIPHERALS};
use tern_hal::{BoardFacts, Isa};

tern_board_aarch64::entry!(b"rpi4", main);

/// RAM assumed if the mailbox cannot report it: the firmware always leaves
/// the ARM at least this much below the VideoCore's share.
const FALLBACK_RAM: (u64, u64) = (0, 256 << 20);

fn main(_dtb: usize) -> ! {
    exception::install_vectors();
    let clock = mailbox::set_clock_rate(mailbox::CLOCK_UART, UART_CLOCK_HZ);
    // SAFETY: first and only initialisation of UART0 and GPIO 14/15.
    let serial = unsafe { Uart0::init() };
    exception::set_direct_output(uart::write_direct);
    let warn = |what: &str, error: mailbox::MailboxError| {
        exception::write_direct(format_args!("warning: {what}: {error}\r\n"));
    };
    match clock {
        Ok(hz) if hz != UART_CLOCK_HZ => exception::write_direct(format_args!(
            "warning: UART clock is {hz} Hz, not {UART_CLOCK_HZ}: set init_uart_clock=48000000 in config.txt\r\n"
        )),
        Ok(_) => {}
        Err(error) => warn("UART clock", error),
    }
    let (ram_base, ram_size) = mailbox::arm_memory().unwrap_or_else(|error| {
        warn("ARM memory", error);
        FALLBACK_RAM
    });
    let serial_number = mailbox::board_serial()
        .map_err(|e| warn("serial number", e))
        .ok();
    let mac_address = mailbox::mac_address()
        .map_err(|e| warn("MAC address", e))
        .ok();

    let setup = KernelSetup {
        facts: BoardFacts {
            board: "rpi4",
            isa: Isa::Aarch64,
            model: "Raspberry Pi 4 Model B",
            memory_bytes: ram_size,
            timer_hz: 0,
            serial_number,
            mac_address,
        },
        ram: ram_base..ram_base + ram_size,
        mmio: &[PERIPHERALS],
        gicd: GICD,
        gicc: GICC,
    };
    let probe = move || {
        let clock: &'static GenericTimerClock = Box::leak(Box::new(GenericTimerClock::start()));
        // SAFETY: the one probe of GENET and of the RNG200; nothing else in
        // the kernel touches their registers.
        let (net, rng) = unsafe { (net::probe(mac_address, clock), Rng200Entropy::new(clock)) };
        Devices {
            net,
            entropy: Some(Box::new(rng)),
            boot_commands: tern_board_common::provision::provisioned_commands(),
        }
    };
    // SAFETY: called once at EL1 with the MMU off, vectors installed; the
    // RAM range comes from the firmware and holds this image, the
    // peripheral window holds every device.
    unsafe { start_kernel_with_devices(setup, serial, probe) }
}
