//! Time: the TSC as the monotonic clock, calibrated against the 8254 PIT,
//! and the PIT's channel 0 as a 100 Hz tick through the remapped 8259 PIC.

use core::arch::x86_64::{__cpuid, _rdtsc};
use core::cell::RefCell;
use core::fmt;
use core::sync::atomic::{AtomicU64, Ordering};

use critical_section::Mutex;
use pic8259::ChainedPics;
use tern_hal::MonotonicClock;
use x86_64::instructions::port::Port;

use crate::serial::COM1_IRQ;

/// The PIT's input clock, in Hz.
const PIT_HZ: u64 = 1_193_182;
/// Tick rate of the periodic timer interrupt.
pub const TICK_HZ: u64 = 100;
/// IDT vector of the master PIC's first line (IRQ 0, the PIT).
pub const TIMER_VECTOR: u8 = 0x20;
/// The slave PIC's vectors follow the master's.
const SLAVE_VECTOR: u8 = TIMER_VECTOR + 8;

/// PIT calibration window: 59659 input clocks are 50 ms.
const CALIBRATION_COUNT: u16 = 59_659;
/// Calibration windows measured at most.
const CALIBRATION_ATTEMPTS: u32 = 5;
/// TSC cycles after which the PIT is declared stuck: over a second on any
/// x86_64 CPU, against the 50 ms window.
const CALIBRATION_TIMEOUT_CYCLES: u64 = 4_000_000_000;

const PIT_CHANNEL0: u16 = 0x40;
const PIT_CHANNEL2: u16 = 0x42;
const PIT_COMMAND: u16 = 0x43;
/// System control port B: bit 0 gates PIT channel 2, bit 1 drives the
/// speaker from it, bit 5 reads its output.
const PORT_B: u16 = 0x61;

// SAFETY: the vector bases 0x20 and 0x28 are clear of the CPU exceptions,
// and the IDT has a stub for every vector in 0x20..0x30.
static PICS: Mutex<RefCell<ChainedPics>> = Mutex::new(RefCell::new(unsafe {
    ChainedPics::new(TIMER_VECTOR, SLAVE_VECTOR)
}));

static TICKS: AtomicU64 = AtomicU64::new(0);

/// The TSC calibration failed: the PIT's channel 2 never reached its
/// terminal count (some modern chipsets gate the PIT's clock off) and the
/// CPU does not report its TSC frequency, or the TSC did not move.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CalibrationError;

impl fmt::Display for CalibrationError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("PIT channel 2 did not count and CPUID gives no TSC frequency")
    }
}

fn rdtsc() -> u64 {
    // SAFETY: RDTSC is available on every x86_64 CPU and has no side effects.
    unsafe { _rdtsc() }
}

/// Measures the TSC frequency against 50 ms windows of the PIT's channel 2,
/// falling back to CPUID when the PIT is stuck. Run with interrupts off.
///
/// A window whose edges are uncertain (the CPU was held up, e.g. a virtual
/// CPU descheduled by a busy host, right at the start or the end) is
/// measured again; the sharpest of [`CALIBRATION_ATTEMPTS`] windows counts.
pub fn calibrate_tsc_hz() -> Result<u64, CalibrationError> {
    let mut best: Option<PitWindow> = None;
    for _ in 0..CALIBRATION_ATTEMPTS {
        let Some(window) = measure_pit_window() else {
            return cpuid_tsc_hz().ok_or(CalibrationError);
        };
        let sharp = window.uncertainty * 1000 < window.cycles;
        if best.is_none_or(|b| window.uncertainty < b.uncertainty) {
            best = Some(window);
        }
        if sharp {
            break;
        }
    }
    match best.map_or(0, |b| b.cycles * PIT_HZ / u64::from(CALIBRATION_COUNT)) {
        0 => Err(CalibrationError),
        hz => Ok(hz),
    }
}

/// One PIT calibration window, in TSC cycles.
#[derive(Clone, Copy)]
struct PitWindow {
    /// Cycles between the midpoints of the two edges' bracketing reads.
    cycles: u64,
    /// How many cycles the edges could be off, in total.
    uncertainty: u64,
}

