//! The domain model: what a user submits (tasks and their needs, batches
//! with a policy), what a node offers, and the states a task goes through.
//! Submissions are checked field by field so that every mistake comes back
//! with the path of the field it concerns (`tasks[3].memory_mb`).

use std::collections::HashSet;
use std::fmt;

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::catalogue::Catalogue;

/// A task's id (the store's row id).
pub type TaskId = i64;

/// A node's id (the store's row id).
pub type NodeId = i64;

/// Largest submission body (bytes) the API and the CLI accept.
pub const MAX_SUBMISSION_BYTES: usize = 4 << 20;

/// Most tasks in one submission.
pub const MAX_BATCH: usize = 10_000;

/// The scheduling policies, selectable per submission.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum PolicyKind {
    /// Tern's default: learned per-(program, board) times, predicted
    /// completion times, probing, live migration.
    Tern,
    /// The thesis's policy as published: memory-first for programs without
    /// history, the genetic algorithm (eq. 5-1…5-8) for the others.
    Ga,
    /// The thesis's memory-first policy alone.
    MemoryFirst,
    /// Min-min (Braun et al. 2001).
    MinMin,
    /// Max-min.
    MaxMin,
    /// Sufferage.
    Sufferage,
    /// Everything on the local node: the baseline of the speedup.
    Local,
}

impl PolicyKind {
    /// Every policy, the default first.
    pub const ALL: [PolicyKind; 7] = [
        PolicyKind::Tern,
        PolicyKind::Ga,
        PolicyKind::MemoryFirst,
        PolicyKind::MinMin,
        PolicyKind::MaxMin,
        PolicyKind::Sufferage,
        PolicyKind::Local,
    ];

    /// The name used in JSON, the CLI and the UI.
    pub fn name(self) -> &'static str {
        match self {
            PolicyKind::Tern => "tern",
            PolicyKind::Ga => "ga",
            PolicyKind::MemoryFirst => "memory-first",
            PolicyKind::MinMin => "min-min",
            PolicyKind::MaxMin => "max-min",
            PolicyKind::Sufferage => "sufferage",
            PolicyKind::Local => "local",
        }
    }

    /// The policy of a name.
    pub fn parse(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|p| p.name() == name)
    }
}

impl fmt::Display for PolicyKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// What a task needs and runs: one entry of a submission.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TaskSpec {
    /// Unique name.
    pub name: String,
    /// A program of the catalogue.
    pub program: String,
    /// Arguments passed to the program.
    pub args: Vec<String>,
    /// CPU need in cores.
    pub cpu: f64,
    /// Memory need in MB.
    pub memory_mb: u64,
    /// Whether it needs a GPU.
    pub gpu: bool,
    /// Whether the controller may place it on another node (else the local node).
    pub offload: bool,
    /// Whether it keeps a standby replica and fails over when its node dies.
    pub robust: bool,
}

impl TaskSpec {
    /// The key its execution times are learned under: the program, and its
    /// arguments when it has some (they may change the work).
    pub fn timing_key(&self) -> String {
        if self.args.is_empty() {
            self.program.clone()
        } else {
            format!("{} {}", self.program, self.args.join(" "))
        }
    }
}

/// A checked submission: its tasks and the policy that places them.
#[derive(Debug, Clone, PartialEq)]
pub struct Submission {
    /// The policy chosen for the whole submission.
    pub policy: PolicyKind,
    /// The tasks, in queue order.
    pub tasks: Vec<TaskSpec>,
}

/// One mistake in a submission, at the path of its field.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FieldError {
    /// Where: `policy`, `tasks[3].memory_mb`, or `` for the whole body.
    pub path: String,
    /// What is wrong.
    pub message: String,
}

impl fmt::Display for FieldError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.path.is_empty() {
            f.write_str(&self.message)
        } else {
            write!(f, "{}: {}", self.path, self.message)
        }
    }
}

/// Whether `name` is a valid task, program or node name.
pub fn valid_name(name: &str) -> bool {
    (1..=64).contains(&name.len())
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'))
}

/// Fields a task entry may have.
const TASK_FIELDS: [&str; 8] = [
    "name",
    "program",
    "args",
    "cpu",
    "memory_mb",
    "gpu",
    "offload",
    "robust",
];

