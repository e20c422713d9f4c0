//! Serial consoles: 16550-compatible UARTs on I/O ports (COM1 at 0x3f8, or a
//! PCI serial card's I/O BAR), through `uart_16550`.
//!
//! A UART is used only after it answered the probe (`uart_16550`'s init
//! writes and reads back the scratch register): a PC without COM1 reads
//! 0xFF from every port, which a naive driver takes for an endless stream
//! of received bytes, starving the kernel's run loop. An absent UART is
//! never read.

use core::fmt;
use core::sync::atomic::{AtomicU16, Ordering};

use uart_16550::backend::PioBackend;
use uart_16550::spec::registers::IER;
use uart_16550::{BaudRate, Config, InitError, Uart16550};

/// COM1's base I/O port.
pub const COM1_PORT: u16 = 0x3f8;
/// COM1's ISA IRQ line.
pub const COM1_IRQ: u8 = 4;
/// The line status register's offset.
const LSR: u16 = 5;

/// The base port of the console UART, for [`RawUart`] (0: none).
static RAW_PORT: AtomicU16 = AtomicU16::new(0);

/// Why a UART cannot be used.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum UartError {
    /// Nothing answers at the port (the scratch register did not hold a
    /// value): no UART there.
    Absent(u16),
    /// The port range does not fit the 16-bit I/O space.
    BadPort(u16),
    /// The driver refused the configuration.
    Config(u16),
}

impl fmt::Display for UartError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Absent(port) => write!(f, "no UART answers at I/O port {port:#x}"),
            Self::BadPort(port) => write!(f, "I/O port {port:#x} leaves no room for a 16550"),
            Self::Config(port) => write!(f, "the UART at {port:#x} refused 115200 8N1"),
        }
    }
}

/// A 16550 that answered its probe, configured for 115200 8N1 with the
/// FIFO on and the receive interrupt enabled (it only wakes the CPU: the run
/// loop polls).
pub struct Uart {
    uart: Uart16550<PioBackend>,
    port: u16,
}

impl Uart {
    /// Probes and configures the UART at I/O port `port`.
    pub fn probe(port: u16) -> Result<Self, UartError> {
        // SAFETY: the caller names a port range that is a UART's or nothing
        // (COM1, or a serial card's I/O BAR); the probe only writes the
        // scratch register before it knows, which is harmless elsewhere.
        let mut uart =
            unsafe { Uart16550::new_port(port) }.map_err(|_| UartError::BadPort(port))?;
        uart.init(Config {
            baud_rate: BaudRate::Baud115200,
            interrupts: IER::DATA_READY,
            ..Config::DEFAULT
        })
        .map_err(|error| match error {
            InitError::DeviceNotPresent => UartError::Absent(port),
            _ => UartError::Config(port),
        })?;
        Ok(Self { uart, port })
    }

    /// The base I/O port.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// Its ISA IRQ line, for the standard COM ports (COM1 and COM3 use 4).
    pub fn isa_irq(&self) -> Option<u8> {
        match self.port {
            COM1_PORT | 0x3e8 => Some(COM1_IRQ),
            0x2f8 | 0x2e8 => Some(3),
            _ => None,
        }
    }

    /// Makes this UART the one fault dumps and last words go to.
    pub fn make_raw_console(&self) {
        RAW_PORT.store(self.port, Ordering::Relaxed);
    }

    /// The next received byte, if one is waiting. A line status of 0xFF
    /// (the card went away) reads as nothing.
    pub fn read_byte(&mut self) -> Option<u8> {
        if line_status(self.port) == 0xff {
            return None;
        }
        self.uart.try_receive_byte().ok()
    }

    /// Sends `bytes`, waiting for room in the FIFO.
    pub fn write_all(&mut self, bytes: &[u8]) {
        self.uart.send_bytes_exact(bytes);
    }
}

fn line_status(port: u16) -> u8 {
    let mut lsr = x86_64::instructions::port::PortReadOnly::<u8>::new(port + LSR);
    // SAFETY: reading the line status register of a probed UART has no
    // side effect on its data.
    unsafe { lsr.read() }
}

/// Writes straight to the console UART's registers, without the console's
/// lock: for fault dumps and the last words of a halt, which may strike
/// while the console is in use. Goes nowhere when no UART answered.
pub struct RawUart;

impl fmt::Write for RawUart {
    fn write_str(&mut self, s: &str) -> fmt::Result {
        let port = RAW_PORT.load(Ordering::Relaxed);
        if port == 0 {
            return Ok(());
        }
        // SAFETY: `port` is the base of a UART that answered its probe and
        // was configured; this handle only polls the line status and writes
        // the data register, which cannot disturb the console's driver
        // beyond interleaving bytes.
        if let Ok(mut uart) = unsafe { Uart16550::<PioBackend>::new_port(port) } {
            uart.send_bytes_exact(s.as_bytes());
        }
        Ok(())
    }
}
