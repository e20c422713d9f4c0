//! Splits the console byte stream into shell text and defmt frames.
//!
//! The wire format (see `docs/console-framing.md`): shell text never contains
//! `0x00`; a defmt frame is `0x00`, its rzCOBS bytes (never `0x00`), `0x00`.
//! Consecutive delimiters collapse into one frame start, because the kernel's
//! very first frame starts with `0x00 0x00` (the logger's opener followed by
//! defmt's own start-of-stream separator) and an empty frame carries nothing.
//!
//! A reader that attaches mid-frame (late start, replug) sees the tail of a
//! frame as text and then takes the closing `0x00` for an opener. The deframer
//! recovers from that without help: a "frame" whose bytes look like text (see
//! [`looks_like_text`]) was text, and its closing delimiter was in fact the
//! opener of the next frame; a frame that stays open while the line is idle
//! with text-like content is text too (see [`Deframer::flush_idle`]).

use thiserror::Error;

/// Frames longer than this (in rzCOBS bytes) are dropped: defmt frames are a
/// few dozen bytes, so a longer run means noise or a lost delimiter.
pub const DEFAULT_MAX_FRAME_LEN: usize = 4096;

/// The byte that opens and closes a frame.
pub const DELIMITER: u8 = 0x00;

/// One piece of the byte stream, in stream order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Piece {
    /// Shell text, exactly as received (never contains `0x00`).
    Text(Vec<u8>),
    /// The rzCOBS bytes of one complete frame, without delimiters.
    Frame(Vec<u8>),
    /// A frame that was discarded.
    Dropped(FrameError),
}

/// Why a frame was discarded.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Error)]
pub enum FrameError {
    /// The frame grew past the maximum length before its closing delimiter.
    #[error("defmt frame longer than {max} bytes dropped")]
    Overlong {
        /// The limit that was exceeded.
        max: usize,
    },
    /// The frame was complete but could not be decoded with the ELF's table.
    #[error("undecodable defmt frame ({len} bytes) dropped")]
    Undecodable {
        /// Length of the frame in rzCOBS bytes.
        len: usize,
    },
}

/// How many frames were dropped, by reason, and how often the deframer had to
/// resynchronise after taking text for a frame.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct FrameErrorCounts {
    /// Frames dropped for exceeding the maximum length.
    pub overlong: u64,
    /// Frames dropped because the defmt table could not decode them.
    pub undecodable: u64,
    /// Times a presumed frame turned out to be text (reader was out of step).
    pub resyncs: u64,
}

impl FrameErrorCounts {
    /// Counts one dropped frame.
    pub fn record(&mut self, error: FrameError) {
        match error {
            FrameError::Overlong { .. } => self.overlong += 1,
            FrameError::Undecodable { .. } => self.undecodable += 1,
        }
    }

    /// Total number of dropped frames.
    pub fn dropped(&self) -> u64 {
        self.overlong + self.undecodable
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// Outside any frame: bytes are text.
    Text,
    /// Between an opening delimiter and the closing one.
    Frame,
    /// Discarding the rest of an overlong frame up to its closing delimiter.
    Skip,
}

/// The framing state machine. Feed it bytes in chunks of any size; the pieces
/// it returns do not depend on how the stream was split.
#[derive(Debug, Clone)]
pub struct Deframer {
    state: State,
    frame: Vec<u8>,
    max_frame_len: usize,
    errors: FrameErrorCounts,
}

impl Default for Deframer {
    fn default() -> Self {
        Self::new()
    }
}

impl Deframer {
    /// A deframer at the start of a stream (outside any frame), with the
    /// default frame length limit.
    pub fn new() -> Self {
        Self::with_max_frame_len(DEFAULT_MAX_FRAME_LEN)
    }

    /// A deframer that drops frames longer than `max_frame_len` bytes.
    pub fn with_max_frame_len(max_frame_len: usize) -> Self {
        Self {
            state: State::Text,
            frame: Vec::new(),
            max_frame_len,
            errors: FrameErrorCounts::default(),
        }
    }

