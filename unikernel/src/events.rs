//! The node's event log: what its services report, as values
//! ([`NodeEvent`], defined by the protocol so that host tools read the same
//! types), kept in a bounded log with sequence numbers. The console shows
//! each event as one line ([`render`], the only place that turns an event
//! into prose); the control service streams the log to subscribers.

use alloc::collections::VecDeque;
use alloc::format;
use alloc::string::String;

use tern_migration::hex_prefix;
use tern_protocol::{EventRecord, NodeEvent, StopReason, TaskRef};

/// Events kept for subscribers that connect late or fall behind.
pub const LOG_CAPACITY: usize = 256;

/// The bounded log of the node's events.
#[derive(Debug)]
pub struct EventLog {
    records: VecDeque<EventRecord>,
    next_seq: u64,
}

impl Default for EventLog {
    fn default() -> Self {
        Self {
            records: VecDeque::new(),
            next_seq: 1,
        }
    }
}

impl EventLog {
    /// An empty log; the first event gets sequence number 1.
    pub fn new() -> Self {
        Self::default()
    }

    /// Appends `event`, which happened at `now_ns` after boot; returns its
    /// sequence number. The oldest event goes once [`LOG_CAPACITY`] are kept.
    pub fn publish(&mut self, now_ns: u64, event: NodeEvent) -> u64 {
        let seq = self.next_seq;
        self.next_seq += 1;
        if self.records.len() == LOG_CAPACITY {
            self.records.pop_front();
        }
        self.records.push_back(EventRecord {
            seq,
            at_ms: now_ns / 1_000_000,
            event,
        });
        seq
    }

    /// The sequence number the next event will get.
    pub fn next_seq(&self) -> u64 {
        self.next_seq
    }

    /// The events after sequence number `after` that the log still keeps,
    /// and how many after it it no longer keeps.
    pub fn after(&self, after: u64) -> (impl Iterator<Item = &EventRecord>, u64) {
        let first_kept = self.records.front().map_or(self.next_seq, |r| r.seq);
        let dropped = first_kept.saturating_sub(after.saturating_add(1));
        (self.records.iter().filter(move |r| r.seq > after), dropped)
    }
}

/// Why a migration's pre-copy ended, in words.
pub fn stop_reason(stop: &StopReason) -> String {
    match stop {
        StopReason::DowntimeFits { predicted_ms } => {
            format!("the rest fits the downtime: {predicted_ms} ms predicted")
        }
        StopReason::RoundLimit => String::from("round limit"),
        StopReason::NotConverging { predicted_ms } => {
            format!("not converging: {predicted_ms} ms predicted")
        }
    }
}

/// How the console names a task: `task 3 (is S)`.
pub fn label(task: &TaskRef) -> String {
    format!("task {} ({})", task.local_id, task.name)
}

/// Progress in percent (100 for an empty task).
fn percent(done: u64, total: u64) -> f64 {
    if total == 0 {
        100.0
    } else {
        done as f64 * 100.0 / total as f64
    }
}

