//! Bandwidth traces in the `../shared/traces/dev` format: one `<seconds> <Mbit/s>` pair
//! per line.

use std::io;
use std::path::{Path, PathBuf};

use thiserror::Error;

/// Why a trace could not be read.
#[derive(Debug, Error)]
pub enum TraceError {
    /// A line is not `<seconds> <Mbit/s>` with finite, increasing times and a
    /// throughput of at least 0.
    #[error("{path}:{line}: {what}")]
    Line {
        /// The file.
        path: String,
        /// The line number (from 1).
        line: usize,
        /// What is wrong with it.
        what: String,
    },
    /// Fewer than two samples.
    #[error("{0}: needs at least two samples")]
    TooShort(String),
    /// A directory holds no trace file.
    #[error("no trace files in {0}")]
    Empty(String),
    /// A file or directory could not be read.
    #[error("reading {path}: {source}")]
    Io {
        /// The file or directory.
        path: String,
        /// The error.
        source: io::Error,
    },
}

/// Which measurement campaign a trace belongs to (figures are reported per group).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Group {
    /// Riiser et al. 3G commute traces (bus/car/ferry/metro/train/tram.*), ~1 s samples.
    Norway,
    /// FCC Measuring Broadband America (trace_*), 5 s samples.
    Fcc,
    /// Anything else (synthetic traces in tests).
    Other,
}

impl Group {
    /// Group of a trace file from its name.
    pub fn of(path: &Path) -> Group {
        let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("");
        let prefix = name.split('.').next().unwrap_or("");
        if name.starts_with("trace_") {
            Group::Fcc
        } else if ["bus", "car", "ferry", "metro", "train", "tram"].contains(&prefix) {
            Group::Norway
        } else {
            Group::Other
        }
    }

    /// Name for reports.
    pub fn name(self) -> &'static str {
        match self {
            Group::Norway => "norway",
            Group::Fcc => "fcc",
            Group::Other => "other",
        }
    }
}

/// The finer group a trace belongs to, the unit of leave-one-group-out
/// cross-validation: the means of transport of the Norway campaign (`bus`, `car`,
/// `ferry`, `metro`, `train`, `tram`), `fcc`, or, for other files, the name up to its
/// first dot.
pub fn family(path: &Path) -> String {
    let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("");
    match Group::of(path) {
        Group::Fcc => "fcc".into(),
        _ => name.split('.').next().unwrap_or("").to_string(),
    }
}

/// The cross-validation groups of `traces`, each once, in name order.
pub fn families(traces: &[Trace]) -> Vec<&str> {
    let mut v: Vec<&str> = traces.iter().map(|t| t.family.as_str()).collect();
    v.sort();
    v.dedup();
    v
}

/// Merges per-group results into one per campaign (`merge` adds one into another),
/// campaigns in report order.
pub fn per_campaign<R>(results: Vec<(Group, R)>, merge: impl Fn(&mut R, &R)) -> Vec<(Group, R)> {
    let mut out: Vec<(Group, R)> = Vec::new();
    for (g, r) in results {
        match out.iter_mut().find(|(c, _)| *c == g) {
            Some((_, acc)) => merge(acc, &r),
            None => out.push((g, r)),
        }
    }
    out.sort_by_key(|(g, _)| *g);
    out
}

/// One parsed trace.
#[derive(Clone, Debug)]
pub struct Trace {
    /// Campaign.
    pub group: Group,
    /// Cross-validation group (see [`family`]).
    pub family: String,
    /// Sample timestamps, seconds, strictly increasing.
    pub times: Vec<f64>,
    /// Throughput, Mbit/s.
    pub mbps: Vec<f64>,
}

impl Trace {
    /// Parses `text`; `path` names the source in errors.
    pub fn parse(path: &Path, text: &str) -> Result<Trace, TraceError> {
        let bad = |line: usize, what: String| TraceError::Line {
            path: path.display().to_string(),
            line: line + 1,
            what,
        };
        let mut times = Vec::new();
        let mut mbps = Vec::new();
        for (i, line) in text.lines().enumerate() {
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let mut it = line.split_whitespace();
            let (Some(t), Some(v), None) = (it.next(), it.next(), it.next()) else {
                return Err(bad(i, "expected `<seconds> <Mbit/s>`".into()));
            };
            let t: f64 = t.parse().map_err(|_| bad(i, format!("bad time {t:?}")))?;
            let v: f64 = v
                .parse()
                .map_err(|_| bad(i, format!("bad throughput {v:?}")))?;
            if !t.is_finite() || !v.is_finite() || v < 0.0 {
                return Err(bad(i, "values must be finite, throughput ≥ 0".into()));
            }
            if times.last().is_some_and(|&last| t <= last) {
                return Err(bad(i, format!("time {t} does not increase")));
            }
            times.push(t);
            mbps.push(v);
        }
        if times.len() < 2 {
            return Err(TraceError::TooShort(path.display().to_string()));
        }
        Ok(Trace {
            group: Group::of(path),
            family: family(path),
            times,
            mbps,
        })
    }

    /// Median spacing of the samples, seconds (the nominal sampling period).
    pub fn period(&self) -> f64 {
        let mut d: Vec<f64> = self.times.windows(2).map(|w| w[1] - w[0]).collect();
        d.sort_by(f64::total_cmp);
        d[d.len() / 2]
    }
}

/// Loads one trace file, or every trace in a directory (sorted by name; README*,
/// LICENSE* and hidden files are skipped).
pub fn load(path: &Path) -> Result<Vec<Trace>, TraceError> {
    let io_error = |path: &Path| {
        let path = path.display().to_string();
        move |source| TraceError::Io { path, source }
    };
    let files = if path.is_dir() {
        let mut v: Vec<PathBuf> = std::fs::read_dir(path)
            .map_err(io_error(path))?
            .map(|e| e.map(|e| e.path()))
            .collect::<io::Result<_>>()
            .map_err(io_error(path))?;
        v.retain(|p| {
            let n = p.file_name().and_then(|n| n.to_str()).unwrap_or("");
            p.is_file()
                && !n.starts_with('.')
                && !n.starts_with("README")
                && !n.starts_with("LICENSE")
        });
        v.sort();
        v
    } else {
        vec![path.to_path_buf()]
    };
    if files.is_empty() {
        return Err(TraceError::Empty(path.display().to_string()));
    }
    files
        .iter()
        .map(|f| {
            let text = std::fs::read_to_string(f).map_err(io_error(f))?;
            Trace::parse(f, &text)
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_and_rejects() {
        let p = Path::new("bus.x.log");
        let t = Trace::parse(p, "0 1.5\n1.0 2\n\n2.0 3\n").unwrap();
        assert_eq!(t.group, Group::Norway);
        assert_eq!(t.mbps, vec![1.5, 2.0, 3.0]);
        assert_eq!(t.period(), 1.0);
        assert!(Trace::parse(p, "0 1\n0 2\n").is_err());
        assert!(Trace::parse(p, "0 x\n1 2\n").is_err());
        assert!(Trace::parse(p, "0 1 2\n").is_err());
        assert!(Trace::parse(p, "0 -1\n1 2\n").is_err());
        assert_eq!(Group::of(Path::new("trace_1_http")), Group::Fcc);
        assert_eq!(t.family, "bus");
        assert_eq!(family(Path::new("trace_1_http---x.com")), "fcc");
        assert_eq!(family(Path::new("tram.a-b.log")), "tram");
    }
}
