//! A node's network console: its shell over the authenticated control
//! channel (`ConsoleOpen`, `ConsoleInput`, `ConsoleOutput`), with the node's
//! own line editor (it echoes what is typed) and its log lines.

use std::time::{Duration, Instant};

use tern_protocol::{Message, MAX_CONSOLE_INPUT};

use crate::{NodeClient, NodeError};

/// The shell's prompt, which ends every answer.
pub const PROMPT: &str = "tern> ";

impl NodeClient {
    /// Makes this connection a console session; returns the node's greeting
    /// (its banner, then the prompt).
    pub fn open_console(&mut self) -> Result<String, NodeError> {
        self.send(&Message::ConsoleOpen)?;
        self.console_until(PROMPT, self.timeout)
    }

    /// Sends bytes typed on the console (in pieces the node accepts).
    pub fn console_input(&mut self, bytes: &[u8]) -> Result<(), NodeError> {
        for piece in bytes.chunks(MAX_CONSOLE_INPUT) {
            self.send(&Message::ConsoleInput {
                bytes: piece.to_vec(),
            })?;
        }
        Ok(())
    }

    /// The console text that arrives within `wait` (empty when none did).
    pub fn console_output(&mut self, wait: Duration) -> Result<String, NodeError> {
        let deadline = Instant::now() + wait;
        let mut text = String::new();
        loop {
            while let Some(m) = self.pending.pop_front() {
                match m {
                    Message::ConsoleOutput { text: t } => text.push_str(&t),
                    Message::Nack(reason) => {
                        return Err(NodeError::Refused {
                            addr: self.addr.clone(),
                            reason,
                        })
                    }
                    other => return Err(self.unexpected(other, "console output")),
                }
            }
            if !text.is_empty() {
                return Ok(text);
            }
            match self.read_messages(deadline, "console output") {
                Ok(()) => {}
                Err(NodeError::Timeout { .. }) => return Ok(text),
                Err(e) => return Err(e),
            }
        }
    }

    /// Reads console text until it contains `marker`, for at most `timeout`.
    pub fn console_until(&mut self, marker: &str, timeout: Duration) -> Result<String, NodeError> {
        let deadline = Instant::now() + timeout;
        let mut text = String::new();
        while !text.contains(marker) {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Err(NodeError::Timeout {
                    addr: self.addr.clone(),
                    what: "the console's answer",
                    timeout,
                });
            }
            text.push_str(&self.console_output(left)?);
        }
        Ok(text)
    }

    /// Types `line` and Enter on the console; returns the answer: what the
    /// node printed after the echoed line, up to the next prompt.
    pub fn console_command(&mut self, line: &str) -> Result<String, NodeError> {
        self.console_input(format!("{line}\r").as_bytes())?;
        let text = self.console_until(&format!("\r\n{PROMPT}"), self.timeout)?;
        // The echo of the line ends with CR LF; the answer ends before the prompt.
        let answer = text.split_once("\r\n").map_or("", |(_, rest)| rest);
        Ok(answer.strip_suffix(PROMPT).unwrap_or(answer).to_string())
    }
}
