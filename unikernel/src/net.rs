//! The network stack: smoltcp on top of the board's [`NetDevice`].
//!
//! The [`NetStack`] owns the device, the smoltcp interface and its sockets;
//! the [`NetService`] polls it every run-loop turn (smoltcp answers ICMP echo
//! requests by itself), and the shell command `net` shows the state, sets
//! a static address (`net 10.0.2.2/24 [gateway]`) or hands the address back
//! to DHCP (`net dhcp`, the default at boot; the DHCP client itself is
//! [`crate::netconf`]). The stack records where its address came from
//! ([`AddressSource`]).
//!
//! TCP port [`HELLO_PORT`] (4471) answers every connection with the node's
//! banner line (`Tern 0.1.0 on virt (aarch64)\n`) and closes it: a check
//! that TCP works end to end with any client (`nc`, bash's `/dev/tcp`).
//! TCP port [`SINK_PORT`] (4472) reads and discards everything a client
//! sends and closes when the client does: the host measures the node's TCP
//! receive throughput against it. TCP port [`SOURCE_PORT`] (4473) sends
//! zeros until the client closes: the host measures the node's sending side
//! against it. Other services (the control service of
//! [`crate::control`]) add their own sockets with [`NetStack::add_tcp`].

use alloc::boxed::Box;
use alloc::rc::Rc;
use alloc::string::String;
use alloc::vec;
use alloc::vec::Vec;
use core::cell::RefCell;
use core::fmt::Write;

use smoltcp::iface::{Config, Interface, SocketHandle, SocketSet};
use smoltcp::phy::{self, Checksum, DeviceCapabilities, Medium};
use smoltcp::socket::{tcp, AnySocket};
use smoltcp::time::Instant;
use smoltcp::wire::{
    EthernetAddress, EthernetFrame, EthernetProtocol, HardwareAddress, IpAddress, IpCidr,
    IpEndpoint, IpProtocol, Ipv4Address, Ipv4Cidr, Ipv4Packet, TcpPacket, UdpPacket,
};
use tern_hal::{NetDevice, RxChecksum};

use crate::kernel::{Kernel, Service, ServiceStatus, Turn};
use crate::shell::{Command, CommandResult};

/// The TCP port that answers with the node's banner.
pub const HELLO_PORT: u16 = 4471;

/// The TCP port that discards what it receives (throughput benchmark).
pub const SINK_PORT: u16 = 4472;

/// The TCP port that sends zeros until the client closes (throughput
/// benchmark, the node's sending side).
pub const SOURCE_PORT: u16 = 4473;

/// Send buffer of the source: as much in flight as the control service's
/// sockets allow (a migration's sending side).
const SOURCE_BUFFER: usize = 256 * 1024;

/// Receive buffer of the sink: a scaled TCP window of several merged
/// 64 KiB frames (large receive), so the sender never waits on one.
const SINK_BUFFER: usize = 512 * 1024;

/// How long after a frame comes or goes the run loop keeps polling instead
/// of sleeping. No device interrupt wakes the kernel, only the 100 Hz tick:
/// sleeping between two windows of a stream would hold the next one for up
/// to 10 ms (a 512 KiB window every 10 ms is 50 MB/s), and every answer to
/// a request (a migration round's offer, need, chunks, commit and ack) as
/// long. With 2 ms an idle receiver between two emulated nodes still fell
/// asleep between the windows of a migration round (docs/benchmarks.md,
/// "Where a round's time went"); polling costs only while frames flow.
const BUSY_POLL_NS: u64 = 20_000_000;

/// Frame counters, shown by `net`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Counters {
    /// Frames received.
    pub rx_frames: u64,
    /// Bytes received.
    pub rx_bytes: u64,
    /// Frames sent.
    pub tx_frames: u64,
    /// Bytes sent.
    pub tx_bytes: u64,
    /// Frames smoltcp produced that the device refused.
    pub tx_errors: u64,
    /// Received frames dropped for a wrong TCP or UDP checksum.
    pub rx_bad_checksums: u64,
}

/// The board's device seen as a smoltcp `phy::Device`: frames are copied
/// in and out of the device, which keeps [`NetDevice`] object-safe.
struct Phy<'a> {
    device: &'a mut dyn NetDevice,
    counters: &'a mut Counters,
    /// Where a received frame is copied: as long as the longest frame the
    /// device hands over, allocated once.
    rx_buffer: &'a mut Vec<u8>,
    /// [`TxToken`]'s buffer.
    tx_buffer: &'a mut Vec<u8>,
}

/// A received frame, already copied out of the device.
struct RxToken<'a>(&'a [u8]);

/// Permission to send one frame.
struct TxToken<'a> {
    device: &'a mut dyn NetDevice,
    counters: &'a mut Counters,
    /// Where the frame is written before the device copies it: as long as
    /// the longest frame, allocated once.
    tx_buffer: &'a mut Vec<u8>,
}

impl phy::RxToken for RxToken<'_> {
    fn consume<R, F: FnOnce(&[u8]) -> R>(self, f: F) -> R {
        f(self.0)
    }
}

