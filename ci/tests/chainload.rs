//! Chainload test: QEMU raspi4b runs the chainloader with its serial port on
//! a TCP socket; `flash`'s push sends the Tern kernel and the kernel's banner
//! appears; a push corrupted on the wire is rejected and nothing is started.

use std::io::{self, Read, Write};

use tern_chainload_protocol::HEADER_LEN;
use tern_flash::chainload::{self, Timeouts};
use tern_flash::image::KernelElf;
use tern_flash::qemu::halt_status;
use tern_flash::{Board, FlashError, Variant};
use tern_lab::node::{kernel, Boot, Node, SerialMode, BOOT_TIMEOUT, REPLY_TIMEOUT};

/// A link that flips one bit of the byte at `offset` of what the host sends,
/// as line noise would.
struct Noisy<L> {
    inner: L,
    sent: usize,
    offset: usize,
}

impl<L: Read> Read for Noisy<L> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        self.inner.read(buf)
    }
}

impl<L: Write> Write for Noisy<L> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let mut bytes = buf.to_vec();
        if (self.sent..self.sent + bytes.len()).contains(&self.offset) {
            bytes[self.offset - self.sent] ^= 0x10;
        }
        let n = self.inner.write(&bytes)?;
        self.sent += n;
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

#[test]
fn chainloader_rejects_a_corrupted_push_then_boots_a_good_one() {
    let loader = kernel(Board::Rpi4, Variant::Chainloader).unwrap();
    let tern = KernelElf::read(&kernel(Board::Rpi4, Variant::Tern).unwrap()).unwrap();
    let image = tern.raw_image(Board::Rpi4.raw_image_limit()).unwrap();

    let mut node = Node::start(Board::Rpi4, Boot::Elf(loader), SerialMode::Tcp).unwrap();
    node.expect("waiting for a kernel", BOOT_TIMEOUT).unwrap();

    // One byte flipped after the header: the checksum no longer matches.
    let mut noisy = Noisy {
        inner: node.link(),
        sent: 0,
        offset: HEADER_LEN + 1000,
    };
    let result = chainload::push(&mut noisy, &image, Timeouts::default(), &mut |_| {});
    assert!(
        matches!(result, Err(FlashError::ChecksumMismatch)),
        "{result:?}"
    );
    node.expect("checksum mismatch", REPLY_TIMEOUT).unwrap();

    // The chainloader waits for another attempt; a clean push boots Tern.
    let mut progress = Vec::new();
    chainload::push(&mut node.link(), &image, Timeouts::default(), &mut |sent| {
        progress.push(sent)
    })
    .unwrap();
    assert_eq!(progress.last(), Some(&(image.len() as u64)));
    node.expect(
        concat!("Tern ", env!("CARGO_PKG_VERSION"), " on rpi4 (aarch64)\r\n"),
        BOOT_TIMEOUT,
    )
    .unwrap();
    node.expect(tern_lab::node::tern_prompt(), BOOT_TIMEOUT)
        .unwrap();
    let info = node.command("info").unwrap();
    assert!(info.contains("board: rpi4"), "{info}");
    node.send_line("halt 3").unwrap();
    assert_eq!(
        node.wait_exit(REPLY_TIMEOUT).unwrap(),
        halt_status(Board::Rpi4, 3)
    );
}
