//! Interrupt controllers of a legacy-free PC: the local APIC (x2APIC through
//! MSRs where the CPU has it, else xAPIC through its register window) whose
//! timer is the kernel's tick, the I/O APIC that delivers the ISA interrupts
//! the board wants (a serial console's receive interrupt, the keyboard), and
//! the legacy 8259 pair, remapped away from the exception vectors and masked
//! for good.

use core::arch::x86_64::{__cpuid, _rdtsc};
use core::fmt;
use core::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use alloc::vec::Vec;
use pic8259::ChainedPics;
use tern_board_pc::calibration::{self, Window};
use tern_board_pc::pagetable::Cache;
use tern_board_pc::platform::Platform;
use x86_64::registers::model_specific::Msr;

use crate::paging;

/// IDT vector of the local APIC timer (the tick).
pub const TIMER_VECTOR: u8 = 0x30;
/// IDT vector of the serial console's receive interrupt.
pub const UART_VECTOR: u8 = 0x31;
/// IDT vector of the keyboard controller's interrupt.
pub const KEYBOARD_VECTOR: u8 = 0x32;
/// The local APIC's spurious-interrupt vector (low four bits all ones, as
/// old APICs require).
pub const SPURIOUS_VECTOR: u8 = 0xff;
/// Where the masked 8259s' vectors go (a spurious IRQ 7 or 15 may still
/// arrive there).
pub const PIC_VECTORS: u8 = 0x20;

const IA32_APIC_BASE: u32 = 0x1b;
const IA32_TSC_DEADLINE: u32 = 0x6e0;
const APIC_BASE_ENABLE: u64 = 1 << 11;
const APIC_BASE_X2APIC: u64 = 1 << 10;
/// Local APIC registers (xAPIC byte offsets; x2APIC MSR 0x800 + offset/16).
const REG_ID: u32 = 0x20;
const REG_EOI: u32 = 0xb0;
const REG_SVR: u32 = 0xf0;
const REG_LVT_TIMER: u32 = 0x320;
const REG_INITIAL_COUNT: u32 = 0x380;
const REG_CURRENT_COUNT: u32 = 0x390;
const REG_DIVIDE: u32 = 0x3e0;
const SVR_ENABLE: u32 = 1 << 8;
const LVT_MASKED: u32 = 1 << 16;
const LVT_PERIODIC: u32 = 1 << 17;
const LVT_TSC_DEADLINE: u32 = 2 << 17;
/// Divide configuration value for "divide by 16".
const DIVIDE_BY_16: u32 = 0b0011;
/// Windows measured at most when calibrating the APIC timer.
const CALIBRATION_ATTEMPTS: usize = 5;

/// x2APIC mode is on (registers are MSRs).
static X2APIC: AtomicBool = AtomicBool::new(false);
/// The xAPIC register window (identity-mapped, uncached).
static XAPIC_BASE: AtomicU64 = AtomicU64::new(0);
/// TSC cycles between two ticks in TSC-deadline mode (0: periodic mode).
static DEADLINE_PERIOD: AtomicU64 = AtomicU64::new(0);

/// Why the local APIC could not be used.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ApicError {
    /// CPUID says there is none (the firmware disabled it).
    Absent,
    /// Its register window could not be mapped.
    Unmapped(u64),
    /// The timer did not count during calibration.
    TimerStuck,
}

impl fmt::Display for ApicError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Absent => f.write_str("the CPU reports no local APIC"),
            Self::Unmapped(base) => {
                write!(f, "the local APIC window at {base:#x} cannot be mapped")
            }
            Self::TimerStuck => f.write_str("the local APIC timer does not count"),
        }
    }
}

/// How the tick is produced, for `hw`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TickSource {
    /// The APIC runs in x2APIC mode.
    pub x2apic: bool,
    /// The timer is in TSC-deadline mode (else periodic).
    pub tsc_deadline: bool,
    /// The APIC timer's measured rate after its divider (periodic mode).
    pub apic_hz: u64,
}

