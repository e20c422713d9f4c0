//! Checkpoint inspector for files and live Tern nodes, in the spirit of CRIU's `crit`.
//!
//! Files: `inspect show FILE [--json]`, `inspect verify FILE`, `inspect diff A B`,
//! `inspect export FILE --region NAME -o OUT`. Live nodes (control service,
//! `docs/protocol.md`): `inspect --node ADDR:PORT list [--json]`,
//! `inspect --node ADDR:PORT fetch TASK -o FILE`,
//! `inspect --node ADDR:PORT migrate TASK --to ADDR:PORT [--json]`, keyed by
//! `--key-file FILE` or `TERN_KEY`, or `--insecure`. Where a node's address
//! goes, its node id does too (`5254007e0002`, as `tern nodes discover`
//! lists it): `--node` finds it by its beacon, `--to` is resolved by the
//! sending node, which hears the beacons too. Exit status 0 on success;
//! 1 when a checkpoint fails verification (the failing region and chunk are
//! named); 2 on usage, I/O or node errors.

mod origin;
mod walk;

use anyhow::{bail, Context, Result};
use clap::{Parser, Subcommand};
use origin::{FileOrigin, Origin};
use std::fmt::Write as _;
use std::io::Write as _;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;
use tern_client::{self as client, NodeClient, CONTROL_PORT};
use tern_inspect::node::{task_table, TaskView};
use tern_protocol::Security;
use walk::{walk, Walk};

/// Command line.
#[derive(Parser, Debug)]
#[command(name = "inspect", about = "Inspect Tern checkpoints")]
struct Args {
    #[command(flatten)]
    node: NodeArgs,
    #[command(subcommand)]
    verb: Verb,
}

/// How to reach a live node.
#[derive(clap::Args, Debug)]
struct NodeArgs {
    /// A live node's control service, `ADDR:PORT` (port 4470), or its node id (heard on the
    /// LAN), for list, fetch, migrate.
    #[arg(long, global = true)]
    node: Option<String>,
    /// File holding the cluster key as 64 hex digits (else `TERN_KEY`).
    #[arg(long, global = true, conflicts_with = "insecure")]
    key_file: Option<PathBuf>,
    /// Talk to a node running without a key (no authentication, no secrecy).
    #[arg(long, global = true)]
    insecure: bool,
    /// Seconds to wait for each answer of the node.
    #[arg(long, global = true, default_value_t = 30)]
    timeout: u64,
}

#[derive(Subcommand, Debug)]
enum Verb {
    /// Header, regions and decoded typed regions.
    Show {
        /// Checkpoint file.
        file: PathBuf,
        /// Print the stable JSON form (see docs/checkpoint-format.md).
        #[arg(long)]
        json: bool,
    },
    /// Check every checksum; exit 0 only when all pass.
    Verify {
        /// Checkpoint file.
        file: PathBuf,
    },
    /// Progress difference, changed regions and chunks.
    Diff {
        /// Older checkpoint.
        a: PathBuf,
        /// Newer checkpoint.
        b: PathBuf,
    },
    /// Write one region's raw little-endian bytes to a file.
    Export {
        /// Checkpoint file.
        file: PathBuf,
        /// Region name.
        #[arg(long)]
        region: String,
        /// Output file.
        #[arg(short = 'o', long = "output")]
        out: PathBuf,
    },
    /// A live node's tasks (needs --node).
    List {
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Save a consistent copy of a live task's checkpoint (needs --node).
    Fetch {
        /// Global task id as `list` shows it (hex `0x…`, or decimal).
        #[arg(value_parser = client::parse_task_id)]
        task: u64,
        /// Output file.
        #[arg(short = 'o', long = "output")]
        out: PathBuf,
    },
    /// Ask a live node to migrate a task to another node (needs --node).
    Migrate {
        /// Global task id as `list` shows it (hex `0x…`, or decimal).
        #[arg(value_parser = client::parse_task_id)]
        task: u64,
        /// The receiving node's control service, `ADDR:PORT`, or its node id.
        #[arg(long)]
        to: String,
        /// Seconds to wait for the migration to finish.
        #[arg(long, default_value_t = 300)]
        wait: u64,
        /// Print the report as JSON.
        #[arg(long)]
        json: bool,
    },
}

/// Appends a line to the output buffer (writing to a String cannot fail).
macro_rules! say {
    ($o:expr, $($t:tt)*) => {{
        let _ = writeln!($o, $($t)*);
    }};
}

fn main() -> ExitCode {
    let mut o = String::new();
    let result = run(Args::parse(), &mut o);
    // Output goes out at once; a closed pipe (`| head`) is not an error.
    let _ = std::io::stdout().lock().write_all(o.as_bytes());
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("inspect: error: {e:#}");
            ExitCode::from(2)
        }
    }
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

