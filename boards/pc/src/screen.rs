//! The screen console: the shell's text drawn on the framebuffer GRUB set
//! up (multiboot2 tag 8, 24 or 32 bits per pixel, [`tern_fbcon`]), or
//! written to the VGA text buffer when GRUB left the machine in text mode
//! (its EGA text tag).
//!
//! Drawing is rate-limited: bytes go into the character grid at once, the
//! changed rows reach the screen at most every [`DRAW_INTERVAL_DIVISOR`]th
//! of a second while output keeps coming, and in full whenever the kernel
//! is idle. A checkpoint printed on the console (hundreds of kilobytes of
//! text) would otherwise spend most of its time redrawing a scrolling
//! screen.
//!
//! The console's bytes mix shell text and defmt frames (binary, their format
//! strings only in the ELF: `docs/console-framing.md`). The screen shows the
//! text and skips the frames; the board's own log lines reach it as text
//! through [`log_line`] (see [`crate::log`]), and fault dumps through
//! [`write_raw`].

use alloc::format;
use alloc::string::String;
use core::cell::RefCell;
use core::sync::atomic::{AtomicU64, Ordering};

use critical_section::Mutex;
use embedded_graphics::prelude::RgbColor;
use tern_board_pc::bootinfo::{BootInfo, Framebuffer, FramebufferKind};
use tern_board_pc::pagetable::Cache;
use tern_fbcon::{Grid, Rgb888, Screen, Surface};

use crate::paging;

/// Light grey on black, for VGA text cells.
const VGA_ATTRIBUTE: u16 = 0x07 << 8;
/// Draws happen at most this many times a second while output keeps
/// coming (a tenth of a second between them).
pub const DRAW_INTERVAL_DIVISOR: u64 = 10;

/// A linear framebuffer, mapped write-combining.
struct Pixels {
    base: *mut u8,
    pitch: usize,
    width: u32,
    height: u32,
    bytes_per_pixel: usize,
    shifts: [u8; 3],
}

impl Surface for Pixels {
    fn size(&self) -> (u32, u32) {
        (self.width, self.height)
    }

    fn set_row(&mut self, y: u32, pixels: &[Rgb888]) {
        let [r, g, b] = self.shifts;
        let line = (y as usize) * self.pitch;
        let count = pixels.len().min(self.width as usize);
        for (x, color) in pixels[..count].iter().enumerate() {
            let value =
                u32::from(color.r()) << r | u32::from(color.g()) << g | u32::from(color.b()) << b;
            let at = line + x * self.bytes_per_pixel;
            // SAFETY: line `y` and column `x` are inside the framebuffer
            // (fbcon passes lines below its height, `count` is clipped to
            // the width), which `init` mapped write-combining.
            unsafe {
                let pixel = self.base.add(at);
                if self.bytes_per_pixel == 4 {
                    pixel.cast::<u32>().write_volatile(value);
                } else {
                    for (i, byte) in value.to_le_bytes()[..3].iter().enumerate() {
                        pixel.add(i).write_volatile(*byte);
                    }
                }
            }
        }
    }
}

/// The screen in use.
enum Display {
    Pixels(Screen<Pixels>),
    /// VGA text mode: the grid and the text buffer's address.
    Text(Grid, u64),
}

/// The screen, where the console's byte stream stands (inside a defmt
/// frame, and whether it has bytes yet, or in text), and when it was last
/// drawn (TSC).
struct ScreenConsole {
    display: Display,
    in_frame: bool,
    frame_bytes: bool,
    description: String,
    drawn_at: u64,
}

// SAFETY: the framebuffer pointer is only used under the SCREEN lock, on a
// single core.
unsafe impl Send for ScreenConsole {}

static SCREEN: Mutex<RefCell<Option<ScreenConsole>>> = Mutex::new(RefCell::new(None));

/// TSC cycles between two draws while output keeps coming; 0 (draw at
/// once) until the TSC is calibrated.
static DRAW_INTERVAL: AtomicU64 = AtomicU64::new(0);

/// Sets up the screen the loader left, if there is one to draw on.
pub fn init(boot: &BootInfo) {
    let Some((display, description)) = boot.framebuffer.and_then(|fb| framebuffer(&fb)) else {
        return;
    };
    let console = ScreenConsole {
        display,
        in_frame: false,
        frame_bytes: false,
        description,
        drawn_at: 0,
    };
    critical_section::with(|cs| *SCREEN.borrow_ref_mut(cs) = Some(console));
}

/// Limits drawing to [`DRAW_INTERVAL_DIVISOR`] times a second of a TSC
/// running at `tsc_hz`.
pub fn set_tsc_hz(tsc_hz: u64) {
    DRAW_INTERVAL.store(tsc_hz / DRAW_INTERVAL_DIVISOR, Ordering::Relaxed);
}

fn text_mode(address: u64, columns: usize, rows: usize) -> Option<(Display, String)> {
    paging::map(address, (columns * rows * 2) as u64, Cache::WriteCombining).ok()?;
    let grid = Grid::new(columns, rows);
    Some((
        Display::Text(grid, address),
        format!("VGA text mode {columns}x{rows} at {address:#x}"),
    ))
}

