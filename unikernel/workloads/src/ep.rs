//! NPB EP: Gaussian pairs by the Marsaglia polar method, counted by annulus.
//!
//! One step is one batch of 2^10 pairs, 1/64 of NPB's 2^16 (MK = 16), so
//! that a step lasts a few milliseconds even on the slowest node (the PC
//! kernel computes floating point in software): batches only cut the stream
//! of random numbers, whose pairs are accumulated in the same order, so the
//! sums are NPB's. Progress is the number of batches done out of 2^(M-10).

use crate::rand::{randlc, vranlc, A};
use crate::{rel_err, verdict, Class};
use alloc::boxed::Box;
use alloc::format;
use alloc::string::String;
use alloc::vec::Vec;
use serde::{Deserialize, Serialize};
use tern_migration::{
    describe_typed, LoadError, Progress, Restored, Snapshot, Step, Task, TaskKind, WriteError,
};

const MK: u32 = 10;
const NK: usize = 1 << MK;
const NQ: usize = 10;
const SEED: f64 = 271_828_183.0;
const EPSILON: f64 = 1.0e-8;
const NAME: &str = "npb-ep";
/// Version 2: batches of 2^10 pairs (version 1 counted batches of 2^14).
const VERSION: u32 = 2;

/// Registry entry.
pub const KIND: TaskKind = TaskKind {
    name: NAME,
    version: VERSION,
    load,
    describe,
};

/// The whole state of EP between two batches.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct State {
    class: Class,
    /// Batches done.
    batch: u64,
    sx: f64,
    sy: f64,
    /// Pairs per annulus.
    q: [u64; NQ],
}

/// An EP run.
pub struct Ep {
    s: State,
    /// a^(2·NK): the multiplier that jumps one batch ahead.
    an: f64,
    /// Scratch for one batch of uniforms (rebuilt each step, never saved).
    x: Vec<f64>,
}

/// Bytes of state a run allocates (the batch scratch; the rest is a few
/// words), the same for every class.
pub(crate) const fn state_bytes() -> u64 {
    16 * NK as u64
}

fn m(class: Class) -> u32 {
    match class {
        Class::S => 24,
        Class::W => 25,
        Class::A => 28,
        Class::B => 30,
    }
}

// NPB's published digits, kept as printed.
#[allow(clippy::excessive_precision)]
fn reference(class: Class) -> (f64, f64) {
    match class {
        Class::S => (-3.247_834_652_034_740e3, -6.958_407_078_382_297e3),
        Class::W => (-2.863_319_731_645_753e3, -6.320_053_679_109_499e3),
        Class::A => (-4.295_875_165_629_892e3, -1.580_732_573_678_431e4),
        Class::B => (4.033_815_542_441_498e4, -2.660_669_192_809_235e4),
    }
}

impl Ep {
    /// A fresh run of the given class.
    pub fn new(class: Class) -> Self {
        Self::with_state(State {
            class,
            batch: 0,
            sx: 0.0,
            sy: 0.0,
            q: [0; NQ],
        })
    }

    fn with_state(s: State) -> Self {
        let mut t = A;
        for _ in 0..=MK {
            let a = t;
            randlc(&mut t, a);
        }
        Self {
            s,
            an: t,
            x: alloc::vec![0.0; 2 * NK],
        }
    }

    fn batches(&self) -> u64 {
        1 << (m(self.s.class) - MK)
    }

    fn report(&self) -> (bool, String) {
        let (rx, ry) = reference(self.s.class);
        let ok = rel_err(self.s.sx, rx) <= EPSILON && rel_err(self.s.sy, ry) <= EPSILON;
        let gc: u64 = self.s.q.iter().sum();
        let mut out = format!(
            " EP Benchmark Completed.\n Class = {}\n Gaussian pairs = {gc}\n Sums = {:.15e} {:.15e}\n Counts:",
            self.s.class.letter(),
            self.s.sx,
            self.s.sy
        );
        for (i, q) in self.s.q.iter().enumerate() {
            out.push_str(&format!("\n {i:3} {q:15}"));
        }
        out.push_str(&format!("\n {}", verdict(ok)));
        (ok, out)
    }
}

impl Task for Ep {
    fn kind(&self) -> &'static str {
        NAME
    }
    fn version(&self) -> u32 {
        VERSION
    }
    fn step(&mut self) -> Step {
        if self.s.batch < self.batches() {
            // Seed of this batch: SEED · a^(2·NK·batch), by binary exponentiation.
            let mut t1 = SEED;
            let mut t2 = self.an;
            let mut kk = self.s.batch;
            loop {
                let ik = kk / 2;
                if 2 * ik != kk {
                    randlc(&mut t1, t2);
                }
                if ik == 0 {
                    break;
                }
                let a = t2;
                randlc(&mut t2, a);
                kk = ik;
            }
            vranlc(&mut t1, A, &mut self.x);
            for pair in self.x.chunks_exact(2) {
                let x1 = 2.0 * pair[0] - 1.0;
                let x2 = 2.0 * pair[1] - 1.0;
                let t = x1 * x1 + x2 * x2;
                if t <= 1.0 {
                    let f = libm::sqrt(-2.0 * libm::log(t) / t);
                    let (t3, t4) = (x1 * f, x2 * f);
                    let l = libm::fmax(libm::fabs(t3), libm::fabs(t4)) as usize;
                    // l < 10 always (|t3|,|t4| < sqrt(-2 ln(2^-46)) < 8); clamp anyway.
                    self.s.q[l.min(NQ - 1)] += 1;
                    self.s.sx += t3;
                    self.s.sy += t4;
                }
            }
            self.s.batch += 1;
        }
        if self.s.batch < self.batches() {
            Step::Running
        } else {
            let (verified, report) = self.report();
            Step::Finished { verified, report }
        }
    }
    fn progress(&self) -> Progress {
        Progress {
            done: self.s.batch,
            total: self.batches(),
        }
    }
    fn save<'a>(&'a self, snap: &mut Snapshot<'a>) -> Result<(), WriteError> {
        snap.typed("state", &self.s)
    }
    fn clear_dirty(&mut self) {}
}

fn load(r: Restored) -> Result<Box<dyn Task>, LoadError> {
    let s: State = r.typed("state")?;
    let t = Ep::with_state(s);
    if t.s.batch > t.batches() {
        return Err(LoadError::Inconsistent("batch beyond the end"));
    }
    Ok(Box::new(t))
}

fn describe(region: &str, bytes: &[u8]) -> Option<String> {
    (region == "state").then(|| describe_typed::<State>(bytes))
}