fn read(register: u32) -> u32 {
    if X2APIC.load(Ordering::Relaxed) {
        // SAFETY: an x2APIC register MSR of an enabled x2APIC.
        unsafe { Msr::new(0x800 + (register >> 4)).read() as u32 }
    } else {
        let base = XAPIC_BASE.load(Ordering::Relaxed);
        // SAFETY: a register of the xAPIC window, mapped uncached by `init`.
        unsafe { ((base + u64::from(register)) as *const u32).read_volatile() }
    }
}

fn write(register: u32, value: u32) {
    if X2APIC.load(Ordering::Relaxed) {
        // SAFETY: an x2APIC register MSR of an enabled x2APIC.
        unsafe { Msr::new(0x800 + (register >> 4)).write(u64::from(value)) }
    } else {
        let base = XAPIC_BASE.load(Ordering::Relaxed);
        // SAFETY: a register of the xAPIC window, mapped uncached by `init`.
        unsafe { ((base + u64::from(register)) as *mut u32).write_volatile(value) }
    }
}

/// Remaps the 8259s to [`PIC_VECTORS`] and masks every line: the local APIC
/// and the I/O APIC take over. Harmless where there are no 8259s.
pub fn mask_8259() {
    // SAFETY: the vector bases are clear of the CPU exceptions and the IDT
    // has a gate for every vector; the PIC ports are standard (ignored on a
    // machine without the pair).
    unsafe {
        let mut pics = ChainedPics::new(PIC_VECTORS, PIC_VECTORS + 8);
        pics.initialize();
        pics.write_masks(0xff, 0xff);
    }
}

/// Enables the local APIC of this CPU (x2APIC mode where the CPU has it),
/// with the spurious vector [`SPURIOUS_VECTOR`].
pub fn init(platform: Option<&Platform>) -> Result<(), ApicError> {
    let leaf1 = __cpuid(1);
    if leaf1.edx & (1 << 9) == 0 {
        return Err(ApicError::Absent);
    }
    let x2apic = leaf1.ecx & (1 << 21) != 0;
    let mut base_msr = Msr::new(IA32_APIC_BASE);
    // SAFETY: IA32_APIC_BASE exists where CPUID reports an APIC.
    let base = unsafe { base_msr.read() };
    let mut enabled = base | APIC_BASE_ENABLE;
    if x2apic {
        enabled |= APIC_BASE_X2APIC;
    } else {
        let window = platform
            .and_then(|p| p.local_apic)
            .unwrap_or(base & 0x000f_ffff_ffff_f000);
        paging::map(window, 4096, Cache::Uncached).map_err(|_| ApicError::Unmapped(window))?;
        XAPIC_BASE.store(window, Ordering::Relaxed);
    }
    // SAFETY: enabling the APIC (and x2APIC mode, which the CPU has) keeps
    // its base address; interrupts are still off.
    unsafe { base_msr.write(enabled) };
    X2APIC.store(x2apic, Ordering::Relaxed);
    write(REG_SVR, SVR_ENABLE | u32::from(SPURIOUS_VECTOR));
    Ok(())
}

/// This CPU's APIC ID.
pub fn id() -> u32 {
    let id = read(REG_ID);
    if X2APIC.load(Ordering::Relaxed) {
        id
    } else {
        id >> 24
    }
}

/// Signals the end of the interrupt being handled.
pub fn end_of_interrupt() {
    write(REG_EOI, 0);
}

fn rdtsc() -> u64 {
    // SAFETY: RDTSC exists on every x86_64 CPU and has no side effects.
    unsafe { _rdtsc() }
}

