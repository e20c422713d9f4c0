//! Soak: two `virt` nodes on a link that follows a real bandwidth trace (the
//! first of `../shared/traces/dev`, through tern-lab's shaper) run round after
//! round of: an NPB EP task started on one node, a sync session to the other
//! (at least one sync acknowledged), the task migrated to the other node and
//! back while it runs, then followed to its end, verified, and removed. After
//! every round, once the nodes settled, both nodes' heaps and control
//! sockets are read through the node status query.
//!
//! Checked: every task finishes with NPB's verification passed; after every
//! round neither node lists a task or a replica (the owner tells the nodes
//! that hold a replica of a task when it ends: `TaskEnded`,
//! `docs/protocol.md`) and each node's control service holds as many TCP
//! sockets as before the first round (its listeners); once the warm-up
//! rounds are over (the first half, at least two), neither node's heap use
//! grows beyond a small allowance.
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
/// Rounds before the heap must stop growing (first buffers, tables, caches,
/// and the event log, which keeps the last 256 events: a round adds about
/// 20 per node, so it fills in the first dozen rounds): half of them, at
/// least two.
fn warm_up(rounds: usize) -> usize {
    (rounds / 2).max(2).min(rounds)
}
/// Heap growth tolerated after the warm-up, per node (allocator slack, the
/// event log's last entries).
const ALLOWANCE: u64 = 64 << 10;

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

/// Both nodes' status once they hold no task, no replica and only their
/// `idle` control sockets (a removed task's word to its replica holders
/// and the closing of its connections take a moment), or after
/// [`SETTLE`]; and how long that took.
fn settled(cluster: &Cluster, idle: [u32; 2]) -> ([NodeStatus; 2], Duration) {
    let since = Instant::now();
    loop {
        let status = statuses(cluster);
        let clean = status
            .iter()
            .zip(idle)
            .all(|(s, idle)| s.tasks.is_empty() && s.control_sockets == idle);
        if clean || since.elapsed() > SETTLE {
            return (status, since.elapsed());
        }
        std::thread::sleep(POLL);
    }
}

/// Fails unless every node holds no task, no replica and only its `idle`
/// control sockets.
fn assert_clean(status: &[NodeStatus; 2], idle: [u32; 2], when: &str) {
    for (node, status) in status.iter().enumerate() {
        assert!(
            status.tasks.is_empty(),
            "{when}: node {node}: left behind: {:#?}",
            status.tasks
        );
        assert_eq!(
            status.control_sockets, idle[node],
            "{when}: node {node}: control sockets"
        );
    }
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
        let (status, settle) = settled(&cluster, idle);
        let sample = status.each_ref().map(used);
        eprintln!(
            "soak: round {n}: {s} syncs, {m} migrations, heap used {sample:?}, control sockets {:?}, tasks and replicas {:?}, settled in {:.1} s, at {:.0} s",
            status.each_ref().map(|s| s.control_sockets),
            status.each_ref().map(|s| s.tasks.len()),
            settle.as_secs_f64(),
            started.elapsed().as_secs_f64()
        );
        assert_clean(&status, idle, &format!("round {n}"));
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
    // No growth after the warm-up.
    let warm_up = warm_up(rounds);
    for node in 0..2 {
        let base = samples[..warm_up]
            .iter()
            .map(|s| s[node])
            .max()
            .unwrap_or(0);
        let peak = samples.iter().map(|s| s[node]).max().unwrap_or(0);
        let last = samples.last().map_or(0, |s| s[node]);
        eprintln!(
            "soak: node {node}: heap used {} after round 0, at most {base} in the {warm_up} warm-up rounds, at most {peak} in all, {last} at the end",
            samples[0][node]
        );
        assert!(
            peak <= base + ALLOWANCE,
            "node {node}: heap used grew from {base} to {peak} bytes: {samples:?}"
        );
    }
}
