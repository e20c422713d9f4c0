//! Execution-time history and predictions.
//!
//! The thesis learns one time per program (the mean of its last runs,
//! whatever node ran them). Tern's nodes differ by board (a PC without SSE
//! computes floating point several times slower than an aarch64 node), so
//! the history is kept per (program, board): the thesis's per-program mean
//! is derived from it, and a pair never run is predicted from the program's
//! time on another board scaled by the boards' measured ratio.

use std::collections::{BTreeMap, HashMap, VecDeque};

use serde::{Deserialize, Serialize};

use crate::model::NodeId;

/// Runs kept per (program, board): the thesis's "mean of the last runs".
pub const WINDOW: usize = 5;

/// A prediction and whether it rests on runs of this very pair.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Prediction {
    /// Predicted seconds alone on one core.
    pub secs: f64,
    /// Whether the pair itself has history (else it is inferred).
    pub known: bool,
}

/// The execution history the policies learn from.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct History {
    /// "program|board" → last runs, oldest first.
    pairs: BTreeMap<String, VecDeque<f64>>,
    /// Node → last runs there (the thesis's T_j^avg).
    #[serde(default)]
    nodes: HashMap<NodeId, VecDeque<f64>>,
}

fn pair(key: &str, board: &str) -> String {
    format!("{key}|{board}")
}

fn push(window: &mut VecDeque<f64>, secs: f64) {
    if window.len() == WINDOW {
        window.pop_front();
    }
    window.push_back(secs);
}

fn mean(values: impl IntoIterator<Item = f64>) -> Option<f64> {
    let (sum, n) = values
        .into_iter()
        .fold((0.0, 0usize), |(s, n), v| (s + v, n + 1));
    (n > 0).then(|| sum / n as f64)
}

impl History {
    /// An empty history.
    pub fn new() -> Self {
        Self::default()
    }

    /// Records a run of `key` on `board` (node `node`) that took `secs`.
    pub fn record(&mut self, key: &str, board: &str, node: NodeId, secs: f64) {
        if !(secs.is_finite() && secs > 0.0) {
            return;
        }
        push(self.pairs.entry(pair(key, board)).or_default(), secs);
        push(self.nodes.entry(node).or_default(), secs);
    }

    /// Mean of the last runs of `key` on `board`.
    pub fn pair_mean(&self, key: &str, board: &str) -> Option<f64> {
        self.pairs
            .get(&pair(key, board))
            .and_then(|w| mean(w.iter().copied()))
    }

    /// The thesis's estimate: mean of the last runs of `key` on any board.
    pub fn program_mean(&self, key: &str) -> Option<f64> {
        let prefix = format!("{key}|");
        mean(
            self.pairs
                .iter()
                .filter(|(k, _)| k.starts_with(&prefix))
                .flat_map(|(_, w)| w.iter().copied()),
        )
    }

    /// Mean of the last runs on node `node` (the thesis's T_j^avg).
    pub fn node_mean(&self, node: NodeId) -> Option<f64> {
        self.nodes.get(&node).and_then(|w| mean(w.iter().copied()))
    }

    /// Mean over every pair's mean.
    pub fn global_mean(&self) -> Option<f64> {
        mean(self.pairs.values().filter_map(|w| mean(w.iter().copied())))
    }

    /// Whether any run of `key` is known.
    pub fn knows_program(&self, key: &str) -> bool {
        self.program_mean(key).is_some()
    }

    /// How much slower `a` is than `b`: the geometric mean over the programs
    /// run on both of their time ratios.
    pub fn board_ratio(&self, a: &str, b: &str) -> Option<f64> {
        let keys = self.pairs.keys().filter_map(|k| {
            k.strip_suffix(&format!("|{a}"))
                .map(std::string::ToString::to_string)
        });
        let logs: Vec<f64> = keys
            .filter_map(|k| Some((self.pair_mean(&k, a)? / self.pair_mean(&k, b)?).ln()))
            .collect();
        mean(logs).map(f64::exp)
    }

    /// The boards `key` has been run on.
    fn boards_of(&self, key: &str) -> Vec<String> {
        let prefix = format!("{key}|");
        self.pairs
            .keys()
            .filter_map(|k| k.strip_prefix(&prefix).map(String::from))
            .collect()
    }

    /// Tern's prediction for `key` on `board`: the pair's mean; else the
    /// program's time on the board it is best known on, scaled by the
    /// boards' ratio (or unscaled if no program was run on both); else the
    /// mean over everything; else one second.
    pub fn predict(&self, key: &str, board: &str) -> Prediction {
        if let Some(secs) = self.pair_mean(key, board) {
            return Prediction { secs, known: true };
        }
        let inferred = self
            .boards_of(key)
            .iter()
            .filter_map(|other| {
                let there = self.pair_mean(key, other)?;
                Some(there * self.board_ratio(board, other).unwrap_or(1.0))
            })
            .fold(None, |best: Option<f64>, v| {
                Some(best.map_or(v, |b| b.min(v)))
            });
        Prediction {
            secs: inferred.or_else(|| self.global_mean()).unwrap_or(1.0),
            known: false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn means_are_over_the_last_runs() {
        let mut h = History::new();
        for s in [100.0, 1.0, 1.0, 1.0, 1.0, 1.0] {
            h.record("ep-S", "pc", 1, s);
        }
        assert_eq!(h.pair_mean("ep-S", "pc"), Some(1.0));
        h.record("ep-S", "virt", 2, 3.0);
        assert_eq!(h.program_mean("ep-S"), Some(8.0 / 6.0));
        assert_eq!(h.node_mean(2), Some(3.0));
        assert_eq!(h.pair_mean("ep", "pc"), None, "keys are exact");
        h.record("ep-S", "pc", 1, f64::NAN);
        assert_eq!(
            h.pair_mean("ep-S", "pc"),
            Some(1.0),
            "bad samples are dropped"
        );
    }

    #[test]
    fn unknown_pairs_are_inferred_from_the_board_ratio() {
        let mut h = History::new();
        h.record("ep-S", "pc", 1, 80.0);
        h.record("ep-S", "virt", 2, 8.0);
        h.record("cg-W", "pc", 1, 30.0);
        assert!((h.board_ratio("virt", "pc").unwrap() - 0.1).abs() < 1e-12);
        let p = h.predict("cg-W", "virt");
        assert!(!p.known);
        assert!((p.secs - 3.0).abs() < 1e-9, "{p:?}");
        assert!(h.predict("ep-S", "pc").known);
        // Nothing known about the program: the overall mean.
        let p = h.predict("is-S", "virt");
        assert!(!p.known && p.secs > 8.0);
        assert_eq!(History::new().predict("x", "pc").secs, 1.0);
    }
}
