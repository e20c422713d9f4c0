//! Serial console for Tern nodes, defmt-aware.
fn main() {}
