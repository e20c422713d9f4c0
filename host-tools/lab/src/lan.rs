//! What a real LAN gives a node, inside a lab: a DHCP server (Debian's
//! `dnsmasq`, run in the lab's namespace on its bridge) and an SNTP server
//! (a small responder here, answering with the host's clock), so that nodes
//! take their addresses and their wall clock as they would on an office
//! switch; and the beacons the nodes send, heard from inside the lab.

use std::io::{self, Read};
use std::net::{Ipv4Addr, SocketAddr, UdpSocket};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use tern_client::discovery::{self, Discovered};
use tern_protocol::Security;

use crate::netlab::{NetlabError, Netns, HOST_ADDRESS, SUBNET};

/// The first and last address the lab's DHCP server leases.
pub const DHCP_RANGE: (u8, u8) = (100, 199);

/// Seconds of a lease (dnsmasq's minimum is two minutes).
pub const LEASE_S: u32 = 120;

/// `dnsmasq` serving DHCP on the lab's bridge; stopped on drop.
#[derive(Debug)]
pub struct DhcpServer {
    child: Child,
    _leases: tempfile::TempDir,
}

impl DhcpServer {
    /// Starts dnsmasq in `ns` on its bridge: leases from [`DHCP_RANGE`],
    /// the bridge as router, DNS and NTP server; no DNS service.
    pub fn start(ns: &Netns) -> Result<Self, NetlabError> {
        let leases = tempfile::tempdir().map_err(|source| NetlabError::Io {
            what: "creating dnsmasq's lease directory".into(),
            source,
        })?;
        let (first, last) = DHCP_RANGE;
        let args = dnsmasq_args(&leases.path().join("leases").display().to_string());
        let mut child = Command::new("ip")
            .args(["netns", "exec", ns.name(), "dnsmasq"])
            .args(&args)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(|source| NetlabError::Io {
                what: "starting dnsmasq".into(),
                source,
            })?;
        // dnsmasq checks its options and binds at once: a failure ends it.
        std::thread::sleep(Duration::from_millis(300));
        if let Ok(Some(status)) = child.try_wait() {
            let mut stderr = String::new();
            if let Some(mut e) = child.stderr.take() {
                let _ = e.read_to_string(&mut stderr);
            }
            if stderr.contains("No such file") || stderr.is_empty() && !status.success() {
                return Err(NetlabError::MissingTool("dnsmasq"));
            }
            return Err(NetlabError::Command {
                command: format!("dnsmasq {}", args.join(" ")),
                status,
                stderr: format!("{} (leases {SUBNET}.{first}-{last})", stderr.trim()),
            });
        }
        Ok(Self {
            child,
            _leases: leases,
        })
    }
}

/// dnsmasq's arguments, its lease file at `leases`.
fn dnsmasq_args(leases: &str) -> Vec<String> {
    let (first, last) = DHCP_RANGE;
    vec![
        "--keep-in-foreground".into(),
        "--conf-file=/dev/null".into(),
        // DHCP only: no DNS service on port 53.
        "--port=0".into(),
        "--user=root".into(),
        "--pid-file=".into(),
        "--interface=br0".into(),
        "--bind-interfaces".into(),
        format!("--dhcp-range={SUBNET}.{first},{SUBNET}.{last},255.255.255.0,{LEASE_S}s"),
        format!("--dhcp-option=option:router,{HOST_ADDRESS}"),
        format!("--dhcp-option=option:dns-server,{HOST_ADDRESS}"),
        format!("--dhcp-option=option:ntp-server,{HOST_ADDRESS}"),
        format!("--dhcp-leasefile={leases}"),
        "--log-dhcp".into(),
    ]
}

impl Drop for DhcpServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The port SNTP servers answer on.
pub const NTP_PORT: u16 = 123;

/// Seconds from the NTP era (1900) to the Unix epoch.
const NTP_UNIX_OFFSET_S: u64 = 2_208_988_800;

/// An SNTP server on the lab's bridge address, answering every query with
/// the host's clock; stopped on drop.
#[derive(Debug)]
pub struct SntpServer {
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
    answered: Arc<std::sync::atomic::AtomicU64>,
}

