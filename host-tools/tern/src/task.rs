//! `tern task run`: a user's Wasm task on a live node. The module (a file,
//! or one of the task set's programs by name, built here with its reference
//! answer) goes to the node over the control protocol, the task starts with
//! `StartTask` (`wasm <module> --name … --expect … -- args…`), and the
//! node's typed events tell its log lines and its end; its progress comes
//! from the node's task list. The node itself compares the result with the
//! expected one.

use std::path::Path;
use std::time::{Duration, Instant};

use serde::Serialize;
use tern_client::{hex, wasm_run_args, NodeClient, NodeError};
use tern_protocol::{NodeEvent, Security, TaskStatus};
use thiserror::Error;

/// How often the task's progress is asked for.
const PROGRESS_EVERY: Duration = Duration::from_millis(500);

/// Why a run failed.
#[derive(Debug, Error)]
pub enum TaskError {
    /// The node failed or refused.
    #[error(transparent)]
    Node(#[from] NodeError),
    /// The module file could not be read.
    #[error("reading {path}: {source}")]
    Read {
        /// The file.
        path: String,
        /// The error.
        source: std::io::Error,
    },
    /// A program of the task set did not build.
    #[error(transparent)]
    Build(#[from] tern_tasks::TasksError),
    /// The task did not end in time.
    #[error("the task did not end within {0:?}")]
    Timeout(Duration),
    /// The task left the node.
    #[error("the task left the node: {0}")]
    Left(String),
}

/// What to run.
#[derive(Debug, Clone)]
pub struct Run {
    /// The module's bytes.
    pub module: Vec<u8>,
    /// The task's name on the node.
    pub name: String,
    /// Its arguments.
    pub args: Vec<String>,
    /// The result that verifies the run (text), if known.
    pub expect: Option<String>,
}

impl Run {
    /// The run of `what`: a module file, or a program of the task set by
    /// name (built, with its reference answer for `args` — the program's
    /// default arguments when there are none).
    pub fn of(what: &str, args: Vec<String>, expect: Option<String>) -> Result<Self, TaskError> {
        let path = Path::new(what);
        if let (false, Some(program)) = (path.exists(), tern_tasks::program(what)) {
            let ws =
                tern_flash::build::Workspace::locate().map_err(tern_tasks::TasksError::from)?;
            let args_ref: Vec<&str> = args.iter().map(String::as_str).collect();
            let built = tern_tasks::build(&ws, program, (!args.is_empty()).then_some(&args_ref))?;
            let module = read(&built.wasm)?;
            return Ok(Self {
                module,
                name: program.name.into(),
                args: built.args,
                expect: expect.or(Some(built.expected)),
            });
        }
        let name = path
            .file_stem()
            .map_or_else(|| "task".into(), |s| s.to_string_lossy().into_owned());
        Ok(Self {
            module: read(path)?,
            name,
            args,
            expect,
        })
    }

    /// The `StartTask` arguments of the run of module `id`.
    pub fn start_args(&self, id: &[u8; 32]) -> Vec<String> {
        wasm_run_args(id, &self.name, self.expect.as_deref(), &self.args)
    }
}

fn read(path: &Path) -> Result<Vec<u8>, TaskError> {
    std::fs::read(path).map_err(|source| TaskError::Read {
        path: path.display().to_string(),
        source,
    })
}

/// What a run shows while it goes on.
#[derive(Debug, Clone, PartialEq)]
pub enum Progress {
    /// The module is held by the node under this identity.
    Uploaded([u8; 32]),
    /// The task started with this global id.
    Started(u64),
    /// Percent done.
    Percent(f64),
    /// A line the task logged.
    Log(String),
}

/// How a run ended.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Verdict {
    /// The task's global id.
    pub task_id: u64,
    /// The module's identity, in hex.
    pub module: String,
    /// Whether the node verified the result.
    pub verified: bool,
    /// The node's verdict line (`VERIFICATION SUCCESSFUL: result …`).
    pub verdict: String,
    /// Seconds from the start to the end.
    pub seconds: f64,
}

/// Uploads and starts `run` on `client`'s node, follows it to its end
/// (at most `timeout`), and returns the node's verdict.
pub fn run(
    client: &mut NodeClient,
    run: &Run,
    timeout: Duration,
    on_progress: &mut dyn FnMut(Progress),
) -> Result<Verdict, TaskError> {
    let id = client.put_module(&run.module)?;
    on_progress(Progress::Uploaded(id));
    let next = client.status()?.next_event;
    client.subscribe(next.saturating_sub(1))?;
    let args = run.start_args(&id);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let task_id = client.start_task(&args)?;
    on_progress(Progress::Started(task_id));
    let started = Instant::now();
    let deadline = started + timeout;
    let mut asked = started;
    loop {
        if Instant::now() >= deadline {
            return Err(TaskError::Timeout(timeout));
        }
        match client.next_event(Duration::from_millis(100)) {
            Ok(record) => match record.event {
                NodeEvent::TaskLog { task, line } if task.task_id == task_id => {
                    on_progress(Progress::Log(line))
                }
                NodeEvent::TaskFinished {
                    task,
                    verified,
                    verdict,
                    ..
                } if task.task_id == task_id => {
                    return Ok(Verdict {
                        task_id,
                        module: hex(&id),
                        verified,
                        verdict,
                        seconds: started.elapsed().as_secs_f64(),
                    })
                }
                NodeEvent::Migrated { task, to, .. } if task.task_id == task_id => {
                    return Err(TaskError::Left(format!("migrated to {to}")))
                }
                NodeEvent::TaskKilled { task, .. } if task.task_id == task_id => {
                    return Err(TaskError::Left("killed".into()))
                }
                _ => {}
            },
            Err(NodeError::Timeout { .. }) => {}
            Err(e) => return Err(e.into()),
        }
        if asked.elapsed() >= PROGRESS_EVERY {
            asked = Instant::now();
            if let Some(t) = client.list()?.into_iter().find(|t| t.task_id == task_id) {
                if matches!(t.status, TaskStatus::Running | TaskStatus::Paused) {
                    on_progress(Progress::Percent(crate::demo::percent(&t)));
                }
            }
        }
    }
}

/// Connects to `node` with `security`.
pub fn connect(node: &str, security: Security, timeout: Duration) -> Result<NodeClient, TaskError> {
    Ok(NodeClient::connect(node, security, timeout)?)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(expect: Option<&str>) -> Run {
        Run {
            module: b"\0asm\x01\0\0\0".to_vec(),
            name: "mine".into(),
            args: vec!["12".into(), "-3".into()],
            expect: expect.map(Into::into),
        }
    }

    #[test]
    fn start_args_name_the_module_the_expected_result_and_the_arguments() {
        let id = [0xab; 32];
        let args = run(Some("ok 1")).start_args(&id);
        assert_eq!(args[0], "wasm");
        assert_eq!(args[1], "ab".repeat(32));
        assert_eq!(&args[2..4], ["--name", "mine"]);
        // The expected text goes as hex: it may hold spaces.
        assert_eq!(&args[4..6], ["--expect", "6f6b2031"]);
        assert_eq!(&args[6..], ["--", "12", "-3"]);
        let args = run(None).start_args(&id);
        assert!(!args.contains(&"--expect".to_string()), "{args:?}");
        assert_eq!(&args[4..], ["--", "12", "-3"]);
    }

    #[test]
    fn a_module_file_runs_under_its_stem_and_a_missing_one_is_a_read_error() {
        let dir = std::env::temp_dir().join(format!("tern-task-test-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("mytask.wasm");
        std::fs::write(&path, b"\0asm\x01\0\0\0").unwrap();
        let r = Run::of(path.to_str().unwrap(), vec!["5".into()], Some("x".into())).unwrap();
        assert_eq!(r.name, "mytask");
        assert_eq!(r.module, b"\0asm\x01\0\0\0");
        assert_eq!(r.args, ["5"]);
        assert_eq!(r.expect.as_deref(), Some("x"));
        std::fs::remove_dir_all(&dir).unwrap();
        match Run::of(path.to_str().unwrap(), Vec::new(), None) {
            Err(TaskError::Read { path: p, .. }) => assert!(p.ends_with("mytask.wasm")),
            other => panic!("{other:?}"),
        }
    }
}
