//! Tern Wasm task `matrix`: the product C = A B of two seeded n x n matrices
//! of f64, entry by entry in row order, and a weighted sum of C (its bits
//! show that both ISAs compute the same floating point). Arguments: `[n]
//! [seed]`. Result: `n <n> sum <value> bits <hex of its bits>`. Work units:
//! entries of C.
#![cfg_attr(target_arch = "wasm32", no_std)]

extern crate alloc;

use alloc::vec::Vec;
use tern_task::{arg, Error, Task};

/// Multiply-adds per step (at least one entry of C): a step stays a few
/// milliseconds of interpretation however large n is, so that the task
/// reaches a migration point often (a PC node's floating point is in
/// software).
const MADDS_PER_STEP: usize = 16_384;

/// The product under way.
pub struct Matrix {
    n: usize,
    a: Vec<f64>,
    b: Vec<f64>,
    /// The next entry of C, `i * n + j`.
    cell: usize,
    sum: f64,
}

/// `n * n` seeded entries in [-1, 1).
fn entries(n: usize, seed: u64) -> Vec<f64> {
    let mut s = seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1;
    (0..n * n)
        .map(|_| {
            s ^= s << 13;
            s ^= s >> 7;
            s ^= s << 17;
            (s >> 11) as f64 / (1u64 << 52) as f64 - 1.0
        })
        .collect()
}

impl Task for Matrix {
    fn init(args: &[&str]) -> Result<(Self, u64), Error> {
        let n: usize = arg(args, 0, 140)?;
        let seed: u64 = arg(args, 1, 13)?;
        if n == 0 || n > 2000 {
            return Err(Error::new("n must be 1..=2000"));
        }
        let task = Self {
            n,
            a: entries(n, seed),
            b: entries(n, seed ^ 0xabcd),
            cell: 0,
            sum: 0.0,
        };
        Ok((task, (n * n) as u64))
    }

    fn step(&mut self) -> Result<u64, Error> {
        let n = self.n;
        let end = (self.cell + (MADDS_PER_STEP / n).max(1)).min(n * n);
        for cell in self.cell..end {
            let (i, j) = (cell / n, cell % n);
            let mut c = 0.0;
            for k in 0..n {
                c += self.a[i * n + k] * self.b[k * n + j];
            }
            self.sum += c * (1 + (i + j) % 3) as f64;
        }
        self.cell = end;
        Ok(self.cell as u64)
    }

    fn result(&self) -> Vec<u8> {
        alloc::format!(
            "n {} sum {:.9} bits {:016x}",
            self.n,
            self.sum,
            self.sum.to_bits()
        )
        .into_bytes()
    }
}

tern_task::export_task!(crate::Matrix);
