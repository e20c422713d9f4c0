//! The PS/2 keyboard through the i8042 controller, where the FADT says the
//! machine has one: polled from the console's input (its interrupt, routed
//! through the I/O APIC, only wakes the CPU), scancode set 1 (the
//! controller translates), US layout, decoded by `pc-keyboard`.
//!
//! A machine without an 8042 reads 0xFF from its ports; the probe refuses
//! that (the same trap as an absent UART), and an absent controller is
//! never read.

use core::fmt;

use pc_keyboard::layouts::Us104Key;
use pc_keyboard::{DecodedKey, HandleControl, PS2Keyboard, ScancodeSet1};
use x86_64::instructions::port::Port;

/// The keyboard's ISA IRQ line.
pub const KEYBOARD_IRQ: u8 = 1;
const DATA: u16 = 0x60;
const STATUS_COMMAND: u16 = 0x64;
/// Status: output buffer full (a byte to read), input buffer full (the
/// controller has not taken the last byte yet), the byte is the mouse's.
const OUTPUT_FULL: u8 = 1 << 0;
const INPUT_FULL: u8 = 1 << 1;
const FROM_MOUSE: u8 = 1 << 5;
/// Controller commands.
const READ_CONFIG: u8 = 0x20;
const WRITE_CONFIG: u8 = 0x60;
const DISABLE_MOUSE: u8 = 0xa7;
const DISABLE_KEYBOARD: u8 = 0xad;
const ENABLE_KEYBOARD: u8 = 0xae;
/// Configuration byte: keyboard interrupt, mouse interrupt, keyboard clock
/// disabled, translation to set 1.
const CONFIG_KEYBOARD_IRQ: u8 = 1 << 0;
const CONFIG_MOUSE_IRQ: u8 = 1 << 1;
const CONFIG_KEYBOARD_CLOCK_OFF: u8 = 1 << 4;
const CONFIG_TRANSLATE: u8 = 1 << 6;
/// Polls of the status register before a controller counts as stuck.
const POLLS: u32 = 100_000;

/// Why there is no keyboard.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum KeyboardError {
    /// The status port reads 0xFF: no controller.
    Absent,
    /// The controller did not take or give a byte in time.
    Timeout,
}

impl fmt::Display for KeyboardError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Absent => f.write_str("no i8042 answers at port 0x64"),
            Self::Timeout => f.write_str("the i8042 did not answer in time"),
        }
    }
}

fn status() -> u8 {
    // SAFETY: the i8042 status port; reading it has no side effect.
    unsafe { Port::<u8>::new(STATUS_COMMAND).read() }
}

fn wait(ready: impl Fn(u8) -> bool) -> Result<(), KeyboardError> {
    (0..POLLS)
        .any(|_| ready(status()))
        .then_some(())
        .ok_or(KeyboardError::Timeout)
}

fn command(byte: u8) -> Result<(), KeyboardError> {
    wait(|s| s & INPUT_FULL == 0)?;
    // SAFETY: the i8042 command port, the controller ready for a byte.
    unsafe { Port::<u8>::new(STATUS_COMMAND).write(byte) };
    Ok(())
}

fn write_data(byte: u8) -> Result<(), KeyboardError> {
    wait(|s| s & INPUT_FULL == 0)?;
    // SAFETY: the i8042 data port, the controller ready for a byte.
    unsafe { Port::<u8>::new(DATA).write(byte) };
    Ok(())
}

fn read_data() -> u8 {
    // SAFETY: the i8042 data port, read when the status says a byte waits.
    unsafe { Port::<u8>::new(DATA).read() }
}

/// A PS/2 keyboard on the i8042.
pub struct Keyboard {
    decoder: PS2Keyboard<Us104Key, ScancodeSet1>,
}

impl Keyboard {
    /// Probes and configures the controller: both ports off, stale bytes
    /// dropped, translation and the keyboard's interrupt on, the mouse's
    /// off, the keyboard port on.
    pub fn init() -> Result<Self, KeyboardError> {
        if status() == 0xff {
            return Err(KeyboardError::Absent);
        }
        command(DISABLE_KEYBOARD)?;
        command(DISABLE_MOUSE)?;
        for _ in 0..16 {
            if status() & OUTPUT_FULL == 0 {
                break;
            }
            read_data();
        }
        command(READ_CONFIG)?;
        wait(|s| s & OUTPUT_FULL != 0)?;
        let config = read_data();
        let config = (config | CONFIG_KEYBOARD_IRQ | CONFIG_TRANSLATE)
            & !(CONFIG_MOUSE_IRQ | CONFIG_KEYBOARD_CLOCK_OFF);
        command(WRITE_CONFIG)?;
        write_data(config)?;
        command(ENABLE_KEYBOARD)?;
        Ok(Self {
            decoder: PS2Keyboard::new(ScancodeSet1::new(), Us104Key, HandleControl::Ignore),
        })
    }

    /// The next typed character as a console byte (Enter is `\r`,
    /// Backspace 0x08), if one is waiting; keys with no ASCII meaning are
    /// skipped.
    pub fn read_byte(&mut self) -> Option<u8> {
        loop {
            let status = status();
            if status & OUTPUT_FULL == 0 || status == 0xff {
                return None;
            }
            let byte = read_data();
            if status & FROM_MOUSE != 0 {
                continue;
            }
            let Ok(Some(event)) = self.decoder.add_byte(byte) else {
                continue;
            };
            if let Some(DecodedKey::Unicode(c)) = self.decoder.process_keyevent(event) {
                if let Some(byte) = console_byte(c) {
                    return Some(byte);
                }
            }
        }
    }
}

/// What the shell wants for a typed character.
fn console_byte(c: char) -> Option<u8> {
    match c {
        '\n' => Some(b'\r'),
        '\u{8}' => Some(0x08),
        c if c.is_ascii() && !c.is_ascii_control() => Some(c as u8),
        _ => None,
    }
}
