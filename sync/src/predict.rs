//! Bandwidth predictors: each one sees a series of throughput samples (one per
//! measurement period) and forecasts the *mean* of the next `h` samples, which is what a
//! transfer lasting `h` periods will see.

use alloc::boxed::Box;
use alloc::collections::VecDeque;
use alloc::vec::Vec;

use crate::model::ArmaModel;
use crate::wavelet;

/// A bandwidth forecaster fed one sample at a time.
pub trait Predictor {
    /// Short stable name used in reports.
    fn name(&self) -> &'static str;
    /// Feeds the next throughput sample (any unit; forecasts come back in the same unit).
    fn observe(&mut self, sample: f64);
    /// Forecast of the mean of the next `horizon` samples; `None` before the first
    /// sample or for `horizon == 0`. Never negative.
    fn predict(&mut self, horizon: usize) -> Option<f64>;
}

/// A bounded window of the most recent samples.
#[derive(Clone, Debug)]
struct Window {
    cap: usize,
    buf: VecDeque<f64>,
}

impl Window {
    fn new(cap: usize) -> Self {
        Window {
            cap: cap.max(1),
            buf: VecDeque::with_capacity(cap.max(1)),
        }
    }
    fn push(&mut self, x: f64) {
        if self.buf.len() == self.cap {
            self.buf.pop_front();
        }
        self.buf.push_back(x);
    }
    fn to_vec(&self) -> Vec<f64> {
        self.buf.iter().copied().collect()
    }
}

fn valid(h: usize, v: f64) -> Option<f64> {
    (h > 0 && v.is_finite()).then_some(v.max(0.0))
}

/// Forecasts the last sample seen.
#[derive(Clone, Debug, Default)]
pub struct LastValue {
    last: Option<f64>,
}

impl Predictor for LastValue {
    fn name(&self) -> &'static str {
        "last"
    }
    fn observe(&mut self, sample: f64) {
        self.last = Some(sample);
    }
    fn predict(&mut self, horizon: usize) -> Option<f64> {
        valid(horizon, self.last?)
    }
}

/// Harmonic mean of the last `n` samples (the estimator used by FESTIVE/MPC-style
/// video players; robust to short spikes). A zero sample makes the harmonic mean zero.
#[derive(Clone, Debug)]
pub struct HarmonicMean {
    window: Window,
}

impl HarmonicMean {
    /// Harmonic mean over the last `n` samples.
    pub fn new(n: usize) -> Self {
        HarmonicMean {
            window: Window::new(n),
        }
    }
}

impl Predictor for HarmonicMean {
    fn name(&self) -> &'static str {
        "harmonic"
    }
    fn observe(&mut self, sample: f64) {
        self.window.push(sample);
    }
    fn predict(&mut self, horizon: usize) -> Option<f64> {
        let buf = &self.window.buf;
        if buf.is_empty() {
            return None;
        }
        if buf.iter().any(|v| *v <= 0.0) {
            return valid(horizon, 0.0);
        }
        let inv: f64 = buf.iter().map(|v| 1.0 / v).sum();
        valid(horizon, buf.len() as f64 / inv)
    }
}

/// Exponentially weighted moving average with smoothing factor `alpha`.
#[derive(Clone, Debug)]
pub struct Ewma {
    alpha: f64,
    level: Option<f64>,
}

impl Ewma {
    /// EWMA with weight `alpha` ∈ (0, 1] on the newest sample.
    pub fn new(alpha: f64) -> Self {
        Ewma { alpha, level: None }
    }
}

impl Predictor for Ewma {
    fn name(&self) -> &'static str {
        "ewma"
    }
    fn observe(&mut self, sample: f64) {
        self.level = Some(match self.level {
            None => sample,
            Some(l) => l + self.alpha * (sample - l),
        });
    }
    fn predict(&mut self, horizon: usize) -> Option<f64> {
        valid(horizon, self.level?)
    }
}

/// Holt's linear trend method (double exponential smoothing).
#[derive(Clone, Debug)]
pub struct Holt {
    alpha: f64,
    beta: f64,
    level: Option<f64>,
    trend: f64,
}

impl Holt {
    /// Holt smoothing with level weight `alpha` and trend weight `beta`.
    pub fn new(alpha: f64, beta: f64) -> Self {
        Holt {
            alpha,
            beta,
            level: None,
            trend: 0.0,
        }
    }
}

