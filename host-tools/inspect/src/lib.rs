//! The inspector's reusable part: the client of a live node's control
//! service ([`node`]), shared by the `inspect` binary and the `tern` front door.

pub mod node;
