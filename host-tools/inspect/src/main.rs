//! Checkpoint inspector for files and live Tern nodes.
fn main() {}
