//! Descriptor tables, interrupt entry stubs and the fault dump.
//!
//! Stable Rust has no `x86-interrupt` ABI, so every vector enters through a
//! small assembly stub that pushes a uniform [`TrapFrame`] (a dummy error
//! code where the CPU pushes none, the vector, all general registers) and
//! calls [`tern_trap`]. CPU exceptions print a register dump straight to COM1
//! and halt the machine; the double fault runs on its own IST stack so that
//! even a blown kernel stack ends in a dump, never a silent hang or reset.

use core::arch::global_asm;
use core::fmt::Write;
use core::ptr::addr_of_mut;

use x86_64::instructions::segmentation::{Segment, CS, DS, ES, SS};
use x86_64::instructions::tables::load_tss;
use x86_64::registers::control::Cr2;
use x86_64::structures::gdt::{Descriptor, GlobalDescriptorTable};
use x86_64::structures::idt::InterruptDescriptorTable;
use x86_64::structures::tss::TaskStateSegment;
use x86_64::VirtAddr;

use crate::cpu::{self, RawCom1};
use crate::timer;

/// Exit status of a kernel stopped by a CPU exception (next to the portable
/// kernel's panic status 101).
pub const FAULT_EXIT_CODE: u8 = 102;

/// Number of vectors with a stub: the 32 exceptions and the 16 8259 IRQs.
const STUB_COUNT: usize = 48;
/// IST slot (0-based) of the double-fault stack.
const DOUBLE_FAULT_IST: u16 = 0;
const DOUBLE_FAULT_STACK_SIZE: usize = 16 * 1024;

/// Registers as the entry stub leaves them on the stack.
#[repr(C)]
#[derive(Debug)]
pub struct TrapFrame {
    r15: u64,
    r14: u64,
    r13: u64,
    r12: u64,
    r11: u64,
    r10: u64,
    r9: u64,
    r8: u64,
    rbp: u64,
    rdi: u64,
    rsi: u64,
    rdx: u64,
    rcx: u64,
    rbx: u64,
    rax: u64,
    vector: u64,
    error_code: u64,
    rip: u64,
    cs: u64,
    rflags: u64,
    rsp: u64,
    ss: u64,
}

// Entry stubs. The CPU aligns RSP to 16 before pushing its 5-word frame; the
// error code, the vector and 15 registers make 22 words in all, so RSP is
// 16-aligned again at the `call`, as the SysV ABI wants.
global_asm!(
    r#"
    .macro TRAP_NOERR vec
    .balign 16
tern_trap_stub_\vec:
    push $0
    push $\vec
    jmp tern_trap_common
    .endm

    .macro TRAP_ERR vec
    .balign 16
tern_trap_stub_\vec:
    push $\vec
    jmp tern_trap_common
    .endm

    .section .text.tern_trap, "ax"
    .irp vec, 0,1,2,3,4,5,6,7,9,16,18,19,20,28
    TRAP_NOERR \vec
    .endr
    .irp vec, 8,10,11,12,13,14,17,21,29,30
    TRAP_ERR \vec
    .endr
    .irp vec, 32,33,34,35,36,37,38,39,40,41,42,43,44,45,46,47
    TRAP_NOERR \vec
    .endr

tern_trap_common:
    push %rax
    push %rbx
    push %rcx
    push %rdx
    push %rsi
    push %rdi
    push %rbp
    push %r8
    push %r9
    push %r10
    push %r11
    push %r12
    push %r13
    push %r14
    push %r15
    mov %rsp, %rdi
    cld
    call tern_trap
    pop %r15
    pop %r14
    pop %r13
    pop %r12
    pop %r11
    pop %r10
    pop %r9
    pop %r8
    pop %rbp
    pop %rdi
    pop %rsi
    pop %rdx
    pop %rcx
    pop %rbx
    pop %rax
    add $16, %rsp
    iretq

    .section .rodata.tern_trap_stubs, "a"
    .balign 8
    .global tern_trap_stubs
tern_trap_stubs:
    /* Reserved vectors (15, 22..27, 31) have no stub: 0. */
    .irp vec, 0,1,2,3,4,5,6,7,8,9,10,11,12,13,14
    .quad tern_trap_stub_\vec
    .endr
    .quad 0
    .irp vec, 16,17,18,19,20,21
    .quad tern_trap_stub_\vec
    .endr
    .quad 0, 0, 0, 0, 0, 0
    .irp vec, 28,29,30
    .quad tern_trap_stub_\vec
    .endr
    .quad 0
    .irp vec, 32,33,34,35,36,37,38,39,40,41,42,43,44,45,46,47
    .quad tern_trap_stub_\vec
    .endr
"#,
    options(att_syntax)
);