/// Times one [`CALIBRATION_COUNT`] countdown of PIT channel 2 in mode 0
/// (OUT rises at terminal count); `None` if it never ends.
fn measure_pit_window() -> Option<PitWindow> {
    let mut port_b = Port::<u8>::new(PORT_B);
    let mut command = Port::<u8>::new(PIT_COMMAND);
    let mut channel2 = Port::<u8>::new(PIT_CHANNEL2);
    let [low, high] = CALIBRATION_COUNT.to_le_bytes();
    // SAFETY: the standard PC timer ports; channel 2 only drives the
    // speaker, which stays disconnected (bit 1 cleared).
    unsafe {
        let control = port_b.read();
        port_b.write((control & !0x02) | 0x01);
        // Channel 2, low then high byte, mode 0, binary.
        command.write(0b1011_0000);
        channel2.write(low);
        // The countdown starts when the high byte lands, between these two
        // reads.
        let before = rdtsc();
        channel2.write(high);
        let start = rdtsc();
        let mut last = start;
        loop {
            let done = port_b.read() & 0x20 != 0;
            let now = rdtsc();
            if done {
                // OUT rose between the previous poll and this one.
                return Some(PitWindow {
                    cycles: (last / 2 + now / 2).saturating_sub(before / 2 + start / 2),
                    uncertainty: (start - before) + (now - last),
                });
            }
            if now - start > CALIBRATION_TIMEOUT_CYCLES {
                return None;
            }
            last = now;
        }
    }
}

/// The TSC frequency as the CPU reports it, for machines whose PIT does not
/// count: CPUID leaf 0x15 (TSC/crystal ratio and crystal clock), else leaf
/// 0x16 (base frequency in MHz, which equals the TSC's on Intel CPUs).
fn cpuid_tsc_hz() -> Option<u64> {
    let max_leaf = __cpuid(0).eax;
    if max_leaf >= 0x15 {
        let leaf = __cpuid(0x15);
        if leaf.eax != 0 && leaf.ebx != 0 && leaf.ecx != 0 {
            return Some(u64::from(leaf.ecx) * u64::from(leaf.ebx) / u64::from(leaf.eax));
        }
    }
    if max_leaf >= 0x16 {
        let mhz = __cpuid(0x16).eax & 0xffff;
        if mhz != 0 {
            return Some(u64::from(mhz) * 1_000_000);
        }
    }
    None
}

/// Remaps the 8259 PICs to vectors 0x20..0x30, unmasks IRQ 0 and COM1's
/// IRQ 4 and sets the PIT's channel 0 to fire IRQ 0 at [`TICK_HZ`].
/// Interrupts stay disabled; the caller enables them when the IDT is ready.
pub fn start_tick() {
    let divisor = (PIT_HZ + TICK_HZ / 2) / TICK_HZ;
    let [low, high] = (divisor as u16).to_le_bytes();
    critical_section::with(|cs| {
        let mut pics = PICS.borrow_ref_mut(cs);
        // SAFETY: the PIC and PIT ports are standard on every PC; the IDT
        // handles every vector the PICs can now raise.
        unsafe {
            pics.initialize();
            pics.write_masks(!(1 << 0 | 1 << COM1_IRQ), 0xff);
            let mut command = Port::<u8>::new(PIT_COMMAND);
            let mut channel0 = Port::<u8>::new(PIT_CHANNEL0);
            // Channel 0, low then high byte, mode 2 (rate generator), binary.
            command.write(0b0011_0100);
            channel0.write(low);
            channel0.write(high);
        }
    });
}

/// Tells the PICs an IRQ on `vector` has been handled.
fn end_of_interrupt(vector: u8) {
    critical_section::with(|cs| {
        // SAFETY: called from the interrupt handler of `vector`, once.
        unsafe { PICS.borrow_ref_mut(cs).notify_end_of_interrupt(vector) };
    });
}

/// Handles an interrupt on `vector` if it is one of the PICs'; `false`
/// for any other vector. The timer counts a tick; COM1's receive interrupt
/// only had to wake the CPU (the run loop reads the byte).
pub fn on_interrupt(vector: u8) -> bool {
    if !(TIMER_VECTOR..SLAVE_VECTOR + 8).contains(&vector) {
        return false;
    }
    if vector == TIMER_VECTOR {
        TICKS.fetch_add(1, Ordering::Relaxed);
    }
    end_of_interrupt(vector);
    true
}

/// Timer interrupts taken since [`start_tick`].
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
