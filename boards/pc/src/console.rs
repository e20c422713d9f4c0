//! The kernel's console on a PC: one [`SerialPort`] made of whatever the
//! machine has. Output goes to the serial console when a UART answered at
//! boot (all of it: shell text and defmt frames) and to the screen when
//! there is one (the text; frames are skipped, see [`crate::screen`]);
//! input comes from the UART and the PS/2 keyboard. A machine with none of
//! them still boots and serves the network (its address comes from the
//! command line).

use alloc::format;
use alloc::string::String;
use core::convert::Infallible;
use core::fmt;
use core::sync::atomic::{AtomicU16, Ordering};

use tern_hal::SerialPort;

use crate::keyboard::Keyboard;
use crate::screen;
use crate::serial::{RawUart, Uart};

/// The serial console's I/O port, for [`describe`] (0: none).
static SERIAL_PORT: AtomicU16 = AtomicU16::new(0);

/// What the console is, for the `hw` command.
pub fn describe() -> String {
    match SERIAL_PORT.load(Ordering::Relaxed) {
        0 => String::from("no serial port (no UART answered)"),
        port => format!("16550 UART at I/O port {port:#x}"),
    }
}

/// The console handed to the portable kernel.
pub struct PcConsole {
    uart: Option<Uart>,
    keyboard: Option<Keyboard>,
}

impl PcConsole {
    /// A console on `uart` (none: output goes to the screen only, if any).
    pub fn new(uart: Option<Uart>) -> Self {
        let mut console = Self {
            uart: None,
            keyboard: None,
        };
        if let Some(uart) = uart {
            console.set_uart(uart);
        }
        console
    }

    /// Makes `uart` the serial console (found later: from the SPCR, or a
    /// PCI serial card).
    pub fn set_uart(&mut self, uart: Uart) {
        uart.make_raw_console();
        SERIAL_PORT.store(uart.port(), Ordering::Relaxed);
        self.uart = Some(uart);
    }

    /// Whether a UART is the serial console.
    pub fn has_uart(&self) -> bool {
        self.uart.is_some()
    }

    /// Adds the keyboard as an input.
    pub fn set_keyboard(&mut self, keyboard: Keyboard) {
        self.keyboard = Some(keyboard);
    }

    /// The ISA IRQ of the serial console, when it has one (COM1's is 4).
    pub fn uart_irq(&self) -> Option<u8> {
        self.uart.as_ref().and_then(Uart::isa_irq)
    }
}

impl embedded_io::ErrorType for PcConsole {
    type Error = Infallible;
}

impl embedded_io::Write for PcConsole {
    fn write(&mut self, buf: &[u8]) -> Result<usize, Infallible> {
        if let Some(uart) = &mut self.uart {
            uart.write_all(buf);
        }
        screen::feed(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> Result<(), Infallible> {
        Ok(())
    }
}

impl SerialPort for PcConsole {
    /// Also where the screen catches up while the run loop is busy: the
    /// kernel reads its input on every turn.
    fn read_byte(&mut self) -> Option<u8> {
        screen::draw_if_due();
        if let Some(byte) = self.uart.as_mut().and_then(Uart::read_byte) {
            return Some(byte);
        }
        self.keyboard.as_mut()?.read_byte()
    }
}

/// Shows a board log line where defmt frames cannot be read: the screen.
pub fn mirror_log(level: crate::log::Level, text: &str) {
    let prefix = match level {
        crate::log::Level::Info => "info",
        crate::log::Level::Warn => "warn",
    };
    screen::log_line(prefix, text);
}

/// Writes text around the console's lock, for fault dumps, boot failures
/// and the last words of a halt: they may strike while the console is in
/// use, or before it exists.
pub struct RawConsole;

impl fmt::Write for RawConsole {
    fn write_str(&mut self, s: &str) -> fmt::Result {
        screen::write_raw(s);
        RawUart.write_str(s)
    }
}
