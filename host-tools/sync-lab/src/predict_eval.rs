//! `predict`: scores every predictor on forecasting the mean throughput of the next
//! `horizon` seconds, pooled over all samples of the traces given; and the same under
//! leave-one-group-out cross-validation, where the adaptive predictor's parameters are
//! chosen on the other groups only (docs/sync.md §2).

use serde::Serialize;
use tern_sync::predict::{all_predictors, AdaptiveConfig, Combiner, MemberSet, USED_PREDICTOR};

use std::path::PathBuf;

use crate::sim::Rng;
use tern_lab::trace::{families, per_campaign, Group, Trace};

/// Samples every predictor sees before its forecasts are scored (the same for all, so
/// the model-based ones have a window to fit).
pub const WARMUP: usize = 16;

/// Pooled error of one predictor.
#[derive(Clone, Debug, Serialize, PartialEq)]
pub struct Score {
    /// Predictor name.
    pub name: String,
    /// Mean absolute error, Mbit/s.
    pub mae: f64,
    /// Mean relative error |forecast − actual| / actual (targets of 0 are skipped).
    pub mre: f64,
    /// Whether the sync layer uses this predictor.
    pub used: bool,
    /// Number of scored forecasts.
    #[serde(skip)]
    pub n: usize,
}

/// Error sums of one predictor over some forecasts.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct Sums {
    abs: f64,
    rel: f64,
    n: usize,
    n_rel: usize,
}

impl Sums {
    fn add(&mut self, forecast: f64, actual: f64) {
        let e = (forecast - actual).abs();
        self.abs += e;
        self.n += 1;
        if actual > 0.0 {
            self.rel += e / actual;
            self.n_rel += 1;
        }
    }

    fn merge(&mut self, o: &Sums) {
        self.abs += o.abs;
        self.rel += o.rel;
        self.n += o.n;
        self.n_rel += o.n_rel;
    }

    /// Mean absolute error.
    pub fn mae(&self) -> f64 {
        self.abs / self.n.max(1) as f64
    }

    fn score(&self, name: &str) -> Score {
        Score {
            name: name.to_string(),
            mae: self.mae(),
            mre: self.rel / self.n_rel.max(1) as f64,
            used: name == USED_PREDICTOR,
            n: self.n,
        }
    }
}

/// Horizon in samples for a trace: `horizon_s / period`, rounded, at least 1.
pub fn horizon_steps(horizon_s: f64, period: f64) -> usize {
    ((horizon_s / period).round() as usize).max(1)
}

/// Runs a forecaster over `x`: `step` gets each sample in turn and returns the forecast
/// of the mean of the next `h` samples made after it; forecasts after the warm-up whose
/// target lies within the trace are scored.
fn run(x: &[f64], h: usize, mut step: impl FnMut(usize, f64) -> Option<f64>) -> Sums {
    let mut prefix = vec![0.0; x.len() + 1];
    for (i, v) in x.iter().enumerate() {
        prefix[i + 1] = prefix[i] + v;
    }
    let mut sums = Sums::default();
    for t in 0..x.len().saturating_sub(h) {
        let f = step(t, x[t]);
        if t + 1 < WARMUP {
            continue;
        }
        if let Some(f) = f {
            sums.add(f, (prefix[t + 1 + h] - prefix[t + 1]) / h as f64);
        }
    }
    sums
}

/// The adaptive predictor's configurations cross-validation chooses among: every
/// decay, sharpness and member set below.
pub fn grid() -> Vec<AdaptiveConfig> {
    let mut v = Vec::new();
    for members in MemberSet::ALL {
        for decay in [0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2] {
            for sharpness in [2.5, 5.0, 10.0, 20.0, 40.0, 80.0, 160.0] {
                v.push(AdaptiveConfig {
                    decay,
                    sharpness,
                    members,
                });
            }
        }
    }
    v
}

/// One trace's error sums: of every predictor of [`all_predictors`] with its defaults
/// (`fixed`, empty when not asked for) and of the adaptive predictor under every
/// configuration of [`grid`] (`tuned`).
#[derive(Clone, Debug)]
pub struct TraceScores {
    /// Campaign.
    pub group: Group,
    /// Cross-validation group.
    pub family: String,
    fixed: Vec<Sums>,
    tuned: Vec<Sums>,
    /// Last value and EWMA(0.3), the baselines the tuning must beat on every group.
    baselines: [Sums; 2],
}