impl Predictor for Holt {
    fn name(&self) -> &'static str {
        "holt"
    }
    fn observe(&mut self, sample: f64) {
        match self.level {
            None => self.level = Some(sample),
            Some(l) => {
                let next = self.alpha * sample + (1.0 - self.alpha) * (l + self.trend);
                self.trend = self.beta * (next - l) + (1.0 - self.beta) * self.trend;
                self.level = Some(next);
            }
        }
    }
    fn predict(&mut self, horizon: usize) -> Option<f64> {
        // Mean of level + k·trend for k = 1..=h.
        let l = self.level?;
        valid(horizon, l + self.trend * (horizon as f64 + 1.0) / 2.0)
    }
}

/// Which linear model a [`Linear`] predictor refits on its window.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum LinearKind {
    /// AR(p ≤ max_p) by Yule–Walker/Levinson–Durbin with AIC.
    Ar,
    /// ARMA(p ≤ max_p, q ≤ max_q) by Hannan–Rissanen with AIC.
    Arma,
}

/// Fits a model of the given kind with AIC order selection.
fn fit(kind: LinearKind, x: &[f64], max_p: usize, max_q: usize) -> Option<ArmaModel> {
    match kind {
        LinearKind::Ar => ArmaModel::fit_ar_aic(x, max_p),
        LinearKind::Arma => ArmaModel::fit_aic(x, max_p, max_q),
    }
}

/// AR or ARMA refitted on a sliding window at every forecast.
#[derive(Clone, Debug)]
pub struct Linear {
    kind: LinearKind,
    max_p: usize,
    max_q: usize,
    window: Window,
}

impl Linear {
    /// AR(p ≤ `max_p`), order by AIC, over the last `window` samples.
    pub fn ar(max_p: usize, window: usize) -> Self {
        Linear {
            kind: LinearKind::Ar,
            max_p,
            max_q: 0,
            window: Window::new(window),
        }
    }
    /// ARMA(p ≤ `max_p`, q ≤ `max_q`), order by AIC, over the last `window` samples.
    pub fn arma(max_p: usize, max_q: usize, window: usize) -> Self {
        Linear {
            kind: LinearKind::Arma,
            max_p,
            max_q,
            window: Window::new(window),
        }
    }
}

impl Predictor for Linear {
    fn name(&self) -> &'static str {
        match self.kind {
            LinearKind::Ar => "ar",
            LinearKind::Arma => "arma",
        }
    }
    fn observe(&mut self, sample: f64) {
        self.window.push(sample);
    }
    fn predict(&mut self, horizon: usize) -> Option<f64> {
        let x = self.window.to_vec();
        let last = *x.last()?;
        let f = fit(self.kind, &x, self.max_p, self.max_q)
            .and_then(|m| m.forecast_mean(&x, horizon))
            .unwrap_or(last);
        valid(horizon, f)
    }
}

/// BP-ACM's predictor: 3-level Haar decomposition (see [`wavelet`]), one model per
/// component with its order by AIC, forecasts summed.
#[derive(Clone, Debug)]
pub struct WaveletModel {
    kind: LinearKind,
    max_p: usize,
    max_q: usize,
    window: Window,
}

impl WaveletModel {
    /// Wavelet + ARMA(p ≤ `max_p`, q ≤ `max_q`) per component (the paper's model).
    pub fn arma(max_p: usize, max_q: usize, window: usize) -> Self {
        WaveletModel {
            kind: LinearKind::Arma,
            max_p,
            max_q,
            window: Window::new(window),
        }
    }
    /// Wavelet + AR(p ≤ `max_p`) per component (the paper's "wavelet-AR" baseline).
    pub fn ar(max_p: usize, window: usize) -> Self {
        WaveletModel {
            kind: LinearKind::Ar,
            max_p,
            max_q: 0,
            window: Window::new(window),
        }
    }
}

