//! The sync scenario (`tern demo --sync`): an NPB task runs on the PC node
//! while a sync session keeps a standby replica of it on the aarch64 node
//! fresh, over a link whose rate follows a real bandwidth trace (token
//! buckets on the lab's taps, `tern_lab::shaping`). Mid-run the PC's link is
//! cut: once the standby's lease expires it resumes the task from its last
//! replica at the next epoch (failover). When the link returns, the copy at
//! the newest epoch wins and the PC stops its own and becomes the standby
//! (failback). The task ends on the aarch64 node and must pass NPB's
//! verification.
//!
//! The nodes' typed events (`Synced`, `FailedOver`, `SteppedDown`,
//! `TaskFinished`, read through `tern_lab::cluster::EventWatch`) tell each
//! sync, the failover and the failback; the host times the failover from the
//! cut and the failback from the link's return.

use std::time::{Duration, Instant};

use serde::Serialize;
use tern_lab::cluster::{Cluster, ClusterError, EventWatch};
use tern_lab::trace::Trace;
use tern_protocol::{format_node_id, NodeEvent, Psk, SyncReport, TaskRole, TaskStatus};

use crate::demo::{
    follow, percent, start_nodes, start_task, verified, with_consoles, DemoError, Event, Report,
    ANSWER, BOARDS,
};
use tern_lab::shaping::TraceShaper;

/// The default trace: the first Norway 3G trace of the shared set (see
/// `host-tools/tern/traces/README.md`), compiled in.
pub const DEFAULT_TRACE_NAME: &str = "bus.ljansbakken-oslo-report.2010-09-28_1407CEST.log";

/// The default trace's text.
pub const DEFAULT_TRACE: &str =
    include_str!("../traces/bus.ljansbakken-oslo-report.2010-09-28_1407CEST.log");

/// Longest wait for the standby to take over after the cut (its lease,
/// 3 s by default, plus the time to resume).
const FAILOVER_TIMEOUT: Duration = Duration::from_secs(60);

/// Longest wait for failback after the link returns (the sessions reconnect
/// with a backoff of up to 8 s).
const FAILBACK_TIMEOUT: Duration = Duration::from_secs(90);

/// The sync scenario's settings.
#[derive(Debug, Clone)]
pub struct Options {
    /// NPB workload (`ep`, `is`, `cg`).
    pub workload: String,
    /// NPB class.
    pub class: String,
    /// The bandwidth trace the link follows.
    pub trace: Trace,
    /// Its name, for the report.
    pub trace_name: String,
    /// Factor on the trace's throughput.
    pub trace_scale: f64,
    /// Progress (percent) on the PC at which its link is cut (once the
    /// standby holds at least one sync).
    pub outage_at: f64,
    /// How long the link stays cut (longer than the standby's lease).
    pub outage: Duration,
    /// Longest wait for the whole run.
    pub timeout: Duration,
}

impl Options {
    /// EP class W over the default trace, cut at 30% for 6 s: on the PC it
    /// runs long enough for syncs before the cut, and on the aarch64 node
    /// long enough after the failover to sync back once the link returns.
    pub fn with_default_trace() -> Self {
        let trace = Trace::parse(std::path::Path::new(DEFAULT_TRACE_NAME), DEFAULT_TRACE)
            .expect("the compiled-in trace parses (checked by a unit test)");
        Self {
            workload: "ep".into(),
            class: "W".into(),
            trace,
            trace_name: DEFAULT_TRACE_NAME.into(),
            trace_scale: 1.0,
            outage_at: 30.0,
            outage: Duration::from_secs(6),
            timeout: Duration::from_secs(600),
        }
    }
}

/// One sync as its sender reported it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct SyncRecord {
    /// ISA of the node that sent it (the task's owner).
    pub from_isa: String,
    /// Its number in its session.
    pub number: u32,
    /// The task's progress in the synced checkpoint, percent.
    pub at_percent: f64,
    /// The checkpoint's epoch.
    pub epoch: u64,
    /// Chunks the standby lacked and got.
    pub chunks_sent: u32,
    /// Chunks of the checkpoint.
    pub chunks: u32,
    /// Bytes written for the sync (offer, chunks, framing, sealing).
    pub wire_bytes: u64,
    /// Capture to acknowledgement, milliseconds.
    pub ms: u64,
    /// The codec that carried most chunk bytes.
    pub codec: String,
    /// Raw over compressed chunk bytes.
    pub ratio: f64,
    /// The interval the policy chose for the next sync, seconds.
    pub next_s: f64,
    /// The policy's name.
    pub policy: String,
}

