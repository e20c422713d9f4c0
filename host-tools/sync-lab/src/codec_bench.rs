//! `codec`: time, ratio and bytes of every codec on a file at a given bandwidth, and
//! what the online selector does with the same data.
//!
//! Each codec runs as a real two-thread pipeline: one thread compresses chunk k+1 while
//! the other "sends" chunk k by sleeping for its size over the bandwidth (a shaped link
//! without a network). The model time from [`pipelined_time`] is printed beside it.

use std::collections::BTreeMap;
use std::sync::mpsc::sync_channel;
use std::time::{Duration, Instant};

use anyhow::{anyhow, ensure, Result};
use serde::Serialize;
use tern_codec::{decode_frame, encode_frame, Codec};
use tern_sync::codec::{Choice, CodecSelector};
use tern_sync::pipeline::{pipelined_time, Pipeline};

/// One codec (or the adaptive selector) on the data.
#[derive(Clone, Debug, Serialize)]
pub struct Row {
    /// Codec name, or "adaptive".
    pub name: String,
    /// Total compression CPU time, seconds.
    pub compress_s: f64,
    /// Uncompressed / compressed bytes.
    pub ratio: f64,
    /// Bytes put on the wire (frames, headers included).
    pub bytes: usize,
    /// Model time if compression and sending were serial, seconds.
    pub serial_s: f64,
    /// Model time with compression overlapped with sending, seconds.
    pub pipelined_s: f64,
    /// Measured wall time of the two-thread pipeline, seconds.
    pub measured_s: f64,
    /// For "adaptive": chunks per codec, and probe rounds.
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub picks: BTreeMap<String, usize>,
}

/// The whole report.
#[derive(Clone, Debug, Serialize)]
pub struct Report {
    /// Link bandwidth, MB/s.
    pub bandwidth_mbs: f64,
    /// Input size, bytes.
    pub data_bytes: usize,
    /// Chunk size, bytes.
    pub chunk_bytes: usize,
    /// One row per fixed codec, then "adaptive".
    pub codecs: Vec<Row>,
    /// The codec the selector converged to (most used outside probe rounds).
    pub selected: String,
}

/// Runs `pick` on every chunk in a compressor thread, and sleeps `frame/bw` per frame in
/// a sender thread; returns (per-chunk compress s, per-chunk frames, wall time s).
fn run_pipeline(
    data: &[u8],
    chunk: usize,
    bw: f64,
    mut pick: impl FnMut(usize, &[u8]) -> (Vec<u8>, f64) + Send,
) -> Result<(Vec<f64>, Vec<Vec<u8>>, f64)> {
    let plan = Pipeline::new(data.len(), chunk, 1);
    let (tx, rx) = sync_channel::<Vec<u8>>(1);
    let start = Instant::now();
    let (times, frames) = std::thread::scope(|s| -> Result<_> {
        let sender = s.spawn(move || {
            let mut frames = Vec::new();
            while let Ok(f) = rx.recv() {
                std::thread::sleep(Duration::from_secs_f64(f.len() as f64 / bw));
                frames.push(f);
            }
            frames
        });
        let mut times = Vec::with_capacity(plan.chunks());
        for i in 0..plan.chunks() {
            let (frame, secs) = pick(i, &data[plan.range(i)]);
            times.push(secs);
            tx.send(frame)
                .map_err(|_| anyhow!("sender thread stopped"))?;
        }
        drop(tx);
        let frames = sender
            .join()
            .map_err(|_| anyhow!("sender thread panicked"))?;
        Ok((times, frames))
    })?;
    let wall = start.elapsed().as_secs_f64();
    // Every frame must decode back to its chunk.
    for (i, f) in frames.iter().enumerate() {
        let r = plan.range(i);
        ensure!(
            decode_frame(f, r.len())? == data[r],
            "chunk {i} did not round-trip"
        );
    }
    Ok((times, frames, wall))
}

fn timed(codec: Codec, chunk: &[u8]) -> (Vec<u8>, f64) {
    let t = Instant::now();
    let f = encode_frame(codec, chunk);
    (f, t.elapsed().as_secs_f64())
}

