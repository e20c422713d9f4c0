//! Tern Wasm task `dynamic`: dynamic programming, the length of the longest
//! common subsequence of two seeded strings over a 4-letter alphabet,
//! computed row by row with two rolling rows. Arguments: `[length]
//! [seed]`. Result: `lcs <length>`. Work units: rows.
#![cfg_attr(target_arch = "wasm32", no_std)]

extern crate alloc;

use alloc::vec::Vec;
use tern_task::{arg, Error, Task};

/// Rows per step.
const ROWS_PER_STEP: usize = 16;

/// The table under way.
pub struct Lcs {
    a: Vec<u8>,
    b: Vec<u8>,
    prev: Vec<u32>,
    row: usize,
}

/// `n` seeded letters of ACGT.
fn letters(n: usize, seed: u64) -> Vec<u8> {
    let mut s = seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1;
    (0..n)
        .map(|_| {
            s ^= s << 13;
            s ^= s >> 7;
            s ^= s << 17;
            b"ACGT"[(s >> 62) as usize]
        })
        .collect()
}

impl Task for Lcs {
    fn init(args: &[&str]) -> Result<(Self, u64), Error> {
        let n: usize = arg(args, 0, 1500)?;
        let seed: u64 = arg(args, 1, 11)?;
        if n == 0 || n > 100_000 {
            return Err(Error::new("the length must be 1..=100000"));
        }
        let task = Self {
            a: letters(n, seed),
            b: letters(n, seed.wrapping_add(1)),
            prev: alloc::vec![0; n + 1],
            row: 0,
        };
        Ok((task, n as u64))
    }

    fn step(&mut self) -> Result<u64, Error> {
        let end = (self.row + ROWS_PER_STEP).min(self.a.len());
        let mut cur = alloc::vec![0u32; self.b.len() + 1];
        for i in self.row..end {
            for j in 1..=self.b.len() {
                cur[j] = if self.a[i] == self.b[j - 1] {
                    self.prev[j - 1] + 1
                } else {
                    cur[j - 1].max(self.prev[j])
                };
            }
            core::mem::swap(&mut self.prev, &mut cur);
        }
        self.row = end;
        Ok(self.row as u64)
    }

    fn result(&self) -> Vec<u8> {
        alloc::format!("lcs {}", self.prev[self.b.len()]).into_bytes()
    }
}

tern_task::export_task!(crate::Lcs);