/// Connects to the node named by `--node`, with the key the options give.
fn connect(args: &NodeArgs) -> Result<NodeClient> {
    let Some(addr) = &args.node else {
        bail!(
            "this verb talks to a live node: pass --node ADDR:PORT (control port {CONTROL_PORT}) or --node NODE-ID"
        );
    };
    let security = client::security(args.key_file.as_deref(), args.insecure)?;
    if matches!(security, Security::ExplicitlyInsecure) {
        eprintln!(
            "inspect: warning: --insecure: no authentication and no secrecy on this connection"
        );
    }
    Ok(NodeClient::connect_to(
        addr,
        security,
        Duration::from_secs(args.timeout),
    )?)
}

/// Writes `bytes` to `path` through a temporary file in the same directory and a rename.
fn write_atomic(path: &std::path::Path, bytes: &[u8]) -> Result<()> {
    let tmp = path.with_extension(format!("tmp-{}", std::process::id()));
    let result = (|| -> Result<()> {
        let mut f =
            std::fs::File::create(&tmp).with_context(|| format!("creating {}", tmp.display()))?;
        f.write_all(bytes)?;
        f.sync_all()?;
        std::fs::rename(&tmp, path).with_context(|| format!("renaming to {}", path.display()))
    })();
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    result
}

fn run(args: Args, o: &mut String) -> Result<ExitCode> {
    match args.verb {
        Verb::List { json } => {
            let tasks: Vec<TaskView> = connect(&args.node)?
                .list()?
                .iter()
                .map(TaskView::from)
                .collect();
            if json {
                say!(o, "{}", serde_json::to_string_pretty(&tasks)?);
            } else if tasks.is_empty() {
                say!(o, "no tasks");
            } else {
                o.push_str(&task_table(&tasks));
            }
            Ok(ExitCode::SUCCESS)
        }
        Verb::Fetch { task, out } => {
            let bytes = connect(&args.node)?.fetch(task)?;
            write_atomic(&out, &bytes)?;
            say!(
                o,
                "fetched task {task}: {} bytes to {}",
                bytes.len(),
                out.display()
            );
            Ok(ExitCode::SUCCESS)
        }
        Verb::Migrate {
            task,
            to,
            wait,
            json,
        } => {
            let report = connect(&args.node)?.migrate(task, &to, Duration::from_secs(wait))?;
            if json {
                say!(o, "{}", serde_json::to_string_pretty(&report)?);
            } else {
                say!(
                    o,
                    "task {:#x} migrated {} -> {} (epoch {})",
                    report.task_id,
                    report.from_isa,
                    report.to_isa,
                    report.epoch
                );
                say!(o, "  total     {} ms", report.total_ms);
                say!(o, "  downtime  {} ms", report.downtime_ms);
                say!(o, "  state     {} bytes", report.state_bytes);
                say!(
                    o,
                    "  wire      {} bytes ({} pre-copy rounds)",
                    report.wire_bytes,
                    report.precopy_rounds
                );
            }
            Ok(ExitCode::SUCCESS)
        }
        Verb::Show { file, json } => {
            let w = walk(&FileOrigin(file), None)?;
            if json {
                say!(o, "{}", serde_json::to_string_pretty(&w.json())?);
            } else {
                print_show(&w, o);
            }
            Ok(status(&w))
        }
        Verb::Verify { file } => {
            let origin = FileOrigin(file);
            let w = walk(&origin, None)?;
            match &w.failure {
                None => {
                    say!(
                        o,
                        "{}: OK ({} regions, sha256 {})",
                        origin.name(),
                        w.regions.len(),
                        hex(&w.hash.unwrap_or_default())
                    );
                    Ok(ExitCode::SUCCESS)
                }
                Some(f) => {
                    say!(o, "{}: FAILED: {}", origin.name(), f.describe());
                    Ok(ExitCode::from(1))
                }
            }
        }
        Verb::Diff { a, b } => diff(&FileOrigin(a), &FileOrigin(b), o),
        Verb::Export { file, region, out } => export(&FileOrigin(file), &region, &out, o),
    }
}

fn status(w: &Walk) -> ExitCode {
    if w.failure.is_none() {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    }
}

fn print_show(w: &Walk, o: &mut String) {
    let Some(h) = &w.header else {
        if let Some(f) = &w.failure {
            say!(o, "unreadable checkpoint: {}", f.describe());
        }
        return;
    };
    say!(
        o,
        "format version  {}{}",
        h.format_version,
        if h.delta { " (delta)" } else { "" }
    );
    say!(o, "task            {} v{}", h.task_kind, h.task_version);
    let pct = if h.progress_total == 0 {
        100.0
    } else {
        h.progress as f64 * 100.0 / h.progress_total as f64
    };
    say!(
        o,
        "progress        {}/{} ({pct:.1}%)",
        h.progress,
        h.progress_total
    );
    say!(o, "epoch           {}", h.epoch);
    say!(o, "source          {} / {}", h.isa, h.board);
    say!(
        o,
        "created         {} ms since the Unix epoch",
        h.created_unix_ms
    );
    if h.delta {
        say!(o, "base sha256     {}", hex(&h.base_hash));
    }
    if let Some(hash) = &w.hash {
        say!(o, "sha256          {}", hex(hash));
    }
    say!(o, "regions:");
    say!(
        o,
        "  {:<12} {:<6} {:<4} {:>12} {:>7} {:<5} {}",
        "name",
        "kind",
        "elem",
        "bytes",
        "chunks",
        "codec",
        "checksums"
    );
    for r in &w.regions {
        say!(
            o,
            "  {:<12} {:<6} {:<4} {:>12} {:>7} {:<5} {}",
            r.entry.name,
            r.entry.kind.name(),
            r.entry.elem.name(),
            r.entry.len_bytes,
            r.entry.chunk_count,
            "raw",
            r.state()
        );
    }
    for r in &w.regions {
        if let Some(d) = &r.decoded {
            say!(o, "{}: {d}", r.entry.name);
        }
    }
    match &w.failure {
        None => say!(o, "status          OK"),
        Some(f) => say!(o, "status          FAILED: {}", f.describe()),
    }
}

