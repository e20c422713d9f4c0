//! The SDK of Tern's Wasm tasks written in Rust (`docs/wasm-tasks.md`).
//!
//! A task implements [`Task`] (arguments in, bounded steps, a result out)
//! and exports it with [`export_task!`]; built for `wasm32-unknown-unknown`
//! as a `cdylib`, it follows Tern's task ABI: `memory`, `tern_args`,
//! `tern_init`, `tern_step`, `tern_result`, and the one import `tern.log`.
//! Its whole state lives in its linear memory (the heap is `dlmalloc`, as
//! for std on wasm32) and its globals, which is what a checkpoint holds.
//!
//! [`run`] drives the same [`Task`] natively, step by step: the reference
//! answer a run on a node is checked against.
#![no_std]

extern crate alloc;

use alloc::string::String;
use alloc::vec::Vec;

#[doc(hidden)]
pub use spin;

/// A task: made from its arguments, advanced by bounded steps, ended by its
/// result.
pub trait Task: Sized {
    /// Parses `args` and sets up (cheaply: heavy set-up belongs in steps);
    /// returns the task and its total work units.
    fn init(args: &[&str]) -> Result<(Self, u64), Error>;
    /// Does a bounded amount of work (a few milliseconds of interpretation
    /// at most: the node checkpoints and migrates between steps); returns
    /// the work units done so far, never fewer than before. The task is done
    /// when they reach the total.
    fn step(&mut self) -> Result<u64, Error>;
    /// The result, once every work unit is done (what a run is verified by).
    fn result(&self) -> Vec<u8>;
}

/// Why a task cannot go on: a message (logged) and the ABI's error code.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Error {
    /// What went wrong.
    pub message: &'static str,
    /// A negative code (the ABI's `tern_init` and `tern_step` return it).
    pub code: i64,
}

impl Error {
    /// An error with code -1.
    pub const fn new(message: &'static str) -> Self {
        Self { message, code: -1 }
    }
}

/// Writes a line to the node's log of the task (an event the host sees);
/// natively, nothing.
pub fn log(line: &str) {
    #[cfg(target_arch = "wasm32")]
    glue::log_line(line);
    #[cfg(not(target_arch = "wasm32"))]
    let _ = line;
}

/// Runs `T` natively on `args` as a node would: init, steps until the total,
/// the result. Checks that progress never goes back nor past the total.
pub fn run<T: Task>(args: &[&str]) -> Result<Vec<u8>, String> {
    let (mut task, total) = T::init(args).map_err(|e| String::from(e.message))?;
    let mut done = 0;
    while done < total {
        let now = task.step().map_err(|e| String::from(e.message))?;
        if now < done || now > total {
            return Err(alloc::format!(
                "progress {now} after {done} (total {total})"
            ));
        }
        done = now;
    }
    Ok(task.result())
}

/// Parses argument `i` of `args` as a number, or `default` when absent.
pub fn arg<N: core::str::FromStr>(args: &[&str], i: usize, default: N) -> Result<N, Error> {
    match args.get(i) {
        None => Ok(default),
        Some(text) => text
            .parse()
            .map_err(|_| Error::new("an argument is not a number")),
    }
}

/// The glue between the ABI's exports and a [`Task`]: one [`Slot`] per
/// module, made by [`export_task!`].
#[doc(hidden)]
pub mod glue {
    use super::{Error, Task};
    use alloc::vec::Vec;

    /// What a module holds between the ABI's calls.
    pub struct Slot<T> {
        args: spin::Mutex<Vec<u8>>,
        task: spin::Mutex<Option<T>>,
        result: spin::Mutex<Vec<u8>>,
    }

    impl<T: Task> Default for Slot<T> {
        fn default() -> Self {
            Self::new()
        }
    }

    impl<T: Task> Slot<T> {
        /// An empty slot (a `static`).
        pub const fn new() -> Self {
            Self {
                args: spin::Mutex::new(Vec::new()),
                task: spin::Mutex::new(None),
                result: spin::Mutex::new(Vec::new()),
            }
        }

        /// `tern_args(len)`: a buffer of `len` bytes for the arguments.
        pub fn args(&self, len: i32) -> i32 {
            let mut args = self.args.lock();
            *args = alloc::vec![0; len.max(0) as usize];
            args.as_mut_ptr() as usize as i32
        }

        /// `tern_init(len)`: the task from the arguments the node wrote.
        pub fn init(&self, len: i32) -> i64 {
            let bytes = self.args.lock();
            let bytes = &bytes[..(len.max(0) as usize).min(bytes.len())];
            let Ok(text) = core::str::from_utf8(bytes) else {
                return fail(Error::new("the arguments are not UTF-8"));
            };
            let args: Vec<&str> = text.split('\0').filter(|a| !a.is_empty()).collect();
            match T::init(&args) {
                Ok((task, total)) => {
                    *self.task.lock() = Some(task);
                    total as i64
                }
                Err(e) => fail(e),
            }
        }

        /// `tern_step()`: one step.
        pub fn step(&self) -> i64 {
            match self.task.lock().as_mut().map(T::step) {
                Some(Ok(done)) => done as i64,
                Some(Err(e)) => fail(e),
                None => fail(Error::new("step before init")),
            }
        }

        /// `tern_result()`: address and length of the result.
        pub fn result(&self) -> i64 {
            let mut result = self.result.lock();
            *result = self.task.lock().as_ref().map(T::result).unwrap_or_default();
            (result.as_ptr() as usize as i64) | ((result.len() as i64) << 32)
        }
    }

    fn fail(e: Error) -> i64 {
        super::log(e.message);
        e.code.min(-1)
    }

    // The node's `tern.log` only reads the memory range it is given, with
    // bounds checks: calling it is safe.
    #[cfg(target_arch = "wasm32")]
    #[link(wasm_import_module = "tern")]
    unsafe extern "C" {
        #[link_name = "log"]
        safe fn tern_log(ptr: i32, len: i32);
    }

    /// Hands a line to the node.
    #[cfg(target_arch = "wasm32")]
    pub fn log_line(line: &str) {
        tern_log(line.as_ptr() as usize as i32, line.len() as i32)
    }

    #[cfg(target_arch = "wasm32")]
    #[global_allocator]
    static HEAP: dlmalloc::GlobalDlmalloc = dlmalloc::GlobalDlmalloc;

    #[cfg(target_arch = "wasm32")]
    #[panic_handler]
    fn panic(info: &core::panic::PanicInfo<'_>) -> ! {
        let line = alloc::format!("panic: {info}");
        log_line(&line);
        core::arch::wasm32::unreachable()
    }
}

/// Exports task type `$t` under the ABI's names (on wasm32 only, so that the
/// same crate links natively for [`run`]).
#[macro_export]
macro_rules! export_task {
    ($t:ty) => {
        #[cfg(target_arch = "wasm32")]
        mod __tern_task_exports {
            static SLOT: $crate::glue::Slot<$t> = $crate::glue::Slot::new();

            /// ABI: a buffer for the arguments.
            #[no_mangle]
            pub extern "C" fn tern_args(len: i32) -> i32 {
                SLOT.args(len)
            }
            /// ABI: the task from its arguments; its total work units.
            #[no_mangle]
            pub extern "C" fn tern_init(len: i32) -> i64 {
                SLOT.init(len)
            }
            /// ABI: one step; the work units done so far.
            #[no_mangle]
            pub extern "C" fn tern_step() -> i64 {
                SLOT.step()
            }
            /// ABI: address and length of the result.
            #[no_mangle]
            pub extern "C" fn tern_result() -> i64 {
                SLOT.result()
            }
        }
    };
}
