//! `console`: the serial console for Tern nodes (see the `tern_console` crate).

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::Parser;
use tern_console::{
    ConsoleOptions, PortSpec, TransferOptions, DEFAULT_BAUD, DEFAULT_REPLY_TIMEOUT,
};

/// Serial console for Tern nodes: shows shell text and defmt logs, forwards
/// keystrokes. Ctrl-] exits.
///
/// Checkpoints a node prints (`checkpoint <id>`, as TERN-CKPT lines) are not
/// shown but saved as <save-dir>/<name>.tckpt. With --send, a checkpoint file
/// is sent to the node's `receive` command first (the node resumes the task),
/// then the session goes on; the exit status is non-zero if the send failed.
#[derive(Parser)]
#[command(version)]
struct Args {
    /// Serial device (e.g. /dev/ttyUSB0) or tcp:HOST:PORT (QEMU serial socket).
    #[arg(long)]
    port: PortSpec,
    /// Kernel ELF whose defmt table decodes the log frames.
    #[arg(long)]
    elf: Option<PathBuf>,
    /// Append everything shown, with host timestamps, to this file.
    #[arg(long)]
    log: Option<PathBuf>,
    /// Serial speed in bits per second.
    #[arg(long, default_value_t = DEFAULT_BAUD)]
    baud: u32,
    /// Directory where checkpoints received from the node are saved.
    #[arg(long, value_name = "DIR", default_value = ".")]
    save_dir: PathBuf,
    /// Checkpoint file to send to the node (`receive`) once connected.
    #[arg(long, value_name = "FILE")]
    send: Option<PathBuf>,
    /// Seconds to wait for each reply of the node while sending.
    #[arg(long, value_name = "SECONDS", default_value_t = DEFAULT_REPLY_TIMEOUT.as_secs())]
    reply_timeout: u64,
}

fn main() -> ExitCode {
    let args = Args::parse();
    let options = ConsoleOptions {
        port: args.port,
        elf: args.elf,
        log: args.log,
        baud: args.baud,
    };
    let transfers = TransferOptions {
        save_dir: args.save_dir,
        send: args.send,
        reply_timeout: Duration::from_secs(args.reply_timeout),
    };
    match tern_console::run_with(&options, &transfers) {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("console: {error}");
            ExitCode::FAILURE
        }
    }
}
