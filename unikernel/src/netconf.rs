//! How a node joins a LAN by itself: its address by DHCP, a link-local
//! fallback while no server answers, and its wall clock by SNTP.
//!
//! [`NetConf`] is a run-loop service on the shared network stack. While the
//! stack's addressing is [`Addressing::Automatic`] (the default; `net dhcp`)
//! it runs smoltcp's DHCPv4 client, sending the hostname
//! `tern-<board>-<node id>` and asking for the subnet mask, router, DNS and
//! NTP servers; it applies each lease, renews it (smoltcp renews at half the
//! lease) and counts the renewals. If no server has answered
//! [`FALLBACK_NS`] after the start, it takes a link-local address
//! (`169.254.x.y/16`, picked from the MAC as RFC 3927 suggests, without its
//! ARP probing) and keeps asking: a later lease replaces it. A static
//! address (`net <address>/<prefix>`) parks the client.
//!
//! SNTP (RFC 4330) sets [`crate::wallclock`] from the server the DHCP lease
//! named (option 42) or the one set with `time server <address>`: one query
//! at once, then every [`SNTP_INTERVAL_NS`], retried every
//! [`SNTP_RETRY_NS`] while unanswered.

use alloc::boxed::Box;
use alloc::rc::Rc;
use alloc::string::{String, ToString};
use alloc::vec;
use alloc::vec::Vec;
use core::cell::RefCell;
use core::fmt::Write;

use smoltcp::iface::SocketHandle;
use smoltcp::socket::{dhcpv4, udp, Socket};
use smoltcp::time::Duration;
use smoltcp::wire::{DhcpOption, IpEndpoint, Ipv4Address, Ipv4Cidr};
use tern_protocol::NodeEvent;

use crate::kernel::{Kernel, Service, ServiceStatus, Turn};
use crate::net::{AddressSource, Addressing, Ipv4Config, SharedNet};
use crate::shell::{Command, CommandResult};
use crate::wallclock;

/// How long DHCP may stay unanswered before the link-local fallback.
pub const FALLBACK_NS: u64 = 10_000_000_000;

/// Pause between two successful SNTP queries.
pub const SNTP_INTERVAL_NS: u64 = 15 * 60 * 1_000_000_000;

/// Pause before asking again when a query went unanswered.
pub const SNTP_RETRY_NS: u64 = 5_000_000_000;

/// The SNTP server port, and the local port queries come from.
const NTP_PORT: u16 = 123;
const SNTP_LOCAL_PORT: u16 = 4123;

/// DHCP option codes: host name, NTP servers.
const OPT_HOST_NAME: u8 = 12;
const OPT_NTP_SERVERS: u8 = 42;

/// The parameters asked of a DHCP server: subnet mask, router, DNS, NTP.
const PARAMETERS: &[u8] = &[1, 3, 6, OPT_NTP_SERVERS];

/// Seconds from the NTP era (1900) to the Unix epoch (1970).
const NTP_UNIX_OFFSET_S: u64 = 2_208_988_800;

/// A query on its way.
struct Query {
    server: Ipv4Address,
    sent_ns: u64,
    /// The transmit timestamp we sent; the server echoes it as the
    /// originate timestamp (a stray or forged answer lacks it).
    cookie: [u8; 8],
}

/// The last clock setting.
#[derive(Clone, Copy, Debug)]
struct Synced {
    server: Ipv4Address,
    at_ns: u64,
    rtt_ms: u64,
}

/// The SNTP client.
struct Sntp {
    socket: SocketHandle,
    configured: Option<Ipv4Address>,
    from_dhcp: Option<Ipv4Address>,
    next_ns: u64,
    pending: Option<Query>,
    last: Option<Synced>,
}

