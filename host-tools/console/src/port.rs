//! Where the console connects: a serial device or a TCP socket (QEMU's
//! `-serial tcp:...`), opened as one byte stream.

use std::fmt;
use std::io::{self, Read, Write};
use std::net::TcpStream;
use std::path::PathBuf;
use std::str::FromStr;
use std::time::Duration;

use crate::ConsoleError;

/// How long a read waits for bytes before the console looks at the keyboard
/// again; short enough that typing feels immediate.
pub(crate) const READ_TIMEOUT: Duration = Duration::from_millis(20);

/// The device end of the console.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PortSpec {
    /// A serial device such as `/dev/ttyUSB0`.
    Serial(PathBuf),
    /// A TCP endpoint `HOST:PORT`, e.g. a QEMU serial socket.
    Tcp(String),
}

impl FromStr for PortSpec {
    type Err = ConsoleError;

    /// Parses `tcp:HOST:PORT` or a device path.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let invalid = || ConsoleError::InvalidPort(s.to_owned());
        match s.strip_prefix("tcp:") {
            Some(address) => {
                let (host, port) = address.rsplit_once(':').ok_or_else(invalid)?;
                if host.is_empty() || port.parse::<u16>().is_err() {
                    return Err(invalid());
                }
                Ok(Self::Tcp(address.to_owned()))
            }
            None if s.is_empty() => Err(invalid()),
            None => Ok(Self::Serial(PathBuf::from(s))),
        }
    }
}

impl fmt::Display for PortSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Serial(path) => write!(f, "{}", path.display()),
            Self::Tcp(address) => write!(f, "tcp:{address}"),
        }
    }
}

/// An open connection to the device: reads time out after [`READ_TIMEOUT`].
pub(crate) trait Link: Read + Write + Send {}
impl<T: Read + Write + Send> Link for T {}

/// Opens `spec`; serial devices exclusively, at `baud` bits per second.
pub(crate) fn open(spec: &PortSpec, baud: u32) -> Result<Box<dyn Link>, ConsoleError> {
    match spec {
        PortSpec::Serial(path) => {
            let port = serialport::new(path.to_string_lossy(), baud)
                .timeout(READ_TIMEOUT)
                .open_native()
                .map_err(|error| serial_error(spec, error))?;
            Ok(Box::new(port))
        }
        PortSpec::Tcp(address) => {
            let stream = TcpStream::connect(address).map_err(|source| match source.kind() {
                io::ErrorKind::ConnectionRefused => ConsoleError::NoSuchPort {
                    port: spec.to_string(),
                },
                _ => ConsoleError::Open {
                    port: spec.to_string(),
                    source,
                },
            })?;
            let configure = |stream: &TcpStream| -> io::Result<()> {
                stream.set_read_timeout(Some(READ_TIMEOUT))?;
                // Keystrokes go out one by one; do not batch them.
                stream.set_nodelay(true)
            };
            configure(&stream).map_err(|source| ConsoleError::Open {
                port: spec.to_string(),
                source,
            })?;
            Ok(Box::new(stream))
        }
    }
}

fn serial_error(spec: &PortSpec, error: serialport::Error) -> ConsoleError {
    let port = spec.to_string();
    match error.kind() {
        // serialport reports both TIOCEXCL's EBUSY and a held flock as NoDevice.
        serialport::ErrorKind::NoDevice => ConsoleError::PortBusy { port },
        serialport::ErrorKind::Io(io::ErrorKind::NotFound) => ConsoleError::NoSuchPort { port },
        _ => ConsoleError::Open {
            port,
            source: error.into(),
        },
    }
}

#[cfg(test)]
mod tests {
    use serialport::SerialPort;

    use super::*;

    #[test]
    fn parses_ports() {
        assert_eq!(
            "tcp:127.0.0.1:4444".parse::<PortSpec>().unwrap(),
            PortSpec::Tcp("127.0.0.1:4444".into())
        );
        assert_eq!(
            "tcp:[::1]:4444".parse::<PortSpec>().unwrap(),
            PortSpec::Tcp("[::1]:4444".into())
        );
        assert_eq!(
            "/dev/ttyUSB0".parse::<PortSpec>().unwrap(),
            PortSpec::Serial("/dev/ttyUSB0".into())
        );
        for bad in [
            "",
            "tcp:",
            "tcp:host",
            "tcp::80",
            "tcp:host:99999",
            "tcp:host:x",
        ] {
            assert!(
                matches!(bad.parse::<PortSpec>(), Err(ConsoleError::InvalidPort(_))),
                "{bad:?}"
            );
        }
        let spec: PortSpec = "tcp:localhost:1".parse().unwrap();
        assert_eq!(spec.to_string(), "tcp:localhost:1");
    }

    #[test]
    fn absent_serial_port_is_reported_as_such() {
        let spec = PortSpec::Serial("/dev/tern-no-such-tty".into());
        let error = open(&spec, 115_200).err().expect("open must fail");
        assert!(matches!(error, ConsoleError::NoSuchPort { .. }), "{error}");
        assert!(error.to_string().starts_with("no such port"));
    }

    #[test]
    fn second_open_of_a_serial_port_is_busy() {
        let (_master, slave) = serialport::TTYPort::pair().expect("pty pair");
        let path = slave.name().expect("pty name");
        // The pair's own slave handle is open already; release it so that
        // this test's first open is the one holding the port.
        drop(slave);
        let spec = PortSpec::Serial(path.into());
        let _first = open(&spec, 115_200).expect("first open");
        let error = open(&spec, 115_200).err().expect("second open must fail");
        assert!(matches!(error, ConsoleError::PortBusy { .. }), "{error}");
        assert!(error.to_string().starts_with("port busy"));
    }

    #[test]
    fn tcp_with_nobody_listening_is_no_such_port() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let address = listener.local_addr().unwrap();
        drop(listener);
        let error = open(&PortSpec::Tcp(address.to_string()), 0)
            .err()
            .expect("connect must fail");
        assert!(matches!(error, ConsoleError::NoSuchPort { .. }), "{error}");
    }
}
