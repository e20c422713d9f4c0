//! Builds a Tern kernel and deploys it to a board or QEMU.
fn main() {}
