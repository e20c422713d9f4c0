//! Shows events on the terminal and appends them to the log file.
//!
//! Text goes to the terminal byte for byte. A log line (decoded defmt frame or
//! a console message) always gets lines of its own: if it arrives while a text
//! line is unfinished (a prompt, half a command being echoed), the console
//! ends that line, prints the log line, then prints the unfinished text again
//! so that typing continues where it was. The log file records complete lines
//! only, each with the host's UTC time, so the unfinished text line is written
//! there once, when it is finished.

use std::fs::{File, OpenOptions};
use std::io::{self, Write};
use std::path::Path;
use std::time::SystemTime;

use crate::decode::Event;

/// An unfinished text line longer than this is written to the log file as a
/// line of its own, which bounds what is kept (and re-printed).
const MAX_PENDING_LINE: usize = 4096;

/// The console's output: a terminal (or any writer) and an optional log file.
pub struct Screen<W: Write> {
    out: W,
    log: Option<File>,
    /// The current, unfinished text line.
    pending: Vec<u8>,
    /// Whether a progress line (see [`Screen::progress`]) is on display.
    status_shown: bool,
}

impl<W: Write> Screen<W> {
    /// Output to `out` only.
    pub fn new(out: W) -> Self {
        Self {
            out,
            log: None,
            pending: Vec::new(),
            status_shown: false,
        }
    }

    /// Output to `out`, and appended to the file at `path` (created if
    /// absent). The log is append-only by nature, so it is written in place
    /// rather than through a temporary file.
    pub fn with_log(out: W, path: &Path) -> io::Result<Self> {
        let log = OpenOptions::new().create(true).append(true).open(path)?;
        Ok(Self {
            log: Some(log),
            ..Self::new(out)
        })
    }

    /// Shows one event.
    pub fn show(&mut self, event: &Event) -> io::Result<()> {
        match event {
            Event::Text(text) => self.text(text),
            Event::Log(line) => self.line(line),
            Event::Frame(frame) => self.line(&format!("[defmt frame, {} bytes]", frame.len())),
            Event::Dropped(error) => self.line(&format!("[console: {error}]")),
        }
    }

    /// Shows a transient status line (a transfer's progress): each call
    /// overwrites the previous one, and the next text or line replaces it.
    /// It is not logged. While a text line is unfinished it is not shown, so
    /// that the line being typed stays intact.
    pub fn progress(&mut self, status: &str) -> io::Result<()> {
        if !self.pending.is_empty() {
            return Ok(());
        }
        self.out.write_all(b"\r")?;
        self.out.write_all(status.as_bytes())?;
        // Erase what a longer previous status left on the line.
        self.out.write_all(b"\x1b[K")?;
        self.out.flush()?;
        self.status_shown = true;
        Ok(())
    }

    /// Removes the progress line, if one is shown, so that output starts at
    /// the beginning of an empty line.
    fn clear_status(&mut self) -> io::Result<()> {
        if self.status_shown {
            self.out.write_all(b"\r\x1b[K")?;
            self.status_shown = false;
        }
        Ok(())
    }

    /// Shows a line of the console's own, e.g. `[console: reconnected]`.
    pub fn line(&mut self, line: &str) -> io::Result<()> {
        self.clear_status()?;
        if !self.pending.is_empty() {
            self.out.write_all(b"\r\n")?;
        }
        // Raw terminals do not return the carriage on '\n'.
        self.out.write_all(line.replace('\n', "\r\n").as_bytes())?;
        self.out.write_all(b"\r\n")?;
        self.out.write_all(&self.pending)?;
        self.out.flush()?;
        self.log_line(line.as_bytes())
    }

    /// Ends the unfinished text line, if any, on the terminal (so that what
    /// runs next starts on a fresh line) and in the log file (at exit).
    pub fn finish(&mut self) -> io::Result<()> {
        self.clear_status()?;
        if !self.pending.is_empty() {
            self.out.write_all(b"\r\n")?;
            let pending = std::mem::take(&mut self.pending);
            self.log_line(&pending)?;
        }
        self.out.flush()
    }

