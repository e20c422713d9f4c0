//! Soak: two `virt` nodes on a link that follows a real bandwidth trace (the
//! first of `../shared/traces/dev`, through tern-lab's shaper) run round after
//! round of: an NPB EP task started on one node, a sync session to the other
//! (at least one sync acknowledged), the task migrated to the other node and
//! back while it runs, then followed to its end, verified, and removed. After
//! every round both nodes' heaps and control sockets are read through the
//! node status query.
//!
//! Checked: every task finishes with NPB's verification passed; once the
//! warm-up rounds are over, neither node's heap use grows beyond a small
//! allowance; at the end neither node lists a task or a replica (the owner
//! tells the nodes that hold a replica of a task when it ends:
//! `TaskEnded`, `docs/protocol.md`), and each node's control service holds
//! as many TCP sockets as before the first round (its listeners).
//!
//! The reduced form (`TERN_SOAK_ROUNDS`, default 4, about two minutes) runs
//! in CI; the full form is, e.g.,
//! `TERN_SOAK_ROUNDS=200 cargo test -p tern-ci --test soak -- --nocapture`
//! (figures in `docs/benchmarks.md`, "Soak"). Needs root (network namespace).

use std::path::Path;
use std::time::{Duration, Instant};

use tern_client::random_key;
use tern_flash::Board;
use tern_lab::cluster::Cluster;
use tern_lab::shaping::TraceShaper;
use tern_lab::trace;
use tern_protocol::{NodeEvent, NodeStatus, Security, TaskRole, TaskStatus};

const ANSWER: Duration = Duration::from_secs(10);
const POLL: Duration = Duration::from_millis(300);
/// Longest a migration, a first sync or a task's end may take.
const STEP: Duration = Duration::from_secs(120);
/// Rounds before the heap must stop growing (first buffers, tables, caches).
const WARM_UP: usize = 2;
/// Heap growth tolerated after the warm-up, per node (allocator slack).
const ALLOWANCE: u64 = 256 << 10;

/// Longest the nodes may take to drop replicas and close sockets once the
/// last task is removed.
const SETTLE: Duration = Duration::from_secs(60);

/// Heap bytes in use on a node.
fn used(status: &NodeStatus) -> u64 {
    status.heap_bytes - status.heap_free_bytes
}

fn rounds() -> usize {
    std::env::var("TERN_SOAK_ROUNDS")
        .ok()
        .and_then(|n| n.parse().ok())
        .unwrap_or(4)
}

/// Both nodes' status.
fn statuses(cluster: &Cluster) -> [NodeStatus; 2] {
    [0, 1].map(|i| cluster.client(i, ANSWER).unwrap().status().unwrap())
}

/// One round: start on `owner`, sync to the other node, migrate there and
/// back, run to the end; returns the syncs and migrations it made.
fn round(cluster: &mut Cluster, owner: usize, n: usize) -> (usize, usize) {
    let peer = 1 - owner;
    let mut watch = cluster.watch_from_now().unwrap();
    let id = cluster
        .client(owner, ANSWER)
        .unwrap()
        .start_tagged(&["ep", "W"], Some(&format!("soak-{n}")))
        .unwrap();
    let local = watch
        .wait(cluster, owner, "the started task", ANSWER, |e| match e {
            NodeEvent::TaskStarted { task, .. } if task.task_id == id => Some(task.local_id),
            _ => None,
        })
        .unwrap();
    let standby = Cluster::control(peer).to_string();
    let answer = cluster
        .shell(owner, &format!("sync {local} {standby}"))
        .unwrap();
    assert!(!answer.starts_with("error"), "sync: {answer}");
    watch
        .wait(cluster, owner, "a first sync", STEP, |e| match e {
            NodeEvent::Synced { task, .. } if task.task_id == id => Some(()),
            _ => None,
        })
        .unwrap();
    let mut at = owner;
    let mut migrations = 0;
    for to in [peer, owner] {
        let report = cluster.client(at, ANSWER).unwrap().migrate(
            id,
            &Cluster::control(to).to_string(),
            STEP,
        );
        match report {
            Ok(_) => {
                at = to;
                migrations += 1;
            }
            // The task may end first: then it stays where it is.
            Err(error) => {
                let finished = cluster
                    .client(at, ANSWER)
                    .unwrap()
                    .list()
                    .unwrap()
                    .iter()
                    .any(|t| t.task_id == id && matches!(t.status, TaskStatus::Finished { .. }));
                assert!(
                    finished,
                    "round {n}: migration to node {to} failed: {error}"
                );
                break;
            }
        }
    }
    let done = cluster
        .wait_for_task(at, "the task's end", STEP, POLL, |tasks| {
            tasks
                .iter()
                .find(|t| {
                    t.task_id == id
                        && t.role == TaskRole::Owner
                        && matches!(t.status, TaskStatus::Finished { .. })
                })
                .cloned()
        })
        .unwrap();
    assert_eq!(
        done.status,
        TaskStatus::Finished { verified: true },
        "round {n}"
    );
    let syncs = watch
        .history()
        .iter()
        .filter(|(_, r)| matches!(&r.event, NodeEvent::Synced { task, .. } if task.task_id == id))
        .count();
    cluster.client(at, ANSWER).unwrap().kill_task(id).unwrap();
    (syncs, migrations)
}

