//! Finding nodes on the LAN: every node broadcasts a beacon on UDP port
//! [`BEACON_PORT`] every two seconds (`docs/protocol.md`, "Discovery");
//! [`listen`] collects the beacons heard for a while, [`resolve`] turns a
//! node id into the address of its control service, and
//! [`NodeClient::connect_to`] connects by id or address alike, checking
//! the node id in the authenticated handshake (a replayed beacon cannot
//! send the client to another node).

use std::collections::BTreeMap;
use std::io;
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4, UdpSocket};
use std::time::{Duration, Instant};

use socket2::{Domain, Protocol, Socket, Type};
use tern_protocol::beacon::{BEACON_INTERVAL_MS, MAX_BEACON_LEN};
use tern_protocol::{format_node_id, parse_node_id, Beacon, BeaconSecurity, Security, BEACON_PORT};

use crate::{NodeClient, NodeError};

/// How long [`resolve`] listens for a node id by default: three beacon
/// intervals, so one lost datagram does not hide a node.
pub const RESOLVE_WAIT: Duration = Duration::from_millis(3 * BEACON_INTERVAL_MS);

/// How far a heard node can be trusted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Trust {
    /// Its beacon's tag verified under our key.
    Verified,
    /// It is keyed, but not with our key.
    OtherKey,
    /// It is keyed; we have no key to check its beacon with.
    Unverified,
    /// It runs in explicit insecure mode.
    Insecure,
    /// It has no key yet: it refuses every connection.
    NoKey,
}

impl Trust {
    /// How `tern nodes discover` shows it.
    pub fn label(self) -> &'static str {
        match self {
            Trust::Verified => "verified",
            Trust::OtherKey => "OTHER KEY",
            Trust::Unverified => "keyed (unverified: no key given)",
            Trust::Insecure => "INSECURE",
            Trust::NoKey => "no key",
        }
    }
}

/// A node heard on the LAN.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Discovered {
    /// Its beacon (id, board, ISA, address, control port, uptime).
    pub beacon: Beacon,
    /// Whether its beacon verified.
    pub trust: Trust,
    /// Where the beacon came from.
    pub from: SocketAddr,
}

impl Discovered {
    /// The node's id as text.
    pub fn id(&self) -> String {
        format_node_id(self.beacon.node_id)
    }

    /// Its control service.
    pub fn control(&self) -> SocketAddr {
        let [a, b, c, d] = self.beacon.address;
        SocketAddr::V4(SocketAddrV4::new(
            Ipv4Addr::new(a, b, c, d),
            self.beacon.control_port,
        ))
    }
}

/// A socket on the beacon port that shares it with other listeners on this
/// host (several tools may listen at once).
pub fn beacon_socket() -> io::Result<UdpSocket> {
    let socket = Socket::new(Domain::IPV4, Type::DGRAM, Some(Protocol::UDP))?;
    socket.set_reuse_address(true)?;
    socket.set_reuse_port(true)?;
    socket.set_broadcast(true)?;
    socket.bind(&SocketAddr::from((Ipv4Addr::UNSPECIFIED, BEACON_PORT)).into())?;
    Ok(socket.into())
}

/// Judges one datagram under `security` (none: we hold no key): the node it
/// announces and how far it is trusted, or `None` for anything that is not
/// a beacon.
pub fn judge(bytes: &[u8], from: SocketAddr, security: Option<&Security>) -> Option<Discovered> {
    let psk = match security {
        Some(Security::Key(psk)) => Some(psk),
        _ => None,
    };
    let (beacon, verified) = Beacon::decode(bytes, psk).ok()?;
    let trust = match (beacon.security, verified) {
        (BeaconSecurity::Keyed, Some(true)) => Trust::Verified,
        (BeaconSecurity::Keyed, Some(false)) => Trust::OtherKey,
        (BeaconSecurity::Keyed, None) if security.is_none() => Trust::Unverified,
        (BeaconSecurity::Keyed, None) => Trust::OtherKey,
        (BeaconSecurity::Insecure, _) => Trust::Insecure,
        (BeaconSecurity::NoKey, _) => Trust::NoKey,
    };
    Some(Discovered {
        beacon,
        trust,
        from,
    })
}

