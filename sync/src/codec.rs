//! Codecs for sync deltas and the online selector that picks one per transfer.
//!
//! BP-ACM (paper §2.2) picks LZ4 above 60 MB/s and a Zstd level below from a fixed
//! table of per-level ratio θ and speed V_c. We keep its objective — maximise the
//! effective rate `min(V_c, B × θ)` in uncompressed bytes per second, which is the rate
//! of a pipeline that compresses chunk k+1 while chunk k is on the wire — but measure θ
//! and V_c online on the data actually sent, include "no compression", and re-probe
//! every codec periodically so the estimates follow the data.
//!
//! Available codecs: none, LZ4 (`lz4_flex` block format) and Zstandard at levels 1, 3
//! and 9 (`structured-zstd`, pure Rust and `no_std`): a fast, the default and a denser
//! level, so the selector trades speed for ratio within Zstd too.

use alloc::vec::Vec;

/// A compression method for one chunk.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Codec {
    /// Sent as is.
    None,
    /// LZ4 block format.
    Lz4,
    /// Zstandard frame at level 1.
    Zstd1,
    /// Zstandard frame at level 3 (zstd's default).
    Zstd3,
    /// Zstandard frame at level 9.
    Zstd9,
}

/// Errors decoding a frame.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum CodecError {
    /// Frame shorter than its 5-byte header.
    #[error("frame too short: {0} bytes")]
    Truncated(usize),
    /// Unknown codec tag byte.
    #[error("unknown codec tag {0:#04x}")]
    UnknownTag(u8),
    /// Declared size over the caller's limit.
    #[error("declared size {declared} exceeds limit {limit}")]
    TooLarge {
        /// Size in the header.
        declared: usize,
        /// Caller's limit.
        limit: usize,
    },
    /// The payload did not decode to the declared size.
    #[error("corrupt {codec:?} payload")]
    Corrupt {
        /// The codec named in the frame.
        codec: Codec,
    },
}

impl Codec {
    /// The candidates of the adaptive choice: every codec but Zstandard level 9.
    /// Level 9 was never the fastest end to end at 10–120 MB/s on our inputs, and its
    /// speed varies several-fold between the chunks of one checkpoint (fast on random
    /// floating-point data, slow on integer arrays), so the selector's sampled
    /// estimates misled it: with level 9 among the candidates, a CG class W
    /// checkpoint at 60 MB/s took 0.164 s against 0.087 s for level 3 alone
    /// (`sync-lab codec`, `docs/benchmarks.md`). It remains a fixed choice.
    pub const ADAPTIVE: [Codec; 4] = [Codec::None, Codec::Lz4, Codec::Zstd1, Codec::Zstd3];

    /// Every codec, cheapest first.
    pub const ALL: [Codec; 5] = [
        Codec::None,
        Codec::Lz4,
        Codec::Zstd1,
        Codec::Zstd3,
        Codec::Zstd9,
    ];

    /// Stable name for reports.
    pub fn name(self) -> &'static str {
        match self {
            Codec::None => "none",
            Codec::Lz4 => "lz4",
            Codec::Zstd1 => "zstd-1",
            Codec::Zstd3 => "zstd-3",
            Codec::Zstd9 => "zstd-9",
        }
    }

    /// The codec whose [`Codec::name`] is `name`.
    pub fn from_name(name: &str) -> Option<Codec> {
        Codec::ALL.into_iter().find(|c| c.name() == name)
    }

    fn tag(self) -> u8 {
        match self {
            Codec::None => 0,
            Codec::Lz4 => 1,
            Codec::Zstd1 => 2,
            Codec::Zstd3 => 3,
            Codec::Zstd9 => 4,
        }
    }

    fn from_tag(tag: u8) -> Result<Self, CodecError> {
        Codec::ALL
            .into_iter()
            .find(|c| c.tag() == tag)
            .ok_or(CodecError::UnknownTag(tag))
    }

    /// Compresses `input` (payload only, no header).
    pub fn compress(self, input: &[u8]) -> Vec<u8> {
        match self {
            Codec::None => input.to_vec(),
            Codec::Lz4 => lz4_flex::block::compress(input),
            Codec::Zstd1 => zstd(input, 1),
            Codec::Zstd3 => zstd(input, 3),
            Codec::Zstd9 => zstd(input, 9),
        }
    }

    /// Decompresses a payload that must expand to exactly `len` bytes (every
    /// Zstandard level decodes alike: a frame of any level passes as any).
    pub fn decompress(self, payload: &[u8], len: usize) -> Result<Vec<u8>, CodecError> {
        let corrupt = CodecError::Corrupt { codec: self };
        let out = match self {
            Codec::None => payload.to_vec(),
            Codec::Lz4 => lz4_flex::block::decompress(payload, len).map_err(|_| corrupt.clone())?,
            Codec::Zstd1 | Codec::Zstd3 | Codec::Zstd9 => {
                // The decoder writes into the spare capacity only: the output
                // is bounded by `len`.
                let mut out = Vec::with_capacity(len);
                structured_zstd::decoding::FrameDecoder::new()
                    .decode_all_to_vec(payload, &mut out)
                    .map_err(|_| corrupt.clone())?;
                out
            }
        };
        if out.len() == len {
            Ok(out)
        } else {
            Err(corrupt)
        }
    }
}