#[test]
fn nodes_stay_flat_over_many_migrations_and_syncs_under_a_real_trace() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../shared/traces/dev");
    let traces = trace::load(&dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display()));
    let mut cluster = Cluster::start(
        "soak",
        &[Board::Virt, Board::Virt],
        Security::Key(random_key().unwrap()),
    )
    .unwrap();
    let shaper = TraceShaper::start(cluster.lab().shaper(), &traces[0], 1.0).unwrap();
    let idle = statuses(&cluster).map(|s| s.control_sockets);
    eprintln!("soak: control sockets at idle {idle:?}");
    let started = Instant::now();
    let rounds = rounds();
    let mut samples: Vec<[u64; 2]> = Vec::new();
    let (mut syncs, mut migrations) = (0, 0);
    for n in 0..rounds {
        let (s, m) = round(&mut cluster, n % 2, n);
        syncs += s;
        migrations += m;
        let status = statuses(&cluster);
        let sample = [used(&status[0]), used(&status[1])];
        eprintln!(
            "soak: round {n}: {s} syncs, {m} migrations, heap used {sample:?}, control sockets {:?}, tasks and replicas {:?} at {:.0} s",
            status.each_ref().map(|s| s.control_sockets),
            status.each_ref().map(|s| s.tasks.len()),
            started.elapsed().as_secs_f64()
        );
        samples.push(sample);
    }
    let applied = shaper.stop().unwrap();
    eprintln!(
        "soak: {rounds} rounds, {migrations} migrations, {syncs} syncs in {:.0} s, link mean {:.2} Mbit/s over {} samples",
        started.elapsed().as_secs_f64(),
        applied.mean_mbps,
        applied.samples
    );
    assert!(
        migrations >= rounds,
        "{migrations} migrations in {rounds} rounds"
    );
    assert!(syncs >= rounds, "{syncs} syncs in {rounds} rounds");
    // Nothing left behind: no task, no replica, no socket beyond the
    // listeners (the last task's word and connections take a moment).
    let settled = Instant::now();
    let last = loop {
        let status = statuses(&cluster);
        let clean = status
            .iter()
            .zip(idle)
            .all(|(s, idle)| s.tasks.is_empty() && s.control_sockets == idle);
        if clean || settled.elapsed() > SETTLE {
            break status;
        }
        std::thread::sleep(POLL);
    };
    eprintln!(
        "soak: at the end: heap used {:?}, control sockets {:?} (idle {idle:?}), {} and {} tasks or replicas, after {:.1} s",
        last.each_ref().map(used),
        last.each_ref().map(|s| s.control_sockets),
        last[0].tasks.len(),
        last[1].tasks.len(),
        settled.elapsed().as_secs_f64()
    );
    for (node, status) in last.iter().enumerate() {
        assert!(
            status.tasks.is_empty(),
            "node {node}: left behind: {:#?}",
            status.tasks
        );
        assert_eq!(
            status.control_sockets, idle[node],
            "node {node}: control sockets"
        );
    }
    // No growth after the warm-up, to the end.
    samples.push(last.each_ref().map(used));
    for node in 0..2 {
        let base = samples[..WARM_UP.min(rounds)]
            .iter()
            .map(|s| s[node])
            .max()
            .unwrap_or(0);
        let peak = samples.iter().map(|s| s[node]).max().unwrap_or(0);
        assert!(
            peak <= base + ALLOWANCE,
            "node {node}: heap used grew from {base} to {peak} bytes: {samples:?}"
        );
    }
}
