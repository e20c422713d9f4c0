//! Carrying a checkpoint over a text-only serial console, line by line.
//!
//! A Tern console is a text channel (it never carries `0x00`, which opens a
//! defmt frame) whose lines end in `\r\n`. A checkpoint's bytes travel on it
//! as these lines:
//!
//! ```text
//! TERN-CKPT BEGIN <name> <total_bytes> <sha256 hex of the bytes>
//! TERN-CKPT DATA <offset> <base64 of at most 384 bytes>
//! ...
//! TERN-CKPT END <total_bytes>
//! ```
//!
//! `<name>` is a file-name-safe label (`[A-Za-z0-9._-]`, at most
//! [`MAX_NAME`] bytes); `<total_bytes>` and `<offset>` are decimal; the hash is
//! 64 lowercase hex digits; base64 uses the standard alphabet with padding.
//! DATA lines come in order, each starting where the previous one ended; an
//! empty checkpoint has no DATA line. The name is a label only: the SHA-256
//! covers the bytes, and the checkpoint format has its own integrity checks.
//!
//! **Flow control** when a node receives (the sender is the host, the
//! receiver a kernel whose UART FIFO may hold only 16 bytes): the receiver
//! prints [`READY`] when it enters receive mode; the sender then sends BEGIN
//! and waits for `TERN-CKPT ACK 0`; after each DATA line the receiver prints
//! `TERN-CKPT ACK <next offset>` ([`Reply::Ack`]) and the sender sends the
//! next line only after that ACK. After END the receiver prints
//! `TERN-CKPT DONE <name>` or, at any point, `TERN-CKPT ERROR <message>`
//! and leaves receive mode. [`Reply`] formats and parses these lines.

use alloc::string::{String, ToString};
use alloc::vec::Vec;
use base64::engine::general_purpose::STANDARD;
use base64::Engine as _;
use core::fmt::{self, Write as _};
use sha2::{Digest, Sha256};

/// Every line of the protocol starts with this; other lines are not ours.
pub const PREFIX: &str = "TERN-CKPT ";

/// Most checkpoint bytes carried by one DATA line (512 base64 characters).
pub const MAX_DATA_BYTES: usize = 384;

/// Longest name accepted in a BEGIN line.
pub const MAX_NAME: usize = 64;

/// Longest protocol line, without its line ending (a full DATA line with a
/// 20-digit offset is 546 bytes).
pub const MAX_LINE: usize = 600;

/// The receiver's first line: it is listening for BEGIN.
pub const READY: &str = "TERN-CKPT READY";

/// Whether `name` is a valid transfer name: 1 to [`MAX_NAME`] bytes of
/// `[A-Za-z0-9._-]`.
pub fn is_valid_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= MAX_NAME
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
}

/// Turns any label into a valid transfer name: other characters become `_`,
/// it is cut to [`MAX_NAME`] bytes, and an empty label becomes `checkpoint`.
pub fn sanitize_name(label: &str) -> String {
    let name: String = label
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-') {
                c
            } else {
                '_'
            }
        })
        .take(MAX_NAME)
        .collect();
    if name.is_empty() {
        String::from("checkpoint")
    } else {
        name
    }
}

/// The lines (without line endings) that carry `bytes` under `name`.
///
/// `name` goes through [`sanitize_name`], so every produced BEGIN line is
/// valid; pass a valid name to keep it unchanged.
pub fn encode<'a>(name: &str, bytes: &'a [u8]) -> impl Iterator<Item = String> + 'a {
    let hash = hex::encode(Sha256::digest(bytes));
    let begin = alloc::format!(
        "{PREFIX}BEGIN {} {} {hash}",
        sanitize_name(name),
        bytes.len()
    );
    let data = bytes.chunks(MAX_DATA_BYTES).enumerate().map(|(i, chunk)| {
        alloc::format!(
            "{PREFIX}DATA {} {}",
            i * MAX_DATA_BYTES,
            STANDARD.encode(chunk)
        )
    });
    let end = alloc::format!("{PREFIX}END {}", bytes.len());
    core::iter::once(begin)
        .chain(data)
        .chain(core::iter::once(end))
}

