//! Researcher's bench for Tern's bandwidth predictors, sync policies and codecs.
//!
//! `sync-lab predict` scores the predictors on recorded traces, `sync-lab policy` runs
//! the sync-interval policies in a seeded simulator (thesis Table 4-3 included), and
//! `sync-lab codec` measures the codecs and the adaptive selector on a file.

mod codec_bench;
mod policy_cv;
mod predict_eval;
mod sim;

use std::io::Write;
use std::path::PathBuf;

use anyhow::{bail, Context, Result};
use clap::{Args, Parser, Subcommand, ValueEnum};
use serde::Serialize;
use tern_lab::trace;
use tern_sync::monitor::OutagePrior;

use crate::sim::{per_run, run_all, trace_timeline, Injection, Outcome, Scenario, Tuned, Workload};
use tern_lab::trace::{Group, Trace};

#[derive(Parser)]
#[command(
    name = "sync-lab",
    version,
    about = "Bench for Tern's bandwidth predictors, sync policies and codecs"
)]
struct Cli {
    #[command(subcommand)]
    verb: Verb,
}

#[derive(Subcommand)]
enum Verb {
    /// Error of every bandwidth predictor forecasting the mean of the next HORIZON seconds.
    Predict(PredictArgs),
    /// Syncs, bytes, lost progress and cost of every sync-interval policy.
    Policy(PolicyArgs),
    /// Time, ratio and bytes per codec, and the adaptive selector's choice.
    Codec(CodecArgs),
}

/// Restricts a trace directory to one campaign.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
enum GroupFilter {
    /// bus/car/ferry/metro/train/tram.* (3G, Norway).
    Norway,
    /// trace_* (FCC broadband).
    Fcc,
    /// Every file.
    All,
}

impl GroupFilter {
    fn keep(self, g: Group) -> bool {
        match self {
            GroupFilter::Norway => g == Group::Norway,
            GroupFilter::Fcc => g == Group::Fcc,
            GroupFilter::All => true,
        }
    }
}

#[derive(Args)]
struct PredictArgs {
    /// A trace file or a directory of traces (`<seconds> <Mbit/s>` lines).
    #[arg(long)]
    trace: PathBuf,
    /// Forecast horizon, seconds.
    #[arg(long, default_value_t = 1.0)]
    horizon: f64,
    /// Only traces of this group.
    #[arg(long, value_enum, default_value_t = GroupFilter::All)]
    group: GroupFilter,
    /// Leave-one-group-out cross-validation: each group (bus, car, ferry, metro, train,
    /// tram, fcc) scored with the adaptive predictor tuned on the others.
    #[arg(long)]
    cv: bool,
    /// Print JSON instead of a table.
    #[arg(long)]
    json: bool,
}

#[derive(Args)]
struct PolicyArgs {
    /// A trace file or directory; outages = timestamp gaps + injected outages.
    #[arg(long, conflicts_with = "scenario")]
    trace: Option<PathBuf>,
    /// A synthetic network scenario after thesis §4.2.
    #[arg(long, value_enum)]
    scenario: Option<Scenario>,
    /// Print our run of thesis Table 4-3 (all three scenarios) with our policies added.
    #[arg(long = "table-4-3", conflicts_with_all = ["trace", "scenario"])]
    table: bool,
    /// Task state size, MB.
    #[arg(long, default_value_t = 64.0)]
    state_mb: f64,
    /// Rate of writes into the state, MB/s (uniform over the state).
    #[arg(long, default_value_t = 2.0)]
    dirty_rate: f64,
    /// Compression ratio of deltas.
    #[arg(long, default_value_t = 1.0)]
    ratio: f64,
    /// Fixed bytes per sync besides dirty pages, KB.
    #[arg(long, default_value_t = 16.0)]
    overhead_kb: f64,
    /// Heartbeat lease, seconds: shorter outages cause no failover.
    #[arg(long, default_value_t = 3.0)]
    lease: f64,
    /// Seed of the first run.
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// Scenario runs (seeds seed, seed+1, …); figures are means per run.
    #[arg(long, default_value_t = 1)]
    runs: usize,
    /// Traces: mean time between injected outages, seconds.
    #[arg(long, default_value_t = 600.0)]
    outage_mtbf: f64,
    /// Traces: mean injected outage duration, seconds.
    #[arg(long, default_value_t = 30.0)]
    outage_mean: f64,
    /// Traces: inject no outages (timestamp gaps only).
    #[arg(long)]
    no_inject: bool,
    /// Only traces of this group.
    #[arg(long, value_enum, default_value_t = GroupFilter::All)]
    group: GroupFilter,
    /// Traces: leave-one-group-out cross-validation, each group (bus, car, ferry,
    /// metro, train, tram, fcc) run with the bandwidth predictor tuned on the others.
    #[arg(long)]
    cv: bool,
    /// The monitor's outage prior as `P0,OUTAGES,SECONDS` (docs/sync.md §1); the
    /// kernel's by default.
    #[arg(long, value_parser = parse_prior)]
    outage_prior: Option<OutagePrior>,
    /// A fresh monitor for every run or trace, as if each were a new session; by
    /// default one monitor runs through all of them.
    #[arg(long)]
    fresh_monitor: bool,
    /// Print JSON instead of a table.
    #[arg(long)]
    json: bool,
}

