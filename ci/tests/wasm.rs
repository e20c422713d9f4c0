//! Wasm tasks on QEMU nodes (`docs/wasm-tasks.md`), one boot of a PC and a
//! `virt` node on a network lab for everything:
//! - the task set's nine modules, built as users build them, go to both
//!   nodes over the control protocol; each program runs on each node in
//!   turn to the reference answer of its native build (the node checks it);
//! - what a user does: `tern task run` (run as users run it) with the two
//!   templates of `tasks/template`, built as the document says, and with a
//!   program of the set: the node's verdict, exit 0; a wrong answer, exit 1;
//! - bad modules get typed refusals and the nodes keep serving: malformed
//!   bytes, an unknown import, a start function, a step that traps, a step
//!   that never ends (the node still answers; the task cannot migrate; it is
//!   killed), memory growth past the node's cap, a checkpoint whose module
//!   the receiver lacks (which `inspect show` decodes: module, pages,
//!   globals, progress);
//! - three programs (C and Rust, one of them floating point) migrate
//!   mid-run PC → virt → PC, the module pushed by the sender, and still
//!   give their reference bit for bit;
//! - one keeps a standby replica on the virt node through a sync session;
//!   the PC's link is cut, the standby takes over and the task verifies.
//!
//! Everything is read from the nodes' typed events and task lists. Needs
//! root (the namespace), clang-19 and the wasm32 target (ci/setup.sh).

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;

use tern_ci::host_tool;
use tern_client::{hex, key_hex, random_key, NodeError};
use tern_flash::build::Workspace;
use tern_flash::Board;
use tern_lab::cluster::{Cluster, EventWatch};
use tern_protocol::{
    ModuleRefusal, NackReason, NodeEvent, Psk, Security, TaskRole, TaskStatus, Transfer,
};
use tern_tasks::{build, build_all, program, Built};

/// Longest wait for one control answer.
const ANSWER: Duration = Duration::from_secs(30);
/// Longest wait for one task of the set to end (a loaded CI machine).
const TASK: Duration = Duration::from_secs(240);

/// The nodes: a PC (index 0) and a virt (1).
const BOARDS: [Board; 2] = [Board::Pc, Board::Virt];

/// `StartTask` arguments of `built` on a node that holds it as `id`.
fn start_args(built: &Built, id: &[u8; 32]) -> Vec<String> {
    let mut args = vec![
        "wasm".into(),
        hex(id),
        "--name".into(),
        built.name.clone(),
        "--expect".into(),
        hex(built.expected.as_bytes()),
        "--".into(),
    ];
    args.extend(built.args.iter().cloned());
    args
}

/// Starts `built` on node `i`; its global id.
fn start(cluster: &Cluster, i: usize, built: &Built, id: &[u8; 32]) -> u64 {
    let args = start_args(built, id);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    cluster
        .client(i, ANSWER)
        .unwrap()
        .start_task(&args)
        .unwrap_or_else(|e| panic!("{}: {e}\n{}", built.name, cluster.consoles()))
}

/// Waits for task `task_id` to end on node `i`: whether the node verified
/// it, and its verdict.
fn finished(cluster: &Cluster, watch: &mut EventWatch, i: usize, task_id: u64) -> (bool, String) {
    watch
        .wait(cluster, i, "the task's end", TASK, |e| match e {
            NodeEvent::TaskFinished {
                task,
                verified,
                verdict,
                ..
            } if task.task_id == task_id => Some((*verified, verdict.clone())),
            _ => None,
        })
        .unwrap_or_else(|e| panic!("{e}\n{}", cluster.consoles()))
}

/// Milliseconds between task `task_id`'s start and its end on node `i`, by
/// the node's own event times.
fn run_ms(watch: &EventWatch, i: usize, task_id: u64) -> u64 {
    let at = |want_end: bool| {
        watch.history().iter().find_map(|(n, r)| match &r.event {
            NodeEvent::TaskStarted { task, .. }
                if *n == i && !want_end && task.task_id == task_id =>
            {
                Some(r.at_ms)
            }
            NodeEvent::TaskFinished { task, .. }
                if *n == i && want_end && task.task_id == task_id =>
            {
                Some(r.at_ms)
            }
            _ => None,
        })
    };
    at(true).unwrap_or(0).saturating_sub(at(false).unwrap_or(0))
}

