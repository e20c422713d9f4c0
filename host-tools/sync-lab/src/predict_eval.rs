//! `predict`: scores every predictor on forecasting the mean throughput of the next
//! `horizon` seconds, pooled over all samples of all traces given.

use serde::Serialize;
use tern_sync::predict::{all_predictors, USED_PREDICTOR};

use tern_lab::trace::Trace;

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

/// Horizon in samples for a trace: `horizon_s / period`, rounded, at least 1.
pub fn horizon_steps(horizon_s: f64, period: f64) -> usize {
    ((horizon_s / period).round() as usize).max(1)
}

/// Scores all predictors over `traces` at `horizon_s` seconds.
pub fn evaluate(traces: &[Trace], horizon_s: f64) -> Vec<Score> {
    let names: Vec<&'static str> = all_predictors(1).iter().map(|p| p.name()).collect();
    let mut abs = vec![0.0; names.len()];
    let mut rel = vec![0.0; names.len()];
    let mut n = vec![0usize; names.len()];
    let mut n_rel = vec![0usize; names.len()];
    for tr in traces {
        let h = horizon_steps(horizon_s, tr.period());
        let x = &tr.mbps;
        if x.len() <= WARMUP + h {
            continue;
        }
        // Prefix sums for the target means.
        let mut prefix = vec![0.0; x.len() + 1];
        for (i, v) in x.iter().enumerate() {
            prefix[i + 1] = prefix[i] + v;
        }
        for (k, mut p) in all_predictors(h).into_iter().enumerate() {
            for t in 0..x.len() - h {
                p.observe(x[t]);
                if t + 1 < WARMUP {
                    continue;
                }
                let actual = (prefix[t + 1 + h] - prefix[t + 1]) / h as f64;
                let Some(f) = p.predict(h) else { continue };
                abs[k] += (f - actual).abs();
                n[k] += 1;
                if actual > 0.0 {
                    rel[k] += (f - actual).abs() / actual;
                    n_rel[k] += 1;
                }
            }
        }
    }
    names
        .iter()
        .enumerate()
        .map(|(k, name)| Score {
            name: name.to_string(),
            mae: abs[k] / n[k].max(1) as f64,
            mre: rel[k] / n_rel[k].max(1) as f64,
            used: *name == USED_PREDICTOR,
            n: n[k],
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;

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
}