impl SyncRecord {
    /// The record of a sync that a node of `from_isa` reported.
    pub fn new(report: &SyncReport, from_isa: &str) -> Self {
        Self {
            from_isa: from_isa.into(),
            number: report.number,
            at_percent: if report.progress_total == 0 {
                0.0
            } else {
                report.progress as f64 * 100.0 / report.progress_total as f64
            },
            epoch: report.epoch,
            chunks_sent: report.chunks_sent,
            chunks: report.chunks,
            wire_bytes: report.wire_bytes,
            ms: report.ms,
            codec: report.codec.clone(),
            ratio: f64::from(report.ratio_milli) / 1000.0,
            next_s: report.next_ms as f64 / 1000.0,
            policy: report.policy.clone(),
        }
    }
}

/// The sync scenario's account in the report.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct StandbyReport {
    /// The trace the link followed.
    pub trace: String,
    /// Factor applied to the trace's throughput.
    pub trace_scale: f64,
    /// Time-weighted mean rate of the shaped link, Mbit/s.
    pub link_mean_mbps: f64,
    /// Every sync, in the order the consoles printed them.
    pub syncs: Vec<SyncRecord>,
    /// Bytes written for all syncs.
    pub sync_bytes: u64,
    /// The owner's progress when its link was cut, percent.
    pub cut_at_percent: f64,
    /// Progress of the replica the standby resumed from, percent.
    pub resumed_at_percent: f64,
    /// Progress lost by the failover (cut − resumed), percentage points.
    pub lost_progress: f64,
    /// Progress the owner makes in one sync interval (its rate before the
    /// cut times the last interval the policy chose, plus that sync's
    /// transfer time): the bound on `lost_progress`.
    pub interval_progress: f64,
    /// How long the link stayed cut, milliseconds.
    pub outage_ms: u64,
    /// From the cut to the standby's takeover, milliseconds.
    pub failover_ms: u64,
    /// From the link's return to the old owner standing down, milliseconds.
    pub failback_ms: u64,
    /// Progress of the old owner's copy when it stood down, percent (what
    /// it computed during the outage is discarded).
    pub stopped_at_percent: f64,
    /// ISA of the node the task finished on.
    pub finished_on: String,
}

/// The syncs the nodes have reported, from their events.
struct SyncWatch {
    events: EventWatch,
    syncs: Vec<SyncRecord>,
}

impl SyncWatch {
    fn new(events: EventWatch) -> Self {
        Self {
            events,
            syncs: Vec::new(),
        }
    }

    /// Takes in the syncs reported since the last call (the other events
    /// stay in the watch's history).
    fn poll(&mut self, cluster: &Cluster, on_event: &mut dyn FnMut(Event)) {
        for (i, record) in self.events.poll(cluster, Duration::ZERO) {
            self.take(i, &record.event, on_event);
        }
    }

    fn take(&mut self, i: usize, event: &NodeEvent, on_event: &mut dyn FnMut(Event)) {
        if let NodeEvent::Synced { report, .. } = event {
            let sync = SyncRecord::new(report, BOARDS[i].isa());
            on_event(Event::Synced(sync.clone()));
            self.syncs.push(sync);
        }
    }

    /// Waits for an event of node `node` that `pick` chooses, taking in the
    /// syncs read meanwhile.
    fn wait<T>(
        &mut self,
        cluster: &Cluster,
        node: usize,
        what: &str,
        timeout: Duration,
        on_event: &mut dyn FnMut(Event),
        mut pick: impl FnMut(&NodeEvent) -> Option<T>,
    ) -> Result<T, ClusterError> {
        let deadline = Instant::now() + timeout;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            for (i, record) in self
                .events
                .poll(cluster, left.min(Duration::from_millis(300)))
            {
                self.take(i, &record.event, on_event);
                if i == node {
                    if let Some(found) = pick(&record.event) {
                        return Ok(found);
                    }
                }
            }
            if Instant::now() >= deadline {
                return Err(ClusterError::Waited {
                    node,
                    what: what.into(),
                    timeout,
                    last_error: None,
                });
            }
        }
    }

    /// The last sync `isa` sent before now.
    fn last_from(&self, isa: &str) -> Option<&SyncRecord> {
        self.syncs.iter().rev().find(|s| s.from_isa == isa)
    }
}

/// Percent of `done` in `total`.
fn percent_of(done: u64, total: u64) -> f64 {
    if total == 0 {
        100.0
    } else {
        done as f64 * 100.0 / total as f64
    }
}

