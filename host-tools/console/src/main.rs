//! `console`: the serial console for Tern nodes (see the `tern_console` crate).

use std::path::PathBuf;
use std::process::ExitCode;

use clap::Parser;
use tern_console::{ConsoleOptions, PortSpec, DEFAULT_BAUD};

/// Serial console for Tern nodes: shows shell text and defmt logs, forwards
/// keystrokes. Ctrl-] exits.
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
}

fn main() -> ExitCode {
    let args = Args::parse();
    let options = ConsoleOptions {
        port: args.port,
        elf: args.elf,
        log: args.log,
        baud: args.baud,
    };
    match tern_console::run(&options) {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("console: {error}");
            ExitCode::FAILURE
        }
    }
}
