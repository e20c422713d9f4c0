//! Stopping the machine: semihosting `SYS_EXIT_EXTENDED`, then parking.
//!
//! Under QEMU run with `-semihosting-config enable=on,target=native`, the
//! `HLT #0xF000` semihosting call ends QEMU with exit status `code`.
//!
//! On a real Raspberry Pi without a debugger, `HLT` is UNDEFINED and raises a
//! synchronous exception (EC 0x00). The exception handler
//! ([`crate::exception`]) recognises exactly this instruction, skips it and
//! returns, so [`exit`] goes on to print `halted` on the UART and parks the
//! core with interrupts masked (power-cycle to restart).

use crate::exception;

/// Semihosting operation number of `SYS_EXIT_EXTENDED`.
const SYS_EXIT_EXTENDED: u64 = 0x20;
/// `ADP_Stopped_ApplicationExit`: the reason code for a normal exit.
const ADP_STOPPED_APPLICATION_EXIT: u64 = 0x20026;
/// Encoding of `HLT #0xF000`, the A64 semihosting trap; the exception
/// handler compares against it.
pub(crate) const HLT_SEMIHOSTING: u32 = 0xd45e_0000;

/// Ends the program with exit status `code` (QEMU exits), or, without a
/// semihosting host, prints `halted` and parks the core.
pub fn exit(code: u8) -> ! {
    let block: [u64; 2] = [ADP_STOPPED_APPLICATION_EXIT, u64::from(code)];
    // SAFETY: a semihosting call reads the two-word parameter block that
    // lives on this stack frame; without a host the exception handler skips
    // the instruction. x0 is overwritten by the (unused) result.
    unsafe {
        core::arch::asm!(
            "hlt #0xf000",
            inout("x0") SYS_EXIT_EXTENDED => _,
            in("x1") block.as_ptr(),
            options(nostack, readonly),
        );
    }
    exception::write_direct(format_args!("halted (code {code})\r\n"));
    park()
}

/// Masks every interrupt and waits forever.
pub fn park() -> ! {
    // SAFETY: masking interrupts has no memory effects.
    unsafe { core::arch::asm!("msr daifset, #0xf", options(nomem, nostack)) };
    loop {
        aarch64_cpu::asm::wfe();
    }
}
