//! The serial console shared by the shell and the defmt logger.
//!
//! One UART carries two kinds of bytes: shell text and defmt log frames.
//! Text never contains a zero byte (it is dropped on output), and every defmt
//! frame is sent as `0x00`, the frame's rzCOBS bytes (which contain no zero),
//! and a closing `0x00`. A reader therefore knows, byte by byte, whether it is
//! inside a frame, and a frame may sit in the middle of a text line without
//! corrupting either. Writes of text and frames are atomic with respect to each
//! other (both happen inside a critical section). See `docs/console-framing.md`.

use core::cell::RefCell;
use core::fmt;

use critical_section::Mutex;
use tern_hal::SerialPort;

/// The byte that opens and closes a defmt frame on the wire.
pub const FRAME_DELIMITER: u8 = 0x00;

static SERIAL: Mutex<RefCell<Option<&'static mut dyn SerialPort>>> = Mutex::new(RefCell::new(None));

/// Makes `serial` the console. Called once by [`crate::start`].
pub fn install(serial: &'static mut dyn SerialPort) {
    critical_section::with(|cs| *SERIAL.borrow_ref_mut(cs) = Some(serial));
}

/// Runs `f` on the console inside a critical section; `None` when no console
/// is installed or it is already in use further up the stack.
fn with_serial<R>(f: impl FnOnce(&mut dyn SerialPort) -> R) -> Option<R> {
    critical_section::with(|cs| {
        let mut slot = SERIAL.borrow(cs).try_borrow_mut().ok()?;
        let serial = slot.as_deref_mut()?;
        Some(f(serial))
    })
}

/// Writes shell text, dropping zero bytes (they would open a defmt frame).
pub fn write_text(text: &[u8]) {
    with_serial(|serial| {
        for chunk in text.split(|&b| b == FRAME_DELIMITER) {
            let _ = serial.write_all(chunk);
        }
    });
}

/// Writes raw bytes of a defmt frame (the logger's side of the framing).
pub fn write_frame_bytes(bytes: &[u8]) {
    with_serial(|serial| {
        let _ = serial.write_all(bytes);
    });
}

/// The next byte typed on the console, if any.
pub fn read_byte() -> Option<u8> {
    with_serial(|serial| serial.read_byte()).flatten()
}

/// A [`fmt::Write`] sink onto the console's text channel.
pub struct ConsoleWriter;

impl fmt::Write for ConsoleWriter {
    fn write_str(&mut self, s: &str) -> fmt::Result {
        write_text(s.as_bytes());
        Ok(())
    }
}

/// Prints a panic message even if the panic struck while the console was
/// borrowed: the message is dropped rather than deadlocking in that case.
pub fn panic_print(args: fmt::Arguments<'_>) {
    let _ = fmt::write(&mut ConsoleWriter, args);
}
