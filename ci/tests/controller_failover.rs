//! The offloading controller on real Tern nodes (QEMU: a PC, the local
//! node, and an aarch64 `virt` node on a lab bridge; needs root), in one
//! boot of the two nodes, phase after phase:
//!
//! 1. a batch of the thesis's nine Wasm programs runs to its end, each
//!    task started once (its module uploaded first where missing), each
//!    result verified by the node against the reference answer and recorded
//!    once; a program whose module the node refuses fails at once with the
//!    node's reason, started nowhere;
//! 2. the PC's link is cut while it runs a robust task and a plain one: the
//!    robust task's standby on the aarch64 node takes it over, the plain
//!    one resumes there from the last checkpoint the controller fetched (at
//!    a new epoch), and when the link returns the PC's stale copies stop;
//! 3. the PC is drained while it runs a task: the task moves to the aarch64
//!    node by live migration and finishes there, in the same epoch;
//! 4. `tern controller` itself (the binary, as users run it) is killed
//!    (SIGKILL) mid-batch and started again on the same database: every
//!    task ends done, each started once on the nodes, none twice.

use std::sync::Arc;
use std::time::{Duration, Instant};

use tern_client::random_key;
use tern_controller::catalogue::{Catalogue, Program, Runner};
use tern_controller::client::Client;
use tern_controller::driver::live::{in_netns, LiveConnector, Timeouts};
use tern_controller::driver::parse_tag;
use tern_controller::driver::wasm::{WasmModule, WasmSet};
use tern_controller::engine::{self, EngineConfig, Service};
use tern_controller::model::TaskState;
use tern_controller::sched::NodeState;
use tern_controller::store::{Store, TaskRow};
use tern_flash::Board;
use tern_lab::cluster::{Cluster, EventWatch};
use tern_protocol::{NodeEvent, Security};

const BOARDS: [Board; 2] = [Board::Pc, Board::Virt];

/// Waits for `done`, reading the nodes' events meanwhile; on a timeout
/// shows `account()` (the controller's view) and the nodes' consoles.
fn wait(
    what: &str,
    timeout: Duration,
    cluster: &Cluster,
    account: &dyn Fn() -> String,
    watch: &mut EventWatch,
    mut done: impl FnMut(&EventWatch) -> bool,
) {
    let t0 = Instant::now();
    while !done(watch) {
        if t0.elapsed() > timeout {
            panic!(
                "timed out waiting for {what}\n{}\n{}",
                account(),
                cluster.consoles()
            );
        }
        watch.poll(cluster, Duration::from_millis(200));
    }
}

/// The controller's tasks with their logs.
fn account(store: &Store) -> String {
    store
        .tasks()
        .unwrap()
        .into_iter()
        .map(|t| format!("{t:?}\n  {:?}", store.task_events(t.id).unwrap()))
        .collect::<Vec<_>>()
        .join("\n")
}

fn task(s: &Service, name: &str) -> TaskRow {
    s.controller.read().task_by_name(name).unwrap().unwrap()
}

/// The tags of the runs started on the nodes (`TaskStarted`), per task.
fn starts(watch: &EventWatch, prefix: &str, task: i64) -> Vec<String> {
    watch
        .history()
        .iter()
        .filter_map(|(_, r)| match &r.event {
            NodeEvent::TaskStarted { task: t, .. } => t.tag.clone(),
            _ => None,
        })
        .filter(|tag| parse_tag(prefix, tag).is_some_and(|(id, _)| id == task))
        .collect()
}