#[derive(Args)]
struct CodecArgs {
    /// File whose bytes stand for a sync delta.
    #[arg(long)]
    data: PathBuf,
    /// Link bandwidth, MB/s.
    #[arg(long)]
    bandwidth: f64,
    /// Chunk size, KB.
    #[arg(long, default_value_t = 256)]
    chunk_kb: usize,
    /// Print JSON instead of a table.
    #[arg(long)]
    json: bool,
}

fn main() -> Result<()> {
    let mut out = std::io::stdout().lock();
    let r = match Cli::parse().verb {
        Verb::Predict(a) => predict(&mut out, a),
        Verb::Policy(a) => policy(&mut out, a),
        Verb::Codec(a) => codec(&mut out, a),
    };
    match r {
        // A reader that stops early (`| head`) is not an error.
        Err(e)
            if e.downcast_ref::<std::io::Error>()
                .is_some_and(|io| io.kind() == std::io::ErrorKind::BrokenPipe) =>
        {
            Ok(())
        }
        r => r,
    }
}

fn load(path: &std::path::Path, group: GroupFilter) -> Result<Vec<Trace>> {
    let mut traces = trace::load(path)?;
    traces.retain(|t| group.keep(t.group));
    if traces.is_empty() {
        bail!("no traces of group {group:?} in {}", path.display());
    }
    Ok(traces)
}

fn print_json(out: &mut dyn Write, v: &impl Serialize) -> Result<()> {
    writeln!(out, "{}", serde_json::to_string_pretty(v)?)?;
    Ok(())
}

fn predict(out: &mut dyn Write, a: PredictArgs) -> Result<()> {
    if !(a.horizon > 0.0 && a.horizon.is_finite()) {
        bail!("--horizon must be a positive number of seconds");
    }
    let traces = load(&a.trace, a.group)?;
    if a.cv {
        let cv = predict_eval::cross_validate(&traces, a.horizon);
        if a.json {
            return print_json(out, &cv);
        }
        return print_predict_cv(out, &cv);
    }
    if a.json {
        #[derive(Serialize)]
        struct Out {
            horizon_s: f64,
            predictors: Vec<predict_eval::Score>,
        }
        return print_json(
            out,
            &Out {
                horizon_s: a.horizon,
                predictors: predict_eval::evaluate(&traces, a.horizon),
            },
        );
    }
    let mut groups: Vec<Group> = traces.iter().map(|t| t.group).collect();
    groups.sort();
    groups.dedup();
    for g in groups {
        let sel: Vec<Trace> = traces.iter().filter(|t| t.group == g).cloned().collect();
        let scores = predict_eval::evaluate(&sel, a.horizon);
        writeln!(
            out,
            "group {} ({} traces, {} forecasts), horizon {} s",
            g.name(),
            sel.len(),
            scores.first().map_or(0, |s| s.n),
            a.horizon
        )?;
        writeln!(
            out,
            "  {:<14} {:>10} {:>8}",
            "predictor", "MAE Mbit/s", "MRE"
        )?;
        for s in &scores {
            let mark = if s.used { "  (used)" } else { "" };
            writeln!(out, "  {:<14} {:>10.4} {:>8.4}{mark}", s.name, s.mae, s.mre)?;
        }
    }
    Ok(())
}

