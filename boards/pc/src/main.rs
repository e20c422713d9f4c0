//! Tern on an x86_64 PC: the `tern-pc` kernel.
//!
//! One ELF boots under QEMU's `-kernel` (PVH note) and from GRUB's
//! `multiboot2` command (USB stick, see `grub.cfg`). [`boot`] gets the CPU
//! into long mode; [`pc_main`] then reads the boot information, installs
//! the descriptor tables, the heap and the kernel's page tables (all of
//! RAM), reads the ACPI tables, sets up the clock and the timer tick, walks
//! the PCI buses and hands the machine to the portable kernel with its
//! console ([`console`]), its network device and its entropy source
//! ([`devices`]).
#![no_std]
#![no_main]

extern crate alloc;

mod apic;
mod boot;
mod console;
mod cpu;
mod devices;
mod firmware;
mod interrupts;
mod keyboard;
mod log;
mod nic;
mod paging;
mod pcicfg;
mod rdrand;
mod reset;
mod screen;
mod serial;
mod timer;

use alloc::boxed::Box;
use alloc::format;
use alloc::string::String;
use alloc::vec::Vec;
use core::arch::x86_64::__cpuid;
use core::arch::{asm, global_asm};
use core::cell::RefCell;
use core::fmt::Write;

use critical_section::Mutex;
use tern_board_common as _;
use tern_hal::{Board, BoardFacts, HeapStats, Isa, MonotonicClock};
use tern_unikernel::shell::{Command, CommandResult};
use tern_unikernel::{Devices, Kernel};

use console::{PcConsole, RawConsole};
use keyboard::Keyboard;
use pcicfg::PcConfigSpace;
use serial::{Uart, COM1_PORT};
use tern_board_pc::bootinfo::{self, Region};
use tern_board_pc::platform::{Platform, Register};
use timer::TscClock;

// The board's name in a non-loaded section, for `flash` to check.
global_asm!(
    r#"
    .section .tern_board, "", @progbits
    .ascii "pc"
"#,
    options(att_syntax)
);

/// The first heap lies inside the 4 GiB the boot code identity-maps (the
/// kernel's own page tables are built from it).
const BOOT_MAPPED_LIMIT: u64 = 4 << 30;
/// Smallest first heap worth booting with; checked here because a failure
/// inside the allocator before the kernel starts could not be reported.
const MIN_HEAP_BYTES: u64 = 1 << 20;
/// RAM below 1 MiB is left to the firmware (BIOS data, EBDA, boot
/// structures).
const LOW_MEMORY: u64 = 1 << 20;

extern "C" {
    /// The kernel image's first byte (from the linker script).
    static __kernel_start: u8;
    /// First byte past the kernel image and its BSS (from the linker script).
    static __kernel_end: u8;
}

/// What boot found, for the `hw` command.
static HW_LINES: Mutex<RefCell<Vec<String>>> = Mutex::new(RefCell::new(Vec::new()));

/// Adds a line to what `hw` shows.
fn hw_line(line: String) {
    critical_section::with(|cs| HW_LINES.borrow_ref_mut(cs).push(line));
}

/// The PC as the portable kernel sees it.
struct PcBoard {
    facts: BoardFacts,
    clock: TscClock,
}

impl Board for PcBoard {
    fn facts(&self) -> BoardFacts {
        self.facts.clone()
    }

    fn clock(&self) -> &dyn MonotonicClock {
        &self.clock
    }

    fn timer_interrupts(&self) -> u64 {
        timer::ticks()
    }

    fn heap_stats(&self) -> HeapStats {
        tern_board_common::heap_stats()
    }

    fn before_first_prompt(&self) {
        // Frames only reach the wire once the portable kernel has installed
        // the console; the banner and the boot commands' answers come first.
        log::flush();
    }

    fn wait_for_interrupt(&self) {
        screen::draw_now();
        cpu::wait_for_interrupt();
    }

    fn halt(&self, code: u8) -> ! {
        cpu::halt(code)
    }
}

/// Prints a boot failure on COM1 and halts: there is no kernel yet to report
/// it.
fn boot_failure(what: &str, error: &dyn core::fmt::Display) -> ! {
    let _ = write!(RawConsole, "\r\nboot failed: {what}: {error}\r\n");
    cpu::halt(interrupts::FAULT_EXIT_CODE)
}

