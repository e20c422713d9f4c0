//! A Tern Wasm task: the number below a bound whose Collatz chain is the
//! longest. Arguments: `[bound]`. Result: `longest <n> steps <chain
//! length>`. Work units: the numbers tried.
//!
//! Build: `cargo build --release --target wasm32-unknown-unknown`
//! (the module is `target/wasm32-unknown-unknown/release/my_task.wasm`).
//! Reference answer: `cargo test -- --nocapture` prints it.
#![cfg_attr(target_arch = "wasm32", no_std)]

extern crate alloc;

use alloc::vec::Vec;
use tern_task::{arg, Error, Task};

/// Numbers tried per step: a few milliseconds of interpretation.
const PER_STEP: u64 = 2_000;

/// The task's whole state: it lives in the module's memory and is what a
/// checkpoint holds, so a migration resumes it exactly.
pub struct Collatz {
    bound: u64,
    next: u64,
    best: (u64, u64),
}

impl Task for Collatz {
    fn init(args: &[&str]) -> Result<(Self, u64), Error> {
        let bound: u64 = arg(args, 0, 300_000)?;
        if !(2..=100_000_000).contains(&bound) {
            return Err(Error::new("bound must be 2..=100000000"));
        }
        let task = Self {
            bound,
            next: 1,
            best: (1, 1),
        };
        Ok((task, bound - 1))
    }

    fn step(&mut self) -> Result<u64, Error> {
        let end = (self.next + PER_STEP).min(self.bound);
        for n in self.next..end {
            let (mut x, mut len) = (n, 1u64);
            while x != 1 {
                x = if x % 2 == 0 { x / 2 } else { 3 * x + 1 };
                len += 1;
            }
            if len > self.best.1 {
                self.best = (n, len);
            }
        }
        self.next = end;
        Ok(end - 1)
    }

    fn result(&self) -> Vec<u8> {
        alloc::format!("longest {} steps {}", self.best.0, self.best.1).into_bytes()
    }
}

// The ABI's exports (a path from the crate root).
tern_task::export_task!(crate::Collatz);

#[cfg(test)]
mod tests {
    #[test]
    fn reference_answer() {
        let result = tern_task::run::<super::Collatz>(&["300000"]).unwrap();
        let text = String::from_utf8(result).unwrap();
        println!("{text}");
        assert_eq!(text, "longest 230631 steps 443");
    }
}