fn framebuffer(fb: &Framebuffer) -> Option<(Display, String)> {
    match fb.kind {
        FramebufferKind::EgaText => text_mode(fb.address, fb.width as usize, fb.height as usize),
        FramebufferKind::Indexed => None,
        FramebufferKind::Rgb { red, green, blue } => {
            let bytes_per_pixel = match fb.bpp {
                24 => 3,
                32 => 4,
                _ => return None,
            };
            let len = u64::from(fb.pitch) * u64::from(fb.height);
            paging::map(fb.address, len, Cache::WriteCombining).ok()?;
            let pixels = Pixels {
                base: fb.address as *mut u8,
                pitch: fb.pitch as usize,
                width: fb.width,
                height: fb.height,
                bytes_per_pixel,
                shifts: [red.0, green.0, blue.0],
            };
            let screen = Screen::new(pixels);
            let (columns, rows) = screen.grid().size();
            let description = format!(
                "{}x{}x{} framebuffer at {:#x} ({columns}x{rows} characters)",
                fb.width, fb.height, fb.bpp, fb.address
            );
            Some((Display::Pixels(screen), description))
        }
    }
}

/// Writes the changed rows of a text-mode grid to the VGA buffer at
/// `address`.
fn draw_text(grid: &mut Grid, address: u64) {
    let (columns, _) = grid.size();
    let rows: alloc::vec::Vec<usize> = grid.take_dirty().collect();
    for row in rows {
        for (column, &byte) in grid.row(row).iter().enumerate() {
            let cell = (address as *mut u16).wrapping_add(row * columns + column);
            // SAFETY: inside the text buffer `text_mode` mapped (row and
            // column are within the grid, which has the buffer's size).
            unsafe { cell.write_volatile(VGA_ATTRIBUTE | u16::from(byte)) };
        }
    }
}

fn rdtsc() -> u64 {
    // SAFETY: RDTSC exists on every x86_64 CPU and has no side effects.
    unsafe { core::arch::x86_64::_rdtsc() }
}

impl ScreenConsole {
    fn grid(&mut self) -> &mut Grid {
        match &mut self.display {
            Display::Pixels(screen) => screen.grid_mut(),
            Display::Text(grid, _) => grid,
        }
    }

    /// Draws the changed rows now, or only when the last draw is a draw
    /// interval old (`force` false).
    fn draw(&mut self, force: bool) {
        let now = rdtsc();
        let due = now.wrapping_sub(self.drawn_at) >= DRAW_INTERVAL.load(Ordering::Relaxed);
        if !force && !due {
            return;
        }
        self.drawn_at = now;
        match &mut self.display {
            Display::Pixels(screen) => screen.draw(),
            Display::Text(grid, address) => draw_text(grid, *address),
        }
    }

    fn write(&mut self, bytes: &[u8]) {
        self.grid().write(bytes);
        self.draw(false);
    }

    fn interject(&mut self, line: &[u8]) {
        self.grid().interject(line);
        self.draw(false);
    }

    /// Shows the text of console bytes, skipping defmt frames (a zero byte
    /// opens one; a zero after the frame's bytes closes it).
    fn feed(&mut self, bytes: &[u8]) {
        let mut text_start = 0;
        for (i, &byte) in bytes.iter().enumerate() {
            if self.in_frame {
                if byte == 0 && self.frame_bytes {
                    self.in_frame = false;
                    text_start = i + 1;
                } else if byte != 0 {
                    self.frame_bytes = true;
                }
            } else if byte == 0 {
                self.write(&bytes[text_start..i]);
                self.in_frame = true;
                self.frame_bytes = false;
            }
        }
        if !self.in_frame {
            self.write(&bytes[text_start..]);
        }
    }
}

/// Draws what changed if the last draw is a draw interval old: called on
/// every turn of the kernel's run loop (through the console's input), so
/// that typing shows while a task keeps the loop busy.
pub fn draw_if_due() {
    critical_section::with(|cs| {
        if let Some(screen) = SCREEN.borrow_ref_mut(cs).as_mut() {
            screen.draw(false);
        }
    });
}

/// Draws everything that changed: called when the kernel goes idle.
pub fn draw_now() {
    critical_section::with(|cs| {
        if let Some(screen) = SCREEN.borrow_ref_mut(cs).as_mut() {
            screen.draw(true);
        }
    });
}

/// Feeds console bytes to the screen, if there is one.
pub fn feed(bytes: &[u8]) {
    critical_section::with(|cs| {
        if let Some(screen) = SCREEN.borrow_ref_mut(cs).as_mut() {
            screen.feed(bytes);
        }
    });
}

/// Shows a board log line on a line of its own.
pub fn log_line(prefix: &str, text: &str) {
    critical_section::with(|cs| {
        if let Some(screen) = SCREEN.borrow_ref_mut(cs).as_mut() {
            screen.interject(format!("[{prefix}] {text}").as_bytes());
        }
    });
}

/// Writes fault-dump text and draws it at once, unless the screen is in
/// use further up the stack (the fault struck while drawing): then the
/// serial port has it alone.
pub fn write_raw(text: &str) {
    critical_section::with(|cs| {
        if let Ok(mut slot) = SCREEN.borrow(cs).try_borrow_mut() {
            if let Some(screen) = slot.as_mut() {
                screen.grid().write(text.as_bytes());
                screen.draw(true);
            }
        }
    });
}

/// What the screen is, for `hw`.
pub fn describe() -> String {
    critical_section::with(|cs| {
        SCREEN
            .borrow_ref(cs)
            .as_ref()
            .map_or_else(|| String::from("none"), |s| s.description.clone())
    })
}
