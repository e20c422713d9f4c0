//! Makes the shared linker script `tern-aarch64.ld` findable by the board
//! binaries, which pass `-Ttern-aarch64.ld` from their own build scripts,
//! and keeps this crate's boot log (`defmt::info!`) enabled when the user
//! sets no `DEFMT_LOG` filter (defmt's default would keep errors only).

fn main() {
    let dir = std::env::var("CARGO_MANIFEST_DIR").expect("cargo sets CARGO_MANIFEST_DIR");
    println!("cargo:rustc-link-search=native={dir}");
    println!("cargo:rerun-if-changed=tern-aarch64.ld");
    println!("cargo:rerun-if-env-changed=DEFMT_LOG");
    if std::env::var_os("DEFMT_LOG").is_none() {
        println!("cargo:rustc-env=DEFMT_LOG=info");
    }
}
