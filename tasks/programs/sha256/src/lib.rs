//! Tern Wasm task `sha256`: the SHA-256 of a seeded pseudo-random stream of
//! bytes, hashed 16 KiB per step. Arguments: `[KiB] [seed]`. Result: the
//! digest in hex. Work units: KiB hashed.
#![cfg_attr(target_arch = "wasm32", no_std)]

extern crate alloc;

use alloc::vec::Vec;
use sha2::{Digest, Sha256};
use tern_task::{arg, Error, Task};

/// KiB hashed per step.
const KIB_PER_STEP: u64 = 16;

/// The hash under way.
pub struct Sha256Task {
    hasher: Sha256,
    state: u64,
    done: u64,
    total: u64,
    digest: Vec<u8>,
}

impl Task for Sha256Task {
    fn init(args: &[&str]) -> Result<(Self, u64), Error> {
        let kib: u64 = arg(args, 0, 2048)?;
        let seed: u64 = arg(args, 1, 1)?;
        if kib == 0 {
            return Err(Error::new("nothing to hash"));
        }
        let task = Self {
            hasher: Sha256::new(),
            state: seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1,
            done: 0,
            total: kib,
            digest: Vec::new(),
        };
        Ok((task, kib))
    }

    fn step(&mut self) -> Result<u64, Error> {
        let kib = KIB_PER_STEP.min(self.total - self.done);
        let mut block = [0u8; 1024];
        for _ in 0..kib {
            for word in block.chunks_exact_mut(8) {
                self.state ^= self.state << 13;
                self.state ^= self.state >> 7;
                self.state ^= self.state << 17;
                word.copy_from_slice(&self.state.to_le_bytes());
            }
            self.hasher.update(block);
        }
        self.done += kib;
        if self.done == self.total {
            let digest = self.hasher.clone().finalize();
            self.digest = digest.iter().flat_map(|b| hex_pair(*b)).collect();
        }
        Ok(self.done)
    }

    fn result(&self) -> Vec<u8> {
        self.digest.clone()
    }
}

/// The two lowercase hex digits of `b`.
fn hex_pair(b: u8) -> [u8; 2] {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    [DIGITS[usize::from(b >> 4)], DIGITS[usize::from(b & 15)]]
}

tern_task::export_task!(crate::Sha256Task);