extern "C" {
    /// Addresses of the entry stubs, indexed by vector (0 for reserved
    /// vectors).
    static tern_trap_stubs: [u64; STUB_COUNT];
}

/// The GDT, TSS and IDT; built once by [`init`] and never moved.
struct Tables {
    gdt: GlobalDescriptorTable,
    tss: TaskStateSegment,
    idt: InterruptDescriptorTable,
    double_fault_stack: [u8; DOUBLE_FAULT_STACK_SIZE],
}

static mut TABLES: Tables = Tables {
    gdt: GlobalDescriptorTable::new(),
    tss: TaskStateSegment::new(),
    idt: InterruptDescriptorTable::new(),
    double_fault_stack: [0; DOUBLE_FAULT_STACK_SIZE],
};

/// Loads the kernel's GDT (with a TSS carrying the double-fault stack) and
/// the IDT with a stub for every exception and 8259 IRQ.
///
/// Called once, early, with interrupts disabled.
pub fn init() {
    // SAFETY: called once before interrupts are enabled and before anything
    // else can reach TABLES, so this is the only reference; the tables live
    // in a static and so stay valid after they are loaded.
    let tables: &'static mut Tables = unsafe { &mut *addr_of_mut!(TABLES) };

    let stack_top = VirtAddr::from_ptr(tables.double_fault_stack.as_ptr_range().end);
    tables.tss.interrupt_stack_table[usize::from(DOUBLE_FAULT_IST)] = stack_top;

    let code = tables.gdt.append(Descriptor::kernel_code_segment());
    let data = tables.gdt.append(Descriptor::kernel_data_segment());
    let tss = tables.gdt.append(Descriptor::tss_segment(&tables.tss));
    tables.gdt.load();
    // SAFETY: the selectors name the descriptors just appended to the GDT
    // now loaded: a 64-bit code segment, a data segment and the TSS.
    unsafe {
        CS::set_reg(code);
        DS::set_reg(data);
        ES::set_reg(data);
        SS::set_reg(data);
        load_tss(tss);
    }

    // SAFETY: the stubs table is an immutable array assembled above.
    let stubs = unsafe { &tern_trap_stubs };
    let stub = |vector: usize| VirtAddr::new(stubs[vector]);
    let idt = &mut tables.idt;
    // SAFETY: each address is the entry stub assembled for that vector (with
    // or without an error code, as the vector has), which saves the full
    // state, calls `tern_trap` and returns with `iretq`. The typed fields of
    // the `x86_64` IDT name the exceptions; reserved vectors stay absent.
    unsafe {
        idt.divide_error.set_handler_addr(stub(0));
        idt.debug.set_handler_addr(stub(1));
        idt.non_maskable_interrupt.set_handler_addr(stub(2));
        idt.breakpoint.set_handler_addr(stub(3));
        idt.overflow.set_handler_addr(stub(4));
        idt.bound_range_exceeded.set_handler_addr(stub(5));
        idt.invalid_opcode.set_handler_addr(stub(6));
        idt.device_not_available.set_handler_addr(stub(7));
        idt.double_fault
            .set_handler_addr(stub(8))
            .set_stack_index(DOUBLE_FAULT_IST);
        idt[9].set_handler_addr(stub(9)); // a private field, reachable by index
        idt.invalid_tss.set_handler_addr(stub(10));
        idt.segment_not_present.set_handler_addr(stub(11));
        idt.stack_segment_fault.set_handler_addr(stub(12));
        idt.general_protection_fault.set_handler_addr(stub(13));
        idt.page_fault.set_handler_addr(stub(14));
        idt.x87_floating_point.set_handler_addr(stub(16));
        idt.alignment_check.set_handler_addr(stub(17));
        idt.machine_check.set_handler_addr(stub(18));
        idt.simd_floating_point.set_handler_addr(stub(19));
        idt.virtualization.set_handler_addr(stub(20));
        idt.cp_protection_exception.set_handler_addr(stub(21));
        idt.hv_injection_exception.set_handler_addr(stub(28));
        idt.vmm_communication_exception.set_handler_addr(stub(29));
        idt.security_exception.set_handler_addr(stub(30));
        for vector in 32..STUB_COUNT {
            idt[vector as u8].set_handler_addr(stub(vector));
        }
    }
    tables.idt.load();
}

