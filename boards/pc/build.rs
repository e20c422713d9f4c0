//! Links `tern-pc` with its linker script (at 1 MiB, non-PIE) and defmt's.

fn main() {
    let dir = std::env::var("CARGO_MANIFEST_DIR").expect("cargo sets CARGO_MANIFEST_DIR");
    println!("cargo:rustc-link-search=native={dir}");
    println!("cargo:rerun-if-changed=tern-pc.ld");
    if std::env::var("CARGO_CFG_TARGET_OS").as_deref() == Ok("none") {
        // x86_64-unknown-none links static PIE by default; the 32-bit boot
        // code uses absolute addresses, which only a fixed-address
        // executable resolves.
        println!("cargo:rustc-link-arg-bins=--no-pie");
        println!("cargo:rustc-link-arg-bins=-Ttern-pc.ld");
        println!("cargo:rustc-link-arg-bins=-Tdefmt.x");
    }
}
