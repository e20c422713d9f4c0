//! Link settings of `tern-virt`: the shared aarch64 linker script, linked
//! 2 MiB into RAM (QEMU puts the device tree at the start of RAM), dropping
//! to EL1, and defmt's sections.

fn main() {
    for arg in [
        "-Ttern-aarch64.ld",
        "--defsym=__tern_load_address=0x40200000",
        "--defsym=__tern_keep_el2=0",
        "--defsym=__tern_stack_size=0x20000",
        "-Tdefmt.x",
    ] {
        println!("cargo:rustc-link-arg-bin=tern-virt={arg}");
    }
    println!("cargo:rerun-if-changed=build.rs");
}
