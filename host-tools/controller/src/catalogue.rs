//! The program catalogue: which programs a task may name, how a node runs
//! each (an NPB workload built into the kernel, or a Wasm module), its default CPU and
//! memory needs, and its draw probability for generated task sets. Data, not
//! code: catalogues are JSON files (`data/*.json`), so a new workload is a
//! new entry.

use std::collections::BTreeMap;
use std::path::Path;

use serde::{Deserialize, Serialize};
use thiserror::Error;

/// How a node runs a program.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", deny_unknown_fields)]
pub enum Runner {
    /// An NPB workload built into the kernel (`run <workload> <class>`).
    Npb {
        /// `ep`, `is` or `cg`.
        workload: String,
        /// `S`, `W`, `A` or `B`.
        class: String,
    },
    /// A WebAssembly module uploaded to the node.
    Wasm {
        /// The module file, relative to the catalogue file.
        module: String,
    },
}

/// One program of the catalogue.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Program {
    /// What it computes.
    pub description: String,
    /// How a node runs it.
    pub runner: Runner,
    /// Default CPU need in cores.
    pub cpu: f64,
    /// Default memory need in MB.
    pub memory_mb: u64,
    /// Probability of drawing it into a generated task set.
    #[serde(default)]
    pub weight: f64,
    /// The program of the timing table whose measured times stand in for
    /// this one's until it has been measured itself.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timed_as: Option<String>,
}

/// A named set of programs.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Catalogue {
    /// What the catalogue is (shown by the UI and the bench).
    pub name: String,
    /// Program name → program.
    pub programs: BTreeMap<String, Program>,
}

/// Why a catalogue was refused.
#[derive(Debug, Error)]
pub enum CatalogueError {
    /// The file could not be read.
    #[error("reading {path}: {source}")]
    Read {
        /// The file.
        path: String,
        /// The error.
        source: std::io::Error,
    },
    /// The JSON did not parse.
    #[error("{path}: not a catalogue: {source}")]
    Parse {
        /// The file.
        path: String,
        /// The parser's error.
        source: serde_json::Error,
    },
    /// An entry is inconsistent.
    #[error("{path}: program {program}: {what}")]
    Entry {
        /// The file.
        path: String,
        /// The program.
        program: String,
        /// What is wrong.
        what: String,
    },
}

impl Catalogue {
    /// Parses and checks a catalogue (`path` names it in errors).
    pub fn from_json(path: &str, text: &str) -> Result<Self, CatalogueError> {
        let cat: Self = serde_json::from_str(text).map_err(|source| CatalogueError::Parse {
            path: path.into(),
            source,
        })?;
        for (name, p) in &cat.programs {
            let bad = |what: &str| CatalogueError::Entry {
                path: path.into(),
                program: name.clone(),
                what: what.into(),
            };
            if !crate::model::valid_name(name) {
                return Err(bad("names are 1-64 letters, digits, '.', '_' or '-'"));
            }
            if !(p.cpu.is_finite() && p.cpu > 0.0) {
                return Err(bad("cpu must be a positive number of cores"));
            }
            if p.memory_mb == 0 {
                return Err(bad("memory_mb must be positive"));
            }
            if !(p.weight.is_finite() && p.weight >= 0.0) {
                return Err(bad("weight must be a probability"));
            }
        }
        Ok(cat)
    }

    /// Reads and checks a catalogue file.
    pub fn load(path: &Path) -> Result<Self, CatalogueError> {
        let name = path.display().to_string();
        let text = std::fs::read_to_string(path).map_err(|source| CatalogueError::Read {
            path: name.clone(),
            source,
        })?;
        Self::from_json(&name, &text)
    }

    /// Today's workload: the NPB kernels (`data/npb.json`).
    pub fn npb() -> Self {
        Self::from_json("data/npb.json", include_str!("../data/npb.json"))
            .expect("the bundled NPB catalogue is valid (checked by a test)")
    }

    /// The thesis's nine programs, Wasm modules, with Table 5-1's
    /// probabilities and needs (`data/thesis.json`); each names the measured
    /// program whose times stand in for its own in the simulator.
    pub fn thesis() -> Self {
        Self::from_json("data/thesis.json", include_str!("../data/thesis.json"))
            .expect("the bundled thesis catalogue is valid (checked by a test)")
    }

    /// Everything Tern nodes run: the NPB kernels and the thesis's nine
    /// Wasm programs (the service's default).
    pub fn nodes() -> Self {
        let mut all = Self::npb();
        all.name = format!("{}; {}", all.name, Self::thesis().name);
        all.programs.extend(Self::thesis().programs);
        all
    }

    /// A program by name.
    pub fn get(&self, name: &str) -> Option<&Program> {
        self.programs.get(name)
    }

    /// The timing-table row that gives `program`'s times.
    pub fn timing_key<'a>(&'a self, program: &'a str) -> &'a str {
        self.get(program)
            .and_then(|p| p.timed_as.as_deref())
            .unwrap_or(program)
    }

    /// Programs with a positive weight and their cumulative probabilities,
    /// for drawing task sets.
    pub fn weighted(&self) -> Vec<(&str, f64)> {
        self.programs
            .iter()
            .filter(|(_, p)| p.weight > 0.0)
            .map(|(n, p)| (n.as_str(), p.weight))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_bundled_catalogues_are_valid_and_timed() {
        let timings = crate::timings::TimingTable::bundled();
        for cat in [Catalogue::npb(), Catalogue::thesis(), Catalogue::nodes()] {
            assert!(!cat.programs.is_empty(), "{}", cat.name);
            for name in cat.programs.keys() {
                let key = cat.timing_key(name);
                assert!(
                    timings.programs.contains_key(key),
                    "{}: {name} is timed as {key}, which the table lacks",
                    cat.name
                );
            }
        }
        let thesis = Catalogue::thesis();
        assert_eq!(thesis.programs.len(), 9);
        assert_eq!(
            Catalogue::nodes().programs.len(),
            Catalogue::npb().programs.len() + 9
        );
        let total: f64 = thesis.weighted().iter().map(|(_, w)| w).sum();
        assert!(
            (total - 1.0).abs() < 1e-9,
            "Table 5-1 sums to 1, got {total}"
        );
    }

    #[test]
    fn bad_entries_are_refused() {
        let bad = r#"{"name":"x","programs":{"p":{"description":"d","runner":{"npb":{"workload":"ep","class":"S"}},"cpu":0,"memory_mb":1}}}"#;
        assert!(matches!(
            Catalogue::from_json("x", bad),
            Err(CatalogueError::Entry { .. })
        ));
        let unknown = r#"{"name":"x","programs":{},"extra":1}"#;
        assert!(matches!(
            Catalogue::from_json("x", unknown),
            Err(CatalogueError::Parse { .. })
        ));
    }
}
