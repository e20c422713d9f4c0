//! `tern-rpi4`: the Tern kernel for the Raspberry Pi 4 (`kernel8.img`).
//!
//! Boot: firmware at 0x80000, EL2 → EL1 in `boot.s`; here the vectors, the
//! UART (after asking the firmware for a 48 MHz UART clock), the ARM clock
//! raised to its maximum, the board's identity from the mailbox, all of its
//! RAM from the device tree the firmware passes in `x0` (the mailbox's ARM
//! memory, the first GiB less the VideoCore's share, without one), then the
//! shared aarch64 bring-up, and once the heap is up the devices: GENET
//! Ethernet and the RNG200.
#![no_std]
#![no_main]

extern crate alloc;

use alloc::boxed::Box;

use tern_board_aarch64::memory::{self, RamRanges};
use tern_board_aarch64::{
    exception, start_kernel_with_devices, Devices, GenericTimerClock, KernelSetup,
};
use tern_board_common as _;
use tern_board_rpi4::rng::Rng200Entropy;
use tern_board_rpi4::uart::{self, Uart0, UART_CLOCK_HZ};
use tern_board_rpi4::{mailbox, net, GICC, GICD, PERIPHERALS};
use tern_genet::RgmiiDelays;
use tern_hal::{BoardFacts, Isa};

tern_board_aarch64::entry!(b"rpi4", main);

/// RAM assumed if the mailbox cannot report it: the firmware always leaves
/// the ARM at least this much below the VideoCore's share.
const FALLBACK_RAM: (u64, u64) = (0, 256 << 20);

/// The kernel command line's switch for the RGMII delays (`cmdline.txt`,
/// which the firmware passes as the device tree's `/chosen/bootargs`).
const RGMII_SWITCH: &str = "genet.rgmii=";

fn main(dtb: usize) -> ! {
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
    let cpu_clock_hz = mailbox::raise_arm_clock()
        .map_err(|e| warn("ARM clock", e))
        .ok()
        .map(u64::from);
    // SAFETY: x0 as the firmware left it: 0 or its device tree in RAM.
    let (installed, ram) = match unsafe { memory::from_device_tree(dtb) } {
        Ok(found) => (found.installed, found.usable),
        Err(_) => {
            let (base, size) = mailbox::arm_memory().unwrap_or_else(|error| {
                warn("ARM memory", error);
                FALLBACK_RAM
            });
            let ram = RamRanges::single(base..base + size);
            (ram.clone(), ram)
        }
    };
    let delays = rgmii_delays(dtb);
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
            memory_bytes: installed.total(),
            timer_hz: 0,
            serial_number,
            mac_address,
            cpu_clock_hz,
        },
        ram,
        installed: installed.span(),
        mmio: &[PERIPHERALS],
        gicd: GICD,
        gicc: GICC,
    };
    let probe = move || {
        let clock: &'static GenericTimerClock = Box::leak(Box::new(GenericTimerClock::start()));
        // SAFETY: the one probe of GENET and of the RNG200; nothing else in
        // the kernel touches their registers.
        let (net, rng) = unsafe {
            (
                net::probe(mac_address, clock, delays),
                Rng200Entropy::new(clock),
            )
        };
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

/// The RGMII delay setting: `genet.rgmii=rxid` (the default) or `=id` on the
/// kernel command line; anything else is reported and the default used.
fn rgmii_delays(dtb: usize) -> RgmiiDelays {
    if dtb == 0 {
        return RgmiiDelays::default();
    }
    // SAFETY: the firmware's device tree, which `memory` already validated
    // (or rejected: then `from_ptr` fails again here) and kept out of the heap.
    let Ok(fdt) = (unsafe { fdt::Fdt::from_ptr(dtb as *const u8) }) else {
        return RgmiiDelays::default();
    };
    let bootargs = fdt.chosen().bootargs().unwrap_or_default();
    let Some(name) = bootargs
        .split_whitespace()
        .find_map(|arg| arg.strip_prefix(RGMII_SWITCH))
    else {
        return RgmiiDelays::default();
    };
    RgmiiDelays::from_name(name).unwrap_or_else(|| {
        exception::write_direct(format_args!(
            "warning: {RGMII_SWITCH}{name}: not rxid or id; using rxid\r\n"
        ));
        RgmiiDelays::default()
    })
}