/// A receiver's answer line (see the module documentation for the flow).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reply {
    /// `TERN-CKPT READY`: receive mode entered, send BEGIN.
    Ready,
    /// `TERN-CKPT ACK <next offset>`: line processed, send the next one.
    Ack(u64),
    /// `TERN-CKPT DONE <name>`: the checkpoint arrived intact.
    Done(String),
    /// `TERN-CKPT ERROR <message>`: the receiver gave up; nothing was kept.
    Error(String),
}

impl Reply {
    /// Parses a receiver's line (a trailing `\r` is ignored); `None` when it
    /// is not a reply (ordinary console output, or a malformed reply).
    pub fn parse(line: &str) -> Option<Self> {
        let line = line.strip_suffix('\r').unwrap_or(line);
        if line == READY {
            return Some(Self::Ready);
        }
        let rest = line.strip_prefix(PREFIX)?;
        let (verb, arg) = rest.split_once(' ')?;
        match verb {
            "ACK" => parse_decimal(arg).map(Self::Ack),
            "DONE" if is_valid_name(arg) => Some(Self::Done(arg.to_string())),
            "ERROR" if !arg.is_empty() => Some(Self::Error(arg.to_string())),
            _ => None,
        }
    }
}

impl fmt::Display for Reply {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Ready => f.write_str(READY),
            Self::Ack(next) => write!(f, "{PREFIX}ACK {next}"),
            Self::Done(name) => write!(f, "{PREFIX}DONE {name}"),
            // A reply is one line: a message with a line break would end early.
            Self::Error(message) => {
                f.write_str(PREFIX)?;
                f.write_str("ERROR ")?;
                for c in message.chars() {
                    f.write_char(if c.is_control() { ' ' } else { c })?;
                }
                Ok(())
            }
        }
    }
}

/// Why a transfer was rejected. After any error the [`Decoder`] is idle
/// again, waiting for a new BEGIN.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TransferError {
    /// A `TERN-CKPT` line with a verb this decoder does not know.
    #[error("unknown line verb '{0}'")]
    UnknownVerb(String),
    /// A line whose fields do not parse (wrong count, not a number, bad hex).
    #[error("malformed {0} line")]
    Malformed(&'static str),
    /// The name in BEGIN is not `[A-Za-z0-9._-]{1,64}`.
    #[error("bad checkpoint name")]
    BadName,
    /// A line that does not fit the transfer's state (DATA or END before
    /// BEGIN, BEGIN during a transfer).
    #[error("unexpected {0} line")]
    Unexpected(&'static str),
    /// The announced size exceeds the decoder's limit.
    #[error("checkpoint of {total} bytes exceeds the limit of {limit} bytes")]
    TooLarge {
        /// Announced size.
        total: u64,
        /// The decoder's limit.
        limit: u64,
    },
    /// Memory for the announced size could not be reserved.
    #[error("out of memory for {0} bytes")]
    OutOfMemory(u64),
    /// A DATA line does not start where the previous one ended.
    #[error("data at offset {found}, expected offset {expected}")]
    OutOfOrder {
        /// Next offset expected.
        expected: u64,
        /// Offset in the line.
        found: u64,
    },
    /// The payload is not canonical padded standard base64.
    #[error("bad base64 at offset {0}")]
    BadBase64(u64),
    /// A DATA line is empty or holds more than [`MAX_DATA_BYTES`] bytes.
    #[error("data line at offset {offset} carries {len} bytes")]
    BadDataLength {
        /// Offset in the line.
        offset: u64,
        /// Bytes decoded.
        len: u64,
    },
    /// The data runs past the announced total.
    #[error("data runs past the announced {0} bytes")]
    Overrun(u64),
    /// END's total differs from BEGIN's, or bytes are missing at END.
    #[error("{received} bytes received, {expected} announced")]
    LengthMismatch {
        /// Bytes announced in BEGIN.
        expected: u64,
        /// Bytes received (or the total in END).
        received: u64,
    },
    /// The bytes do not hash to the SHA-256 in BEGIN.
    #[error("SHA-256 mismatch")]
    HashMismatch,
}

/// A checkpoint that arrived whole and hashed right.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Received {
    /// The name from BEGIN.
    pub name: String,
    /// The checkpoint's bytes.
    pub bytes: Vec<u8>,
}

