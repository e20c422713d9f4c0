//! Register accesses that survive an absent device: on a machine where no
//! device answers an address (QEMU's `raspi4b` has neither GENET nor the
//! RNG200), a load or store there takes a synchronous external abort.
//! The two accessors here run one known instruction each; the exception
//! handler (through `fixup`) sends an abort taken at exactly that instruction to a
//! recovery path instead of the fault dump, so the access reports failure.

use core::arch::global_asm;

// x0: address (x1: value to store). Returns x0: value read, x1: 0 if the
// access completed, 1 if it aborted (the fixup entry sets it).
global_asm!(
    r#"
    .section .text.tern_probe, "ax"
    .global __tern_probe_read32
__tern_probe_read32:
    mov     x2, x0
    mov     x0, #0
    mov     x1, #0
    .global __tern_probe_load
__tern_probe_load:
    ldr     w0, [x2]
    ret

    .global __tern_probe_write32
__tern_probe_write32:
    mov     x2, x0
    mov     x0, #0
    .global __tern_probe_store
__tern_probe_store:
    str     w1, [x2]
    mov     x1, #0
    ret

    .global __tern_probe_aborted
__tern_probe_aborted:
    mov     x0, #0
    mov     x1, #1
    ret
"#
);

/// Value and abort flag, returned in x0 and x1 (AAPCS64 composite return).
#[repr(C)]
struct Outcome {
    value: u64,
    aborted: u64,
}

unsafe extern "C" {
    fn __tern_probe_read32(address: usize) -> Outcome;
    fn __tern_probe_write32(address: usize, value: u32) -> Outcome;
    static __tern_probe_load: u8;
    static __tern_probe_store: u8;
    static __tern_probe_aborted: u8;
}

/// Reads the 32-bit register at `address`; `None` if no device answered
/// (a synchronous external abort).
///
/// # Safety
///
/// `address` must be 4-byte aligned and mapped as device memory, and reading
/// it must have no effect the caller's driver does not expect.
pub unsafe fn read32(address: usize) -> Option<u32> {
    // SAFETY: the caller vouches for the address; an abort of the load is
    // turned into `aborted` by `fixup`.
    let outcome = unsafe { __tern_probe_read32(address) };
    (outcome.aborted == 0).then_some(outcome.value as u32)
}

/// Writes the 32-bit register at `address`; `false` if no device answered.
///
/// # Safety
///
/// As for [`read32`], for a write.
pub unsafe fn write32(address: usize, value: u32) -> bool {
    // SAFETY: as for `read32`.
    let outcome = unsafe { __tern_probe_write32(address, value) };
    outcome.aborted == 0
}

/// For the exception handler: if a data abort was taken at one of the probe
/// instructions, redirects the return address to the recovery entry and
/// returns `true` (the exception is handled).
pub(crate) fn fixup(elr: &mut u64) -> bool {
    let probes = [
        core::ptr::addr_of!(__tern_probe_load) as u64,
        core::ptr::addr_of!(__tern_probe_store) as u64,
    ];
    if probes.contains(elr) {
        *elr = core::ptr::addr_of!(__tern_probe_aborted) as u64;
        true
    } else {
        false
    }
}
