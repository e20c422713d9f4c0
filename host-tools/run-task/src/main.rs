//! Runs a portable Tern task natively on Linux, with checkpoint and resume.
fn main() {}
