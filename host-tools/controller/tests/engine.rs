//! The live controller on a simulated cluster: batches complete, bad input
//! gets a clear answer, a restarted controller accounts for every task and
//! runs none twice, a dead node's tasks restart or fail over.

use std::sync::Arc;
use std::time::{Duration, Instant};

use tern_controller::catalogue::Catalogue;
use tern_controller::driver::sim::SimCluster;
use tern_controller::engine::{self, EngineConfig, Service, SubmitError};
use tern_controller::model::TaskState;
use tern_controller::timings::TimingTable;

const KEY: &str = "cluster-key";

/// Three nodes: the local PC, an aarch64 node, another PC; programs run
/// 2000 times faster than measured (a few hundred ms at most).
fn cluster() -> SimCluster {
    let c = SimCluster::new(Catalogue::npb(), TimingTable::bundled(), 2000.0, 7);
    c.add_node("local:4470", "pc", "x86_64", 2.0, 512, KEY);
    c.add_node("arm:4470", "virt", "aarch64", 2.0, 1024, KEY);
    c.add_node("pc2:4470", "pc", "x86_64", 2.0, 512, KEY);
    c
}

fn config() -> EngineConfig {
    EngineConfig {
        lease: Duration::from_millis(600),
        heartbeat: Duration::from_millis(100),
        ..EngineConfig::default()
    }
}

fn start(db: &std::path::Path, c: &SimCluster) -> Service {
    engine::start(db, config(), Arc::new(c.connector(KEY)), Catalogue::npb()).unwrap()
}

async fn add_nodes(s: &Service) {
    s.controller
        .add_node("local:4470".into(), true)
        .await
        .unwrap();
    s.controller
        .add_node("arm:4470".into(), false)
        .await
        .unwrap();
    s.controller
        .add_node("pc2:4470".into(), false)
        .await
        .unwrap();
}

