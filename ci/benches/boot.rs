//! Boot benchmark: time from starting QEMU to the shell prompt, per board,
//! and the size of each deployable image.
//!
//! Run with `cargo bench -p tern-ci --bench boot` (optionally `-- ROUNDS`).
//! Every board boots ROUNDS times (default 5), the boards interleaved so that
//! machine noise hits them alike; the report gives the median and the range.
//! The time includes QEMU's own start-up, which dominates it.

use std::time::{Duration, Instant};

use tern_flash::image::KernelElf;
use tern_flash::{Board, Variant};
use tern_lab::node::{kernel, Node, BOOT_TIMEOUT};

const BOARDS: [Board; 3] = [Board::Rpi4, Board::Virt, Board::Pc];

/// Time from starting QEMU to the first prompt (the banner comes just before).
fn boot_once(board: Board) -> Duration {
    let start = Instant::now();
    let mut node = Node::boot(board).expect("QEMU starts");
    node.expect(tern_lab::node::tern_prompt(), BOOT_TIMEOUT)
        .expect("prompt");
    start.elapsed()
}

fn median(mut samples: Vec<Duration>) -> (Duration, Duration, Duration) {
    samples.sort();
    (
        samples[samples.len() / 2],
        samples[0],
        samples[samples.len() - 1],
    )
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

fn main() {
    let rounds: usize = std::env::args()
        .skip(1)
        .find_map(|a| a.parse().ok())
        .unwrap_or(5);
    println!("image sizes (release build):");
    println!("{:<18} {:>12} {:>12}", "kernel", "ELF bytes", "image bytes");
    for (board, variant) in [
        (Board::Rpi4, Variant::Tern),
        (Board::Rpi4, Variant::Chainloader),
        (Board::Virt, Variant::Tern),
        (Board::Pc, Variant::Tern),
    ] {
        let elf = KernelElf::read(&kernel(board, variant).expect("kernel builds")).expect("ELF");
        let raw = elf.raw_image(u64::MAX).expect("raw image");
        let name = match variant {
            Variant::Tern => board.name().to_string(),
            Variant::Chainloader => format!("{}-chainloader", board.name()),
        };
        println!("{:<18} {:>12} {:>12}", name, elf.bytes().len(), raw.len());
    }

    let mut samples: Vec<Vec<Duration>> = vec![Vec::new(); BOARDS.len()];
    for _ in 0..rounds {
        for (i, board) in BOARDS.iter().enumerate() {
            samples[i].push(boot_once(*board));
        }
    }
    println!("\nQEMU start -> shell prompt (TCG), {rounds} rounds, in ms:");
    println!("{:<6} {:>8} {:>8} {:>8}", "board", "median", "min", "max");
    for (board, prompt) in BOARDS.iter().zip(samples) {
        let (mid, lo, hi) = median(prompt);
        println!(
            "{:<6} {:>8.0} {:>8.0} {:>8.0}",
            board.name(),
            ms(mid),
            ms(lo),
            ms(hi)
        );
    }
}