struct Transfer {
    name: String,
    total: u64,
    sha256: [u8; 32],
    bytes: Vec<u8>,
    hash: Sha256,
}

/// Reassembles a checkpoint from protocol lines, checking each as it comes.
pub struct Decoder {
    max_total: u64,
    transfer: Option<Transfer>,
}

impl fmt::Debug for Decoder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Decoder")
            .field("max_total", &self.max_total)
            .field("next_offset", &self.next_offset())
            .finish()
    }
}

fn parse_decimal(s: &str) -> Option<u64> {
    if s.is_empty() || !s.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    s.parse().ok()
}

fn parse_hash(s: &str) -> Option<[u8; 32]> {
    // Lowercase only, so that one hash has one spelling.
    if s.bytes().any(|b| b.is_ascii_uppercase()) {
        return None;
    }
    let mut out = [0; 32];
    hex::decode_to_slice(s, &mut out).ok()?;
    Some(out)
}

impl Decoder {
    /// A decoder accepting checkpoints of at most `max_total` bytes.
    pub fn new(max_total: u64) -> Self {
        Self {
            max_total,
            transfer: None,
        }
    }

    /// The offset the next DATA line must start at, during a transfer.
    pub fn next_offset(&self) -> Option<u64> {
        self.transfer.as_ref().map(|t| t.bytes.len() as u64)
    }

    /// Whether a BEGIN has been accepted and END not yet seen.
    pub fn in_transfer(&self) -> bool {
        self.transfer.is_some()
    }

    /// Feeds one line (without its ending; a trailing `\r` is ignored).
    ///
    /// Lines not starting with `TERN-CKPT ` are ignored (`Ok(None)`), so
    /// console chatter around a transfer does no harm. Returns the checkpoint
    /// when END completes it. Any error abandons the current transfer.
    pub fn feed_line(&mut self, line: &str) -> Result<Option<Received>, TransferError> {
        let line = line.strip_suffix('\r').unwrap_or(line);
        let Some(rest) = line.strip_prefix(PREFIX) else {
            return Ok(None);
        };
        let result = self.feed_fields(rest);
        if result.is_err() {
            self.transfer = None;
        }
        result
    }

