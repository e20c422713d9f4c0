//! Tern Wasm task `hashzip`: file hashing as a backup tool does it. Seeded
//! pseudo-text "files" are each deflated (as zip stores them) and their
//! compressed bytes hashed with SHA-256, one file per step. Arguments:
//! `[files] [bytes per file] [seed]`. Result: `files <n> zipped <bytes>
//! sha256 <digest of the files' digests>`. Work units: files.
#![cfg_attr(target_arch = "wasm32", no_std)]

extern crate alloc;

use alloc::format;
use alloc::vec::Vec;
use sha2::{Digest, Sha256};
use tern_task::{arg, Error, Task};

/// Words the text is made of.
const WORDS: [&[u8]; 16] = [
    b"tern ",
    b"task ",
    b"node ",
    b"wasm ",
    b"moves ",
    b"between ",
    b"isa ",
    b"edge ",
    b"checkpoint ",
    b"replica ",
    b"the ",
    b"a ",
    b"of ",
    b"and ",
    b"runs\n",
    b"memory ",
];

/// The files under way.
pub struct HashZip {
    files: u64,
    size: usize,
    state: u64,
    done: u64,
    zipped: u64,
    digests: Sha256,
    result: Vec<u8>,
}

impl HashZip {
    fn next(&mut self) -> u64 {
        self.state ^= self.state << 13;
        self.state ^= self.state >> 7;
        self.state ^= self.state << 17;
        self.state
    }

    /// The next file's contents.
    fn file(&mut self) -> Vec<u8> {
        let mut text = Vec::with_capacity(self.size);
        while text.len() < self.size {
            let r = self.next();
            text.extend_from_slice(WORDS[(r >> 60) as usize]);
            if r & 0xff == 0 {
                text.extend_from_slice(&r.to_le_bytes());
            }
        }
        text.truncate(self.size);
        text
    }
}

impl Task for HashZip {
    fn init(args: &[&str]) -> Result<(Self, u64), Error> {
        let files: u64 = arg(args, 0, 16)?;
        let size: usize = arg(args, 1, 16384)?;
        let seed: u64 = arg(args, 2, 7)?;
        if files == 0 || size == 0 || size > 1 << 20 {
            return Err(Error::new(
                "files and their size must be 1.. and at most 1 MiB",
            ));
        }
        let task = Self {
            files,
            size,
            state: seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1,
            done: 0,
            zipped: 0,
            digests: Sha256::new(),
            result: Vec::new(),
        };
        Ok((task, files))
    }

    fn step(&mut self) -> Result<u64, Error> {
        let text = self.file();
        let zipped = miniz_oxide::deflate::compress_to_vec(&text, 6);
        self.zipped += zipped.len() as u64;
        self.digests.update(Sha256::digest(&zipped));
        self.done += 1;
        if self.done == self.files {
            let digest = self.digests.clone().finalize();
            let hex: alloc::string::String = digest.iter().map(|b| format!("{b:02x}")).collect();
            self.result =
                format!("files {} zipped {} sha256 {hex}", self.files, self.zipped).into_bytes();
        }
        Ok(self.done)
    }

    fn result(&self) -> Vec<u8> {
        self.result.clone()
    }
}

tern_task::export_task!(crate::HashZip);
