//! Runs a portable Tern task natively on Linux, with checkpoint and resume.
//!
//! `run-task <ep|is|cg> --class <S|W|A|B> [--stop-at <percent> --checkpoint FILE] [--resume FILE]`
//! runs the same task code the kernel runs. Exit status: 0 when the task
//! verified (or stopped and wrote its checkpoint), 1 when it finished unverified,
//! 2 on any error.

use anyhow::{bail, Context, Result};
use clap::Parser;
use std::fs::File;
use std::io::{BufReader, BufWriter};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::{SystemTime, UNIX_EPOCH};
use tern_migration::std_io::{ReadSource, WriteSink};
use tern_migration::{
    read_checkpoint, write_checkpoint, HeaderInfo, Limits, Mode, Snapshot, Step, Task,
};
use tern_workloads::{identify, registry, Class, Workload};

/// Command line.
#[derive(Parser, Debug)]
#[command(
    name = "run-task",
    about = "Run an NPB task with checkpoint and resume"
)]
struct Args {
    /// Workload: ep, is or cg.
    workload: String,
    /// NPB class: S, W, A or B (taken from the checkpoint when resuming).
    #[arg(long)]
    class: Option<String>,
    /// Stop at the first migration point at or past this percentage of progress.
    #[arg(long, requires = "checkpoint")]
    stop_at: Option<f64>,
    /// Where to write the checkpoint when stopping.
    #[arg(long, requires = "stop_at")]
    checkpoint: Option<PathBuf>,
    /// Resume from this checkpoint.
    #[arg(long)]
    resume: Option<PathBuf>,
}

/// Board name this runner puts into checkpoints.
const BOARD: &str = "linux-host";

fn main() -> ExitCode {
    match run(Args::parse()) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("run-task: error: {e:#}");
            ExitCode::from(2)
        }
    }
}

fn run(args: Args) -> Result<ExitCode> {
    let workload = Workload::parse(&args.workload)
        .with_context(|| format!("unknown workload '{}' (ep, is or cg)", args.workload))?;
    let class = match &args.class {
        Some(c) => {
            Some(Class::parse(c).with_context(|| format!("unknown class '{c}' (S, W, A or B)"))?)
        }
        None => None,
    };
    if let Some(p) = args.stop_at {
        if !(0.0..=100.0).contains(&p) {
            bail!("--stop-at must be a percentage between 0 and 100, got {p}");
        }
    }
    let (mut task, epoch): (Box<dyn Task>, u64) = match &args.resume {
        Some(path) => {
            let f = File::open(path).with_context(|| format!("opening {}", path.display()))?;
            let restored = read_checkpoint(ReadSource(BufReader::new(f)), &Limits::default())
                .with_context(|| format!("reading checkpoint {}", path.display()))?;
            let (w, c) = identify(&restored).context("the checkpoint holds no NPB workload")?;
            if w != workload || class.is_some_and(|want| want != c) {
                bail!(
                    "the checkpoint holds {} class {}, not {} class {}",
                    restored.header.task_kind,
                    c.letter(),
                    args.workload,
                    class.map_or(c.letter(), Class::letter)
                );
            }
            let h = &restored.header;
            println!(
                "resuming {} class {} at {}/{} (written on {} / {}, epoch {})",
                h.task_kind,
                c.letter(),
                h.progress,
                h.progress_total,
                h.isa,
                h.board,
                h.epoch
            );
            let epoch = h.epoch + 1;
            (
                registry().load(restored).context("rebuilding the task")?,
                epoch,
            )
        }
        None => {
            let c = class.context("--class is required unless resuming")?;
            (workload.start(c), 1)
        }
    };
    loop {
        match task.step() {
            Step::Finished { verified, report } => {
                println!("{report}");
                return Ok(if verified {
                    ExitCode::SUCCESS
                } else {
                    ExitCode::from(1)
                });
            }
            Step::Running => {
                if let (Some(pct), Some(path)) = (args.stop_at, &args.checkpoint) {
                    let p = task.progress();
                    if p.reached(pct) {
                        save(&*task, epoch, path)?;
                        println!(
                            "stopped at {}/{} ({:.1}%), checkpoint written to {}",
                            p.done,
                            p.total,
                            p.percent(),
                            path.display()
                        );
                        return Ok(ExitCode::SUCCESS);
                    }
                }
            }
        }
    }
}

/// Writes the task's checkpoint through a temporary file and a rename.
fn save(task: &dyn Task, epoch: u64, path: &Path) -> Result<()> {
    let mut snap = Snapshot::new();
    task.save(&mut snap)?;
    let created_unix_ms = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0);
    let info = HeaderInfo::for_task(task, epoch, created_unix_ms, std::env::consts::ARCH, BOARD);
    let tmp = path.with_extension(format!("tmp-{}", std::process::id()));
    let result = (|| -> Result<()> {
        let f = File::create(&tmp).with_context(|| format!("creating {}", tmp.display()))?;
        let mut sink = WriteSink(BufWriter::new(f));
        write_checkpoint(&mut sink, &info, &snap, Mode::Full)?;
        let f = sink.0.into_inner().map_err(|e| e.into_error())?;
        f.sync_all()?;
        std::fs::rename(&tmp, path).with_context(|| format!("renaming to {}", path.display()))?;
        Ok(())
    })();
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    result
}
