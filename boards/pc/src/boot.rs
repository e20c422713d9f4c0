//! The way in: boot headers and the 32-bit entry that switches to long mode.
//!
//! One ELF boots two ways. QEMU's `-kernel` finds the PVH note
//! (`XEN_ELFNOTE_PHYS32_ENTRY`) and GRUB's `multiboot2` command finds the
//! multiboot2 header; both enter [`tern_entry32`] in 32-bit protected mode
//! with paging off and EBX pointing at their boot information. Multiboot2
//! also sets EAX to its magic; PVH leaves EAX undefined, so Rust tells the
//! two apart ([`tern_board_pc::bootinfo`]).
//!
//! The entry zeroes BSS, identity-maps the first 4 GiB with 2 MiB pages
//! (1 GiB pages are missing on QEMU's default CPU), enables PAE, EFER.LME and
//! paging, far-jumps into a 64-bit code segment and calls `pc_main(magic,
//! info)` on the boot stack, which has a guard page below it
//! ([`crate::paging`]).

use core::arch::global_asm;

/// Bytes of boot stack: the whole kernel runs on it.
pub const STACK_SIZE: usize = 256 * 1024;

global_asm!(
    r#"
    .set MB2_HEADER_MAGIC, 0xe85250d6
    .set MB2_ARCH_I386, 0

    /* GRUB looks for this in the first 32 KiB of the file, 8-aligned. */
    .section .multiboot2_header, "a"
    .balign 8
mb2_header_start:
    .long MB2_HEADER_MAGIC
    .long MB2_ARCH_I386
    .long mb2_header_end - mb2_header_start
    .long 0x100000000 - (MB2_HEADER_MAGIC + MB2_ARCH_I386 + (mb2_header_end - mb2_header_start))
    /* Entry address tag: enter at the 32-bit entry, not at e_entry's meaning
       for a 64-bit ELF. */
    .balign 8
    .short 3
    .short 0
    .long 12
    .long tern_entry32
    /* Framebuffer tag (optional): a linear 1024x768, 32 bits per pixel, for
       the screen console; GRUB may give another mode or text mode. */
    .balign 8
    .short 5
    .short 1
    .long 20
    .long 1024
    .long 768
    .long 32
    /* End tag. */
    .balign 8
    .short 0
    .short 0
    .long 8
mb2_header_end:

    /* PVH: QEMU reads the note's descriptor as a pointer-sized value. */
    .section .note.Xen, "a", @note
    .balign 4
    .long 4
    .long 8
    .long 18
    .asciz "Xen"
    .balign 4
    .quad tern_entry32

    .section .text.boot32, "ax"
    .code32
    .global tern_entry32
tern_entry32:
    cli
    cld
    mov %eax, %esi

    /* Zero BSS (it holds the page tables and stacks below). EBX and ESI
       carry the boot information through. */
    mov $__bss_start, %edi
    mov $__bss_end, %ecx
    sub %edi, %ecx
    xor %eax, %eax
    rep stosb

    /* PML4[0] -> PDPT; PDPT[0..4] -> four page directories. */
    mov $boot_pdpt, %eax
    or $0x3, %eax
    mov %eax, boot_pml4
    xor %ecx, %ecx
1:
    mov %ecx, %eax
    shl $12, %eax
    add $boot_pd, %eax
    or $0x3, %eax
    mov %eax, boot_pdpt(,%ecx,8)
    inc %ecx
    cmp $4, %ecx
    jb 1b

    /* 2048 entries of 2 MiB: present, writable, huge. */
    xor %ecx, %ecx
2:
    mov %ecx, %eax
    shl $21, %eax
    or $0x83, %eax
    mov %eax, boot_pd(,%ecx,8)
    mov %ecx, %edx
    shr $11, %edx
    mov %edx, boot_pd+4(,%ecx,8)
    inc %ecx
    cmp $2048, %ecx
    jb 2b

    mov $boot_pml4, %eax
    mov %eax, %cr3
    mov %cr4, %eax
    or $0x20, %eax
    mov %eax, %cr4
    mov $0xc0000080, %ecx
    rdmsr
    or $0x100, %eax
    wrmsr
    mov %cr0, %eax
    or $0x80000001, %eax
    mov %eax, %cr0

    lgdt boot_gdt_ptr
    ljmp $0x08, $tern_entry64

    .code64
tern_entry64:
    mov $0x10, %ax
    mov %ax, %ds
    mov %ax, %es
    mov %ax, %ss
    mov %ax, %fs
    mov %ax, %gs
    mov $boot_stack_top, %rsp
    xor %ebp, %ebp
    mov %esi, %edi
    mov %ebx, %esi
    call pc_main
3:
    cli
    hlt
    jmp 3b

    .section .rodata.boot_gdt, "a"
    .balign 8
boot_gdt:
    .quad 0
    .quad 0x00af9a000000ffff
    .quad 0x00cf92000000ffff
boot_gdt_ptr:
    .short boot_gdt_ptr - boot_gdt - 1
    .long boot_gdt

    .section .bss.boot, "aw", @nobits
    .balign 4096
boot_pml4:
    .skip 4096
boot_pdpt:
    .skip 4096
boot_pd:
    .skip 4 * 4096
    /* Unmapped by `paging::unmap_stack_guard`, so that an overflow of the
       stack below faults instead of overwriting the page tables. */
    .global boot_stack_guard
boot_stack_guard:
    .skip 4096
boot_stack_bottom:
    .skip {stack_size}
boot_stack_top:
"#,
    stack_size = const STACK_SIZE,
    options(att_syntax)
);
