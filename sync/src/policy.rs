//! Sync-interval policies: when should the owner send the next delta to the standby?
//!
//! The trade-off: every sync costs transfer time; every outage costs the progress made
//! since the last completed sync. See `docs/sync.md` for the derivations, NAPS's flaws
//! and the corrected policies.

use alloc::collections::VecDeque;
use alloc::format;
use alloc::string::String;

/// What a policy may look at when asked whether to sync now. Units: seconds and bytes.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct LinkView {
    /// Current time.
    pub now_s: f64,
    /// Whether the peer is reachable (a sync is only possible when it is).
    pub link_up: bool,
    /// When the standby's replica was last made consistent (sync snapshot or failback).
    pub last_sync_s: f64,
    /// Measured bandwidth right now, bytes/s (NAPS's B_t).
    pub bandwidth: f64,
    /// Forecast bandwidth for the next transfer, bytes/s.
    pub predicted_bandwidth: f64,
    /// One-way latency, seconds (NAPS's L_t; part of every transfer's cost).
    pub latency_s: f64,
    /// Estimated outage rate λ, per second.
    pub outage_rate: f64,
    /// Size of the task state that can be dirtied, bytes.
    pub state_bytes: f64,
    /// Rate at which the task writes into its state, bytes/s.
    pub write_rate: f64,
    /// Expected compression ratio θ (uncompressed / compressed) of the next delta.
    pub compression_ratio: f64,
    /// Fixed bytes every sync sends besides dirty pages (manifest, registers, bitmap).
    pub overhead_bytes: f64,
}

/// Expected dirty bytes `elapsed_s` after a sync when writes of `write_rate` bytes/s land
/// uniformly at random on `state_bytes`: `S·(1 − e^{−w·t/S})` (rewrites of an already
/// dirty page add nothing).
pub fn expected_delta_bytes(state_bytes: f64, write_rate: f64, elapsed_s: f64) -> f64 {
    if state_bytes <= 0.0 || write_rate <= 0.0 || elapsed_s <= 0.0 {
        return 0.0;
    }
    state_bytes * (1.0 - libm::exp(-write_rate * elapsed_s / state_bytes))
}

impl LinkView {
    /// Expected seconds the link spends sending the delta accumulated over an interval
    /// `t`: (overhead + dirty bytes / ratio) / predicted bandwidth. This is what a sync
    /// costs; waiting for the latency costs nothing.
    pub fn send_time(&self, t: f64) -> f64 {
        let bytes = self.overhead_bytes
            + expected_delta_bytes(self.state_bytes, self.write_rate, t)
                / self.compression_ratio.max(1.0);
        bytes / self.predicted_bandwidth.max(1.0)
    }

    /// Expected seconds from a sync's snapshot until the standby holds it (latency +
    /// [`LinkView::send_time`]): the window in which an outage still loses the
    /// progress since the previous sync.
    pub fn transfer_cost(&self, t: f64) -> f64 {
        self.latency_s + self.send_time(t)
    }
}

/// Decides, at each call, whether to start a sync now.
pub trait SyncPolicy {
    /// Name used in reports, including parameters.
    fn name(&self) -> String;
    /// Called periodically (every simulation tick, or every kernel timer tick); returns
    /// true to start a sync now. Only called while no sync is in flight.
    fn should_sync(&mut self, view: &LinkView) -> bool;
    /// The interval the policy is currently aiming for, in seconds, if it has one.
    fn target_interval(&self) -> Option<f64>;
}

/// Syncs on a fixed grid `k·T`; a slot that falls in an outage is skipped, as in the
/// thesis's fixed-interval baseline.
#[derive(Clone, Debug)]
pub struct Fixed {
    interval_s: f64,
    next_due: f64,
}

impl Fixed {
    /// Fixed interval `interval_s` starting at `start_s`.
    pub fn new(interval_s: f64, start_s: f64) -> Self {
        Fixed {
            interval_s,
            next_due: start_s + interval_s,
        }
    }
}

impl SyncPolicy for Fixed {
    fn name(&self) -> String {
        format!("fixed-{}", fmt_duration(self.interval_s))
    }
    fn should_sync(&mut self, view: &LinkView) -> bool {
        if view.now_s < self.next_due {
            return false;
        }
        while self.next_due <= view.now_s {
            self.next_due += self.interval_s;
        }
        view.link_up
    }
    fn target_interval(&self) -> Option<f64> {
        Some(self.interval_s)
    }
}

