//! Time: the TSC as the monotonic clock, its frequency measured against the
//! HPET, else the ACPI PM timer, else the 8254 PIT (references the machine
//! may lack: QEMU's `pit=off`, `hpet=off`), each result checked for
//! plausibility and against CPUID 0x15/0x16 ([`tern_board_pc::calibration`]);
//! and the tick, 100 Hz from the local APIC timer ([`crate::apic`]).

use alloc::vec::Vec;
use core::arch::x86_64::{__cpuid, _rdtsc};
use core::fmt;
use core::sync::atomic::{AtomicU64, Ordering};

use tern_board_pc::calibration::{self, Reference, Rejected, Window};
use tern_board_pc::pagetable::Cache;
use tern_board_pc::platform::{Platform, Register};
use tern_hal::MonotonicClock;
use x86_64::instructions::port::Port;

use crate::{apic, paging};

/// Tick rate of the periodic timer interrupt.
pub const TICK_HZ: u64 = 100;
/// The PIT's input clock, in Hz.
const PIT_HZ: u64 = 1_193_182;
/// The ACPI PM timer's rate, in Hz.
const PM_TIMER_HZ: u64 = 3_579_545;
/// Calibration windows are 50 ms of the reference.
const WINDOW_DIVISOR: u64 = 20;
/// Windows measured per reference at most.
const ATTEMPTS: usize = 5;
/// TSC cycles after which a reference is declared stuck: over a second on
/// any x86_64 CPU, against the 50 ms window.
const TIMEOUT_CYCLES: u64 = 4_000_000_000;

/// HPET registers: capabilities (period in fs in bits 63:32, 64-bit
/// counter bit 13), configuration (enable bit 0), main counter.
const HPET_CAPABILITIES: u64 = 0x000;
const HPET_CONFIG: u64 = 0x010;
const HPET_COUNTER: u64 = 0x0f0;
/// The HPET specification's longest counter period: 100 ns.
const HPET_MAX_PERIOD_FS: u64 = 100_000_000;

const PIT_CHANNEL2: u16 = 0x42;
const PIT_COMMAND: u16 = 0x43;
/// System control port B: bit 0 gates PIT channel 2, bit 1 drives the
/// speaker from it, bit 5 reads its output.
const PORT_B: u16 = 0x61;

/// Ticks between two flushes of the TLB (10 a second): QEMU's TCG resizes
/// its software TLB only when the guest flushes it, and without flushes a task
/// with tens of MB of working set spends half its time in QEMU's page walks
/// (docs/architecture.md, "The tick flushes the TLB").
const TLB_FLUSH_TICKS: u64 = 10;
static TICKS: AtomicU64 = AtomicU64::new(0);

/// How the TSC's frequency was found.
#[derive(Clone, Debug)]
pub struct Calibration {
    /// The TSC's frequency.
    pub hz: u64,
    /// What it was measured against.
    pub reference: Reference,
    /// References tried before, and why they were not taken.
    pub rejected: Vec<Rejected>,
    /// What the CPU itself reports (CPUID 0x15/0x16), if anything.
    pub cpuid_hz: Option<u64>,
}

/// No reference gave a believable result and the CPU reports no frequency.
#[derive(Clone, Debug)]
pub struct CalibrationError(Vec<Rejected>);

impl fmt::Display for CalibrationError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("no clock to measure the TSC against")?;
        for rejected in &self.0 {
            write!(f, "; {rejected}")?;
        }
        f.write_str("; and CPUID reports no TSC frequency")
    }
}

fn rdtsc() -> u64 {
    // SAFETY: RDTSC is available on every x86_64 CPU and has no side effects.
    unsafe { _rdtsc() }
}

/// The TSC frequency CPUID reports.
fn cpuid_hz() -> Option<u64> {
    let max = __cpuid(0).eax;
    let leaf_15 = (max >= 0x15).then(|| {
        let leaf = __cpuid(0x15);
        [leaf.eax, leaf.ebx, leaf.ecx]
    });
    let leaf_16 = (max >= 0x16).then(|| __cpuid(0x16).eax);
    calibration::cpuid_hz(leaf_15, leaf_16)
}

