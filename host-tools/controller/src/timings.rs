//! The measured timing table: how long each program ran alone on each
//! board, in seconds, as a measuring command recorded it on real kernels
//! (`examples/measure_timings.rs`). The simulator draws task durations from
//! it; nothing in it is invented, and its `source` says how it was made.

use std::collections::BTreeMap;
use std::path::Path;

use serde::{Deserialize, Serialize};
use thiserror::Error;

/// Why a timing table was refused.
#[derive(Debug, Error)]
pub enum TimingError {
    /// The file could not be read.
    #[error("reading {path}: {source}")]
    Read {
        /// The file.
        path: String,
        /// The error.
        source: std::io::Error,
    },
    /// The JSON did not parse into a table.
    #[error("{path}: not a timing table: {source}")]
    Parse {
        /// The file.
        path: String,
        /// The parser's error.
        source: serde_json::Error,
    },
    /// A row is empty or holds a sample that is not a positive time.
    #[error("{path}: {program} on {board}: {what}")]
    Sample {
        /// The file.
        path: String,
        /// The program.
        program: String,
        /// The board.
        board: String,
        /// What is wrong.
        what: String,
    },
}

/// How a table was measured.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TimingSource {
    /// The command that produced it.
    pub command: String,
    /// When (UTC, RFC 3339).
    pub measured_at: String,
    /// The repository commit the kernels were built from.
    pub commit: String,
    /// Board name → its ISA.
    pub boards: BTreeMap<String, String>,
    /// What the samples are (e.g. "wall seconds from start to verification, one node alone").
    pub note: String,
}

/// Per-(program, board) run times in seconds.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TimingTable {
    /// How the table was made.
    pub source: TimingSource,
    /// Program → board → samples (seconds).
    pub programs: BTreeMap<String, BTreeMap<String, Vec<f64>>>,
}

impl TimingTable {
    /// Parses and checks a table (`path` names it in errors).
    pub fn from_json(path: &str, text: &str) -> Result<Self, TimingError> {
        let table: Self = serde_json::from_str(text).map_err(|source| TimingError::Parse {
            path: path.into(),
            source,
        })?;
        for (program, boards) in &table.programs {
            for (board, samples) in boards {
                let bad = |what: String| TimingError::Sample {
                    path: path.into(),
                    program: program.clone(),
                    board: board.clone(),
                    what,
                };
                if samples.is_empty() {
                    return Err(bad("no samples".into()));
                }
                if let Some(s) = samples.iter().find(|s| !(s.is_finite() && **s > 0.0)) {
                    return Err(bad(format!("{s} is not a positive number of seconds")));
                }
            }
        }
        Ok(table)
    }

    /// Reads and checks a table file.
    pub fn load(path: &Path) -> Result<Self, TimingError> {
        let name = path.display().to_string();
        let text = std::fs::read_to_string(path).map_err(|source| TimingError::Read {
            path: name.clone(),
            source,
        })?;
        Self::from_json(&name, &text)
    }

    /// The table committed with the crate (`data/timings.json`).
    pub fn bundled() -> Self {
        Self::from_json("data/timings.json", include_str!("../data/timings.json"))
            .expect("the bundled timing table is valid (checked by a test)")
    }

    /// The samples of `program` on `board`.
    pub fn samples(&self, program: &str, board: &str) -> Option<&[f64]> {
        self.programs
            .get(program)
            .and_then(|b| b.get(board))
            .map(Vec::as_slice)
    }

    /// The mean of `program`'s samples on `board`.
    pub fn mean(&self, program: &str, board: &str) -> Option<f64> {
        self.samples(program, board)
            .map(|s| s.iter().sum::<f64>() / s.len() as f64)
    }

    /// The boards every listed program was measured on.
    pub fn common_boards(&self) -> Vec<String> {
        let mut boards: Vec<String> = self.source.boards.keys().cloned().collect();
        boards.retain(|b| self.programs.values().all(|m| m.contains_key(b)));
        boards
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn table(samples: &str) -> String {
        format!(
            r#"{{"source":{{"command":"c","measured_at":"t","commit":"x","boards":{{"pc":"x86_64"}},"note":"n"}},
               "programs":{{"ep-S":{{"pc":{samples}}}}}}}"#
        )
    }

    #[test]
    fn tables_parse_and_bad_samples_are_refused() {
        let t = TimingTable::from_json("t", &table("[2.0, 4.0]")).unwrap();
        assert_eq!(t.mean("ep-S", "pc"), Some(3.0));
        assert_eq!(t.samples("ep-S", "virt"), None);
        assert_eq!(t.common_boards(), vec!["pc".to_string()]);
        for bad in ["[]", "[0.0]", "[-1.0]"] {
            let e = TimingTable::from_json("t", &table(bad)).unwrap_err();
            assert!(matches!(e, TimingError::Sample { .. }), "{bad}: {e}");
        }
        assert!(matches!(
            TimingTable::from_json("t", "{}"),
            Err(TimingError::Parse { .. })
        ));
    }

    #[test]
    fn the_bundled_table_is_valid() {
        let t = TimingTable::bundled();
        assert!(!t.programs.is_empty());
        assert!(!t.common_boards().is_empty());
    }
}