    fn feed_fields(&mut self, rest: &str) -> Result<Option<Received>, TransferError> {
        let fields: Vec<&str> = rest.split(' ').collect();
        match fields[0] {
            "BEGIN" => {
                let [_, name, total, hash] = fields[..] else {
                    return Err(TransferError::Malformed("BEGIN"));
                };
                if self.transfer.is_some() {
                    return Err(TransferError::Unexpected("BEGIN"));
                }
                if !is_valid_name(name) {
                    return Err(TransferError::BadName);
                }
                let total = parse_decimal(total).ok_or(TransferError::Malformed("BEGIN"))?;
                let sha256 = parse_hash(hash).ok_or(TransferError::Malformed("BEGIN"))?;
                if total > self.max_total {
                    return Err(TransferError::TooLarge {
                        total,
                        limit: self.max_total,
                    });
                }
                let mut bytes = Vec::new();
                usize::try_from(total)
                    .ok()
                    .and_then(|n| bytes.try_reserve_exact(n).ok())
                    .ok_or(TransferError::OutOfMemory(total))?;
                self.transfer = Some(Transfer {
                    name: name.to_string(),
                    total,
                    sha256,
                    bytes,
                    hash: Sha256::new(),
                });
                Ok(None)
            }
            "DATA" => {
                let [_, offset, payload] = fields[..] else {
                    return Err(TransferError::Malformed("DATA"));
                };
                let t = self
                    .transfer
                    .as_mut()
                    .ok_or(TransferError::Unexpected("DATA"))?;
                let offset = parse_decimal(offset).ok_or(TransferError::Malformed("DATA"))?;
                let expected = t.bytes.len() as u64;
                if offset != expected {
                    return Err(TransferError::OutOfOrder {
                        expected,
                        found: offset,
                    });
                }
                // Check the encoded length before decoding, so a huge line
                // costs no allocation.
                if payload.len() > base64::encoded_len(MAX_DATA_BYTES, true).unwrap_or(0) {
                    return Err(TransferError::BadDataLength {
                        offset,
                        len: (payload.len() / 4 * 3) as u64,
                    });
                }
                let chunk = STANDARD
                    .decode(payload)
                    .map_err(|_| TransferError::BadBase64(offset))?;
                if chunk.is_empty() {
                    return Err(TransferError::BadDataLength { offset, len: 0 });
                }
                if expected + chunk.len() as u64 > t.total {
                    return Err(TransferError::Overrun(t.total));
                }
                t.hash.update(&chunk);
                t.bytes.extend_from_slice(&chunk);
                Ok(None)
            }
            "END" => {
                let [_, total] = fields[..] else {
                    return Err(TransferError::Malformed("END"));
                };
                let total = parse_decimal(total).ok_or(TransferError::Malformed("END"))?;
                let t = self
                    .transfer
                    .take()
                    .ok_or(TransferError::Unexpected("END"))?;
                let received = t.bytes.len() as u64;
                if total != t.total || received != t.total {
                    return Err(TransferError::LengthMismatch {
                        expected: t.total,
                        received: if total != t.total { total } else { received },
                    });
                }
                if <[u8; 32]>::from(t.hash.finalize()) != t.sha256 {
                    return Err(TransferError::HashMismatch);
                }
                Ok(Some(Received {
                    name: t.name,
                    bytes: t.bytes,
                }))
            }
            verb => Err(TransferError::UnknownVerb(verb.to_string())),
        }
    }
}

#[cfg(test)]
mod tests {
    extern crate std;
    use super::*;
    use proptest::prelude::*;

    fn decode_all(lines: &[String]) -> Result<Option<Received>, TransferError> {
        let mut d = Decoder::new(1 << 20);
        let mut last = None;
        for line in lines {
            last = d.feed_line(line)?;
        }
        Ok(last)
    }

    fn lines(name: &str, bytes: &[u8]) -> Vec<String> {
        encode(name, bytes).collect()
    }

    #[test]
    fn lines_have_the_documented_shape() {
        let bytes: Vec<u8> = (0..1000u32).map(|i| i as u8).collect();
        let l = lines("is-S-50.0", &bytes);
        assert_eq!(l.len(), 5);
        assert_eq!(
            l[0],
            std::format!(
                "TERN-CKPT BEGIN is-S-50.0 1000 {}",
                hex::encode(Sha256::digest(&bytes))
            )
        );
        assert!(l[1].starts_with("TERN-CKPT DATA 0 AAECAwQF"));
        assert!(l[2].starts_with("TERN-CKPT DATA 384 "));
        assert!(l[3].starts_with("TERN-CKPT DATA 768 "));
        assert_eq!(l[4], "TERN-CKPT END 1000");
        assert!(l.iter().all(|l| l.len() <= MAX_LINE && !l.contains('\0')));
    }

    #[test]
    fn empty_checkpoint_round_trips() {
        let got = decode_all(&lines("empty", &[])).unwrap().unwrap();
        assert_eq!(got.name, "empty");
        assert!(got.bytes.is_empty());
    }

    #[test]
    fn invalid_names_are_sanitized() {
        assert_eq!(sanitize_name("a b/c"), "a_b_c");
        assert_eq!(sanitize_name(""), "checkpoint");
        assert_eq!(sanitize_name(&"x".repeat(100)).len(), MAX_NAME);
        let got = decode_all(&lines("my ckpt", b"abc")).unwrap().unwrap();
        assert_eq!(got.name, "my_ckpt");
    }

