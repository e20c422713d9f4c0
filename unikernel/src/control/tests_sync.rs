//! Sync sessions on the in-memory cable: a standby kept fresh at the
//! policy's interval, leases, failover and failback, and a standby that
//! drops its replica when the owner says the task ended.

use super::tests::*;
use super::*;
use alloc::format;
use alloc::string::String;
use tern_protocol::{NackReason, TaskRole};

/// Starts cg S on A, to pause at `pause_at` percent, and its sync session to B.
fn started_sync(p: &mut Pair, pause_at: u32) -> u64 {
    assert_eq!(
        p.a.exec(&format!("run cg S --pause-at {pause_at}")),
        "task 1 (cg S) started\r\n"
    );
    assert_eq!(
        p.a.exec("sync 1 10.0.0.2"),
        "sync: task 1 (cg S) -> 10.0.0.2:4470: connecting\r\n"
    );
    p.a.first_task_id()
}

/// Percent of a report's progress.
fn percent(done: u64, total: u64) -> f64 {
    done as f64 * 100.0 / total as f64
}

#[test]
fn an_owner_keeps_a_standby_fresh_at_the_policys_interval() {
    let mut p = pair();
    let global = started_sync(&mut p, 95);
    assert!(
        p.run_until(400_000, |p| p.a.synced().len() >= 2),
        "{}",
        p.a.out
    );
    assert!(p.a.saw(|e| matches!(
        e,
        NodeEvent::SyncConnected { peer_isa, peer_board, to, .. }
            if peer_isa == "aarch64" && peer_board == "rpi4" && to == "10.0.0.2:4470"
    )));
    let syncs = p.a.synced();
    assert!(syncs
        .iter()
        .all(|s| s.epoch == 1 && s.policy == "cost-rate"));
    assert!(p.a.out.contains(": sync 1 at "), "{}", p.a.out);
    // The owner lists its task with the policy and the time of the last sync.
    let owner = p.a.list();
    assert_eq!(owner.len(), 1);
    assert_eq!(owner[0].role, TaskRole::Owner);
    assert_eq!(owner[0].policy.as_deref(), Some("cost-rate"));
    assert!(owner[0].last_sync_ms_ago.is_some());
    // The standby holds a leased replica of it.
    let standby = p.b.list();
    assert_eq!(standby.len(), 1);
    assert_eq!(
        (standby[0].task_id, standby[0].role, standby[0].epoch),
        (global, TaskRole::Standby, 1)
    );
    assert_eq!(standby[0].owner, node_id_from_mac(MAC_A));
    assert_eq!(standby[0].policy.as_deref(), Some("cost-rate"));
    // The first sync knows no bandwidth and sends raw chunks, all of them;
    // later ones only those that changed since (none once the task is
    // paused).
    let first = &syncs[0];
    assert_eq!(first.chunks_sent, first.chunks, "{first:?}");
    assert_eq!((first.codec.as_str(), first.ratio_milli), ("none", 1000));
    assert!(first.next_ms > 0);
    assert!(syncs[1].ms > 0);
    // Once the task is paused, a sync finds nothing changed (which sync
    // that is depends on when the policy's interval falls).
    let unchanged = |p: &Pair| p.a.synced().iter().any(|s| s.chunks_sent == 0);
    assert!(p.run_until(400_000, unchanged), "{:?}", p.a.synced());
    let last = p.a.synced().last().cloned().unwrap();
    assert_eq!((last.chunks_sent, last.chunks), (0, 22), "{last:?}");
    let sessions = p.a.exec("sync");
    assert!(
        sessions.contains(&format!("connected, {} syncs, last ", last.number)),
        "{sessions}"
    );
    let leases = p.b.exec("sync");
    assert!(
        leases.starts_with(&format!("standby of task {global:016x} for 10.0.0.1: ")),
        "{leases}"
    );
    assert_eq!(p.b.arrivals(), 0);
    assert!(p.b.exec("ps").contains("no tasks"));
}

#[test]
fn lease_command_and_refusals() {
    let mut p = pair();
    assert_eq!(p.b.exec("sync"), "no sync sessions\r\n");
    assert_eq!(p.b.exec("sync lease"), "sync: lease 3000 ms\r\n");
    assert_eq!(p.b.exec("sync lease 1200"), "sync: lease 1200 ms\r\n");
    assert_eq!(
        p.b.exec("sync lease 0"),
        "error: sync: a lease is a positive number of milliseconds\r\n"
    );
    assert_eq!(p.a.exec("sync 1 10.0.0.2"), "error: sync: no task 1\r\n");
    assert_eq!(
        p.a.exec("sync 1 nowhere"),
        "error: sync: 'nowhere' is not <IPv4 address>[:<port>] nor a node id (12 hex digits)\r\n"
    );
    started_sync(&mut p, 95);
    assert_eq!(
        p.a.exec("sync 1 10.0.0.2"),
        "error: sync: task 1 already has a sync session\r\n"
    );
    assert_eq!(p.a.exec("sync stop 1"), "");
    assert!(p.a.saw(|e| matches!(
        e,
        NodeEvent::SyncEnded { reason, syncs: 0, .. } if reason == "stopped"
    )));
    assert_eq!(
        p.a.exec("sync stop 1"),
        "error: sync: task 1 has no sync session\r\n"
    );
    assert_eq!(p.a.exec("sync"), "no sync sessions\r\n");
}