/// Measures the TSC against the best reference the machine has. Run with
/// interrupts off.
pub fn calibrate(platform: Option<&Platform>) -> Result<Calibration, CalibrationError> {
    let mut rejected = Vec::new();
    let cpuid_hz = cpuid_hz();
    let references = [Reference::Hpet, Reference::PmTimer, Reference::Pit];
    for reference in references {
        let measured = match reference {
            Reference::Hpet => platform.and_then(|p| p.hpet).map(measure_hpet),
            Reference::PmTimer => platform.and_then(|p| p.pm_timer).map(|pm| {
                let mask = if pm.wide { u32::MAX } else { 0x00ff_ffff };
                measure(
                    || read_register(pm.register) & u64::from(mask),
                    u64::from(mask),
                    PM_TIMER_HZ,
                )
            }),
            Reference::Pit => Some(measure_pit()),
            Reference::Cpuid => None,
        };
        let Some(measured) = measured else {
            continue;
        };
        match calibration::check(reference, measured) {
            Ok(hz) => {
                return Ok(Calibration {
                    hz,
                    reference,
                    rejected,
                    cpuid_hz,
                })
            }
            Err(why) => rejected.push(why),
        }
    }
    match cpuid_hz {
        Some(hz) => Ok(Calibration {
            hz,
            reference: Reference::Cpuid,
            rejected,
            cpuid_hz,
        }),
        None => Err(CalibrationError(rejected)),
    }
}

/// Reads a 32-bit timer register.
fn read_register(register: Register) -> u64 {
    match register {
        // SAFETY: the PM timer port named by the FADT; reading it has no
        // side effect.
        Register::Port(port) => u64::from(unsafe { Port::<u32>::new(port).read() }),
        Register::Memory(address) => {
            if paging::map(address, 4, Cache::Uncached).is_err() {
                return 0;
            }
            // SAFETY: the PM timer register the FADT names, mapped uncached.
            u64::from(unsafe { (address as *const u32).read_volatile() })
        }
        // Not a place a PM timer is found on PCs: reads as stuck.
        Register::PciConfig { .. } => 0,
    }
}

/// The TSC frequency measured against the HPET at `base` (`None` when it
/// does not count or its period is out of specification).
fn measure_hpet(base: u64) -> Option<u64> {
    paging::map(base, 1024, Cache::Uncached).ok()?;
    let register = |offset: u64| (base + offset) as *mut u64;
    // SAFETY: the HPET's registers, from the ACPI HPET table, mapped
    // uncached; enabling the main counter (configuration bit 0) is what
    // reading it needs, and changes no interrupt routing.
    let capabilities = unsafe { register(HPET_CAPABILITIES).read_volatile() };
    let period_fs = capabilities >> 32;
    if period_fs == 0 || period_fs > HPET_MAX_PERIOD_FS {
        return None;
    }
    let mask = if capabilities & (1 << 13) != 0 {
        u64::MAX
    } else {
        u64::from(u32::MAX)
    };
    // SAFETY: as above.
    unsafe {
        let config = register(HPET_CONFIG).read_volatile();
        register(HPET_CONFIG).write_volatile(config | 1);
    }
    let hz = 1_000_000_000_000_000 / period_fs;
    // SAFETY: reading the main counter has no side effect.
    measure(
        || unsafe { register(HPET_COUNTER).read_volatile() } & mask,
        mask,
        hz,
    )
}

/// The TSC frequency over the sharpest of up to [`ATTEMPTS`] windows of
/// 50 ms of a reference counting at `ref_hz` (`read` returns its count,
/// wrapping at `mask`); `None` if it never advances.
fn measure(mut read: impl FnMut() -> u64, mask: u64, ref_hz: u64) -> Option<u64> {
    let ticks = ref_hz / WINDOW_DIVISOR;
    let mut windows = Vec::new();
    for _ in 0..ATTEMPTS {
        let before = rdtsc();
        let start = read();
        let after = rdtsc();
        let window = loop {
            let now_before = rdtsc();
            let now = read();
            let now_after = rdtsc();
            let elapsed = now.wrapping_sub(start) & mask;
            if elapsed >= ticks {
                break Window {
                    cycles: (now_before / 2 + now_after / 2).saturating_sub(before / 2 + after / 2),
                    ticks: elapsed,
                    uncertainty: (after - before) + (now_after - now_before),
                };
            }
            if now_after - before > TIMEOUT_CYCLES {
                return None;
            }
        };
        let sharp = window.sharp();
        windows.push(window);
        if sharp {
            break;
        }
    }
    calibration::best(&windows)?.hz(ref_hz)
}

