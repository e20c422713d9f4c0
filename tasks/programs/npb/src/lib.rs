//! Tern Wasm task `npb`: an NPB workload (EP, IS or CG) of `tern-workloads`,
//! the very code a node runs natively for `run ep S`, driven step by step
//! in the interpreter. Arguments: `<ep|is|cg> <S|W|A|B>` (default `cg S`).
//! Result: NPB's report (sums, counts, its own verification line); a run
//! whose NPB verification fails ends with an error. Work units: the
//! workload's own steps.
#![cfg_attr(target_arch = "wasm32", no_std)]

extern crate alloc;

use alloc::boxed::Box;
use alloc::string::String;
use alloc::vec::Vec;
use tern_task::{Error, Task};
use tern_workloads::{Class, Workload};

/// The workload under way, and its report once it ends.
pub struct Npb {
    task: Box<dyn tern_migration::Task + Send>,
    /// The total the node was told at init (the workload's own).
    total: u64,
    report: Option<String>,
}

impl Task for Npb {
    fn init(args: &[&str]) -> Result<(Self, u64), Error> {
        let workload = Workload::parse(args.first().copied().unwrap_or("cg"))
            .ok_or(Error::new("unknown workload (ep, is or cg)"))?;
        let class = Class::parse(args.get(1).copied().unwrap_or("S"))
            .ok_or(Error::new("unknown class (S, W, A or B)"))?;
        let task = workload.start(class);
        let total = task.progress().total.max(1);
        let npb = Self {
            task,
            total,
            report: None,
        };
        Ok((npb, total))
    }

    fn step(&mut self) -> Result<u64, Error> {
        match self.task.step() {
            // Short of the total until NPB says it is done: reaching it ends
            // the task on the node.
            tern_migration::Step::Running => Ok(self.task.progress().done.min(self.total - 1)),
            tern_migration::Step::Finished { verified, report } => {
                if !verified {
                    tern_task::log(&report);
                    return Err(Error::new("NPB's verification failed"));
                }
                self.report = Some(report);
                Ok(self.total)
            }
        }
    }

    fn result(&self) -> Vec<u8> {
        self.report.clone().unwrap_or_default().into_bytes()
    }
}

tern_task::export_task!(crate::Npb);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn is_s_verifies_natively_and_bad_arguments_are_refused() {
        let report = String::from_utf8(tern_task::run::<Npb>(&["is", "S"]).unwrap()).unwrap();
        assert!(report.contains("VERIFICATION SUCCESSFUL"), "{report}");
        assert!(Npb::init(&["xx", "S"]).is_err());
        assert!(Npb::init(&["ep", "Q"]).is_err());
    }
}
