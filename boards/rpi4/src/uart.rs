//! PL011 UART0 at 0xFE20_1000 on GPIO 14 (TXD0) and 15 (RXD0), 115200 8N1.
//!
//! The baud divisor assumes a 48 MHz UART clock, the Pi 4 firmware's
//! default; the kernel also asks the mailbox for it ([`crate::mailbox`]),
//! and `config.txt` can pin it with `init_uart_clock=48000000`.
//!
//! The PAC's registers are fixed addresses with no state in the handle, so
//! [`write_direct`] can write even while a [`Uart0`] is borrowed elsewhere
//! (the fault dump needs that).

use core::convert::Infallible;

use bcm2711_lpa::common::{Modify as _, Read as _, RegisterValue as _, Write as _};
use bcm2711_lpa::{gpio, GPIO, UART0};

/// UART reference clock the divisor is computed for.
pub const UART_CLOCK_HZ: u32 = 48_000_000;
/// Line speed.
pub const BAUD: u32 = 115_200;

/// The console UART.
#[derive(Debug)]
pub struct Uart0 {
    _private: (),
}

impl Uart0 {
    /// Routes GPIO 14/15 to UART0 and enables it at [`BAUD`] (8N1, FIFOs).
    /// GPIO 32/33, where the firmware leaves UART0 for Bluetooth (Tern needs
    /// no `disable-bt` overlay), become inputs, so that only the header's
    /// pins drive UART0's receiver.
    ///
    /// # Safety
    ///
    /// Call once; UART0 and GPIO 14/15 and 32/33 must not be used by
    /// anything else.
    pub unsafe fn init() -> Self {
        // Divisor = clock / (16 * baud) = 26.0417: integer 26, fraction
        // round(0.0417 * 64) = 3.
        let divisor_x64 = (u64::from(UART_CLOCK_HZ) * 4).div_ceil(u64::from(BAUD));
        // SAFETY: fixed BCM2711 register addresses; the caller grants us
        // exclusive use of UART0 and these pins.
        unsafe {
            UART0.cr().write_raw(0);
            GPIO.gpfsel1().modify(|r| {
                r.fsel14()
                    .set(gpio::gpfsel1::Fsel14::TXD_0)
                    .fsel15()
                    .set(gpio::gpfsel1::Fsel15::RXD_0)
            });
            GPIO.gpfsel3().modify(|r| {
                r.fsel32()
                    .set(gpio::gpfsel3::Fsel32::INPUT)
                    .fsel33()
                    .set(gpio::gpfsel3::Fsel33::INPUT)
            });
            // RX pulled up: an unconnected line idles high instead of
            // floating into break conditions and garbage bytes.
            GPIO.gpio_pup_pdn_cntrl_reg0().modify(|r| {
                r.gpio_pup_pdn_cntrl14()
                    .set(gpio::gpio_pup_pdn_cntrl_reg0::GpioPupPdnCntrl14::NONE)
                    .gpio_pup_pdn_cntrl15()
                    .set(gpio::gpio_pup_pdn_cntrl_reg0::GpioPupPdnCntrl15::UP)
            });
            UART0.icr().write_raw(0x7ff);
            UART0.ibrd().write_raw((divisor_x64 >> 6) as u32);
            UART0.fbrd().write_raw((divisor_x64 & 0x3f) as u32);
            UART0.lcr_h().init(|r| r.wlen().set(3).fen().set(true));
            UART0
                .cr()
                .init(|r| r.uarten().set(true).txe().set(true).rxe().set(true));
        }
        Self { _private: () }
    }

    /// The next received byte, if one is waiting (bytes with a framing or
    /// parity error are dropped).
    pub fn try_read(&mut self) -> Option<u8> {
        // SAFETY: reads of UART0's flag and data registers.
        unsafe {
            if UART0.fr().read().rxfe().get() {
                return None;
            }
            let dr = UART0.dr().read();
            let errors = dr.get_raw() & 0xf00;
            (errors == 0).then_some(dr.data().get())
        }
    }

    /// Waits until every queued byte has left the shift register.
    pub fn flush(&mut self) {
        // SAFETY: read of UART0's flag register.
        while unsafe { UART0.fr().read().busy().get() } {
            core::hint::spin_loop();
        }
    }
}

/// Writes `bytes`, waiting for FIFO space; usable at any time after
/// [`Uart0::init`], even from an exception handler.
pub fn write_direct(bytes: &[u8]) {
    for &byte in bytes {
        // SAFETY: polling the TX-full flag and writing the data register
        // have no effect beyond sending the byte.
        unsafe {
            while UART0.fr().read().txff().get() {
                core::hint::spin_loop();
            }
            UART0.dr().write_raw(u32::from(byte));
        }
    }
}

impl embedded_io::ErrorType for Uart0 {
    type Error = Infallible;
}

impl embedded_io::Write for Uart0 {
    fn write(&mut self, buf: &[u8]) -> Result<usize, Infallible> {
        write_direct(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> Result<(), Infallible> {
        Uart0::flush(self);
        Ok(())
    }
}

impl tern_hal::SerialPort for Uart0 {
    fn read_byte(&mut self) -> Option<u8> {
        self.try_read()
    }
}