/// The DHCP and SNTP clients, polled every turn.
pub struct NetConf {
    net: SharedNet,
    /// The DHCP client while it runs on the stack...
    running: Option<SocketHandle>,
    /// ...and while it is parked (the address is static).
    parked: Option<Box<dhcpv4::Socket<'static>>>,
    /// When the stack last began to wait for a lease without an address.
    waiting_since_ns: Option<u64>,
    sntp: Sntp,
}

/// The name a node gives DHCP servers: `tern-<board>-<node id>`.
pub fn hostname(board: &str, node_id: u64) -> String {
    alloc::format!("tern-{board}-{}", tern_protocol::format_node_id(node_id))
}

/// The link-local address a node with `mac` falls back to.
pub fn link_local(mac: [u8; 6]) -> Ipv4Cidr {
    // RFC 3927: 169.254.1.0 to 169.254.254.255, seeded by the MAC.
    let seed = u16::from_be_bytes([mac[4], mac[5]]) ^ u16::from(mac[3]);
    let third = 1 + (seed >> 8) as u8 % 254;
    Ipv4Cidr::new(Ipv4Address::new(169, 254, third, seed as u8), 16)
}

impl NetConf {
    /// The clients on `net`, for a node called `hostname`.
    pub fn new(net: SharedNet, hostname: String) -> Self {
        let hostname: &'static str = hostname.leak();
        // The options and the buffer live as long as the node: leaked once.
        let options: &'static [DhcpOption<'static>] = Box::leak(Box::new([DhcpOption {
            kind: OPT_HOST_NAME,
            data: hostname.as_bytes(),
        }]));
        let buffer: &'static mut [u8] = Box::leak(vec![0u8; 1500].into_boxed_slice());
        let mut dhcp = dhcpv4::Socket::new();
        dhcp.set_outgoing_options(options);
        dhcp.set_parameter_request_list(PARAMETERS);
        dhcp.set_receive_packet_buffer(buffer);
        let socket = udp::Socket::new(
            udp::PacketBuffer::new(vec![udp::PacketMetadata::EMPTY; 2], vec![0; 256]),
            udp::PacketBuffer::new(vec![udp::PacketMetadata::EMPTY; 2], vec![0; 256]),
        );
        let socket = net.borrow_mut().add_socket(socket);
        Self {
            net,
            running: None,
            parked: Some(Box::new(dhcp)),
            waiting_since_ns: None,
            sntp: Sntp {
                socket,
                configured: None,
                from_dhcp: None,
                next_ns: 0,
                pending: None,
                last: None,
            },
        }
    }

    /// Caps the leases the node accepts (renewals come at half of it).
    pub fn set_max_lease(&mut self, max_s: Option<u64>) {
        let max = max_s.map(Duration::from_secs);
        if let Some(socket) = self.parked.as_mut() {
            socket.set_max_lease_duration(max);
        }
        if let Some(handle) = self.running {
            let mut net = self.net.borrow_mut();
            let socket = net.socket::<dhcpv4::Socket>(handle);
            socket.set_max_lease_duration(max);
            // Ask again, so that the current lease is capped too.
            socket.reset();
        }
    }

    /// Runs or parks the DHCP client as the stack's addressing wants.
    fn follow_addressing(&mut self, now_ns: u64) {
        let mut net = self.net.borrow_mut();
        match net.addressing() {
            Addressing::Automatic => {
                if let Some(mut socket) = self.parked.take() {
                    socket.reset();
                    self.running = Some(net.add_socket(*socket));
                }
                if net.ipv4().is_none() && self.waiting_since_ns.is_none() {
                    // Started, or `net dhcp` dropped the address: the wait
                    // for a lease starts (again).
                    self.waiting_since_ns = Some(now_ns);
                    if let Some(handle) = self.running {
                        net.socket::<dhcpv4::Socket>(handle).reset();
                    }
                }
            }
            Addressing::Static => {
                self.waiting_since_ns = None;
                if let Some(handle) = self.running.take() {
                    if let Socket::Dhcpv4(socket) = net.take_socket(handle) {
                        self.parked = Some(Box::new(socket));
                    }
                }
            }
        }
    }

    /// Applies what the DHCP client learnt; whether anything changed.
    fn poll_dhcp(&mut self, turn: &mut Turn<'_>) -> bool {
        let Some(handle) = self.running else {
            return false;
        };
        let mut net = self.net.borrow_mut();
        let leased = matches!(net.source(), AddressSource::Dhcp { .. });
        let event = match net.socket::<dhcpv4::Socket>(handle).poll() {
            None => None,
            // The client reports "deconfigured" when it starts too: only a
            // lease that ends takes the address away.
            Some(dhcpv4::Event::Deconfigured) if leased => Some(None),
            Some(dhcpv4::Event::Deconfigured) => None,
            Some(dhcpv4::Event::Configured(config)) => {
                let lease_s = config
                    .packet
                    .and_then(|p| p.options().find(|o| o.kind == 51).map(|o| o.data.to_vec()))
                    .and_then(|d| <[u8; 4]>::try_from(d.as_slice()).ok())
                    .map_or(0, u32::from_be_bytes);
                let ntp = config.packet.and_then(|p| {
                    p.options()
                        .find(|o| o.kind == OPT_NTP_SERVERS)
                        .and_then(|o| {
                            o.data
                                .get(..4)
                                .map(|a| Ipv4Address::new(a[0], a[1], a[2], a[3]))
                        })
                });
                Some(Some((
                    Ipv4Config {
                        cidr: config.address,
                        gateway: config.router,
                    },
                    config.server.address,
                    lease_s,
                    config.dns_servers.iter().copied().collect::<Vec<_>>(),
                    ntp,
                )))
            }
        };
        match event {
            None => {
                let waited = self
                    .waiting_since_ns
                    .is_some_and(|since| turn.now_ns.saturating_sub(since) >= FALLBACK_NS);
                if waited && net.ipv4().is_none() {
                    self.waiting_since_ns = None;
                    let cidr = link_local(net.mac_address());
                    net.apply(
                        Ipv4Config {
                            cidr,
                            gateway: None,
                        },
                        AddressSource::LinkLocal,
                    );
                    drop(net);
                    turn.publish(NodeEvent::Addressed {
                        address: Some(cidr.to_string()),
                        source: String::from("link-local: no DHCP server answered"),
                    });
                    return true;
                }
                false
            }
            Some(None) => {
                net.deconfigure();
                self.waiting_since_ns = Some(turn.now_ns);
                drop(net);
                turn.publish(NodeEvent::Addressed {
                    address: None,
                    source: String::from("the DHCP lease ended"),
                });
                true
            }
            Some(Some((config, server, lease_s, dns, ntp))) => {
                self.waiting_since_ns = None;
                self.sntp.from_dhcp = ntp;
                let same = net.ipv4() == Some(config)
                    && matches!(net.source(), AddressSource::Dhcp { server: s, .. } if *s == server);
                if same {
                    net.renewed();
                    return false;
                }
                net.apply(
                    config,
                    AddressSource::Dhcp {
                        server,
                        lease_s,
                        dns,
                        renewals: 0,
                    },
                );
                drop(net);
                // A new address: ask the time server at once.
                self.sntp.next_ns = turn.now_ns;
                turn.publish(NodeEvent::Addressed {
                    address: Some(config.cidr.to_string()),
                    source: alloc::format!("dhcp from {server}, lease {lease_s} s"),
                });
                true
            }
        }
    }

    /// Sends an SNTP query when one is due, reads the answer; whether
    /// anything happened.
    fn poll_sntp(&mut self, turn: &mut Turn<'_>) -> bool {
        let server = self.sntp.configured.or(self.sntp.from_dhcp);
        let mut net = self.net.borrow_mut();
        if net.ipv4().is_none() {
            return false;
        }
        let socket = net.socket::<udp::Socket>(self.sntp.socket);
        if !socket.is_open() {
            // Only fails for port 0 or an open socket, neither the case.
            let _ = socket.bind(SNTP_LOCAL_PORT);
        }
        let mut busy = false;
        while let Ok((data, meta)) = socket.recv() {
            busy = true;
            let Some(query) = self.sntp.pending.as_ref() else {
                continue;
            };
            if meta.endpoint.addr != query.server.into() {
                continue;
            }
            if let Some(unix_ms) = parse_reply(data, &query.cookie) {
                let rtt_ms = turn.now_ns.saturating_sub(query.sent_ns) / 1_000_000;
                // The server's transmit time is about half a round trip old.
                let unix_ms = unix_ms + rtt_ms / 2;
                wallclock::set(turn.now_ns, unix_ms);
                let server = query.server;
                self.sntp.last = Some(Synced {
                    server,
                    at_ns: turn.now_ns,
                    rtt_ms,
                });
                self.sntp.pending = None;
                self.sntp.next_ns = turn.now_ns + SNTP_INTERVAL_NS;
                turn.publish(NodeEvent::ClockSet {
                    unix_ms,
                    server: server.to_string(),
                    rtt_ms,
                });
            }
        }
        let Some(server) = server else {
            return busy;
        };
        if turn.now_ns >= self.sntp.next_ns && socket.can_send() {
            let cookie = turn.now_ns.to_be_bytes();
            let mut packet = [0u8; 48];
            // LI 0, version 4, mode 3 (client).
            packet[0] = 0x23;
            packet[40..48].copy_from_slice(&cookie);
            if socket
                .send_slice(&packet, IpEndpoint::new(server.into(), NTP_PORT))
                .is_ok()
            {
                self.sntp.pending = Some(Query {
                    server,
                    sent_ns: turn.now_ns,
                    cookie,
                });
                self.sntp.next_ns = turn.now_ns + SNTP_RETRY_NS;
                busy = true;
            }
        }
        busy
    }

    /// The `time` command's report.
    fn report(&self, now_ns: u64, out: &mut dyn Write) {
        match wallclock::unix_ms(now_ns) {
            Some(ms) => {
                let _ = write!(out, "time: {}", wallclock::format_utc(ms));
                if let Some(last) = self.sntp.last {
                    let _ = write!(
                        out,
                        " (sntp from {}, {} s ago, round trip {} ms)",
                        last.server,
                        now_ns.saturating_sub(last.at_ns) / 1_000_000_000,
                        last.rtt_ms
                    );
                }
                let _ = write!(out, "\r\n");
            }
            None => {
                let _ = write!(out, "time: unknown (uptime only)\r\n");
            }
        }
        match (self.sntp.configured, self.sntp.from_dhcp) {
            (Some(s), _) => {
                let _ = write!(out, "server: {s} (configured)\r\n");
            }
            (None, Some(s)) => {
                let _ = write!(out, "server: {s} (from DHCP)\r\n");
            }
            (None, None) => {
                let _ = write!(
                    out,
                    "server: none (DHCP named none; set one with 'time server <address>')\r\n"
                );
            }
        }
    }
}

