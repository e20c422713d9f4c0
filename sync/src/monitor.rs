//! Link monitor: bandwidth from completed transfers, latency from heartbeats, outage
//! detection by lease expiry, and the outage-rate estimate the sync policies need;
//! and a throughput meter for a transfer still in flight.

use alloc::boxed::Box;

use crate::predict::{Adaptive, AdaptiveConfig, Predictor};

/// Errors for measurements the monitor cannot use.
#[derive(Clone, Copy, Debug, PartialEq, thiserror::Error)]
pub enum MonitorError {
    /// A transfer or heartbeat with a non-positive or non-finite duration.
    #[error("measurement duration must be positive and finite, got {0} s")]
    BadDuration(f64),
    /// A timestamp earlier than one already seen.
    #[error("time went backwards: {now} s after {last} s")]
    TimeWentBackwards {
        /// The offending timestamp.
        now: f64,
        /// The latest timestamp seen before it.
        last: f64,
    },
}

/// Whether the peer is currently reachable.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LinkState {
    /// A heartbeat was acknowledged within the lease.
    Up,
    /// No acknowledgement for longer than the lease.
    Down,
}

/// Monitor tuning.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct MonitorConfig {
    /// Seconds without a heartbeat acknowledgement after which the link counts as down.
    pub lease_s: f64,
    /// Weight of the newest round-trip time in the latency EWMA.
    pub latency_alpha: f64,
    /// Prior of the outage-rate estimate (see [`OutagePrior`]).
    pub outage_prior: OutagePrior,
}

/// The prior on the outage rate λ, a mixture: with probability `outage_free` the link
/// never fails (λ = 0); otherwise λ follows a Gamma(shape = `outages`, rate = `seconds`)
/// distribution, as if `outages` outages had been seen in `seconds` of up time.
///
/// After `k` outages in `t` seconds of up time the posterior mean is
/// `(k + outages) / (t + seconds)` once an outage has been seen (k > 0 rules the
/// outage-free case out), and before that the same Gamma term times the posterior
/// probability that the link fails at all,
/// `P = (1 − p₀)·q / (p₀ + (1 − p₀)·q)` with `q = (seconds / (seconds + t))^outages`.
/// So on a link without outages λ falls like 1/t^(1+outages) rather than the Gamma's
/// 1/t: the estimate stays cautious while evidence is short and comes down to nearly
/// nothing once it is long, and the first outage restores the plain Gamma estimate.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct OutagePrior {
    /// Prior probability p₀ ∈ [0, 1) that the link has no outages at all.
    pub outage_free: f64,
    /// Pseudo-outages (the Gamma shape), > 0.
    pub outages: f64,
    /// Pseudo-seconds of up time (the Gamma rate), > 0.
    pub seconds: f64,
}

impl OutagePrior {
    /// Posterior mean of λ (per second of up time) after `outages` outages in
    /// `up_time_s` seconds of up time.
    pub fn rate(&self, outages: u32, up_time_s: f64) -> f64 {
        let t = up_time_s.max(0.0);
        let gamma = (outages as f64 + self.outages) / (t + self.seconds);
        if outages > 0 || self.outage_free <= 0.0 {
            return gamma;
        }
        let q = libm::pow(self.seconds / (self.seconds + t), self.outages);
        let p0 = self.outage_free.min(1.0);
        let fails = (1.0 - p0) * q / (p0 + (1.0 - p0) * q);
        fails * gamma
    }
}

/// What the kernel assumes of a link it knows nothing about: as likely to never fail
/// as to fail (p₀ = ½), and if it fails, about once an hour (one pseudo-outage in
/// 3600 s, so the first real outage weighs as much as the prior). Set from the
/// requirement that an outage-free link be recognised as one, not fitted to data
/// (docs/sync.md §1).
impl Default for OutagePrior {
    fn default() -> Self {
        OutagePrior {
            outage_free: 0.5,
            outages: 1.0,
            seconds: 3600.0,
        }
    }
}

impl Default for MonitorConfig {
    fn default() -> Self {
        MonitorConfig {
            lease_s: 3.0,
            latency_alpha: 0.2,
            outage_prior: OutagePrior::default(),
        }
    }
}