impl phy::TxToken for TxToken<'_> {
    fn consume<R, F: FnOnce(&mut [u8]) -> R>(self, len: usize, f: F) -> R {
        if self.tx_buffer.len() < len {
            self.tx_buffer.resize(len, 0);
        }
        let frame = &mut self.tx_buffer[..len];
        let result = f(frame);
        match self.device.transmit(frame) {
            Ok(()) => {
                self.counters.tx_frames += 1;
                self.counters.tx_bytes += len as u64;
            }
            Err(_) => self.counters.tx_errors += 1,
        }
        result
    }
}

/// Whether `frame`'s TCP or UDP checksum over IPv4 is right (or it carries
/// neither, or is too broken for smoltcp to take anyway). smoltcp is told
/// not to check these two: most frames come with the device's word for
/// them ([`RxChecksum::Trusted`]), and this checks the others.
fn transport_checksum_ok(frame: &[u8]) -> bool {
    let Ok(ethernet) = EthernetFrame::new_checked(frame) else {
        return true;
    };
    if ethernet.ethertype() != EthernetProtocol::Ipv4 {
        return true;
    }
    let Ok(ip) = Ipv4Packet::new_checked(ethernet.payload()) else {
        return true;
    };
    let (src, dst) = (
        IpAddress::Ipv4(ip.src_addr()),
        IpAddress::Ipv4(ip.dst_addr()),
    );
    match ip.next_header() {
        IpProtocol::Tcp => {
            TcpPacket::new_checked(ip.payload()).map_or(true, |tcp| tcp.verify_checksum(&src, &dst))
        }
        IpProtocol::Udp => {
            UdpPacket::new_checked(ip.payload()).map_or(true, |udp| udp.verify_checksum(&src, &dst))
        }
        _ => true,
    }
}

impl phy::Device for Phy<'_> {
    type RxToken<'b>
        = RxToken<'b>
    where
        Self: 'b;
    type TxToken<'b>
        = TxToken<'b>
    where
        Self: 'b;

    fn receive(&mut self, _: Instant) -> Option<(RxToken<'_>, TxToken<'_>)> {
        let frame = loop {
            let received = self.device.receive(self.rx_buffer)?;
            let frame = &self.rx_buffer[..received.len];
            self.counters.rx_frames += 1;
            self.counters.rx_bytes += received.len as u64;
            if received.checksum == RxChecksum::Trusted || transport_checksum_ok(frame) {
                break received.len;
            }
            self.counters.rx_bad_checksums += 1;
        };
        let tx = TxToken {
            device: &mut *self.device,
            counters: &mut *self.counters,
            tx_buffer: &mut *self.tx_buffer,
        };
        Some((RxToken(&self.rx_buffer[..frame]), tx))
    }

    fn transmit(&mut self, _: Instant) -> Option<TxToken<'_>> {
        if !self.device.can_transmit() {
            return None;
        }
        Some(TxToken {
            device: &mut *self.device,
            counters: &mut *self.counters,
            tx_buffer: &mut *self.tx_buffer,
        })
    }

    fn capabilities(&self) -> DeviceCapabilities {
        let mut caps = DeviceCapabilities::default();
        caps.medium = Medium::Ethernet;
        caps.max_transmission_unit = self.device.max_frame_len();
        // Checked in `receive`, or vouched for by the device.
        caps.checksum.tcp = Checksum::Tx;
        caps.checksum.udp = Checksum::Tx;
        caps
    }
}

/// The node's network interface: device, smoltcp interface, sockets.
pub struct NetStack {
    device: Box<dyn NetDevice>,
    /// [`Phy`]'s receive buffer.
    rx_buffer: Vec<u8>,
    /// [`Phy`]'s transmit buffer.
    tx_buffer: Vec<u8>,
    /// When the last frame came or went.
    last_frame_ns: Option<u64>,
    iface: Interface,
    sockets: SocketSet<'static>,
    counters: Counters,
    /// Time spent in [`NetStack::poll`] since boot: the driver, smoltcp and
    /// the built-in ports (set against a transfer's duration, it says
    /// whether the stack's work or the waiting bounds it).
    stack_ns: u64,
    /// The part of `stack_ns` spent in polls that moved nothing (no frame,
    /// no socket change): the node looking for work rather than doing it.
    empty_poll_ns: u64,
    config: Option<Ipv4Config>,
    source: AddressSource,
    addressing: Addressing,
    hello: SocketHandle,
    sink: SocketHandle,
    zeros: SocketHandle,
    banner: String,
}

/// How the node wants its address: set by hand, or from the network.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Addressing {
    /// `net <address>/<prefix>`: the address stays until changed.
    Static,
    /// DHCP, with a link-local fallback while no server answers (the
    /// default; `net dhcp`).
    Automatic,
}

/// Where the current address came from, as `net` shows it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum AddressSource {
    /// No address yet.
    None,
    /// Typed with `net` (or a boot command).
    Static,
    /// Leased from a DHCP server.
    Dhcp {
        /// The server that leased it.
        server: Ipv4Address,
        /// The lease's length in seconds, as granted.
        lease_s: u32,
        /// DNS servers it named.
        dns: Vec<Ipv4Address>,
        /// Acknowledged renewals of the lease so far.
        renewals: u32,
    },
    /// A link-local address (RFC 3927 range) taken because no DHCP server
    /// answered; DHCP keeps asking.
    LinkLocal,
}