/// Runs the sync scenario; `on_event` sees its progress. Returns the report
/// and the cluster (still running, for `--keep`) with its key.
pub fn run(
    options: &Options,
    on_event: &mut dyn FnMut(Event),
) -> Result<(Report, Cluster, Psk), DemoError> {
    let (mut cluster, key) = start_nodes(on_event)?;
    let shaper = TraceShaper::start(cluster.lab().shaper(), &options.trace, options.trace_scale)?;
    on_event(Event::Stage(format!(
        "the link follows {} (x{})",
        options.trace_name, options.trace_scale
    )));
    let result = drive(options, &mut cluster, on_event);
    let applied = shaper.stop();
    let mut report = with_consoles(&cluster, result)?;
    let applied = applied?;
    if let Some(standby) = report.standby.as_mut() {
        standby.link_mean_mbps = applied.mean_mbps;
    }
    Ok((report, cluster, key))
}

/// Starts the task and its sync session, cuts and restores the PC's link,
/// follows the failover, the failback and the task to its end.
fn drive(
    options: &Options,
    cluster: &mut Cluster,
    on_event: &mut dyn FnMut(Event),
) -> Result<Report, DemoError> {
    let started = Instant::now();
    let deadline = started + options.timeout;
    let mut events = cluster.watch();
    let args = [options.workload.as_str(), options.class.as_str()];
    let (local, id) = start_task(cluster, &mut events, 0, &args)?;
    // On the PC's network console, naming the standby by its node id.
    cluster.console(
        0,
        &format!("sync {local} {}", format_node_id(Cluster::node_id(1))),
    )?;
    on_event(Event::Stage(format!(
        "{} class {} runs on the PC with a standby on the aarch64 node",
        options.workload, options.class
    )));
    let mut watch = SyncWatch::new(events);
    let pc = BOARDS[0].isa();

    // Up to the cut: the owner's progress reaches the mark and the standby
    // holds at least one sync.
    let mut first: Option<(Instant, f64)> = None;
    let before = follow(cluster, 0, id, deadline, on_event, |t, on_event| {
        first.get_or_insert((Instant::now(), percent(t)));
        watch.poll(cluster, on_event);
        percent(t) >= options.outage_at && watch.last_from(pc).is_some()
            || matches!(t.status, TaskStatus::Finished { .. })
    })?;
    if matches!(before.status, TaskStatus::Finished { .. }) {
        return Err(DemoError::Task(format!(
            "the task finished before {}% with a sync: choose a longer workload or class",
            options.outage_at
        )));
    }
    let cut_at = percent(&before);
    let cut = Instant::now();
    cluster.lab().set_link(0, false).map_err(DemoError::from)?;
    on_event(Event::Stage(format!(
        "cutting the PC's link at {cut_at:.1}% for {} s",
        options.outage.as_secs_f64()
    )));
    let last_sync = watch
        .last_from(pc)
        .cloned()
        .ok_or_else(|| DemoError::Task("no sync before the cut".into()))?;
    let (t_first, p_first) = first.unwrap_or((cut, cut_at));
    let rate = (cut_at - p_first) / cut.duration_since(t_first).as_secs_f64().max(1e-3);
    let interval_progress = rate * (last_sync.next_s + last_sync.ms as f64 / 1e3);

    // Failover: the standby's lease expires.
    let resumed_at = watch.wait(
        cluster,
        1,
        "the failover",
        FAILOVER_TIMEOUT,
        on_event,
        |e| match e {
            NodeEvent::FailedOver {
                task,
                progress,
                progress_total,
                ..
            } if task.task_id == id => Some(percent_of(*progress, *progress_total)),
            _ => None,
        },
    )?;
    let failover_ms = cut.elapsed().as_millis() as u64;
    on_event(Event::Stage(format!(
        "failover after {failover_ms} ms: the aarch64 node resumed the task at {resumed_at:.1}%"
    )));

    // The outage ends; failback: the PC's copy stands down.
    std::thread::sleep(options.outage.saturating_sub(cut.elapsed()));
    let outage_ms = cut.elapsed().as_millis() as u64;
    cluster.lab().set_link(0, true).map_err(DemoError::from)?;
    let restored = Instant::now();
    let stopped_at = watch.wait(
        cluster,
        0,
        "the failback",
        FAILBACK_TIMEOUT,
        on_event,
        |e| match e {
            NodeEvent::SteppedDown {
                task,
                progress,
                progress_total,
                ..
            } if task.task_id == id => Some(percent_of(*progress, *progress_total)),
            _ => None,
        },
    )?;
    let failback_ms = restored.elapsed().as_millis() as u64;
    on_event(Event::Stage(format!(
        "failback {failback_ms} ms after the link returned: the PC stood down at {stopped_at:.1}%"
    )));
    let pc_owns = cluster
        .client(0, ANSWER)?
        .list()
        .map_err(ClusterError::from)?
        .iter()
        .any(|t| t.task_id == id && t.role == TaskRole::Owner);
    if pc_owns {
        return Err(DemoError::Task(
            "after failback the PC still owns the task".into(),
        ));
    }

    // The task ends on the aarch64 node.
    let done = follow(cluster, 1, id, deadline, on_event, |t, on_event| {
        watch.poll(cluster, on_event);
        matches!(t.status, TaskStatus::Finished { .. })
    })?;
    let run_s = started.elapsed().as_secs_f64();
    let verified = verified(cluster, &mut watch.events, 1, &done)?;
    // The last syncs (the session ends when the task does).
    std::thread::sleep(Duration::from_millis(500));
    watch.poll(cluster, on_event);
    let sync_bytes = watch.syncs.iter().map(|s| s.wire_bytes).sum();
    Ok(Report {
        scenario: "sync",
        workload: options.workload.clone(),
        class: options.class.clone(),
        verified,
        migrations: Vec::new(),
        task_id: id,
        run_s,
        standby: Some(StandbyReport {
            trace: options.trace_name.clone(),
            trace_scale: options.trace_scale,
            link_mean_mbps: 0.0,
            syncs: watch.syncs,
            sync_bytes,
            cut_at_percent: cut_at,
            resumed_at_percent: resumed_at,
            lost_progress: cut_at - resumed_at,
            interval_progress,
            outage_ms,
            failover_ms,
            failback_ms,
            stopped_at_percent: stopped_at,
            finished_on: BOARDS[1].isa().into(),
        }),
        ended_early: None,
        finished_on: BOARDS[1].isa().into(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sync_records_follow_the_reports() {
        let report = SyncReport {
            number: 2,
            progress: 95,
            progress_total: 100,
            epoch: 1,
            chunks_sent: 16,
            chunks: 16,
            wire_bytes: 824_657,
            ms: 20,
            codec: "none".into(),
            ratio_milli: 1210,
            next_ms: 11_200,
            policy: "cost-rate".into(),
        };
        assert_eq!(
            SyncRecord::new(&report, "x86_64"),
            SyncRecord {
                from_isa: "x86_64".into(),
                number: 2,
                at_percent: 95.0,
                epoch: 1,
                chunks_sent: 16,
                chunks: 16,
                wire_bytes: 824_657,
                ms: 20,
                codec: "none".into(),
                ratio: 1.21,
                next_s: 11.2,
                policy: "cost-rate".into(),
            }
        );
    }

    #[test]
    fn the_default_trace_is_compiled_in_and_parses() {
        let options = Options::with_default_trace();
        assert_eq!(options.trace.mbps.len(), 449);
        assert!(
            options.outage > Duration::from_secs(3),
            "longer than the lease"
        );
    }

    #[test]
    fn the_sync_report_has_the_documented_json_shape() {
        let report = Report {
            scenario: "sync",
            workload: "ep".into(),
            class: "S".into(),
            verified: true,
            migrations: Vec::new(),
            task_id: 7,
            run_s: 60.0,
            standby: Some(StandbyReport {
                trace: DEFAULT_TRACE_NAME.into(),
                trace_scale: 1.0,
                link_mean_mbps: 2.8,
                syncs: Vec::new(),
                sync_bytes: 0,
                cut_at_percent: 40.1,
                resumed_at_percent: 20.0,
                lost_progress: 20.1,
                interval_progress: 30.0,
                outage_ms: 10_000,
                failover_ms: 3_500,
                failback_ms: 2_000,
                stopped_at_percent: 50.0,
                finished_on: "aarch64".into(),
            }),
            ended_early: None,
            finished_on: "aarch64".into(),
        };
        let json = serde_json::to_value(&report).unwrap();
        assert_eq!(json["scenario"], "sync");
        let standby = &json["standby"];
        for key in [
            "syncs",
            "sync_bytes",
            "lost_progress",
            "failover_ms",
            "failback_ms",
            "trace",
        ] {
            assert!(standby.get(key).is_some(), "{key} missing: {json}");
        }
    }
}