/// Listens on `socket` for `wait` (or until `done` holds for what was
/// heard); the nodes heard, one entry per node id (its latest beacon),
/// sorted by id.
pub fn listen_on(
    socket: &UdpSocket,
    security: Option<&Security>,
    wait: Duration,
    mut done: impl FnMut(&BTreeMap<u64, Discovered>) -> bool,
) -> io::Result<Vec<Discovered>> {
    let deadline = Instant::now() + wait;
    let mut heard = BTreeMap::new();
    let mut buf = [0u8; MAX_BEACON_LEN + 1];
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() || done(&heard) {
            break;
        }
        socket.set_read_timeout(Some(left))?;
        match socket.recv_from(&mut buf) {
            Ok((n, from)) => {
                if let Some(node) = judge(&buf[..n], from, security) {
                    heard.insert(node.beacon.node_id, node);
                }
            }
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                ) =>
            {
                break
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(heard.into_values().collect())
}

/// The nodes heard on this host's networks within `wait`, judged under
/// `security` (none: no key to check beacons with).
pub fn listen(security: Option<&Security>, wait: Duration) -> io::Result<Vec<Discovered>> {
    listen_on(&beacon_socket()?, security, wait, |_| false)
}

/// The control address of `target`: an `address:port` (or `address`,
/// port 4470) as it is, or a node id heard within `wait` whose beacon
/// verifies under `security` (or, insecure, an insecure node); with the
/// node id to expect in the handshake.
pub fn resolve(
    target: &str,
    security: &Security,
    wait: Duration,
) -> Result<(String, Option<u64>), NodeError> {
    let Some(id) = parse_node_id(target) else {
        let addr = if target.contains(':') {
            target.to_string()
        } else {
            format!("{target}:{}", crate::CONTROL_PORT)
        };
        return Ok((addr, None));
    };
    let not_heard = |source: io::Error| NodeError::Resolve {
        addr: target.into(),
        source,
    };
    let socket = beacon_socket().map_err(not_heard)?;
    let heard =
        listen_on(&socket, Some(security), wait, |h| h.contains_key(&id)).map_err(not_heard)?;
    let Some(node) = heard.into_iter().find(|n| n.beacon.node_id == id) else {
        return Err(not_heard(io::Error::new(
            io::ErrorKind::NotFound,
            format!("no beacon of node {target} heard within {wait:?}"),
        )));
    };
    let acceptable = matches!(
        (node.trust, security),
        (Trust::Verified, _) | (Trust::Insecure, Security::ExplicitlyInsecure)
    );
    if !acceptable {
        return Err(not_heard(io::Error::new(
            io::ErrorKind::PermissionDenied,
            format!(
                "node {target} was heard at {} but its beacon is {} (not this key's)",
                node.control(),
                node.trust.label()
            ),
        )));
    }
    Ok((node.control().to_string(), Some(id)))
}

impl NodeClient {
    /// Connects to `target`, a node id heard on the LAN or an address, and
    /// completes the handshake; a node that answers with another id than
    /// the one asked for is refused.
    pub fn connect_to(
        target: &str,
        security: Security,
        timeout: Duration,
    ) -> Result<Self, NodeError> {
        let (addr, id) = resolve(target, &security, RESOLVE_WAIT)?;
        let client = Self::connect(&addr, security, timeout)?;
        match id {
            Some(id) if client.peer().node_id != id => Err(NodeError::OtherNode {
                addr,
                expected: format_node_id(id),
                got: format_node_id(client.peer().node_id),
            }),
            _ => Ok(client),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tern_protocol::{Psk, PROTOCOL_VERSION};

    fn beacon(security: BeaconSecurity) -> Beacon {
        Beacon {
            version: PROTOCOL_VERSION,
            node_id: 0x5254_007e_0002,
            board: "virt".into(),
            isa: "aarch64".into(),
            address: [10, 0, 2, 100],
            prefix: 24,
            control_port: 4470,
            security,
            uptime_ms: 9,
        }
    }

    #[test]
    fn beacons_are_judged_by_the_key() {
        let key = Security::Key(Psk([3; 32]));
        let from: SocketAddr = "10.0.2.100:4473".parse().unwrap();
        let keyed = beacon(BeaconSecurity::Keyed).encode(Some(&Psk([3; 32])));
        let node = judge(&keyed, from, Some(&key)).unwrap();
        assert_eq!(node.trust, Trust::Verified);
        assert_eq!(node.id(), "5254007e0002");
        assert_eq!(node.control().to_string(), "10.0.2.100:4470");
        let other = judge(&keyed, from, Some(&Security::Key(Psk([4; 32])))).unwrap();
        assert_eq!(other.trust, Trust::OtherKey);
        assert_eq!(judge(&keyed, from, None).unwrap().trust, Trust::Unverified);
        let insecure = beacon(BeaconSecurity::Insecure).encode(None);
        assert_eq!(
            judge(&insecure, from, Some(&key)).unwrap().trust,
            Trust::Insecure
        );
        assert_eq!(judge(b"not a beacon", from, Some(&key)), None);
    }

    #[test]
    fn addresses_resolve_to_themselves_without_listening() {
        let key = Security::Key(Psk([3; 32]));
        assert_eq!(
            resolve("10.0.2.7", &key, Duration::ZERO).unwrap(),
            ("10.0.2.7:4470".into(), None)
        );
        assert_eq!(
            resolve("10.0.2.7:99", &key, Duration::ZERO).unwrap(),
            ("10.0.2.7:99".into(), None)
        );
    }

    #[test]
    fn a_beacon_heard_on_the_loopback_resolves_its_node_id() {
        // Only this process's own datagrams: sent to the loopback address.
        let psk = Psk([5; 32]);
        let key = Security::Key(psk.clone());
        let socket = beacon_socket().unwrap();
        let sender = UdpSocket::bind("127.0.0.1:0").unwrap();
        let mut b = beacon(BeaconSecurity::Keyed);
        b.address = [127, 0, 0, 1];
        sender
            .send_to(&b.encode(Some(&psk)), ("127.0.0.1", BEACON_PORT))
            .unwrap();
        let heard = listen_on(&socket, Some(&key), Duration::from_secs(2), |h| {
            h.contains_key(&b.node_id)
        })
        .unwrap();
        assert!(
            heard
                .iter()
                .any(|n| n.beacon == b && n.trust == Trust::Verified),
            "{heard:?}"
        );
    }
}
