//! NPB workloads as migratable Tern tasks.
//!
//! EP, IS and CG from the NAS Parallel Benchmarks 3.x, written as state machines
//! whose steps last a few milliseconds, whose state is all in regions, and whose
//! floating-point results are bit-identical on x86_64 and aarch64 (no fused
//! multiply-add, `libm` for every transcendental function). Each verifies its
//! result against NPB's published values.
#![no_std]
#![forbid(unsafe_code)]

extern crate alloc;

mod cg;
mod ep;
mod is;
mod rand;

use alloc::boxed::Box;
use alloc::string::String;
use alloc::vec::Vec;
use serde::{Deserialize, Serialize};
use tern_migration::{NewTask, Registry, Restored, ResumeError, Task, TaskCatalog, TaskPlan};

/// NPB problem class.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Class {
    /// Sample size.
    S,
    /// Workstation size.
    W,
    /// Class A.
    A,
    /// Class B.
    B,
}

impl Class {
    /// Parses `S`, `W`, `A` or `B` (either case).
    pub fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "S" | "s" => Self::S,
            "W" | "w" => Self::W,
            "A" | "a" => Self::A,
            "B" | "b" => Self::B,
            _ => return None,
        })
    }
    /// The class letter.
    pub fn letter(self) -> char {
        match self {
            Self::S => 'S',
            Self::W => 'W',
            Self::A => 'A',
            Self::B => 'B',
        }
    }
}

/// The benchmarks available as tasks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Workload {
    /// Embarrassingly parallel: Gaussian pairs.
    Ep,
    /// Integer sort: bucket sort of keys.
    Is,
    /// Conjugate gradient: smallest eigenvalue of a sparse matrix.
    Cg,
}

impl Workload {
    /// Parses `ep`, `is` or `cg`.
    pub fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "ep" | "EP" => Self::Ep,
            "is" | "IS" => Self::Is,
            "cg" | "CG" => Self::Cg,
            _ => return None,
        })
    }
    /// The short name `parse` accepts: `ep`, `is` or `cg`.
    pub fn name(self) -> &'static str {
        match self {
            Self::Ep => "ep",
            Self::Is => "is",
            Self::Cg => "cg",
        }
    }
    /// Bytes of memory a run of `class` allocates for its state, so that a
    /// node can refuse a run that would not fit before starting it.
    pub fn state_bytes(self, class: Class) -> u64 {
        match self {
            Self::Ep => ep::state_bytes(),
            Self::Is => is::state_bytes(class),
            Self::Cg => cg::state_bytes(class),
        }
    }
    /// Starts a fresh task of this workload and class (`Send`: a Wasm
    /// build keeps it in a `static`, `tasks/programs/npb`).
    pub fn start(self, class: Class) -> Box<dyn Task + Send> {
        match self {
            Self::Ep => Box::new(ep::Ep::new(class)),
            Self::Is => Box::new(is::Is::new(class)),
            Self::Cg => Box::new(cg::Cg::new(class)),
        }
    }
}

/// A registry holding every workload's task kind.
pub fn registry() -> Registry {
    let mut r = Registry::new();
    r.register(ep::KIND);
    r.register(is::KIND);
    r.register(cg::KIND);

    r
}

/// Formats NPB's verdict line.
fn verdict(ok: bool) -> &'static str {
    if ok {
        "VERIFICATION SUCCESSFUL"
    } else {
        "VERIFICATION FAILED"
    }
}

/// The outcome of one step of a phased workload (IS, CG): a state found
/// inconsistent (a crafted checkpoint) ends the run unverified; the last
/// phase ends it with the workload's own report; otherwise it goes on.
fn phased_step(
    label: &str,
    broken: Option<&'static str>,
    done: bool,
    report: impl FnOnce() -> (bool, String),
) -> tern_migration::Step {
    if let Some(why) = broken {
        return tern_migration::Step::Finished {
            verified: false,
            report: alloc::format!(" {label}: inconsistent state ({why})\n {}", verdict(false)),
        };
    }
    if done {
        let (verified, report) = report();
        tern_migration::Step::Finished { verified, report }
    } else {
        tern_migration::Step::Running
    }
}

/// Relative error as NPB computes it.
fn rel_err(got: f64, want: f64) -> f64 {
    libm::fabs((got - want) / want)
}

/// The class every workload stores first in its `state` region.
#[derive(Deserialize)]
struct ClassOnly {
    class: Class,
}

/// Which workload and class a validated checkpoint holds, if it is one of ours.
pub fn identify(r: &tern_migration::Restored) -> Option<(Workload, Class)> {
    let w = match r.header.task_kind.as_str() {
        "npb-ep" => Workload::Ep,
        "npb-is" => Workload::Is,
        "npb-cg" => Workload::Cg,
        _ => return None,
    };
    let c: ClassOnly = r.typed("state").ok()?;
    Some((w, c.class))
}

/// The NPB workloads as a node's task catalog: `run <ep|is|cg> <S|W|A|B>`,
/// and every NPB checkpoint resumed.
#[derive(Debug, Clone, Copy, Default)]
pub struct NpbCatalog;

impl NpbCatalog {
    /// The workload and class `args` name.
    fn parse(args: &[&str]) -> Result<(Workload, Class), String> {
        let [workload, class] = args else {
            return Err(alloc::format!(
                "{} expected",
                <NpbCatalog as TaskCatalog>::usage(&NpbCatalog)
            ));
        };
        let w = Workload::parse(workload)
            .ok_or_else(|| alloc::format!("unknown workload '{workload}' (ep, is or cg)"))?;
        let c = Class::parse(class)
            .ok_or_else(|| alloc::format!("unknown class '{class}' (S, W, A or B)"))?;
        Ok((w, c))
    }
}

/// How messages name an NPB task (`is S`).
fn task_name(workload: Workload, class: Class) -> String {
    alloc::format!("{} {}", workload.name(), class.letter())
}

impl TaskCatalog for NpbCatalog {
    fn usage(&self) -> &str {
        "<ep|is|cg> <S|W|A|B>"
    }

    fn plan(&self, args: &[&str]) -> Result<TaskPlan, String> {
        let (w, c) = Self::parse(args)?;
        Ok(TaskPlan {
            name: task_name(w, c),
            state_bytes: w.state_bytes(c),
        })
    }

    fn start(&self, args: &[&str]) -> Result<NewTask, String> {
        let (w, c) = Self::parse(args)?;
        Ok(NewTask {
            name: task_name(w, c),
            task: w.start(c),
        })
    }

    fn resume(&self, restored: Restored) -> Result<NewTask, ResumeError> {
        let (w, c) =
            identify(&restored).ok_or("the checkpoint holds no NPB workload known here")?;
        let task = registry()
            .load(restored)
            .map_err(|e| alloc::format!("cannot resume: {e}"))?;
        Ok(NewTask {
            name: task_name(w, c),
            task,
        })
    }

    fn kinds(&self) -> Vec<(String, u32)> {
        registry()
            .kinds()
            .iter()
            .map(|k| (k.name.into(), k.version))
            .collect()
    }
}
