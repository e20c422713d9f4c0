//! `tern nodes discover` and `tern console`: the nodes on the LAN, found by
//! their beacons, and a node's shell over its authenticated control channel.

use std::io::{IsTerminal, Read, Write};
use std::path::PathBuf;
use std::sync::mpsc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use clap::Args;
use serde::Serialize;
use tern_client::discovery::{self, Discovered};
use tern_client::NodeClient;
use tern_protocol::Security;

/// How a tool is keyed: the options every LAN command takes.
#[derive(Args, Debug, Clone)]
pub struct KeyArgs {
    /// The cluster key file (64 hex digits); default: the TERN_KEY variable.
    #[arg(long)]
    pub key_file: Option<PathBuf>,
    /// Talk to nodes running without a key (no authentication, no secrecy).
    #[arg(long, conflicts_with = "key_file")]
    pub insecure: bool,
}

impl KeyArgs {
    /// The security the options give.
    pub fn security(&self) -> Result<Security> {
        Ok(tern_client::security(
            self.key_file.as_deref(),
            self.insecure,
        )?)
    }
}

/// `tern nodes discover`.
#[derive(Args, Debug)]
pub struct DiscoverArgs {
    /// Seconds to listen (nodes announce themselves every 2 s).
    #[arg(long, default_value_t = 3.0)]
    pub wait: f64,
    /// Print JSON.
    #[arg(long)]
    pub json: bool,
    #[command(flatten)]
    #[allow(missing_docs)]
    pub key: KeyArgs,
}

/// One node as `--json` prints it.
#[derive(Debug, Serialize)]
struct NodeRow {
    id: String,
    board: String,
    isa: String,
    control: String,
    prefix: u8,
    trust: &'static str,
    uptime_ms: u64,
}

/// Lists the nodes heard within `--wait`.
pub fn discover(args: &DiscoverArgs) -> Result<()> {
    anyhow::ensure!(
        args.wait.is_finite() && args.wait > 0.0,
        "--wait must be a positive number of seconds"
    );
    // Without a key the nodes are listed, unverified.
    let security = args.key.security().ok();
    let heard = discovery::listen(security.as_ref(), Duration::from_secs_f64(args.wait))
        .context("listening for beacons on UDP port 4473")?;
    let rows: Vec<NodeRow> = heard.iter().map(row).collect();
    if args.json {
        println!("{}", serde_json::to_string_pretty(&rows)?);
        return Ok(());
    }
    if rows.is_empty() {
        println!("no node heard within {} s", args.wait);
        return Ok(());
    }
    println!(
        "{:<12}  {:<5} {:<8} {:<21} {:>9}  key",
        "node id", "board", "isa", "control", "uptime"
    );
    for r in rows {
        println!(
            "{:<12}  {:<5} {:<8} {:<21} {:>8}s  {}",
            r.id,
            r.board,
            r.isa,
            r.control,
            r.uptime_ms / 1000,
            r.trust
        );
    }
    Ok(())
}

fn row(d: &Discovered) -> NodeRow {
    NodeRow {
        id: d.id(),
        board: d.beacon.board.clone(),
        isa: d.beacon.isa.clone(),
        control: d.control().to_string(),
        prefix: d.beacon.prefix,
        trust: d.trust.label(),
        uptime_ms: d.beacon.uptime_ms,
    }
}

/// `tern console`.
#[derive(Args, Debug)]
pub struct ConsoleArgs {
    /// The node: its id as `tern nodes discover` lists it, or ADDR[:PORT].
    #[arg(long)]
    pub node: String,
    /// Run this command line and print its answer instead of an interactive
    /// session (repeatable; the lines run in order).
    #[arg(long = "command", value_name = "LINE")]
    pub commands: Vec<String>,
    /// Seconds to wait for the node's answers.
    #[arg(long, default_value_t = 30)]
    pub timeout: u64,
    #[command(flatten)]
    #[allow(missing_docs)]
    pub key: KeyArgs,
}

/// Opens the node's network console.
pub fn console(args: &ConsoleArgs) -> Result<()> {
    let security = args.key.security()?;
    let timeout = Duration::from_secs(args.timeout);
    let mut client = NodeClient::connect_to(&args.node, security, timeout)?;
    let greeting = client.open_console()?;
    let mut out = std::io::stdout();
    if !args.commands.is_empty() {
        for line in &args.commands {
            let answer = client.console_command(line)?;
            print!("{}", answer.replace("\r\n", "\n"));
        }
        return Ok(());
    }
    let interactive = std::io::stdin().is_terminal();
    if interactive {
        eprintln!("tern: console of {} (Ctrl-] exits)", args.node);
    }
    out.write_all(greeting.as_bytes())?;
    out.flush()?;
    let _raw = interactive
        .then(tern_console::RawTerminal::enter)
        .transpose()
        .context("switching the terminal to raw mode")?;
    let keys = read_keys(interactive);
    // After the input ends (a pipe), answers still due get this long.
    let mut closing: Option<Instant> = None;
    loop {
        let text = client.console_output(Duration::from_millis(20))?;
        if !text.is_empty() {
            out.write_all(text.as_bytes())?;
            out.flush()?;
        }
        loop {
            match keys.try_recv() {
                Ok(bytes) => {
                    if let Some(end) = bytes.iter().position(|&b| b == tern_console::EXIT_KEY) {
                        client.console_input(&bytes[..end])?;
                        return Ok(());
                    }
                    client.console_input(&bytes)?;
                }
                Err(mpsc::TryRecvError::Empty) => break,
                Err(mpsc::TryRecvError::Disconnected) => {
                    closing.get_or_insert_with(Instant::now);
                    break;
                }
            }
        }
        if closing.is_some_and(|since| since.elapsed() > Duration::from_secs(2)) {
            return Ok(());
        }
    }
}

/// Standard input as it comes, on a thread (a pipe's line ends become CR,
/// as a terminal's Enter).
fn read_keys(interactive: bool) -> mpsc::Receiver<Vec<u8>> {
    let (sender, receiver) = mpsc::channel();
    std::thread::spawn(move || {
        let mut stdin = std::io::stdin().lock();
        let mut buf = [0u8; 256];
        loop {
            match stdin.read(&mut buf) {
                Ok(0) | Err(_) => return,
                Ok(n) => {
                    let mut bytes = buf[..n].to_vec();
                    if !interactive {
                        for b in &mut bytes {
                            if *b == b'\n' {
                                *b = b'\r';
                            }
                        }
                    }
                    if sender.send(bytes).is_err() {
                        return;
                    }
                }
            }
        }
    });
    receiver
}