/// The Unix time in an SNTP answer to the query whose transmit timestamp
/// was `cookie`, if it is one.
pub fn parse_reply(data: &[u8], cookie: &[u8; 8]) -> Option<u64> {
    if data.len() < 48 {
        return None;
    }
    let mode = data[0] & 0x7;
    let stratum = data[1];
    // Mode 4 (server); stratum 0 is a kiss-of-death, 16+ unsynchronised.
    if mode != 4 || stratum == 0 || stratum >= 16 || &data[24..32] != cookie {
        return None;
    }
    let secs = u64::from(u32::from_be_bytes([data[40], data[41], data[42], data[43]]));
    let frac = u64::from(u32::from_be_bytes([data[44], data[45], data[46], data[47]]));
    let unix_s = secs.checked_sub(NTP_UNIX_OFFSET_S)?;
    Some(unix_s * 1000 + ((frac * 1000) >> 32))
}

impl Service for NetConf {
    fn name(&self) -> &'static str {
        "netconf"
    }

    fn poll(&mut self, turn: &mut Turn<'_>) -> ServiceStatus {
        self.follow_addressing(turn.now_ns);
        let busy = self.poll_dhcp(turn) | self.poll_sntp(turn);
        if busy {
            ServiceStatus::Busy
        } else {
            ServiceStatus::Idle
        }
    }
}

