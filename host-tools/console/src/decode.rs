//! Turns the console byte stream into events: text, decoded defmt logs, and
//! (without an ELF) undecoded frames.

use defmt_decoder::{DecodeError, Table};
use thiserror::Error;

use crate::deframe::{Deframer, FrameError, FrameErrorCounts, Piece, DELIMITER};

/// Something the console has to show, in stream order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    /// Shell text, exactly as received.
    Text(Vec<u8>),
    /// A decoded defmt log, formatted as one line without line ending, e.g.
    /// `[   1.234567 INFO ] heap: 512 MiB`.
    Log(String),
    /// A defmt frame that was not decoded because no ELF was given (its
    /// rzCOBS bytes, without delimiters).
    Frame(Vec<u8>),
    /// A frame that was dropped.
    Dropped(FrameError),
}

/// Why a kernel ELF cannot serve for decoding.
#[derive(Debug, Error)]
pub enum TableError {
    /// defmt-decoder rejected the ELF (not an ELF, or a defmt version it does
    /// not speak).
    #[error("cannot read the defmt table: {0:#}")]
    Parse(anyhow::Error),
    /// The ELF has no `.defmt` section: it does not log with defmt.
    #[error("the ELF has no defmt table (.defmt section)")]
    Missing,
}

/// Deframes and decodes a console byte stream, chunk by chunk.
pub struct StreamDecoder {
    deframer: Deframer,
    table: Option<Table>,
}

impl StreamDecoder {
    /// A decoder that decodes frames with the defmt table of `elf_bytes`
    /// (the kernel's ELF, as built).
    pub fn new(elf_bytes: &[u8]) -> Result<Self, TableError> {
        let table = Table::parse(elf_bytes)
            .map_err(TableError::Parse)?
            .ok_or(TableError::Missing)?;
        Ok(Self {
            deframer: Deframer::new(),
            table: Some(table),
        })
    }

    /// A decoder without a defmt table: frames come out as [`Event::Frame`].
    pub fn without_table() -> Self {
        Self {
            deframer: Deframer::new(),
            table: None,
        }
    }

    /// Consumes received bytes and returns the events they complete.
    pub fn feed(&mut self, bytes: &[u8]) -> Vec<Event> {
        let pieces = self.deframer.push(bytes);
        pieces.into_iter().map(|p| self.event(p)).collect()
    }

    /// Called when the line has been quiet for a while (see
    /// [`Deframer::flush_idle`]).
    pub fn flush_idle(&mut self) -> Option<Event> {
        self.deframer.flush_idle().map(|p| self.event(p))
    }

    /// Forgets a half-received frame (after a reconnect).
    pub fn reset(&mut self) {
        self.deframer.reset();
    }

    /// Frames dropped so far, by reason.
    pub fn errors(&self) -> FrameErrorCounts {
        self.deframer.errors()
    }

    fn event(&mut self, piece: Piece) -> Event {
        match piece {
            Piece::Text(text) => Event::Text(text),
            Piece::Dropped(error) => Event::Dropped(error),
            Piece::Frame(frame) => match &self.table {
                None => Event::Frame(frame),
                Some(table) => match decode_frame(table, &frame) {
                    Ok(line) => Event::Log(line),
                    Err(_) => {
                        let error = FrameError::Undecodable { len: frame.len() };
                        self.deframer.record(error);
                        Event::Dropped(error)
                    }
                },
            },
        }
    }
}

/// Decodes one frame's rzCOBS bytes with `table` into a log line.
fn decode_frame(table: &Table, frame: &[u8]) -> Result<String, DecodeError> {
    // defmt-decoder's stream decoder undoes rzCOBS and decodes in one go; it
    // wants the frame followed by its delimiter. A fresh one per frame keeps
    // no state from a previous (possibly broken) frame.
    let mut decoder = table.new_stream_decoder();
    decoder.received(frame);
    decoder.received(&[DELIMITER]);
    let frame = decoder.decode()?;
    let timestamp = frame
        .display_timestamp()
        .map(|t| t.to_string())
        .unwrap_or_default();
    let level = frame
        .level()
        .map_or("PRINT".to_owned(), |l| l.as_str().to_uppercase());
    Ok(format!(
        "[{timestamp:>11} {level:<5}] {}",
        frame.display_message()
    ))
}