/// Starts the timer at `tick_hz` on [`TIMER_VECTOR`]: in TSC-deadline mode
/// where the CPU has it (each tick arms the next at a TSC value), else in
/// periodic mode with the APIC timer's rate measured against the TSC
/// (`tsc_hz`).
pub fn start_timer(tsc_hz: u64, tick_hz: u64) -> Result<TickSource, ApicError> {
    let deadline = __cpuid(1).ecx & (1 << 24) != 0;
    let x2apic = X2APIC.load(Ordering::Relaxed);
    if deadline {
        let period = tsc_hz / tick_hz;
        DEADLINE_PERIOD.store(period, Ordering::Relaxed);
        write(REG_LVT_TIMER, u32::from(TIMER_VECTOR) | LVT_TSC_DEADLINE);
        arm_deadline(rdtsc() + period);
        return Ok(TickSource {
            x2apic,
            tsc_deadline: true,
            apic_hz: 0,
        });
    }
    write(REG_DIVIDE, DIVIDE_BY_16);
    write(REG_LVT_TIMER, u32::from(TIMER_VECTOR) | LVT_MASKED);
    // The APIC timer's rate against the TSC, over the sharpest of a few
    // 20 ms windows (a virtual CPU held up between two reads would count
    // the delay on one side only).
    let span = tsc_hz / 50;
    let mut windows = [None; CALIBRATION_ATTEMPTS];
    for slot in &mut windows {
        let before = rdtsc();
        write(REG_INITIAL_COUNT, u32::MAX);
        let after = rdtsc();
        while rdtsc() - after < span {
            core::hint::spin_loop();
        }
        let end_before = rdtsc();
        let left = read(REG_CURRENT_COUNT);
        let end_after = rdtsc();
        let window = Window {
            cycles: (end_before / 2 + end_after / 2) - (before / 2 + after / 2),
            ticks: u64::from(u32::MAX - left),
            uncertainty: (after - before) + (end_after - end_before),
        };
        *slot = Some(window);
        if window.sharp() {
            break;
        }
    }
    write(REG_INITIAL_COUNT, 0);
    let windows: Vec<Window> = windows.into_iter().flatten().collect();
    let apic_hz = calibration::best(&windows)
        .and_then(|w| w.rate_against(tsc_hz))
        .filter(|&hz| hz != 0)
        .ok_or(ApicError::TimerStuck)?;
    let initial = (apic_hz / tick_hz).clamp(1, u64::from(u32::MAX)) as u32;
    write(REG_LVT_TIMER, u32::from(TIMER_VECTOR) | LVT_PERIODIC);
    write(REG_INITIAL_COUNT, initial);
    Ok(TickSource {
        x2apic,
        tsc_deadline: false,
        apic_hz,
    })
}

fn arm_deadline(at: u64) {
    // SAFETY: IA32_TSC_DEADLINE exists where CPUID reports TSC-deadline
    // mode, which `start_timer` checked before choosing it.
    unsafe { Msr::new(IA32_TSC_DEADLINE).write(at) };
}

/// The timer fired: arms the next deadline (TSC-deadline mode) and signals
/// the end of the interrupt.
pub fn on_timer() {
    let period = DEADLINE_PERIOD.load(Ordering::Relaxed);
    if period != 0 {
        arm_deadline(rdtsc() + period);
    }
    end_of_interrupt();
}

/// Delivers ISA interrupt `irq` to this CPU on `vector` through the I/O
/// APIC that serves its GSI (MADT routes); `false` when no I/O APIC does.
pub fn route_isa_irq(platform: &Platform, irq: u8, vector: u8) -> bool {
    let route = platform.isa_routes[usize::from(irq & 15)];
    for io in platform.io_apics.iter().flatten() {
        if paging::map(io.address, 4096, Cache::Uncached).is_err() {
            continue;
        }
        let entries = (io_apic_read(io.address, 1) >> 16 & 0xff) + 1;
        let Some(pin) = route
            .gsi
            .checked_sub(io.gsi_base)
            .filter(|pin| *pin < entries)
        else {
            continue;
        };
        let low =
            u32::from(vector) | u32::from(route.active_low) << 13 | u32::from(route.level) << 15;
        io_apic_write(io.address, 0x10 + 2 * pin + 1, (id() & 0xff) << 24);
        io_apic_write(io.address, 0x10 + 2 * pin, low);
        return true;
    }
    false
}

fn io_apic_read(base: u64, register: u32) -> u32 {
    // SAFETY: IOREGSEL (+0) and IOWIN (+0x10) of an I/O APIC the MADT
    // lists, mapped uncached; interrupts are off, so the select-then-read
    // pair is not interleaved.
    critical_section::with(|_| unsafe {
        (base as *mut u32).write_volatile(register);
        ((base + 0x10) as *const u32).read_volatile()
    })
}

fn io_apic_write(base: u64, register: u32, value: u32) {
    // SAFETY: as for `io_apic_read`.
    critical_section::with(|_| unsafe {
        (base as *mut u32).write_volatile(register);
        ((base + 0x10) as *mut u32).write_volatile(value);
    });
}
