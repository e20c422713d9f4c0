//! `policy --trace … --cv`: leave-one-group-out cross-validation of the sync-interval
//! policies on real traces. The one part of the sync layer chosen from data, the
//! bandwidth predictor's configuration, is chosen on the other groups for each group
//! held out; then every policy runs on the held-out group (docs/sync.md §5).

use serde::Serialize;
use tern_sync::monitor::OutagePrior;

use crate::predict_eval::{self, Chosen, TraceScores, Tuner};
use crate::sim::{run_totals, trace_timeline, Injection, Outcome, Tick, Totals, Tuned, Workload};
use tern_lab::trace::{families, per_campaign, Trace};

/// One held-out group.
#[derive(Clone, Debug, Serialize)]
pub struct PolicyFold {
    /// The group run, never seen by the tuning.
    pub held_out: String,
    /// Its traces.
    pub traces: usize,
    /// The predictor's configuration chosen on the other groups.
    pub predictor: Chosen,
    /// Every policy on the held-out group, the best fixed interval in hindsight last.
    pub policies: Vec<Outcome>,
}

/// Held-out totals of one campaign.
#[derive(Clone, Debug, Serialize)]
pub struct PolicyPooled {
    /// Campaign.
    pub group: &'static str,
    /// Every policy summed over the campaign's held-out groups, the best fixed
    /// interval in hindsight (one interval for the whole campaign) last.
    pub policies: Vec<Outcome>,
}

/// Leave-one-group-out cross-validation of the policies.
#[derive(Clone, Debug, Serialize)]
pub struct PolicyCv {
    /// One per group, in name order.
    pub folds: Vec<PolicyFold>,
    /// Per campaign.
    pub pooled: Vec<PolicyPooled>,
}

/// For each group of `traces` in turn: the bandwidth predictor's configuration is
/// chosen on the other groups (as `predict --cv` does at a 1 s horizon, the kernel's),
/// then every policy runs on the held-out group, with one monitor through its traces,
/// the outage prior `prior` and the outages `inject` adds (if any) on top of the gaps.
pub fn cross_validate(
    traces: &[Trace],
    w: &Workload,
    prior: OutagePrior,
    inject: Option<Injection>,
) -> PolicyCv {
    let tuner = Tuner::new(1.0);
    let scores: Vec<TraceScores> = traces
        .iter()
        .filter_map(|t| predict_eval::score_trace(t, 1.0, &tuner.grid, false))
        .collect();
    let mut folds = Vec::new();
    let mut results = Vec::new();
    for fam in families(traces) {
        let predictor = tuner.choose(scores.iter().filter(|s| s.family != fam));
        let held: Vec<(usize, &Trace)> = traces
            .iter()
            .enumerate()
            .filter(|(_, t)| t.family == fam)
            .collect();
        let tls: Vec<Vec<Tick>> = held
            .iter()
            .map(|&(i, t)| trace_timeline(t, inject.map(|j| j.for_trace(i))))
            .collect();
        let totals = run_totals(&tls, w, &Tuned { predictor, prior });
        results.push((held[0].1.group, totals.clone()));
        folds.push(PolicyFold {
            held_out: fam.to_string(),
            traces: held.len(),
            predictor: predictor.into(),
            policies: totals.with_best(),
        });
    }
    PolicyCv {
        folds,
        pooled: per_campaign(results, Totals::add)
            .into_iter()
            .map(|(g, t)| PolicyPooled {
                group: g.name(),
                policies: t.with_best(),
            })
            .collect(),
    }
}