#[test]
fn wasm_tasks_run_verify_migrate_and_fail_over_on_pc_and_virt() {
    let ws = Workspace::locate().unwrap();
    let manifest = build_all(&ws).unwrap();
    let key = random_key().unwrap();
    let mut cluster = Cluster::start("wasm", &BOARDS, Security::Key(key.clone())).unwrap();
    let mut watch = cluster.watch();

    // The nine modules to both nodes; each node names each module alike.
    let mut ids = BTreeMap::new();
    for i in 0..BOARDS.len() {
        let mut client = cluster.client(i, ANSWER).unwrap();
        for built in &manifest.tasks {
            let bytes = std::fs::read(&built.wasm).unwrap();
            let id = client.put_module(&bytes).unwrap();
            assert_eq!(*ids.entry(built.name.clone()).or_insert(id), id);
            assert!(client.has_module(&id).unwrap());
        }
    }

    // Each program on each node in turn, both nodes at once.
    println!("{:<10} {:>8} {:>8}  result", "task", "pc ms", "virt ms");
    for built in &manifest.tasks {
        let id = ids[&built.name];
        let tasks: Vec<u64> = (0..BOARDS.len())
            .map(|i| start(&cluster, i, built, &id))
            .collect();
        let mut ms = Vec::new();
        for (i, &task_id) in tasks.iter().enumerate() {
            let (verified, verdict) = finished(&cluster, &mut watch, i, task_id);
            assert!(
                verified,
                "{} on {}: {verdict}",
                built.name,
                BOARDS[i].name()
            );
            ms.push(run_ms(&watch, i, task_id));
        }
        println!(
            "{:<10} {:>8} {:>8}  {}",
            built.name, ms[0], ms[1], built.expected
        );
    }

    // What a user does: a task of their own, built from a template, and a
    // program of the set, each run with `tern task run`.
    let maze = &manifest.tasks[0];
    let mut user = templates(&ws);
    user.push(UserTask {
        name: maze.name.clone(),
        wasm: maze.wasm.clone(),
        args: maze.args.clone(),
        expected: maze.expected.clone(),
    });
    task_run_cli(&cluster, &key, &user);
    bad_modules(&mut cluster, &mut watch);
    migrations(&mut cluster, &mut watch, &ws, &ids);
    failover(&mut cluster, &mut watch, &ws, &ids);
}

/// A module a user built, with its arguments and the answer that verifies it.
struct UserTask {
    name: String,
    wasm: PathBuf,
    args: Vec<String>,
    expected: String,
}

/// The two templates of `docs/wasm-tasks.md` (`tasks/template`), built as
/// the document says: the C one with clang, the Rust one with cargo on its
/// own; their reference answers come from the same sources run natively.
fn templates(ws: &Workspace) -> Vec<UserTask> {
    let dir = ws.root.join("tasks/template");
    let out = ws.target_dir.join("template");
    std::fs::create_dir_all(&out).unwrap();
    let run = |c: &mut Command| {
        let o = c.output().unwrap();
        assert!(o.status.success(), "{c:?}: {o:?}");
        String::from_utf8(o.stdout).unwrap()
    };
    let include = ws.root.join("tasks/include");
    let c_wasm = out.join("c-task.wasm");
    run(Command::new(tern_tasks::CLANG)
        .args([
            "--target=wasm32",
            "-O2",
            "-nostdlib",
            "-Wl,--no-entry",
            "-I",
        ])
        .arg(&include)
        .arg("-o")
        .arg(&c_wasm)
        .arg(dir.join("c/task.c")));
    let native = out.join("c-task");
    run(Command::new(tern_tasks::CLANG)
        .args(["-O2", "-ffp-contract=off", "-I"])
        .arg(&include)
        .arg("-o")
        .arg(&native)
        .arg(dir.join("c/task.c"))
        .arg(include.join("tern_native.c")));
    let c_expected = run(Command::new(&native).arg("30000"));
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let rust_target = out.join("rust");
    run(Command::new(&cargo)
        .current_dir(dir.join("rust"))
        .env("CARGO_TARGET_DIR", &rust_target)
        .args([
            "build",
            "--quiet",
            "--release",
            "--target",
            "wasm32-unknown-unknown",
        ]));
    // The template's own test checks its reference answer natively.
    run(Command::new(&cargo)
        .current_dir(dir.join("rust"))
        .env("CARGO_TARGET_DIR", &rust_target)
        .args(["test", "--quiet"]));
    vec![
        UserTask {
            name: "template (C)".into(),
            wasm: c_wasm,
            args: vec!["30000".into()],
            expected: c_expected,
        },
        UserTask {
            name: "template (Rust)".into(),
            wasm: rust_target.join("wasm32-unknown-unknown/release/my_task.wasm"),
            args: vec!["300000".into()],
            expected: "longest 230631 steps 443".into(),
        },
    ]
}