/// The console's line for `event` (without line end), or `None` for an
/// event the shell command that caused it has already answered.
pub fn render(event: &NodeEvent) -> Option<String> {
    Some(match event {
        NodeEvent::TaskStarted {
            task,
            requested_by: Some(peer),
            ..
        } => format!("{} started (requested by {peer})", label(task)),
        NodeEvent::TaskKilled {
            task,
            requested_by: Some(peer),
        } => format!("{} killed (requested by {peer})", label(task)),
        NodeEvent::MigrationStarted {
            task,
            to,
            requested_by: Some(peer),
        } => format!(
            "migrate: {} -> {to}: connecting (requested by {peer})",
            label(task)
        ),
        NodeEvent::TaskStarted { .. }
        | NodeEvent::TaskKilled { .. }
        | NodeEvent::MigrationStarted { .. }
        | NodeEvent::RoundTimeline { .. } => return None,
        NodeEvent::TaskPaused {
            task,
            progress,
            progress_total,
        } => format!(
            "{} paused at {:.1}%",
            label(task),
            percent(*progress, *progress_total)
        ),
        NodeEvent::TaskFinished { task, verdict, .. } => format!("{}: {verdict}", label(task)),
        NodeEvent::TaskArrived {
            task,
            epoch,
            progress,
            progress_total,
            from,
        } => format!(
            "{} resumed at {:.1}% from {from} (task {:016x}, epoch {epoch})",
            label(task),
            percent(*progress, *progress_total),
            task.task_id
        ),
        NodeEvent::PrecopyRound {
            task,
            to,
            round,
            chunks_sent,
            chunks,
            bytes,
            dirty_bytes,
            predicted_ms,
        } => format!(
            "migrate: {} -> {to}: pre-copy {round}: {dirty_bytes} B changed, {chunks_sent} of {chunks} chunks, {bytes} B sent; {}",
            label(task),
            match predicted_ms {
                Some(ms) => format!("the next round would take {ms} ms"),
                None => String::from("no link rate yet"),
            }
        ),
        NodeEvent::StopAndCopy {
            task,
            to,
            progress,
            progress_total,
        } => format!(
            "migrate: {} -> {to}: stop-and-copy at {:.1}%",
            label(task),
            percent(*progress, *progress_total)
        ),
        NodeEvent::MigrationInDoubt {
            task,
            to,
            reason,
            retry_ms,
        } => format!(
            "migrate: {} -> {to}: in doubt after the commit ({reason}); task kept paused, reconnecting in {retry_ms} ms",
            label(task)
        ),
        NodeEvent::Migrated { task, to, report } => format!(
            "migrated {} to {to} ({} -> {}): epoch {}, {} pre-copy rounds ({}), stop-and-copy {} of {} chunks, total {} ms, downtime {} ms (limit {}), state {} B, wire {} B, {} x{:.2}",
            label(task),
            report.from_isa,
            report.to_isa,
            report.epoch,
            report.precopy_rounds,
            stop_reason(&report.stop),
            report.stop_copy_chunks,
            report.chunks,
            report.total_ms,
            report.downtime_ms,
            report.downtime_limit_ms,
            report.state_bytes,
            report.wire_bytes,
            report.codec,
            f64::from(report.ratio_milli) / 1000.0
        ),
        NodeEvent::MigrationFailed { task, to, reason } => format!(
            "migrate: {} -> {to} failed: {reason}; the task stays here",
            label(task)
        ),
        NodeEvent::MigrationSuperseded { task, to, epoch } => format!(
            "migrate: {} -> {to}: the receiver owns the task at epoch {epoch}; dropped here",
            label(task)
        ),
        NodeEvent::SyncConnected {
            task,
            to,
            peer_isa,
            peer_board,
        } => format!(
            "sync: {} -> {to}: connected to {peer_isa} {peer_board} node",
            label(task)
        ),
        NodeEvent::SyncLinkLost { task, to, reason } => format!(
            "sync: {} -> {to}: link lost ({reason}); reconnecting",
            label(task)
        ),
        NodeEvent::Synced { task, to, report } => format!(
            "sync: {} -> {to}: sync {} at {:.1}% (epoch {}): {} of {} chunks, {} B in {} ms, {} x{:.2}; next in {:.1} s ({})",
            label(task),
            report.number,
            percent(report.progress, report.progress_total),
            report.epoch,
            report.chunks_sent,
            report.chunks,
            report.wire_bytes,
            report.ms,
            report.codec,
            f64::from(report.ratio_milli) / 1000.0,
            report.next_ms as f64 / 1000.0,
            report.policy
        ),
        NodeEvent::SyncRefused { task, to, reason } => {
            format!("sync: {} -> {to}: sync refused: {reason}", label(task))
        }
        NodeEvent::SyncEnded {
            task,
            to,
            reason,
            syncs,
        } => format!(
            "sync: {} -> {to}: {reason}; session ended after {syncs} syncs",
            label(task)
        ),
        NodeEvent::FailedOver {
            task,
            owner,
            silent_ms,
            epoch,
            progress,
            progress_total,
        } => format!(
            "sync: lease of task {:016x} expired (no word from {owner} for {silent_ms} ms): {} resumed here at {:.1}%, epoch {epoch}",
            task.task_id,
            label(task),
            percent(*progress, *progress_total)
        ),
        NodeEvent::FailoverFailed { task_id, reason } => format!(
            "sync: lease of task {task_id:016x} expired but its replica cannot resume: {reason}"
        ),
        NodeEvent::SteppedDown {
            task,
            winner,
            winner_epoch,
            epoch,
            progress,
            progress_total,
        } => format!(
            "sync: failback of task {:016x}: {winner} runs it at epoch {winner_epoch}; {} stopped here at {:.1}% (epoch {epoch}), this node is its standby now",
            task.task_id,
            label(task),
            percent(*progress, *progress_total)
        ),
        NodeEvent::CheckpointRefused { task_id, reason } => {
            format!("control: refused task {task_id:#x}: {reason}")
        }
        NodeEvent::PeerDropped { peer, reason } => {
            format!("control: connection from {peer} closed: {reason}")
        }
        NodeEvent::Addressed {
            address: Some(address),
            source,
        } => format!("net: address {address} ({source})"),
        NodeEvent::Addressed {
            address: None,
            source,
        } => format!("net: address lost ({source})"),
        NodeEvent::ClockSet {
            unix_ms,
            server,
            rtt_ms,
        } => format!(
            "time: {} from {server} (round trip {rtt_ms} ms)",
            crate::wallclock::format_utc(*unix_ms)
        ),
        NodeEvent::TaskLog { task, line } => format!("{}: {line}", label(task)),
        NodeEvent::ModuleAdded { module, len, from } => format!(
            "control: module {} ({len} bytes) from {from} held",
            hex_prefix(module)
        ),
        NodeEvent::ModuleRefused {
            reason,
            detail,
            from,
        } => format!("control: module from {from} refused: {reason} ({detail})"),
        NodeEvent::ReplicaDropped {
            task_id,
            epoch,
            owner,
        } => format!("control: task {task_id:016x} ended on {owner}: its replica (epoch {epoch}) dropped"),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn task() -> TaskRef {
        TaskRef {
            task_id: 0x5254_0000_000a_0001,
            local_id: 1,
            name: "ep S".into(),
            tag: None,
        }
    }

    fn paused(progress: u64) -> NodeEvent {
        NodeEvent::TaskPaused {
            task: task(),
            progress,
            progress_total: 4,
        }
    }

    #[test]
    fn the_log_numbers_events_and_forgets_the_oldest() {
        let mut log = EventLog::new();
        assert_eq!(log.publish(2_000_000, paused(1)), 1);
        assert_eq!(log.publish(3_000_000, paused(2)), 2);
        let (records, dropped) = log.after(0);
        let seqs: alloc::vec::Vec<u64> = records.map(|r| r.seq).collect();
        assert_eq!((seqs, dropped), (alloc::vec![1, 2], 0));
        let (records, _) = log.after(1);
        let later: alloc::vec::Vec<(u64, u64)> = records.map(|r| (r.seq, r.at_ms)).collect();
        assert_eq!(later, [(2, 3)]);

        for _ in 0..LOG_CAPACITY {
            log.publish(0, paused(3));
        }
        assert_eq!(log.next_seq(), LOG_CAPACITY as u64 + 3);
        // Two events are gone: a subscriber at 0 learns it missed them.
        let (records, dropped) = log.after(0);
        assert_eq!((records.count(), dropped), (LOG_CAPACITY, 2));
        let (records, dropped) = log.after(LOG_CAPACITY as u64 + 2);
        assert_eq!((records.count(), dropped), (0, 0));
    }

    #[test]
    fn the_console_shows_events_as_lines_but_not_what_a_command_answered() {
        assert_eq!(render(&paused(1)).unwrap(), "task 1 (ep S) paused at 25.0%");
        let started = |requested_by| NodeEvent::TaskStarted {
            task: task(),
            epoch: 1,
            requested_by,
        };
        assert_eq!(render(&started(None)), None);
        assert_eq!(
            render(&started(Some("10.0.0.9".into()))).unwrap(),
            "task 1 (ep S) started (requested by 10.0.0.9)"
        );
        let finished = NodeEvent::TaskFinished {
            task: task(),
            epoch: 2,
            verified: true,
            verdict: "VERIFICATION SUCCESSFUL".into(),
        };
        assert_eq!(
            render(&finished).unwrap(),
            "task 1 (ep S): VERIFICATION SUCCESSFUL"
        );
    }
}
