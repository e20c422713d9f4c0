//! The board's log lines: defmt frames on the serial console (the host's
//! `console` tool decodes them), and the same text on the screen console
//! when there is one (a node has no way to decode defmt frames itself: their
//! format strings live only in the ELF).
//!
//! Lines logged before the portable kernel has installed the console are
//! kept and sent before the first prompt (`Board::before_first_prompt`), so
//! that the banner and the boot commands' answers stay the first lines a
//! node prints and the boot log is out before anyone types.

use alloc::string::String;
use alloc::vec::Vec;
use core::cell::RefCell;
use core::fmt::{self, Write};

use critical_section::Mutex;

/// How serious a line is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Level {
    /// What the board found.
    Info,
    /// Something is missing or was refused; the node runs on.
    Warn,
}

/// Lines logged before the console was up.
type Backlog = Vec<(Level, String)>;

/// Lines waiting for the console; `None` once it is up.
static PENDING: Mutex<RefCell<Option<Backlog>>> = Mutex::new(RefCell::new(Some(Vec::new())));

/// Logs an informational line.
pub fn info(args: fmt::Arguments<'_>) {
    line(Level::Info, args);
}

/// Logs a warning.
pub fn warn(args: fmt::Arguments<'_>) {
    line(Level::Warn, args);
}

fn line(level: Level, args: fmt::Arguments<'_>) {
    let mut text = String::new();
    let _ = text.write_fmt(args);
    let queued = critical_section::with(|cs| match PENDING.borrow_ref_mut(cs).as_mut() {
        Some(pending) => {
            pending.push((level, core::mem::take(&mut text)));
            true
        }
        None => false,
    });
    if !queued {
        emit(level, &text);
    }
}

/// Sends the lines kept so far and every later one at once: called when
/// the console is up.
pub fn flush() {
    let pending = critical_section::with(|cs| PENDING.borrow_ref_mut(cs).take());
    for (level, text) in pending.into_iter().flatten() {
        emit(level, &text);
    }
}

fn emit(level: Level, text: &str) {
    match level {
        Level::Info => defmt::info!("{=str}", text),
        Level::Warn => defmt::warn!("{=str}", text),
    }
    crate::console::mirror_log(level, text);
}
