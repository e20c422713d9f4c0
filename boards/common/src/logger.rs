//! The defmt global logger of every board: frames go out on the console between two
//! [`FRAME_DELIMITER`](crate::console::FRAME_DELIMITER) bytes.
//!
//! defmt hands the logger a frame in pieces between `acquire` and `release`;
//! the whole frame is written inside one critical section so that no text and
//! no other frame can land inside it.

use core::cell::RefCell;

use critical_section::{Mutex, RestoreState};
use tern_unikernel::console::{self, FRAME_DELIMITER};

/// Interrupt state saved by `acquire`, restored by `release`.
static mut RESTORE: RestoreState = RestoreState::invalid();
static ENCODER: Mutex<RefCell<defmt::Encoder>> = Mutex::new(RefCell::new(defmt::Encoder::new()));

defmt::timestamp!("{=u64:us}", tern_unikernel::uptime_ns() / 1_000);

fn write_raw(bytes: &[u8]) {
    console::write_frame_bytes(bytes);
}

#[defmt::global_logger]
struct Logger;

// SAFETY: defmt guarantees acquire/release pair up and never nest on one core
// (acquire takes a critical section, so nothing can preempt the frame);
// RESTORE is only touched between that acquire and release.
unsafe impl defmt::Logger for Logger {
    fn acquire() {
        // SAFETY: paired with the `release` below, as defmt promises.
        let restore = unsafe { critical_section::acquire() };
        // SAFETY: inside the critical section just taken; see impl comment.
        unsafe { RESTORE = restore };
        write_raw(&[FRAME_DELIMITER]);
        critical_section::with(|cs| ENCODER.borrow_ref_mut(cs).start_frame(write_raw));
    }

    unsafe fn flush() {}

    unsafe fn release() {
        critical_section::with(|cs| ENCODER.borrow_ref_mut(cs).end_frame(write_raw));
        // SAFETY: the state saved by the matching `acquire`.
        unsafe { critical_section::release(RESTORE) };
    }

    unsafe fn write(bytes: &[u8]) {
        critical_section::with(|cs| ENCODER.borrow_ref_mut(cs).write(bytes, write_raw));
    }
}