/// A static IPv4 configuration: `address/prefix` and an optional gateway.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Ipv4Config {
    /// The node's address and prefix length.
    pub cidr: Ipv4Cidr,
    /// The default router, if any.
    pub gateway: Option<Ipv4Address>,
}

impl Ipv4Config {
    /// Parses the `net` command's arguments: `10.0.2.2/24 [10.0.2.1]`.
    pub fn parse(args: &[&str]) -> Result<Self, String> {
        let (cidr, gateway) = match args {
            [cidr] => (*cidr, None),
            [cidr, gateway] => (*cidr, Some(*gateway)),
            _ => {
                return Err(String::from(
                    "usage: net [<address>/<prefix> [gateway] | dhcp]",
                ))
            }
        };
        let (address, prefix) = cidr
            .split_once('/')
            .ok_or_else(|| alloc::format!("'{cidr}' is not <address>/<prefix>"))?;
        let address: Ipv4Address = address
            .parse()
            .map_err(|_| alloc::format!("'{address}' is not an IPv4 address"))?;
        let prefix: u8 = prefix
            .parse()
            .ok()
            .filter(|p| (1..=32).contains(p))
            .ok_or_else(|| alloc::format!("'{prefix}' is not a prefix length 1-32"))?;
        let gateway = gateway
            .map(|g| {
                g.parse::<Ipv4Address>()
                    .map_err(|_| alloc::format!("'{g}' is not an IPv4 address"))
            })
            .transpose()?;
        Ok(Self {
            cidr: Ipv4Cidr::new(address, prefix),
            gateway,
        })
    }
}

impl NetStack {
    /// A stack on `device`, with no address yet; `now_ns` is the clock,
    /// `banner` the line the [`HELLO_PORT`] service sends.
    pub fn new(mut device: Box<dyn NetDevice>, now_ns: u64, banner: String) -> Self {
        let mac = EthernetAddress(device.mac_address());
        let mut config = Config::new(HardwareAddress::Ethernet(mac));
        // The seed only spreads TCP initial sequence numbers and ports;
        // the MAC differs per node, the clock per boot.
        config.random_seed = now_ns
            ^ u64::from_le_bytes([
                mac.0[0], mac.0[1], mac.0[2], mac.0[3], mac.0[4], mac.0[5], 0, 0,
            ]);
        let mut counters = Counters::default();
        let mut rx_buffer = vec![0; device.max_receive_len()];
        let mut tx_buffer = vec![0; device.max_frame_len()];
        let iface = Interface::new(
            config,
            &mut Phy {
                device: device.as_mut(),
                counters: &mut counters,
                rx_buffer: &mut rx_buffer,
                tx_buffer: &mut tx_buffer,
            },
            instant(now_ns),
        );
        let mut sockets = SocketSet::new(Vec::new());
        let hello = sockets.add(tcp::Socket::new(
            tcp::SocketBuffer::new(vec![0; 64]),
            tcp::SocketBuffer::new(vec![0; 256]),
        ));
        let sink = sockets.add(tcp::Socket::new(
            tcp::SocketBuffer::new(vec![0; SINK_BUFFER]),
            tcp::SocketBuffer::new(vec![0; 16]),
        ));
        // Its send buffer holds zeros and is only ever refilled with them.
        let zeros = sockets.add(tcp::Socket::new(
            tcp::SocketBuffer::new(vec![0; 16]),
            tcp::SocketBuffer::new(vec![0; SOURCE_BUFFER]),
        ));
        Self {
            device,
            rx_buffer,
            tx_buffer,
            last_frame_ns: None,
            stack_ns: 0,
            empty_poll_ns: 0,
            iface,
            sockets,
            counters,
            config: None,
            source: AddressSource::None,
            addressing: Addressing::Automatic,
            hello,
            sink,
            zeros,
            banner,
        }
    }

    /// The device's MAC address.
    pub fn mac_address(&self) -> [u8; 6] {
        self.device.mac_address()
    }

    /// Adds a TCP socket with these buffer sizes; the caller drives it
    /// through [`NetStack::tcp`].
    pub fn add_tcp(&mut self, rx_bytes: usize, tx_bytes: usize) -> SocketHandle {
        let mut socket = tcp::Socket::new(
            tcp::SocketBuffer::new(vec![0; rx_bytes]),
            tcp::SocketBuffer::new(vec![0; tx_bytes]),
        );
        // Reno, not Cubic: no floating point in the network path (the PC
        // kernel computes it in software).
        socket.set_congestion_control(tcp::CongestionControl::Reno);
        self.sockets.add(socket)
    }

    /// Drops a socket added by [`NetStack::add_tcp`] (its buffers are freed).
    pub fn remove_tcp(&mut self, handle: SocketHandle) {
        self.sockets.remove(handle);
    }