/// Tracks one link. All times are seconds on the caller's monotonic clock.
pub struct LinkMonitor {
    cfg: MonitorConfig,
    predictor: Box<dyn Predictor>,
    last_bandwidth: Option<f64>,
    rtt: Option<f64>,
    last_ack: f64,
    last_time: f64,
    state: LinkState,
    up_time: f64,
    outages: u32,
}

impl LinkMonitor {
    /// A monitor whose link is up at `now` (the session has just been established),
    /// forecasting with the adaptive predictor at a one-sample horizon.
    pub fn new(cfg: MonitorConfig, now: f64) -> Self {
        Self::with_predictor(
            cfg,
            now,
            Box::new(Adaptive::new(AdaptiveConfig::default(), 1)),
        )
    }

    /// Like [`LinkMonitor::new`] with a chosen bandwidth predictor.
    pub fn with_predictor(cfg: MonitorConfig, now: f64, predictor: Box<dyn Predictor>) -> Self {
        LinkMonitor {
            cfg,
            predictor,
            last_bandwidth: None,
            rtt: None,
            last_ack: now,
            last_time: now,
            state: LinkState::Up,
            up_time: 0.0,
            outages: 0,
        }
    }

    fn advance(&mut self, now: f64) -> Result<(), MonitorError> {
        if !now.is_finite() || now < self.last_time {
            return Err(MonitorError::TimeWentBackwards {
                now,
                last: self.last_time,
            });
        }
        if self.state == LinkState::Up {
            self.up_time += now - self.last_time;
        }
        self.last_time = now;
        Ok(())
    }

    /// Records a completed transfer of `bytes` that took `seconds`, ending at `now`; its
    /// throughput (bytes/s) is one bandwidth sample.
    pub fn record_transfer(
        &mut self,
        now: f64,
        bytes: u64,
        seconds: f64,
    ) -> Result<(), MonitorError> {
        if !(seconds.is_finite() && seconds > 0.0) {
            return Err(MonitorError::BadDuration(seconds));
        }
        self.heard_from_peer(now)?;
        let bw = bytes as f64 / seconds;
        self.last_bandwidth = Some(bw);
        self.predictor.observe(bw);
        Ok(())
    }

    /// Records a heartbeat acknowledged at `now` with round-trip time `rtt_s`.
    pub fn record_heartbeat(&mut self, now: f64, rtt_s: f64) -> Result<(), MonitorError> {
        if !(rtt_s.is_finite() && rtt_s > 0.0) {
            return Err(MonitorError::BadDuration(rtt_s));
        }
        self.heard_from_peer(now)?;
        self.rtt = Some(match self.rtt {
            None => rtt_s,
            Some(r) => r + self.cfg.latency_alpha * (rtt_s - r),
        });
        Ok(())
    }

    /// Records any other message from the peer at `now` (a chunk request, an
    /// acknowledgement, a handshake): proof the link is up, without a sample.
    pub fn record_contact(&mut self, now: f64) -> Result<(), MonitorError> {
        self.heard_from_peer(now)
    }

    fn heard_from_peer(&mut self, now: f64) -> Result<(), MonitorError> {
        self.poll(now)?;
        self.last_ack = now;
        self.state = LinkState::Up;
        Ok(())
    }

    /// Updates the link state at `now`: down once the lease has expired. Each Up → Down
    /// transition counts one outage.
    pub fn poll(&mut self, now: f64) -> Result<LinkState, MonitorError> {
        self.advance(now)?;
        if self.state == LinkState::Up && now - self.last_ack > self.cfg.lease_s {
            self.state = LinkState::Down;
            self.outages += 1;
        }
        Ok(self.state)
    }

    /// Current link state as of the last call.
    pub fn state(&self) -> LinkState {
        self.state
    }

    /// Most recent bandwidth sample in bytes/s.
    pub fn last_bandwidth(&self) -> Option<f64> {
        self.last_bandwidth
    }

    /// Forecast mean bandwidth (bytes/s) over the next `horizon` samples.
    pub fn predicted_bandwidth(&mut self, horizon: usize) -> Option<f64> {
        self.predictor.predict(horizon)
    }