impl Predictor for WaveletModel {
    fn name(&self) -> &'static str {
        match self.kind {
            LinearKind::Ar => "wavelet-ar",
            LinearKind::Arma => "wavelet-arma",
        }
    }
    fn observe(&mut self, sample: f64) {
        self.window.push(sample);
    }
    fn predict(&mut self, horizon: usize) -> Option<f64> {
        let x = self.window.to_vec();
        let last = *x.last()?;
        let d = wavelet::decompose(&x);
        // The first 2^LEVELS − 1 coefficients use the clamped start; leave them out of
        // the fit but keep them for filtering the innovations.
        let skip = ((1usize << wavelet::LEVELS) - 1).min(x.len().saturating_sub(3));
        let mut total = 0.0;
        for comp in core::iter::once(&d.approximation).chain(d.details.iter()) {
            let f = fit(self.kind, &comp[skip..], self.max_p, self.max_q)
                .and_then(|m| m.forecast_mean(comp, horizon));
            match f {
                Some(v) => total += v,
                None => return valid(horizon, last),
            }
        }
        valid(horizon, total)
    }
}

/// Combines several predictors with weights from their recent errors at one horizon
/// (Bates–Granger inverse-MSE weighting over an exponentially weighted error window, on
/// the relative error `(f − a)/max(f, a)`). The sync layer's predictor before
/// [`Adaptive`], which lost to last value on traces it was not developed on; kept for
/// comparison in sync-lab.
pub struct Ensemble {
    members: Vec<Box<dyn Predictor>>,
    horizon: usize,
    board: Scoreboard,
    current: Vec<Option<f64>>,
}

impl Ensemble {
    /// Ensemble of `members` scored at `horizon` samples; `decay` ∈ (0, 1] is the weight
    /// of the newest squared error in each member's running MSE.
    pub fn new(members: Vec<Box<dyn Predictor>>, horizon: usize, decay: f64) -> Self {
        let n = members.len();
        Ensemble {
            members,
            horizon: horizon.max(1),
            board: Scoreboard::new(n, horizon, decay),
            current: alloc::vec![None; n],
        }
    }

    /// Last value, harmonic mean, EWMA, Holt and AR, scored at `horizon` samples.
    pub fn standard(horizon: usize) -> Self {
        Ensemble::new(
            alloc::vec![
                Box::new(LastValue::default()) as Box<dyn Predictor>,
                Box::new(HarmonicMean::new(8)),
                Box::new(Ewma::new(0.3)),
                Box::new(Holt::new(0.5, 0.1)),
                Box::new(Linear::ar(8, 64)),
            ],
            horizon,
            0.1,
        )
    }
}

impl Predictor for Ensemble {
    fn name(&self) -> &'static str {
        "ensemble"
    }
    fn observe(&mut self, sample: f64) {
        self.board.observe(sample);
        self.current = observe_all(&mut self.members, sample, self.horizon);
        self.board.submit(self.current.clone());
    }
    fn predict(&mut self, horizon: usize) -> Option<f64> {
        let f = if horizon == self.horizon {
            inverse_mse_mean(&self.current, &self.board.squared)
        } else {
            inverse_mse_mean(
                &predict_all(&mut self.members, horizon),
                &self.board.squared,
            )
        };
        valid(horizon, f?)
    }
}

/// Feeds `sample` to every member and returns their forecasts at `horizon`.
fn observe_all(
    members: &mut [Box<dyn Predictor>],
    sample: f64,
    horizon: usize,
) -> Vec<Option<f64>> {
    members
        .iter_mut()
        .map(|m| {
            m.observe(sample);
            m.predict(horizon)
        })
        .collect()
}

/// Every member's forecast at `horizon`.
fn predict_all(members: &mut [Box<dyn Predictor>], horizon: usize) -> Vec<Option<f64>> {
    members.iter_mut().map(|m| m.predict(horizon)).collect()
}

/// Bates–Granger: the mean of `forecasts` weighted by the inverse of each one's running
/// squared error; the plain mean while none has been scored.
fn inverse_mse_mean(forecasts: &[Option<f64>], mse: &[Option<f64>]) -> Option<f64> {
    let (mut num, mut den) = (0.0, 0.0);
    for (f, e) in forecasts.iter().zip(mse) {
        if let (Some(f), Some(e)) = (f, e) {
            let w = 1.0 / (e + 1e-12);
            num += w * f;
            den += w;
        }
    }
    if den > 0.0 {
        return Some(num / den);
    }
    let have: Vec<f64> = forecasts.iter().flatten().copied().collect();
    (!have.is_empty()).then(|| have.iter().sum::<f64>() / have.len() as f64)
}