    #[test]
    fn foreign_lines_are_ignored_and_crs_stripped() {
        let mut d = Decoder::new(100);
        assert_eq!(d.feed_line("tern> receive"), Ok(None));
        let mut got = None;
        for l in lines("x", b"hello") {
            assert_eq!(d.feed_line("some chatter"), Ok(None));
            got = d.feed_line(&std::format!("{l}\r")).unwrap();
        }
        assert_eq!(got.unwrap().bytes, b"hello");
    }

    #[test]
    fn each_error_is_typed() {
        let good = lines("x", &[7u8; 800]);
        let run = |edit: &dyn Fn(&mut Vec<String>)| {
            let mut l = good.clone();
            edit(&mut l);
            decode_all(&l)
        };
        assert_eq!(
            run(&|l| l[0] = "TERN-CKPT BEGIN x 800".into()),
            Err(TransferError::Malformed("BEGIN"))
        );
        assert_eq!(
            run(&|l| l[0] = l[0].replace(" x ", " a/b ")),
            Err(TransferError::BadName)
        );
        assert_eq!(
            run(&|l| {
                // Hex digits are lowercase only: one hash, one spelling.
                let (head, hash) = l[0].rsplit_once(' ').unwrap();
                l[0] = std::format!("{head} {}", hash.to_uppercase());
            }),
            Err(TransferError::Malformed("BEGIN"))
        );
        assert_eq!(
            run(&|l| {
                l.remove(0);
            }),
            Err(TransferError::Unexpected("DATA"))
        );
        assert_eq!(
            run(&|l| {
                let b = l[0].clone();
                l.insert(1, b);
            }),
            Err(TransferError::Unexpected("BEGIN"))
        );
        assert_eq!(
            run(&|l| {
                l.remove(2);
            }),
            Err(TransferError::OutOfOrder {
                expected: 384,
                found: 768
            })
        );
        assert_eq!(
            run(&|l| l[1] = l[1].replace("BwcH", "B*cH")),
            Err(TransferError::BadBase64(0))
        );
        assert_eq!(
            run(&|l| l[1] = std::format!("{} BwcH", l[1])),
            Err(TransferError::Malformed("DATA"))
        );
        assert_eq!(
            run(&|l| l[1] = "TERN-CKPT DATA 0 ".into()),
            Err(TransferError::BadDataLength { offset: 0, len: 0 })
        );
        assert_eq!(
            run(&|l| l[1] = std::format!("TERN-CKPT DATA 0 {}", STANDARD.encode([1; 385]))),
            Err(TransferError::BadDataLength {
                offset: 0,
                len: 387
            })
        );
        assert_eq!(
            run(&|l| {
                l.pop();
                l.push(std::format!("TERN-CKPT DATA 800 {}", STANDARD.encode([1])));
            }),
            Err(TransferError::Overrun(800))
        );
        assert_eq!(
            run(&|l| {
                l.remove(3);
            }),
            Err(TransferError::LengthMismatch {
                expected: 800,
                received: 768
            })
        );
        assert_eq!(
            run(&|l| *l.last_mut().unwrap() = "TERN-CKPT END 801".into()),
            Err(TransferError::LengthMismatch {
                expected: 800,
                received: 801
            })
        );
        assert_eq!(
            run(&|l| l[2] = l[2].replace("BwcH", "BwcI")),
            Err(TransferError::HashMismatch)
        );
        assert_eq!(
            run(&|l| l.push("TERN-CKPT END 800".into())),
            Err(TransferError::Unexpected("END"))
        );
        assert_eq!(
            run(&|l| l.push("TERN-CKPT HELLO".into())),
            Err(TransferError::UnknownVerb("HELLO".into()))
        );
        let mut small = Decoder::new(799);
        assert_eq!(
            small.feed_line(&good[0]),
            Err(TransferError::TooLarge {
                total: 800,
                limit: 799
            })
        );
        let mut huge = Decoder::new(u64::MAX);
        let begin = std::format!("TERN-CKPT BEGIN x {} {}", u64::MAX / 2, "0".repeat(64));
        assert_eq!(
            huge.feed_line(&begin),
            Err(TransferError::OutOfMemory(u64::MAX / 2))
        );
    }