    /// Frames dropped so far, by reason.
    pub fn errors(&self) -> FrameErrorCounts {
        self.errors
    }

    /// Counts a frame dropped further down the pipeline (by the decoder).
    pub fn record(&mut self, error: FrameError) {
        self.errors.record(error);
    }

    /// Forgets any half-received frame: the stream starts over (after a
    /// reconnect, the old bytes and the new ones do not belong together).
    pub fn reset(&mut self) {
        self.state = State::Text;
        self.frame.clear();
    }

    /// Consumes `bytes` and returns the pieces completed by them. Text is
    /// returned as soon as it arrives; a frame once its closing delimiter has.
    pub fn push(&mut self, bytes: &[u8]) -> Vec<Piece> {
        let mut pieces = Vec::new();
        let mut text = Vec::new();
        for &byte in bytes {
            match (self.state, byte) {
                (State::Text, DELIMITER) => {
                    flush_text(&mut text, &mut pieces);
                    self.state = State::Frame;
                }
                (State::Text, _) => text.push(byte),
                // Repeated delimiters: still (or again) at a frame start.
                (State::Frame, DELIMITER) if self.frame.is_empty() => {}
                (State::Frame, DELIMITER) => {
                    let frame = std::mem::take(&mut self.frame);
                    if looks_like_text(&frame) {
                        // We were out of step: that was text, and this
                        // delimiter opens the next frame.
                        self.errors.resyncs += 1;
                        pieces.push(Piece::Text(frame));
                    } else {
                        pieces.push(Piece::Frame(frame));
                        self.state = State::Text;
                    }
                }
                (State::Frame, _) => {
                    self.frame.push(byte);
                    if self.frame.len() > self.max_frame_len {
                        self.overflow(&mut pieces);
                    }
                }
                (State::Skip, DELIMITER) => self.state = State::Text,
                (State::Skip, _) => {}
            }
        }
        flush_text(&mut text, &mut pieces);
        pieces
    }

    /// Called when the line has been quiet for a while. A frame is written in
    /// one burst, so a frame still open on a quiet line whose bytes look like
    /// text is text read out of step: it is returned as such and the deframer
    /// goes back to text.
    pub fn flush_idle(&mut self) -> Option<Piece> {
        if self.state == State::Frame && looks_like_text(&self.frame) {
            self.errors.resyncs += 1;
            self.state = State::Text;
            Some(Piece::Text(std::mem::take(&mut self.frame)))
        } else {
            None
        }
    }