/// Running errors of several forecasters at one horizon, exponentially weighted. A
/// forecast made now can only be scored `horizon` samples later, so each is queued
/// until its target mean is known.
#[derive(Clone, Debug)]
struct Scoreboard {
    horizon: usize,
    decay: f64,
    /// Running absolute error `|f − a|` of each forecaster (the error they are judged
    /// by).
    absolute: Vec<Option<f64>>,
    /// Running squared relative error `((f − a) / max(f, a))²`: scale-free, so a level
    /// shift of the link does not swamp the weights.
    squared: Vec<Option<f64>>,
    pending: VecDeque<Pending>,
}

#[derive(Clone, Debug)]
struct Pending {
    forecasts: Vec<Option<f64>>,
    sum: f64,
    remaining: usize,
}

fn ewma_update(slot: &mut Option<f64>, decay: f64, x: f64) {
    *slot = Some(match *slot {
        None => x,
        Some(old) => old + decay * (x - old),
    });
}

impl Scoreboard {
    fn new(n: usize, horizon: usize, decay: f64) -> Self {
        Scoreboard {
            horizon: horizon.max(1),
            decay,
            absolute: alloc::vec![None; n],
            squared: alloc::vec![None; n],
            pending: VecDeque::new(),
        }
    }

    /// Adds `sample` to every queued target and scores the forecasts whose target is
    /// complete.
    fn observe(&mut self, sample: f64) {
        for p in self.pending.iter_mut() {
            p.sum += sample;
            p.remaining -= 1;
        }
        while self.pending.front().is_some_and(|p| p.remaining == 0) {
            let Some(done) = self.pending.pop_front() else {
                break;
            };
            let a = done.sum / self.horizon as f64;
            for (k, f) in done.forecasts.iter().enumerate() {
                let Some(f) = f else { continue };
                let scale = libm::fabs(*f).max(libm::fabs(a));
                let rel = if scale > 0.0 { (f - a) / scale } else { 0.0 };
                ewma_update(&mut self.absolute[k], self.decay, libm::fabs(f - a));
                ewma_update(&mut self.squared[k], self.decay, rel * rel);
            }
        }
    }

    /// Queues forecasts made now (one per forecaster, in order).
    fn submit(&mut self, forecasts: Vec<Option<f64>>) {
        self.pending.push_back(Pending {
            forecasts,
            sum: 0.0,
            remaining: self.horizon,
        });
    }
}

/// Which predictors [`Adaptive`] combines.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MemberSet {
    /// Last value, EWMA with α = 0.3, 0.8, 0.6, 0.45, 0.2 and 0.1, and AR.
    Core,
    /// [`MemberSet::Core`] plus the harmonic mean and Holt's trend.
    Extended,
}

impl MemberSet {
    /// Both sets, the smaller first.
    pub const ALL: [MemberSet; 2] = [MemberSet::Core, MemberSet::Extended];

    /// The members, freshly built. [`MemberSet::Core`]'s are a prefix of
    /// [`MemberSet::Extended`]'s, in the same order (sync-lab computes the extended
    /// set's forecasts once and scores both).
    pub fn build(self) -> Vec<Box<dyn Predictor>> {
        let mut v: Vec<Box<dyn Predictor>> = alloc::vec![Box::new(LastValue::default())];
        for alpha in [0.3, 0.8, 0.6, 0.45, 0.2, 0.1] {
            v.push(Box::new(Ewma::new(alpha)));
        }
        v.push(Box::new(Linear::ar(8, 64)));
        if self == MemberSet::Extended {
            v.push(Box::new(HarmonicMean::new(8)));
            v.push(Box::new(Holt::new(0.5, 0.1)));
        }
        v
    }

    /// Number of members.
    pub fn count(self) -> usize {
        match self {
            MemberSet::Core => 8,
            MemberSet::Extended => 10,
        }
    }

    /// Name for reports.
    pub fn name(self) -> &'static str {
        match self {
            MemberSet::Core => "core",
            MemberSet::Extended => "extended",
        }
    }
}

