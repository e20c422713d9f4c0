//! Compression of the chunks a node sends, in migrations and sync deltas alike: per
//! chunk, the codec tern-sync's selector picks from speeds and ratios measured on the
//! data and the bandwidth expected (`docs/sync.md` §4), or one fixed codec chosen with
//! the shell's `codec` command, so the two can be compared on the same path.

use alloc::vec::Vec;
use core::fmt;

use tern_codec::Codec;
use tern_hal::MonotonicClock;
use tern_protocol::Codec as WireCodec;
use tern_sync::codec::{Choice, CodecSelector};

/// Weight of the newest measurement in the selector's estimates.
const CODEC_ALPHA: f64 = 0.3;

/// The selector measures every codec again on every this many chunks.
const CODEC_REPROBE: u64 = 8;

/// How a node compresses the chunks it sends.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CodecMode {
    /// The codec that maximises `min(compression speed, bandwidth × ratio)`,
    /// measured online on the data being sent (the default).
    Adaptive,
    /// Always this codec (a chunk it does not shrink goes raw).
    Fixed(Codec),
}

impl CodecMode {
    /// `adaptive` or a codec's name (`none`, `lz4`, `zstd-1`, `zstd-3`, `zstd-9`).
    pub fn parse(name: &str) -> Option<Self> {
        match name {
            "adaptive" => Some(Self::Adaptive),
            _ => Codec::from_name(name).map(Self::Fixed),
        }
    }
}

impl fmt::Display for CodecMode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Adaptive => f.write_str("adaptive"),
            Self::Fixed(codec) => f.write_str(codec.name()),
        }
    }
}

/// Bytes of one transfer's chunks before and after compression, and how
/// many raw bytes each codec carried.
#[derive(Clone, Copy, Debug, Default)]
pub(super) struct Tally {
    pub(super) raw: u64,
    pub(super) encoded: u64,
    /// Raw bytes per codec, in [`Codec::ALL`]'s order.
    carried: [u64; Codec::ALL.len()],
}

impl Tally {
    /// The codec that carried the most raw bytes (`none` before any chunk).
    pub(super) fn main_codec(&self) -> Codec {
        Codec::ALL
            .into_iter()
            .zip(self.carried)
            .max_by_key(|&(_, bytes)| bytes)
            .filter(|&(_, bytes)| bytes > 0)
            .map_or(Codec::None, |(codec, _)| codec)
    }

    /// Raw over encoded bytes (1 before any chunk).
    pub(super) fn ratio(&self) -> f64 {
        if self.encoded == 0 {
            1.0
        } else {
            self.raw as f64 / self.encoded as f64
        }
    }
}

/// Compresses the chunks of the transfers to one peer; the selector's estimates
/// carry over from one transfer to the next.
pub(super) struct ChunkEncoder {
    mode: CodecMode,
    selector: CodecSelector,
}

impl ChunkEncoder {
    /// An encoder in `mode`.
    pub(super) fn new(mode: CodecMode) -> Self {
        Self {
            mode,
            selector: CodecSelector::new(&Codec::ADAPTIVE, CODEC_ALPHA, CODEC_REPROBE),
        }
    }

    /// Compresses one chunk for a link expected to carry `bandwidth` bytes/s
    /// (infinite when unknown: then only speed counts and chunks go raw, while
    /// probe rounds still measure the codecs). A probe round times every
    /// candidate on the chunk with `clock` first. Returns the wire codec and
    /// payload, and adds the chunk to `tally`.
    pub(super) fn encode(
        &mut self,
        clock: &dyn MonotonicClock,
        bandwidth: f64,
        bytes: &[u8],
        tally: &mut Tally,
    ) -> (WireCodec, Vec<u8>) {
        let (codec, payload) = match self.mode {
            CodecMode::Fixed(codec) => keep_smaller((codec, codec.compress(bytes)), bytes),
            CodecMode::Adaptive => self.adaptive(clock, bandwidth, bytes),
        };
        tally.raw += bytes.len() as u64;
        tally.encoded += payload.len() as u64;
        if let Some(i) = Codec::ALL.iter().position(|&c| c == codec) {
            tally.carried[i] += bytes.len() as u64;
        }
        (WireCodec::from(codec), payload)
    }

    fn adaptive(
        &mut self,
        clock: &dyn MonotonicClock,
        bandwidth: f64,
        bytes: &[u8],
    ) -> (Codec, Vec<u8>) {
        let chosen = match self.selector.choose(bandwidth) {
            Choice::Use(codec) => codec,
            Choice::Probe => {
                let mut probed = Vec::new();
                for codec in self.selector.probe_set(bandwidth) {
                    let start = clock.now_ns();
                    let payload = codec.compress(bytes);
                    let took_ns = clock.now_ns().saturating_sub(start).max(1);
                    self.selector
                        .record(codec, bytes.len(), payload.len(), took_ns as f64 / 1e9);
                    probed.push((codec, payload));
                }
                let best = self.selector.best(bandwidth);
                if let Some(found) = probed.into_iter().find(|(c, _)| *c == best) {
                    return keep_smaller(found, bytes);
                }
                best
            }
        };
        keep_smaller((chosen, chosen.compress(bytes)), bytes)
    }
}

/// `encoded`, or the raw bytes if it is not smaller.
fn keep_smaller(encoded: (Codec, Vec<u8>), raw: &[u8]) -> (Codec, Vec<u8>) {
    if encoded.1.len() < raw.len() {
        encoded
    } else {
        (Codec::None, raw.to_vec())
    }
}