fn print_predict_cv(out: &mut dyn Write, cv: &predict_eval::CrossValidation) -> Result<()> {
    writeln!(
        out,
        "leave-one-group-out, horizon {} s: MAE in Mbit/s on each group held out; \
         adaptive's parameters (decay, sharpness, members) chosen on the other groups",
        cv.horizon_s
    )?;
    let Some(first) = cv.folds.first() else {
        return Ok(());
    };
    write!(out, "  {:<8} {:>6} {:<18}", "held out", "traces", "chosen")?;
    for s in &first.scores {
        write!(out, " {:>9}", short(&s.name))?;
    }
    writeln!(out)?;
    for f in &cv.folds {
        let c = &f.chosen;
        let chosen = format!("{} {} {}", c.decay, c.sharpness, c.members);
        write!(out, "  {:<8} {:>6} {:<18}", f.held_out, f.traces, chosen)?;
        for s in &f.scores {
            write!(out, " {:>9.4}", s.mae)?;
        }
        writeln!(out)?;
    }
    for p in &cv.pooled {
        write!(
            out,
            "  {:<8} {:>6} {:<18}",
            p.group, "", "(held-out pooled)"
        )?;
        for s in &p.scores {
            write!(out, " {:>9.4}", s.mae)?;
        }
        writeln!(out)?;
    }
    let (c, k) = (&cv.chosen_on_all, &cv.kernel_default);
    writeln!(
        out,
        "  with every group in training: decay {}, sharpness {}, members {} \
         (the kernel runs decay {}, sharpness {}, members {})",
        c.decay, c.sharpness, c.members, k.decay, k.sharpness, k.members
    )?;
    Ok(())
}

/// A predictor name short enough for a table column.
fn short(name: &str) -> &str {
    match name {
        "wavelet-arma" => "wav-arma",
        "wavelet-ar" => "wav-ar",
        n => n,
    }
}

fn parse_prior(s: &str) -> std::result::Result<OutagePrior, String> {
    let v: Vec<f64> = s
        .split(',')
        .map(|x| x.trim().parse::<f64>())
        .collect::<std::result::Result<_, _>>()
        .map_err(|e| format!("{s:?}: {e}; expected P0,OUTAGES,SECONDS"))?;
    match v[..] {
        [p0, outages, seconds] if (0.0..1.0).contains(&p0) && outages > 0.0 && seconds > 0.0 => {
            Ok(OutagePrior {
                outage_free: p0,
                outages,
                seconds,
            })
        }
        _ => Err(format!(
            "{s:?}: expected P0,OUTAGES,SECONDS with 0 ≤ P0 < 1 and positive counts"
        )),
    }
}

