//! How much fuel one step gets: the node measures how much fuel a
//! millisecond of interpretation burns (its board, its load) from the steps
//! it runs, and gives each step [`STEP_NS`] worth.

use core::cell::Cell;

use tern_hal::MonotonicClock;

/// How long one step should run: the run loop's turn (10 ms) holds several,
/// and a turn overshoots its deadline by at most one.
pub const STEP_NS: u64 = 2_000_000;

/// The first guess of fuel per millisecond, before any step was measured
/// (low: a slow node's first steps must not stall its run loop).
const FIRST_RATE: u64 = 5_000;

/// Steps are added up until they last this long before they update the
/// rate (one short step is mostly the clock's resolution and the call's
/// fixed cost).
const MIN_SAMPLE_NS: u64 = 200_000;

/// Fewest fuel units a step gets.
const MIN_BUDGET: u64 = 1_000;

/// The node's measured interpretation speed, shared by its Wasm tasks.
pub struct FuelGauge {
    clock: &'static dyn MonotonicClock,
    /// Fuel units per millisecond, a running average.
    per_ms: Cell<u64>,
    /// The most fuel a step gets, whatever the clock says.
    max_budget: u64,
    /// Fuel and time of the steps not yet in the rate.
    pending: Cell<(u64, u64)>,
}

impl FuelGauge {
    /// A gauge timing steps with `clock`, giving a step at most
    /// `max_budget` fuel.
    pub fn new(clock: &'static dyn MonotonicClock, max_budget: u64) -> Self {
        Self {
            clock,
            per_ms: Cell::new(FIRST_RATE),
            max_budget: max_budget.max(MIN_BUDGET),
            pending: Cell::new((0, 0)),
        }
    }

    /// Now, on the gauge's clock.
    pub fn now_ns(&self) -> u64 {
        self.clock.now_ns()
    }

    /// The fuel of one step.
    pub fn budget(&self) -> u64 {
        (self.per_ms.get().saturating_mul(STEP_NS) / 1_000_000).clamp(MIN_BUDGET, self.max_budget)
    }

    /// Fuel units per millisecond as measured so far.
    pub fn per_ms(&self) -> u64 {
        self.per_ms.get()
    }

    /// A step burnt `fuel` in `ns`: once the steps since the last update
    /// add up to [`MIN_SAMPLE_NS`], moves the rate halfway towards theirs.
    pub fn observe(&self, fuel: u64, ns: u64) {
        let (fuel, ns) = {
            let (f, t) = self.pending.get();
            (f.saturating_add(fuel), t.saturating_add(ns))
        };
        if ns < MIN_SAMPLE_NS {
            self.pending.set((fuel, ns));
            return;
        }
        self.pending.set((0, 0));
        if fuel == 0 {
            return;
        }
        let rate = u64::try_from(u128::from(fuel) * 1_000_000 / u128::from(ns)).unwrap_or(u64::MAX);
        let old = self.per_ms.get();
        self.per_ms.set((old / 2).saturating_add(rate / 2).max(1));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    struct Frozen;
    impl MonotonicClock for Frozen {
        fn now_ns(&self) -> u64 {
            0
        }
        fn counter_hz(&self) -> u64 {
            1
        }
    }

    #[test]
    fn the_budget_follows_the_measured_rate_and_ignores_short_samples() {
        let gauge = FuelGauge::new(&Frozen, 150_000);
        assert_eq!(gauge.budget(), FIRST_RATE * 2);
        // 1 million fuel in 10 ms: 100 000 per ms.
        for _ in 0..20 {
            gauge.observe(1_000_000, 10_000_000);
        }
        assert!(
            (99_000..=100_000).contains(&gauge.per_ms()),
            "{}",
            gauge.per_ms()
        );
        // The budget would be 200 000; it is capped.
        assert_eq!(gauge.budget(), 150_000);
        // Short steps count once they add up.
        gauge.observe(1, 1_000);
        assert!(gauge.per_ms() >= 99_000);
        for _ in 0..1_000 {
            gauge.observe(50_000, 1_000);
        }
        assert!(gauge.per_ms() > 1_000_000, "{}", gauge.per_ms());
    }
}