/// The TSC frequency against PIT channel 2 counting down 50 ms in mode 0
/// (OUT rises at terminal count): the sharpest of up to [`ATTEMPTS`]
/// windows; `None` if OUT never rises. A machine without a PIT may read
/// 0xFF from port 0x61, whose "instant" countdown gives an implausible
/// result that [`calibration::check`] refuses.
fn measure_pit() -> Option<u64> {
    let count = (PIT_HZ / WINDOW_DIVISOR) as u16;
    let [low, high] = count.to_le_bytes();
    let mut windows = Vec::new();
    for _ in 0..ATTEMPTS {
        let mut port_b = Port::<u8>::new(PORT_B);
        let mut command = Port::<u8>::new(PIT_COMMAND);
        let mut channel2 = Port::<u8>::new(PIT_CHANNEL2);
        // SAFETY: the standard PC timer ports; channel 2 only drives the
        // speaker, which stays disconnected (bit 1 cleared).
        let window = unsafe {
            let control = port_b.read();
            port_b.write((control & !0x02) | 0x01);
            // Channel 2, low then high byte, mode 0, binary.
            command.write(0b1011_0000);
            channel2.write(low);
            // The countdown starts when the high byte lands, between these
            // two reads.
            let before = rdtsc();
            channel2.write(high);
            let start = rdtsc();
            let mut last = start;
            loop {
                let done = port_b.read() & 0x20 != 0;
                let now = rdtsc();
                if done {
                    break Window {
                        cycles: (last / 2 + now / 2).saturating_sub(before / 2 + start / 2),
                        ticks: u64::from(count),
                        uncertainty: (start - before) + (now - last),
                    };
                }
                if now - start > TIMEOUT_CYCLES {
                    return None;
                }
                last = now;
            }
        };
        let sharp = window.sharp();
        windows.push(window);
        if sharp {
            break;
        }
    }
    calibration::best(&windows)?.hz(PIT_HZ)
}

/// Handles an interrupt on `vector` if it is the board's: the tick, the
/// serial console's and keyboard's wake-ups, the local APIC's spurious
/// vector and the masked 8259s' spurious IRQs. `false` for any other.
pub fn on_interrupt(vector: u8) -> bool {
    match vector {
        apic::TIMER_VECTOR => {
            let ticks = TICKS.fetch_add(1, Ordering::Relaxed) + 1;
            if ticks.is_multiple_of(TLB_FLUSH_TICKS) {
                // Reloads CR3: the kernel's mappings are not global, so
                // this drops them all.
                x86_64::instructions::tlb::flush_all();
            }
            apic::on_timer();
        }
        // Waking the CPU was the point: the run loop reads the device.
        apic::UART_VECTOR | apic::KEYBOARD_VECTOR => apic::end_of_interrupt(),
        // No end of interrupt for a spurious vector.
        apic::SPURIOUS_VECTOR => {}
        _ => return false,
    }
    true
}

/// Timer interrupts taken since the tick started.
pub fn ticks() -> u64 {
    TICKS.load(Ordering::Relaxed)
}

/// The monotonic clock: TSC cycles since boot, scaled by the calibrated
/// frequency.
pub struct TscClock {
    start: u64,
    hz: u64,
}

impl TscClock {
    /// A clock starting now, counting at `hz`.
    pub fn new(hz: u64) -> Self {
        Self { start: rdtsc(), hz }
    }
}

impl MonotonicClock for TscClock {
    fn now_ns(&self) -> u64 {
        let cycles = rdtsc().wrapping_sub(self.start);
        (u128::from(cycles) * 1_000_000_000 / u128::from(self.hz)) as u64
    }

    fn counter_hz(&self) -> u64 {
        self.hz
    }
}