/// A Zstandard frame of `input` at `level`.
fn zstd(input: &[u8], level: i32) -> Vec<u8> {
    structured_zstd::encoding::compress_to_vec(
        input,
        structured_zstd::encoding::CompressionLevel::from_level(level),
    )
}

/// Frame layout: 1 tag byte, u32 little-endian uncompressed length, payload.
const HEADER: usize = 5;

/// Compresses `input` with `codec` into a self-describing frame.
pub fn encode_frame(codec: Codec, input: &[u8]) -> Vec<u8> {
    let payload = codec.compress(input);
    let mut out = Vec::with_capacity(HEADER + payload.len());
    out.push(codec.tag());
    out.extend_from_slice(&(input.len() as u32).to_le_bytes());
    out.extend_from_slice(&payload);
    out
}

/// Decodes a frame made by [`encode_frame`], refusing sizes over `limit`.
pub fn decode_frame(frame: &[u8], limit: usize) -> Result<Vec<u8>, CodecError> {
    if frame.len() < HEADER {
        return Err(CodecError::Truncated(frame.len()));
    }
    let codec = Codec::from_tag(frame[0])?;
    let len = u32::from_le_bytes([frame[1], frame[2], frame[3], frame[4]]) as usize;
    if len > limit {
        return Err(CodecError::TooLarge {
            declared: len,
            limit,
        });
    }
    codec.decompress(&frame[HEADER..], len)
}

/// Running estimate of one codec's ratio and speed on recent data.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Estimate {
    /// θ = uncompressed / compressed bytes.
    pub ratio: f64,
    /// V_c = uncompressed bytes compressed per second.
    pub speed: f64,
}

/// What the selector wants done with the next chunk.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Choice {
    /// Compress the chunk with this codec and send it.
    Use(Codec),
    /// Measurement round: compress the chunk with every codec of
    /// [`CodecSelector::probe_set`], [`CodecSelector::record`] each, then send the
    /// output of [`CodecSelector::best`]. Every estimate is updated on the same chunk,
    /// so codecs are compared on equal data, not on whatever chunks each happened to
    /// get (data varies far more between chunks than codecs differ on one).
    Probe,
}

/// Picks the codec maximising `min(V_c, B × θ)` from online estimates.
#[derive(Clone, Debug)]
pub struct CodecSelector {
    candidates: Vec<Codec>,
    estimates: Vec<Option<Estimate>>,
    alpha: f64,
    reprobe_every: u64,
    chunks: u64,
    probes: u64,
}

/// Every this many probe rounds, a probe measures every codec, even those too slow to
/// win at the moment (their speed may have changed with the data).
pub const FULL_PROBE_EVERY: u64 = 4;

impl CodecSelector {
    /// Selector over `candidates`; estimates are EWMAs with weight `alpha` on the newest
    /// measurement; chunks 1, 2, 4, … below `reprobe_every` and then every
    /// `reprobe_every`-th chunk (at least every 2nd) are probe rounds.
    pub fn new(candidates: &[Codec], alpha: f64, reprobe_every: u64) -> Self {
        CodecSelector {
            candidates: candidates.to_vec(),
            estimates: alloc::vec![None; candidates.len()],
            alpha,
            reprobe_every: reprobe_every.max(2),
            chunks: 0,
            probes: 0,
        }
    }

    /// The codecs a probe round should measure at bandwidth `bw`: every unmeasured one,
    /// every one whose measured speed alone exceeds the current best rate (a codec's
    /// rate `min(V_c, B·θ)` never exceeds V_c, so no other can win), and on every
    /// [`FULL_PROBE_EVERY`]-th probe round all of them. "None" needs no measurement.
    pub fn probe_set(&self, bw: f64) -> Vec<Codec> {
        let full = self.probes % FULL_PROBE_EVERY == 1;
        let best_rate = self.effective_rate(self.best(bw), bw).unwrap_or(0.0);
        self.candidates
            .iter()
            .zip(&self.estimates)
            .filter(|(c, _)| **c != Codec::None)
            .filter(|(_, e)| full || e.is_none_or(|e| e.speed >= best_rate))
            .map(|(c, _)| *c)
            .collect()
    }

    /// The codecs this selector chooses among.
    pub fn candidates(&self) -> &[Codec] {
        &self.candidates
    }

