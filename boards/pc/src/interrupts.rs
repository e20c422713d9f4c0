//! Descriptor tables, interrupt entry stubs and the fault dump.
//!
//! Stable Rust has no `x86-interrupt` ABI, so every one of the 256 vectors
//! enters through a small assembly stub that pushes a uniform [`TrapFrame`]
//! (a dummy error code where the CPU pushes none, the vector, all general
//! registers) and calls [`tern_trap`]. CPU exceptions print a register dump
//! on the board's raw console and halt the machine; the double fault runs on
//! its own IST stack so that even a blown kernel stack ends in a dump, never a
//! silent hang or reset. Every other vector has a gate too: a local APIC
//! spurious interrupt (0xFF) or a stray MSI is counted, never a fault.

use core::arch::global_asm;
use core::fmt::Write;
use core::ptr::addr_of_mut;
use core::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use x86_64::instructions::segmentation::{Segment, CS, DS, ES, SS};
use x86_64::instructions::tables::{lidt, load_tss};
use x86_64::registers::control::Cr2;
use x86_64::structures::gdt::{Descriptor, GlobalDescriptorTable};
use x86_64::structures::tss::TaskStateSegment;
use x86_64::structures::DescriptorTablePointer;
use x86_64::VirtAddr;

use crate::console::RawConsole;
use crate::cpu;
use crate::timer;

/// Exit status of a kernel stopped by a CPU exception (next to the portable
/// kernel's panic status 101).
pub const FAULT_EXIT_CODE: u8 = 102;

/// Vectors in the IDT: all of them.
const VECTORS: usize = 256;
/// Bytes between two entry stubs (each is at most 12 bytes, 16-aligned).
const STUB_STRIDE: u64 = 16;
/// IST slot (1-based in the gate, 0-based in the TSS) of the double-fault
/// stack.
const DOUBLE_FAULT_IST: usize = 0;
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

// Entry stubs, one per vector, `STUB_STRIDE` bytes apart from
// `tern_trap_stubs`. The CPU aligns RSP to 16 before pushing its 5-word
// frame; the error code, the vector and 15 registers make 22 words in all,
// so RSP is 16-aligned again at the `call`, as the SysV ABI wants. Vectors
// 8, 10-14, 17, 21, 29 and 30 get an error code from the CPU; the others a
// dummy 0.
global_asm!(
    r#"
    .section .text.tern_trap, "ax"
    .balign 16
    .global tern_trap_stubs
tern_trap_stubs:
    .set vec, 0
    .rept 256
    .balign 16
    .if (vec == 8) || ((vec >= 10) && (vec <= 14)) || (vec == 17) || (vec == 21) || (vec == 29) || (vec == 30)
    push $vec
    .else
    push $0
    push $vec
    .endif
    jmp tern_trap_common
    .set vec, vec + 1
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
"#,
    options(att_syntax)
);

extern "C" {
    /// The first entry stub; vector `v`'s is `STUB_STRIDE * v` bytes on.
    static tern_trap_stubs: u8;
}

/// One 16-byte interrupt gate of the IDT.
#[derive(Clone, Copy)]
#[repr(C, align(16))]
struct Gate {
    offset_low: u16,
    selector: u16,
    /// Bits 0-2: IST slot (1-based, 0 = none).
    ist: u8,
    /// Present, DPL 0, 64-bit interrupt gate (0x8E).
    attributes: u8,
    offset_mid: u16,
    offset_high: u32,
    reserved: u32,
}

impl Gate {
    const MISSING: Self = Self {
        offset_low: 0,
        selector: 0,
        ist: 0,
        attributes: 0,
        offset_mid: 0,
        offset_high: 0,
        reserved: 0,
    };

    /// An interrupt gate (interrupts stay masked in the handler) to
    /// `handler` in code segment `selector`.
    fn interrupt(handler: u64, selector: u16, ist: Option<usize>) -> Self {
        Self {
            offset_low: handler as u16,
            selector,
            ist: ist.map_or(0, |slot| slot as u8 + 1),
            attributes: 0x8e,
            offset_mid: (handler >> 16) as u16,
            offset_high: (handler >> 32) as u32,
            reserved: 0,
        }
    }
}

/// The GDT, TSS and IDT; built once by [`init`] and never moved.
struct Tables {
    gdt: GlobalDescriptorTable,
    tss: TaskStateSegment,
    idt: [Gate; VECTORS],
    double_fault_stack: [u8; DOUBLE_FAULT_STACK_SIZE],
}

static mut TABLES: Tables = Tables {
    gdt: GlobalDescriptorTable::new(),
    tss: TaskStateSegment::new(),
    idt: [Gate::MISSING; VECTORS],
    double_fault_stack: [0; DOUBLE_FAULT_STACK_SIZE],
};

/// Set by the first [`init`]: the tables are built and loaded once.
static INITIALISED: AtomicBool = AtomicBool::new(false);

/// Interrupts that arrived on a vector nobody uses (local APIC spurious
/// interrupts included), counted for `info`-style diagnostics.
static STRAY: AtomicU64 = AtomicU64::new(0);

/// The tables were loaded already: a second [`init`] is refused (it would
/// rebuild tables the CPU is using).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct AlreadyInitialised;

/// Loads the kernel's GDT (with a TSS carrying the double-fault stack) and
/// an IDT with a gate for each of the 256 vectors. Runs once: later calls
/// return [`AlreadyInitialised`] and change nothing.
pub fn init() -> Result<(), AlreadyInitialised> {
    if INITIALISED.swap(true, Ordering::AcqRel) {
        return Err(AlreadyInitialised);
    }
    // SAFETY: the flag above lets exactly one call get here, and nothing
    // else names TABLES, so this is the only reference; the tables live in a
    // static and so stay valid after they are loaded.
    let tables: &'static mut Tables = unsafe { &mut *addr_of_mut!(TABLES) };

    let stack_top = VirtAddr::from_ptr(tables.double_fault_stack.as_ptr_range().end);
    tables.tss.interrupt_stack_table[DOUBLE_FAULT_IST] = stack_top;

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

    let stubs = core::ptr::addr_of!(tern_trap_stubs) as u64;
    for (vector, gate) in tables.idt.iter_mut().enumerate() {
        let ist = (vector == 8).then_some(DOUBLE_FAULT_IST);
        *gate = Gate::interrupt(stubs + STUB_STRIDE * vector as u64, code.0, ist);
    }
    let pointer = DescriptorTablePointer {
        limit: (core::mem::size_of::<[Gate; VECTORS]>() - 1) as u16,
        base: VirtAddr::from_ptr(tables.idt.as_ptr()),
    };
    // SAFETY: every gate points at the entry stub assembled for its vector
    // (with or without an error code, as the vector has), which saves the
    // full state, calls `tern_trap` and returns with `iretq`; the table is
    // static.
    unsafe { lidt(&pointer) };
    Ok(())
}

/// Interrupts counted on vectors nobody handles since boot.
pub fn stray_interrupts() -> u64 {
    STRAY.load(Ordering::Relaxed)
}

/// The Rust side of every interrupt and exception.
#[no_mangle]
extern "C" fn tern_trap(frame: &mut TrapFrame) {
    match frame.vector {
        0..=31 => fault(frame),
        v => {
            if !timer::on_interrupt(v as u8) {
                STRAY.fetch_add(1, Ordering::Relaxed);
            }
        }
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

/// Prints the fault dump on the raw console (bypassing the console lock,
/// which the faulting code may hold) and halts with [`FAULT_EXIT_CODE`].
fn fault(frame: &TrapFrame) -> ! {
    let mut out = RawConsole;
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