/// `tern task run FILE --expect TEXT --node ADDR -- ARGS` as users run it
/// (from inside the lab's namespace) for each of `tasks`: exit 0 and the
/// node's verdict as JSON; the first once more with a wrong answer: exit 1.
fn task_run_cli(cluster: &Cluster, key: &Psk, tasks: &[UserTask]) {
    let tern = host_tool("tern", "tern").unwrap();
    let dir = tempfile::tempdir().unwrap();
    let key_file = dir.path().join("cluster.key");
    std::fs::write(&key_file, key_hex(key)).unwrap();
    let key_file = key_file.to_str().unwrap();
    let node = Cluster::control(0).to_string();
    let run = |task: &UserTask, expect: &str| {
        let mut args = vec![
            "task",
            "run",
            task.wasm.to_str().unwrap(),
            "--expect",
            expect,
            "--node",
            &node,
            "--key-file",
            key_file,
            "--timeout",
            "240",
            "--json",
            "--",
        ];
        args.extend(task.args.iter().map(String::as_str));
        cluster.lab().netns().exec(tern.to_str().unwrap(), &args)
    };
    for task in tasks {
        let out = run(task, &task.expected)
            .unwrap_or_else(|e| panic!("{}: {e}\n{}", task.name, cluster.consoles()));
        let verdict: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        assert_eq!(verdict["verified"], true, "{}: {verdict}", task.name);
        let text = verdict["verdict"].as_str().unwrap();
        assert!(text.contains(&task.expected), "{verdict}");
        println!("tern task run {}: {text}", task.name);
    }
    match run(&tasks[0], "not the answer") {
        Err(tern_lab::netlab::NetlabError::Command { status, .. }) => {
            assert_eq!(status.code(), Some(1), "{status}")
        }
        other => panic!("a wrong answer passed: {other:?}"),
    }
}

/// The counter fixture with `extra` in its step, as a module.
fn fixture(extra: &str) -> Vec<u8> {
    wat::parse_str(tern_wasm::fixtures::counter(extra)).unwrap()
}

/// The refusal of module `bytes` by node `i`.
fn refusal(cluster: &Cluster, i: usize, bytes: &[u8]) -> ModuleRefusal {
    match cluster.client(i, ANSWER).unwrap().put_module(bytes) {
        Err(NodeError::ModuleRejected { reason, .. }) => reason,
        other => panic!("{other:?}"),
    }
}

/// Starts `args` on node `i`; the task's global id.
fn start_raw(cluster: &Cluster, i: usize, args: &[String]) -> u64 {
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    cluster
        .client(i, ANSWER)
        .unwrap()
        .start_task(&args)
        .unwrap()
}

