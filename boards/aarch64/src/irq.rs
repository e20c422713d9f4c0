//! Interrupts: the GICv2 (GIC-400 on the Pi 4, QEMU's GICv2 on `virt`)
//! through the `arm-gic` crate, and the EL1 physical timer of the Arm
//! generic timer (PPI 30) ticking at [`TICK_HZ`].
//!
//! The kernel's run loop sleeps in `wfi`; the tick wakes it at least every
//! 10 ms, and [`ticks`] proves the whole path (timer, GIC, vector, handler).

use core::cell::RefCell;
use core::sync::atomic::{AtomicU64, Ordering};

use aarch64_cpu::registers::{CNTFRQ_EL0, CNTPCT_EL0, CNTP_CTL_EL0, CNTP_CVAL_EL0};
use arm_gic::gicv2::registers::{Gicc, Gicd};
use arm_gic::gicv2::GicV2;
use arm_gic::{IntId, InterruptGroup, Trigger};
use critical_section::Mutex;
use tock_registers::interfaces::{Readable, Writeable};

/// Frequency of the timer tick.
pub const TICK_HZ: u64 = 100;

/// Ticks between two flushes of the TLB (10 a second): QEMU's TCG resizes
/// its software TLB only when the guest flushes it, and without flushes a task
/// with tens of MB of working set spends half its time in QEMU's page walks
/// (docs/architecture.md, "The tick flushes the TLB").
const TLB_FLUSH_TICKS: u64 = 10;

/// The EL1 physical timer's interrupt (CNTPNSIRQ), PPI 14 = INTID 30.
const TIMER_INTID: IntId = IntId::ppi(14);

static GIC: Mutex<RefCell<Option<GicV2<'static>>>> = Mutex::new(RefCell::new(None));
static TICKS: AtomicU64 = AtomicU64::new(0);

/// Timer interrupts taken since [`init`].
pub fn ticks() -> u64 {
    TICKS.load(Ordering::Relaxed)
}

/// Sets up the GIC, starts the 100 Hz timer tick and unmasks IRQs.
///
/// # Safety
///
/// `gicd` and `gicc` must be the GICv2 distributor and CPU interface,
/// mapped as device memory, used by nothing else; call once, after
/// [`crate::exception::install_vectors`].
pub unsafe fn init(gicd: usize, gicc: usize) {
    // SAFETY: the caller guarantees the addresses and exclusive use.
    let mut gic = unsafe { GicV2::new(gicd as *mut Gicd, gicc as *mut Gicc) };
    gic.setup();
    // Secure firmware (the Pi's armstub) leaves us the Non-secure view, where
    // GICD_CTLR bit 0 enables Group 1 and `setup` cannot regroup interrupts;
    // setting bit 0 enables signalling in either view.
    gic.enable_group0(true);
    gic.set_interrupt_priority(TIMER_INTID, 0x80);
    gic.set_trigger(TIMER_INTID, Trigger::Level);
    if gic.enable_interrupt(TIMER_INTID, true).is_err() {
        crate::exception::write_direct(format_args!(
            "warning: GIC refused the timer interrupt\r\n"
        ));
    }
    critical_section::with(|cs| *GIC.borrow_ref_mut(cs) = Some(gic));

    CNTP_CVAL_EL0.set(CNTPCT_EL0.get() + tick_period());
    CNTP_CTL_EL0.write(CNTP_CTL_EL0::ENABLE::SET + CNTP_CTL_EL0::IMASK::CLEAR);
    // SAFETY: unmasking IRQs once the handler and the GIC are ready.
    unsafe { core::arch::asm!("msr daifclr, #2", options(nomem, nostack)) };
}

fn tick_period() -> u64 {
    CNTFRQ_EL0.get() / TICK_HZ
}

/// Handles every pending interrupt; called from the IRQ vector.
pub(crate) fn handle_irq() {
    critical_section::with(|cs| {
        let mut gic = GIC.borrow_ref_mut(cs);
        let Some(gic) = gic.as_mut() else { return };
        // IAR/EOIR (the crate's "Group0" registers) are right for both views:
        // the Non-secure view acknowledges Group 1 through them.
        while let Some(intid) = gic.get_and_acknowledge_interrupt(InterruptGroup::Group0) {
            if intid == TIMER_INTID {
                // Next deadline from the previous one: the tick does not drift.
                CNTP_CVAL_EL0.set(CNTP_CVAL_EL0.get() + tick_period());
                let ticks = TICKS.fetch_add(1, Ordering::Relaxed) + 1;
                if ticks.is_multiple_of(TLB_FLUSH_TICKS) {
                    crate::mmu::flush_tlb();
                }
            }
            gic.end_interrupt(intid, InterruptGroup::Group0);
        }
    });
}