    #[test]
    fn decoder_recovers_after_an_error() {
        let mut d = Decoder::new(1000);
        assert!(d.feed_line("TERN-CKPT DATA 0 AAAA").is_err());
        assert!(!d.in_transfer());
        let mut got = None;
        for l in lines("again", b"fine") {
            got = d.feed_line(&l).unwrap();
            assert_eq!(d.in_transfer(), got.is_none());
        }
        assert_eq!(got.unwrap().bytes, b"fine");
    }

    #[test]
    fn replies_format_and_parse() {
        for reply in [
            Reply::Ready,
            Reply::Ack(0),
            Reply::Ack(12_288),
            Reply::Done("is-S-50.0".into()),
            Reply::Error("hash mismatch".into()),
        ] {
            let line = reply.to_string();
            assert!(line.starts_with("TERN-CKPT "));
            assert_eq!(Reply::parse(&line), Some(reply.clone()));
            assert_eq!(Reply::parse(&std::format!("{line}\r")), Some(reply));
        }
        assert_eq!(Reply::Ack(384).to_string(), "TERN-CKPT ACK 384");
        assert_eq!(
            Reply::Error("two\r\nlines".into()).to_string(),
            "TERN-CKPT ERROR two  lines"
        );
        for bad in [
            "TERN-CKPT ACK",
            "TERN-CKPT ACK x",
            "TERN-CKPT DONE a/b",
            "tern> ",
            "",
        ] {
            assert_eq!(Reply::parse(bad), None, "{bad}");
        }
    }

    proptest! {
        #[test]
        fn round_trip(bytes in proptest::collection::vec(any::<u8>(), 0..3000),
                      name in "[A-Za-z0-9._-]{1,64}") {
            let got = decode_all(&lines(&name, &bytes)).unwrap().unwrap();
            prop_assert_eq!(got.name, name);
            prop_assert_eq!(got.bytes, bytes);
        }

        /// Changing any one character of any line (other than inside the
        /// name, which is only a label) never yields a checkpoint.
        #[test]
        fn every_corruption_is_rejected(bytes in proptest::collection::vec(any::<u8>(), 1..2000),
                                        line_pick in any::<prop::sample::Index>(),
                                        pos_pick in any::<prop::sample::Index>(),
                                        replacement in 0x20u8..0x7f) {
            let mut l = lines("ck", &bytes);
            let li = line_pick.index(l.len());
            let mut line = l[li].clone().into_bytes();
            let pos = pos_pick.index(line.len());
            let in_name = li == 0 && (16..18).contains(&pos);
            prop_assume!(line[pos] != replacement && !in_name);
            line[pos] = replacement;
            l[li] = String::from_utf8(line).unwrap();
            prop_assert!(!matches!(decode_all(&l), Ok(Some(_))));
        }

        /// Dropping or duplicating any line never yields a checkpoint.
        #[test]
        fn lost_or_repeated_lines_are_rejected(bytes in proptest::collection::vec(any::<u8>(), 1..2000),
                                               pick in any::<prop::sample::Index>(),
                                               repeat in any::<bool>()) {
            let mut l = lines("ck", &bytes);
            let i = pick.index(l.len());
            if repeat {
                let dup = l[i].clone();
                l.insert(i, dup);
            } else {
                l.remove(i);
            }
            prop_assert!(!matches!(decode_all(&l), Ok(Some(_))));
        }
    }

    #[test]
    fn too_large_limit_is_configurable() {
        let l = lines("x", &[0u8; 10]);
        let mut d = Decoder::new(10);
        let mut got = None;
        for line in &l {
            got = d.feed_line(line).unwrap();
        }
        assert_eq!(got.unwrap().bytes.len(), 10);
    }
}
