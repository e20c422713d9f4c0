//! Host tests of the RNG200 driver against a register-level model of the generator:
//! soft resets, enable, the FIFO and its count, the health-test status, and time.
//!
//! The model records every access and every rule the driver breaks (enabling during
//! reset, releasing the resets out of order, popping an empty FIFO); the tests assert
//! on the results and on an empty violation list.

use std::cell::RefCell;
use std::collections::VecDeque;
use std::rc::Rc;

use embedded_hal::delay::DelayNs;
use tern_rng200::{
    Error, Register, Rng200, Rng200Bus, CTRL_RBGEN_ENABLE, INT_NIST_FAIL, SOFT_RESET,
    WORD_TIMEOUT_US,
};

/// Words the model's FIFO holds when full (the real FIFO is deeper; a small one
/// makes the driver refill more often).
const FIFO_DEPTH: usize = 4;

#[derive(Default)]
struct Model {
    /// `false`: nothing answers (every read is 0), as under QEMU `raspi4b`.
    present: bool,
    ctrl: u32,
    rng_reset: bool,
    rbg_reset: bool,
    int_status: u32,
    fifo: VecDeque<u32>,
    /// The next word the generator produces (a counter, so tests can check order).
    next_word: u32,
    /// Microseconds from enable until the first word (start-up health tests).
    warm_up_us: u64,
    now_us: u64,
    enabled_at: Option<u64>,
    /// Completed reset sequences (both resets released with the generator off).
    resets: usize,
    writes: Vec<(Register, u32)>,
    violations: Vec<String>,
}

impl Model {
    fn enabled(&self) -> bool {
        self.ctrl & 0x1FFF == CTRL_RBGEN_ENABLE
    }

    fn produce(&mut self) {
        let Some(enabled_at) = self.enabled_at else {
            return;
        };
        if self.now_us < enabled_at + self.warm_up_us {
            return;
        }
        while self.fifo.len() < FIFO_DEPTH {
            self.next_word += 1;
            self.fifo.push_back(self.next_word);
        }
    }
}

type Shared = Rc<RefCell<Model>>;

struct Bus(Shared);

impl Rng200Bus for Bus {
    fn read(&mut self, register: Register) -> u32 {
        let mut m = self.0.borrow_mut();
        if !m.present {
            return 0;
        }
        match register {
            Register::Ctrl => m.ctrl,
            Register::RngSoftReset => u32::from(m.rng_reset),
            Register::RbgSoftReset => u32::from(m.rbg_reset),
            Register::IntStatus => m.int_status,
            Register::FifoCount => {
                m.produce();
                m.fifo.len() as u32
            }
            Register::FifoData => m.fifo.pop_front().unwrap_or_else(|| {
                m.violations
                    .push("FIFO_DATA read with an empty FIFO".into());
                0
            }),
        }
    }

    fn write(&mut self, register: Register, value: u32) {
        let mut m = self.0.borrow_mut();
        m.writes.push((register, value));
        if !m.present {
            return;
        }
        let set = value & SOFT_RESET != 0;
        match register {
            Register::Ctrl => {
                let was_enabled = m.enabled();
                m.ctrl = value;
                if m.enabled() && (m.rng_reset || m.rbg_reset) {
                    m.violations.push("enabled while in reset".into());
                }
                if m.enabled() && !was_enabled {
                    m.enabled_at = Some(m.now_us);
                } else if !m.enabled() {
                    m.enabled_at = None;
                    m.fifo.clear();
                }
            }
            Register::RbgSoftReset => {
                if m.enabled() {
                    m.violations.push("RBG reset while enabled".into());
                }
                if !set && m.rng_reset {
                    m.violations
                        .push("RBG reset released before the RNG reset".into());
                }
                if !set && m.rbg_reset {
                    m.resets += 1;
                }
                m.rbg_reset = set;
                m.fifo.clear();
            }
            Register::RngSoftReset => {
                if set && !m.rbg_reset {
                    m.violations
                        .push("RNG reset asserted before the RBG reset".into());
                }
                m.rng_reset = set;
                m.fifo.clear();
            }
            Register::IntStatus => m.int_status &= !value,
            Register::FifoData | Register::FifoCount => {
                m.violations
                    .push(format!("write to read-only {register:?}"));
            }
        }
    }
}

struct Delay(Shared);

impl DelayNs for Delay {
    fn delay_ns(&mut self, ns: u32) {
        self.0.borrow_mut().now_us += u64::from(ns.div_ceil(1000));
    }
}

fn model(present: bool, warm_up_us: u64) -> Shared {
    Rc::new(RefCell::new(Model {
        present,
        warm_up_us,
        // Stale status from before the kernel (start-up transitions met).
        int_status: 0x0002_0000,
        ..Model::default()
    }))
}

fn driver(model: &Shared) -> Rng200<Bus, Delay> {
    Rng200::new(Bus(model.clone()), Delay(model.clone()))
}

