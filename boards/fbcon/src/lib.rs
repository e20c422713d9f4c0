//! A text console for a screen, as the PC board shows its shell on a
//! framebuffer: a [`Grid`] of characters fed with the console's bytes
//! (printable ASCII, carriage return, line feed, backspace; anything else
//! becomes `?`), scrolling at the bottom, and a [`Screen`] that draws the
//! grid's changed rows with a bitmap font ([`FONT`], `embedded-graphics`'
//! 9×18 X.org misc-fixed) on a [`Surface`].
//!
//! The same code draws on the PC's framebuffer and, in the QEMU test of the
//! UEFI boot, on a host buffer that is compared with QEMU's screen dump.
#![no_std]
#![forbid(unsafe_code)]
#![deny(missing_docs)]

extern crate alloc;

use alloc::vec;
use alloc::vec::Vec;

use embedded_graphics::mono_font::{ascii, MonoFont, MonoTextStyleBuilder};
pub use embedded_graphics::pixelcolor::Rgb888;
use embedded_graphics::prelude::{DrawTarget, OriginDimensions, Pixel, Point, RgbColor, Size};
use embedded_graphics::text::{Baseline, Text};
use embedded_graphics::Drawable;

/// The font every screen uses.
pub const FONT: MonoFont<'static> = ascii::FONT_9X18;
/// Text colour: light grey.
pub const FOREGROUND: Rgb888 = Rgb888::new(0xcc, 0xcc, 0xcc);
/// Background: black.
pub const BACKGROUND: Rgb888 = Rgb888::BLACK;

/// Where pixels go.
pub trait Surface {
    /// Width and height in pixels.
    fn size(&self) -> (u32, u32);
    /// Sets pixel line `y` (inside the size) to `pixels` (the width's
    /// worth).
    fn set_row(&mut self, y: u32, pixels: &[Rgb888]);
}

/// Printable ASCII: the characters the grid holds.
const FIRST: u8 = b' ';
const LAST: u8 = b'~';

/// Every glyph of [`FONT`] as one bit mask per pixel line (bit `x` set:
/// foreground at column `x`).
struct Glyphs {
    width: usize,
    height: usize,
    masks: Vec<u32>,
}

/// Collects which pixels a glyph lights.
struct MaskTarget<'a> {
    width: usize,
    masks: &'a mut [u32],
}

impl OriginDimensions for MaskTarget<'_> {
    fn size(&self) -> Size {
        Size::new(self.width as u32, self.masks.len() as u32)
    }
}

impl DrawTarget for MaskTarget<'_> {
    type Color = Rgb888;
    type Error = core::convert::Infallible;

    fn draw_iter<I>(&mut self, pixels: I) -> Result<(), Self::Error>
    where
        I: IntoIterator<Item = Pixel<Rgb888>>,
    {
        for Pixel(point, color) in pixels {
            let (Ok(x), Ok(y)) = (usize::try_from(point.x), usize::try_from(point.y)) else {
                continue;
            };
            if x < self.width && y < self.masks.len() && color == FOREGROUND {
                self.masks[y] |= 1 << x;
            }
        }
        Ok(())
    }
}

impl Glyphs {
    fn new() -> Self {
        let cell = FONT.character_size;
        let (width, height) = (cell.width as usize, cell.height as usize);
        let count = usize::from(LAST - FIRST) + 1;
        let mut masks = vec![0u32; count * height];
        let style = MonoTextStyleBuilder::new()
            .font(&FONT)
            .text_color(FOREGROUND)
            .build();
        for (i, glyph) in masks.chunks_mut(height).enumerate() {
            let byte = [FIRST + i as u8];
            // Printable ASCII is valid UTF-8.
            let text = core::str::from_utf8(&byte).unwrap_or(" ");
            let mut target = MaskTarget {
                width,
                masks: glyph,
            };
            let _ =
                Text::with_baseline(text, Point::zero(), style, Baseline::Top).draw(&mut target);
        }
        Self {
            width,
            height,
            masks,
        }
    }

    /// The mask of pixel line `y` of `byte`'s glyph.
    fn line(&self, byte: u8, y: usize) -> u32 {
        let index = usize::from(byte.clamp(FIRST, LAST) - FIRST);
        self.masks[index * self.height + y]
    }
}

/// The characters on screen, the cursor, and which rows changed.
pub struct Grid {
    columns: usize,
    rows: usize,
    cells: Vec<u8>,
    column: usize,
    row: usize,
    dirty: Vec<bool>,
}