    /// Adds a socket of another kind (UDP, DHCP) for a service to drive
    /// through [`NetStack::socket`].
    pub fn add_socket<T: AnySocket<'static>>(&mut self, socket: T) -> SocketHandle {
        self.sockets.add(socket)
    }

    /// A socket added by [`NetStack::add_socket`].
    pub fn socket<T: AnySocket<'static>>(&mut self, handle: SocketHandle) -> &mut T {
        self.sockets.get_mut::<T>(handle)
    }

    /// Takes a socket added by [`NetStack::add_socket`] out of the stack.
    pub fn take_socket(&mut self, handle: SocketHandle) -> smoltcp::socket::Socket<'static> {
        self.sockets.remove(handle)
    }

    /// A socket added by [`NetStack::add_tcp`].
    pub fn tcp(&mut self, handle: SocketHandle) -> &mut tcp::Socket<'static> {
        self.sockets.get_mut::<tcp::Socket>(handle)
    }

    /// Opens a connection from `handle` (closed) to `remote`, from
    /// `local_port`.
    pub fn connect(
        &mut self,
        handle: SocketHandle,
        remote: IpEndpoint,
        local_port: u16,
    ) -> Result<(), tcp::ConnectError> {
        let socket = self.sockets.get_mut::<tcp::Socket>(handle);
        socket.connect(self.iface.context(), remote, local_port)
    }

    /// Sets a static address and default route (DHCP stops).
    pub fn configure(&mut self, config: Ipv4Config) {
        self.addressing = Addressing::Static;
        self.apply(config, AddressSource::Static);
    }

    /// Hands the address to DHCP: the current one goes ([`crate::netconf`]
    /// asks a server for another).
    pub fn automatic(&mut self) {
        self.addressing = Addressing::Automatic;
        self.deconfigure();
    }

    /// How the node wants its address.
    pub fn addressing(&self) -> Addressing {
        self.addressing
    }

    /// Where the current address came from.
    pub fn source(&self) -> &AddressSource {
        &self.source
    }

    /// Records another renewal of the DHCP lease.
    pub fn renewed(&mut self) {
        if let AddressSource::Dhcp { renewals, .. } = &mut self.source {
            *renewals += 1;
        }
    }

    /// Removes the address and the default route.
    pub fn deconfigure(&mut self) {
        self.iface.update_ip_addrs(|addrs| addrs.clear());
        self.iface.routes_mut().remove_default_ipv4_route();
        self.config = None;
        self.source = AddressSource::None;
    }

    /// Replaces the interface's address and default route with `config`,
    /// which came from `source`.
    pub fn apply(&mut self, config: Ipv4Config, source: AddressSource) {
        self.iface.update_ip_addrs(|addrs| {
            addrs.clear();
            // One address always fits (the list holds several).
            let _ = addrs.push(IpCidr::Ipv4(config.cidr));
        });
        let routes = self.iface.routes_mut();
        routes.remove_default_ipv4_route();
        if let Some(gateway) = config.gateway {
            // Only fails when the route table is full, which one route
            // never makes it.
            let _ = routes.add_default_ipv4_route(gateway);
        }
        self.config = Some(config);
        self.source = source;
    }

    /// The configured address and gateway, if any.
    pub fn ipv4(&self) -> Option<Ipv4Config> {
        self.config
    }

    /// Frame counters.
    pub fn counters(&self) -> Counters {
        self.counters
    }

    /// Moves frames between the device and smoltcp; whether anything
    /// happened.
    pub fn poll(&mut self, now_ns: u64) -> bool {
        let started_ns = crate::uptime_ns();
        let before = self.counters;
        let frames = (self.counters.rx_frames, self.counters.tx_frames);
        let mut phy = Phy {
            device: self.device.as_mut(),
            counters: &mut self.counters,
            rx_buffer: &mut self.rx_buffer,
            tx_buffer: &mut self.tx_buffer,
        };
        let changed = self
            .iface
            .poll(instant(now_ns), &mut phy, &mut self.sockets);
        let served = self.serve_hello() | self.serve_sink() | self.serve_source();
        if (self.counters.rx_frames, self.counters.tx_frames) != frames {
            self.last_frame_ns = Some(now_ns);
        }
        let spent_ns = crate::uptime_ns().saturating_sub(started_ns);
        let moved = changed == smoltcp::iface::PollResult::SocketStateChanged
            || served
            || before != self.counters;
        self.stack_ns += spent_ns;
        if !moved {
            self.empty_poll_ns += spent_ns;
        }
        moved
    }

    /// Whether a frame came or went less than [`BUSY_POLL_NS`] ago: then
    /// more (or the answer) are likely on their way, and the run loop should
    /// poll rather than sleep.
    pub fn active(&self, now_ns: u64) -> bool {
        self.last_frame_ns
            .is_some_and(|at| now_ns.saturating_sub(at) < BUSY_POLL_NS)
    }

    /// Listens on [`HELLO_PORT`], and answers a connection with the banner
    /// line, then closes it; whether it did something.
    fn serve_hello(&mut self) -> bool {
        let socket = self.sockets.get_mut::<tcp::Socket>(self.hello);
        if !socket.is_open() {
            // Only fails for port 0 or an open socket, neither the case.
            let _ = socket.listen(HELLO_PORT);
            return true;
        }
        if socket.state() == tcp::State::Established && socket.can_send() {
            let line = alloc::format!("{}\n", self.banner);
            // The buffer is empty and larger than the banner.
            let _ = socket.send_slice(line.as_bytes());
            socket.close();
            return true;
        }
        false
    }

    /// Listens on [`SINK_PORT`], discards what arrives and closes once the
    /// client has; whether it did something.
    fn serve_sink(&mut self) -> bool {
        let socket = self.sockets.get_mut::<tcp::Socket>(self.sink);
        if !socket.is_open() {
            // Only fails for port 0 or an open socket, neither the case.
            let _ = socket.listen(SINK_PORT);
            return true;
        }
        let mut read = false;
        while let Ok(n) = socket.recv(|data| (data.len(), data.len())) {
            if n == 0 {
                break;
            }
            read = true;
        }
        if socket.state() == tcp::State::CloseWait {
            socket.close();
            return true;
        }
        read
    }

    /// Listens on [`SOURCE_PORT`], keeps the send buffer full of zeros until
    /// the client closes its side, then closes; whether it did something.
    fn serve_source(&mut self) -> bool {
        let socket = self.sockets.get_mut::<tcp::Socket>(self.zeros);
        if !socket.is_open() {
            // Only fails for port 0 or an open socket, neither the case.
            let _ = socket.listen(SOURCE_PORT);
            return true;
        }
        // Whatever the client sends is read and dropped.
        while socket
            .recv(|data| (data.len(), data.len()))
            .is_ok_and(|n| n > 0)
        {}
        match socket.state() {
            tcp::State::CloseWait => {
                socket.close();
                true
            }
            tcp::State::Established if socket.can_send() => {
                // The buffer's bytes are zeros already: only its free space
                // is handed to smoltcp, nothing is written.
                let _ = socket.send(|free| (free.len(), ()));
                true
            }
            _ => false,
        }
    }

    /// The `net` command's report: MAC, address, link and counters.
    pub fn report(&self, out: &mut dyn Write) {
        let mac = EthernetAddress(self.device.mac_address());
        let _ = write!(out, "mac {mac}\r\n");
        match (self.config, &self.source) {
            (Some(Ipv4Config { cidr, .. }), source) => {
                let _ = write!(out, "address {cidr} ({})\r\n", describe(source));
            }
            (None, _) if self.addressing == Addressing::Automatic => {
                let _ = write!(out, "address none yet (asking DHCP)\r\n");
            }
            (None, _) => {
                let _ = write!(
                    out,
                    "address none (set one with 'net <address>/<prefix>' or 'net dhcp')\r\n"
                );
            }
        }
        if let AddressSource::Dhcp { dns, .. } = &self.source {
            if !dns.is_empty() {
                let _ = write!(out, "dns");
                for server in dns {
                    let _ = write!(out, " {server}");
                }
                let _ = write!(out, "\r\n");
            }
        }
        if let Some(gateway) = self.config.and_then(|c| c.gateway) {
            let _ = write!(out, "gateway {gateway}\r\n");
        }
        let link = if self.device.link_up() { "up" } else { "down" };
        let c = self.counters;
        let _ = write!(
            out,
            "link {link}\r\nrx {} frames {} bytes {} bad checksums\r\ntx {} frames {} bytes {} errors\r\n",
            c.rx_frames, c.rx_bytes, c.rx_bad_checksums, c.tx_frames, c.tx_bytes, c.tx_errors
        );
        let _ = write!(
            out,
            "stack time {} ms (driver, smoltcp, built-in ports), {} ms of it in polls that moved nothing\r\n",
            self.stack_ns / 1_000_000,
            self.empty_poll_ns / 1_000_000
        );
    }
}