    /// Smoothed round-trip time in seconds.
    pub fn rtt(&self) -> Option<f64> {
        self.rtt
    }

    /// Outages detected so far.
    pub fn outages(&self) -> u32 {
        self.outages
    }

    /// Seconds the link has been up since the monitor started.
    pub fn up_time(&self) -> f64 {
        self.up_time
    }

    /// Outage rate λ (per second of up time): the posterior mean under the configured
    /// [`OutagePrior`]. It is > 0 before the first outage and follows the evidence as
    /// outages (or up time without them) accumulate.
    pub fn outage_rate(&self) -> f64 {
        self.cfg.outage_prior.rate(self.outages, self.up_time)
    }
}

/// Throughput of one transfer while it is still in flight, from the bytes the peer has
/// acknowledged so far (a TCP sender knows them: bytes written minus its send queue).
///
/// A window counts only while the sender keeps the link busy (`backlogged`): when the
/// send queue runs dry the sender, not the link, sets the pace, and that window says
/// nothing about the bandwidth. Samples of at least `window_s` seconds are smoothed by
/// an EWMA. A codec choice made from this estimate follows the link it is sending on
/// from the first hundred milliseconds, without a history of earlier transfers; while
/// the sender sets the pace there is no link rate to trade compression against, and
/// [`ThroughputMeter::rate`] says so.
#[derive(Clone, Debug, PartialEq)]
pub struct ThroughputMeter {
    window_s: f64,
    alpha: f64,
    /// Start of the current window: time and acknowledged bytes.
    start: Option<(f64, u64)>,
    rate: Option<f64>,
}

impl ThroughputMeter {
    /// A meter taking samples over windows of at least `window_s` seconds, smoothed
    /// with weight `alpha` on the newest.
    pub fn new(window_s: f64, alpha: f64) -> Self {
        Self {
            window_s,
            alpha,
            start: None,
            rate: None,
        }
    }

    /// Records that `acked` bytes in all have been acknowledged at `now`, and whether
    /// bytes were waiting for the link at that moment.
    pub fn observe(&mut self, now: f64, acked: u64, backlogged: bool) {
        if !backlogged || !now.is_finite() {
            self.start = None;
            return;
        }
        match self.start {
            Some((t0, a0)) if now < t0 || acked < a0 => self.start = Some((now, acked)),
            Some((t0, a0)) if now - t0 >= self.window_s => {
                let sample = (acked - a0) as f64 / (now - t0);
                self.rate = Some(match self.rate {
                    None => sample,
                    Some(r) => r + self.alpha * (sample - r),
                });
                self.start = Some((now, acked));
            }
            Some(_) => {}
            None => self.start = Some((now, acked)),
        }
    }

