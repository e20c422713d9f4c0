//! The online selector that picks a codec (`tern-codec`) per transfer chunk.
//!
//! BP-ACM (paper §2.2) picks LZ4 above 60 MB/s and a Zstd level below from a fixed
//! table of per-level ratio θ and speed V_c. We keep its objective — maximise the
//! effective rate `min(V_c, B × θ)` in uncompressed bytes per second, which is the rate
//! of a pipeline that compresses chunk k+1 while chunk k is on the wire — but measure θ
//! and V_c online on the data actually sent, include "no compression", and re-probe
//! every codec periodically so the estimates follow the data.
//!
//! The codecs themselves (none, LZ4, Zstandard levels 1, 3 and 9) are in `tern-codec`;
//! with three Zstandard levels the selector trades speed for ratio within Zstd too.

use alloc::vec::Vec;

use tern_codec::Codec;

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

    /// The selector tests' candidates: one Zstandard level is enough to
    /// follow the arithmetic.
    const ONE_ZSTD: [Codec; 3] = [Codec::None, Codec::Lz4, Codec::Zstd1];

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
