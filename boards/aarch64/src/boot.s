// Boot entry of every Tern aarch64 image.
//
// The firmware (or QEMU) enters `_start` at EL2 or EL1 with the MMU off,
// x0 = device tree pointer. Cores other than core 0 are parked. The image
// is copied to its link address if it was loaded elsewhere (the chainloader
// is loaded at 0x80000 but linked higher); the code before the copy uses
// only PC-relative addressing. Then, unless __tern_keep_el2 is set, the
// core sets the EL2 controls EL1 depends on (VPIDR, VMPIDR, HSTR, MDCR)
// and drops from EL2 to EL1 (AArch64, physical timer usable, FP/SIMD not
// trapped), sets the stack, zeroes BSS and calls _tern_rust_entry(x0).

.section .text._start, "ax"
.global _start
_start:
    // Park every core but core 0 (MPIDR_EL1.Aff0).
    mrs     x1, mpidr_el1
    and     x1, x1, #0xff
    cbnz    x1, .Lpark

    mov     x19, x0                     // DTB pointer, handed to Rust

    // Relocate to the link address if loaded elsewhere.
    adr     x1, _start
    ldr     x2, =__image_start
    cmp     x1, x2
    b.eq    .Lrelocated
    ldr     x3, =__image_load_end
.Lcopy:
    ldp     x4, x5, [x1], #16
    stp     x4, x5, [x2], #16
    cmp     x2, x3
    b.lo    .Lcopy
    dsb     sy
    ic      iallu
    dsb     sy
    isb
    ldr     x1, =.Lrelocated
    br      x1

.Lrelocated:
    mrs     x1, CurrentEL
    lsr     x1, x1, #2
    cmp     x1, #1
    b.eq    .Lel1
    cmp     x1, #2
    b.ne    .Lpark                      // EL3 entry is not supported

    // At EL2: FP/SIMD not trapped at EL2 or below (CPTR_EL2 RES1 bits only).
    mov     x1, #0x33ff
    msr     cptr_el2, x1
    ldr     x1, =__tern_keep_el2
    cbnz    x1, .Lstack

    // EL2 controls an earlier stage may have left (reset values are
    // UNKNOWN): EL1 reads the real core's MIDR and MPIDR through their
    // virtual copies, no EL1 system register access traps to EL2 (HSTR),
    // and no debug or PMU access either, with every PMU counter EL1's
    // (MDCR_EL2 all zero but HPMN = PMCR_EL0.N).
    mrs     x1, midr_el1
    msr     vpidr_el2, x1
    mrs     x1, mpidr_el1
    msr     vmpidr_el2, x1
    msr     hstr_el2, xzr
    mrs     x1, pmcr_el0
    ubfx    x1, x1, #11, #5             // PMCR_EL0.N
    msr     mdcr_el2, x1

    // Drop to EL1: EL1 is AArch64, may read the physical counter and use
    // the physical timer, no virtual offset.
    mov     x1, #(1 << 31)              // HCR_EL2.RW
    msr     hcr_el2, x1
    mrs     x1, cnthctl_el2
    orr     x1, x1, #3                  // EL1PCTEN | EL1PCEN
    msr     cnthctl_el2, x1
    msr     cntvoff_el2, xzr
    ldr     x1, =0x30d00800             // SCTLR_EL1 RES1 bits: MMU and caches off
    msr     sctlr_el1, x1
    mov     x1, #0x3c5                  // EL1h, DAIF masked
    msr     spsr_el2, x1
    adr     x1, .Lel1
    msr     elr_el2, x1
    eret

.Lel1:
    mov     x1, #(3 << 20)              // CPACR_EL1.FPEN: no FP/SIMD traps
    msr     cpacr_el1, x1
    isb
    msr     spsel, #1

.Lstack:
    ldr     x1, =__stack_top
    mov     sp, x1

    ldr     x1, =__bss_start
    ldr     x2, =__bss_end
.Lzero:
    cmp     x1, x2
    b.hs    .Lrust
    stp     xzr, xzr, [x1], #16
    b       .Lzero

.Lrust:
    mov     x0, x19
    bl      _tern_rust_entry

.Lpark:
    wfe
    b       .Lpark

.ltorg