    /// Effective rate (uncompressed bytes/s) of `codec` at bandwidth `bw` bytes/s, if
    /// measured. "None" needs no measurement: its rate is the bandwidth.
    pub fn effective_rate(&self, codec: Codec, bw: f64) -> Option<f64> {
        if codec == Codec::None {
            return self.candidates.contains(&codec).then_some(bw);
        }
        self.estimate(codec).map(|e| e.speed.min(bw * e.ratio))
    }

    /// The current estimate for `codec`.
    pub fn estimate(&self, codec: Codec) -> Option<Estimate> {
        let i = self.candidates.iter().position(|c| *c == codec)?;
        self.estimates[i]
    }

    /// Best codec by current estimates (None when nothing is measured yet).
    pub fn best(&self, bw: f64) -> Codec {
        self.candidates
            .iter()
            .copied()
            .filter_map(|c| self.effective_rate(c, bw).map(|r| (c, r)))
            .max_by(|a, b| a.1.total_cmp(&b.1))
            .map(|(c, _)| c)
            .unwrap_or(Codec::None)
    }

    /// What to do with the next chunk at predicted bandwidth `bw` bytes/s.
    pub fn choose(&mut self, bw: f64) -> Choice {
        self.chunks += 1;
        let unmeasured = self
            .candidates
            .iter()
            .zip(&self.estimates)
            .any(|(c, e)| *c != Codec::None && e.is_none());
        // Early estimates are the least certain (the first one is also cold: buffers
        // allocated, pages faulted), so probe on chunks 1, 2, 4, … before settling on
        // every `reprobe_every`-th chunk.
        let early = self.chunks < self.reprobe_every && self.chunks.is_power_of_two();
        if unmeasured || early || self.chunks.is_multiple_of(self.reprobe_every) {
            self.probes += 1;
            Choice::Probe
        } else {
            Choice::Use(self.best(bw))
        }
    }

