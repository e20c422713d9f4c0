//! `policy`: a deterministic discrete-time simulator (1 s ticks) of an owner syncing a
//! standby over a link with outages, for every sync-interval policy.
//!
//! Model (docs/sync.md §Simulator): the task writes `write_rate` bytes/s uniformly over
//! `state` bytes, so a sync after t seconds sends `overhead + S·(1 − e^{−w·t/S})` bytes
//! (divided by the compression ratio). A transfer proceeds at the bandwidth of each
//! second; if the link drops while it is in flight it fails (its seconds still count).
//! An outage lasting at least the lease triggers failover: the standby resumes from its
//! replica, so the progress made since the last *completed* sync snapshot is recomputed
//! (lost); when the link returns, failback makes both sides consistent again. Cost =
//! seconds spent sending + seconds of lost progress, the same for every policy.

use serde::Serialize;
use tern_sync::monitor::{LinkMonitor, MonitorConfig, OutagePrior};
use tern_sync::policy::{
    expected_delta_bytes, fmt_duration, Bounds, CostRate, Fixed, LinkView, Naps, SyncPolicy, Young,
    YoungForm, DEFAULT_POLICY,
};
use tern_sync::predict::{Adaptive, AdaptiveConfig};

use tern_lab::trace::Trace;

/// splitmix64: a small seeded generator, so every run is reproducible from its seed.
#[derive(Clone, Debug)]
pub struct Rng(u64);

impl Rng {
    /// Generator for `seed`.
    pub fn new(seed: u64) -> Self {
        Rng(seed)
    }
    /// Uniform in [0, 1).
    pub fn uniform(&mut self) -> f64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^= z >> 31;
        (z >> 11) as f64 / (1u64 << 53) as f64
    }
    /// Exponential with the given mean.
    pub fn exp(&mut self, mean: f64) -> f64 {
        -mean * (1.0 - self.uniform()).ln()
    }
    /// Standard normal (Box–Muller).
    pub fn normal(&mut self) -> f64 {
        let u1 = 1.0 - self.uniform();
        let u2 = self.uniform();
        (-2.0 * u1.ln()).sqrt() * (std::f64::consts::TAU * u2).cos()
    }
}

/// Link conditions during one second.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Tick {
    /// Bandwidth, bytes/s.
    pub bw: f64,
    /// One-way latency, seconds.
    pub latency: f64,
    /// Whether the link is up.
    pub up: bool,
}

/// The three synthetic network scenarios of thesis §4.2 (good: stable, no outages;
/// fair: some fluctuation and outages; poor: large fluctuation, frequent outages). The
/// thesis gives no numbers for them; ours are in docs/sync.md.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Scenario {
    /// Stable link, no outages.
    Good,
    /// Moderate fluctuation, outages every ~30 min.
    Fair,
    /// Large fluctuation, outages every ~8 min.
    Poor,
}

/// Parameters of a synthetic scenario.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct ScenarioParams {
    /// Mean bandwidth, MB/s.
    pub mean_bw_mbs: f64,
    /// Standard deviation of log-bandwidth.
    pub sigma: f64,
    /// Median one-way latency, seconds.
    pub latency_s: f64,
    /// Standard deviation of log-latency.
    pub latency_sigma: f64,
    /// Mean time between outages, seconds (None: no outages).
    pub mtbf_s: Option<f64>,
    /// Mean outage duration, seconds.
    pub outage_mean_s: f64,
    /// Seconds before an outage during which the link fades (bandwidth down to 20%,
    /// latency up to 3×), the signal NAPS assumes is there.
    pub fade_s: f64,
}

/// Length of a thesis scenario: 120 min (fixed 4 min gives its 29 syncs).
pub const SCENARIO_S: usize = 7200;