fn batch(prefix: &str, n: usize, policy: &str) -> Vec<u8> {
    let programs = ["is-S", "cg-S", "is-W", "ep-S", "cg-W", "ep-W"];
    let tasks: Vec<String> = (0..n)
        .map(|i| {
            format!(
                r#"{{"name":"{prefix}{i}","program":"{}"}}"#,
                programs[i % programs.len()]
            )
        })
        .collect();
    format!(r#"{{"policy":"{policy}","tasks":[{}]}}"#, tasks.join(",")).into_bytes()
}

async fn wait_for(what: &str, timeout: Duration, mut done: impl FnMut() -> bool) {
    let t0 = Instant::now();
    while !done() {
        assert!(t0.elapsed() < timeout, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn states(s: &Service) -> Vec<TaskState> {
    s.controller
        .read()
        .tasks()
        .unwrap()
        .into_iter()
        .map(|t| t.state)
        .collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn a_batch_completes_under_every_policy() {
    let dir = tempfile::tempdir().unwrap();
    let c = cluster();
    let s = start(&dir.path().join("c.db"), &c);
    add_nodes(&s).await;
    for (k, policy) in [
        "tern",
        "ga",
        "memory-first",
        "min-min",
        "max-min",
        "sufferage",
        "local",
    ]
    .iter()
    .enumerate()
    {
        let sub = s
            .controller
            .submit(batch(&format!("p{k}-"), 8, policy))
            .await
            .unwrap();
        assert_eq!(sub.tasks.len(), 8);
        assert!(sub.waiting.is_empty());
    }
    wait_for("every task done", Duration::from_secs(60), || {
        states(&s).iter().all(|t| *t == TaskState::Done)
    })
    .await;
    let store = s.controller.read();
    for t in store.tasks().unwrap() {
        assert_eq!(c.starts(t.id), 1, "{} started once", t.spec.name);
        let r = store.result(t.id).unwrap().expect("a result");
        assert!(r.ok && r.output.contains("VERIFICATION"));
    }
    // The local policy kept to the local node; the history learned pairs.
    let local_id = store
        .nodes()
        .unwrap()
        .iter()
        .find(|n| n.spec.local)
        .unwrap()
        .id;
    assert!(store
        .tasks()
        .unwrap()
        .iter()
        .filter(|t| t.spec.name.starts_with("p6-"))
        .all(|t| t.node_id == Some(local_id)));
    assert!(store
        .load_history()
        .unwrap()
        .pair_mean("is-S", "virt")
        .is_some());
    drop(store);
    s.shutdown();
}

#[tokio::test(flavor = "multi_thread")]
async fn bad_input_gets_a_clear_answer_and_changes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let c = cluster();
    let s = start(&dir.path().join("c.db"), &c);
    add_nodes(&s).await;
    // Malformed and oversized bodies.
    assert!(matches!(
        s.controller.submit(b"{not json".to_vec()).await,
        Err(SubmitError::Invalid(_))
    ));
    let big = vec![b' '; tern_controller::model::MAX_SUBMISSION_BYTES + 1];
    assert!(matches!(
        s.controller.submit(big).await,
        Err(SubmitError::Invalid(_))
    ));
    // A name already used.
    s.controller.submit(batch("x", 1, "tern")).await.unwrap();
    match s.controller.submit(batch("x", 2, "tern")).await {
        Err(SubmitError::Conflict(e)) => {
            assert_eq!(e[0].path, "tasks[0].name");
            assert!(e[0].message.contains("already used"), "{e:?}");
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(
        states(&s).len(),
        1,
        "nothing of the refused batch was stored"
    );
    // More memory than any node has: it waits, with the reason.
    let sub = s
        .controller
        .submit(br#"{"name":"huge","program":"ep-S","memory_mb":100000}"#.to_vec())
        .await
        .unwrap();
    assert_eq!(
        sub.waiting,
        vec![("huge".to_string(), "0/3 nodes: memory".to_string())]
    );
    let huge = s.controller.read().task_by_name("huge").unwrap().unwrap();
    assert_eq!(huge.reason.as_deref(), Some("0/3 nodes: memory"));
    assert_eq!(huge.state, TaskState::Queued);
    // Nodes that do not answer, or refuse the key, or are there already.
    let e = s
        .controller
        .add_node("nowhere:4470".into(), false)
        .await
        .unwrap_err();
    assert!(e.contains("does not answer"), "{e}");
    let wrong = SimCluster::new(Catalogue::npb(), TimingTable::bundled(), 2000.0, 1);
    wrong.add_node("other:4470", "pc", "x86_64", 1.0, 512, "another-key");
    let dir2 = tempfile::tempdir().unwrap();
    let s2 = engine::start(
        &dir2.path().join("c.db"),
        config(),
        Arc::new(wrong.connector(KEY)),
        Catalogue::npb(),
    )
    .unwrap();
    let e = s2
        .controller
        .add_node("other:4470".into(), false)
        .await
        .unwrap_err();
    assert!(e.contains("refused the key"), "{e}");
    assert!(s2.controller.read().nodes().unwrap().is_empty());
    s2.shutdown();
    let e = s
        .controller
        .add_node("arm:4470".into(), false)
        .await
        .unwrap_err();
    assert!(e.contains("already in the cluster"), "{e}");
    // Removing a node that runs nothing works; cancelling a done task does not.
    s.controller.cancel(huge.id).await.unwrap();
    assert!(s
        .controller
        .cancel(huge.id)
        .await
        .unwrap_err()
        .contains("already cancelled"));
    s.shutdown();
}

#[tokio::test(flavor = "multi_thread")]
async fn a_restarted_controller_accounts_for_every_task_and_runs_none_twice() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("c.db");
    let c = cluster();
    let s = start(&db, &c);
    add_nodes(&s).await;
    s.controller.submit(batch("r", 30, "tern")).await.unwrap();
    // Stop it abruptly mid-batch: some done, some running, some waiting.
    wait_for("a few done", Duration::from_secs(30), || {
        states(&s).iter().filter(|t| **t == TaskState::Done).count() >= 3
    })
    .await;
    let before = states(&s);
    s.shutdown();
    assert!(before.iter().any(|t| *t != TaskState::Done), "{before:?}");
    // Runs go on on the nodes meanwhile.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let s = start(&db, &c);
    wait_for(
        "every task done after the restart",
        Duration::from_secs(60),
        || states(&s).iter().all(|t| *t == TaskState::Done),
    )
    .await;
    let store = s.controller.read();
    let tasks = store.tasks().unwrap();
    assert_eq!(tasks.len(), 30);
    for t in &tasks {
        assert_eq!(c.starts(t.id), 1, "{} ran once", t.spec.name);
        assert!(store.result(t.id).unwrap().is_some());
    }
    drop(store);
    s.shutdown();
}

#[tokio::test(flavor = "multi_thread")]
async fn a_dead_nodes_tasks_restart_elsewhere_and_robust_ones_fail_over() {
    let dir = tempfile::tempdir().unwrap();
    let c = SimCluster::new(Catalogue::npb(), TimingTable::bundled(), 50.0, 3);
    c.add_node("local:4470", "pc", "x86_64", 1.0, 512, KEY);
    c.add_node("arm:4470", "virt", "aarch64", 2.0, 1024, KEY);
    let s = start(&dir.path().join("c.db"), &c);
    s.controller
        .add_node("local:4470".into(), true)
        .await
        .unwrap();
    s.controller
        .add_node("arm:4470".into(), false)
        .await
        .unwrap();
    let body = br#"{"policy":"min-min","tasks":[
        {"name":"plain","program":"ep-S"},
        {"name":"safe","program":"ep-S","robust":true}]}"#;
    s.controller.submit(body.to_vec()).await.unwrap();
    let running_on = |name: &str| {
        let store = s.controller.read();
        let t = store.task_by_name(name).unwrap().unwrap();
        (t.state == TaskState::Running)
            .then_some(t.node_id)
            .flatten()
    };
    wait_for("both running", Duration::from_secs(10), || {
        running_on("plain").is_some() && running_on("safe").is_some()
    })
    .await;
    let safe_node = running_on("safe").unwrap();
    let plain_there = running_on("plain") == Some(safe_node);
    let addr = s
        .controller
        .read()
        .nodes()
        .unwrap()
        .into_iter()
        .find(|n| n.id == safe_node)
        .unwrap()
        .addr;
    c.kill(&addr);
    wait_for("both done", Duration::from_secs(60), || {
        states(&s).iter().all(|t| *t == TaskState::Done)
    })
    .await;
    let store = s.controller.read();
    let safe = store.task_by_name("safe").unwrap().unwrap();
    let events: Vec<String> = store
        .task_events(safe.id)
        .unwrap()
        .into_iter()
        .map(|e| e.1)
        .collect();
    assert!(events.contains(&"failed_over".to_string()), "{events:?}");
    assert_eq!(
        c.starts(safe.id),
        1,
        "failover resumes, it does not start again"
    );
    assert_eq!(safe.epoch, 1);
    let plain = store.task_by_name("plain").unwrap().unwrap();
    if plain_there {
        assert_eq!(c.starts(plain.id), 2, "restarted once");
        assert_eq!(plain.epoch, 2);
        let outcomes: Vec<_> = store
            .runs()
            .unwrap()
            .into_iter()
            .filter(|r| r.task_id == plain.id)
            .map(|r| r.outcome)
            .collect();
        assert_eq!(
            outcomes,
            [Some("lost".to_string()), Some("finished".to_string())]
        );
    }
    drop(store);
    s.shutdown();
}