impl SntpServer {
    /// Listens on `HOST_ADDRESS:port` inside `ns` (123 for nodes).
    pub fn start(ns: &Netns, port: u16) -> Result<Self, NetlabError> {
        let addr = SocketAddr::from((host_address(), port));
        let socket = ns
            .run(move || UdpSocket::bind(addr))?
            .map_err(|source| NetlabError::Io {
                what: format!("binding the SNTP server to {addr}"),
                source,
            })?;
        let io_err = |source| NetlabError::Io {
            what: "setting the SNTP socket's timeout".into(),
            source,
        };
        socket
            .set_read_timeout(Some(Duration::from_millis(100)))
            .map_err(io_err)?;
        let stop = Arc::new(AtomicBool::new(false));
        let answered = Arc::new(std::sync::atomic::AtomicU64::new(0));
        let (flag, count) = (stop.clone(), answered.clone());
        let thread = std::thread::spawn(move || {
            let mut buf = [0u8; 512];
            while !flag.load(Ordering::Relaxed) {
                let Ok((n, from)) = socket.recv_from(&mut buf) else {
                    continue;
                };
                if let Some(reply) = sntp_reply(&buf[..n], SystemTime::now()) {
                    if socket.send_to(&reply, from).is_ok() {
                        count.fetch_add(1, Ordering::Relaxed);
                    }
                }
            }
        });
        Ok(Self {
            stop,
            thread: Some(thread),
            answered,
        })
    }

    /// Queries answered so far.
    pub fn answered(&self) -> u64 {
        self.answered.load(Ordering::Relaxed)
    }
}

impl Drop for SntpServer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

fn host_address() -> Ipv4Addr {
    // A constant of this module: it parses.
    HOST_ADDRESS.parse().unwrap_or(Ipv4Addr::UNSPECIFIED)
}

/// The answer to an SNTP client `query` at time `now` (stratum 1, the
/// query's transmit time echoed as the originate time), or `None` for a
/// datagram that is not a client query.
pub fn sntp_reply(query: &[u8], now: SystemTime) -> Option<[u8; 48]> {
    if query.len() < 48 || query[0] & 0x7 != 3 {
        return None;
    }
    let since = now.duration_since(UNIX_EPOCH).ok()?;
    let secs = (since.as_secs() + NTP_UNIX_OFFSET_S) as u32;
    let frac = ((u64::from(since.subsec_nanos()) << 32) / 1_000_000_000) as u32;
    let mut reply = [0u8; 48];
    reply[0] = 0x24; // version 4, mode 4 (server)
    reply[1] = 1; // stratum 1
    reply[12..16].copy_from_slice(b"LOCL");
    reply[24..32].copy_from_slice(&query[40..48]);
    for at in [16, 32, 40] {
        reply[at..at + 4].copy_from_slice(&secs.to_be_bytes());
        reply[at + 4..at + 8].copy_from_slice(&frac.to_be_bytes());
    }
    Some(reply)
}

/// Listens inside `ns` for beacons for at most `wait`, until `done` holds.
pub fn listen(
    ns: &Netns,
    security: Option<&Security>,
    wait: Duration,
    mut done: impl FnMut(&[Discovered]) -> bool,
) -> Result<Vec<Discovered>, NetlabError> {
    let socket = ns
        .run(discovery::beacon_socket)?
        .map_err(|source| NetlabError::Io {
            what: "listening for beacons in the lab".into(),
            source,
        })?;
    let io_err = |source: io::Error| NetlabError::Io {
        what: "reading beacons in the lab".into(),
        source,
    };
    discovery::listen_on(&socket, security, wait, |heard| {
        let nodes: Vec<Discovered> = heard.values().cloned().collect();
        done(&nodes)
    })
    .map_err(io_err)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dnsmasq_serves_the_lab_subnet_with_the_bridge_as_router_and_ntp() {
        let args = dnsmasq_args("/tmp/x/leases").join(" ");
        assert!(
            args.contains("--dhcp-range=10.0.2.100,10.0.2.199,255.255.255.0,120s"),
            "{args}"
        );
        assert!(
            args.contains("--dhcp-option=option:ntp-server,10.0.2.1"),
            "{args}"
        );
        assert!(args.contains("--port=0"), "{args}");
    }

    #[test]
    fn sntp_replies_echo_the_query_and_carry_the_time() {
        let mut query = [0u8; 48];
        query[0] = 0x23;
        query[40..48].copy_from_slice(&[9, 8, 7, 6, 5, 4, 3, 2]);
        let now = UNIX_EPOCH + Duration::from_millis(1_796_083_200_250);
        let reply = sntp_reply(&query, now).unwrap();
        assert_eq!(reply[0] & 7, 4);
        assert_eq!(&reply[24..32], &query[40..48]);
        let secs = u64::from(u32::from_be_bytes(reply[40..44].try_into().unwrap()));
        assert_eq!(secs - NTP_UNIX_OFFSET_S, 1_796_083_200);
        let frac = u64::from(u32::from_be_bytes(reply[44..48].try_into().unwrap()));
        assert_eq!((frac * 1000) >> 32, 250);
        query[0] = 0x24;
        assert!(sntp_reply(&query, now).is_none(), "a server's packet");
        assert!(sntp_reply(&query[..40], now).is_none());
    }
}