impl Scenario {
    /// The parameters we use for this scenario.
    pub fn params(self) -> ScenarioParams {
        match self {
            Scenario::Good => ScenarioParams {
                mean_bw_mbs: 8.0,
                sigma: 0.1,
                latency_s: 0.02,
                latency_sigma: 0.2,
                mtbf_s: None,
                outage_mean_s: 0.0,
                fade_s: 0.0,
            },
            Scenario::Fair => ScenarioParams {
                mean_bw_mbs: 4.0,
                sigma: 0.3,
                latency_s: 0.05,
                latency_sigma: 0.4,
                mtbf_s: Some(1800.0),
                outage_mean_s: 60.0,
                fade_s: 30.0,
            },
            Scenario::Poor => ScenarioParams {
                mean_bw_mbs: 1.5,
                sigma: 0.5,
                latency_s: 0.15,
                latency_sigma: 0.6,
                mtbf_s: Some(480.0),
                outage_mean_s: 150.0,
                fade_s: 30.0,
            },
        }
    }

    /// Name for reports.
    pub fn name(self) -> &'static str {
        match self {
            Scenario::Good => "good",
            Scenario::Fair => "fair",
            Scenario::Poor => "poor",
        }
    }

    /// Generates the scenario's timeline for `seed`.
    pub fn timeline(self, seed: u64) -> Vec<Tick> {
        let p = self.params();
        let mut rng = Rng::new(seed);
        // Log-normal AR(1) processes with lag-1 correlation RHO.
        const RHO: f64 = 0.95;
        let innov = (1.0 - RHO * RHO).sqrt();
        let (mut zb, mut zl) = (0.0, 0.0);
        let mut ticks: Vec<Tick> = (0..SCENARIO_S)
            .map(|_| {
                zb = RHO * zb + innov * p.sigma * rng.normal();
                zl = RHO * zl + innov * p.latency_sigma * rng.normal();
                Tick {
                    bw: p.mean_bw_mbs * 1e6 * (zb - p.sigma * p.sigma / 2.0).exp(),
                    latency: p.latency_s * zl.exp(),
                    up: true,
                }
            })
            .collect();
        if let Some(mtbf) = p.mtbf_s {
            inject_outages(&mut ticks, &mut rng, mtbf, p.outage_mean_s, p.fade_s);
        }
        ticks
    }
}

/// Marks Poisson outages (exponential gaps of mean `mtbf` between the end of one outage
/// and the start of the next, exponential durations of mean `mean_s`, at least 1 s)
/// with a linear fade over the `fade_s` seconds before each.
pub fn inject_outages(ticks: &mut [Tick], rng: &mut Rng, mtbf: f64, mean_s: f64, fade_s: f64) {
    let mut t = rng.exp(mtbf);
    while (t as usize) < ticks.len() {
        let start = t as usize;
        let len = rng.exp(mean_s).ceil().max(1.0) as usize;
        let fade = fade_s as usize;
        let from = start.saturating_sub(fade);
        for (k, tick) in ticks.iter_mut().enumerate().take(start).skip(from) {
            let depth = (k + fade - start + 1) as f64 / (fade + 1) as f64;
            tick.bw *= 1.0 - 0.8 * depth;
            tick.latency *= 1.0 + 2.0 * depth;
        }
        for tick in ticks.iter_mut().skip(start).take(len) {
            tick.up = false;
        }
        t = (start + len) as f64 + rng.exp(mtbf);
    }
}

/// Latency assumed for real traces, which carry none (one-way, seconds).
pub const TRACE_LATENCY_S: f64 = 0.05;

/// Outages injected on top of a set of traces' gaps: mean time between, mean length,
/// seed of the first trace.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Injection {
    /// Mean time between injected outages, seconds.
    pub mtbf_s: f64,
    /// Mean length, seconds.
    pub mean_s: f64,
    /// Seed of trace 0; trace i uses `seed + i`.
    pub seed: u64,
}

impl Injection {
    /// The (mean time between, mean length, seed) [`trace_timeline`] takes for trace
    /// `i` of the set.
    pub fn for_trace(self, i: usize) -> (f64, f64, u64) {
        (self.mtbf_s, self.mean_s, self.seed.wrapping_add(i as u64))
    }
}

