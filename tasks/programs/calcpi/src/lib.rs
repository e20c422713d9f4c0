//! Tern Wasm task `calcpi`: decimal digits of pi by the Rabinowitz–Wagon
//! spigot, in integers only. Arguments: `[digits]`. Result: `digits <n>
//! tail <the last 20> sum <their digit sum>`. Work units: digits.
#![cfg_attr(target_arch = "wasm32", no_std)]

extern crate alloc;

use alloc::vec::Vec;
use tern_task::{arg, Error, Task};

/// Digits per step.
const DIGITS_PER_STEP: usize = 4;

/// The spigot under way.
pub struct Pi {
    /// The mixed-radix remainders.
    a: Vec<u32>,
    /// Digits released so far.
    out: Vec<u8>,
    /// The digit held back, and the nines after it.
    held: Option<u8>,
    nines: usize,
    produced: usize,
    digits: usize,
}

impl Pi {
    fn release(&mut self, d: u8) {
        if self.out.len() < self.digits {
            self.out.push(d);
        }
    }

    /// One spigot turn: the next predigit, released with carries resolved.
    fn turn(&mut self) {
        let mut q: u64 = 0;
        for i in (1..self.a.len()).rev() {
            let x = 10 * u64::from(self.a[i]) + q * (i as u64 + 1);
            let d = 2 * i as u64 + 1;
            self.a[i] = (x % d) as u32;
            q = x / d;
        }
        let x = 10 * u64::from(self.a[0]) + q;
        self.a[0] = (x % 10) as u32;
        let predigit = (x / 10) as u8;
        match predigit {
            9 => self.nines += 1,
            10 => {
                if let Some(h) = self.held {
                    self.release(h + 1);
                }
                for _ in 0..self.nines {
                    self.release(0);
                }
                self.held = Some(0);
                self.nines = 0;
            }
            d => {
                if let Some(h) = self.held {
                    self.release(h);
                }
                for _ in 0..self.nines {
                    self.release(9);
                }
                self.held = Some(d);
                self.nines = 0;
            }
        }
        self.produced += 1;
    }
}

impl Task for Pi {
    fn init(args: &[&str]) -> Result<(Self, u64), Error> {
        let digits: usize = arg(args, 0, 1000)?;
        if digits == 0 || digits > 100_000 {
            return Err(Error::new("digits must be 1..=100000"));
        }
        let task = Self {
            a: alloc::vec![2; digits * 10 / 3 + 40],
            out: Vec::with_capacity(digits),
            held: None,
            nines: 0,
            produced: 0,
            digits,
        };
        Ok((task, digits as u64))
    }

    fn step(&mut self) -> Result<u64, Error> {
        let target = (self.out.len() + DIGITS_PER_STEP).min(self.digits);
        // Digits held back (a 9 run) come out later: turn until released,
        // with spare turns at the end flushing the last.
        while self.out.len() < target && self.produced < self.digits + 8 {
            self.turn();
        }
        if self.produced >= self.digits + 8 {
            while self.out.len() < self.digits {
                let held = self.held.take().unwrap_or(0);
                self.release(held);
            }
        }
        Ok(self.out.len() as u64)
    }

    fn result(&self) -> Vec<u8> {
        let tail = &self.out[self.out.len().saturating_sub(20)..];
        let text: alloc::string::String = tail.iter().map(|d| char::from(b'0' + d)).collect();
        let sum: u32 = tail.iter().map(|&d| u32::from(d)).sum();
        alloc::format!("digits {} tail {text} sum {sum}", self.out.len()).into_bytes()
    }
}

tern_task::export_task!(crate::Pi);