/// Short human form of a duration in seconds (`90s`, `4min`).
pub fn fmt_duration(s: f64) -> String {
    if s >= 60.0 && libm::fmod(s, 60.0) == 0.0 {
        format!("{}min", s / 60.0)
    } else {
        format!("{s}s")
    }
}

/// NAPS exactly as published (thesis §3.3, eqs. 3-1…3-4).
///
/// Every evaluation interval I it takes the mean bandwidth B_t and latency L_t of the
/// interval just ended, keeps the last `n` of them, and computes
/// `P^B = (B_t − B_min)/(B_max − B_min)`, `P^L = 1 − (L_t − L_min)/(L_max − L_min)`,
/// `P = 1 − (1 − P^B)(1 − P^L)` and `S* = sqrt(M_t / P)`. Syncs happen only at the end of
/// an evaluation interval, when the time since the last sync has reached S*.
///
/// The thesis gives no units; we read M_t in megabytes and S in minutes (the reading
/// that gives intervals of the size in its Table 4-3). When B_max = B_min (or L_max =
/// L_min) the published ratio is 0/0; we take that term as 0. P = 0 gives S* = ∞ (no
/// sync at this evaluation). These are the only choices we made; the flaws (P rises
/// with *better* bandwidth, V mixes units) are kept on purpose, see `docs/sync.md`.
#[derive(Clone, Debug)]
pub struct Naps {
    eval_s: f64,
    window: usize,
    next_eval: f64,
    acc_b: f64,
    acc_l: f64,
    acc_n: u32,
    samples: VecDeque<(f64, f64)>,
    target_s: Option<f64>,
}

impl Naps {
    /// NAPS with evaluation interval `eval_s` and window `n` samples, starting at `start_s`.
    pub fn new(eval_s: f64, n: usize, start_s: f64) -> Self {
        Naps {
            eval_s,
            window: n.max(1),
            next_eval: start_s + eval_s,
            acc_b: 0.0,
            acc_l: 0.0,
            acc_n: 0,
            samples: VecDeque::new(),
            target_s: None,
        }
    }

    /// Eqs. 3-1…3-3 on the window: the published outage "probability" P_t.
    pub fn probability(samples: &VecDeque<(f64, f64)>) -> Option<f64> {
        let &(b, l) = samples.back()?;
        let (mut bmin, mut bmax, mut lmin, mut lmax) = (b, b, l, l);
        for &(bi, li) in samples {
            bmin = bmin.min(bi);
            bmax = bmax.max(bi);
            lmin = lmin.min(li);
            lmax = lmax.max(li);
        }
        let pb = if bmax > bmin {
            (b - bmin) / (bmax - bmin)
        } else {
            0.0
        };
        let pl = if lmax > lmin {
            1.0 - (l - lmin) / (lmax - lmin)
        } else {
            0.0
        };
        Some(1.0 - (1.0 - pb) * (1.0 - pl))
    }

    /// Eq. 3-4's minimiser S* = sqrt(M/P) with M in MB, returned in seconds (S in min).
    pub fn interval_s(delta_bytes: f64, p: f64) -> f64 {
        if p <= 0.0 {
            return f64::INFINITY;
        }
        libm::sqrt(delta_bytes / 1e6 / p) * 60.0
    }
}

impl SyncPolicy for Naps {
    fn name(&self) -> String {
        format!("naps-I{}", fmt_duration(self.eval_s))
    }
    fn should_sync(&mut self, view: &LinkView) -> bool {
        if view.link_up {
            self.acc_b += view.bandwidth;
            self.acc_l += view.latency_s;
            self.acc_n += 1;
        }
        if view.now_s < self.next_eval {
            return false;
        }
        while self.next_eval <= view.now_s {
            self.next_eval += self.eval_s;
        }
        if self.acc_n > 0 {
            let n = self.acc_n as f64;
            if self.samples.len() == self.window {
                self.samples.pop_front();
            }
            self.samples.push_back((self.acc_b / n, self.acc_l / n));
        }
        self.acc_b = 0.0;
        self.acc_l = 0.0;
        self.acc_n = 0;
        let Some(p) = Self::probability(&self.samples) else {
            return false;
        };
        let m = expected_delta_bytes(
            view.state_bytes,
            view.write_rate,
            view.now_s - view.last_sync_s,
        );
        let s = Self::interval_s(m, p);
        self.target_s = Some(s);
        view.link_up && view.now_s - view.last_sync_s >= s
    }
    fn target_interval(&self) -> Option<f64> {
        self.target_s
    }
}