impl Grid {
    /// An empty grid of `columns` × `rows` (at least 1 × 1).
    pub fn new(columns: usize, rows: usize) -> Self {
        let (columns, rows) = (columns.max(1), rows.max(1));
        Self {
            columns,
            rows,
            cells: vec![b' '; columns * rows],
            column: 0,
            row: 0,
            dirty: vec![true; rows],
        }
    }

    /// Columns and rows.
    pub fn size(&self) -> (usize, usize) {
        (self.columns, self.rows)
    }

    /// The text of row `row` (trailing blanks included).
    pub fn row(&self, row: usize) -> &[u8] {
        &self.cells[row * self.columns..(row + 1) * self.columns]
    }

    /// The cursor: column and row.
    pub fn cursor(&self) -> (usize, usize) {
        (self.column, self.row)
    }

    /// Feeds console bytes.
    pub fn write(&mut self, bytes: &[u8]) {
        for &byte in bytes {
            match byte {
                b'\r' => self.column = 0,
                b'\n' => self.line_feed(),
                0x08 => self.column = self.column.saturating_sub(1),
                b' '..=b'~' => self.put(byte),
                _ => self.put(b'?'),
            }
        }
    }

    fn put(&mut self, byte: u8) {
        if self.column == self.columns {
            self.column = 0;
            self.line_feed();
        }
        self.cells[self.row * self.columns + self.column] = byte;
        self.dirty[self.row] = true;
        self.column += 1;
    }

    fn line_feed(&mut self) {
        if self.row + 1 < self.rows {
            self.row += 1;
            return;
        }
        self.cells.copy_within(self.columns.., 0);
        let last = (self.rows - 1) * self.columns;
        self.cells[last..].fill(b' ');
        self.dirty.fill(true);
    }

    /// Writes `line` on a line of its own without losing what was being
    /// typed: it takes the place of the partial line at the cursor (the
    /// shell's prompt and input), which is written again below it.
    pub fn interject(&mut self, line: &[u8]) {
        let partial: Vec<u8> = self.row(self.row)[..self.column].to_vec();
        let start = self.row * self.columns;
        self.cells[start..start + self.columns].fill(b' ');
        self.dirty[self.row] = true;
        self.column = 0;
        self.write(line);
        self.write(b"\r\n");
        self.write(&partial);
    }

    /// The rows changed since the last call, marked clean.
    pub fn take_dirty(&mut self) -> impl Iterator<Item = usize> + '_ {
        self.dirty
            .iter_mut()
            .enumerate()
            .filter_map(|(row, dirty)| core::mem::take(dirty).then_some(row))
    }
}

/// A grid drawn on a surface.
pub struct Screen<S> {
    surface: S,
    grid: Grid,
    glyphs: Glyphs,
    /// One pixel line, reused.
    line: Vec<Rgb888>,
}

impl<S: Surface> Screen<S> {
    /// A screen filling `surface` with as many character cells as fit,
    /// cleared.
    pub fn new(surface: S) -> Self {
        let (width, height) = surface.size();
        let glyphs = Glyphs::new();
        let grid = Grid::new(
            width as usize / glyphs.width,
            height as usize / glyphs.height,
        );
        let mut screen = Self {
            surface,
            grid,
            glyphs,
            line: vec![BACKGROUND; width as usize],
        };
        for y in 0..height {
            screen.surface.set_row(y, &screen.line);
        }
        screen
    }

    /// The character grid.
    pub fn grid(&self) -> &Grid {
        &self.grid
    }

    /// The character grid, to feed without drawing yet (a board drawing at
    /// a limited rate calls [`Screen::draw`] later).
    pub fn grid_mut(&mut self) -> &mut Grid {
        &mut self.grid
    }

    /// The surface.
    pub fn surface(&self) -> &S {
        &self.surface
    }

    /// Feeds console bytes and draws the rows they changed.
    pub fn write(&mut self, bytes: &[u8]) {
        self.grid.write(bytes);
        self.draw();
    }

