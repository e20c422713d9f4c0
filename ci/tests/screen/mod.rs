//! Reading a QEMU machine's screen in a test: a QMP socket (`-qmp unix:…`)
//! to ask for a `screendump` (a PPM file), and the expected picture of the
//! first text rows, rendered with the PC's own screen console
//! (`tern-fbcon`: same font, colours and layout), compared pixel for pixel.

use std::io::{BufRead, BufReader, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use embedded_graphics::pixelcolor::Rgb888;
use embedded_graphics::prelude::RgbColor;
use tern_fbcon::{Screen, Surface, FONT};

/// A QMP control socket in a directory of the test.
pub struct Qmp {
    path: PathBuf,
}

impl Qmp {
    /// A socket path in `dir`.
    pub fn new(dir: &Path) -> Self {
        Self {
            path: dir.join("qmp.sock"),
        }
    }

    /// QEMU's arguments for it.
    pub fn args(&self) -> Vec<String> {
        vec![
            "-qmp".into(),
            format!("unix:{},server=on,wait=off", self.path.display()),
        ]
    }

    /// Runs QMP commands in one session and returns their answers.
    fn commands(&self, commands: &[serde_json::Value]) -> Vec<serde_json::Value> {
        // QEMU creates the socket shortly after it starts.
        let deadline = Instant::now() + Duration::from_secs(30);
        let stream = loop {
            match UnixStream::connect(&self.path) {
                Ok(stream) => break stream,
                Err(error) if Instant::now() >= deadline => panic!("QMP socket: {error}"),
                Err(_) => std::thread::sleep(Duration::from_millis(100)),
            }
        };
        stream
            .set_read_timeout(Some(Duration::from_secs(30)))
            .unwrap();
        let mut reader = BufReader::new(stream.try_clone().unwrap());
        let mut writer = stream;
        let mut line = String::new();
        reader.read_line(&mut line).expect("QMP greeting");
        let mut send = |value: &serde_json::Value| {
            writeln!(writer, "{value}").unwrap();
            loop {
                let mut line = String::new();
                reader.read_line(&mut line).expect("QMP answer");
                let answer: serde_json::Value = serde_json::from_str(&line).expect("QMP JSON");
                // Skip asynchronous events.
                if answer.get("event").is_none() {
                    return answer;
                }
            }
        };
        send(&serde_json::json!({"execute": "qmp_capabilities"}));
        commands.iter().map(send).collect()
    }

    /// Types `text` on the machine's keyboard (letters, digits, space, `.`,
    /// `/`, `\n`).
    pub fn type_text(&self, text: &str) {
        let keys: Vec<serde_json::Value> = text
            .chars()
            .map(|c| {
                let key = match c {
                    ' ' => "spc".to_owned(),
                    '.' => "dot".to_owned(),
                    '/' => "slash".to_owned(),
                    '\n' => "ret".to_owned(),
                    c if c.is_ascii_lowercase() || c.is_ascii_digit() => c.to_string(),
                    c => panic!("no key for {c:?}"),
                };
                serde_json::json!({
                    "execute": "send-key",
                    "arguments": {"keys": [{"type": "qcode", "data": key}]}
                })
            })
            .collect();
        for answer in self.commands(&keys) {
            assert!(answer.get("return").is_some(), "send-key: {answer}");
        }
    }

    /// The screen now: width, height and RGB pixels.
    pub fn screendump(&self, dir: &Path) -> Picture {
        let file = dir.join("screen.ppm");
        let answer = self
            .commands(&[serde_json::json!({
                "execute": "screendump",
                "arguments": {"filename": file.to_str().unwrap()}
            })])
            .remove(0);
        assert!(answer.get("return").is_some(), "screendump: {answer}");
        Picture::read_ppm(&std::fs::read(&file).unwrap())
    }
}

/// An RGB picture.
#[derive(Clone, PartialEq, Eq)]
pub struct Picture {
    /// Width in pixels.
    pub width: u32,
    /// Height in pixels.
    pub height: u32,
    /// Row-major RGB triples.
    pub pixels: Vec<[u8; 3]>,
}

impl Picture {
    fn read_ppm(data: &[u8]) -> Self {
        // "P6\n<width> <height>\n255\n" then the pixels.
        let mut fields = Vec::new();
        let mut at = 0;
        while fields.len() < 4 {
            while data[at].is_ascii_whitespace() {
                at += 1;
            }
            let start = at;
            while !data[at].is_ascii_whitespace() {
                at += 1;
            }
            fields.push(String::from_utf8_lossy(&data[start..at]).into_owned());
        }
        assert_eq!(fields[0], "P6", "not a binary PPM");
        let width: u32 = fields[1].parse().unwrap();
        let height: u32 = fields[2].parse().unwrap();
        let body = &data[at + 1..];
        let pixels = body.chunks_exact(3).map(|p| [p[0], p[1], p[2]]).collect();
        Self {
            width,
            height,
            pixels,
        }
    }

    /// Pixel rows `0..rows`.
    pub fn top(&self, rows: u32) -> &[[u8; 3]] {
        &self.pixels[..(self.width * rows) as usize]
    }
}

impl Surface for Picture {
    fn size(&self) -> (u32, u32) {
        (self.width, self.height)
    }

    fn set_row(&mut self, y: u32, pixels: &[Rgb888]) {
        let start = (y * self.width) as usize;
        for (out, color) in self.pixels[start..].iter_mut().zip(pixels) {
            *out = [color.r(), color.g(), color.b()];
        }
    }
}

/// What a `width` × `height` screen shows after `text`, as the kernel's
/// screen console draws it.
pub fn expected(width: u32, height: u32, text: &str) -> Picture {
    let blank = Picture {
        width,
        height,
        pixels: vec![[0; 3]; (width * height) as usize],
    };
    let mut screen = Screen::new(blank);
    screen.write(text.as_bytes());
    screen.surface().clone()
}

/// Takes screen dumps until the first `lines` text rows show `text`
/// (rendered), for at most `timeout`; panics with the last mismatch.
pub fn wait_for_rows(qmp: &Qmp, dir: &Path, text: &str, lines: u32, timeout: Duration) {
    let deadline = Instant::now() + timeout;
    loop {
        let shot = qmp.screendump(dir);
        let want = expected(shot.width, shot.height, text);
        let rows = lines * FONT.character_size.height;
        let differing = shot
            .top(rows)
            .iter()
            .zip(want.top(rows))
            .filter(|(a, b)| a != b)
            .count();
        if differing == 0 {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "the screen's first {lines} rows ({}x{}) differ from {text:?} in {differing} pixels",
            shot.width,
            shot.height
        );
        std::thread::sleep(Duration::from_millis(500));
    }
}