/// Timeline of a real trace at 1 s resolution: each sample's throughput holds until the
/// next sample; a gap longer than twice the sampling period is an outage after one
/// period. Injected outages (without fade) come on top when `inject` is given as
/// (mtbf, mean duration, seed).
pub fn trace_timeline(tr: &Trace, inject: Option<(f64, f64, u64)>) -> Vec<Tick> {
    let period = tr.period();
    let t0 = tr.times[0];
    let end = tr.times[tr.times.len() - 1] + period - t0;
    let n = end.ceil() as usize;
    let mut ticks = Vec::with_capacity(n);
    let mut i = 0;
    for s in 0..n {
        let now = t0 + s as f64;
        while i + 1 < tr.times.len() && tr.times[i + 1] <= now {
            i += 1;
        }
        let gap = tr
            .times
            .get(i + 1)
            .map_or(period, |next| next - tr.times[i]);
        let up = !(gap > 2.0 * period && now >= tr.times[i] + period);
        ticks.push(Tick {
            bw: tr.mbps[i] * 1e6 / 8.0,
            latency: TRACE_LATENCY_S,
            up,
        });
    }
    if let Some((mtbf, mean_s, seed)) = inject {
        inject_outages(&mut ticks, &mut Rng::new(seed), mtbf, mean_s, 0.0);
    }
    ticks
}

/// What the task and the sync protocol look like.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Workload {
    /// State size, bytes.
    pub state_bytes: f64,
    /// Write rate into the state, bytes/s.
    pub write_rate: f64,
    /// Compression ratio of deltas.
    pub ratio: f64,
    /// Fixed bytes per sync.
    pub overhead_bytes: f64,
    /// Heartbeat lease, seconds: shorter outages cause no failover.
    pub lease_s: f64,
}

/// The sync layer's parameters that are chosen from data: the bandwidth predictor's
/// configuration and the outage prior. [`Tuned::default`] is what the kernel runs.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct Tuned {
    /// The monitor's bandwidth predictor.
    pub predictor: AdaptiveConfig,
    /// The monitor's prior on the outage rate.
    pub prior: OutagePrior,
}

/// The monitor's view of the link at each tick; it does not depend on the policy, so it
/// is computed once per timeline and shared by all policies.
///
/// One monitor runs through all timelines of an invocation in order (its clock
/// continuing from one to the next), so the outage-rate estimate learns from history
/// the way a long-lived kernel session's does (docs/sync.md §5).
#[derive(Clone, Copy, Debug)]
struct Observed {
    bandwidth: f64,
    predicted: f64,
    latency: f64,
    outage_rate: f64,
}

/// A monitor as the kernel builds one, with `tuned`'s predictor and prior.
fn monitor(w: &Workload, tuned: &Tuned) -> LinkMonitor {
    let cfg = MonitorConfig {
        lease_s: w.lease_s,
        outage_prior: tuned.prior,
        ..MonitorConfig::default()
    };
    LinkMonitor::with_predictor(cfg, 0.0, Box::new(Adaptive::new(tuned.predictor, 1)))
}

/// What `m` reports at each tick of `timelines`, run through in order; `m`'s clock
/// starts at 0 and continues from one timeline to the next.
fn observe_all(timelines: &[Vec<Tick>], m: &mut LinkMonitor) -> Vec<Vec<Observed>> {
    let mut offset = 0.0;
    timelines
        .iter()
        .map(|ticks| {
            let seen = observe(ticks, m, offset);
            offset += ticks.len() as f64;
            seen
        })
        .collect()
}

fn observe(ticks: &[Tick], m: &mut LinkMonitor, offset: f64) -> Vec<Observed> {
    let mut out = Vec::with_capacity(ticks.len());
    let mut last = Observed {
        bandwidth: ticks.first().map_or(1.0, |t| t.bw),
        predicted: ticks.first().map_or(1.0, |t| t.bw),
        latency: ticks.first().map_or(0.0, |t| t.latency),
        outage_rate: 0.0,
    };
    for (s, tick) in ticks.iter().enumerate() {
        let now = offset + s as f64 + 1.0;
        // Timestamps increase and durations are positive, so these cannot fail; a
        // failure would only leave the previous observation in place.
        if tick.up {
            let bytes = tick.bw.max(1.0) as u64;
            if m.record_heartbeat(now, 2.0 * tick.latency.max(1e-6))
                .is_ok()
                && m.record_transfer(now, bytes, 1.0).is_ok()
            {
                last.bandwidth = tick.bw;
                last.latency = m.rtt().map_or(tick.latency, |r| r / 2.0);
                last.predicted = m.predicted_bandwidth(1).unwrap_or(tick.bw);
            }
        } else if m.poll(now).is_err() {
            continue;
        }
        last.outage_rate = m.outage_rate();
        out.push(last);
    }
    out
}

