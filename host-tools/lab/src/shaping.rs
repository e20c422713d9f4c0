//! A link whose rate follows a bandwidth trace: a thread that sets the lab's
//! token buckets ([`crate::netlab::Shaper`]) to each sample's throughput
//! when the sample's time comes, from the start of the trace again when it
//! ends. A sample holds until the next one (a gap in the timestamps keeps
//! the last rate: outages are the scenario's own, not the trace's).

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crate::netlab::{NetlabError, Shaper};
use crate::trace::Trace;

/// How often the thread checks whether it must stop.
const TICK: Duration = Duration::from_millis(50);

/// One step of the schedule: from `at` (since the start), `bytes_per_s`.
#[derive(Clone, Copy, Debug, PartialEq)]
struct Step {
    at: Duration,
    bytes_per_s: u64,
}

/// The schedule of one pass over `trace` with its throughput times `scale`,
/// and the pass's length (the last sample holds for the trace's median period).
fn schedule(trace: &Trace, scale: f64) -> (Vec<Step>, Duration) {
    let t0 = trace.times[0];
    let steps = trace
        .times
        .iter()
        .zip(&trace.mbps)
        .map(|(t, mbps)| Step {
            at: Duration::from_secs_f64(t - t0),
            bytes_per_s: (mbps * scale * 1e6 / 8.0).round().max(1.0) as u64,
        })
        .collect();
    let length = trace.times[trace.times.len() - 1] - t0 + trace.period();
    (steps, Duration::from_secs_f64(length))
}

/// What the shaper applied while it ran.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Applied {
    /// Samples applied (a sample applied twice, on two passes, counts twice).
    pub samples: usize,
    /// Time-weighted mean rate of the link while shaped, in Mbit/s.
    pub mean_mbps: f64,
}

/// The running shaper; [`TraceShaper::stop`] ends it and lifts the limit.
pub struct TraceShaper {
    shaper: Shaper,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<Result<Applied, NetlabError>>>,
}

impl TraceShaper {
    /// Applies the first sample at once (so a missing `tc` is an error here),
    /// then follows `trace`, scaled by `scale`, on a thread.
    pub fn start(shaper: Shaper, trace: &Trace, scale: f64) -> Result<Self, NetlabError> {
        let (steps, length) = schedule(trace, scale);
        shaper.set_rate(Some(steps[0].bytes_per_s))?;
        let stop = Arc::new(AtomicBool::new(false));
        let thread = {
            let (shaper, stop) = (shaper.clone(), stop.clone());
            std::thread::spawn(move || follow(&shaper, &steps, length, &stop))
        };
        Ok(Self {
            shaper,
            stop,
            thread: Some(thread),
        })
    }

    /// Stops following the trace, lifts the limit and tells what was applied.
    pub fn stop(mut self) -> Result<Applied, NetlabError> {
        let applied = self.join();
        self.shaper.set_rate(None)?;
        applied
    }

    fn join(&mut self) -> Result<Applied, NetlabError> {
        self.stop.store(true, Ordering::Relaxed);
        match self.thread.take().map(JoinHandle::join) {
            Some(Ok(applied)) => applied,
            Some(Err(_)) => Err(NetlabError::Io {
                what: "following the bandwidth trace".into(),
                source: std::io::Error::other("the shaping thread panicked"),
            }),
            None => Ok(Applied {
                samples: 0,
                mean_mbps: 0.0,
            }),
        }
    }
}

impl Drop for TraceShaper {
    fn drop(&mut self) {
        // Best effort: the lab's namespace goes soon after anyway.
        if self.thread.is_some() {
            let _ = self.join();
            let _ = self.shaper.set_rate(None);
        }
    }
}

/// The thread: applies each step when its time comes, pass after pass.
fn follow(
    shaper: &Shaper,
    steps: &[Step],
    length: Duration,
    stop: &AtomicBool,
) -> Result<Applied, NetlabError> {
    let start = Instant::now();
    let (mut samples, mut weighted, mut current) = (1, 0.0, steps[0].bytes_per_s);
    let mut last = start;
    let mut next = 1;
    let mut pass = Duration::ZERO;
    while !stop.load(Ordering::Relaxed) {
        let (due, rate) = match steps.get(next) {
            Some(step) => (pass + step.at, step.bytes_per_s),
            None => (pass + length, steps[0].bytes_per_s),
        };
        if start.elapsed() >= due {
            let now = Instant::now();
            weighted += current as f64 * (now - last).as_secs_f64();
            shaper.set_rate(Some(rate))?;
            (current, last, samples) = (rate, now, samples + 1);
            next += 1;
            if next > steps.len() {
                (next, pass) = (1, pass + length);
            }
        } else {
            std::thread::sleep(TICK.min(due - start.elapsed()));
        }
    }
    let now = Instant::now();
    weighted += current as f64 * (now - last).as_secs_f64();
    let shaped = (now - start).as_secs_f64().max(1e-9);
    Ok(Applied {
        samples,
        mean_mbps: weighted / shaped * 8.0 / 1e6,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;

    #[test]
    fn the_schedule_follows_the_samples_scaled() {
        let trace = Trace::parse(Path::new("bus.x.log"), "10 8\n11 16\n13 0.0000001\n").unwrap();
        let (steps, length) = schedule(&trace, 0.5);
        assert_eq!(
            steps,
            vec![
                Step {
                    at: Duration::ZERO,
                    bytes_per_s: 500_000
                },
                Step {
                    at: Duration::from_secs(1),
                    bytes_per_s: 1_000_000
                },
                // Never a zero rate: tc refuses it.
                Step {
                    at: Duration::from_secs(3),
                    bytes_per_s: 1
                },
            ]
        );
        // 3 s of samples, then the last holds for the median period (2 s).
        assert_eq!(length, Duration::from_secs(5));
    }
}