/// Bounds every model-based interval: at least `min_s`, at most `max_s`.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Bounds {
    /// Shortest interval, seconds.
    pub min_s: f64,
    /// Longest interval, seconds.
    pub max_s: f64,
}

impl Default for Bounds {
    fn default() -> Self {
        Bounds {
            min_s: 1.0,
            max_s: 3600.0,
        }
    }
}

/// Which first-order checkpoint formula a [`Young`] policy uses.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum YoungForm {
    /// Young (1974): T* = sqrt(2C/λ).
    Young,
    /// Daly (2006) higher-order refinement, with MTBF M = 1/λ:
    /// T* = sqrt(2CM)·[1 + ⅓·sqrt(C/2M) + (1/9)·(C/2M)] − C for C < 2M, else T* = M.
    Daly,
}

/// Young/Daly interval with C = expected transfer time of the next delta (which itself
/// depends on the interval, so the formula is iterated to its fixed point) and λ from
/// the monitor's outage history.
#[derive(Clone, Debug)]
pub struct Young {
    form: YoungForm,
    bounds: Bounds,
    target_s: Option<f64>,
}

impl Young {
    /// A Young or Daly policy clamped to `bounds`.
    pub fn new(form: YoungForm, bounds: Bounds) -> Self {
        Young {
            form,
            bounds,
            target_s: None,
        }
    }

    /// The closed-form interval for checkpoint cost `c` and outage rate `lambda`.
    pub fn formula(form: YoungForm, c: f64, lambda: f64) -> f64 {
        if lambda <= 0.0 {
            return f64::INFINITY;
        }
        match form {
            YoungForm::Young => libm::sqrt(2.0 * c / lambda),
            YoungForm::Daly => {
                let m = 1.0 / lambda;
                if c >= 2.0 * m {
                    return m;
                }
                let r = c / (2.0 * m);
                libm::sqrt(2.0 * c * m) * (1.0 + libm::sqrt(r) / 3.0 + r / 9.0) - c
            }
        }
    }

    fn interval(&self, view: &LinkView) -> f64 {
        let mut t = self.target_s.unwrap_or(self.bounds.min_s);
        for _ in 0..16 {
            let c = view.send_time(t);
            let next = Self::formula(self.form, c, view.outage_rate)
                .clamp(self.bounds.min_s, self.bounds.max_s);
            if (next - t).abs() < 1e-3 * t {
                return next;
            }
            t = next;
        }
        t
    }
}

impl SyncPolicy for Young {
    fn name(&self) -> String {
        match self.form {
            YoungForm::Young => "young".into(),
            YoungForm::Daly => "daly".into(),
        }
    }
    fn should_sync(&mut self, view: &LinkView) -> bool {
        let t = self.interval(view);
        self.target_s = Some(t);
        view.link_up && view.now_s - view.last_sync_s >= t
    }
    fn target_interval(&self) -> Option<f64> {
        self.target_s
    }
}

/// Ours: minimises the expected cost per unit time of a renewal cycle of length T,
/// `g(T) = C(T)/T + λ·(T/2 + C(T))`, where C(T) is the transfer time of the delta an
/// interval T accumulates (saturating, see [`expected_delta_bytes`]) and the λ·C term
/// charges the progress lost when an outage hits a transfer in flight. With a constant C
/// and λ·C ≪ 1 this reduces to Young's rule; with a saturating delta it does not, and
/// Young's fixed point then over- or under-shoots. Minimised numerically (log grid,
/// then golden-section refinement) within the bounds.
#[derive(Clone, Debug)]
pub struct CostRate {
    bounds: Bounds,
    target_s: Option<f64>,
}

impl CostRate {
    /// The cost-rate policy clamped to `bounds`.
    pub fn new(bounds: Bounds) -> Self {
        CostRate {
            bounds,
            target_s: None,
        }
    }

    /// Expected cost per second of running with interval `t`.
    pub fn cost_rate(view: &LinkView, t: f64) -> f64 {
        view.send_time(t) / t + view.outage_rate * (t / 2.0 + view.transfer_cost(t))
    }

