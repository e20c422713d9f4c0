//! Tern's front door. [`demo`] boots an x86_64 PC node and an aarch64 `virt`
//! node in QEMU on a private network, starts an NPB task on the PC, migrates
//! it to the aarch64 node and back while it runs, and reports whether it
//! still verified and what each migration cost. [`standby`] runs the same
//! task with a standby replica on the aarch64 node kept fresh by syncs over
//! a link shaped after a real bandwidth trace (`tern_lab::shaping`), cuts the link
//! mid-run and reports the failover and the failback. [`cluster`] runs the
//! offloading controller on both nodes with a batch of tasks. [`lan`] is
//! `tern nodes discover` and `tern console`. [`task`] runs a user's Wasm
//! task on a live node and reports the node's verdict.

pub mod cluster;
pub mod demo;
pub mod lan;
pub mod standby;
pub mod task;