    /// Records that `codec` turned `input` bytes into `output` bytes in `seconds`
    /// during a probe round. Measurements with zero sizes or non-positive time, and
    /// codecs not among the candidates, are ignored.
    pub fn record(&mut self, codec: Codec, input: usize, output: usize, seconds: f64) {
        let Some(i) = self.candidates.iter().position(|c| *c == codec) else {
            return;
        };
        if input == 0 || output == 0 || !(seconds > 0.0 && seconds.is_finite()) {
            return;
        }
        let ratio = input as f64 / output as f64;
        let speed = input as f64 / seconds;
        let a = self.alpha;
        self.estimates[i] = Some(match self.estimates[i] {
            None => Estimate { ratio, speed },
            Some(e) => Estimate {
                ratio: e.ratio + a * (ratio - e.ratio),
                speed: e.speed + a * (speed - e.speed),
            },
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample_data() -> Vec<u8> {
        // Half text-like repetition, half pseudo-random bytes.
        let mut v: Vec<u8> = b"tern sync delta page "
            .iter()
            .cycle()
            .take(40_000)
            .copied()
            .collect();
        let mut s: u32 = 7;
        for _ in 0..40_000 {
            s = s.wrapping_mul(1_103_515_245).wrapping_add(12_345);
            v.push((s >> 16) as u8);
        }
        v
    }

    #[test]
    fn every_codec_round_trips() {
        let data = sample_data();
        for c in Codec::ALL {
            let f = encode_frame(c, &data);
            assert_eq!(decode_frame(&f, data.len()).unwrap(), data, "{}", c.name());
            let empty = encode_frame(c, &[]);
            assert_eq!(decode_frame(&empty, 0).unwrap(), Vec::<u8>::new());
        }
        assert!(encode_frame(Codec::Lz4, &data).len() < data.len());
        assert!(encode_frame(Codec::Zstd1, &data).len() < data.len());
    }

    #[test]
    fn codecs_are_found_by_their_names() {
        for c in Codec::ALL {
            assert_eq!(Codec::from_name(c.name()), Some(c));
        }
        assert_eq!(Codec::from_name("gzip"), None);
    }

    #[test]
    fn bad_frames_are_rejected() {
        assert_eq!(decode_frame(&[1, 2], 10), Err(CodecError::Truncated(2)));
        assert_eq!(
            decode_frame(&[9, 0, 0, 0, 0], 10),
            Err(CodecError::UnknownTag(9))
        );
        let f = encode_frame(Codec::Lz4, &sample_data());
        assert!(matches!(
            decode_frame(&f, 10),
            Err(CodecError::TooLarge { .. })
        ));
        let mut bad = f.clone();
        bad.truncate(f.len() / 2);
        assert!(matches!(
            decode_frame(&bad, 1 << 20),
            Err(CodecError::Corrupt { .. })
        ));
    }

    /// The selector tests' candidates: one Zstandard level is enough to
    /// follow the arithmetic.
    const ONE_ZSTD: [Codec; 3] = [Codec::None, Codec::Lz4, Codec::Zstd1];

    #[test]
    fn higher_zstd_levels_compress_this_data_at_least_as_densely() {
        let data = sample_data();
        let sizes: Vec<usize> = [Codec::Zstd1, Codec::Zstd3, Codec::Zstd9]
            .iter()
            .map(|c| c.compress(&data).len())
            .collect();
        assert!(sizes[0] >= sizes[1] && sizes[1] >= sizes[2], "{sizes:?}");
        // One decoder for every level.
        for c in [Codec::Zstd3, Codec::Zstd9] {
            assert_eq!(
                Codec::Zstd1
                    .decompress(&c.compress(&data), data.len())
                    .unwrap(),
                data
            );
        }
    }

    #[test]
    fn choice_follows_known_speeds_and_ratios() {
        let mut s = CodecSelector::new(&ONE_ZSTD, 1.0, 1000);
        // Nothing measured: a probe round first.
        assert_eq!(s.choose(1e6), Choice::Probe);
        s.record(Codec::Lz4, 1000, 500, 1000.0 / 400e6); // θ = 2, V_c = 400 MB/s
        s.record(Codec::Zstd1, 1000, 250, 1000.0 / 100e6); // θ = 4, V_c = 100 MB/s
                                                           // Chunk 2 is an early probe round.
        assert_eq!(s.choose(10e6), Choice::Probe);
        // 10 MB/s link: none 10, lz4 min(400, 20) = 20, zstd min(100, 40) = 40 → zstd.
        assert_eq!(s.choose(10e6), Choice::Use(Codec::Zstd1));
        assert_eq!(s.choose(10e6), Choice::Probe); // chunk 4
                                                   // 60 MB/s: lz4 min(400, 120) = 120, zstd min(100, 240) = 100 → lz4.
        assert_eq!(s.choose(60e6), Choice::Use(Codec::Lz4));
        // 1 GB/s: none 1000 beats lz4 400 and zstd 100.
        assert_eq!(s.choose(1e9), Choice::Use(Codec::None));
        // Without "none" among the candidates it is never chosen.
        let mut only = CodecSelector::new(&[Codec::Lz4], 1.0, 1000);
        only.choose(1e9);
        only.record(Codec::Lz4, 1000, 500, 1e-6);
        only.choose(1e9);
        assert_eq!(only.choose(1e9), Choice::Use(Codec::Lz4));
    }

    #[test]
    fn probe_rounds_recur_and_estimates_follow_the_data() {
        let mut s = CodecSelector::new(&ONE_ZSTD, 0.5, 4);
        assert_eq!(s.choose(1e6), Choice::Probe);
        s.record(Codec::Lz4, 1000, 500, 1e-5);
        s.record(Codec::Zstd1, 1000, 250, 1e-5);
        // Chunks 2..=9: 2 (early), 4 and 8 (every 4th).
        let probes = (0..8).filter(|_| s.choose(10e6) == Choice::Probe).count();
        assert_eq!(probes, 3);
        // Incompressible data arrives: ratios fall towards 1 and "none" takes over.
        for _ in 0..20 {
            s.record(Codec::Lz4, 1000, 1004, 1e-5);
            s.record(Codec::Zstd1, 1000, 1010, 1e-5);
        }
        assert_eq!(s.best(10e6), Codec::None);
    }

    #[test]
    fn probes_skip_codecs_too_slow_to_win_except_in_full_rounds() {
        let mut s = CodecSelector::new(&ONE_ZSTD, 1.0, 2);
        // First probe round (full): both compressing codecs.
        assert_eq!(s.choose(100e6), Choice::Probe);
        assert_eq!(s.probe_set(100e6), [Codec::Lz4, Codec::Zstd1]);
        s.record(Codec::Lz4, 1000, 500, 1000.0 / 400e6); // rate at 100 MB/s: 200
        s.record(Codec::Zstd1, 1000, 400, 1000.0 / 30e6); // V_c 30 < 200
        let mut sets = Vec::new();
        for _ in 0..16 {
            if s.choose(100e6) == Choice::Probe {
                sets.push(s.probe_set(100e6));
            }
        }
        assert_eq!(sets.len(), 8);
        // Rounds 2, 3, 4 skip zstd; round 5 is full again.
        assert_eq!(sets[0], [Codec::Lz4]);
        assert_eq!(sets[2], [Codec::Lz4]);
        assert_eq!(sets[3], [Codec::Lz4, Codec::Zstd1]);
        // On a slow link zstd can win, so it is always probed.
        assert_eq!(s.probe_set(1e6), [Codec::Lz4, Codec::Zstd1]);
    }
}
