//! `tern`: the project's front door.
//!
//! `tern demo [--workload ep] [--class S] [--report FILE] [--keep]` boots an
//! x86_64 and an aarch64 node in QEMU on a private network namespace (needs
//! root), migrates a running NPB task x86_64 → aarch64 → x86_64 and prints
//! the verification result and what each migration cost.

use std::io::{BufRead, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, Result};
use clap::{Parser, Subcommand};
use indicatif::{ProgressBar, ProgressStyle};
use signal_hook::consts::{SIGINT, SIGTERM};
use signal_hook::iterator::Signals;
use tern::demo::{self, Event, Options, Report, BOARDS};
use tern_ci::cluster::Cluster;
use tern_flash::netlab;
use tern_inspect::node::key_hex;

/// Command line.
#[derive(Parser, Debug)]
#[command(
    name = "tern",
    about = "Tern: a portable unikernel whose tasks move between ISAs"
)]
struct Args {
    #[command(subcommand)]
    command: Cmd,
}

#[derive(Subcommand, Debug)]
enum Cmd {
    /// Migrate a running NPB task x86_64 -> aarch64 -> x86_64 between two QEMU nodes (needs root).
    Demo {
        /// NPB workload: ep, is or cg.
        #[arg(long, default_value = "ep")]
        workload: String,
        /// NPB class: S, W, A or B.
        #[arg(long, default_value = "S")]
        class: String,
        /// Write the report as JSON to this file.
        #[arg(long)]
        report: Option<PathBuf>,
        /// Keep the nodes running afterwards (until Enter) to explore them with `inspect`.
        #[arg(long)]
        keep: bool,
        /// Give up after this many seconds.
        #[arg(long, default_value_t = 600)]
        timeout: u64,
    },
}

fn main() -> Result<()> {
    let Cmd::Demo {
        workload,
        class,
        report,
        keep,
        timeout,
    } = Args::parse().command;
    let options = Options {
        workload,
        class,
        timeout: Duration::from_secs(timeout),
        ..Options::default()
    };
    // A signal would end the process without the cluster's drop: tear the
    // lab down (its QEMU nodes, the namespace) here, then exit.
    let mut signals = Signals::new([SIGINT, SIGTERM]).context("installing signal handlers")?;
    std::thread::spawn(move || {
        if let Some(signal) = signals.forever().next() {
            eprintln!("tern: interrupted, stopping the nodes");
            netlab::remove_namespace(&netlab::lab_name(demo::LAB));
            std::process::exit(128 + signal);
        }
    });
    let bar = ProgressBar::new(1000);
    bar.set_style(
        ProgressStyle::with_template("{prefix:>8} [{bar:40}] {msg} {elapsed}")
            .context("progress bar template")?
            .progress_chars("=> "),
    );
    // Without a terminal the bar is hidden, and so is its println.
    let say = |text: String| {
        if bar.is_hidden() {
            println!("{text}");
        } else {
            bar.println(text);
        }
    };
    let mut on_event = |event: Event| match event {
        Event::Stage(text) => say(format!("tern: {text}")),
        Event::Progress { isa, percent } => {
            bar.set_prefix(isa);
            bar.set_position((percent * 10.0) as u64);
            bar.set_message(format!("{percent:5.1}%"));
        }
        Event::Migrated(m) => say(format!(
            "tern: migrated {} -> {}: {} ms total, {} ms downtime, {} state bytes, {} wire bytes",
            m.from_isa, m.to_isa, m.total_ms, m.downtime_ms, m.state_bytes, m.wire_bytes
        )),
    };
    let (result, cluster, key) = demo::run(&options, &mut on_event)?;
    bar.finish_and_clear();
    print_report(&result);
    if let Some(path) = &report {
        write_report(path, &result)?;
        println!("report written to {}", path.display());
    }
    if keep {
        explore(&cluster, &key)?;
    }
    if !result.verified {
        anyhow::bail!("the task did not verify");
    }
    Ok(())
}

fn print_report(r: &Report) {
    println!(
        "{} class {}: {} ({:.1} s)",
        r.workload,
        r.class,
        if r.verified {
            "VERIFICATION SUCCESSFUL after migrating"
        } else {
            "VERIFICATION FAILED"
        },
        r.run_s
    );
    println!(
        "{:<20} {:>8} {:>10} {:>12} {:>12} {:>8}",
        "migration", "at", "total ms", "downtime ms", "state bytes", "wire bytes"
    );
    for m in &r.migrations {
        println!(
            "{:<20} {:>7.1}% {:>10} {:>12} {:>12} {:>8}",
            format!("{} -> {}", m.from_isa, m.to_isa),
            m.at_percent,
            m.total_ms,
            m.downtime_ms,
            m.state_bytes,
            m.wire_bytes
        );
    }
}

/// Writes the report through a temporary file and a rename.
fn write_report(path: &Path, r: &Report) -> Result<()> {
    let tmp = path.with_extension(format!("tmp-{}", std::process::id()));
    std::fs::write(&tmp, serde_json::to_vec_pretty(r)?)
        .with_context(|| format!("writing {}", tmp.display()))?;
    std::fs::rename(&tmp, path).with_context(|| format!("renaming to {}", path.display()))
}

/// `--keep`: tells how to reach the nodes, then waits for Enter.
fn explore(cluster: &Cluster, key: &tern_protocol::Psk) -> Result<()> {
    let key_file = std::env::temp_dir().join(format!("tern-demo-{}.key", std::process::id()));
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&key_file)
        .with_context(|| format!("creating {}", key_file.display()))?;
    writeln!(f, "{}", key_hex(key))?;
    let ns = cluster.lab().netns().name();
    println!("\nthe nodes keep running; from another shell:");
    for (i, board) in BOARDS.iter().enumerate() {
        println!(
            "  sudo ip netns exec {ns} cargo run --bin inspect -- --node {} --key-file {} list   # {}",
            Cluster::control(i),
            key_file.display(),
            board.name()
        );
    }
    println!("press Enter to stop them");
    let mut line = String::new();
    let read = std::io::stdin().lock().read_line(&mut line);
    let _ = std::fs::remove_file(&key_file);
    read.map(drop).context("reading stdin")
}
