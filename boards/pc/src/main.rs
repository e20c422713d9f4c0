//! Tern on an x86_64 PC: the `tern-pc` kernel.
//!
//! One ELF boots under QEMU's `-kernel` (PVH note) and from GRUB's
//! `multiboot2` command (USB stick, see `grub.cfg`). [`boot`] gets the CPU
//! into long mode; [`pc_main`] then reads the memory map, installs the
//! descriptor tables, the heap, the clock and the timer tick, and hands the
//! machine to the portable kernel with COM1 as its console, virtio-net as
//! its network device and virtio-rng or RDRAND as its entropy source
//! ([`devices`]).
#![no_std]
#![no_main]

extern crate alloc;

mod boot;
mod cpu;
mod devices;
mod interrupts;
mod paging;
mod rdrand;
mod serial;
mod timer;

use alloc::boxed::Box;
use alloc::format;
use alloc::string::String;
use alloc::vec::Vec;
use core::arch::x86_64::__cpuid;
use core::arch::{asm, global_asm};
use core::fmt::Write;
use core::sync::atomic::{AtomicBool, Ordering};

use tern_board_common as _;
use tern_hal::{Board, BoardFacts, HeapStats, Isa, MonotonicClock};
use tern_unikernel::shell::{Command, CommandResult};
use tern_unikernel::{Devices, Kernel};

use cpu::RawCom1;
use serial::Com1;
use tern_board_pc::bootinfo::{self, MemoryMap};
use timer::TscClock;

// The board's name in a non-loaded section, for `flash` to check.
global_asm!(
    r#"
    .section .tern_board, "", @progbits
    .ascii "pc"
"#,
    options(att_syntax)
);

/// The heap stays inside the 4 GiB the boot code identity-maps.
const MAPPED_LIMIT: u64 = 4 << 30;
/// Smallest heap worth booting with; checked here because a failure inside
/// the allocator before the kernel starts could not be reported.
const MIN_HEAP_BYTES: u64 = 1 << 20;

extern "C" {
    /// First byte past the kernel image and its BSS (from the linker script).
    static __kernel_end: u8;
}

/// The PC as the portable kernel sees it.
struct PcBoard {
    facts: BoardFacts,
    clock: TscClock,
    /// What boot found, logged once the console is up.
    memory_map: MemoryMap,
    heap_bytes: u64,
    boot_logged: AtomicBool,
}

impl PcBoard {
    /// Logs the boot summary as defmt frames. Frames only reach the wire once
    /// the portable kernel has installed the console, so this runs on the
    /// first idle turn of its run loop rather than during bring-up.
    fn log_boot_summary(&self) {
        let map = &self.memory_map;
        defmt::info!(
            "booted via {=str}: {=u64} MiB usable RAM in {=usize} ranges, heap {=u64} MiB, TSC {=u64} Hz",
            map.protocol.name(),
            map.usable_bytes() >> 20,
            map.regions().len(),
            self.heap_bytes >> 20,
            self.clock.counter_hz()
        );
        for region in map.regions() {
            defmt::debug!("usable RAM {=u64:#x}..{=u64:#x}", region.start, region.end);
        }
        if map.dropped > 0 {
            defmt::warn!(
                "{=usize} usable ranges beyond the first 64 ignored",
                map.dropped
            );
        }
    }
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

    fn wait_for_interrupt(&self) {
        if !self.boot_logged.swap(true, Ordering::Relaxed) {
            self.log_boot_summary();
        }
        cpu::wait_for_interrupt();
    }

    fn halt(&self, code: u8) -> ! {
        cpu::halt(code)
    }
}

/// Prints a boot failure on COM1 and halts: there is no kernel yet to report
/// it.
fn boot_failure(what: &str, error: &dyn core::fmt::Display) -> ! {
    let _ = write!(RawCom1, "\r\nboot failed: {what}: {error}\r\n");
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
            "fault",
            "[stack]",
            "take a page fault (or, with 'stack', overflow the stack into a double fault) on purpose",
            fault_command,
        ),
        tern_board_common::random::random_command(),
    ]
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
    let _ = write!(out, "reading unmapped address {MAPPED_LIMIT:#x}\r\n");
    // SAFETY: deliberately reads the first address past the identity map;
    // the page fault it raises ends in the fault dump and a halt, so nothing
    // after the read runs.
    unsafe {
        asm!("mov {tmp}, qword ptr [{addr}]", addr = in(reg) MAPPED_LIMIT, tmp = out(reg) _, options(nostack, readonly));
    }
    Err(String::from("the read did not fault"))
}

/// Rust entry, called by the boot code in long mode on the boot stack with
/// EAX and EBX as the boot loader left them.
#[no_mangle]
extern "C" fn pc_main(magic: u32, info: u32) -> ! {
    let (console, uart_status) = Com1::init();
    interrupts::init();
    paging::unmap_stack_guard();

    // SAFETY: `magic` and `info` are EAX and EBX from the boot loader, and
    // nothing has written memory outside the kernel image yet.
    let memory_map = match unsafe { bootinfo::read(magic, info) } {
        Ok(map) => map,
        Err(error) => boot_failure("memory map", &error),
    };
    let kernel_end = core::ptr::addr_of!(__kernel_end) as u64;
    let Some(heap) = memory_map
        .largest_free(kernel_end.next_multiple_of(4096), MAPPED_LIMIT)
        .filter(|heap| heap.end - heap.start >= MIN_HEAP_BYTES)
    else {
        boot_failure("heap", &"less than 1 MiB of usable RAM above the kernel");
    };
    // SAFETY: the range is usable RAM per the firmware, above the kernel
    // image, identity-mapped, and the boot information was read out above.
    unsafe {
        tern_board_common::init_heap(heap.start as *mut u8, (heap.end - heap.start) as usize)
    };

    let tsc_hz = match timer::calibrate_tsc_hz() {
        Ok(hz) => hz,
        Err(error) => boot_failure("clock", &error),
    };
    let clock = TscClock::new(tsc_hz);
    timer::start_tick();

    let model = match cpu_brand() {
        Some(brand) => format!("PC (x86_64), {brand}"),
        None => String::from("PC (x86_64)"),
    };
    let board: &'static PcBoard = Box::leak(Box::new(PcBoard {
        facts: BoardFacts {
            board: "pc",
            isa: Isa::X86_64,
            model: model.leak(),
            memory_bytes: memory_map.usable_bytes(),
            timer_hz: tsc_hz,
            serial_number: None,
            mac_address: None,
        },
        clock,
        memory_map,
        heap_bytes: heap.end - heap.start,
        boot_logged: AtomicBool::new(false),
    }));
    if let Err(error) = uart_status {
        // Only visible if the UART works after all (e.g. a loopback test
        // quirk): an absent COM1 shows nothing anyway.
        let _ = write!(RawCom1, "warning: COM1 init: {error}\r\n");
    }
    x86_64::instructions::interrupts::enable();
    let found = devices::probe(MAPPED_LIMIT);
    let devices = Devices {
        net: found.net,
        entropy: found.entropy,
        boot_commands: alloc::string::String::new(),
    };
    tern_unikernel::start(
        board,
        Box::leak(Box::new(console)),
        board_commands(),
        devices,
        tern_board_common::task_catalog(board),
    )
}