#[test]
fn a_cut_link_fails_over_to_the_standby_and_back_with_one_owner() {
    let mut p = pair();
    short_timeouts(&mut p);
    p.a.exec("sync lease 1000");
    p.b.exec("sync lease 1000");
    let global = started_sync(&mut p, 40);
    assert!(
        p.run_until(400_000, |p| !p.a.synced().is_empty()),
        "{}",
        p.a.out
    );
    let synced = p.a.synced()[0].progress;
    p.cut(false);
    let failovers = |p: &Pair| {
        p.b.find(|e| match e {
            NodeEvent::FailedOver {
                task,
                owner,
                epoch,
                progress,
                ..
            } => Some((task.task_id, owner.clone(), *epoch, *progress)),
            _ => None,
        })
    };
    assert!(
        p.run_until(400_000, |p| !failovers(p).is_empty()),
        "{}",
        p.b.out
    );
    // Resumed from the last sync at the next epoch: the owner went on to
    // 40 % before the next sync was due, and only that is done again.
    assert_eq!(
        failovers(&p),
        [(global, String::from("10.0.0.1"), 2, synced)]
    );
    let paused_at = p.a.find(|e| match e {
        NodeEvent::TaskPaused {
            progress,
            progress_total,
            ..
        } => Some(percent(*progress, *progress_total)),
        _ => None,
    });
    assert!(paused_at[0] >= 40.0, "{}", p.a.out);
    assert_eq!(p.a.synced().len(), 1, "{}", p.a.out);
    // Hold the new owner's copy at 60 % so it is still running when the
    // link returns.
    p.b.tasks.borrow_mut().get_mut(1).unwrap().pause_at = Some(60.0);
    // Both hold the task while the link is down; the old owner noticed.
    assert!(p.run_until(100_000, |p| p
        .a
        .saw(|e| matches!(e, NodeEvent::SyncLinkLost { .. }))));
    p.mend();
    let stepped_down = |p: &Pair| {
        p.a.find(|e| match e {
            NodeEvent::SteppedDown {
                task,
                winner,
                winner_epoch,
                epoch,
                progress,
                progress_total,
            } => Some((
                task.task_id,
                winner.clone(),
                *winner_epoch,
                *epoch,
                percent(*progress, *progress_total),
            )),
            _ => None,
        })
    };
    assert!(
        p.run_until(400_000, |p| !stepped_down(p).is_empty()),
        "{}\n---\n{}",
        p.a.out,
        p.b.out
    );
    assert_eq!(
        stepped_down(&p),
        [(global, String::from("10.0.0.2"), 2, 1, paused_at[0])]
    );
    assert!(p.a.out.contains("this node is its standby now"));
    assert_eq!(p.a.exec("ps"), "no tasks\r\n");
    // The new owner syncs back: the old one is its leased standby at epoch 2.
    assert!(
        p.run_until(400_000, |p| !p.b.synced().is_empty()),
        "{}\n---\n{}",
        p.a.out,
        p.b.out
    );
    assert_eq!(p.b.synced()[0].epoch, 2);
    let list = p.a.list();
    assert_eq!(list.len(), 1);
    assert_eq!((list[0].epoch, list[0].role), (2, TaskRole::Standby));
    assert_eq!(list[0].policy.as_deref(), Some("cost-rate"));
    assert!(p.a.control.borrow().replicas.leased(global));
    assert!(p.run_until(2_000_000, |p| p.b.paused()));
    assert_eq!(p.b.exec("cont 1"), "task 1 (cg S) continues\r\n");
    assert!(
        p.run_until(2_000_000, |p| !p.b.verdicts().is_empty()),
        "{}",
        p.b.out
    );
    assert_eq!(p.b.verdicts(), [true]);
    // One owner: B; A never ran it again.
    assert!(p.a.verdicts().is_empty());
    assert_eq!(p.a.arrivals(), 0);
    assert_eq!(p.a.exec("ps"), "no tasks\r\n");
    // The new owner's session ends with the task and says so: A drops its
    // replica and its lease.
    assert!(p.run_until(100_000, |p| !dropped(&p.a).is_empty()));
    assert_eq!(dropped(&p.a), [(global, 2)]);
    assert!(p.a.list().is_empty() && !p.a.control.borrow().replicas.leased(global));
}

/// Starts cg S on A paused at 40 %, synced to B (lease 1 s), and waits for
/// a sync; returns the task's global id.
fn synced_and_paused(p: &mut Pair) -> u64 {
    short_timeouts(p);
    p.a.exec("sync lease 1000");
    p.b.exec("sync lease 1000");
    let global = started_sync(p, 40);
    assert!(
        p.run_until(400_000, |p| !p.a.synced().is_empty() && p.a.paused()),
        "{}",
        p.a.out
    );
    assert_eq!(p.b.list()[0].task_id, global);
    global
}