/// Where an address came from, in words.
fn describe(source: &AddressSource) -> String {
    match source {
        AddressSource::None | AddressSource::Static => String::from("static"),
        AddressSource::Dhcp {
            server,
            lease_s,
            renewals,
            ..
        } => alloc::format!("dhcp from {server}, lease {lease_s} s, renewed {renewals} times"),
        AddressSource::LinkLocal => String::from("link-local: no DHCP server answered"),
    }
}

fn instant(now_ns: u64) -> Instant {
    Instant::from_micros((now_ns / 1000) as i64)
}

/// The run-loop service that polls the shared [`NetStack`].
pub struct NetService(Rc<RefCell<NetStack>>);

impl NetService {
    /// A service polling `stack`.
    pub fn new(stack: Rc<RefCell<NetStack>>) -> Self {
        Self(stack)
    }
}

impl Service for NetService {
    fn name(&self) -> &'static str {
        "net"
    }

    fn poll(&mut self, turn: &mut Turn<'_>) -> ServiceStatus {
        let mut stack = self.0.borrow_mut();
        if stack.poll(turn.now_ns) || stack.active(turn.now_ns) {
            ServiceStatus::Busy
        } else {
            ServiceStatus::Idle
        }
    }
}

/// The network stack as its users share it.
pub type SharedNet = Rc<RefCell<NetStack>>;

/// Gives `kernel` a network stack on `device`: its service and the `net`
/// command. Returns the stack, for the services that open sockets on it.
pub fn install(kernel: &mut Kernel, device: Box<dyn NetDevice>) -> SharedNet {
    let banner = crate::banner(&kernel.board().facts());
    let now = kernel.board().clock().now_ns();
    let stack = Rc::new(RefCell::new(NetStack::new(device, now, banner)));
    kernel.add_service(Box::new(NetService::new(stack.clone())));
    let shared = stack.clone();
    kernel.add_command(Command::new(
        "net",
        "[<address>/<prefix> [gateway] | dhcp]",
        "show the network interface, set a static IPv4 address, or take one by DHCP",
        move |_, args, out| net_command(&shared, args, out),
    ));
    stack
}