/// Scores one trace at `horizon_s`; `None` if it is too short for one scored forecast.
/// The members of the adaptive predictor run once and every configuration of `grid`
/// combines their forecasts (the same computation as [`tern_sync::predict::Adaptive`],
/// checked by a test).
pub fn score_trace(
    tr: &Trace,
    horizon_s: f64,
    grid: &[AdaptiveConfig],
    with_fixed: bool,
) -> Option<TraceScores> {
    let h = horizon_steps(horizon_s, tr.period());
    let x = &tr.mbps;
    if x.len() <= WARMUP + h {
        return None;
    }
    let fixed = if with_fixed {
        all_predictors(h)
            .into_iter()
            .map(|mut p| {
                run(x, h, |_, s| {
                    p.observe(s);
                    p.predict(h)
                })
            })
            .collect()
    } else {
        Vec::new()
    };
    let mut members = MemberSet::Extended.build();
    let table: Vec<Vec<Option<f64>>> = x
        .iter()
        .map(|&s| {
            members
                .iter_mut()
                .map(|m| {
                    m.observe(s);
                    m.predict(h)
                })
                .collect()
        })
        .collect();
    let baseline = |k: usize| run(x, h, |t, _| table[t][k]);
    let baselines = [baseline(0), baseline(1)];
    let tuned = grid
        .iter()
        .map(|cfg| {
            let mut c = Combiner::new(*cfg, h);
            run(x, h, |t, s| {
                c.step(s, &table[t])
                    .filter(|f| f.is_finite())
                    .map(|f| f.max(0.0))
            })
        })
        .collect();
    Some(TraceScores {
        group: tr.group,
        family: tr.family.clone(),
        fixed,
        tuned,
        baselines,
    })
}

/// Index of the configuration the tuning picks on `scores`. On every group it must
/// do at least as well as that group's better baseline (the lower of last value's and
/// EWMA's MAE): that is the goal itself, never worse than either on any group. Among
/// the configurations that meet it, the one with the lowest pooled MAE over the real
/// traces (the stress groups only constrain); if none meets it, the one whose worst
/// group comes closest.
pub fn select<'a>(scores: impl Iterator<Item = &'a TraceScores> + Clone, n: usize) -> usize {
    let mut groups: Vec<&str> = scores.clone().map(|s| s.family.as_str()).collect();
    groups.sort();
    groups.dedup();
    let pooled = |k: usize, keep: &dyn Fn(&TraceScores) -> bool| {
        let mut s = Sums::default();
        let mut base = [Sums::default(); 2];
        for t in scores.clone().filter(|t| keep(t)) {
            s.merge(&t.tuned[k]);
            base[0].merge(&t.baselines[0]);
            base[1].merge(&t.baselines[1]);
        }
        (s.mae(), base[0].mae().min(base[1].mae()))
    };
    let key = |k: usize| {
        let excess = groups
            .iter()
            .map(|g| {
                let (mae, base) = pooled(k, &|t| t.family == *g);
                let ratio = if base > 0.0 { mae / base } else { 1.0 };
                let allowed = if g.starts_with(STRESS) {
                    1.0 + STRESS_TOLERANCE
                } else {
                    1.0
                };
                (ratio - allowed).max(0.0)
            })
            .fold(0.0, f64::max);
        (excess, pooled(k, &|t| !is_stress(t)).0)
    };
    let keys: Vec<(f64, f64)> = (0..n).map(key).collect();
    (0..n)
        .min_by(|&a, &b| {
            keys[a]
                .0
                .total_cmp(&keys[b].0)
                .then(keys[a].1.total_cmp(&keys[b].1))
        })
        .unwrap_or(0)
}

/// Prefix of the stress groups' names.
const STRESS: &str = "stress-";

/// How much worse than its better baseline the tuning lets a configuration be on a
/// stress group, where one member alone is the best forecaster and any combining costs
/// a little.
pub const STRESS_TOLERANCE: f64 = 0.01;

fn is_stress(t: &TraceScores) -> bool {
    t.family.starts_with(STRESS)
}

/// Synthetic series every tuning trains on besides the real traces, never scored as
/// held out: two random walks (where the last sample is the best forecast of any
/// future mean) and two series of noise around a level (where the mean is). They keep
/// the tuning from buying a small gain on the development traces with a loss where
/// one simple predictor dominates, which is how the previous predictor lost to last
/// value on traces it had not seen. Groups `stress-walk` and `stress-noise`.
pub fn stress_traces() -> Vec<Trace> {
    let mut v = Vec::new();
    for seed in [1, 2] {
        let mut rng = Rng::new(seed);
        let mut level = 2.0;
        let walk: String = (0..3000)
            .map(|t| {
                level = (level + 0.4 * (rng.uniform() - 0.5)).max(0.05);
                format!("{t} {level}\n")
            })
            .collect();
        let noise: String = (0..3000)
            .map(|t| format!("{t} {}\n", 1.5 + rng.uniform()))
            .collect();
        for (name, text) in [("walk", walk), ("noise", noise)] {
            let path = PathBuf::from(format!("{STRESS}{name}.{seed}"));
            // The text is well formed by construction.
            if let Ok(t) = Trace::parse(&path, &text) {
                v.push(t);
            }
        }
    }
    v
}