    fn overflow(&mut self, pieces: &mut Vec<Piece>) {
        let frame = std::mem::take(&mut self.frame);
        if looks_like_text(&frame) {
            self.errors.resyncs += 1;
            self.state = State::Text;
            pieces.push(Piece::Text(frame));
        } else {
            let error = FrameError::Overlong {
                max: self.max_frame_len,
            };
            self.errors.record(error);
            self.state = State::Skip;
            pieces.push(Piece::Dropped(error));
        }
    }
}

fn flush_text(text: &mut Vec<u8>, pieces: &mut Vec<Piece>) {
    if !text.is_empty() {
        pieces.push(Piece::Text(std::mem::take(text)));
    }
}

/// Whether `bytes` read as terminal text: valid UTF-8 with no control
/// characters other than tab, newline, carriage return, backspace and escape.
/// Real defmt frames start with a small table index and carry binary
/// timestamps, so they practically never pass; text taken for a frame does.
pub fn looks_like_text(bytes: &[u8]) -> bool {
    !bytes.is_empty()
        && std::str::from_utf8(bytes).is_ok_and(|text| {
            text.chars()
                .all(|c| !c.is_control() || matches!(c, '\t' | '\n' | '\r' | '\x08' | '\x1b'))
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A frame body that does not look like text (index 1, small timestamp).
    const BODY: &[u8] = &[0x01, 0x88, 0x13, 0x7c];

    fn frame(body: &[u8]) -> Vec<u8> {
        let mut bytes = vec![DELIMITER];
        bytes.extend_from_slice(body);
        bytes.push(DELIMITER);
        bytes
    }

    /// Merges adjacent text pieces so results compare independently of
    /// how the input was chunked.
    fn normalise(pieces: Vec<Piece>) -> Vec<Piece> {
        let mut out: Vec<Piece> = Vec::new();
        for piece in pieces {
            match (out.last_mut(), piece) {
                (Some(Piece::Text(prev)), Piece::Text(next)) => prev.extend(next),
                (_, piece) => out.push(piece),
            }
        }
        out
    }

    fn push_all(deframer: &mut Deframer, chunks: &[&[u8]]) -> Vec<Piece> {
        normalise(chunks.iter().flat_map(|c| deframer.push(c)).collect())
    }

    #[test]
    fn plain_text_passes_through() {
        let mut d = Deframer::new();
        assert_eq!(
            d.push(b"tern> help\r\n"),
            vec![Piece::Text(b"tern> help\r\n".to_vec())]
        );
        assert_eq!(d.errors(), FrameErrorCounts::default());
    }

    #[test]
    fn frame_in_the_middle_of_a_text_line() {
        let mut stream = b"tern> he".to_vec();
        stream.extend(frame(BODY));
        stream.extend_from_slice(b"lp\r\n");
        let mut d = Deframer::new();
        assert_eq!(
            normalise(d.push(&stream)),
            vec![
                Piece::Text(b"tern> he".to_vec()),
                Piece::Frame(BODY.to_vec()),
                Piece::Text(b"lp\r\n".to_vec()),
            ]
        );
    }

    #[test]
    fn back_to_back_frames_and_the_double_opener_of_the_first() {
        let mut stream = vec![DELIMITER];
        stream.extend(frame(BODY));
        stream.extend(frame(&[0x02, 0x90]));
        stream.extend(frame(&[0x03, 0x91]));
        let mut d = Deframer::new();
        assert_eq!(
            d.push(&stream),
            vec![
                Piece::Frame(BODY.to_vec()),
                Piece::Frame(vec![0x02, 0x90]),
                Piece::Frame(vec![0x03, 0x91]),
            ]
        );
    }

    #[test]
    fn every_split_point_gives_the_same_pieces() {
        let mut stream = b"Tern 0.1.0\r\n".to_vec();
        stream.extend(frame(BODY));
        stream.extend_from_slice(b"tern> ");
        stream.extend(frame(&[0x05, 0xff, 0x80]));
        stream.extend(frame(&[0x06, 0x81]));
        stream.extend_from_slice(b"x");
        let whole = normalise(Deframer::new().push(&stream));
        for i in 0..=stream.len() {
            for j in i..=stream.len() {
                let mut d = Deframer::new();
                let split = push_all(&mut d, &[&stream[..i], &stream[i..j], &stream[j..]]);
                assert_eq!(split, whole, "split at {i} and {j}");
            }
        }
        let mut d = Deframer::new();
        let bytewise: Vec<&[u8]> = stream.chunks(1).collect();
        assert_eq!(push_all(&mut d, &bytewise), whole);
    }

    #[test]
    fn overlong_frame_is_dropped_and_counted_then_stream_continues() {
        let mut d = Deframer::with_max_frame_len(8);
        let mut stream = vec![DELIMITER];
        stream.extend(std::iter::repeat_n(0x81, 20));
        stream.push(DELIMITER);
        stream.extend_from_slice(b"ok\r\n");
        stream.extend(frame(BODY));
        assert_eq!(
            normalise(d.push(&stream)),
            vec![
                Piece::Dropped(FrameError::Overlong { max: 8 }),
                Piece::Text(b"ok\r\n".to_vec()),
                Piece::Frame(BODY.to_vec()),
            ]
        );
        assert_eq!(d.errors().overlong, 1);
        assert_eq!(d.errors().dropped(), 1);
    }

    #[test]
    fn attaching_mid_frame_resynchronises_at_the_next_frame() {
        // The reader missed the opener: the frame's tail shows up as text
        // and its closing delimiter is taken for an opener.
        let mut stream = vec![0x90, 0x7c, DELIMITER];
        stream.extend_from_slice(b"tern> ");
        stream.extend(frame(BODY));
        stream.extend_from_slice(b"after\r\n");
        let mut d = Deframer::new();
        assert_eq!(
            normalise(d.push(&stream)),
            vec![
                Piece::Text(vec![0x90, 0x7c, b't', b'e', b'r', b'n', b'>', b' ']),
                Piece::Frame(BODY.to_vec()),
                Piece::Text(b"after\r\n".to_vec()),
            ]
        );
        assert_eq!(d.errors().resyncs, 1);
    }

    #[test]
    fn idle_line_releases_text_taken_for_a_frame() {
        let mut d = Deframer::new();
        assert_eq!(d.push(&[0x7c, DELIMITER]), vec![Piece::Text(vec![0x7c])]);
        assert_eq!(d.push(b"tern> "), vec![]);
        assert_eq!(d.flush_idle(), Some(Piece::Text(b"tern> ".to_vec())));
        assert_eq!(d.push(b"x"), vec![Piece::Text(b"x".to_vec())]);
        // A genuine frame caught half-way is kept waiting for its end.
        assert_eq!(d.push(&[DELIMITER, 0x01, 0x88]), vec![]);
        assert_eq!(d.flush_idle(), None);
        assert_eq!(
            d.push(&[0x7c, DELIMITER]),
            vec![Piece::Frame(vec![0x01, 0x88, 0x7c])]
        );
    }

    #[test]
    fn text_overrunning_the_frame_limit_is_released_as_text() {
        let mut d = Deframer::with_max_frame_len(4);
        let pieces = normalise(d.push(&[0x7c, DELIMITER, b'a', b'b', b'c', b'd', b'e', b'f']));
        assert_eq!(pieces, vec![Piece::Text(b"|abcdef".to_vec())]);
        assert_eq!(d.errors().overlong, 0);
    }

    #[test]
    fn arbitrary_bytes_never_panic_and_text_never_holds_a_zero() {
        // A deterministic pseudo-random stream rich in delimiters.
        let mut x: u32 = 0x1234_5678;
        let stream: Vec<u8> = (0..20_000)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 17;
                x ^= x << 5;
                if x.is_multiple_of(7) {
                    0
                } else {
                    x as u8
                }
            })
            .collect();
        let mut d = Deframer::with_max_frame_len(64);
        for chunk in stream.chunks(37) {
            for piece in d.push(chunk) {
                match piece {
                    Piece::Text(t) => assert!(!t.contains(&0)),
                    Piece::Frame(f) => assert!(!f.is_empty() && !f.contains(&0) && f.len() <= 64),
                    Piece::Dropped(_) => {}
                }
            }
            d.flush_idle();
        }
    }

    #[test]
    fn reset_forgets_a_half_frame() {
        let mut d = Deframer::new();
        assert_eq!(d.push(&[DELIMITER, 0x01, 0x88]), vec![]);
        d.reset();
        assert_eq!(d.push(b"hi"), vec![Piece::Text(b"hi".to_vec())]);
    }

    #[test]
    fn text_detection() {
        assert!(looks_like_text(b"tern> \x1b[K\x08 \r\n"));
        assert!(looks_like_text("héllo".as_bytes()));
        assert!(!looks_like_text(&[]));
        assert!(!looks_like_text(BODY));
        assert!(!looks_like_text(&[b'a', 0x87, 0xd6]));
    }
}