fn net_command(stack: &SharedNet, args: &[&str], out: &mut dyn Write) -> CommandResult {
    let mut stack = stack.borrow_mut();
    match args {
        [] => {}
        ["dhcp"] => stack.automatic(),
        _ => stack.configure(Ipv4Config::parse(args)?),
    }
    stack.report(out);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::{exec, FakeBoard, Wire, WireEnd};
    use std::sync::{Arc, Mutex};

    use smoltcp::phy::ChecksumCapabilities;
    use smoltcp::wire::{
        ArpOperation, ArpPacket, ArpRepr, EthernetFrame, EthernetProtocol, EthernetRepr,
        Icmpv4Packet, Icmpv4Repr, IpProtocol, Ipv4Packet, Ipv4Repr,
    };

    const NODE_MAC: [u8; 6] = [0x52, 0x54, 0, 0x12, 0x34, 0x56];
    const PEER_MAC: EthernetAddress = EthernetAddress([0x02, 0, 0, 0, 0, 1]);
    const NODE_IP: Ipv4Address = Ipv4Address::new(10, 0, 2, 2);
    const PEER_IP: Ipv4Address = Ipv4Address::new(10, 0, 2, 1);

    fn ethernet(ethertype: EthernetProtocol, dst: EthernetAddress, payload: &[u8]) -> Vec<u8> {
        let repr = EthernetRepr {
            src_addr: PEER_MAC,
            dst_addr: dst,
            ethertype,
        };
        let mut buf = vec![0; repr.buffer_len() + payload.len()];
        let mut frame = EthernetFrame::new_unchecked(&mut buf);
        repr.emit(&mut frame);
        frame.payload_mut().copy_from_slice(payload);
        buf
    }

    fn arp_request() -> Vec<u8> {
        let repr = ArpRepr::EthernetIpv4 {
            operation: ArpOperation::Request,
            source_hardware_addr: PEER_MAC,
            source_protocol_addr: PEER_IP,
            target_hardware_addr: EthernetAddress([0; 6]),
            target_protocol_addr: NODE_IP,
        };
        let mut buf = vec![0; repr.buffer_len()];
        repr.emit(&mut ArpPacket::new_unchecked(&mut buf));
        ethernet(EthernetProtocol::Arp, EthernetAddress::BROADCAST, &buf)
    }

    fn echo_request(seq_no: u16) -> Vec<u8> {
        let icmp = Icmpv4Repr::EchoRequest {
            ident: 0x7e4e,
            seq_no,
            data: b"tern ping",
        };
        let ip = Ipv4Repr {
            src_addr: PEER_IP,
            dst_addr: NODE_IP,
            next_header: IpProtocol::Icmp,
            payload_len: icmp.buffer_len(),
            hop_limit: 64,
        };
        let caps = ChecksumCapabilities::default();
        let mut buf = vec![0; ip.buffer_len() + icmp.buffer_len()];
        let mut packet = Ipv4Packet::new_unchecked(&mut buf);
        ip.emit(&mut packet, &caps);
        icmp.emit(
            &mut Icmpv4Packet::new_unchecked(packet.payload_mut()),
            &caps,
        );
        ethernet(EthernetProtocol::Ipv4, EthernetAddress(NODE_MAC), &buf)
    }

    fn node_with_nic() -> (Kernel, Arc<Mutex<Wire>>) {
        let (kernel, _, wire) = node_with_stack();
        (kernel, wire)
    }

    fn node_with_stack() -> (Kernel, SharedNet, Arc<Mutex<Wire>>) {
        let wire = Arc::new(Mutex::new(Wire::default()));
        let mut kernel = Kernel::new(FakeBoard::leak());
        let stack = install(&mut kernel, Box::new(WireEnd::node(wire.clone(), NODE_MAC)));
        (kernel, stack, wire)
    }

    fn poll(kernel: &mut Kernel) {
        let mut out = String::new();
        for _ in 0..10 {
            kernel.poll_services(&mut out);
        }
        assert_eq!(out, "");
    }

    #[test]
    fn answers_arp_and_ping_once_configured() {
        let (mut kernel, wire) = node_with_nic();
        wire.lock().unwrap().to_node.push_back(arp_request());
        poll(&mut kernel);
        assert!(
            wire.lock().unwrap().from_node.is_empty(),
            "an unconfigured node answered"
        );

        let shown = exec(&mut kernel, "net 10.0.2.2/24 10.0.2.1");
        assert!(
            shown.contains("address 10.0.2.2/24 (static)\r\n"),
            "{shown}"
        );
        assert!(shown.contains("gateway 10.0.2.1\r\n"), "{shown}");

        wire.lock().unwrap().to_node.push_back(arp_request());
        poll(&mut kernel);
        let reply = wire
            .lock()
            .unwrap()
            .from_node
            .pop_back()
            .expect("no ARP reply");
        let frame = EthernetFrame::new_checked(&reply[..]).unwrap();
        assert_eq!(frame.dst_addr(), PEER_MAC);
        let arp = ArpRepr::parse(&ArpPacket::new_checked(frame.payload()).unwrap()).unwrap();
        assert_eq!(
            arp,
            ArpRepr::EthernetIpv4 {
                operation: ArpOperation::Reply,
                source_hardware_addr: EthernetAddress(NODE_MAC),
                source_protocol_addr: NODE_IP,
                target_hardware_addr: PEER_MAC,
                target_protocol_addr: PEER_IP,
            }
        );

        wire.lock().unwrap().to_node.push_back(echo_request(7));
        poll(&mut kernel);
        let reply = wire
            .lock()
            .unwrap()
            .from_node
            .pop_back()
            .expect("no echo reply");
        let frame = EthernetFrame::new_checked(&reply[..]).unwrap();
        let packet = Ipv4Packet::new_checked(frame.payload()).unwrap();
        assert_eq!((packet.src_addr(), packet.dst_addr()), (NODE_IP, PEER_IP));
        let icmp = Icmpv4Repr::parse(
            &Icmpv4Packet::new_checked(packet.payload()).unwrap(),
            &ChecksumCapabilities::default(),
        )
        .unwrap();
        assert_eq!(
            icmp,
            Icmpv4Repr::EchoReply {
                ident: 0x7e4e,
                seq_no: 7,
                data: b"tern ping",
            }
        );

        let shown = exec(&mut kernel, "net");
        assert!(shown.contains("mac 52-54-00-12-34-56\r\n"), "{shown}");
        assert!(shown.contains("link up\r\n"), "{shown}");
        assert!(shown.contains("rx 3 frames"), "{shown}");
        assert!(shown.contains("tx 2 frames"), "{shown}");
        assert!(shown.contains("\r\nstack time "), "{shown}");
        assert!(
            shown.contains(" ms of it in polls that moved nothing\r\n"),
            "{shown}"
        );
    }

    /// A smoltcp TCP client on the peer's end of the wire.
    struct Client {
        peer: WireEnd,
        counters: Counters,
        rx_buffer: Vec<u8>,
        tx_buffer: Vec<u8>,
        iface: Interface,
        sockets: SocketSet<'static>,
        handle: SocketHandle,
    }

    impl Client {
        /// Connects to the node's `port` with a socket of these buffers.
        fn connect(wire: Arc<Mutex<Wire>>, port: u16, rx: usize, tx: usize) -> Self {
            let mut peer = WireEnd::peer(wire, PEER_MAC.0);
            let mut counters = Counters::default();
            let mut rx_buffer = vec![0; peer.max_receive_len()];
            let mut tx_buffer = vec![0; peer.max_frame_len()];
            let mut iface = Interface::new(
                Config::new(HardwareAddress::Ethernet(PEER_MAC)),
                &mut Phy {
                    device: &mut peer,
                    counters: &mut counters,
                    rx_buffer: &mut rx_buffer,
                    tx_buffer: &mut tx_buffer,
                },
                Instant::ZERO,
            );
            iface.update_ip_addrs(|addrs| {
                addrs
                    .push(IpCidr::Ipv4(Ipv4Cidr::new(PEER_IP, 24)))
                    .unwrap();
            });
            let mut sockets = SocketSet::new(Vec::new());
            let handle = sockets.add(tcp::Socket::new(
                tcp::SocketBuffer::new(vec![0; rx]),
                tcp::SocketBuffer::new(vec![0; tx]),
            ));
            sockets
                .get_mut::<tcp::Socket>(handle)
                .connect(iface.context(), (NODE_IP, port), 49152)
                .unwrap();
            Self {
                peer,
                counters,
                rx_buffer,
                tx_buffer,
                iface,
                sockets,
                handle,
            }
        }

        /// Polls the node's services, then the client at `turn` ms; the
        /// client's socket.
        fn turn(&mut self, kernel: &mut Kernel, turn: i64) -> &mut tcp::Socket<'static> {
            let mut out = String::new();
            kernel.poll_services(&mut out);
            let mut phy = Phy {
                device: &mut self.peer,
                counters: &mut self.counters,
                rx_buffer: &mut self.rx_buffer,
                tx_buffer: &mut self.tx_buffer,
            };
            self.iface
                .poll(Instant::from_millis(turn), &mut phy, &mut self.sockets);
            self.sockets.get_mut::<tcp::Socket>(self.handle)
        }
    }

    /// Reads what `socket` has into `into`.
    fn drain(socket: &mut tcp::Socket, into: &mut Vec<u8>) {
        while socket.can_recv() {
            socket
                .recv(|data| {
                    into.extend_from_slice(data);
                    (data.len(), ())
                })
                .unwrap();
        }
    }

    #[test]
    fn the_hello_port_sends_the_banner_and_closes() {
        let (mut kernel, wire) = node_with_nic();
        exec(&mut kernel, "net 10.0.2.2/24");
        let mut client = Client::connect(wire, HELLO_PORT, 256, 64);
        let mut received = Vec::new();
        for turn in 0..200 {
            let socket = client.turn(&mut kernel, turn);
            drain(socket, &mut received);
            if !socket.may_recv() && !received.is_empty() {
                break;
            }
        }
        assert_eq!(
            String::from_utf8(received).unwrap(),
            "Tern 0.1.0 on rpi4 (aarch64)\n"
        );
        // The node closed its side after the line.
        assert!(!client
            .sockets
            .get_mut::<tcp::Socket>(client.handle)
            .may_recv());
    }

    #[test]
    fn the_sink_port_swallows_everything_and_closes_after_the_client() {
        let (mut kernel, stack, wire) = node_with_stack();
        exec(&mut kernel, "net 10.0.2.2/24");
        let mut client = Client::connect(wire, SINK_PORT, 256, 64 * 1024);
        const TOTAL: usize = 1 << 20;
        let (mut sent, mut received) = (0, Vec::new());
        let mut closed_by_node = false;
        for turn in 0..20_000 {
            let socket = client.turn(&mut kernel, turn);
            while sent < TOTAL && socket.can_send() {
                sent += socket
                    .send_slice(&[0x5a; 4096][..(TOTAL - sent).min(4096)])
                    .unwrap();
            }
            if sent == TOTAL && socket.state() == tcp::State::Established {
                socket.close();
            }
            drain(socket, &mut received);
            if sent == TOTAL && !socket.may_recv() {
                closed_by_node = true;
                break;
            }
        }
        assert!(closed_by_node, "the sink did not close after the client");
        assert!(
            received.is_empty(),
            "the sink answered {} bytes",
            received.len()
        );
        assert!(stack.borrow().counters().rx_bytes > TOTAL as u64);
    }

    #[test]
    fn the_source_port_streams_zeros_until_the_client_closes() {
        let (mut kernel, wire) = node_with_nic();
        exec(&mut kernel, "net 10.0.2.2/24");
        let mut client = Client::connect(wire, SOURCE_PORT, 64 * 1024, 64);
        let mut received = Vec::new();
        let mut turn = 0;
        while received.len() < 1 << 20 && turn < 20_000 {
            drain(client.turn(&mut kernel, turn), &mut received);
            turn += 1;
        }
        assert!(received.len() >= 1 << 20, "{} bytes", received.len());
        assert!(received.iter().all(|&b| b == 0));
        client.turn(&mut kernel, turn).close();
        let mut closed = false;
        for turn in turn..turn + 20_000 {
            let socket = client.turn(&mut kernel, turn);
            drain(socket, &mut received);
            if !socket.may_recv() {
                closed = true;
                break;
            }
        }
        assert!(closed, "the source did not close after the client");
    }

    #[test]
    fn a_segment_with_a_wrong_checksum_is_dropped_and_counted() {
        let (mut kernel, stack, wire) = node_with_stack();
        exec(&mut kernel, "net 10.0.2.2/24");
        let mut client = Client::connect(wire.clone(), SINK_PORT, 256, 256);
        // The client's ARP request, answered.
        client.turn(&mut kernel, 0);
        client.turn(&mut kernel, 1);
        // Its SYN, damaged in its TCP checksum on the way.
        let mut syn = wire.lock().unwrap().to_node.pop_back().expect("no SYN");
        let mut frame = EthernetFrame::new_checked(&mut syn[..]).unwrap();
        let mut ip = Ipv4Packet::new_checked(frame.payload_mut()).unwrap();
        let mut tcp = TcpPacket::new_checked(ip.payload_mut()).unwrap();
        assert!(tcp.syn());
        tcp.set_checksum(!tcp.checksum());
        wire.lock().unwrap().to_node.push_back(syn);
        poll(&mut kernel);
        assert_eq!(stack.borrow().counters().rx_bad_checksums, 1);
        assert!(
            wire.lock().unwrap().from_node.is_empty(),
            "the node answered a damaged SYN"
        );
        // Resent whole, it is answered.
        let mut answered = false;
        for turn in 2..5_000 {
            if client.turn(&mut kernel, turn * 100).state() == tcp::State::Established {
                answered = true;
                break;
            }
        }
        assert!(answered);
    }

    #[test]
    fn bad_addresses_are_refused_with_a_reason() {
        let (mut kernel, _) = node_with_nic();
        for (line, reason) in [
            ("net 10.0.2.2", "is not <address>/<prefix>"),
            ("net 10.0.2/24", "is not an IPv4 address"),
            ("net 10.0.2.2/33", "is not a prefix length"),
            ("net 10.0.2.2/24 gw", "'gw' is not an IPv4 address"),
            ("net 10.0.2.2/24 10.0.2.1 x", "usage: net"),
            ("net dhcpx", "is not <address>/<prefix>"),
        ] {
            let shown = exec(&mut kernel, line);
            assert!(shown.starts_with("error: net: "), "{line}: {shown}");
            assert!(shown.contains(reason), "{line}: {shown}");
        }
        assert!(exec(&mut kernel, "net").contains("address none yet (asking DHCP)"));
    }

    #[test]
    fn a_node_without_a_device_has_no_net_command() {
        let mut kernel = Kernel::new(FakeBoard::leak());
        assert!(exec(&mut kernel, "net").contains("unknown command 'net'"));
    }
}