/// The tunables of [`Adaptive`], the only parameters of the sync layer's predictor
/// that are chosen from data: sync-lab picks them by leave-one-group-out
/// cross-validation (docs/sync.md §2), and the default is what that procedure picks on
/// all of the development traces at a one-second horizon.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct AdaptiveConfig {
    /// Weight of the newest error in every running error: 1/decay samples is about
    /// how far back the combiner remembers how well each member did on this link.
    pub decay: f64,
    /// Sharpness η of the final choice among the blend and the members: each weighs
    /// `exp(−η·(L / L_best − 1))` by its running absolute error L, so at η = 40 one
    /// 2.5% worse than the best gets a third of its weight.
    pub sharpness: f64,
    /// The members.
    pub members: MemberSet,
}

impl Default for AdaptiveConfig {
    fn default() -> Self {
        AdaptiveConfig {
            decay: 0.01,
            sharpness: 40.0,
            members: MemberSet::Core,
        }
    }
}

/// The combining half of [`Adaptive`], fed with its members' forecasts: sync-lab runs
/// it over forecasts computed once to score many configurations, and gets exactly what
/// [`Adaptive`] would forecast.
#[derive(Clone, Debug)]
pub struct Combiner {
    cfg: AdaptiveConfig,
    members: usize,
    /// Scores of the members and, last, of the blend.
    board: Scoreboard,
}

impl Combiner {
    /// A combiner of the members of `cfg.members`, scored at `horizon` samples.
    pub fn new(cfg: AdaptiveConfig, horizon: usize) -> Self {
        let members = cfg.members.count();
        Combiner {
            cfg,
            members,
            board: Scoreboard::new(members + 1, horizon, cfg.decay),
        }
    }

    /// Takes the sample just observed and the members' forecasts made after it (in
    /// member order, at the combiner's horizon); returns the combined forecast.
    pub fn step(&mut self, sample: f64, forecasts: &[Option<f64>]) -> Option<f64> {
        self.board.observe(sample);
        let forecasts = &forecasts[..self.members.min(forecasts.len())];
        let blend = inverse_mse_mean(forecasts, &self.board.squared[..self.members]);
        let out = self.choose(blend, forecasts);
        let mut all = forecasts.to_vec();
        all.resize(self.members, None);
        all.push(blend);
        self.board.submit(all);
        out
    }

    /// The combined forecast of `forecasts` under the current scores, without
    /// recording it (for a horizon other than the combiner's own).
    pub fn peek(&self, forecasts: &[Option<f64>]) -> Option<f64> {
        let forecasts = &forecasts[..self.members.min(forecasts.len())];
        let blend = inverse_mse_mean(forecasts, &self.board.squared[..self.members]);
        self.choose(blend, forecasts)
    }

    /// Soft choice among the blend and the members by running absolute error; the
    /// blend alone until something has been scored.
    fn choose(&self, blend: Option<f64>, forecasts: &[Option<f64>]) -> Option<f64> {
        let loss = &self.board.absolute;
        let candidates = || {
            core::iter::once((blend, loss[self.members]))
                .chain(forecasts.iter().copied().zip(loss.iter().copied()))
                .filter_map(|(f, l)| Some((f?, l?)))
        };
        let best = candidates().map(|(_, l)| l).fold(f64::INFINITY, f64::min);
        if !best.is_finite() {
            return blend;
        }
        let (mut num, mut den) = (0.0, 0.0);
        for (f, l) in candidates() {
            let w = if best > 0.0 {
                libm::exp(-self.cfg.sharpness * (l / best - 1.0))
            } else if l <= 0.0 {
                1.0
            } else {
                0.0
            };
            num += w * f;
            den += w;
        }
        (den > 0.0).then(|| num / den)
    }
}

/// The sync layer's predictor. Its members (last value, EWMAs from fast to slow, AR)
/// are blended by Bates–Granger weights learnt on this link (inverse running MSE of
/// the relative error); the blend and every member then compete by their running
/// absolute error, softly (see [`AdaptiveConfig::sharpness`]): where a blend of
/// members does best on this link the output is the blend, where one member does
/// (last value on a link that moves like a random walk) the output moves to it.
pub struct Adaptive {
    members: Vec<Box<dyn Predictor>>,
    combiner: Combiner,
    horizon: usize,
    current: Option<f64>,
}