/// Totals of one policy over a run.
#[derive(Clone, Debug, Default, Serialize, PartialEq)]
pub struct Outcome {
    /// Policy name.
    pub name: String,
    /// Completed syncs.
    pub syncs: f64,
    /// Bytes sent (including failed transfers).
    pub bytes: f64,
    /// Seconds of progress recomputed after failovers.
    pub lost_progress: f64,
    /// Seconds sending + seconds recomputing.
    pub cost: f64,
    /// Whether this is the kernel's default policy.
    pub used: bool,
    /// Failovers (outages at least one lease long).
    pub failovers: f64,
}

impl Outcome {
    /// Adds `o`'s counts to these.
    pub fn add(&mut self, o: &Outcome) {
        self.syncs += o.syncs;
        self.bytes += o.bytes;
        self.lost_progress += o.lost_progress;
        self.cost += o.cost;
        self.failovers += o.failovers;
    }
    fn scale(&mut self, k: f64) {
        self.syncs *= k;
        self.bytes *= k;
        self.lost_progress *= k;
        self.cost *= k;
        self.failovers *= k;
    }
}

struct Transfer {
    snapshot: f64,
    remaining: f64,
}

/// Runs `policy` over one timeline, seeing what the monitor saw (`seen`).
fn simulate(
    ticks: &[Tick],
    seen: &[Observed],
    w: &Workload,
    policy: &mut dyn SyncPolicy,
) -> Outcome {
    let mut o = Outcome {
        name: policy.name(),
        used: policy.name() == DEFAULT_POLICY,
        ..Outcome::default()
    };
    let mut last_sync = 0.0;
    let mut transfer: Option<Transfer> = None;
    let mut outage_start: Option<usize> = None;
    let mut sending_s = 0.0;
    for (s, (tick, obs)) in ticks.iter().zip(seen).enumerate() {
        let now = s as f64;
        if tick.up {
            if let Some(start) = outage_start.take() {
                if (s - start) as f64 >= w.lease_s {
                    o.lost_progress += start as f64 - last_sync;
                    o.failovers += 1.0;
                    last_sync = now;
                }
            }
        } else {
            outage_start.get_or_insert(s);
            transfer = None;
        }
        // The policy is asked every tick so its own clock (NAPS's evaluations, fixed
        // slots) runs; a "yes" while the link is down or a sync is in flight is moot.
        let view = LinkView {
            now_s: now,
            link_up: tick.up,
            last_sync_s: last_sync,
            bandwidth: obs.bandwidth,
            predicted_bandwidth: obs.predicted,
            latency_s: obs.latency,
            outage_rate: obs.outage_rate,
            state_bytes: w.state_bytes,
            write_rate: w.write_rate,
            compression_ratio: w.ratio,
            overhead_bytes: w.overhead_bytes,
        };
        if policy.should_sync(&view) && tick.up && transfer.is_none() {
            let delta = expected_delta_bytes(w.state_bytes, w.write_rate, now - last_sync);
            transfer = Some(Transfer {
                snapshot: now,
                remaining: w.overhead_bytes + delta / w.ratio.max(1.0),
            });
        }
        if let Some(tr) = transfer.as_mut() {
            let bw = tick.bw.max(1.0);
            let sent = tr.remaining.min(bw);
            tr.remaining -= sent;
            o.bytes += sent;
            sending_s += sent / bw;
            if tr.remaining <= 0.0 {
                last_sync = tr.snapshot;
                o.syncs += 1.0;
                transfer = None;
            }
        }
    }
    if let Some(start) = outage_start {
        if (ticks.len() - start) as f64 >= w.lease_s {
            o.lost_progress += start as f64 - last_sync;
            o.failovers += 1.0;
        }
    }
    o.cost = sending_s + o.lost_progress;
    o
}

/// The evaluation intervals (and fixed intervals) of thesis Table 4-3: 4, 8, 16 min.
pub const THESIS_INTERVALS_S: [f64; 3] = [240.0, 480.0, 960.0];

/// NAPS window n (the thesis does not give one).
pub const NAPS_WINDOW: usize = 6;

