//! EL1 exceptions: the vector table (`vectors.s`), IRQ dispatch, and the
//! fault path.
//!
//! A synchronous exception or SError that the kernel does not expect prints
//! a register dump (kind, ESR with its exception class decoded, ELR, FAR,
//! SPSR, x0-x30, SP) and halts the machine with [`FAULT_EXIT_CODE`]. The
//! dump is written through the board's *direct* output ([`set_direct_output`]),
//! which pokes the UART registers without taking the console lock, so it
//! works even if the fault hit while the console was in use. Data aborts of
//! the [`crate::probe`] accessors (absent devices) are recovered instead.

use core::cell::Cell;
use core::fmt::{self, Write};

use aarch64_cpu::registers::{ESR_EL1, FAR_EL1, VBAR_EL1};
use critical_section::Mutex;
use tock_registers::interfaces::{Readable, Writeable};

use crate::semihosting::{self, HLT_SEMIHOSTING};

/// Exit status after a fault dump (a panic uses 101).
pub const FAULT_EXIT_CODE: u8 = 102;

/// Registers saved on exception entry; layout shared with `vectors.s`.
#[repr(C)]
#[derive(Debug)]
pub struct ExceptionFrame {
    /// General-purpose registers x0 to x30.
    pub x: [u64; 31],
    /// Exception link register: where the exception was taken.
    pub elr: u64,
    /// Saved program status.
    pub spsr: u64,
    _pad: u64,
}

/// Bytes the vector entry reserves on the stack (`FRAME_SIZE` in vectors.s).
const FRAME_SIZE: u64 = core::mem::size_of::<ExceptionFrame>() as u64;
const _: () = assert!(FRAME_SIZE == 272);

/// A writer that sends bytes straight to the UART.
pub type DirectOutput = fn(&[u8]);

static DIRECT_OUTPUT: Mutex<Cell<Option<DirectOutput>>> = Mutex::new(Cell::new(None));

/// Installs the vector table in VBAR_EL1.
pub fn install_vectors() {
    unsafe extern "C" {
        static __tern_vectors: u8;
    }
    let base = core::ptr::addr_of!(__tern_vectors) as u64;
    VBAR_EL1.set(base);
    aarch64_cpu::asm::barrier::isb(aarch64_cpu::asm::barrier::SY);
}

/// Registers the lock-free UART writer used by fault dumps and `halted`.
pub fn set_direct_output(write: DirectOutput) {
    critical_section::with(|cs| DIRECT_OUTPUT.borrow(cs).set(Some(write)));
}

/// Formats `args` straight to the UART, bypassing the console (and its
/// lock). Does nothing before the board registered its direct output.
pub fn write_direct(args: fmt::Arguments<'_>) {
    struct Direct(DirectOutput);
    impl Write for Direct {
        fn write_str(&mut self, s: &str) -> fmt::Result {
            (self.0)(s.as_bytes());
            Ok(())
        }
    }
    if let Some(write) = critical_section::with(|cs| DIRECT_OUTPUT.borrow(cs).get()) {
        let _ = Direct(write).write_fmt(args);
    }
}

/// Which of the 16 vectors was taken.
#[derive(Clone, Copy, Debug)]
struct Vector(u64);

impl Vector {
    fn origin(self) -> &'static str {
        match self.0 / 4 {
            0 => "current EL, SP_EL0",
            1 => "current EL, SP_ELx",
            2 => "lower EL, AArch64",
            _ => "lower EL, AArch32",
        }
    }

    fn kind(self) -> &'static str {
        match self.0 % 4 {
            0 => "synchronous",
            1 => "IRQ",
            2 => "FIQ",
            _ => "SError",
        }
    }
}

/// Called by `vectors.s` for every exception taken to EL1.
#[unsafe(no_mangle)]
extern "C" fn tern_exception(vector: u64, frame: &mut ExceptionFrame) {
    let vector = Vector(vector);
    match vector.0 % 4 {
        1 => crate::irq::handle_irq(),
        0 if is_semihosting_trap(frame) => frame.elr += 4,
        0 if is_data_abort() && crate::probe::fixup(&mut frame.elr) => {}
        _ => fault(vector, frame),
    }
}