    /// Smoothed throughput in bytes/s, once one full backlogged window has passed
    /// and while the link is still the bottleneck (the last observation was
    /// backlogged); `None` while the sender sets the pace.
    pub fn rate(&self) -> Option<f64> {
        self.rate.filter(|_| self.start.is_some())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn any_contact_renews_the_lease() {
        let mut m = LinkMonitor::new(MonitorConfig::default(), 0.0);
        m.record_contact(2.5).unwrap();
        assert_eq!(m.poll(5.0).unwrap(), LinkState::Up);
        assert_eq!(m.poll(5.6).unwrap(), LinkState::Down);
        m.record_contact(6.0).unwrap();
        assert_eq!(m.state(), LinkState::Up);
        assert_eq!(m.outages(), 1);
    }

    #[test]
    fn bandwidth_and_latency_are_measured() {
        let mut m = LinkMonitor::new(MonitorConfig::default(), 0.0);
        m.record_transfer(1.0, 1_000_000, 0.5).unwrap();
        assert_eq!(m.last_bandwidth(), Some(2_000_000.0));
        m.record_heartbeat(1.5, 0.04).unwrap();
        m.record_heartbeat(2.0, 0.08).unwrap();
        assert!((m.rtt().unwrap() - 0.048).abs() < 1e-12);
        assert!(m.predicted_bandwidth(1).unwrap() > 0.0);
    }

    #[test]
    fn outage_is_detected_after_the_lease_and_counted_once() {
        let cfg = MonitorConfig {
            lease_s: 3.0,
            ..MonitorConfig::default()
        };
        let mut m = LinkMonitor::new(cfg, 0.0);
        m.record_heartbeat(1.0, 0.01).unwrap();
        assert_eq!(m.poll(3.9).unwrap(), LinkState::Up);
        assert_eq!(m.poll(4.1).unwrap(), LinkState::Down);
        assert_eq!(m.poll(10.0).unwrap(), LinkState::Down);
        assert_eq!(m.outages(), 1);
        m.record_heartbeat(12.0, 0.01).unwrap();
        assert_eq!(m.state(), LinkState::Up);
        // Up time: 0 → 4.1 and 12 → 12.
        assert_eq!(m.up_time(), 4.1);
        let prior = MonitorConfig::default().outage_prior;
        assert_eq!(m.outage_rate(), prior.rate(1, 4.1));
    }

    #[test]
    fn the_outage_rate_follows_the_evidence() {
        let p = OutagePrior {
            outage_free: 0.5,
            outages: 1.0,
            seconds: 3600.0,
        };
        // Before any up time: half the Gamma prior's mean.
        assert!((p.rate(0, 0.0) - 0.5 / 3600.0).abs() < 1e-15);
        // An hour up without an outage: q = 1/2, so P(the link fails) = 0.25/0.75
        // and λ = (1/3) · 1/7200.
        assert!((p.rate(0, 3600.0) - 1.0 / 21600.0).abs() < 1e-15);
        // Falling like 1/t² (the Gamma alone falls like 1/t) ...
        let gamma = OutagePrior {
            outage_free: 0.0,
            ..p
        };
        assert!(p.rate(0, 360_000.0) < gamma.rate(0, 360_000.0) / 90.0);
        // ... until the first outage, which rules out a link that never fails.
        assert_eq!(p.rate(1, 360_000.0), gamma.rate(1, 360_000.0));
        assert_eq!(p.rate(3, 7200.0), 4.0 / 10800.0);
    }

    #[test]
    fn bad_input_is_rejected() {
        let mut m = LinkMonitor::new(MonitorConfig::default(), 5.0);
        assert_eq!(
            m.record_transfer(6.0, 10, 0.0),
            Err(MonitorError::BadDuration(0.0))
        );
        assert!(matches!(
            m.poll(4.0),
            Err(MonitorError::TimeWentBackwards { .. })
        ));
    }

    #[test]
    fn the_meter_measures_only_while_the_sender_keeps_the_link_busy() {
        let mut m = ThroughputMeter::new(0.1, 0.5);
        m.observe(0.0, 0, true);
        m.observe(0.05, 50_000, true);
        assert_eq!(m.rate(), None, "no full window yet");
        m.observe(0.1, 100_000, true);
        assert_eq!(m.rate(), Some(1_000_000.0));
        // The queue ran dry: the sender sets the pace, no link rate now; the
        // window restarts once the link is the bottleneck again.
        m.observe(0.3, 120_000, false);
        assert_eq!(m.rate(), None);
        m.observe(0.4, 120_000, true);
        assert_eq!(m.rate(), Some(1_000_000.0));
        m.observe(0.6, 720_000, true);
        let rate = m.rate().unwrap();
        assert!(
            (rate - 2_000_000.0).abs() < 1e-3,
            "EWMA of 1 and 3 MB/s: {rate}"
        );
    }

    #[test]
    fn the_meter_restarts_on_inconsistent_input() {
        let mut m = ThroughputMeter::new(0.1, 1.0);
        m.observe(1.0, 1000, true);
        m.observe(0.5, 2000, true);
        m.observe(0.6, 500, true);
        m.observe(f64::NAN, 600, true);
        assert_eq!(m.rate(), None);
        m.observe(1.0, 600, true);
        m.observe(1.2, 20_600, true);
        assert!((m.rate().unwrap() - 100_000.0).abs() < 1e-6);
    }
}