    /// Draws the rows changed since the last draw.
    pub fn draw(&mut self) {
        let rows: Vec<usize> = self.grid.take_dirty().collect();
        let (width, height) = (self.glyphs.width, self.glyphs.height);
        for row in rows {
            for y in 0..height {
                for (column, &byte) in self.grid.row(row).iter().enumerate() {
                    let mask = self.glyphs.line(byte, y);
                    let cell = &mut self.line[column * width..(column + 1) * width];
                    for (x, pixel) in cell.iter_mut().enumerate() {
                        *pixel = if mask & (1 << x) != 0 {
                            FOREGROUND
                        } else {
                            BACKGROUND
                        };
                    }
                }
                self.surface.set_row((row * height + y) as u32, &self.line);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    extern crate std;

    use super::*;
    use std::vec::Vec;

    struct Buffer {
        width: u32,
        height: u32,
        pixels: Vec<Rgb888>,
    }

    impl Buffer {
        fn new(width: u32, height: u32) -> Self {
            Self {
                width,
                height,
                pixels: vec![Rgb888::new(1, 2, 3); (width * height) as usize],
            }
        }

        fn at(&self, x: u32, y: u32) -> Rgb888 {
            self.pixels[(y * self.width + x) as usize]
        }
    }

    impl Surface for Buffer {
        fn size(&self) -> (u32, u32) {
            (self.width, self.height)
        }
        fn set_row(&mut self, y: u32, pixels: &[Rgb888]) {
            let start = (y * self.width) as usize;
            self.pixels[start..start + pixels.len()].copy_from_slice(pixels);
        }
    }

    fn text(grid: &Grid, row: usize) -> std::string::String {
        std::string::String::from_utf8(grid.row(row).to_vec()).unwrap()
    }

    #[test]
    fn console_bytes_move_the_cursor_like_a_terminal() {
        let mut grid = Grid::new(10, 3);
        grid.write(b"Tern\r\ntern> hel\x08 \x08");
        assert_eq!(text(&grid, 0), "Tern      ");
        assert_eq!(text(&grid, 1), "tern> he  ");
        assert_eq!(grid.cursor(), (8, 1));
        // Wrapping at the right edge, scrolling at the bottom.
        grid.write(b"lp\r\n0123456789ab\r\nend");
        assert_eq!(text(&grid, 0), "0123456789");
        assert_eq!(text(&grid, 1), "ab        ");
        assert_eq!(text(&grid, 2), "end       ");
        // Bytes outside printable ASCII show as '?'.
        grid.write(b"\xc3\xa9\x1b");
        assert_eq!(text(&grid, 2), "end???    ");
    }

    #[test]
    fn a_log_line_interjected_keeps_the_prompt_and_the_typing() {
        let mut grid = Grid::new(16, 4);
        grid.write(b"tern> ne");
        grid.interject(b"[warn] no PHY");
        grid.interject(b"[info] up");
        assert_eq!(text(&grid, 0), "[warn] no PHY   ");
        assert_eq!(text(&grid, 1), "[info] up       ");
        assert_eq!(text(&grid, 2), "tern> ne        ");
        assert_eq!(grid.cursor(), (8, 2));
        // At the start of a line nothing is repeated.
        let mut grid = Grid::new(16, 4);
        grid.interject(b"[info] up");
        assert_eq!(text(&grid, 0), "[info] up       ");
        assert_eq!(grid.cursor(), (0, 1));
    }

    #[test]
    fn only_changed_rows_are_redrawn_until_a_scroll() {
        let mut grid = Grid::new(4, 3);
        assert_eq!(grid.take_dirty().count(), 3, "all rows start dirty");
        grid.write(b"a\r\nb");
        assert_eq!(grid.take_dirty().collect::<Vec<_>>(), [0, 1]);
        grid.write(b"\r\n\r\nc");
        assert_eq!(grid.take_dirty().count(), 3, "a scroll moves every row");
    }

    #[test]
    fn glyphs_are_drawn_in_their_cells() {
        let mut screen = Screen::new(Buffer::new(100, 40));
        assert_eq!(screen.grid().size(), (11, 2));
        screen.write(b"|");
        let surface = screen.surface();
        // The whole surface was cleared, then the '|' drawn in cell (0, 0):
        // foreground pixels there, none in cell (1, 0).
        let lit = |x0: u32, y0: u32| {
            (y0..y0 + 18)
                .flat_map(|y| (x0..x0 + 9).map(move |x| (x, y)))
                .filter(|&(x, y)| surface.at(x, y) == FOREGROUND)
                .count()
        };
        assert!(lit(0, 0) > 5);
        assert_eq!(lit(9, 0), 0);
        assert_eq!(surface.at(99, 39), BACKGROUND);
    }
}
