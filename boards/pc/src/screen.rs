//! The screen console: the shell's text drawn on the framebuffer GRUB set
//! up (multiboot2 tag 8, 24 or 32 bits per pixel, [`tern_fbcon`]), or
//! written to the VGA text buffer when the machine is in 80×25 text mode
//! (GRUB's EGA text tag, or a legacy BIOS's mode 3 under PVH).
//!
//! The console's bytes mix shell text and defmt frames (binary, their format
//! strings only in the ELF: `docs/console-framing.md`). The screen shows the
//! text and skips the frames; the board's own log lines reach it as text
//! through [`log_line`] (see [`crate::log`]), and fault dumps through
//! [`write_raw`].

use alloc::format;
use alloc::string::String;
use core::cell::RefCell;

use critical_section::Mutex;
use tern_board_pc::bootinfo::{BootInfo, Framebuffer, FramebufferKind, Protocol};
use tern_board_pc::pagetable::Cache;
use tern_fbcon::{Grid, Screen, Surface};

use crate::paging;

/// VGA text mode: the buffer, its size, the BIOS data area's mode byte.
const VGA_TEXT: u64 = 0xb8000;
const VGA_COLUMNS: usize = 80;
const VGA_ROWS: usize = 25;
const BDA_VIDEO_MODE: u64 = 0x449;
/// Light grey on black.
const VGA_ATTRIBUTE: u16 = 0x07 << 8;

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

    fn set(&mut self, x: u32, y: u32, color: embedded_graphics::pixelcolor::Rgb888) {
        use embedded_graphics::prelude::RgbColor;
        let [r, g, b] = self.shifts;
        let value =
            u32::from(color.r()) << r | u32::from(color.g()) << g | u32::from(color.b()) << b;
        let at = y as usize * self.pitch + x as usize * self.bytes_per_pixel;
        // SAFETY: (x, y) is inside the framebuffer (fbcon checks against
        // `size`), which `init` mapped; the bytes of one pixel.
        unsafe {
            let pixel = self.base.add(at);
            for (i, byte) in value.to_le_bytes()[..self.bytes_per_pixel]
                .iter()
                .enumerate()
            {
                pixel.add(i).write_volatile(*byte);
            }
        }
    }
}

/// The screen in use.
enum Display {
    Pixels(Screen<Pixels>),
    Text(Grid),
}

/// The screen, and where the console's byte stream stands: inside a defmt
/// frame (and whether it has bytes yet), or in text.
struct ScreenConsole {
    display: Display,
    in_frame: bool,
    frame_bytes: bool,
    description: String,
}

// SAFETY: the framebuffer pointer is only used under the SCREEN lock, on a
// single core.
unsafe impl Send for ScreenConsole {}

static SCREEN: Mutex<RefCell<Option<ScreenConsole>>> = Mutex::new(RefCell::new(None));

/// Sets up the screen the loader left, if there is one to draw on;
/// `bios_text` is what [`bios_text_mode`] said before the kernel's page
/// tables (which leave the BIOS data area unmapped) took over.
pub fn init(boot: &BootInfo, bios_text: bool) {
    let display = match boot.framebuffer {
        Some(fb) => framebuffer(&fb),
        None if boot.memory_map.protocol == Protocol::Pvh && bios_text => {
            text_mode(VGA_TEXT, VGA_COLUMNS, VGA_ROWS)
        }
        None => None,
    };
    if let Some((display, description)) = display {
        let console = ScreenConsole {
            display,
            in_frame: false,
            frame_bytes: false,
            description,
        };
        critical_section::with(|cs| *SCREEN.borrow_ref_mut(cs) = Some(console));
    }
}

/// Whether a legacy BIOS left the VGA in 80×25 colour text mode (mode 3).
/// Read under the boot code's identity map.
pub fn bios_text_mode() -> bool {
    // SAFETY: the BIOS data area, in the first MiB, identity-mapped by the
    // boot code (this runs before the kernel's own tables).
    let mode = unsafe { (BDA_VIDEO_MODE as *const u8).read_volatile() };
    mode == 3
}

fn text_mode(address: u64, columns: usize, rows: usize) -> Option<(Display, String)> {
    paging::map(address, (columns * rows * 2) as u64, Cache::WriteCombining).ok()?;
    let mut grid = Grid::new(columns, rows);
    draw_text(&mut grid);
    Some((
        Display::Text(grid),
        format!("VGA text mode {columns}x{rows}"),
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

/// Writes the changed rows of a text-mode grid to the VGA buffer.
fn draw_text(grid: &mut Grid) {
    let (columns, _) = grid.size();
    let rows: alloc::vec::Vec<usize> = grid.take_dirty().collect();
    for row in rows {
        for (column, &byte) in grid.row(row).iter().enumerate() {
            let cell = (VGA_TEXT as *mut u16).wrapping_add(row * columns + column);
            // SAFETY: inside the text buffer `text_mode` mapped (row and
            // column are within the grid, which has the buffer's size).
            unsafe { cell.write_volatile(VGA_ATTRIBUTE | u16::from(byte)) };
        }
    }
}

impl ScreenConsole {
    fn write(&mut self, bytes: &[u8]) {
        match &mut self.display {
            Display::Pixels(screen) => screen.write(bytes),
            Display::Text(grid) => {
                grid.write(bytes);
                draw_text(grid);
            }
        }
    }

    fn interject(&mut self, line: &[u8]) {
        match &mut self.display {
            Display::Pixels(screen) => screen.interject(line),
            Display::Text(grid) => {
                grid.interject(line);
                draw_text(grid);
            }
        }
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

/// Writes fault-dump text, unless the screen is in use further up the stack
/// (the fault struck while drawing): then the serial port has it alone.
pub fn write_raw(text: &str) {
    critical_section::with(|cs| {
        if let Ok(mut slot) = SCREEN.borrow(cs).try_borrow_mut() {
            if let Some(screen) = slot.as_mut() {
                screen.write(text.as_bytes());
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