/// Bad modules and bad tasks: typed refusals, and the nodes keep serving.
fn bad_modules(cluster: &mut Cluster, watch: &mut EventWatch) {
    let (pc, virt) = (0, 1);
    assert_eq!(
        refusal(cluster, virt, b"\0asm\x01\0\0\0junk"),
        ModuleRefusal::Malformed
    );
    let import = tern_wasm::fixtures::counter("").replace(
        r#"(import "tern" "log""#,
        r#"(import "wasi_snapshot_preview1" "fd_write""#,
    );
    assert_eq!(
        refusal(cluster, virt, &wat::parse_str(&import).unwrap()),
        ModuleRefusal::UnknownImport
    );
    let start = tern_wasm::fixtures::counter("").replace(
        "(memory (export",
        "(start $begin) (func $begin) (memory (export",
    );
    assert_eq!(
        refusal(cluster, pc, &wat::parse_str(&start).unwrap()),
        ModuleRefusal::StartFunction
    );
    // A step that traps: the task ends unverified, saying so.
    let mut client = cluster.client(virt, ANSWER).unwrap();
    let trap = client.put_module(&fixture("(unreachable)")).unwrap();
    let task = start_raw(cluster, virt, &["wasm".into(), hex(&trap), "10".into()]);
    let (verified, verdict) = finished(cluster, watch, virt, task);
    assert!(!verified && verdict.contains("trap"), "{verdict}");
    // Memory growth past the node's cap (128 MiB) fails as memory.grow fails.
    let grow = client
        .put_module(&fixture(
            "(if (i32.lt_s (memory.grow (i32.const 4000)) (i32.const 0)) (then (return (i64.const -3))))",
        ))
        .unwrap();
    let task = start_raw(cluster, virt, &["wasm".into(), hex(&grow), "10".into()]);
    let (verified, verdict) = finished(cluster, watch, virt, task);
    assert!(
        !verified && verdict.contains("may not grow past"),
        "{verdict}"
    );

    // A step that never ends: the PC node keeps answering at once, the task
    // never reaches a migration point, and it can be killed.
    let endless = cluster
        .client(pc, ANSWER)
        .unwrap()
        .put_module(&fixture("(loop $forever (br $forever))"))
        .unwrap();
    let task = start_raw(cluster, pc, &["wasm".into(), hex(&endless), "10".into()]);
    let mut client = cluster.client(pc, ANSWER).unwrap();
    for _ in 0..5 {
        let rtt = client.ping().unwrap();
        assert!(rtt < Duration::from_secs(2), "ping took {rtt:?}");
        assert!(client.list().unwrap().iter().any(|t| t.task_id == task));
    }
    let to = Cluster::control(virt).to_string();
    match client.migrate(task, &to, ANSWER) {
        Err(NodeError::Refused {
            reason: NackReason::MigrationFailed,
            ..
        }) => {}
        other => panic!("{other:?}"),
    }
    let why = watch
        .wait(cluster, pc, "the failed migration", ANSWER, |e| match e {
            NodeEvent::MigrationFailed {
                task: t, reason, ..
            } if t.task_id == task => Some(reason.clone()),
            _ => None,
        })
        .unwrap();
    assert!(why.contains("no migration point"), "{why}");
    client.kill_task(task).unwrap();

    // A checkpoint whose module the receiver lacks: refused, naming it.
    let alone = fixture("(nop)");
    let module = cluster
        .client(pc, ANSWER)
        .unwrap()
        .put_module(&alone)
        .unwrap();
    let task = start_raw(
        cluster,
        pc,
        &["wasm".into(), hex(&module), "--".into(), "400000000".into()],
    );
    std::thread::sleep(Duration::from_millis(500));
    let bytes = cluster.client(pc, ANSWER).unwrap().fetch(task).unwrap();
    show_with_inspect(&bytes, &module);
    match cluster
        .client(virt, ANSWER)
        .unwrap()
        .offer(Transfer::Migrate, task, bytes)
    {
        Err(NodeError::Refused {
            reason: NackReason::MissingModule { module: m },
            ..
        }) => assert_eq!(m, module),
        other => panic!("{other:?}"),
    }
    cluster.client(pc, ANSWER).unwrap().kill_task(task).unwrap();
    let status = cluster.client(virt, ANSWER).unwrap().status().unwrap();
    assert!(status.task_kinds.contains(&"wasm".to_string()));
}

/// `inspect show --json` of a Wasm task's checkpoint `bytes` decodes its
/// module, memory pages, globals and progress.
fn show_with_inspect(bytes: &[u8], module: &[u8; 32]) {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("wasm.tck");
    std::fs::write(&file, bytes).unwrap();
    let inspect = host_tool("tern-inspect", "inspect").unwrap();
    let out = std::process::Command::new(inspect)
        .args(["show", "--json"])
        .arg(&file)
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    let show: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(show["task"]["kind"], "wasm", "{show}");
    assert!(show["progress"].as_u64().unwrap() > 0, "{show}");
    let decoded = |name: &str| {
        show["regions"]
            .as_array()
            .unwrap()
            .iter()
            .find(|r| r["name"] == name)
            .and_then(|r| r["decoded"].as_str())
            .unwrap_or_else(|| panic!("no decoded {name} region: {show}"))
            .to_string()
    };
    assert!(decoded("module").contains(&hex(module)), "{show}");
    assert!(decoded("state").contains("pages"), "{show}");
    assert!(decoded("globals").contains("mutable globals"), "{show}");
    println!("inspect show: {}; {}", decoded("state"), decoded("globals"));
}