/// Whether the synchronous exception is a data abort taken at EL1 (exception
/// class 0x25).
fn is_data_abort() -> bool {
    ESR_EL1.read(ESR_EL1::EC) == 0x25
}

/// Whether the exception is the UNDEFINED `HLT #0xF000` of a semihosting
/// call on a machine without a semihosting host.
fn is_semihosting_trap(frame: &ExceptionFrame) -> bool {
    let ec = ESR_EL1.read(ESR_EL1::EC);
    // SAFETY: ELR points at the instruction that raised the exception, which
    // was just fetched from mapped, executable memory.
    ec == 0 && unsafe { core::ptr::read_volatile(frame.elr as *const u32) } == HLT_SEMIHOSTING
}

fn fault(vector: Vector, frame: &ExceptionFrame) -> ! {
    let esr = ESR_EL1.get();
    let ec = (esr >> 26) & 0x3f;
    write_direct(format_args!(
        "\r\n*** CPU exception: {} ({})\r\n",
        vector.kind(),
        vector.origin()
    ));
    write_direct(format_args!(
        "ESR_EL1 {esr:#018x}  EC {ec:#04x}: {}\r\n",
        exception_class(ec)
    ));
    if matches!(ec, 0x20 | 0x21 | 0x24 | 0x25) {
        let iss = esr & 0x1ff_ffff;
        let write = if ec >= 0x24 && iss & (1 << 6) != 0 {
            ", write"
        } else {
            ""
        };
        write_direct(format_args!(
            "        fault status {:#04x}: {}{write}\r\n",
            iss & 0x3f,
            fault_status(iss & 0x3f)
        ));
    }
    write_direct(format_args!(
        "ELR_EL1 {:#018x}  FAR_EL1 {:#018x}  SPSR_EL1 {:#018x}\r\n",
        frame.elr,
        FAR_EL1.get(),
        frame.spsr
    ));
    for (row, regs) in frame.x.chunks(3).enumerate() {
        for (col, value) in regs.iter().enumerate() {
            write_direct(format_args!("x{:<2} {value:#018x}  ", row * 3 + col));
        }
        if row * 3 + 3 > 30 {
            let sp = frame as *const ExceptionFrame as u64 + FRAME_SIZE;
            write_direct(format_args!("sp  {sp:#018x}"));
        }
        write_direct(format_args!("\r\n"));
    }
    semihosting::exit(FAULT_EXIT_CODE)
}

/// Meaning of ESR_ELx.EC (Arm ARM D17.2.37), for the classes a kernel meets.
fn exception_class(ec: u64) -> &'static str {
    match ec {
        0x00 => "unknown reason (undefined instruction)",
        0x01 => "trapped WFI/WFE",
        0x07 => "trapped FP/SIMD access",
        0x0e => "illegal execution state",
        0x15 => "SVC (AArch64)",
        0x16 => "HVC (AArch64)",
        0x17 => "SMC (AArch64)",
        0x18 => "trapped MSR/MRS/system instruction",
        0x20 => "instruction abort from a lower EL",
        0x21 => "instruction abort (same EL)",
        0x22 => "PC alignment fault",
        0x24 => "data abort from a lower EL",
        0x25 => "data abort (same EL)",
        0x26 => "SP alignment fault",
        0x2c => "floating-point exception",
        0x2f => "SError",
        0x30 | 0x31 => "breakpoint",
        0x32 | 0x33 => "software step",
        0x34 | 0x35 => "watchpoint",
        0x3c => "BRK instruction",
        _ => "other",
    }
}

/// Meaning of the instruction/data fault status code (ISS[5:0]).
fn fault_status(code: u64) -> &'static str {
    match code {
        0x00..=0x03 => "address size fault",
        0x04..=0x07 => "translation fault",
        0x09..=0x0b => "access flag fault",
        0x0d..=0x0f => "permission fault",
        0x10 => "synchronous external abort",
        0x21 => "alignment fault",
        0x30 => "TLB conflict abort",
        _ => "other",
    }
}
