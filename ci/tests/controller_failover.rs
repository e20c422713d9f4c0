//! The offloading controller's node layer on real Tern nodes (QEMU: a PC,
//! the local node, and an aarch64 `virt` node on a lab bridge; needs
//! root). A small batch runs to its end with each result recorded once and
//! each task started once. Then the PC's link is cut while it runs a robust
//! task and a plain one: the robust task's standby on the aarch64 node
//! takes it over, the plain one resumes there from the last checkpoint the
//! controller fetched (at a new epoch), and when the link returns the PC's
//! stale copies stop. Each result is still recorded once, by the run the
//! controller considered current.

use std::sync::Arc;
use std::time::{Duration, Instant};

use tern_client::random_key;
use tern_controller::catalogue::Catalogue;
use tern_controller::driver::live::{in_netns, LiveConnector, Timeouts};
use tern_controller::driver::parse_tag;
use tern_controller::engine::{self, EngineConfig, Service};
use tern_controller::model::TaskState;
use tern_controller::store::TaskRow;
use tern_flash::Board;
use tern_lab::cluster::{Cluster, EventWatch};
use tern_protocol::{NodeEvent, Security};

const BOARDS: [Board; 2] = [Board::Pc, Board::Virt];

/// Waits for `done`, reading the nodes' events meanwhile; on a timeout
/// shows the controller's tasks with their logs and the nodes' consoles.
fn wait(
    what: &str,
    timeout: Duration,
    (s, cluster): (&Service, &Cluster),
    watch: &mut EventWatch,
    mut done: impl FnMut(&EventWatch) -> bool,
) {
    let t0 = Instant::now();
    while !done(watch) {
        if t0.elapsed() > timeout {
            let store = s.controller.read();
            let tasks: Vec<String> = store
                .tasks()
                .unwrap()
                .into_iter()
                .map(|t| format!("{t:?}\n  {:?}", store.task_events(t.id).unwrap()))
                .collect();
            panic!(
                "timed out waiting for {what}\n{}\n{}",
                tasks.join("\n"),
                cluster.consoles()
            );
        }
        watch.poll(cluster, Duration::from_millis(200));
    }
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
fn a_batch_runs_once_and_a_dead_nodes_tasks_fail_over_or_resume_from_checkpoints() {
    let security = Security::Key(random_key().unwrap());
    let cluster = Cluster::start("ctlfo", &BOARDS, security.clone()).unwrap();
    let mut watch = cluster.watch();
    let dir = tempfile::tempdir().unwrap();
    let config = EngineConfig {
        checkpoint_every: Some(Duration::from_secs(2)),
        ..EngineConfig::default()
    };
    let connector = LiveConnector::new(
        security,
        in_netns(cluster.lab().netns().name().into()),
        Timeouts::default(),
    );
    let s = engine::start(
        &dir.path().join("c.db"),
        config,
        Arc::new(connector),
        Catalogue::npb(),
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

    // A small batch runs to its end: each task once, each result once.
    let batch = br#"{"policy":"tern","tasks":[
        {"name":"is1","program":"is-S"},{"name":"cg1","program":"cg-S"},
        {"name":"is2","program":"is-S"},{"name":"cg2","program":"cg-S"}]}"#;
    let sub = rt.block_on(c.submit(batch.to_vec())).unwrap();
    let all_done = |ids: &[i64]| {
        let store = c.read();
        ids.iter()
            .all(|id| store.task(*id).unwrap().unwrap().state.is_final())
    };
    wait(
        "the batch",
        Duration::from_secs(180),
        (&s, &cluster),
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
            (&s, &cluster),
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
        (&s, &cluster),
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
        (&s, &cluster),
        &mut watch,
        |_| task(&s, "robust").state.is_final() && task(&s, "plain").state.is_final(),
    );
    cluster.lab().set_link(0, true).unwrap();
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
    assert_eq!(task(&s, "robust").epoch, 1, "a failover keeps the run");
    let plain_events = events(plain.id);
    assert!(
        plain_events
            .iter()
            .any(|e| e.0 == "resumed" && e.1.contains("from_checkpoint_at")),
        "{plain_events:?}"
    );
    assert_eq!(task(&s, "plain").epoch, 2, "resumed in a new epoch");
    drop(store);
    // The PC's copies, stale now, stop once it is heard again: the plain
    // one by the controller, the robust one by failback (or they ended
    // meanwhile, their results ignored).
    let plain_first = tern_controller::driver::tag(&prefix, plain.id, 1);
    wait(
        "the PC's stale copies to stop",
        Duration::from_secs(90),
        (&s, &cluster),
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
                    NodeEvent::SteppedDown { task, .. } | NodeEvent::TaskFinished { task, .. } if tagged(task, &robust_tag))
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
    s.shutdown();
}
