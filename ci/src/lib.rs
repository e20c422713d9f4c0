//! The system tests' own helpers: host tools built and run as users run
//! them. The QEMU harness itself (nodes, clusters, the network lab) is
//! `tern-lab`; this crate holds tests and benchmarks only, and nothing
//! depends on it.

use std::collections::HashMap;
use std::path::PathBuf;
use std::process::{Command, ExitStatus};
use std::sync::{Mutex, OnceLock};

use tern_flash::build::Workspace;
use tern_flash::FlashError;
use thiserror::Error;

/// Why a host tool could not be built or run.
#[derive(Debug, Error)]
pub enum ToolError {
    /// The workspace was not found.
    #[error(transparent)]
    Flash(#[from] FlashError),
    /// Spawning or reading failed.
    #[error("host tool i/o: {0}")]
    Io(#[from] std::io::Error),
    /// A host tool of the workspace did not build.
    #[error("building {package} ({bin}) failed: {status}")]
    ToolBuild {
        /// The tool's package.
        package: String,
        /// The binary.
        bin: String,
        /// cargo's exit status.
        status: ExitStatus,
    },
    /// A host tool ran and failed.
    #[error("{command} failed ({status}):\n{output}")]
    ToolFailed {
        /// The command line.
        command: String,
        /// Its exit status.
        status: ExitStatus,
        /// Its standard output and error.
        output: String,
    },
}

/// Builds (once per test process) the binary `bin` of the workspace's host
/// tool package `package` (e.g. `tern-inspect`, `inspect`) and returns its
/// path, so that tests run the tool exactly as users do. It is built in a
/// target directory of its own (`<target>/tools`): the cargo running the
/// tests holds the lock on the main one.
pub fn host_tool(package: &str, bin: &str) -> Result<PathBuf, ToolError> {
    static BUILT: OnceLock<Mutex<HashMap<String, PathBuf>>> = OnceLock::new();
    let built = BUILT.get_or_init(Default::default);
    let mut built = built
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner());
    if let Some(path) = built.get(bin) {
        return Ok(path.clone());
    }
    let workspace = Workspace::locate()?;
    let target_dir = workspace.target_dir.join("tools");
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let status = Command::new(cargo)
        .current_dir(&workspace.root)
        .env("CARGO_TARGET_DIR", &target_dir)
        .args(["build", "--quiet", "-p", package, "--bin", bin])
        .status()?;
    if !status.success() {
        return Err(ToolError::ToolBuild {
            package: package.into(),
            bin: bin.into(),
            status,
        });
    }
    let path = target_dir.join("debug").join(bin);
    built.insert(bin.into(), path.clone());
    Ok(path)
}

/// What `tern demo` printed and the report it wrote.
pub struct DemoRun {
    /// Its standard output: the account a user reads.
    pub stdout: String,
    /// The JSON report (`--report FILE`).
    pub report: Vec<u8>,
}

/// Runs `tern demo ARGS --report FILE` exactly as users run it (the README's
/// main job; needs root), and returns what it printed and reported.
pub fn run_demo(args: &[&str]) -> Result<DemoRun, ToolError> {
    let tern = host_tool("tern", "tern")?;
    let dir = tempfile::tempdir()?;
    let report = dir.path().join("report.json");
    let out = Command::new(tern)
        .arg("demo")
        .args(args)
        .arg("--report")
        .arg(&report)
        .output()?;
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    if !out.status.success() {
        return Err(ToolError::ToolFailed {
            command: format!("tern demo {}", args.join(" ")),
            status: out.status,
            output: format!("{stdout}\n{}", String::from_utf8_lossy(&out.stderr)),
        });
    }
    Ok(DemoRun {
        stdout,
        report: std::fs::read(&report)?,
    })
}

/// One task run on a node, as the node's own events tell it.
#[derive(Debug, Clone)]
pub struct TimedRun {
    /// Between its `TaskStarted` and `TaskFinished` events (their `at_ms`
    /// stamps: no host polling counted); `None` if the subscription missed
    /// the start.
    pub time: Option<std::time::Duration>,
    /// Whether the node verified it.
    pub verified: bool,
    /// The node's verdict.
    pub verdict: String,
}

/// Starts `args` on node `node` of `cluster` (a `StartTask`, e.g. `["ep",
/// "S"]` or `["wasm", MODULE, …]`) and waits at most `timeout` for its end.
pub fn timed_run(
    cluster: &tern_lab::cluster::Cluster,
    node: usize,
    args: &[&str],
    timeout: std::time::Duration,
) -> Result<TimedRun, tern_lab::cluster::ClusterError> {
    use tern_protocol::NodeEvent;
    let mut client = cluster.client(node, std::time::Duration::from_secs(30))?;
    let next = client.status()?.next_event;
    client.subscribe(next.saturating_sub(1))?;
    let task_id = client.start_task(args)?;
    let mut started = None;
    let (finished, verified, verdict) =
        client.wait_event(timeout, |record| match &record.event {
            NodeEvent::TaskStarted { task, .. } if task.task_id == task_id => {
                started = Some(record.at_ms);
                None
            }
            NodeEvent::TaskFinished {
                task,
                verified,
                verdict,
                ..
            } if task.task_id == task_id => Some((record.at_ms, *verified, verdict.clone())),
            _ => None,
        })?;
    Ok(TimedRun {
        time: started.map(|at| std::time::Duration::from_millis(finished.saturating_sub(at))),
        verified,
        verdict,
    })
}

/// Where a migration's time went, as the benches print it: why its
/// pre-copy stopped and its stage times (ms, summed over its rounds).
pub fn migration_stages(report: &tern_protocol::MigrationReport) -> String {
    let s = &report.stages;
    let ms = |us: u64| us as f64 / 1e3;
    format!(
        "stop: {:?} (limit {} ms); stages ms: capture {:.1}, hash {:.1}, compress {:.1}, seal {:.1}, send {:.1}, check {:.1}, rebuild {:.1}",
        report.stop,
        report.downtime_limit_ms,
        ms(s.capture_us),
        ms(s.hash_us),
        ms(s.compress_us),
        ms(s.seal_us),
        ms(s.send_us),
        ms(s.check_us),
        ms(s.rebuild_us),
    )
}