impl Adaptive {
    /// The adaptive predictor scored at `horizon` samples.
    pub fn new(cfg: AdaptiveConfig, horizon: usize) -> Self {
        Adaptive {
            members: cfg.members.build(),
            combiner: Combiner::new(cfg, horizon),
            horizon: horizon.max(1),
            current: None,
        }
    }
}

impl Predictor for Adaptive {
    fn name(&self) -> &'static str {
        "adaptive"
    }
    fn observe(&mut self, sample: f64) {
        let forecasts = observe_all(&mut self.members, sample, self.horizon);
        self.current = self.combiner.step(sample, &forecasts);
    }
    fn predict(&mut self, horizon: usize) -> Option<f64> {
        if horizon == self.horizon {
            return valid(horizon, self.current?);
        }
        // Another horizon: the members' forecasts for it under the scores learnt at
        // the combiner's own horizon.
        let forecasts = predict_all(&mut self.members, horizon);
        valid(horizon, self.combiner.peek(&forecasts)?)
    }
}

/// Every predictor sync-lab compares, in report order, each scored at `horizon` samples
/// (only the ensemble and the adaptive predictor depend on it). The last one is the one
/// the sync layer uses.
pub fn all_predictors(horizon: usize) -> Vec<Box<dyn Predictor>> {
    alloc::vec![
        Box::new(LastValue::default()) as Box<dyn Predictor>,
        Box::new(HarmonicMean::new(8)),
        Box::new(Ewma::new(0.3)),
        Box::new(Holt::new(0.5, 0.1)),
        Box::new(Linear::ar(8, 64)),
        Box::new(Linear::arma(3, 2, 64)),
        Box::new(WaveletModel::ar(4, 64)),
        Box::new(WaveletModel::arma(3, 2, 64)),
        Box::new(Ensemble::standard(horizon)),
        Box::new(Adaptive::new(AdaptiveConfig::default(), horizon)),
    ]
}