    fn text(&mut self, text: &[u8]) -> io::Result<()> {
        self.clear_status()?;
        self.out.write_all(text)?;
        self.out.flush()?;
        let mut rest = text;
        while let Some(newline) = rest.iter().position(|&b| b == b'\n') {
            self.pending.extend_from_slice(&rest[..newline]);
            let line = std::mem::take(&mut self.pending);
            self.log_line(&line)?;
            rest = &rest[newline + 1..];
        }
        self.pending.extend_from_slice(rest);
        if self.pending.len() > MAX_PENDING_LINE {
            let line = std::mem::take(&mut self.pending);
            self.log_line(&line)?;
        }
        Ok(())
    }

    fn log_line(&mut self, line: &[u8]) -> io::Result<()> {
        let Some(log) = &mut self.log else {
            return Ok(());
        };
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        let mut entry = format!("{} ", humantime::format_rfc3339_millis(SystemTime::now()));
        entry.push_str(&String::from_utf8_lossy(line));
        entry.push('\n');
        // One write per entry: lines of concurrent writers do not interleave.
        log.write_all(entry.as_bytes())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::deframe::FrameError;

    fn shown(events: &[Event]) -> String {
        let mut out = Vec::new();
        let mut screen = Screen::new(&mut out);
        for event in events {
            screen.show(event).unwrap();
        }
        drop(screen);
        String::from_utf8(out).unwrap()
    }

    #[test]
    fn text_is_shown_as_is() {
        let text = Event::Text(b"tern> he\x08 \x08\r\n".to_vec());
        assert_eq!(shown(&[text]), "tern> he\x08 \x08\r\n");
    }

    #[test]
    fn log_after_a_finished_line_gets_its_own_line() {
        let events = [
            Event::Text(b"Tern 0.1.0\r\n".to_vec()),
            Event::Log("[   0.000100 INFO ] heap: 1 MiB".into()),
            Event::Text(b"tern> ".to_vec()),
        ];
        assert_eq!(
            shown(&events),
            "Tern 0.1.0\r\n[   0.000100 INFO ] heap: 1 MiB\r\ntern> "
        );
    }

    #[test]
    fn log_mid_line_ends_the_line_then_repeats_it() {
        let events = [
            Event::Text(b"tern> he".to_vec()),
            Event::Log("[   1.000000 WARN ] x".into()),
            Event::Text(b"lp\r\n".to_vec()),
        ];
        assert_eq!(
            shown(&events),
            "tern> he\r\n[   1.000000 WARN ] x\r\ntern> help\r\n"
        );
    }

    #[test]
    fn frames_and_drops_are_described() {
        let events = [
            Event::Frame(vec![1, 2, 3]),
            Event::Dropped(FrameError::Overlong { max: 4096 }),
        ];
        assert_eq!(
            shown(&events),
            "[defmt frame, 3 bytes]\r\n[console: defmt frame longer than 4096 bytes dropped]\r\n"
        );
    }

    #[test]
    fn log_file_gets_complete_lines_with_host_time() {
        let dir = std::env::temp_dir().join(format!("tern-console-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("screen.log");
        std::fs::write(&path, "earlier\n").unwrap();
        let mut screen = Screen::with_log(Vec::new(), &path).unwrap();
        for event in [
            Event::Text(b"tern> me".to_vec()),
            Event::Log("[   1.000000 INFO ] hi".into()),
            Event::Text(b"m\r\nfree: 1\r\ntern> ".to_vec()),
        ] {
            screen.show(&event).unwrap();
        }
        screen.finish().unwrap();
        let log = std::fs::read_to_string(&path).unwrap();
        std::fs::remove_dir_all(&dir).unwrap();
        let lines: Vec<&str> = log.lines().collect();
        assert_eq!(lines[0], "earlier", "appends");
        let bodies: Vec<&str> = lines[1..]
            .iter()
            .map(|l| {
                let (time, body) = l.split_once(' ').unwrap();
                assert!(humantime::parse_rfc3339(time).is_ok(), "{time}");
                body
            })
            .collect();
        assert_eq!(
            bodies,
            ["[   1.000000 INFO ] hi", "tern> mem", "free: 1", "tern> "]
        );
    }
}