/// The CPU's brand string (CPUID leaves 0x8000_0002..4), if it has one.
fn cpu_brand() -> Option<String> {
    // The extended leaves are read only when leaf 0x8000_0000 says they
    // exist.
    if __cpuid(0x8000_0000).eax < 0x8000_0004 {
        return None;
    }
    let leaves = [
        __cpuid(0x8000_0002),
        __cpuid(0x8000_0003),
        __cpuid(0x8000_0004),
    ];
    let mut bytes = [0u8; 48];
    for (chunk, leaf) in bytes.chunks_exact_mut(16).zip(leaves) {
        for (out, word) in chunk
            .chunks_exact_mut(4)
            .zip([leaf.eax, leaf.ebx, leaf.ecx, leaf.edx])
        {
            out.copy_from_slice(&word.to_le_bytes());
        }
    }
    let text = core::str::from_utf8(&bytes).ok()?;
    let brand = text.trim_matches(|c: char| c == '\0' || c.is_whitespace());
    (!brand.is_empty()).then(|| String::from(brand))
}

/// The board's own shell commands.
fn board_commands() -> Vec<Command> {
    alloc::vec![
        Command::new(
            "reboot",
            "",
            "reset the machine (FADT reset register, else 0xCF9, else the 8042)",
            reboot_command,
        ),
        Command::new(
            "hw",
            "",
            "show what the PC board found: console, clock, tick, ACPI, PCI functions",
            hw_command,
        ),
        Command::new(
            "fault",
            "[stack]",
            "take a page fault (or, with 'stack', overflow the stack into a double fault) on purpose",
            fault_command,
        ),
        tern_board_common::random::random_command(),
    ]
}

/// `reboot`: resets the machine.
fn reboot_command(kernel: &mut Kernel, args: &[&str], out: &mut dyn Write) -> CommandResult {
    if !args.is_empty() {
        return Err(String::from("usage: reboot"));
    }
    let _ = write!(out, "rebooting\r\n");
    reset::reboot(kernel.board().clock())
}

/// `hw`: the board's view of the machine, for bring-up on real PCs.
fn hw_command(_: &mut Kernel, args: &[&str], out: &mut dyn Write) -> CommandResult {
    if !args.is_empty() {
        return Err(String::from("usage: hw"));
    }
    let _ = write!(out, "console: {}\r\n", console::describe());
    let _ = write!(out, "screen: {}\r\n", screen::describe());
    critical_section::with(|cs| {
        for line in HW_LINES.borrow_ref(cs).iter() {
            let _ = write!(out, "{line}\r\n");
        }
    });
    let _ = write!(
        out,
        "stray interrupts: {}\r\n",
        interrupts::stray_interrupts()
    );
    devices::describe(out);
    Ok(())
}

/// Recurses until the stack runs into its guard page.
fn overflow_stack(depth: u64) -> u64 {
    // A live local array per frame, so every level really uses stack.
    let frame = core::hint::black_box([depth; 64]);
    if core::hint::black_box(depth) == u64::MAX {
        return frame[0];
    }
    overflow_stack(depth + 1).wrapping_add(frame[63])
}

/// `fault [stack]`: a deliberate CPU exception, to see the fault dump work.
fn fault_command(_: &mut Kernel, args: &[&str], out: &mut dyn Write) -> CommandResult {
    match args {
        [] => {}
        ["stack"] => {
            let _ = write!(out, "overflowing the kernel stack\r\n");
            let depth = overflow_stack(0);
            return Err(format!("the stack did not overflow ({depth})"));
        }
        _ => return Err(String::from("usage: fault [stack]")),
    }
    let address = paging::guard_page();
    let _ = write!(out, "reading unmapped address {address:#x}\r\n");
    // SAFETY: deliberately reads the stack's guard page, which is never
    // mapped; the page fault it raises ends in the fault dump and a halt, so
    // nothing after the read runs.
    unsafe {
        asm!("mov {tmp}, qword ptr [{addr}]", addr = in(reg) address, tmp = out(reg) _, options(nostack, readonly));
    }
    Err(String::from("the read did not fault"))
}

