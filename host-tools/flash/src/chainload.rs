//! Pushing a kernel over the serial line to the rpi4 chainloader (the
//! handshake is in `tern-chainload-protocol`).

use std::io::{self, Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use tern_chainload_protocol::{
    parse_ready, Header, HEADER_ACCEPTED, IMAGE_VERIFIED, READY_LEN, READY_MAGIC, REJECT_CHECKSUM,
    REJECT_TOO_LARGE,
};
use tern_console::PortSpec;

use crate::FlashError;

/// How long a read on an open link blocks before the caller looks at its
/// deadline again.
const POLL: Duration = Duration::from_millis(100);

/// Bytes written between two progress reports.
const CHUNK: usize = 1024;

/// A byte stream to the device whose reads time out after a short while.
pub trait Link: Read + Write + Send {}
impl<T: Read + Write + Send> Link for T {}

/// How long each step of the handshake may take.
#[derive(Clone, Copy, Debug)]
pub struct Timeouts {
    /// For the chainloader's ready message (the device may still be booting).
    pub ready: Duration,
    /// For each reply after the header and after the image. The reply after
    /// the image also gets [`SLOWEST_DEVICE_RATE`]'s time for the image.
    pub reply: Duration,
}

/// The slowest rate, in bytes per second, at which a device is expected to
/// take in the image. The host's writes can finish long before the device has
/// read the bytes (a TCP socket or the OS buffers hold them), so the wait for
/// the verdict must include the device's reading time: 1 KiB/s is a tenth of
/// 115200 baud, and slower than QEMU's emulated UART on a loaded machine.
pub const SLOWEST_DEVICE_RATE: u64 = 1024;

impl Default for Timeouts {
    fn default() -> Self {
        Self {
            ready: Duration::from_secs(30),
            reply: Duration::from_secs(30),
        }
    }
}

/// Opens `spec` for a push: serial devices exclusively at `baud`, TCP
/// endpoints (QEMU serial sockets) as they are.
pub fn open(spec: &PortSpec, baud: u32) -> Result<Box<dyn Link>, FlashError> {
    let port = spec.to_string();
    match spec {
        PortSpec::Serial(path) => {
            let link = serialport::new(path.to_string_lossy(), baud)
                .timeout(POLL)
                .open_native()
                .map_err(|error| match error.kind() {
                    // serialport reports TIOCEXCL's EBUSY and a held lock as NoDevice.
                    serialport::ErrorKind::NoDevice => FlashError::PortBusy { port: port.clone() },
                    serialport::ErrorKind::Io(io::ErrorKind::NotFound) => {
                        FlashError::NoSuchPort { port: port.clone() }
                    }
                    _ => FlashError::OpenPort {
                        port: port.clone(),
                        source: error.into(),
                    },
                })?;
            Ok(Box::new(link))
        }
        PortSpec::Tcp(address) => {
            let stream = TcpStream::connect(address).map_err(|source| match source.kind() {
                io::ErrorKind::ConnectionRefused => FlashError::NoSuchPort { port: port.clone() },
                _ => FlashError::OpenPort {
                    port: port.clone(),
                    source,
                },
            })?;
            stream
                .set_read_timeout(Some(POLL))
                .map_err(|source| FlashError::OpenPort { port, source })?;
            Ok(Box::new(stream))
        }
    }
}

/// Pushes `image` to the chainloader at the other end of `link` and returns
/// once the device has verified it (and jumps to it). `progress` gets the
/// number of image bytes sent so far; the image's length is known up front.
pub fn push<L: Read + Write + ?Sized>(
    link: &mut L,
    image: &[u8],
    timeouts: Timeouts,
    progress: &mut dyn FnMut(u64),
) -> Result<(), FlashError> {
    let header = Header::for_image(image).ok_or(FlashError::ImageTooLarge {
        size: image.len() as u64,
        limit: u32::MAX.into(),
    })?;
    let max = wait_ready(link, timeouts.ready)?;
    if header.len > max {
        return Err(FlashError::TooLargeForDevice {
            size: header.len,
            max,
        });
    }
    write_all(link, &header.encode())?;
    match reply(link, timeouts.reply)? {
        HEADER_ACCEPTED => {}
        REJECT_TOO_LARGE => {
            return Err(FlashError::TooLargeForDevice {
                size: header.len,
                max,
            })
        }
        other => return Err(FlashError::UnexpectedReply(other)),
    }
    let mut sent = 0;
    for chunk in image.chunks(CHUNK) {
        write_all(link, chunk)?;
        sent += chunk.len() as u64;
        progress(sent);
    }
    let reading_time = Duration::from_secs(image.len() as u64 / SLOWEST_DEVICE_RATE);
    match reply(link, timeouts.reply + reading_time)? {
        IMAGE_VERIFIED => Ok(()),
        REJECT_CHECKSUM => Err(FlashError::ChecksumMismatch),
        other => Err(FlashError::UnexpectedReply(other)),
    }
}

/// Reads until a whole ready message has arrived (whatever text the device
/// printed before it is skipped) and returns the device's maximum image size.
fn wait_ready<L: Read + ?Sized>(link: &mut L, timeout: Duration) -> Result<u32, FlashError> {
    let deadline = Instant::now() + timeout;
    let mut window = [0u8; READY_LEN];
    let mut seen = 0usize;
    loop {
        let byte = read_byte(link, deadline).map_err(|error| match error {
            FlashError::Timeout { .. } => FlashError::NoChainloader { waited: timeout },
            other => other,
        })?;
        window.rotate_left(1);
        window[READY_LEN - 1] = byte;
        seen += 1;
        if seen >= READY_LEN {
            if let Some(max) = parse_ready(&window) {
                return Ok(max);
            }
        }
    }
}

/// Reads the device's one-byte reply, skipping ready messages the device was
/// already sending when the host spoke.
fn reply<L: Read + ?Sized>(link: &mut L, timeout: Duration) -> Result<u8, FlashError> {
    let deadline = Instant::now() + timeout;
    loop {
        let byte = read_byte(link, deadline)?;
        if byte != READY_MAGIC[0] {
            return Ok(byte);
        }
        let mut rest = [0u8; READY_LEN - 1];
        for slot in &mut rest {
            *slot = read_byte(link, deadline)?;
        }
        if rest[..READY_MAGIC.len() - 1] != READY_MAGIC[1..] {
            return Err(FlashError::UnexpectedReply(byte));
        }
    }
}

fn read_byte<L: Read + ?Sized>(link: &mut L, deadline: Instant) -> Result<u8, FlashError> {
    let mut byte = [0u8];
    loop {
        match link.read(&mut byte) {
            Ok(0) => return Err(FlashError::LinkClosed),
            Ok(_) => return Ok(byte[0]),
            Err(error) if is_transient(&error) => {
                if Instant::now() >= deadline {
                    return Err(FlashError::Timeout {
                        what: "the chainloader's reply",
                    });
                }
            }
            Err(error) => return Err(FlashError::Link(error)),
        }
    }
}

/// Writes everything, riding out write timeouts of a slow serial line.
fn write_all<L: Write + ?Sized>(link: &mut L, mut bytes: &[u8]) -> Result<(), FlashError> {
    while !bytes.is_empty() {
        match link.write(bytes) {
            Ok(0) => return Err(FlashError::LinkClosed),
            Ok(n) => bytes = &bytes[n..],
            Err(error) if is_transient(&error) => {}
            Err(error) => return Err(FlashError::Link(error)),
        }
    }
    link.flush().map_err(FlashError::Link)
}

fn is_transient(error: &io::Error) -> bool {
    matches!(
        error.kind(),
        io::ErrorKind::TimedOut | io::ErrorKind::WouldBlock | io::ErrorKind::Interrupted
    )
}

#[cfg(test)]
mod tests {
    use std::collections::VecDeque;

    use tern_chainload_protocol::{ready_message, HEADER_LEN};

    use super::*;

    /// A scripted device: replies are queued up front, writes are recorded.
    struct FakeDevice {
        replies: VecDeque<u8>,
        written: Vec<u8>,
    }

    impl FakeDevice {
        fn new(replies: &[u8]) -> Self {
            Self {
                replies: replies.iter().copied().collect(),
                written: Vec::new(),
            }
        }
    }

    impl Read for FakeDevice {
        fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
            match self.replies.pop_front() {
                Some(byte) => {
                    buf[0] = byte;
                    Ok(1)
                }
                None => Err(io::ErrorKind::TimedOut.into()),
            }
        }
    }

    impl Write for FakeDevice {
        fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
            self.written.extend_from_slice(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    fn script(parts: &[&[u8]]) -> Vec<u8> {
        parts.concat()
    }

    const QUICK: Timeouts = Timeouts {
        ready: Duration::from_millis(50),
        reply: Duration::from_millis(50),
    };

    #[test]
    fn pushes_header_then_image_after_skipping_boot_text() {
        let image = vec![0x5a; 3000];
        let ready = ready_message(1 << 20);
        let mut device = FakeDevice::new(&script(&[
            b"chainloader ready\r\n",
            &ready,
            // A second ready message crossed the header on the wire.
            &ready,
            &[HEADER_ACCEPTED, IMAGE_VERIFIED],
        ]));
        let mut reports = Vec::new();
        push(&mut device, &image, QUICK, &mut |sent| reports.push(sent)).unwrap();
        let header = Header::for_image(&image).unwrap().encode();
        assert_eq!(&device.written[..HEADER_LEN], &header);
        assert_eq!(&device.written[HEADER_LEN..], &image[..]);
        assert_eq!(reports, [1024, 2048, 3000]);
    }

    #[test]
    fn device_errors_are_typed() {
        let image = [1u8; 100];
        let ready = ready_message(1 << 20);

        let mut checksum = FakeDevice::new(&script(&[&ready, &[HEADER_ACCEPTED, REJECT_CHECKSUM]]));
        assert!(matches!(
            push(&mut checksum, &image, QUICK, &mut |_| {}),
            Err(FlashError::ChecksumMismatch)
        ));

        let mut small = FakeDevice::new(&ready_message(64));
        assert!(matches!(
            push(&mut small, &image, QUICK, &mut |_| {}),
            Err(FlashError::TooLargeForDevice { size: 100, max: 64 })
        ));
        assert!(
            small.written.is_empty(),
            "nothing sent to a device too small"
        );

        let mut refused = FakeDevice::new(&script(&[&ready, &[REJECT_TOO_LARGE]]));
        assert!(matches!(
            push(&mut refused, &image, QUICK, &mut |_| {}),
            Err(FlashError::TooLargeForDevice { .. })
        ));

        let mut silent = FakeDevice::new(b"some other program");
        assert!(matches!(
            push(&mut silent, &image, QUICK, &mut |_| {}),
            Err(FlashError::NoChainloader { .. })
        ));

        let mut odd = FakeDevice::new(&script(&[&ready, b"?"]));
        assert!(matches!(
            push(&mut odd, &image, QUICK, &mut |_| {}),
            Err(FlashError::UnexpectedReply(b'?'))
        ));
    }

    #[test]
    fn a_port_held_by_another_program_is_busy() {
        let (_master, slave) = serialport::TTYPort::pair().unwrap();
        let path = serialport::SerialPort::name(&slave).unwrap();
        let spec: PortSpec = path.parse().unwrap();
        let _holder = open(&spec, 115_200).unwrap();
        assert!(matches!(
            open(&spec, 115_200),
            Err(FlashError::PortBusy { port }) if port == path
        ));
    }

    #[test]
    fn absent_ports_are_reported() {
        let missing: PortSpec = "/dev/tern-no-such-tty".parse().unwrap();
        assert!(matches!(
            open(&missing, 115_200),
            Err(FlashError::NoSuchPort { .. })
        ));
        // A port nobody listens on: bind one, then free it.
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let refused: PortSpec = format!("tcp:127.0.0.1:{port}").parse().unwrap();
        assert!(matches!(
            open(&refused, 115_200),
            Err(FlashError::NoSuchPort { .. })
        ));
    }
}
