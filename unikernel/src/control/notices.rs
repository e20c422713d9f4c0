//! Word that a task ended, for the nodes that hold a replica of it without
//! a sync session: a node the task migrated away from keeps the checkpoint
//! it sent (for a later return), and nothing else would ever tell it that
//! the task is over. When a task that arrived here finishes or is removed,
//! [`Notices`] opens a short connection to each such node and sends
//! [`Message::TaskEnded`] (best effort: a node that cannot be reached keeps
//! its replica, bounded by its replica budget as before). A sync session
//! tells its own standby ([`super::session`]).

use alloc::collections::BTreeMap;
use alloc::vec::Vec;

use smoltcp::wire::IpEndpoint;
use tern_protocol::{Event, Message};

use super::link::PeerConn;
use super::replicas::ReplicaStore;
use super::Context;
use crate::tasks::TaskState;

/// The nodes that hold a replica of one task run here.
struct Holders {
    /// The epoch the task runs at here.
    epoch: u64,
    /// Their control endpoints.
    at: Vec<IpEndpoint>,
}

/// A `TaskEnded` on its way.
struct Notice {
    conn: PeerConn,
    message: Message,
    /// Given up after this.
    until_ns: u64,
}

/// Who must hear when a task run here ends, and the notices under way.
#[derive(Default)]
pub(super) struct Notices {
    holders: BTreeMap<u64, Holders>,
    sending: Vec<Notice>,
}

impl Notices {
    /// The node at `at` holds a replica of task `task_id`, which runs here
    /// at `epoch` (it migrated from there).
    pub(super) fn hold(&mut self, task_id: u64, epoch: u64, at: IpEndpoint) {
        let holders = self.holders.entry(task_id).or_insert(Holders {
            epoch,
            at: Vec::new(),
        });
        holders.epoch = epoch;
        if !holders.at.contains(&at) {
            holders.at.push(at);
        }
    }

    /// One turn: tasks that finished or were removed here send their
    /// notices; notices under way advance. Whether anything happened.
    pub(super) fn poll(&mut self, ctx: &mut Context, replicas: &ReplicaStore, now_ns: u64) -> bool {
        let mut ended = Vec::new();
        self.holders.retain(|&task_id, holders| {
            let state = ctx
                .tasks
                .borrow_mut()
                .by_task_id(task_id)
                .map(|e| (e.state, e.epoch));
            match state {
                Some((TaskState::Finished { .. }, epoch)) => {
                    ended.push((task_id, epoch, core::mem::take(&mut holders.at)));
                    false
                }
                Some(_) => true,
                // Gone, with a replica here: it migrated on or stepped down
                // (it runs elsewhere); its new owner is the one to tell.
                None if replicas.get(task_id).is_some() => false,
                // Killed or removed.
                None => {
                    ended.push((task_id, holders.epoch, core::mem::take(&mut holders.at)));
                    false
                }
            }
        });
        let mut busy = !ended.is_empty();
        for (task_id, epoch, at) in ended {
            for to in at {
                // Best effort: a notice that cannot even start is skipped.
                if let Ok(conn) = PeerConn::open(ctx, to, now_ns) {
                    self.sending.push(Notice {
                        conn,
                        message: Message::TaskEnded { task_id, epoch },
                        until_ns: now_ns + ctx.timeouts.connect_ns + ctx.timeouts.idle_ns,
                    });
                }
            }
        }
        let mut i = 0;
        while i < self.sending.len() {
            let n = &mut self.sending[i];
            let outcome = match n.conn.poll(ctx, now_ns) {
                Ok(polled) => {
                    busy |= polled.busy;
                    let established = polled
                        .events
                        .iter()
                        .any(|e| matches!(e, Event::Established(_)));
                    if established {
                        Some(n.conn.send(&n.message).is_ok())
                    } else if now_ns > n.until_ns {
                        Some(false)
                    } else {
                        None
                    }
                }
                Err(_) => Some(false),
            };
            match outcome {
                None => i += 1,
                // Sent (flushed before the graceful close), or given up.
                Some(sent) => {
                    busy = true;
                    let n = self.sending.swap_remove(i);
                    n.conn.close(ctx, sent, now_ns);
                }
            }
        }
        busy
    }
}