fn bytes_of(words: &[u32]) -> Vec<u8> {
    words.iter().flat_map(|w| w.to_le_bytes()).collect()
}

#[test]
fn reset_sequence_then_words_in_order() {
    let m = model(true, 0);
    let mut rng = driver(&m);
    {
        let m = m.borrow();
        let writes: Vec<Register> = m.writes.iter().map(|(r, _)| *r).collect();
        assert_eq!(
            writes,
            [
                Register::Ctrl,
                Register::IntStatus,
                Register::RbgSoftReset,
                Register::RngSoftReset,
                Register::RngSoftReset,
                Register::RbgSoftReset,
                Register::Ctrl,
            ]
        );
        assert_eq!(m.int_status, 0, "stale interrupt status not cleared");
        assert_eq!(m.resets, 1);
        assert!(m.enabled());
    }
    let mut buf = [0u8; 16];
    rng.fill(&mut buf).unwrap();
    assert_eq!(buf.to_vec(), bytes_of(&[1, 2, 3, 4]));
    assert!(
        m.borrow().violations.is_empty(),
        "{:?}",
        m.borrow().violations
    );
}

#[test]
fn partial_word_discards_the_rest() {
    let m = model(true, 0);
    let mut rng = driver(&m);
    let mut buf = [0u8; 7];
    rng.fill(&mut buf).unwrap();
    assert_eq!(buf.to_vec(), bytes_of(&[1, 2])[..7].to_vec());
    let mut next = [0u8; 4];
    rng.fill(&mut next).unwrap();
    assert_eq!(next, 3u32.to_le_bytes());
    assert!(
        m.borrow().violations.is_empty(),
        "{:?}",
        m.borrow().violations
    );
}

#[test]
fn waits_through_the_warm_up() {
    let m = model(true, 5_000);
    let mut rng = driver(&m);
    let mut buf = [0u8; 8];
    rng.fill(&mut buf).unwrap();
    assert_eq!(buf.to_vec(), bytes_of(&[1, 2]));
    let now = m.borrow().now_us;
    assert!((5_000..5_100).contains(&now), "waited {now} us");
    assert!(
        m.borrow().violations.is_empty(),
        "{:?}",
        m.borrow().violations
    );
}

#[test]
fn absent_generator_times_out_in_bounded_time() {
    let m = model(false, 0);
    let mut rng = driver(&m);
    let mut buf = [0u8; 32];
    assert_eq!(rng.fill(&mut buf), Err(Error::Timeout));
    // One word's budget, not one per word of the buffer.
    let now = m.borrow().now_us;
    assert!(
        (u64::from(WORD_TIMEOUT_US)..u64::from(WORD_TIMEOUT_US) + 100).contains(&now),
        "waited {now} us"
    );
}

#[test]
fn generator_slower_than_the_budget_times_out() {
    let m = model(true, u64::from(WORD_TIMEOUT_US) * 2);
    let mut rng = driver(&m);
    assert_eq!(rng.fill(&mut [0u8; 4]), Err(Error::Timeout));
    assert!(
        m.borrow().violations.is_empty(),
        "{:?}",
        m.borrow().violations
    );
}

#[test]
fn health_failure_restarts_the_generator() {
    let m = model(true, 0);
    let mut rng = driver(&m);
    rng.fill(&mut [0u8; 4]).unwrap();
    m.borrow_mut().int_status = INT_NIST_FAIL;
    assert_eq!(
        rng.fill(&mut [0u8; 4]),
        Err(Error::HealthFailure(INT_NIST_FAIL))
    );
    {
        let m = m.borrow();
        assert_eq!(m.resets, 2, "no restart after the failure");
        assert_eq!(m.int_status, 0);
        assert!(m.enabled());
    }
    // The restart emptied the FIFO: the next words are fresh ones.
    let mut buf = [0u8; 4];
    rng.fill(&mut buf).unwrap();
    assert_eq!(buf, 5u32.to_le_bytes());
    assert!(
        m.borrow().violations.is_empty(),
        "{:?}",
        m.borrow().violations
    );
}

#[test]
fn a_generator_the_firmware_runs_is_kept_without_a_reset() {
    let m = model(true, 50);
    {
        let mut model = m.borrow_mut();
        model.ctrl = CTRL_RBGEN_ENABLE;
        model.enabled_at = Some(0);
        model.now_us = 1_000;
    }
    let mut rng = driver(&m);
    let mut buf = [0u8; 8];
    rng.fill(&mut buf).unwrap();
    assert_eq!(buf.to_vec(), bytes_of(&[1, 2]));
    let m = m.borrow();
    assert_eq!(m.resets, 0);
    assert!(m.writes.is_empty(), "{:?}", m.writes);
    assert!(m.violations.is_empty(), "{:?}", m.violations);
}