#[test]
fn real_nodes_run_a_batch_once_fail_over_resume_migrate_on_drain_and_survive_a_killed_controller() {
    let key = random_key().unwrap();
    let security = Security::Key(key.clone());
    let cluster = Cluster::start("ctlfo", &BOARDS, security.clone()).unwrap();
    let mut watch = cluster.watch();
    let dir = tempfile::tempdir().unwrap();
    let config = EngineConfig {
        checkpoint_every: Some(Duration::from_secs(2)),
        ..EngineConfig::default()
    };
    // The nine programs as built, and one whose module is not Wasm.
    let manifest = tern_tasks::build_all(&tern_flash::build::Workspace::locate().unwrap()).unwrap();
    let mut wasm = WasmSet::from_manifest(&manifest).unwrap();
    wasm.insert(
        "bogus",
        WasmModule {
            bytes: b"not a module".to_vec(),
            args: Vec::new(),
            expected: "nothing".into(),
        },
    );
    let mut catalogue = Catalogue::nodes();
    catalogue.programs.insert(
        "bogus".into(),
        Program {
            description: "bytes that are no module".into(),
            runner: Runner::Wasm {
                module: "bogus.wasm".into(),
            },
            cpu: 1.0,
            memory_mb: 16,
            weight: 0.0,
            timed_as: Some("is-S".into()),
        },
    );
    let connector = LiveConnector::new(
        security,
        in_netns(cluster.lab().netns().name().into()),
        Timeouts::default(),
    )
    .with_wasm(wasm);
    let s = engine::start(
        &dir.path().join("c.db"),
        config,
        Arc::new(connector),
        catalogue,
    )
    .unwrap();
    let rt = tokio::runtime::Runtime::new().unwrap();
    let c = s.controller.clone();
    let (pc, virt) = rt.block_on(async {
        let pc = c.add_node(Cluster::control(0).to_string(), true).await;
        let virt = c.add_node(Cluster::control(1).to_string(), false).await;
        (pc.unwrap(), virt.unwrap())
    });
    let prefix = c.read().run_prefix().unwrap();
    let nodes = c.read().nodes().unwrap();
    assert_eq!(
        nodes
            .iter()
            .map(|n| n.spec.board.as_str())
            .collect::<Vec<_>>(),
        ["pc", "virt"]
    );
    assert!(nodes
        .iter()
        .all(|n| n.spec.cores == 1.0 && n.spec.memory_mb > 64));

    // The nine Wasm programs run to their end: each task once, each result
    // the node's verification against the reference, recorded once.
    let batch = serde_json::json!({
        "policy": "tern",
        "tasks": tern_tasks::PROGRAMS
            .iter()
            .map(|p| serde_json::json!({"name": format!("w-{}", p.name), "program": p.name}))
            .collect::<Vec<_>>(),
    });
    let sub = rt
        .block_on(c.submit(serde_json::to_vec(&batch).unwrap()))
        .unwrap();
    assert_eq!(sub.tasks.len(), 9);
    let all_done = |ids: &[i64]| {
        let store = c.read();
        ids.iter()
            .all(|id| store.task(*id).unwrap().unwrap().state.is_final())
    };
    wait(
        "the batch",
        Duration::from_secs(180),
        &cluster,
        &|| account(&c.read()),
        &mut watch,
        |_| all_done(&sub.tasks),
    );
    for id in &sub.tasks {
        let store = c.read();
        let t = store.task(*id).unwrap().unwrap();
        let r = store.result(*id).unwrap().expect("a result");
        assert_eq!(t.state, TaskState::Done, "{t:?}");
        assert!(
            r.ok && r.output.contains("VERIFICATION SUCCESSFUL"),
            "{r:?}"
        );
        assert!(r.exec_s > 0.0, "{r:?}");
        assert_eq!(t.epoch, 1, "{t:?}");
        drop(store);
        wait(
            "the start's event",
            Duration::from_secs(10),
            &cluster,
            &|| account(&c.read()),
            &mut watch,
            |w| !starts(w, &prefix, *id).is_empty(),
        );
        assert_eq!(
            starts(&watch, &prefix, *id).len(),
            1,
            "{} started once",
            t.spec.name
        );
    }

    // A module the node refuses: the task fails at once with the node's
    // reason, and nothing starts.
    let bad = br#"{"tasks":[{"name":"bogus1","program":"bogus"}]}"#;
    rt.block_on(c.submit(bad.to_vec())).unwrap();
    wait(
        "the refused module's task to fail",
        Duration::from_secs(30),
        &cluster,
        &|| account(&c.read()),
        &mut watch,
        |_| task(&s, "bogus1").state.is_final(),
    );
    let bogus = task(&s, "bogus1");
    assert_eq!(bogus.state, TaskState::Failed, "{bogus:?}");
    let why = bogus.reason.clone().unwrap_or_default();
    assert!(
        why.contains("refused bogus's module") && why.contains("Malformed"),
        "{why}"
    );
    assert_eq!(bogus.epoch, 1, "tried once: {bogus:?}");
    assert!(starts(&watch, &prefix, bogus.id).is_empty());

    // Both on the PC (memory-first: the local node while its memory lasts;
    // half a core each, so both start at once).
    let pair = br#"{"policy":"memory-first","tasks":[
        {"name":"robust","program":"cg-W","cpu":0.5,"robust":true},
        {"name":"plain","program":"cg-W","cpu":0.5}]}"#;
    rt.block_on(c.submit(pair.to_vec())).unwrap();
    let (robust, plain) = (task(&s, "robust"), task(&s, "plain"));
    let robust_tag = tern_controller::driver::tag(&prefix, robust.id, 1);
    wait(
        "both running on the PC, a checkpoint of the plain one, a sync of the robust one",
        Duration::from_secs(120),
        &cluster,
        &|| account(&c.read()),
        &mut watch,
        |w| {
            let on_pc = |t: &TaskRow| t.state == TaskState::Running && t.node_id == Some(pc);
            let synced = w.history().iter().any(|(i, r)| {
                *i == 0
                    && matches!(&r.event, NodeEvent::Synced { task, .. } if task.tag.as_deref() == Some(&robust_tag))
            });
            on_pc(&task(&s, "robust"))
                && on_pc(&task(&s, "plain"))
                && c.read().checkpoint(plain.id).unwrap().is_some()
                && synced
        },
    );
    let checkpoint = c.read().checkpoint(plain.id).unwrap().unwrap();
    assert!(checkpoint.progress > 0.0, "{checkpoint:?}");
    // The PC falls silent.
    cluster.lab().set_link(0, false).unwrap();
    wait(
        "both done on the aarch64 node",
        Duration::from_secs(240),
        &cluster,
        &|| account(&c.read()),
        &mut watch,
        |_| task(&s, "robust").state.is_final() && task(&s, "plain").state.is_final(),
    );
    cluster.lab().set_link(0, true).unwrap();
    // The watch's stream from the PC went silent with its link (a cut
    // connection that is only read never learns that it broke): a new watch
    // reads the nodes' logs again from their start.
    watch = cluster.watch();
    let store = c.read();
    for name in ["robust", "plain"] {
        let t = store.task_by_name(name).unwrap().unwrap();
        let r = store.result(t.id).unwrap().expect("a result");
        assert!(r.ok && r.node_id == virt, "{name}: {r:?}");
        assert_eq!(r.epoch, t.epoch, "{name}");
    }
    let events = |id| -> Vec<(String, String)> {
        store
            .task_events(id)
            .unwrap()
            .into_iter()
            .map(|e| (e.1, e.2))
            .collect()
    };
    let robust_events = events(robust.id);
    assert!(
        robust_events.iter().any(|e| e.0 == "failed_over"),
        "{robust_events:?}"
    );
    assert_eq!(
        store.task(robust.id).unwrap().unwrap().epoch,
        1,
        "a failover keeps the run"
    );
    let plain_events = events(plain.id);
    assert!(
        plain_events
            .iter()
            .any(|e| e.0 == "resumed" && e.1.contains("from_checkpoint_at")),
        "{plain_events:?}"
    );
    assert_eq!(
        store.task(plain.id).unwrap().unwrap().epoch,
        2,
        "resumed in a new epoch"
    );
    drop(store);
    // The PC's copies, stale now, stop once it is heard again: by the
    // controller, the robust one perhaps by failback first (or they ended
    // meanwhile, their results ignored).
    let plain_first = tern_controller::driver::tag(&prefix, plain.id, 1);
    wait(
        "the PC's stale copies to stop",
        Duration::from_secs(90),
        &cluster,
        &|| account(&c.read()),
        &mut watch,
        |w| {
            let pc_event = |pick: &dyn Fn(&NodeEvent) -> bool| {
                w.history().iter().any(|(i, r)| *i == 0 && pick(&r.event))
            };
            let tagged = |t: &tern_protocol::TaskRef, tag: &str| t.tag.as_deref() == Some(tag);
            pc_event(&|e| {
                matches!(e,
                NodeEvent::TaskKilled { task, .. } | NodeEvent::TaskFinished { task, .. } if tagged(task, &plain_first))
            }) && pc_event(&|e| {
                matches!(e,
                    NodeEvent::SteppedDown { task, .. } | NodeEvent::TaskKilled { task, .. } | NodeEvent::TaskFinished { task, .. } if tagged(task, &robust_tag))
            })
        },
    );
    let store = c.read();
    for t in [&robust, &plain] {
        assert_eq!(
            store.result(t.id).unwrap().unwrap().node_id,
            virt,
            "the result stays the current run's"
        );
    }
    drop(store);

    // 3. The PC, heard again, is drained while it runs a task: the task
    // leaves by live migration (same run, same epoch) and ends on the
    // aarch64 node.
    wait(
        "the PC up again",
        Duration::from_secs(60),
        &cluster,
        &|| account(&c.read()),
        &mut watch,
        |_| {
            c.read()
                .nodes()
                .unwrap()
                .iter()
                .all(|n| n.state == NodeState::Up)
        },
    );
    let one = br#"{"policy":"memory-first","tasks":[{"name":"drained","program":"cg-W"}]}"#;
    rt.block_on(c.submit(one.to_vec())).unwrap();
    wait(
        "the task running on the PC",
        Duration::from_secs(60),
        &cluster,
        &|| account(&c.read()),
        &mut watch,
        |_| {
            let t = task(&s, "drained");
            t.state == TaskState::Running && t.node_id == Some(pc) && t.progress > 0.0
        },
    );
    rt.block_on(c.drain(pc)).unwrap();
    wait(
        "the drained task's end",
        Duration::from_secs(180),
        &cluster,
        &|| account(&c.read()),
        &mut watch,
        |_| task(&s, "drained").state.is_final(),
    );
    let drained = task(&s, "drained");
    let store = c.read();
    let r = store.result(drained.id).unwrap().expect("a result");
    assert!(r.ok && r.node_id == virt && r.epoch == 1, "{r:?}");
    let moves: Vec<_> = store
        .migrations()
        .unwrap()
        .into_iter()
        .filter(|m| m.task_id == drained.id)
        .collect();
    assert!(
        moves.len() == 1
            && moves[0].from_node == pc
            && moves[0].to_node == virt
            && moves[0].ok == Some(true),
        "{moves:?}"
    );
    drop(store);
    assert_eq!(
        starts(&watch, &prefix, drained.id).len(),
        1,
        "migrated, not restarted"
    );
    let drained_tag = tern_controller::driver::tag(&prefix, drained.id, 1);
    assert!(
        watch.history().iter().any(|(i, r)| *i == 1
            && matches!(&r.event, NodeEvent::TaskArrived { task, .. } if task.tag.as_deref() == Some(&drained_tag))),
        "the task arrived on the aarch64 node"
    );
    s.shutdown();

    // 4. `tern controller` killed mid-batch and started again on its
    // database (a new one: its runs carry their own prefix).
    let tern = tern_ci::host_tool("tern", "tern").unwrap();
    let key_file = dir.path().join("key");
    std::fs::write(&key_file, tern_client::key_hex(&key)).unwrap();
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let db = dir.path().join("killed.db");
    let log = dir.path().join("controller.log");
    let start_controller = || {
        let out = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log)
            .unwrap();
        std::process::Command::new(&tern)
            .arg("controller")
            .args(["--listen", &format!("127.0.0.1:{port}")])
            .arg("--db")
            .arg(&db)
            .arg("--key-file")
            .arg(&key_file)
            .args(["--netns", cluster.lab().netns().name()])
            .args(["--checkpoint-every", "2"])
            .stdout(out.try_clone().unwrap())
            .stderr(out)
            .spawn()
            .unwrap()
    };
    let api = Client::new(&format!("http://127.0.0.1:{port}"), None);
    let logged = || std::fs::read_to_string(&log).unwrap_or_default();
    let mut child = start_controller();
    wait(
        "the controller's API",
        Duration::from_secs(30),
        &cluster,
        &logged,
        &mut watch,
        |_| api.nodes().is_ok(),
    );
    api.add_node(&Cluster::control(0).to_string(), true)
        .unwrap();
    api.add_node(&Cluster::control(1).to_string(), false)
        .unwrap();
    let batch = br#"{"policy":"tern","tasks":[
        {"name":"k1","program":"cg-S"},{"name":"k2","program":"is-W"},
        {"name":"k3","program":"cg-W"},{"name":"k4","program":"cg-S"},
        {"name":"k5","program":"is-S"},{"name":"k6","program":"cg-W"}]}"#;
    let sub = api.submit(batch.to_vec()).unwrap();
    let states = || -> Vec<TaskState> {
        api.tasks()
            .map(|ts| ts.into_iter().map(|t| t.state).collect())
            .unwrap_or_default()
    };
    wait(
        "one task done and one running",
        Duration::from_secs(180),
        &cluster,
        &logged,
        &mut watch,
        |_| {
            let st = states();
            st.contains(&TaskState::Done) && st.contains(&TaskState::Running)
        },
    );
    child.kill().unwrap();
    child.wait().unwrap();
    let mut child = start_controller();
    wait(
        "the batch's end after the restart",
        Duration::from_secs(300),
        &cluster,
        &logged,
        &mut watch,
        |_| {
            let st = states();
            st.len() == sub.tasks.len() && st.iter().all(|s| s.is_final())
        },
    );
    child.kill().unwrap();
    child.wait().unwrap();
    let store = Store::open(&db).unwrap();
    let prefix = store.run_prefix().unwrap();
    for id in &sub.tasks {
        let t = store.task(*id).unwrap().unwrap();
        let r = store.result(*id).unwrap().expect("a result");
        assert!(t.state == TaskState::Done && r.ok, "{t:?} {r:?}");
        assert_eq!(t.epoch, 1, "never started again: {t:?}");
        assert_eq!(
            starts(&watch, &prefix, *id).len(),
            1,
            "{} started once on the nodes\n{}",
            t.spec.name,
            logged()
        );
    }
}