/// Progress of task `id` as node `i` lists it, in percent, once `until`
/// holds.
fn follow(cluster: &Cluster, i: usize, id: u64, until: impl Fn(f64) -> bool) -> f64 {
    let task = cluster
        .wait_for_task(
            i,
            "the task's progress",
            TASK,
            Duration::from_millis(200),
            |tasks| {
                let t = tasks
                    .iter()
                    .find(|t| t.task_id == id && t.role == TaskRole::Owner)?;
                let pct = t.progress as f64 * 100.0 / t.progress_total.max(1) as f64;
                let ended = matches!(t.status, TaskStatus::Finished { .. });
                (ended || until(pct)).then(|| t.clone())
            },
        )
        .unwrap_or_else(|e| panic!("{e}\n{}", cluster.consoles()));
    assert!(
        !matches!(task.status, TaskStatus::Finished { .. }),
        "task {id:#x} ended before it could move: make its run longer"
    );
    task.progress as f64 * 100.0 / task.progress_total.max(1) as f64
}

/// `name`'s program with `args`, built with its reference answer.
fn program_run(ws: &Workspace, name: &str, args: &[&str]) -> Built {
    build(ws, program(name).unwrap(), Some(args)).unwrap()
}

/// Three programs migrated mid-run PC → virt → PC: still their reference.
fn migrations(
    cluster: &mut Cluster,
    watch: &mut EventWatch,
    ws: &Workspace,
    ids: &BTreeMap<String, [u8; 32]>,
) {
    let (pc, virt) = (0, 1);
    for (name, args) in [
        ("matrix", ["340", "5"].as_slice()),
        // 14 queens and 48 MiB: with 13 queens and 24 MiB the PC node,
        // unloaded, finished them while the first migration connected.
        ("13queen", ["14"].as_slice()),
        ("sha256", ["49152", "4"].as_slice()),
    ] {
        let built = program_run(ws, name, args);
        let id = ids[name];
        let task = start(cluster, pc, &built, &id);
        let mut hops = Vec::new();
        // Out at 10%, back as soon as it runs there: a pre-copy on a loaded
        // machine takes seconds, in which the task runs on (and must not end).
        for (from, to, at) in [(pc, virt, 10.0), (virt, pc, 0.0)] {
            let pct = follow(cluster, from, task, |p| p >= at);
            let report = cluster
                .client(from, ANSWER)
                .unwrap()
                .migrate(task, &Cluster::control(to).to_string(), TASK)
                .unwrap_or_else(|e| panic!("{name}: {e}\n{}", cluster.consoles()));
            hops.push(format!(
                "{} -> {} at {pct:.0}%: {} ms, downtime {} ms, {} state bytes",
                report.from_isa,
                report.to_isa,
                report.total_ms,
                report.downtime_ms,
                report.state_bytes
            ));
        }
        let (verified, verdict) = finished(cluster, watch, pc, task);
        assert!(verified, "{name}: {verdict}");
        println!("{name} {args:?}: {}; {verdict}", hops.join("; "));
    }
}

/// A standby of a Wasm task on the virt node takes over when the PC's link
/// is cut, and the task verifies there.
fn failover(
    cluster: &mut Cluster,
    watch: &mut EventWatch,
    ws: &Workspace,
    ids: &BTreeMap<String, [u8; 32]>,
) {
    let (pc, virt) = (0, 1);
    let built = program_run(ws, "huffman", &["2000000", "17"]);
    let task = start(cluster, pc, &built, &ids["huffman"]);
    let local = watch
        .wait(cluster, pc, "the started task", ANSWER, |e| match e {
            NodeEvent::TaskStarted { task: t, .. } if t.task_id == task => Some(t.local_id),
            _ => None,
        })
        .unwrap();
    cluster
        .shell(pc, &format!("sync {local} {}", Cluster::address(virt)))
        .unwrap();
    watch
        .wait(cluster, pc, "a sync", TASK, |e| match e {
            NodeEvent::Synced { task: t, .. } if t.task_id == task => Some(()),
            _ => None,
        })
        .unwrap_or_else(|e| panic!("{e}\n{}", cluster.consoles()));
    cluster.lab().set_link(pc, false).unwrap();
    let resumed = watch
        .wait(cluster, virt, "the failover", TASK, |e| match e {
            NodeEvent::FailedOver {
                task: t,
                progress,
                progress_total,
                ..
            } if t.task_id == task => Some(*progress as f64 * 100.0 / *progress_total as f64),
            _ => None,
        })
        .unwrap_or_else(|e| panic!("{e}\n{}", cluster.consoles()));
    let (verified, verdict) = finished(cluster, watch, virt, task);
    cluster.lab().set_link(pc, true).unwrap();
    assert!(verified, "huffman after failover: {verdict}");
    println!("huffman failed over to virt at {resumed:.1}%: {verdict}");
}
