//! Discovery: this node's beacon on the LAN, and the peers it hears.
//!
//! Every [`BEACON_INTERVAL_MS`] (and at once when its address changes) the
//! node broadcasts a [`Beacon`] on UDP port [`BEACON_PORT`], tagged with the
//! cluster key when it has one (`docs/protocol.md`, "Discovery"). It keeps
//! the peers whose beacons it can trust: those that verify under its key,
//! or, on an insecure node, those of other insecure nodes. A peer silent
//! for [`PEER_TTL_NS`] is forgotten. `migrate`, `sync` and a peer's
//! `MigrateTo` then take a node id where they take an address.

use alloc::vec;
use alloc::vec::Vec;
use core::fmt::Write;

use smoltcp::iface::SocketHandle;
use smoltcp::socket::udp;
use smoltcp::wire::{IpAddress, IpEndpoint, Ipv4Address};
use tern_protocol::beacon::BEACON_INTERVAL_MS;
use tern_protocol::{
    format_node_id, parse_node_id, Beacon, BeaconSecurity, Security, BEACON_PORT, PROTOCOL_VERSION,
};

use super::{parse_endpoint, Context, ControlError, CONTROL_PORT};

/// A peer not heard for this long is forgotten.
pub const PEER_TTL_NS: u64 = 5 * BEACON_INTERVAL_MS * 1_000_000;

/// Datagrams the beacon socket holds between two turns.
const QUEUED: usize = 8;

/// A node heard on the LAN.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Peer {
    /// Its beacon.
    pub beacon: Beacon,
    /// Whether its tag verified under this node's key (false: both insecure).
    pub authenticated: bool,
    /// When it was last heard.
    pub heard_ns: u64,
}

impl Peer {
    /// Its control service.
    pub fn endpoint(&self) -> IpEndpoint {
        let [a, b, c, d] = self.beacon.address;
        IpEndpoint::new(
            IpAddress::Ipv4(Ipv4Address::new(a, b, c, d)),
            self.beacon.control_port,
        )
    }
}

/// The beacon socket and the peers heard.
pub(super) struct Discovery {
    socket: SocketHandle,
    next_ns: u64,
    /// The address the last beacon announced.
    announced: Option<[u8; 4]>,
    peers: Vec<Peer>,
    /// Datagrams refused (not a beacon, wrong key, other mode).
    refused: u64,
}

impl Discovery {
    /// A beacon socket on `ctx`'s stack.
    pub(super) fn new(ctx: &mut Context) -> Self {
        let buffer = || {
            udp::PacketBuffer::new(
                vec![udp::PacketMetadata::EMPTY; QUEUED],
                vec![0; QUEUED * tern_protocol::beacon::MAX_BEACON_LEN],
            )
        };
        let socket = ctx
            .net
            .borrow_mut()
            .add_socket(udp::Socket::new(buffer(), buffer()));
        Self {
            socket,
            next_ns: 0,
            announced: None,
            peers: Vec::new(),
            refused: 0,
        }
    }

    /// Sends the beacon when due, reads the peers'; whether anything happened.
    pub(super) fn poll(&mut self, ctx: &Context, now_ns: u64) -> bool {
        let mut net = ctx.net.borrow_mut();
        let Some(config) = net.ipv4() else {
            self.announced = None;
            return false;
        };
        let address = config.cidr.address().octets();
        let socket = net.socket::<udp::Socket>(self.socket);
        if !socket.is_open() {
            // Only fails for port 0 or an open socket, neither the case.
            let _ = socket.bind(BEACON_PORT);
        }
        let psk = match &ctx.security {
            Some(Security::Key(psk)) => Some(psk),
            _ => None,
        };
        let mut busy = false;
        while let Ok((data, _)) = socket.recv() {
            busy = true;
            match Beacon::decode(data, psk) {
                Ok((beacon, verified)) if beacon.node_id != ctx.node_id => {
                    let trusted = match (&ctx.security, verified) {
                        (Some(Security::Key(_)), Some(true)) => Some(true),
                        (Some(Security::ExplicitlyInsecure), None)
                            if beacon.security == BeaconSecurity::Insecure =>
                        {
                            Some(false)
                        }
                        _ => None,
                    };
                    match trusted {
                        Some(authenticated) => {
                            self.peers.retain(|p| p.beacon.node_id != beacon.node_id);
                            self.peers.push(Peer {
                                beacon,
                                authenticated,
                                heard_ns: now_ns,
                            });
                        }
                        None => self.refused += 1,
                    }
                }
                Ok(_) => {}
                Err(_) => self.refused += 1,
            }
        }
        self.peers
            .retain(|p| now_ns.saturating_sub(p.heard_ns) < PEER_TTL_NS);
        let moved = self.announced != Some(address);
        if (now_ns >= self.next_ns || moved) && socket.can_send() {
            let facts = ctx.board.facts();
            let beacon = Beacon {
                version: PROTOCOL_VERSION,
                node_id: ctx.node_id,
                board: facts.board.into(),
                isa: facts.isa.name().into(),
                address,
                prefix: config.cidr.prefix_len(),
                control_port: CONTROL_PORT,
                security: match &ctx.security {
                    Some(Security::Key(_)) => BeaconSecurity::Keyed,
                    Some(Security::ExplicitlyInsecure) => BeaconSecurity::Insecure,
                    None => BeaconSecurity::NoKey,
                },
                uptime_ms: now_ns / 1_000_000,
            };
            let to = IpEndpoint::new(IpAddress::Ipv4(Ipv4Address::BROADCAST), BEACON_PORT);
            if socket.send_slice(&beacon.encode(psk), to).is_ok() {
                self.announced = Some(address);
                self.next_ns = now_ns + BEACON_INTERVAL_MS * 1_000_000;
                busy = true;
            }
        }
        busy
    }

    /// The peers heard lately.
    pub(super) fn peers(&self) -> &[Peer] {
        &self.peers
    }

    /// `address[:port]`, or a node id heard lately, as a control endpoint.
    pub(super) fn resolve(&self, text: &str) -> Result<IpEndpoint, ControlError> {
        let Some(id) = parse_node_id(text) else {
            return parse_endpoint(text);
        };
        self.peers
            .iter()
            .find(|p| p.beacon.node_id == id)
            .map(Peer::endpoint)
            .ok_or_else(|| ControlError::UnknownNode(format_node_id(id)))
    }

    /// The `peers` command's table.
    pub(super) fn print(&self, now_ns: u64, out: &mut dyn Write) {
        if self.peers.is_empty() {
            let _ = write!(out, "peers: none heard (beacons on UDP {BEACON_PORT})\r\n");
        }
        for p in &self.peers {
            let b = &p.beacon;
            let _ = write!(
                out,
                "{} {:<5} {:<8} {} {}s ago{}\r\n",
                format_node_id(b.node_id),
                b.board,
                b.isa,
                p.endpoint(),
                now_ns.saturating_sub(p.heard_ns) / 1_000_000_000,
                if p.authenticated { "" } else { " INSECURE" }
            );
        }
        if self.refused > 0 {
            let _ = write!(
                out,
                "({} datagrams refused: not beacons, or another key or mode)\r\n",
                self.refused
            );
        }
    }
}