/// Fixed intervals swept for the best-in-hindsight baseline, seconds.
pub const SWEEP_S: [f64; 21] = [
    2.0, 5.0, 10.0, 20.0, 30.0, 45.0, 60.0, 90.0, 120.0, 180.0, 240.0, 300.0, 420.0, 600.0, 900.0,
    1200.0, 1800.0, 2700.0, 3600.0, 5400.0, 7200.0,
];

/// Every policy compared, fresh for a run starting at t = 0.
pub fn policies() -> Vec<Box<dyn SyncPolicy>> {
    let mut v: Vec<Box<dyn SyncPolicy>> = Vec::new();
    for i in THESIS_INTERVALS_S {
        v.push(Box::new(Naps::new(i, NAPS_WINDOW, 0.0)));
    }
    for i in THESIS_INTERVALS_S {
        v.push(Box::new(Fixed::new(i, 0.0)));
    }
    v.push(Box::new(Young::new(YoungForm::Young, Bounds::default())));
    v.push(Box::new(Young::new(YoungForm::Daly, Bounds::default())));
    v.push(Box::new(CostRate::new(Bounds::default())));
    v
}

/// Totals of every policy over some timelines, and of every interval of the fixed
/// sweep (the material of the best fixed interval in hindsight).
#[derive(Clone, Debug, Default)]
pub struct Totals {
    /// Per policy of [`policies`], in order.
    pub policies: Vec<Outcome>,
    /// Per interval of [`SWEEP_S`], in order.
    pub sweep: Vec<Outcome>,
}

impl Totals {
    /// Adds `o`'s totals to these (policy by policy, interval by interval).
    pub fn add(&mut self, o: &Totals) {
        if self.policies.is_empty() {
            *self = o.clone();
            return;
        }
        for (a, b) in self.policies.iter_mut().zip(&o.policies) {
            a.add(b);
        }
        for (a, b) in self.sweep.iter_mut().zip(&o.sweep) {
            a.add(b);
        }
    }

    /// The policies' totals with the best swept interval appended as
    /// `fixed-best-<T>`.
    pub fn with_best(&self) -> Vec<Outcome> {
        let mut v = self.policies.clone();
        if let Some((k, best)) = self
            .sweep
            .iter()
            .enumerate()
            .min_by(|a, b| a.1.cost.total_cmp(&b.1.cost))
        {
            let mut b = best.clone();
            b.name = format!("fixed-best-{}", fmt_duration(SWEEP_S[k]));
            v.push(b);
        }
        v
    }
}

/// Runs every policy, and the fixed sweep, over `timelines` with one monitor built
/// from `tuned` (see [`Observed`]).
pub fn run_totals(timelines: &[Vec<Tick>], w: &Workload, tuned: &Tuned) -> Totals {
    let seen = observe_all(timelines, &mut monitor(w, tuned));
    let mut totals = Totals {
        policies: policies()
            .iter()
            .map(|p| Outcome {
                name: p.name(),
                used: p.name() == DEFAULT_POLICY,
                ..Outcome::default()
            })
            .collect(),
        sweep: vec![Outcome::default(); SWEEP_S.len()],
    };
    for (ticks, seen) in timelines.iter().zip(&seen) {
        for (k, mut p) in policies().into_iter().enumerate() {
            totals.policies[k].add(&simulate(ticks, seen, w, p.as_mut()));
        }
        for (k, t) in SWEEP_S.iter().enumerate() {
            let o = simulate(ticks, seen, w, &mut Fixed::new(*t, 0.0));
            totals.sweep[k].add(&o);
        }
    }
    totals
}

/// Runs every policy, plus the fixed sweep, over a set of timelines with the
/// parameters `tuned`: one monitor through all of them, or with `fresh` one per
/// timeline (every run starts without history). Returns per-policy totals summed over
/// the timelines, with the best swept fixed interval appended as `fixed-best-<T>`.
pub fn run_all(timelines: &[Vec<Tick>], w: &Workload, tuned: &Tuned, fresh: bool) -> Vec<Outcome> {
    if !fresh {
        return run_totals(timelines, w, tuned).with_best();
    }
    let mut totals = Totals::default();
    for tl in timelines {
        totals.add(&run_totals(std::slice::from_ref(tl), w, tuned));
    }
    totals.with_best()
}