/// The tuning procedure at one horizon: the grid, and the stress groups' scores, which
/// join every training set.
pub struct Tuner {
    /// The configurations chosen among ([`grid`]).
    pub grid: Vec<AdaptiveConfig>,
    stress: Vec<TraceScores>,
}

impl Tuner {
    /// The tuner for `horizon_s`.
    pub fn new(horizon_s: f64) -> Self {
        let grid = grid();
        let stress = stress_traces()
            .iter()
            .filter_map(|t| score_trace(t, horizon_s, &grid, false))
            .collect();
        Tuner { grid, stress }
    }

    /// The configuration chosen with the traces `train` (and the stress groups).
    pub fn choose<'a>(
        &'a self,
        train: impl Iterator<Item = &'a TraceScores> + Clone,
    ) -> AdaptiveConfig {
        self.grid[select(train.chain(self.stress.iter()), self.grid.len())]
    }
}

fn names() -> Vec<&'static str> {
    all_predictors(1).iter().map(|p| p.name()).collect()
}

/// Scores of every predictor with its defaults, pooled over `traces`.
pub fn evaluate(traces: &[Trace], horizon_s: f64) -> Vec<Score> {
    let names = names();
    let mut sums = vec![Sums::default(); names.len()];
    for tr in traces {
        if let Some(s) = score_trace(tr, horizon_s, &[], true) {
            for (acc, x) in sums.iter_mut().zip(&s.fixed) {
                acc.merge(x);
            }
        }
    }
    names.iter().zip(&sums).map(|(n, s)| s.score(n)).collect()
}

/// A configuration as reported.
#[derive(Clone, Debug, Serialize, PartialEq)]
pub struct Chosen {
    /// [`AdaptiveConfig::decay`].
    pub decay: f64,
    /// [`AdaptiveConfig::sharpness`].
    pub sharpness: f64,
    /// [`AdaptiveConfig::members`].
    pub members: &'static str,
}

impl From<AdaptiveConfig> for Chosen {
    fn from(c: AdaptiveConfig) -> Self {
        Chosen {
            decay: c.decay,
            sharpness: c.sharpness,
            members: c.members.name(),
        }
    }
}

/// One held-out group.
#[derive(Clone, Debug, Serialize)]
pub struct Fold {
    /// The group scored, never seen by the tuning.
    pub held_out: String,
    /// Its traces.
    pub traces: usize,
    /// The adaptive predictor's configuration chosen on the other groups.
    pub chosen: Chosen,
    /// Every predictor on the held-out group; `adaptive` with the chosen configuration.
    pub scores: Vec<Score>,
}

/// Held-out scores pooled over the folds of one campaign.
#[derive(Clone, Debug, Serialize)]
pub struct Pooled {
    /// Campaign.
    pub group: &'static str,
    /// Every predictor, pooled over the campaign's held-out groups.
    pub scores: Vec<Score>,
}

/// Leave-one-group-out cross-validation at one horizon.
#[derive(Clone, Debug, Serialize)]
pub struct CrossValidation {
    /// Forecast horizon, seconds.
    pub horizon_s: f64,
    /// One per group, in name order.
    pub folds: Vec<Fold>,
    /// Per campaign.
    pub pooled: Vec<Pooled>,
    /// What the procedure picks with every group in training.
    pub chosen_on_all: Chosen,
    /// The configuration the kernel runs ([`AdaptiveConfig::default`]): what the
    /// procedure picks on the development traces at 1 s.
    pub kernel_default: Chosen,
}

/// For each group of `traces` in turn: the adaptive predictor's configuration is
/// chosen (lowest pooled MAE over [`grid`]) on the other groups, and every predictor
/// is scored on the held-out group.
pub fn cross_validate(traces: &[Trace], horizon_s: f64) -> CrossValidation {
    cross_validate_with(&Tuner::new(horizon_s), traces, horizon_s)
}