#[test]
fn a_synced_task_that_finishes_leaves_no_replica_on_its_standby() {
    let mut p = pair();
    let global = synced_and_paused(&mut p);
    assert_eq!(p.a.exec("cont 1"), "task 1 (cg S) continues\r\n");
    assert!(p.run_until(2_000_000, |p| !p.a.verdicts().is_empty()));
    assert_eq!(p.a.verdicts(), [true]);
    b_dropped(&mut p, global, 1);
    assert!(p.a.saw(|e| matches!(
        e,
        NodeEvent::SyncEnded { reason, .. } if reason == "the task finished"
    )));
    // Long past the lease: nothing to fail over, the sockets are closed.
    p.run_until(100_000, |_| false);
    assert_eq!(p.b.arrivals(), 0);
    let idle = LISTENERS as u32;
    assert_eq!((sockets(&p.a), sockets(&p.b)), (idle, idle));
}

#[test]
fn a_synced_task_that_is_killed_leaves_no_replica_on_its_standby() {
    let mut p = pair();
    let global = synced_and_paused(&mut p);
    assert_eq!(p.a.exec("kill 1"), "task 1 (cg S) killed\r\n");
    b_dropped(&mut p, global, 1);
    p.run_until(100_000, |_| false);
    assert_eq!(p.b.arrivals(), 0);
}

#[test]
fn a_task_that_finishes_behind_a_cut_link_still_fails_over_to_its_standby() {
    let mut p = pair();
    let global = synced_and_paused(&mut p);
    p.cut(false);
    assert_eq!(p.a.exec("cont 1"), "task 1 (cg S) continues\r\n");
    assert!(p.run_until(2_000_000, |p| !p.a.verdicts().is_empty()));
    // The owner's word is lost with the link: past the lease the standby
    // resumes the task from its replica, as for an owner that died.
    let failed_over = |p: &Pair| {
        p.b.find(|e| match e {
            NodeEvent::FailedOver { task, epoch, .. } => Some((task.task_id, *epoch)),
            _ => None,
        })
    };
    assert!(
        p.run_until(400_000, |p| !failed_over(p).is_empty()),
        "{}",
        p.b.out
    );
    assert_eq!(failed_over(&p), [(global, 2)]);
    assert!(dropped(&p.b).is_empty());
    assert!(p.run_until(2_000_000, |p| !p.b.verdicts().is_empty()));
    assert_eq!(p.b.verdicts(), [true]);
}

#[test]
fn stopping_one_session_ends_only_its_lease() {
    let mut p = pair();
    let first = started_sync(&mut p, 95);
    assert_eq!(
        p.a.exec("run cg S --pause-at 95"),
        "task 2 (cg S) started\r\n"
    );
    p.a.exec("sync 2 10.0.0.2");
    let second = p.a.tasks.borrow().entries()[1].task_id;
    let leased = |p: &Pair, task| p.b.control.borrow().replicas.leased(task);
    let synced_first = |p: &Pair| {
        p.a.saw(|e| matches!(e, NodeEvent::Synced { task, .. } if task.local_id == 1))
    };
    assert!(p.run_until(400_000, |p| leased(p, first)
        && leased(p, second)
        && synced_first(p)));
    p.a.exec("sync stop 1");
    assert!(p.a.saw(|e| matches!(
        e,
        NodeEvent::SyncEnded { task, reason, syncs: 1, .. } if task.local_id == 1 && reason == "stopped"
    )));
    assert!(p.run_until(100_000, |p| !leased(p, first)));
    assert!(leased(&p, second));
    assert_eq!(p.b.arrivals(), 0);
}

#[test]
fn a_sync_never_replaces_a_newer_replica() {
    let mut p = pair();
    started_sync(&mut p, 95);
    assert!(p.run_until(400_000, |p| !p.a.synced().is_empty()));
    let control = p.b.control.borrow();
    let held = control.replicas.replicas().next().unwrap().1.offer.clone();
    let verdict = |offer: &tern_protocol::Offer| control.replicas.verdict(offer, None);
    let stale = replicas::ReplicaVerdict::Refuse(NackReason::StaleEpoch { known: 1 });
    // Same state, more progress or a newer epoch: taken.
    assert_eq!(verdict(&held), replicas::ReplicaVerdict::Accept);
    let more = tern_protocol::Offer {
        progress: held.progress + 1,
        ..held.clone()
    };
    assert_eq!(verdict(&more), replicas::ReplicaVerdict::Accept);
    // Less progress on the same epoch, or an older epoch: refused.
    let less = tern_protocol::Offer {
        progress: held.progress - 1,
        ..held.clone()
    };
    assert_eq!(verdict(&less), stale);
    let older = tern_protocol::Offer {
        epoch: 0,
        progress: held.progress + 10,
        ..held.clone()
    };
    assert_eq!(verdict(&older), stale);
}