/// Adds the DHCP and SNTP clients to `kernel` on `net`: the service and the
/// `time` command (`net dhcp` is the stack's own).
pub fn install(kernel: &mut Kernel, net: SharedNet, node_id: u64) {
    let board = kernel.board().facts().board;
    let conf = Rc::new(RefCell::new(NetConf::new(net, hostname(board, node_id))));
    kernel.add_service(Box::new(NetConfService(conf.clone())));
    kernel.add_command(Command::new(
        "time",
        "[server <address> | lease <max seconds>]",
        "show the wall clock and its SNTP server; set the server; cap DHCP leases",
        move |k, args, out| time_command(&conf, k, args, out),
    ));
}

/// The run-loop service polling the shared [`NetConf`].
struct NetConfService(Rc<RefCell<NetConf>>);

impl Service for NetConfService {
    fn name(&self) -> &'static str {
        "netconf"
    }

    fn poll(&mut self, turn: &mut Turn<'_>) -> ServiceStatus {
        self.0.borrow_mut().poll(turn)
    }
}

fn time_command(
    conf: &RefCell<NetConf>,
    kernel: &mut Kernel,
    args: &[&str],
    out: &mut dyn Write,
) -> CommandResult {
    let now_ns = kernel.board().clock().now_ns();
    let mut conf = conf.borrow_mut();
    match args {
        [] => {}
        ["server", address] => {
            let server: Ipv4Address = address
                .parse()
                .map_err(|_| alloc::format!("'{address}' is not an IPv4 address"))?;
            conf.sntp.configured = Some(server);
            conf.sntp.next_ns = now_ns;
            conf.sntp.pending = None;
        }
        ["lease", seconds] => {
            let max: u64 = seconds.parse().ok().filter(|s| *s >= 4).ok_or_else(|| {
                alloc::format!("'{seconds}' is not a number of seconds (at least 4)")
            })?;
            conf.set_max_lease(Some(max));
        }
        _ => {
            return Err(String::from(
                "usage: time [server <address> | lease <max seconds>]",
            ))
        }
    }
    conf.report(now_ns, out);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::{exec, FakeBoard, Wire, WireEnd};
    use std::sync::{Arc, Mutex};

    use smoltcp::phy::ChecksumCapabilities;
    use smoltcp::wire::{
        ArpOperation, ArpPacket, ArpRepr, DhcpMessageType, DhcpPacket, DhcpRepr, EthernetAddress,
        EthernetFrame, EthernetProtocol, EthernetRepr, IpAddress, IpProtocol, Ipv4Packet, Ipv4Repr,
        UdpPacket, UdpRepr,
    };

    const MAC: [u8; 6] = [0x52, 0x54, 0, 0x12, 0x34, 0x56];
    const SERVER_MAC: EthernetAddress = EthernetAddress([0x02, 0, 0, 0, 0, 1]);
    const SERVER: Ipv4Address = Ipv4Address::new(10, 0, 2, 1);
    const LEASED: Ipv4Address = Ipv4Address::new(10, 0, 2, 50);
    /// 2026-12-01T00:00:00Z in NTP seconds.
    const NTP_NOW_S: u32 = (1_796_083_200u64 + NTP_UNIX_OFFSET_S) as u32;

    fn node() -> (Kernel, SharedNet, Arc<Mutex<Wire>>) {
        let wire = Arc::new(Mutex::new(Wire::default()));
        let mut kernel = Kernel::new(FakeBoard::leak());
        let net = crate::net::install(&mut kernel, Box::new(WireEnd::node(wire.clone(), MAC)));
        install(&mut kernel, net.clone(), 0x5254_0012_3456);
        (kernel, net, wire)
    }

    /// Wraps an IPv4 `payload` of protocol `proto` from the server to the node.
    fn ip_frame(dst: Ipv4Address, proto: IpProtocol, payload: &[u8]) -> Vec<u8> {
        let ip = Ipv4Repr {
            src_addr: SERVER,
            dst_addr: dst,
            next_header: proto,
            payload_len: payload.len(),
            hop_limit: 64,
        };
        let eth = EthernetRepr {
            src_addr: SERVER_MAC,
            dst_addr: EthernetAddress(MAC),
            ethertype: EthernetProtocol::Ipv4,
        };
        let mut buf = vec![0; eth.buffer_len() + ip.buffer_len() + payload.len()];
        let mut frame = EthernetFrame::new_unchecked(&mut buf);
        eth.emit(&mut frame);
        let mut packet = Ipv4Packet::new_unchecked(frame.payload_mut());
        ip.emit(&mut packet, &ChecksumCapabilities::default());
        packet.payload_mut().copy_from_slice(payload);
        buf
    }

    fn udp_frame(dst: Ipv4Address, src_port: u16, dst_port: u16, payload: &[u8]) -> Vec<u8> {
        let repr = UdpRepr { src_port, dst_port };
        let mut udp = vec![0; 8 + payload.len()];
        repr.emit(
            &mut UdpPacket::new_unchecked(&mut udp[..]),
            &IpAddress::Ipv4(SERVER),
            &IpAddress::Ipv4(dst),
            payload.len(),
            |buf| buf.copy_from_slice(payload),
            &ChecksumCapabilities::default(),
        );
        ip_frame(dst, IpProtocol::Udp, &udp)
    }

    /// What the fake LAN saw the node send.
    #[derive(Default)]
    struct Seen {
        hostname: Option<Vec<u8>>,
        requests: usize,
        ntp_queries: usize,
    }

    /// A DHCP, ARP and SNTP server on the wire's far end: answers what the
    /// node sent since the last call.
    fn serve(wire: &Arc<Mutex<Wire>>, seen: &mut Seen) {
        let frames: Vec<Vec<u8>> = wire.lock().unwrap().from_node.drain(..).collect();
        for frame in frames {
            let eth = EthernetFrame::new_checked(&frame[..]).unwrap();
            if eth.ethertype() == EthernetProtocol::Arp {
                let arp = ArpRepr::parse(&ArpPacket::new_checked(eth.payload()).unwrap()).unwrap();
                if let ArpRepr::EthernetIpv4 {
                    operation: ArpOperation::Request,
                    source_protocol_addr,
                    target_protocol_addr: SERVER,
                    ..
                } = arp
                {
                    let reply = ArpRepr::EthernetIpv4 {
                        operation: ArpOperation::Reply,
                        source_hardware_addr: SERVER_MAC,
                        source_protocol_addr: SERVER,
                        target_hardware_addr: EthernetAddress(MAC),
                        target_protocol_addr: source_protocol_addr,
                    };
                    let mut buf = vec![0; 14 + reply.buffer_len()];
                    let mut f = EthernetFrame::new_unchecked(&mut buf);
                    EthernetRepr {
                        src_addr: SERVER_MAC,
                        dst_addr: EthernetAddress(MAC),
                        ethertype: EthernetProtocol::Arp,
                    }
                    .emit(&mut f);
                    reply.emit(&mut ArpPacket::new_unchecked(f.payload_mut()));
                    wire.lock().unwrap().to_node.push_back(buf);
                }
                continue;
            }
            let ip = Ipv4Packet::new_checked(eth.payload()).unwrap();
            if ip.next_header() != IpProtocol::Udp {
                continue;
            }
            let udp = UdpPacket::new_checked(ip.payload()).unwrap();
            match udp.dst_port() {
                67 => {
                    let dhcp = DhcpPacket::new_checked(udp.payload()).unwrap();
                    let repr = DhcpRepr::parse(&dhcp).unwrap();
                    seen.hostname = dhcp
                        .options()
                        .find(|o| o.kind == OPT_HOST_NAME)
                        .map(|o| o.data.to_vec());
                    let answer = match repr.message_type {
                        DhcpMessageType::Discover => DhcpMessageType::Offer,
                        DhcpMessageType::Request => {
                            seen.requests += 1;
                            DhcpMessageType::Ack
                        }
                        _ => continue,
                    };
                    let extra = [
                        DhcpOption {
                            kind: 6,
                            data: &[10, 0, 2, 1, 10, 0, 2, 53],
                        },
                        DhcpOption {
                            kind: OPT_NTP_SERVERS,
                            data: &SERVER.octets(),
                        },
                    ];
                    let reply = DhcpRepr {
                        message_type: answer,
                        transaction_id: repr.transaction_id,
                        secs: 0,
                        client_hardware_address: repr.client_hardware_address,
                        client_ip: Ipv4Address::UNSPECIFIED,
                        your_ip: LEASED,
                        server_ip: SERVER,
                        router: Some(SERVER),
                        subnet_mask: Some(Ipv4Address::new(255, 255, 255, 0)),
                        relay_agent_ip: Ipv4Address::UNSPECIFIED,
                        broadcast: false,
                        requested_ip: None,
                        client_identifier: None,
                        server_identifier: Some(SERVER),
                        parameter_request_list: None,
                        dns_servers: None,
                        max_size: None,
                        lease_duration: Some(120),
                        renew_duration: None,
                        rebind_duration: None,
                        additional_options: &extra,
                    };
                    let mut payload = vec![0; reply.buffer_len()];
                    reply
                        .emit(&mut DhcpPacket::new_unchecked(&mut payload[..]))
                        .unwrap();
                    let f = udp_frame(LEASED, 67, 68, &payload);
                    wire.lock().unwrap().to_node.push_back(f);
                }
                NTP_PORT => {
                    seen.ntp_queries += 1;
                    let query = udp.payload();
                    let mut reply = [0u8; 48];
                    reply[0] = 0x24; // version 4, mode 4 (server)
                    reply[1] = 2; // stratum
                    reply[24..32].copy_from_slice(&query[40..48]);
                    reply[40..44].copy_from_slice(&NTP_NOW_S.to_be_bytes());
                    let f = udp_frame(LEASED, NTP_PORT, udp.src_port(), &reply);
                    wire.lock().unwrap().to_node.push_back(f);
                }
                _ => {}
            }
        }
    }

    fn turns(kernel: &mut Kernel, wire: &Arc<Mutex<Wire>>, seen: &mut Seen, n: usize) -> String {
        let mut out = String::new();
        for _ in 0..n {
            kernel.poll_services(&mut out);
            serve(wire, seen);
        }
        out
    }

    #[test]
    fn a_lease_gives_address_router_dns_and_time_and_is_renewed() {
        let (mut kernel, net, wire) = node();
        let mut seen = Seen::default();
        let shown = turns(&mut kernel, &wire, &mut seen, 50);
        assert!(
            shown.contains("net: address 10.0.2.50/24 (dhcp from 10.0.2.1, lease 120 s)\r\n"),
            "{shown}"
        );
        assert_eq!(
            seen.hostname.as_deref(),
            Some(&b"tern-rpi4-525400123456"[..])
        );
        assert_eq!(
            net.borrow().ipv4(),
            Some(Ipv4Config {
                cidr: Ipv4Cidr::new(LEASED, 24),
                gateway: Some(SERVER),
            })
        );
        let report = exec(&mut kernel, "net");
        assert!(
            report.contains("address 10.0.2.50/24 (dhcp from 10.0.2.1, lease 120 s, renewed 0 times)\r\ndns 10.0.2.1 10.0.2.53\r\n"),
            "{report}"
        );
        // SNTP asked the server DHCP named at once, and the clock is set.
        assert!(shown.contains("time: 2026-12-01T00:00:00.0"), "{shown}");
        assert_eq!(seen.ntp_queries, 1);
        let time = exec(&mut kernel, "time");
        assert!(time.starts_with("time: 2026-12-01T00:00:0"), "{time}");
        assert!(time.contains("(sntp from 10.0.2.1, 0 s ago"), "{time}");
        assert!(time.contains("server: 10.0.2.1 (from DHCP)"), "{time}");

        // Leases capped at 4 s are renewed every 2 s or so.
        exec(&mut kernel, "time lease 4");
        let requests = seen.requests;
        for _ in 0..40 {
            turns(&mut kernel, &wire, &mut seen, 1000);
        }
        assert!(seen.requests >= requests + 3, "{} requests", seen.requests);
        let report = exec(&mut kernel, "net");
        assert!(!report.contains("renewed 0 times"), "{report}");

        // A static address stops DHCP; `net dhcp` asks again.
        exec(&mut kernel, "net 192.168.7.2/24");
        let requests = seen.requests;
        turns(&mut kernel, &wire, &mut seen, 10_000);
        assert_eq!(seen.requests, requests);
        assert!(exec(&mut kernel, "net").contains("address 192.168.7.2/24 (static)"));
        exec(&mut kernel, "net dhcp");
        let shown = turns(&mut kernel, &wire, &mut seen, 50);
        assert!(shown.contains("net: address 10.0.2.50/24 (dhcp"), "{shown}");
    }

    #[test]
    fn without_a_server_the_node_falls_back_to_link_local_and_keeps_asking() {
        let (mut kernel, net, wire) = node();
        let mut out = String::new();
        let start = kernel.board().clock().now_ns();
        while kernel.board().clock().now_ns() < start + FALLBACK_NS + 1_000_000_000 {
            kernel.poll_services(&mut out);
            wire.lock().unwrap().from_node.clear();
        }
        let cidr = link_local(MAC);
        assert_eq!(cidr.to_string(), "169.254.53.68/16");
        assert!(
            out.contains("net: address 169.254.53.68/16 (link-local: no DHCP server answered)"),
            "{out}"
        );
        assert_eq!(net.borrow().source(), &AddressSource::LinkLocal);
        // A server that shows up later wins.
        let mut seen = Seen::default();
        for _ in 0..30 {
            out.push_str(&turns(&mut kernel, &wire, &mut seen, 1000));
            if out.contains("dhcp from") {
                break;
            }
        }
        assert!(
            out.contains("net: address 10.0.2.50/24 (dhcp from 10.0.2.1"),
            "{out}"
        );
    }

    #[test]
    fn sntp_answers_are_checked() {
        let cookie = [1, 2, 3, 4, 5, 6, 7, 8];
        let mut reply = [0u8; 48];
        reply[0] = 0x24;
        reply[1] = 1;
        reply[24..32].copy_from_slice(&cookie);
        reply[40..44].copy_from_slice(&NTP_NOW_S.to_be_bytes());
        reply[44..48].copy_from_slice(&0x8000_0000u32.to_be_bytes());
        assert_eq!(parse_reply(&reply, &cookie), Some(1_796_083_200_500));
        assert_eq!(parse_reply(&reply[..47], &cookie), None);
        assert_eq!(parse_reply(&reply, &[0; 8]), None, "another query's answer");
        let mut kiss = reply;
        kiss[1] = 0;
        assert_eq!(parse_reply(&kiss, &cookie), None, "kiss of death");
        let mut client = reply;
        client[0] = 0x23;
        assert_eq!(parse_reply(&client, &cookie), None, "not a server");
        assert_eq!(hostname("virt", 0x5254_007e_0002), "tern-virt-5254007e0002");
    }
}
