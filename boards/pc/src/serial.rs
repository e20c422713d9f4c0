//! The console UART: COM1, a 16550 at I/O port 0x3f8, through `uart_16550`.

use core::convert::Infallible;

use tern_hal::SerialPort;
use uart_16550::backend::PioBackend;
use uart_16550::spec::registers::IER;
use uart_16550::{BaudRate, Config, InitError, Uart16550};

/// COM1's base I/O port.
pub const COM1_PORT: u16 = 0x3f8;

/// A fresh driver handle on COM1's registers. It is a constant so that the
/// port check runs at compile time; each use is a new handle.
pub const COM1_UART: Uart16550<PioBackend> = {
    // SAFETY: 0x3f8..0x400 are COM1's registers on every PC. Handles only
    // touch them when used: the console configures and reads the port, the
    // fault path ([`crate::cpu::RawCom1`]) only sends.
    match unsafe { Uart16550::new_port(COM1_PORT) } {
        Ok(uart) => uart,
        Err(_) => panic!("COM1's base port leaves room for all registers"),
    }
};

/// COM1's IRQ line on the 8259 PIC.
pub const COM1_IRQ: u8 = 4;

/// COM1 as the kernel's console: 115200 8N1, FIFO on. Received bytes are
/// polled by the run loop; the receive interrupt only wakes the CPU from
/// `hlt`, so typing is served at once rather than on the next timer tick.
pub struct Com1 {
    uart: Uart16550<PioBackend>,
}

impl Com1 {
    /// Configures COM1. On error the port is still returned (writes to an
    /// absent UART go nowhere) together with the reason, for the boot log.
    pub fn init() -> (Self, Result<(), InitError>) {
        let mut uart = COM1_UART;
        let status = uart.init(Config {
            baud_rate: BaudRate::Baud115200,
            interrupts: IER::DATA_READY,
            ..Config::DEFAULT
        });
        (Self { uart }, status)
    }
}

impl embedded_io::ErrorType for Com1 {
    type Error = Infallible;
}

impl embedded_io::Write for Com1 {
    fn write(&mut self, buf: &[u8]) -> Result<usize, Infallible> {
        self.uart.write(buf)
    }

    fn flush(&mut self) -> Result<(), Infallible> {
        self.uart.flush()
    }
}

impl SerialPort for Com1 {
    fn read_byte(&mut self) -> Option<u8> {
        self.uart.try_receive_byte().ok()
    }
}