    /// The minimiser of [`CostRate::cost_rate`] within `bounds`.
    pub fn optimum(view: &LinkView, bounds: Bounds) -> f64 {
        const GRID: usize = 48;
        let (lo, hi) = (libm::log(bounds.min_s), libm::log(bounds.max_s));
        let at = |i: usize| libm::exp(lo + (hi - lo) * i as f64 / GRID as f64);
        let best = (0..=GRID)
            .min_by(|&a, &b| Self::cost_rate(view, at(a)).total_cmp(&Self::cost_rate(view, at(b))))
            .unwrap_or(0);
        let (mut a, mut b) = (at(best.saturating_sub(1)), at((best + 1).min(GRID)));
        let phi = (libm::sqrt(5.0) - 1.0) / 2.0;
        for _ in 0..40 {
            let x1 = b - phi * (b - a);
            let x2 = a + phi * (b - a);
            if Self::cost_rate(view, x1) <= Self::cost_rate(view, x2) {
                b = x2;
            } else {
                a = x1;
            }
        }
        (a + b) / 2.0
    }
}

impl SyncPolicy for CostRate {
    fn name(&self) -> String {
        "cost-rate".into()
    }
    fn should_sync(&mut self, view: &LinkView) -> bool {
        let t = Self::optimum(view, self.bounds);
        self.target_s = Some(t);
        view.link_up && view.now_s - view.last_sync_s >= t
    }
    fn target_interval(&self) -> Option<f64> {
        self.target_s
    }
}

/// Name of the policy the kernel runs by default.
pub const DEFAULT_POLICY: &str = "cost-rate";

#[cfg(test)]
mod tests {
    use super::*;

    fn view() -> LinkView {
        LinkView {
            now_s: 0.0,
            link_up: true,
            last_sync_s: 0.0,
            bandwidth: 1e6,
            predicted_bandwidth: 1e6,
            latency_s: 0.0,
            outage_rate: 1.0 / 3600.0,
            state_bytes: 64e6,
            write_rate: 0.0,
            compression_ratio: 1.0,
            overhead_bytes: 0.0,
        }
    }

    #[test]
    fn young_and_daly_on_known_values() {
        // C = 50 s, λ = 1/10000 s⁻¹: T* = sqrt(2·50·10000) = 1000 s.
        assert!((Young::formula(YoungForm::Young, 50.0, 1e-4) - 1000.0).abs() < 1e-9);
        // Daly: r = 50/20000 = 0.0025, sqrt(r) = 0.05:
        // 1000·(1 + 0.05/3 + 0.0025/9) − 50 = 966.944…
        let d = Young::formula(YoungForm::Daly, 50.0, 1e-4);
        assert!((d - (1000.0 * (1.0 + 0.05 / 3.0 + 0.0025 / 9.0) - 50.0)).abs() < 1e-9);
        // C ≥ 2M: interval = M.
        assert_eq!(Young::formula(YoungForm::Daly, 30.0, 0.1), 10.0);
    }

    #[test]
    fn young_policy_reaches_fixed_point_for_constant_cost() {
        // write_rate = 0 → C = overhead / bandwidth = 2 s, λ = 1/3600 →
        // T* = sqrt(14400) = 120 s.
        let v = LinkView {
            overhead_bytes: 2e6,
            ..view()
        };
        let mut y = Young::new(YoungForm::Young, Bounds::default());
        assert!(!y.should_sync(&v));
        assert!((y.target_interval().unwrap() - 120.0).abs() < 1e-6);
        assert!(y.should_sync(&LinkView { now_s: 120.5, ..v }));
        // Never while the link is down.
        assert!(!y.should_sync(&LinkView {
            now_s: 500.0,
            link_up: false,
            ..v
        }));
    }

    #[test]
    fn cost_rate_matches_young_when_cost_is_constant() {
        let v = LinkView {
            overhead_bytes: 2e6,
            outage_rate: 1e-5,
            ..view()
        };
        let t = CostRate::optimum(&v, Bounds::default());
        // g(T) = C/T + λT/2 + λC has its minimum at sqrt(2C/λ) = sqrt(4e5) ≈ 632.5 s.
        assert!((t - libm::sqrt(4e5)).abs() < 0.5, "t = {t}");
    }