/// The Rust side of every interrupt and exception.
#[no_mangle]
extern "C" fn tern_trap(frame: &mut TrapFrame) {
    match frame.vector {
        0..=31 => fault(frame),
        v if v == u64::from(timer::TIMER_VECTOR) => timer::on_tick(),
        // COM1 received a byte: waking the CPU was the point, the run loop
        // reads it. Masked lines never fire; anything else is a spurious
        // IRQ 7 or 15, which the PICs' end-of-interrupt handling copes with.
        v => timer::end_of_interrupt(v as u8),
    }
}

/// Architectural names of the exception vectors.
fn exception_name(vector: u64) -> &'static str {
    match vector {
        0 => "Divide Error (#DE)",
        1 => "Debug (#DB)",
        2 => "Non-Maskable Interrupt",
        3 => "Breakpoint (#BP)",
        4 => "Overflow (#OF)",
        5 => "BOUND Range Exceeded (#BR)",
        6 => "Invalid Opcode (#UD)",
        7 => "Device Not Available (#NM)",
        8 => "Double Fault (#DF)",
        10 => "Invalid TSS (#TS)",
        11 => "Segment Not Present (#NP)",
        12 => "Stack-Segment Fault (#SS)",
        13 => "General Protection (#GP)",
        14 => "Page Fault (#PF)",
        16 => "x87 Floating-Point Error (#MF)",
        17 => "Alignment Check (#AC)",
        18 => "Machine Check (#MC)",
        19 => "SIMD Floating-Point (#XM)",
        20 => "Virtualization (#VE)",
        21 => "Control Protection (#CP)",
        29 => "VMM Communication (#VC)",
        30 => "Security (#SX)",
        _ => "Reserved",
    }
}

/// Prints the fault dump on COM1 (bypassing the console lock, which the
/// faulting code may hold) and halts with [`FAULT_EXIT_CODE`].
fn fault(frame: &TrapFrame) -> ! {
    let mut out = RawCom1;
    let f = frame;
    let _ = write!(
        out,
        "\r\n*** CPU EXCEPTION: {} (vector {}), error code {:#x}\r\n",
        exception_name(f.vector),
        f.vector,
        f.error_code
    );
    let _ = write!(
        out,
        "RIP={:#018x} CS={:#06x} RFLAGS={:#018x}\r\nRSP={:#018x} SS={:#06x}\r\n",
        f.rip, f.cs, f.rflags, f.rsp, f.ss
    );
    if f.vector == 14 {
        let access = if f.error_code & 2 != 0 {
            "write"
        } else {
            "read"
        };
        let cause = if f.error_code & 1 != 0 {
            "protection violation"
        } else {
            "page not present"
        };
        let _ = write!(out, "CR2={:#018x} ({access}, {cause})\r\n", Cr2::read_raw());
    } else if f.vector == 8 {
        // A double fault often escalates a page fault (a stack overflow
        // into the guard page): its address is still in CR2.
        let _ = write!(
            out,
            "CR2={:#018x} (last page-fault address)\r\n",
            Cr2::read_raw()
        );
    }
    let registers = [
        ("RAX", f.rax),
        ("RBX", f.rbx),
        ("RCX", f.rcx),
        ("RDX", f.rdx),
        ("RSI", f.rsi),
        ("RDI", f.rdi),
        ("RBP", f.rbp),
        ("R8 ", f.r8),
        ("R9 ", f.r9),
        ("R10", f.r10),
        ("R11", f.r11),
        ("R12", f.r12),
        ("R13", f.r13),
        ("R14", f.r14),
        ("R15", f.r15),
    ];
    for (i, (name, value)) in registers.iter().enumerate() {
        let end = if i % 3 == 2 { "\r\n" } else { " " };
        let _ = write!(out, "{name}={value:#018x}{end}");
    }
    cpu::halt(FAULT_EXIT_CODE)
}