/// Divides every total by `runs` (means per run).
pub fn per_run(mut v: Vec<Outcome>, runs: usize) -> Vec<Outcome> {
    for o in v.iter_mut() {
        o.scale(1.0 / runs.max(1) as f64);
    }
    v
}

/// Thesis Table 4-3 as published: (scenario, policy, syncs, recomputed work).
pub const THESIS_TABLE_4_3: [(&str, &str, u32, u32); 18] = [
    ("good", "naps-I4min", 17, 0),
    ("good", "naps-I8min", 16, 0),
    ("good", "naps-I16min", 14, 0),
    ("good", "fixed-4min", 29, 0),
    ("good", "fixed-8min", 14, 0),
    ("good", "fixed-16min", 7, 0),
    ("fair", "naps-I4min", 14, 90),
    ("fair", "naps-I8min", 14, 50),
    ("fair", "naps-I16min", 16, 50),
    ("fair", "fixed-4min", 24, 50),
    ("fair", "fixed-8min", 11, 90),
    ("fair", "fixed-16min", 3, 330),
    ("poor", "naps-I4min", 8, 230),
    ("poor", "naps-I8min", 7, 270),
    ("poor", "naps-I16min", 7, 250),
    ("poor", "fixed-4min", 16, 120),
    ("poor", "fixed-8min", 6, 280),
    ("poor", "fixed-16min", 1, 600),
];

#[cfg(test)]
mod tests {
    use super::*;

    fn monitor() -> LinkMonitor {
        LinkMonitor::new(MonitorConfig::default(), 0.0)
    }

    fn workload() -> Workload {
        Workload {
            state_bytes: 64e6,
            write_rate: 0.2e6,
            ratio: 1.0,
            overhead_bytes: 16e3,
            lease_s: 3.0,
        }
    }

    #[test]
    fn fixed_interval_on_a_clean_link_matches_the_thesis_count() {
        let ticks = Scenario::Good.timeline(1);
        let seen = observe(&ticks, &mut monitor(), 0.0);
        let o = simulate(&ticks, &seen, &workload(), &mut Fixed::new(240.0, 0.0));
        assert_eq!(o.syncs, 29.0);
        assert_eq!(o.lost_progress, 0.0);
        assert!(o.cost > 0.0);
    }

    #[test]
    fn outage_loses_progress_since_last_completed_sync() {
        // 100 s up at 1 MB/s, 10 s down, 20 s up; fixed 30 s syncs of tiny deltas.
        let mut ticks = vec![
            Tick {
                bw: 1e6,
                latency: 0.01,
                up: true
            };
            130
        ];
        for t in ticks.iter_mut().skip(100).take(10) {
            t.up = false;
        }
        let seen = observe(&ticks, &mut monitor(), 0.0);
        let w = Workload {
            write_rate: 1000.0,
            overhead_bytes: 0.0,
            ..workload()
        };
        let o = simulate(&ticks, &seen, &w, &mut Fixed::new(30.0, 0.0));
        // Syncs at 30, 60, 90 complete within their second; outage at 100 loses 10 s.
        assert_eq!(o.lost_progress, 10.0);
        assert_eq!(o.failovers, 1.0);
        // Slot 120 is after failback at 110: one more sync.
        assert_eq!(o.syncs, 4.0);
    }

    #[test]
    fn timelines_are_deterministic_per_seed() {
        assert_eq!(Scenario::Poor.timeline(7), Scenario::Poor.timeline(7));
        assert_ne!(Scenario::Poor.timeline(7), Scenario::Poor.timeline(8));
        assert!(Scenario::Poor.timeline(7).iter().any(|t| !t.up));
        assert!(Scenario::Good.timeline(7).iter().all(|t| t.up));
    }

    #[test]
    fn trace_gaps_become_outages() {
        let tr = Trace::parse(std::path::Path::new("x"), "0 8\n1 8\n2 8\n10 8\n11 8\n").unwrap();
        let tl = trace_timeline(&tr, None);
        assert_eq!(tl.len(), 12);
        let down: Vec<usize> = (0..tl.len()).filter(|&i| !tl[i].up).collect();
        assert_eq!(down, (3..10).collect::<Vec<_>>());
        assert_eq!(tl[0].bw, 1e6);
    }
}