    #[test]
    fn latency_is_exposure_not_cost() {
        // Waiting for the round trip costs nothing, so latency does not move the
        // interval; it only lengthens the window in which an outage still loses the
        // progress since the previous sync.
        let v = LinkView {
            overhead_bytes: 2e6,
            outage_rate: 1e-5,
            ..view()
        };
        let slow = LinkView {
            latency_s: 0.5,
            ..v
        };
        assert_eq!(slow.send_time(60.0), v.send_time(60.0));
        assert_eq!(slow.transfer_cost(60.0), v.transfer_cost(60.0) + 0.5);
        let (a, b) = (
            CostRate::optimum(&v, Bounds::default()),
            CostRate::optimum(&slow, Bounds::default()),
        );
        assert!((a - b).abs() < 1e-3 * a, "{a} {b}");
    }

    #[test]
    fn cost_rate_stops_syncing_without_outages() {
        // λ = 0: any sync is pure cost, so the interval is the longest allowed.
        let v = LinkView {
            write_rate: 1e5,
            outage_rate: 0.0,
            ..view()
        };
        let t = CostRate::optimum(&v, Bounds::default());
        assert!(t > 0.99 * Bounds::default().max_s, "t = {t}");
    }

    #[test]
    fn cost_rate_syncs_sooner_when_outages_are_frequent() {
        let base = LinkView {
            write_rate: 1e6,
            latency_s: 0.05,
            ..view()
        };
        let calm = CostRate::optimum(&base, Bounds::default());
        let stormy = CostRate::optimum(
            &LinkView {
                outage_rate: 1.0 / 120.0,
                ..base
            },
            Bounds::default(),
        );
        assert!(stormy < calm, "stormy {stormy} calm {calm}");
    }

    #[test]
    fn naps_formula_reproduces_a_hand_computed_example() {
        // Window: B = 2, 6, 4 MB/s; L = 30, 10, 20 ms; current (last) B = 4, L = 20.
        // P^B = (4−2)/(6−2) = 0.5; P^L = 1 − (20−10)/(30−10) = 0.5;
        // P = 1 − 0.5·0.5 = 0.75; M = 48 MB → S* = sqrt(48/0.75) = 8 min = 480 s.
        let w: VecDeque<(f64, f64)> = [(2.0, 0.030), (6.0, 0.010), (4.0, 0.020)]
            .into_iter()
            .collect();
        let p = Naps::probability(&w).unwrap();
        assert!((p - 0.75).abs() < 1e-12);
        assert!((Naps::interval_s(48e6, p) - 480.0).abs() < 1e-9);
        // The published flaw: best bandwidth and best latency give P = 1.
        let best: VecDeque<(f64, f64)> = [(2.0, 0.030), (6.0, 0.010)].into_iter().collect();
        assert_eq!(Naps::probability(&best), Some(1.0));
    }

    #[test]
    fn naps_syncs_only_at_evaluation_boundaries() {
        let mut n = Naps::new(240.0, 4, 0.0);
        let mut syncs = alloc::vec::Vec::new();
        let mut last = 0.0;
        for t in 1..=2400 {
            // Bandwidth alternating per evaluation interval so P varies.
            let b = if (t / 240) % 2 == 0 { 1e6 } else { 3e6 };
            let v = LinkView {
                now_s: t as f64,
                last_sync_s: last,
                bandwidth: b,
                write_rate: 1e5,
                ..view()
            };
            if n.should_sync(&v) {
                syncs.push(t);
                last = t as f64;
            }
        }
        assert!(!syncs.is_empty());
        assert!(syncs.iter().all(|t| t % 240 == 0), "{syncs:?}");
    }

    #[test]
    fn fixed_skips_slots_during_outages() {
        let mut f = Fixed::new(10.0, 0.0);
        let mut at = |t: f64, up: bool| {
            f.should_sync(&LinkView {
                now_s: t,
                link_up: up,
                ..view()
            })
        };
        assert!(!at(9.0, true));
        assert!(!at(10.0, false));
        assert!(!at(15.0, true));
        assert!(at(20.0, true));
    }

    #[test]
    fn delta_model_saturates_at_state_size() {
        assert_eq!(expected_delta_bytes(100.0, 1.0, 0.0), 0.0);
        assert!((expected_delta_bytes(100.0, 1.0, 1e-3) - 1e-3).abs() < 1e-6);
        assert!((expected_delta_bytes(100.0, 1.0, 1e5) - 100.0).abs() < 1e-9);
    }
}