fn policy(out: &mut dyn Write, a: PolicyArgs) -> Result<()> {
    let tuned = Tuned {
        prior: a.outage_prior.unwrap_or_default(),
        ..Tuned::default()
    };
    let w = Workload {
        state_bytes: a.state_mb * 1e6,
        write_rate: a.dirty_rate * 1e6,
        ratio: a.ratio,
        overhead_bytes: a.overhead_kb * 1e3,
        lease_s: a.lease,
    };
    if !(w.state_bytes > 0.0
        && w.write_rate >= 0.0
        && w.ratio >= 1.0
        && w.overhead_bytes >= 0.0
        && w.lease_s > 0.0)
    {
        bail!("need --state-mb > 0, --dirty-rate ≥ 0, --ratio ≥ 1, --overhead-kb ≥ 0, --lease > 0");
    }
    if a.runs == 0 {
        bail!("--runs must be at least 1");
    }
    let scenario_runs = |s: Scenario| -> Vec<Outcome> {
        let tls: Vec<_> = (0..a.runs as u64).map(|k| s.timeline(a.seed + k)).collect();
        per_run(run_all(&tls, &w, &tuned, a.fresh_monitor), a.runs)
    };
    if a.cv && a.trace.is_none() {
        bail!("--cv cross-validates over trace groups: give --trace (the scenarios never enter any tuning)");
    }
    if a.table {
        return table_4_3(out, &a, scenario_runs);
    }
    let (label, outcomes) = match (&a.trace, a.scenario) {
        (Some(path), None) => {
            if !(a.outage_mtbf > 0.0 && a.outage_mean > 0.0) {
                bail!("--outage-mtbf and --outage-mean must be positive");
            }
            let traces = load(path, a.group)?;
            let inject = (!a.no_inject).then_some(Injection {
                mtbf_s: a.outage_mtbf,
                mean_s: a.outage_mean,
                seed: a.seed,
            });
            if a.cv {
                let cv = policy_cv::cross_validate(&traces, &w, tuned.prior, inject);
                if a.json {
                    return print_json(out, &cv);
                }
                return print_policy_cv(out, &cv, &a, &tuned.prior);
            }
            let tls: Vec<_> = traces
                .iter()
                .enumerate()
                .map(|(i, t)| trace_timeline(t, inject.map(|j| j.for_trace(i))))
                .collect();
            let secs: usize = tls.iter().map(Vec::len).sum();
            (
                format!("{} traces ({} s in total), totals", traces.len(), secs),
                run_all(&tls, &w, &tuned, a.fresh_monitor),
            )
        }
        (None, Some(s)) => (
            format!(
                "scenario {}, mean of {} run(s) of {} s",
                s.name(),
                a.runs,
                sim::SCENARIO_S
            ),
            scenario_runs(s),
        ),
        _ => bail!("give one of --trace, --scenario or --table-4-3"),
    };
    if a.json {
        #[derive(Serialize)]
        struct Out {
            policies: Vec<Outcome>,
        }
        return print_json(out, &Out { policies: outcomes });
    }
    writeln!(
        out,
        "{label}; state {} MB, writes {} MB/s",
        a.state_mb, a.dirty_rate
    )?;
    print_outcomes(out, &outcomes, None)?;
    Ok(())
}

fn print_policy_cv(
    out: &mut dyn Write,
    cv: &policy_cv::PolicyCv,
    a: &PolicyArgs,
    prior: &OutagePrior,
) -> Result<()> {
    writeln!(
        out,
        "leave-one-group-out, {}; state {} MB, writes {} MB/s; outage prior {} {} {}: \
         cost in seconds on each group held out, its predictor chosen on the other groups",
        if a.no_inject {
            "gaps only"
        } else {
            "gaps + injected outages"
        },
        a.state_mb,
        a.dirty_rate,
        prior.outage_free,
        prior.outages,
        prior.seconds
    )?;
    let Some(first) = cv.folds.first() else {
        return Ok(());
    };
    write!(out, "  {:<8} {:<18}", "held out", "predictor")?;
    for o in &first.policies {
        let name = o
            .name
            .strip_prefix("fixed-best-")
            .map_or(&*o.name, |_| "best");
        write!(out, " {:>11}", name)?;
    }
    writeln!(out)?;
    let row = |out: &mut dyn Write, label: &str, p: &str, v: &[Outcome]| {
        write!(out, "  {label:<8} {p:<18}")?;
        for o in v {
            write!(out, " {:>11.1}", o.cost)?;
        }
        let best = v
            .last()
            .and_then(|b| b.name.strip_prefix("fixed-best-"))
            .unwrap_or("");
        writeln!(out, "  (best {best})")
    };
    for f in &cv.folds {
        let c = &f.predictor;
        let p = format!("{} {} {}", c.decay, c.sharpness, c.members);
        row(out, &f.held_out, &p, &f.policies)?;
    }
    for g in &cv.pooled {
        row(out, g.group, "(held-out total)", &g.policies)?;
    }
    Ok(())
}