/// Compact list of chunk indices as ranges ("0-3,7").
fn ranges(v: &[u32]) -> String {
    let mut out = Vec::new();
    let mut i = 0;
    while i < v.len() {
        let mut j = i;
        while j + 1 < v.len() && v[j + 1] == v[j] + 1 {
            j += 1;
        }
        out.push(if i == j {
            format!("{}", v[i])
        } else {
            format!("{}-{}", v[i], v[j])
        });
        i = j + 1;
    }
    out.join(",")
}

fn diff(a: &dyn Origin, b: &dyn Origin, o: &mut String) -> Result<ExitCode> {
    let (wa, wb) = (walk(a, None)?, walk(b, None)?);
    for (origin, w) in [(a, &wa), (b, &wb)] {
        if let Some(f) = &w.failure {
            say!(o, "{}: FAILED: {}", origin.name(), f.describe());
            return Ok(ExitCode::from(1));
        }
    }
    let (ha, hb) = (
        wa.header.as_ref().context("header")?,
        wb.header.as_ref().context("header")?,
    );
    if ha.task_kind != hb.task_kind {
        say!(o, "task kinds differ: {} vs {}", ha.task_kind, hb.task_kind);
    }
    say!(
        o,
        "progress        {} -> {} ({:+})",
        ha.progress,
        hb.progress,
        i128::from(hb.progress) - i128::from(ha.progress)
    );
    say!(o, "epoch           {} -> {}", ha.epoch, hb.epoch);
    say!(
        o,
        "source          {} / {} -> {} / {}",
        ha.isa,
        ha.board,
        hb.isa,
        hb.board
    );
    let mut same = 0;
    for rb in &wb.regions {
        let Some(ra) = wa.regions.iter().find(|r| r.entry.name == rb.entry.name) else {
            say!(o, "  {:<12} only in {}", rb.entry.name, b.name());
            continue;
        };
        let n = ra.chunk_crcs.len().max(rb.chunk_crcs.len());
        let changed: Vec<u32> = (0..n)
            .filter(|&i| ra.chunk_crcs.get(i) != rb.chunk_crcs.get(i))
            .map(|i| i as u32)
            .collect();
        if changed.is_empty() && ra.entry.len_bytes == rb.entry.len_bytes {
            same += 1;
        } else {
            say!(
                o,
                "  {:<12} changed: {} of {} chunks [{}], {} -> {} bytes",
                rb.entry.name,
                changed.len(),
                n,
                ranges(&changed),
                ra.entry.len_bytes,
                rb.entry.len_bytes
            );
        }
    }
    for ra in &wa.regions {
        if !wb.regions.iter().any(|r| r.entry.name == ra.entry.name) {
            say!(o, "  {:<12} only in {}", ra.entry.name, a.name());
        }
    }
    say!(o, "{same} regions unchanged");
    Ok(ExitCode::SUCCESS)
}

fn export(
    origin: &dyn Origin,
    region: &str,
    out: &std::path::Path,
    o: &mut String,
) -> Result<ExitCode> {
    let tmp = out.with_extension(format!("tmp-{}", std::process::id()));
    let result = (|| -> Result<ExitCode> {
        let mut f = std::io::BufWriter::new(
            std::fs::File::create(&tmp).with_context(|| format!("creating {}", tmp.display()))?,
        );
        let w = walk(origin, Some((region, &mut f as &mut dyn std::io::Write)))?;
        if let Some(fail) = &w.failure {
            say!(o, "{}: FAILED: {}", origin.name(), fail.describe());
            return Ok(ExitCode::from(1));
        }
        let Some(r) = w.regions.iter().find(|r| r.entry.name == region) else {
            bail!("no region named '{region}'");
        };
        if w.header.as_ref().is_some_and(|h| h.delta) {
            bail!("'{region}' is in a delta checkpoint: only its changed chunks are present");
        }
        f.into_inner().map_err(|e| e.into_error())?.sync_all()?;
        std::fs::rename(&tmp, out).with_context(|| format!("renaming to {}", out.display()))?;
        say!(
            o,
            "exported {} bytes of region {region} to {}",
            r.entry.len_bytes,
            out.display()
        );
        Ok(ExitCode::SUCCESS)
    })();
    if !matches!(&result, Ok(c) if *c == ExitCode::SUCCESS) {
        let _ = std::fs::remove_file(&tmp);
    }
    result
}