/// Parses a submission body: a single task object, an array of tasks, or
/// `{"policy": …, "tasks": […]}`. Every mistake is reported, each with its
/// field's path; the default policy applies when none is named.
pub fn parse_submission(
    body: &[u8],
    catalogue: &Catalogue,
    default_policy: PolicyKind,
) -> Result<Submission, Vec<FieldError>> {
    let whole = |message: String| {
        vec![FieldError {
            path: String::new(),
            message,
        }]
    };
    if body.len() > MAX_SUBMISSION_BYTES {
        return Err(whole(format!(
            "the submission is {} bytes; at most {MAX_SUBMISSION_BYTES} are accepted",
            body.len()
        )));
    }
    let value: Value =
        serde_json::from_slice(body).map_err(|e| whole(format!("not valid JSON: {e}")))?;
    let mut errors = Vec::new();
    let mut policy = default_policy;
    let (items, prefix): (Vec<Value>, &str) = match value {
        Value::Array(items) => (items, "tasks"),
        Value::Object(mut map) if map.contains_key("tasks") => {
            if let Some(p) = map.remove("policy") {
                match p.as_str().and_then(PolicyKind::parse) {
                    Some(p) => policy = p,
                    None => errors.push(FieldError {
                        path: "policy".into(),
                        message: format!(
                            "unknown policy {p}; one of {}",
                            PolicyKind::ALL.map(PolicyKind::name).join(", ")
                        ),
                    }),
                }
            }
            let tasks = map.remove("tasks");
            for key in map.keys() {
                errors.push(FieldError {
                    path: key.clone(),
                    message: "unknown field (a batch has \"policy\" and \"tasks\")".into(),
                });
            }
            match tasks {
                Some(Value::Array(items)) => (items, "tasks"),
                _ => {
                    errors.push(FieldError {
                        path: "tasks".into(),
                        message: "must be an array of tasks".into(),
                    });
                    return Err(errors);
                }
            }
        }
        Value::Object(map) => (vec![Value::Object(map)], "task"),
        _ => {
            return Err(whole(
                "expected a task object, an array of tasks, or {\"policy\": …, \"tasks\": […]}"
                    .into(),
            ))
        }
    };
    if items.is_empty() {
        errors.push(FieldError {
            path: "tasks".into(),
            message: "no tasks".into(),
        });
    }
    if items.len() > MAX_BATCH {
        errors.push(FieldError {
            path: "tasks".into(),
            message: format!("{} tasks; at most {MAX_BATCH} per submission", items.len()),
        });
        return Err(errors);
    }
    let mut tasks = Vec::new();
    let mut names = HashSet::new();
    for (i, item) in items.into_iter().enumerate() {
        let path = if prefix == "task" {
            String::new()
        } else {
            format!("tasks[{i}].")
        };
        if let Some(name) = item.get("name").and_then(Value::as_str) {
            if !names.insert(name.to_string()) {
                errors.push(FieldError {
                    path: format!("{path}name"),
                    message: format!("duplicate name {name} in this submission"),
                });
            }
        }
        match parse_task(item, &path, catalogue) {
            Ok(task) => tasks.push(task),
            Err(mut e) => errors.append(&mut e),
        }
    }
    if errors.is_empty() {
        Ok(Submission { policy, tasks })
    } else {
        Err(errors)
    }
}

