//! Makes the shared linker script `tern-aarch64.ld` findable by the board
//! binaries, which pass `-Ttern-aarch64.ld` from their own build scripts.
//! (The default defmt level comes from the workspace's `.cargo/config.toml`.)

fn main() {
    let dir = std::env::var("CARGO_MANIFEST_DIR").expect("cargo sets CARGO_MANIFEST_DIR");
    println!("cargo:rustc-link-search=native={dir}");
    println!("cargo:rerun-if-changed=tern-aarch64.ld");
}