fn row(name: &str, data_len: usize, bw: f64, times: &[f64], frames: &[Vec<u8>], wall: f64) -> Row {
    let bytes: usize = frames.iter().map(Vec::len).sum();
    let send: Vec<f64> = frames.iter().map(|f| f.len() as f64 / bw).collect();
    let compress_s: f64 = times.iter().sum();
    Row {
        name: name.to_string(),
        compress_s,
        ratio: data_len as f64 / bytes.max(1) as f64,
        bytes,
        serial_s: compress_s + send.iter().sum::<f64>(),
        pipelined_s: pipelined_time(times, &send),
        measured_s: wall,
        picks: BTreeMap::new(),
    }
}

/// Benchmarks every codec and the adaptive selector on `data` at `bandwidth_mbs` MB/s.
pub fn run(data: &[u8], bandwidth_mbs: f64, chunk: usize) -> Result<Report> {
    ensure!(
        bandwidth_mbs > 0.0 && bandwidth_mbs.is_finite(),
        "bandwidth must be positive"
    );
    ensure!(chunk > 0, "chunk size must be positive");
    let bw = bandwidth_mbs * 1e6;
    let mut rows = Vec::new();
    for c in Codec::ALL {
        let (times, frames, wall) = run_pipeline(data, chunk, bw, |_, d| timed(c, d))?;
        rows.push(row(c.name(), data.len(), bw, &times, &frames, wall));
    }
    let mut sel = CodecSelector::new(&Codec::ADAPTIVE, 0.3, 8);
    let mut picks: BTreeMap<String, usize> = BTreeMap::new();
    let mut exploit: BTreeMap<String, usize> = BTreeMap::new();
    let (times, frames, wall) = run_pipeline(data, chunk, bw, |_, d| match sel.choose(bw) {
        Choice::Use(c) => {
            *picks.entry(c.name().to_string()).or_default() += 1;
            *exploit.entry(c.name().to_string()).or_default() += 1;
            timed(c, d)
        }
        Choice::Probe => {
            // Compress with every codec (all of it is CPU time this chunk costs),
            // record, then send what the fresh estimates call best.
            let mut spent = 0.0;
            let mut outs = Vec::new();
            for c in sel.probe_set(bw) {
                let (f, secs) = timed(c, d);
                sel.record(c, d.len(), f.len(), secs);
                spent += secs;
                outs.push((c, f));
            }
            let best = sel.best(bw);
            *picks.entry("probe".to_string()).or_default() += 1;
            let frame = outs
                .into_iter()
                .find(|(c, _)| *c == best)
                .map(|(_, f)| f)
                .unwrap_or_else(|| encode_frame(Codec::None, d));
            (frame, spent)
        }
    })?;
    let mut adaptive = row("adaptive", data.len(), bw, &times, &frames, wall);
    adaptive.picks = picks;
    rows.push(adaptive);
    let selected = exploit
        .into_iter()
        .max_by_key(|(_, n)| *n)
        .map(|(c, _)| c)
        .unwrap_or_else(|| sel.best(bw).name().to_string());
    Ok(Report {
        bandwidth_mbs,
        data_bytes: data.len(),
        chunk_bytes: chunk,
        codecs: rows,
        selected,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn report_covers_every_codec_and_round_trips() {
        let data: Vec<u8> = b"abcabcabd".iter().cycle().take(200_000).copied().collect();
        let r = run(&data, 1000.0, 16 * 1024).unwrap();
        assert_eq!(r.codecs.len(), Codec::ALL.len() + 1);
        let none = &r.codecs[0];
        assert!((none.ratio - 1.0).abs() < 0.01);
        assert!(r.codecs[1].ratio > 5.0);
        let adaptive = r.codecs.last().unwrap();
        assert_eq!(adaptive.picks.values().sum::<usize>(), 13);
        for row in &r.codecs {
            assert!(row.pipelined_s <= row.serial_s + 1e-12);
        }
    }
}