/// Checks one task entry.
fn parse_task(item: Value, path: &str, catalogue: &Catalogue) -> Result<TaskSpec, Vec<FieldError>> {
    let mut errors = Vec::new();
    let mut err = |field: &str, message: String| {
        errors.push(FieldError {
            path: format!("{path}{field}"),
            message,
        })
    };
    let Value::Object(map) = item else {
        err("", "a task is a JSON object".into());
        return Err(errors);
    };
    for key in map.keys() {
        if !TASK_FIELDS.contains(&key.as_str()) {
            err(
                key,
                format!("unknown field; a task has {}", TASK_FIELDS.join(", ")),
            );
        }
    }
    let name = match map.get("name") {
        Some(Value::String(n)) if valid_name(n) => n.clone(),
        Some(Value::String(_)) => {
            err("name", "1-64 letters, digits, '.', '_' or '-'".into());
            String::new()
        }
        Some(_) => {
            err("name", "must be a string".into());
            String::new()
        }
        None => {
            err("name", "required".into());
            String::new()
        }
    };
    let program = match map.get("program") {
        Some(Value::String(p)) if catalogue.get(p).is_some() => Some(p.clone()),
        Some(Value::String(p)) => {
            err(
                "program",
                format!(
                    "unknown program {p}; the catalogue has {}",
                    catalogue
                        .programs
                        .keys()
                        .cloned()
                        .collect::<Vec<_>>()
                        .join(", ")
                ),
            );
            None
        }
        Some(_) => {
            err("program", "must be a string".into());
            None
        }
        None => {
            err("program", "required".into());
            None
        }
    };
    let defaults = program.as_deref().and_then(|p| catalogue.get(p));
    let args = match map.get("args") {
        None => Vec::new(),
        Some(Value::Array(a))
            if a.len() <= 16 && a.iter().all(|v| v.as_str().is_some_and(|s| s.len() <= 256)) =>
        {
            a.iter()
                .filter_map(|v| v.as_str().map(String::from))
                .collect()
        }
        Some(_) => {
            err("args", "at most 16 strings of at most 256 bytes".into());
            Vec::new()
        }
    };
    let cpu = match map.get("cpu") {
        None => defaults.map_or(1.0, |d| d.cpu),
        Some(v) => match v.as_f64() {
            Some(c) if c > 0.0 && c <= 256.0 => c,
            _ => {
                err("cpu", "a number of cores above 0 and at most 256".into());
                0.0
            }
        },
    };
    let memory_mb = match map.get("memory_mb") {
        None => defaults.map_or(0, |d| d.memory_mb),
        Some(v) => match v.as_u64() {
            Some(m) if m > 0 && m <= 1 << 24 => m,
            _ => {
                err(
                    "memory_mb",
                    "a whole number of MB above 0 and at most 16777216".into(),
                );
                0
            }
        },
    };
    let mut flag = |field: &str, default: bool| match map.get(field) {
        None => default,
        Some(Value::Bool(b)) => *b,
        Some(_) => {
            err(field, "must be true or false".into());
            default
        }
    };
    let gpu = flag("gpu", false);
    let offload = flag("offload", true);
    let robust = flag("robust", false);
    match (errors.is_empty(), program) {
        (true, Some(program)) => Ok(TaskSpec {
            name,
            program,
            args,
            cpu,
            memory_mb,
            gpu,
            offload,
            robust,
        }),
        _ => Err(errors),
    }
}

/// A submission as JSON, the form [`parse_submission`] reads back.
pub fn submission_json(policy: PolicyKind, tasks: &[TaskSpec]) -> Value {
    let tasks = tasks
        .iter()
        .map(|t| {
            let mut m = Map::new();
            m.insert("name".into(), t.name.clone().into());
            m.insert("program".into(), t.program.clone().into());
            if !t.args.is_empty() {
                m.insert("args".into(), t.args.clone().into());
            }
            m.insert("cpu".into(), t.cpu.into());
            m.insert("memory_mb".into(), t.memory_mb.into());
            m.insert("gpu".into(), t.gpu.into());
            m.insert("offload".into(), t.offload.into());
            m.insert("robust".into(), t.robust.into());
            Value::Object(m)
        })
        .collect::<Vec<_>>();
    serde_json::json!({ "policy": policy.name(), "tasks": tasks })
}

/// What a node offers, as the scheduler sees it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct NodeSpec {
    /// Display name.
    pub name: String,
    /// Board (`pc`, `virt`, `rpi4`, …): execution times are learned per board.
    pub board: String,
    /// CPU cores.
    pub cores: f64,
    /// Memory in MB.
    pub memory_mb: u64,
    /// Whether it has a GPU.
    pub gpu: bool,
    /// Whether it is the local node (where tasks that may not be offloaded run).
    pub local: bool,
}

/// Where a task is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TaskState {
    /// Waiting: in the controller's queue or a node's queue.
    Queued,
    /// A start request is on its way to a node.
    Starting,
    /// Running on a node.
    Running,
    /// Moving to another node by live migration.
    Migrating,
    /// Finished; its result is recorded.
    Done,
    /// Finished with a failed verdict, or could not be run.
    Failed,
    /// Cancelled by the user.
    Cancelled,
}