/// [`cross_validate`] with a tuner built for `horizon_s`.
fn cross_validate_with(tuner: &Tuner, traces: &[Trace], horizon_s: f64) -> CrossValidation {
    let grid = &tuner.grid;
    let names = names();
    let adaptive = names.iter().position(|n| *n == USED_PREDICTOR);
    let scores: Vec<TraceScores> = traces
        .iter()
        .filter_map(|t| score_trace(t, horizon_s, grid, true))
        .collect();
    let mut folds = Vec::new();
    let mut results = Vec::new();
    for fam in families(traces) {
        let cfg = tuner.choose(scores.iter().filter(|s| s.family != fam));
        let k = grid.iter().position(|g| *g == cfg).unwrap_or(0);
        let held: Vec<&TraceScores> = scores.iter().filter(|s| s.family == fam).collect();
        let Some(first) = held.first() else { continue };
        let mut sums = vec![Sums::default(); names.len()];
        for t in &held {
            for (i, acc) in sums.iter_mut().enumerate() {
                acc.merge(if Some(i) == adaptive {
                    &t.tuned[k]
                } else {
                    &t.fixed[i]
                });
            }
        }
        results.push((first.group, sums.clone()));
        folds.push(Fold {
            held_out: fam.to_string(),
            traces: held.len(),
            chosen: cfg.into(),
            scores: names.iter().zip(&sums).map(|(n, s)| s.score(n)).collect(),
        });
    }
    let merge =
        |acc: &mut Vec<Sums>, s: &Vec<Sums>| acc.iter_mut().zip(s).for_each(|(a, b)| a.merge(b));
    CrossValidation {
        horizon_s,
        folds,
        pooled: per_campaign(results, merge)
            .into_iter()
            .map(|(g, sums)| Pooled {
                group: g.name(),
                scores: names.iter().zip(&sums).map(|(n, s)| s.score(n)).collect(),
            })
            .collect(),
        chosen_on_all: tuner.choose(scores.iter()).into(),
        kernel_default: AdaptiveConfig::default().into(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;
    use tern_sync::predict::{Adaptive, Predictor};

    /// The configuration `tuner` picks on `traces` at `horizon_s`.
    fn tune(tuner: &Tuner, traces: &[Trace], horizon_s: f64) -> AdaptiveConfig {
        let scores: Vec<TraceScores> = traces
            .iter()
            .filter_map(|t| score_trace(t, horizon_s, &tuner.grid, false))
            .collect();
        tuner.choose(scores.iter())
    }

    #[test]
    fn constant_trace_scores_zero_for_everyone() {
        let text: String = (0..60).map(|t| format!("{t} 2.5\n")).collect();
        let tr = Trace::parse(Path::new("c.log"), &text).unwrap();
        for s in evaluate(&[tr], 5.0) {
            assert!(s.mae < 1e-9 && s.mre < 1e-9, "{s:?}");
            assert_eq!(s.n, 60 - 5 - WARMUP + 1);
        }
    }

    #[test]
    fn horizon_rounds_to_samples() {
        assert_eq!(horizon_steps(1.0, 5.0), 1);
        assert_eq!(horizon_steps(10.0, 5.0), 2);
        assert_eq!(horizon_steps(5.0, 1.01), 5);
    }

    /// A reproducible, bumpy series: a slow sine, a square wave and noise.
    fn series(seed: u64, n: usize) -> String {
        let mut s = seed;
        (0..n)
            .map(|t| {
                s = s.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1);
                let noise = (s >> 40) as f64 / (1u64 << 24) as f64;
                let square = if (t / 40) % 2 == 0 { 1.5 } else { 0.0 };
                let v = 2.0 + (t as f64 / 17.0).sin() + square + noise;
                format!("{t} {v}\n")
            })
            .collect()
    }

    #[test]
    fn the_tuning_path_forecasts_exactly_what_the_predictor_does() {
        let tr = Trace::parse(Path::new("bus.t.log"), &series(3, 300)).unwrap();
        for h_s in [1.0, 5.0] {
            let h = horizon_steps(h_s, tr.period());
            // Every 5th configuration: all of them take long in a debug build.
            let grid: Vec<AdaptiveConfig> = grid().into_iter().step_by(5).collect();
            let s = score_trace(&tr, h_s, &grid, false).unwrap();
            for (k, cfg) in grid.iter().enumerate() {
                let mut p = Adaptive::new(*cfg, h);
                let direct = run(&tr.mbps, h, |_, x| {
                    p.observe(x);
                    p.predict(h)
                });
                assert_eq!(direct, s.tuned[k], "{cfg:?} at {h_s} s");
            }
        }
    }

    #[test]
    fn cross_validation_never_tunes_on_the_held_out_group() {
        // Two groups; whatever is chosen for a fold is what the other group alone
        // selects.
        let a = Trace::parse(Path::new("bus.a.log"), &series(1, 200)).unwrap();
        let b = Trace::parse(Path::new("tram.b.log"), &series(2, 200)).unwrap();
        let tuner = Tuner::new(1.0);
        let cv = cross_validate_with(&tuner, &[a.clone(), b.clone()], 1.0);
        assert_eq!(cv.folds.len(), 2);
        assert_eq!(cv.folds[0].held_out, "bus");
        assert_eq!(cv.folds[0].chosen, Chosen::from(tune(&tuner, &[b], 1.0)));
        assert_eq!(cv.folds[1].chosen, Chosen::from(tune(&tuner, &[a], 1.0)));
        assert_eq!(cv.pooled.len(), 1);
        assert_eq!(cv.pooled[0].group, "norway");
        let n: usize = cv.folds.iter().map(|f| f.scores[0].n).sum();
        assert_eq!(cv.pooled[0].scores[0].n, n);
    }
}