fn print_outcomes(out: &mut dyn Write, outcomes: &[Outcome], scenario: Option<&str>) -> Result<()> {
    let thesis = scenario.is_some();
    write!(
        out,
        "  {:<18} {:>8} {:>10} {:>10} {:>10} {:>9}",
        "policy", "syncs", "MB sent", "lost s", "cost s", "failovers"
    )?;
    if thesis {
        write!(out, " {:>14}", "thesis syncs/rc")?;
    }
    writeln!(out)?;
    for o in outcomes {
        write!(
            out,
            "  {:<18} {:>8.1} {:>10.1} {:>10.1} {:>10.1} {:>9.1}",
            o.name,
            o.syncs,
            o.bytes / 1e6,
            o.lost_progress,
            o.cost,
            o.failovers
        )?;
        if let Some(s) = scenario {
            if let Some((_, _, n, rc)) = sim::THESIS_TABLE_4_3
                .iter()
                .find(|(sc, p, _, _)| *sc == s && *p == o.name)
            {
                write!(out, " {:>14}", format!("{n}/{rc}"))?;
            }
        }
        if o.used {
            write!(out, "  (used)")?;
        }
        writeln!(out)?;
    }
    Ok(())
}

fn table_4_3(
    out: &mut dyn Write,
    a: &PolicyArgs,
    run: impl Fn(Scenario) -> Vec<Outcome>,
) -> Result<()> {
    let all: Vec<(Scenario, Vec<Outcome>)> = [Scenario::Good, Scenario::Fair, Scenario::Poor]
        .into_iter()
        .map(|s| (s, run(s)))
        .collect();
    if a.json {
        #[derive(Serialize)]
        struct Row {
            scenario: &'static str,
            policies: Vec<Outcome>,
        }
        let rows: Vec<Row> = all
            .into_iter()
            .map(|(s, policies)| Row {
                scenario: s.name(),
                policies,
            })
            .collect();
        return print_json(out, &rows);
    }
    writeln!(out,
        "Thesis Table 4-3, our run: mean of {} run(s) of {} s per scenario; state {} MB, writes {} MB/s.",
        a.runs,
        sim::SCENARIO_S,
        a.state_mb,
        a.dirty_rate
    )?;
    writeln!(out, "'thesis syncs/rc' = the thesis's published sync count / recomputed work (units not given).")?;
    for (s, outcomes) in &all {
        writeln!(out, "scenario {}", s.name())?;
        print_outcomes(out, outcomes, Some(s.name()))?;
    }
    Ok(())
}

fn codec(out: &mut dyn Write, a: CodecArgs) -> Result<()> {
    let data = std::fs::read(&a.data).with_context(|| format!("reading {}", a.data.display()))?;
    if data.is_empty() {
        bail!("{} is empty", a.data.display());
    }
    let r = codec_bench::run(&data, a.bandwidth, a.chunk_kb * 1024)?;
    if a.json {
        return print_json(out, &r);
    }
    writeln!(
        out,
        "{} bytes in {} KB chunks at {} MB/s",
        r.data_bytes,
        r.chunk_bytes / 1024,
        r.bandwidth_mbs
    )?;
    writeln!(
        out,
        "  {:<14} {:>10} {:>7} {:>12} {:>9} {:>11} {:>10}",
        "codec", "compress s", "ratio", "bytes", "serial s", "pipelined s", "measured s"
    )?;
    for row in &r.codecs {
        writeln!(
            out,
            "  {:<14} {:>10.4} {:>7.3} {:>12} {:>9.4} {:>11.4} {:>10.4}",
            row.name,
            row.compress_s,
            row.ratio,
            row.bytes,
            row.serial_s,
            row.pipelined_s,
            row.measured_s
        )?;
    }
    if let Some(ad) = r.codecs.last() {
        let picks: Vec<String> = ad.picks.iter().map(|(c, n)| format!("{c}×{n}")).collect();
        writeln!(
            out,
            "  adaptive picks: {}; converged to {}",
            picks.join(", "),
            r.selected
        )?;
    }
    Ok(())
}