/// Name of the predictor the sync layer uses (see [`Adaptive`]).
pub const USED_PREDICTOR: &str = "adaptive";

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn constant_series_is_predicted_exactly_by_all() {
        for h in [1, 5] {
            for mut p in all_predictors(h) {
                assert_eq!(p.predict(h), None, "{}", p.name());
                for _ in 0..80 {
                    p.observe(4.25);
                }
                let f = p.predict(h).unwrap();
                assert!((f - 4.25).abs() < 1e-9, "{} gave {f}", p.name());
            }
        }
    }

    #[test]
    fn zero_horizon_is_none() {
        for mut p in all_predictors(1) {
            p.observe(1.0);
            assert_eq!(p.predict(0), None, "{}", p.name());
        }
    }

    #[test]
    fn simple_predictors_match_hand_values() {
        let mut h = HarmonicMean::new(2);
        let mut e = Ewma::new(0.5);
        let mut holt = Holt::new(1.0, 1.0);
        for x in [1.0, 2.0, 4.0] {
            h.observe(x);
            e.observe(x);
            holt.observe(x);
        }
        // Harmonic mean of {2, 4} = 2 / (1/2 + 1/4) = 8/3.
        assert!((h.predict(1).unwrap() - 8.0 / 3.0).abs() < 1e-12);
        // EWMA: 1 → 1.5 → 2.75.
        assert!((e.predict(1).unwrap() - 2.75).abs() < 1e-12);
        // Holt with α = β = 1: level 4, trend 2; mean of 6 and 8 is 7.
        assert!((holt.predict(2).unwrap() - 7.0).abs() < 1e-12);
    }

    #[test]
    fn ar_beats_last_value_on_a_mean_reverting_series() {
        // AR(1) with φ = 0.5 around 10: the best 5-step forecast reverts to the mean,
        // which last value cannot do.
        let mut state: u32 = 1;
        let mut noise = || {
            state = state.wrapping_mul(1_664_525).wrapping_add(1_013_904_223);
            (state >> 8) as f64 / (1u32 << 24) as f64 - 0.5
        };
        let mut x = alloc::vec![10.0];
        for t in 1..1500 {
            let prev: f64 = x[t - 1];
            x.push(10.0 + 0.5 * (prev - 10.0) + 4.0 * noise());
        }
        let (mut ar, mut last) = (Linear::ar(4, 64), LastValue::default());
        let (mut e_ar, mut e_last) = (0.0, 0.0);
        for t in 0..x.len() - 5 {
            ar.observe(x[t]);
            last.observe(x[t]);
            if t >= 64 {
                let truth = x[t + 1..=t + 5].iter().sum::<f64>() / 5.0;
                e_ar += (ar.predict(5).unwrap() - truth).abs();
                e_last += (last.predict(5).unwrap() - truth).abs();
            }
        }
        assert!(e_ar < 0.8 * e_last, "ar {e_ar} last {e_last}");
    }

    /// Deterministic uniform noise in [0, 1).
    fn uniform(state: &mut u64) -> f64 {
        *state ^= *state << 13;
        *state ^= *state >> 7;
        *state ^= *state << 17;
        (*state >> 11) as f64 / (1u64 << 53) as f64
    }

    /// Mean absolute error of `p` forecasting the mean of the next `h` samples of `x`,
    /// after a 16-sample warm-up.
    fn mae(p: &mut dyn Predictor, x: &[f64], h: usize) -> f64 {
        let mut sum = 0.0;
        let mut n = 0;
        for t in 0..x.len() - h {
            p.observe(x[t]);
            if t >= 16 {
                let actual = x[t + 1..=t + h].iter().sum::<f64>() / h as f64;
                sum += (p.predict(h).unwrap() - actual).abs();
                n += 1;
            }
        }
        sum / n as f64
    }

    /// (adaptive, last value, EWMA) errors on `x` at horizon `h`.
    fn contest(x: &[f64], h: usize) -> (f64, f64, f64) {
        (
            mae(&mut Adaptive::new(AdaptiveConfig::default(), h), x, h),
            mae(&mut LastValue::default(), x, h),
            mae(&mut Ewma::new(0.3), x, h),
        )
    }

    #[test]
    fn adaptive_follows_last_value_where_it_is_best() {
        // A random walk: the last sample is the best forecast of any future mean. The
        // default's tuning allows it 1% over the better baseline on such a series
        // (sync-lab's stress groups).
        let mut s = 7;
        let mut level = 5.0;
        let walk: Vec<f64> = (0..4000)
            .map(|_| {
                level = (level + uniform(&mut s) - 0.5f64).max(0.1);
                level
            })
            .collect();
        // Levels held for ~50 samples, never seen by the tuning: the same, sharper.
        let mut level = 3.0;
        let steps: Vec<f64> = (0..4000)
            .map(|_| {
                if uniform(&mut s) < 0.02 {
                    level = 0.5 + 5.0 * uniform(&mut s);
                }
                level
            })
            .collect();
        for (name, x, slack) in [("walk", &walk, 1.01), ("steps", &steps, 1.025)] {
            for h in [1, 5] {
                let (a, last, ewma) = contest(x, h);
                assert!(a < slack * last, "{name} h{h}: adaptive {a} last {last}");
                assert!(a < ewma, "{name} h{h}: adaptive {a} ewma {ewma}");
            }
        }
    }

    #[test]
    fn adaptive_smooths_where_smoothing_is_best() {
        // Noise around a level: the mean is the best forecast; last value is the
        // worst, a smoother the best.
        let mut s = 11;
        let x: Vec<f64> = (0..4000).map(|_| 2.0 + uniform(&mut s)).collect();
        for h in [1, 5] {
            let (a, last, ewma) = contest(&x, h);
            assert!(a < last && a < 0.97 * ewma, "h{h}: {a} {last} {ewma}");
        }
    }

    #[test]
    fn ensemble_moves_weight_to_the_accurate_member() {
        // Member "last" is exact on a step series that alternates slowly; EWMA lags.
        let mut ens = Ensemble::new(
            alloc::vec![
                Box::new(LastValue::default()) as Box<dyn Predictor>,
                Box::new(Ewma::new(0.05)),
            ],
            1,
            0.2,
        );
        for t in 0..400 {
            ens.observe(if (t / 50) % 2 == 0 { 10.0 } else { 1.0 });
        }
        // Last sample is 1.0 (t = 399 is in an odd block); EWMA sits far above it.
        let f = ens.predict(1).unwrap();
        assert!((f - 1.0).abs() < 0.5, "ensemble gave {f}");
    }
}
