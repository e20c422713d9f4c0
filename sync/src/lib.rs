//! Link monitoring, bandwidth prediction, sync-interval policies and codec selection.
//!
//! Everything here is `no_std` + `alloc` so the unikernel can drive it: time is always
//! passed in explicitly as seconds (`f64`), never read from a clock. The host bench
//! `sync-lab` drives the same code over recorded traces. Formulas, their sources and
//! the corrections we made are in `docs/sync.md`.
#![no_std]

extern crate alloc;

pub mod codec;
pub mod model;
pub mod monitor;
pub mod pipeline;
pub mod policy;
pub mod predict;
pub mod wavelet;
