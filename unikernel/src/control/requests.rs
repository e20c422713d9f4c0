//! The task requests a peer sends the control service, each answered in one
//! message: `StartTask`, `KillTask`, `SetStandby`, `List` and `Status`.

use alloc::string::{String, ToString};
use alloc::vec::Vec;

use tern_protocol::{
    Message, NackReason, NodeEvent, NodeStatus, TaskRole, TaskStatus, TaskSummary, MAX_TAG_LEN,
};

use super::{ControlError, Parts};
use crate::tasks::{free_heap, TaskState};

/// `StartTask`: starts the task `args` name, as the shell's `run` would;
/// a task already here under `tag` is the answer instead.
pub(super) fn start_task(
    parts: &mut Parts<'_, '_>,
    args: &[String],
    tag: Option<String>,
    peer: &str,
) -> Message {
    if tag.as_ref().is_some_and(|t| t.len() > MAX_TAG_LEN) {
        return Message::Nack(NackReason::StartRefused);
    }
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let free = free_heap(parts.ctx.board);
    let mut tasks = parts.ctx.tasks.borrow_mut();
    if let Some(task_id) = tag
        .as_deref()
        .and_then(|t| tasks.by_tag(t))
        .map(|e| e.task_id)
    {
        return Message::Started { task_id };
    }
    let started = tasks.start(&args, None, free, tag).and_then(|id| {
        tasks
            .get_mut(id)
            .map(|e| (e.task_ref(), e.epoch))
            .ok_or_else(String::new)
    });
    match started {
        Ok((task, epoch)) => {
            let task_id = task.task_id;
            parts.turn.publish(NodeEvent::TaskStarted {
                task,
                epoch,
                requested_by: Some(peer.into()),
            });
            Message::Started { task_id }
        }
        Err(_) => Message::Nack(NackReason::StartRefused),
    }
}

/// `KillTask`: drops the task unless a migration is deciding its owner.
pub(super) fn kill_task(parts: &mut Parts<'_, '_>, task_id: u64, peer: &str) -> Message {
    let mut tasks = parts.ctx.tasks.borrow_mut();
    let Some(entry) = tasks.by_task_id(task_id) else {
        return Message::Nack(NackReason::UnknownTask);
    };
    if entry.state == TaskState::Migrating || parts.migrations.is_migrating(task_id) {
        return Message::Nack(NackReason::Busy);
    }
    let id = entry.id;
    let Some(entry) = tasks.remove(id) else {
        return Message::Nack(NackReason::UnknownTask);
    };
    parts.turn.publish(NodeEvent::TaskKilled {
        task: entry.task_ref(),
        requested_by: Some(peer.into()),
    });
    Message::Killed { task_id }
}

/// `SetStandby`: starts, moves or ends the task's sync session, as the
/// shell's `sync <id> <address>` and `sync stop <id>` would; asking for what
/// is already so changes nothing.
pub(super) fn set_standby(
    parts: &mut Parts<'_, '_>,
    task_id: u64,
    standby: Option<&str>,
) -> Message {
    let Some(local_id) = parts
        .ctx
        .tasks
        .borrow_mut()
        .by_task_id(task_id)
        .map(|e| e.id)
    else {
        return Message::Nack(NackReason::UnknownTask);
    };
    let current = parts.sessions.standby_of(local_id);
    let to = match standby.map(|s| parts.discovery.resolve(s)).transpose() {
        Ok(to) => to,
        Err(_) => return Message::Nack(NackReason::StartRefused),
    };
    if current == to {
        return Message::StandbySet { task_id };
    }
    if current.is_some() {
        // Known to be there: stopping cannot fail.
        let _ = parts.sessions.stop(parts.ctx, local_id, parts.turn);
    }
    let started = match to {
        Some(to) => {
            let lease_ns = parts.replicas.lease_ns();
            parts
                .sessions
                .start(parts.ctx, lease_ns, local_id, to, parts.turn.now_ns)
                .map(drop)
        }
        None => Ok(()),
    };
    match started {
        Ok(()) => Message::StandbySet { task_id },
        Err(ControlError::AlreadyMigrating(_)) => Message::Nack(NackReason::Busy),
        Err(_) => Message::Nack(NackReason::StartRefused),
    }
}

/// The `Tasks` answer: tasks run here, then replicas held here.
pub(super) fn list(parts: &Parts<'_, '_>, now_ns: u64) -> Vec<TaskSummary> {
    let tasks = parts.ctx.tasks.borrow();
    let mut list: Vec<TaskSummary> = tasks
        .entries()
        .iter()
        .map(|e| {
            let p = e.task.progress();
            let (last_sync_ms_ago, policy) = parts.sessions.sync_status(e.task_id, now_ns);
            TaskSummary {
                task_id: e.task_id,
                kind: e.task.kind().into(),
                progress: p.done,
                progress_total: p.total,
                owner: parts.ctx.node_id,
                epoch: e.epoch,
                role: TaskRole::Owner,
                status: match e.state {
                    TaskState::Running => TaskStatus::Running,
                    TaskState::Paused => TaskStatus::Paused,
                    TaskState::Migrating => TaskStatus::Migrating,
                    TaskState::Finished { verified } => TaskStatus::Finished { verified },
                },
                last_sync_ms_ago,
                policy,
                tag: e.tag.clone(),
            }
        })
        .collect();
    list.extend(parts.replicas.replicas().map(|(task_id, r)| {
        TaskSummary {
            task_id,
            kind: r.offer.kind.clone(),
            progress: r.offer.progress,
            progress_total: r.offer.progress_total,
            owner: r.owner,
            epoch: r.offer.epoch,
            role: TaskRole::Standby,
            status: TaskStatus::Replica,
            last_sync_ms_ago: Some(now_ns.saturating_sub(r.updated_ns) / 1_000_000),
            // Every node runs tern-sync's default policy.
            policy: parts
                .replicas
                .leased(task_id)
                .then(|| tern_sync::policy::DEFAULT_POLICY.into()),
            tag: None,
        }
    }));
    list
}

/// The `NodeStatus` answer.
pub(super) fn status(parts: &Parts<'_, '_>, now_ns: u64) -> NodeStatus {
    let facts = parts.ctx.board.facts();
    let heap = parts.ctx.board.heap_stats();
    NodeStatus {
        version: crate::VERSION.into(),
        node_id: parts.ctx.node_id,
        isa: facts.isa.name().into(),
        board: facts.board.into(),
        model: facts.model.into(),
        cores: 1,
        memory_bytes: facts.memory_bytes,
        heap_bytes: heap.total_bytes,
        heap_free_bytes: heap.total_bytes.saturating_sub(heap.used_bytes),
        uptime_ms: now_ns / 1_000_000,
        address: parts.ctx.net.borrow().ipv4().map(|c| c.cidr.to_string()),
        task_kinds: parts.ctx.task_kinds(),
        tasks: list(parts, now_ns),
        next_event: parts.turn.events.next_seq(),
        control_sockets: parts.ctx.sockets,
    }
}