/// Rust entry, called by the boot code in long mode on the boot stack with
/// EAX and EBX as the boot loader left them.
#[no_mangle]
extern "C" fn pc_main(magic: u32, info: u32) -> ! {
    let (uart, uart_error) = match Uart::probe(COM1_PORT) {
        Ok(uart) => (Some(uart), None),
        Err(error) => (None, Some(error)),
    };
    let mut console = PcConsole::new(uart);
    if interrupts::init().is_err() {
        boot_failure("interrupts", &"descriptor tables loaded twice");
    }

    // SAFETY: `magic` and `info` are EAX and EBX from the boot loader, and
    // nothing has written memory outside the kernel image yet.
    let boot = match unsafe { bootinfo::read(magic, info) } {
        Ok(boot) => boot,
        Err(error) => boot_failure("boot information", &error),
    };
    let map = &boot.memory_map;
    let kernel = Region {
        start: core::ptr::addr_of!(__kernel_start) as u64,
        end: (core::ptr::addr_of!(__kernel_end) as u64).next_multiple_of(4096),
    };
    let Some(first_heap) = map
        .largest_free(kernel.end, BOOT_MAPPED_LIMIT)
        .filter(|heap| heap.len() >= MIN_HEAP_BYTES)
    else {
        boot_failure("heap", &"less than 1 MiB of usable RAM above the kernel");
    };
    // SAFETY: the range is usable RAM per the firmware, above the kernel
    // image, identity-mapped by the boot code, and the boot information was
    // copied out above.
    unsafe { tern_board_common::init_heap(first_heap.start as *mut u8, first_heap.len() as usize) };
    if let Err(error) = paging::init(map, kernel) {
        boot_failure("page tables", &error);
    }
    screen::init(&boot);
    // The rest of RAM, now mapped: above 4 GiB too.
    let mut heap_bytes = first_heap.len();
    for range in map.free_ranges(LOW_MEMORY, &[kernel, first_heap]) {
        // SAFETY: usable RAM per the firmware, mapped write-back by
        // `paging::init`, outside the kernel image and the first heap, and
        // holding nothing the kernel still reads.
        if unsafe { tern_board_common::add_heap(range.start as *mut u8, range.len() as usize) } {
            heap_bytes += range.len();
        }
    }

    let platform = boot.rsdp.map(firmware::read);
    let platform = match platform {
        Some(Ok(platform)) => Some(platform),
        Some(Err(error)) => {
            log::warn(format_args!("{error}"));
            None
        }
        None => {
            log::warn(format_args!("no ACPI tables: the loader passed no RSDP"));
            None
        }
    };

    // Without COM1, the firmware's serial console (SPCR), when it is a
    // 16550 on I/O ports.
    if let (false, Some(spcr)) = (console.has_uart(), platform.as_ref().and_then(|p| p.spcr)) {
        match spcr.register {
            Register::Port(port) => match Uart::probe(port) {
                Ok(uart) => console.set_uart(uart),
                Err(error) => log::warn(format_args!("SPCR serial console: {error}")),
            },
            other => log::warn(format_args!(
                "SPCR names a serial console at {other:?}: only I/O-port UARTs are driven"
            )),
        }
    }
    if let Some((register, value)) = platform.as_ref().and_then(|p| p.reset) {
        reset::set_fadt_register(register, value);
    }

    // Interrupts: the 8259s masked, the local APIC enabled; the tick comes
    // from its timer once the TSC is calibrated.
    apic::mask_8259();
    if let Err(error) = apic::init(platform.as_ref()) {
        boot_failure("local APIC", &error);
    }
    let calibration = match timer::calibrate(platform.as_ref()) {
        Ok(calibration) => calibration,
        Err(error) => boot_failure("clock", &error),
    };
    let tsc_hz = calibration.hz;
    for rejected in &calibration.rejected {
        log::warn(format_args!("clock: {rejected}"));
    }
    match calibration.cpuid_hz {
        Some(reported) if !tern_board_pc::calibration::agrees(tsc_hz, reported) => {
            log::warn(format_args!(
                "clock: measured {tsc_hz} Hz against the {}, the CPU reports {reported} Hz",
                calibration.reference.name()
            ))
        }
        _ => {}
    }
    let clock = TscClock::new(tsc_hz);
    screen::set_tsc_hz(tsc_hz);
    let tick = match apic::start_timer(tsc_hz, timer::TICK_HZ) {
        Ok(tick) => tick,
        Err(error) => boot_failure("tick", &error),
    };
    let uart_routed = platform.as_ref().is_some_and(|p| {
        console
            .uart_irq()
            .is_some_and(|irq| apic::route_isa_irq(p, irq, apic::UART_VECTOR))
    });
    hw_line(format!(
        "clock: TSC {tsc_hz} Hz measured against the {}{}",
        calibration.reference.name(),
        calibration
            .cpuid_hz
            .map(|hz| format!(" (CPUID says {hz} Hz)"))
            .unwrap_or_default()
    ));
    hw_line(format!(
        "tick: {} Hz, local APIC timer ({}, {}, {} Hz), 8259s masked",
        timer::TICK_HZ,
        if tick.x2apic { "x2APIC" } else { "xAPIC" },
        if tick.tsc_deadline {
            "TSC-deadline"
        } else {
            "periodic"
        },
        tick.apic_hz
    ));
    hw_line(match &platform {
        Some(p) => format!(
            "acpi: revision {}, {} I/O APIC(s), {} ECAM window(s), HPET {}, PM timer {}, reset {}, 8042 {}",
            p.revision,
            p.io_apics.iter().flatten().count(),
            p.ecam.iter().flatten().count(),
            p.hpet.map_or(String::from("none"), |a| format!("{a:#x}")),
            if p.pm_timer.is_some() { "yes" } else { "none" },
            if p.reset.is_some() { "register" } else { "none" },
            if p.has_8042 { "yes" } else { "no" },
        ),
        None => String::from("acpi: none"),
    });
    // The keyboard, where the FADT says there is an i8042 (machines without
    // a FADT are old enough to have one).
    if platform.as_ref().is_none_or(|p| p.has_8042) {
        match Keyboard::init() {
            Ok(keyboard) => {
                console.set_keyboard(keyboard);
                let routed = platform.as_ref().is_some_and(|p| {
                    apic::route_isa_irq(p, keyboard::KEYBOARD_IRQ, apic::KEYBOARD_VECTOR)
                });
                hw_line(format!(
                    "keyboard: PS/2 on the i8042 ({})",
                    if routed { "interrupt routed" } else { "polled" }
                ));
            }
            Err(error) => log::warn(format_args!("keyboard: {error}")),
        }
    }
    if console.uart_irq().is_some() && !uart_routed {
        log::warn(format_args!(
            "serial console: its interrupt is not routed (no I/O APIC): input is polled at {} Hz",
            timer::TICK_HZ
        ));
    }

    let model = match cpu_brand() {
        Some(brand) => format!("PC (x86_64), {brand}"),
        None => String::from("PC (x86_64)"),
    };
    log::info(format_args!(
        "booted via {}: {} MiB usable RAM in {} ranges, heap {} MiB, TSC {} Hz",
        map.protocol.name(),
        map.usable_bytes() >> 20,
        map.regions().len(),
        heap_bytes >> 20,
        tsc_hz
    ));
    if map.dropped > 0 {
        log::warn(format_args!(
            "{} usable ranges beyond the first 64 ignored",
            map.dropped
        ));
    }
    if let Some(error) = uart_error {
        log::warn(format_args!("serial console: {error}"));
    }
    let boot_commands = match boot.cmdline.text() {
        Ok(line) => String::from(line),
        Err(error) => {
            log::warn(format_args!("{error}"));
            String::new()
        }
    };
    let board: &'static PcBoard = Box::leak(Box::new(PcBoard {
        facts: BoardFacts {
            board: "pc",
            isa: Isa::X86_64,
            model: model.leak(),
            memory_bytes: map.usable_bytes(),
            timer_hz: tsc_hz,
            serial_number: None,
            mac_address: None,
            cpu_clock_hz: None,
        },
        clock,
    }));
    x86_64::instructions::interrupts::enable();
    let space = PcConfigSpace::new(
        platform
            .as_ref()
            .map_or(&[][..], |p: &Platform| &p.ecam[..]),
    );
    let found = devices::probe(space, &board.clock);
    // Still no serial console: a PCI serial card's UART (polled: its
    // interrupt would need the firmware's PCI routing tables).
    if !console.has_uart() {
        if let Some(port) = devices::serial_card(space) {
            match Uart::probe(port) {
                Ok(uart) => {
                    console.set_uart(uart);
                    log::info(format_args!(
                        "serial console: PCI serial card at I/O port {port:#x}"
                    ));
                }
                Err(error) => log::warn(format_args!("PCI serial card: {error}")),
            }
        }
    }
    let devices = Devices {
        net: found.net,
        entropy: found.entropy,
        boot_commands: tern_board_common::provision::boot_commands(&boot_commands),
    };
    tern_unikernel::start(
        board,
        Box::leak(Box::new(console)),
        board_commands(),
        devices,
        tern_board_common::task_catalog(board),
    )
}
