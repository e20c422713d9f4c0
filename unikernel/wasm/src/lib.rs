//! WebAssembly tasks for Tern (`docs/wasm-tasks.md`): a user's own
//! computation, handed to a node as a module, that runs, checkpoints and
//! migrates between ISAs like a built-in task, with nothing rebuilt in the
//! kernel.
//!
//! - [`module`]: the checks a module must pass (the WebAssembly spec and the
//!   task ABI) and the export rewrite that makes every mutable global
//!   reachable; a refusal is typed.
//! - [`task`]: [`WasmTask`], an instance stepped by wasmi under a fuel
//!   budget; its checkpoint is the module's identity, the linear memory (a
//!   bulk region) and the globals (a typed region).
//! - [`fuel`]: the node's measured fuel rate, which sizes each step.
//! - [`catalog`]: [`WasmCatalog`], the content-addressed modules a node
//!   holds and the task kind `wasm` made of them.
#![no_std]
#![forbid(unsafe_code)]

extern crate alloc;

pub mod catalog;
#[cfg(feature = "fixtures")]
pub mod fixtures;
pub mod fuel;
pub mod module;
pub mod task;

pub use catalog::{describe, WasmCatalog};
pub use module::{prepare, Limits, Prepared, Refusal};
pub use task::{WasmTask, KIND, VERSION};
