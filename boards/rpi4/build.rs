//! Link settings of the two images: both use the shared aarch64 linker
//! script. The kernel is linked where the firmware loads kernel8.img
//! (0x80000) and drops to EL1; the chainloader is linked at 32 MiB (it
//! copies itself there from 0x80000, leaving 0x80000.. free for the kernel
//! it receives) and stays at EL2 so the kernel is entered as from firmware.

fn main() {
    let images = [
        ("tern-rpi4", "0x80000", "0", "0x20000", true),
        ("tern-rpi4-chainloader", "0x2000000", "1", "0x10000", false),
    ];
    for (bin, base, keep_el2, stack, defmt) in images {
        let arg = |a: &str| println!("cargo:rustc-link-arg-bin={bin}={a}");
        arg("-Ttern-aarch64.ld");
        arg(&format!("--defsym=__tern_load_address={base}"));
        arg(&format!("--defsym=__tern_keep_el2={keep_el2}"));
        arg(&format!("--defsym=__tern_stack_size={stack}"));
        if defmt {
            arg("-Tdefmt.x");
        }
    }
    println!("cargo:rerun-if-changed=build.rs");
}