impl TaskState {
    /// The name used in JSON and the UI.
    pub fn name(self) -> &'static str {
        match self {
            TaskState::Queued => "queued",
            TaskState::Starting => "starting",
            TaskState::Running => "running",
            TaskState::Migrating => "migrating",
            TaskState::Done => "done",
            TaskState::Failed => "failed",
            TaskState::Cancelled => "cancelled",
        }
    }

    /// The state of a name.
    pub fn parse(name: &str) -> Option<Self> {
        [
            TaskState::Queued,
            TaskState::Starting,
            TaskState::Running,
            TaskState::Migrating,
            TaskState::Done,
            TaskState::Failed,
            TaskState::Cancelled,
        ]
        .into_iter()
        .find(|s| s.name() == name)
    }

    /// Whether the task will not change any more.
    pub fn is_final(self) -> bool {
        matches!(
            self,
            TaskState::Done | TaskState::Failed | TaskState::Cancelled
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(body: &str) -> Result<Submission, Vec<FieldError>> {
        parse_submission(body.as_bytes(), &Catalogue::npb(), PolicyKind::Tern)
    }

    #[test]
    fn the_three_forms_parse_with_catalogue_defaults() {
        let one = parse(r#"{"name":"a","program":"ep-S"}"#).unwrap();
        assert_eq!(one.policy, PolicyKind::Tern);
        assert_eq!(one.tasks[0].cpu, 1.0);
        assert_eq!(one.tasks[0].memory_mb, 16);
        assert!(one.tasks[0].offload && !one.tasks[0].robust && !one.tasks[0].gpu);
        let many =
            parse(r#"[{"name":"a","program":"ep-S"},{"name":"b","program":"is-W","cpu":0.5}]"#)
                .unwrap();
        assert_eq!(many.tasks.len(), 2);
        assert_eq!(many.tasks[1].cpu, 0.5);
        let batch =
            parse(r#"{"policy":"min-min","tasks":[{"name":"a","program":"cg-S","args":["x"]}]}"#)
                .unwrap();
        assert_eq!(batch.policy, PolicyKind::MinMin);
        assert_eq!(batch.tasks[0].timing_key(), "cg-S x");
        let back = submission_json(batch.policy, &batch.tasks).to_string();
        assert_eq!(parse(&back).unwrap(), batch);
    }

    #[test]
    fn every_mistake_is_reported_at_its_field() {
        let errors = parse(
            r#"{"policy":"fastest","tasks":[
                {"name":"a","program":"ep-S","memory_mb":-1},
                {"name":"a b","program":"nope","cpu":"two","gpu":1,"colour":"red"},
                {"name":"a","program":"is-S"}]}"#,
        )
        .unwrap_err();
        let paths: Vec<&str> = errors.iter().map(|e| e.path.as_str()).collect();
        for want in [
            "policy",
            "tasks[0].memory_mb",
            "tasks[1].name",
            "tasks[1].program",
            "tasks[1].cpu",
            "tasks[1].gpu",
            "tasks[1].colour",
            "tasks[2].name",
        ] {
            assert!(paths.contains(&want), "{want} missing in {errors:?}");
        }
        let dup = errors.iter().find(|e| e.path == "tasks[2].name").unwrap();
        assert!(dup.message.contains("duplicate"), "{dup}");
    }

    #[test]
    fn malformed_and_oversized_bodies_are_refused_whole() {
        for body in ["", "{", "42", "[]", r#"{"tasks":3}"#] {
            assert!(parse(body).is_err(), "{body}");
        }
        let big = vec![b' '; MAX_SUBMISSION_BYTES + 1];
        let e = parse_submission(&big, &Catalogue::npb(), PolicyKind::Tern).unwrap_err();
        assert!(e[0].message.contains("at most"), "{e:?}");
        let many = format!(
            "[{}]",
            vec![r#"{"name":"x","program":"ep-S"}"#; MAX_BATCH + 1].join(",")
        );
        let e = parse(&many).unwrap_err();
        assert!(e[0].message.contains("per submission"), "{e:?}");
    }

    #[test]
    fn policies_and_states_round_trip_by_name() {
        for p in PolicyKind::ALL {
            assert_eq!(PolicyKind::parse(p.name()), Some(p));
            assert_eq!(serde_json::to_value(p).unwrap(), p.name());
        }
        for s in ["queued", "running", "done", "cancelled"] {
            assert_eq!(TaskState::parse(s).unwrap().name(), s);
        }
        assert!(valid_name("task-01.a_b") && !valid_name("") && !valid_name("a/b"));
    }
}
