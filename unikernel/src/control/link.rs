//! Connections of the control service on smoltcp sockets: [`Link`] is one
//! authenticated protocol connection with the bytes its socket has not
//! taken yet (both sides use it); [`PeerConn`] is an outgoing connection to
//! a peer's control port with its stages (connect → handshake → ready) and
//! its reconnection with backoff, shared by migrations and sync sessions.

use alloc::vec::Vec;

use smoltcp::iface::SocketHandle;
use smoltcp::socket::tcp;
use smoltcp::wire::IpEndpoint;
use tern_protocol::{ChannelError, Connection, Event, Hello, Message};

use super::{Context, ControlError};

/// How long the service waits for peers.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Timeouts {
    /// A connection attempt or a handshake without an answer fails after this.
    pub connect_ns: u64,
    /// A connection on which nothing moved (no byte received, none
    /// accepted by the socket) while an answer was due is broken after this.
    pub idle_ns: u64,
    /// First pause before reconnecting; doubles at each attempt.
    pub retry_ns: u64,
    /// Longest pause between reconnection attempts.
    pub retry_max_ns: u64,
}

impl Default for Timeouts {
    fn default() -> Self {
        Self {
            connect_ns: 5_000_000_000,
            idle_ns: 10_000_000_000,
            retry_ns: 1_000_000_000,
            retry_max_ns: 8_000_000_000,
        }
    }
}

/// One authenticated connection on a smoltcp socket: the protocol machine
/// and the bytes the socket has not taken yet.
pub(crate) struct Link {
    /// The protocol machine.
    pub(crate) conn: Connection,
    pending: Vec<u8>,
    sent: usize,
    /// Bytes the socket has taken.
    pub(crate) written: u64,
    /// Last time a byte moved either way.
    pub(crate) active_ns: u64,
}

impl Link {
    /// A link for `conn`, whose first bytes (a client's hello) are pending.
    pub(crate) fn new(conn: Connection, now_ns: u64) -> Self {
        let mut link = Self {
            conn,
            pending: Vec::new(),
            sent: 0,
            written: 0,
            active_ns: now_ns,
        };
        link.take_output();
        link
    }

    fn take_output(&mut self) {
        let out = self.conn.take_output();
        if self.sent == self.pending.len() {
            self.pending.clear();
            self.sent = 0;
        }
        self.pending.extend_from_slice(&out);
    }

    /// Seals `msg` for sending.
    pub(crate) fn send(&mut self, msg: &Message) -> Result<(), ChannelError> {
        self.conn.send(msg)?;
        self.take_output();
        Ok(())
    }

    /// Bytes not yet taken by the socket.
    pub(crate) fn backlog(&self) -> usize {
        self.pending.len() - self.sent
    }

    /// Writes what the socket takes, then reads what it has; returns the
    /// peer's events. A channel error ends the connection.
    pub(crate) fn pump(
        &mut self,
        socket: &mut tcp::Socket,
        now_ns: u64,
    ) -> Result<Vec<Event>, ChannelError> {
        self.flush(socket, now_ns);
        let mut events = Vec::new();
        while socket.can_recv() {
            let r = socket.recv(|data| (data.len(), self.conn.receive(data)));
            match r {
                Ok(Ok(mut e)) => {
                    self.active_ns = now_ns;
                    events.append(&mut e);
                }
                Ok(Err(e)) => return Err(e),
                Err(_) => break,
            }
        }
        self.take_output();
        self.flush(socket, now_ns);
        Ok(events)
    }

    /// Writes what the socket takes of the pending bytes.
    pub(crate) fn flush(&mut self, socket: &mut tcp::Socket, now_ns: u64) {
        while self.backlog() > 0 && socket.can_send() {
            match socket.send_slice(&self.pending[self.sent..]) {
                Ok(0) | Err(_) => break,
                Ok(n) => {
                    self.sent += n;
                    self.written += n as u64;
                    self.active_ns = now_ns;
                }
            }
        }
    }
}

/// Where an outgoing connection is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Stage {
    /// TCP connection under way.
    Connecting,
    /// Handshake under way.
    Handshake,
    /// Authenticated: messages flow.
    Ready,
    /// The link was lost: waiting to reconnect.
    Reconnect {
        /// When to try again.
        at_ns: u64,
    },
}

/// What one turn of a [`PeerConn`] brought.
pub(super) struct Polled {
    /// The peer's events (its hello on [`Event::Established`], messages).
    pub(super) events: Vec<Event>,
    /// Whether the connection itself moved (a reconnect, a new stage).
    pub(super) busy: bool,
}

/// An outgoing authenticated connection to a peer's control service.
pub(super) struct PeerConn {
    /// The peer's control address.
    pub(super) to: IpEndpoint,
    handle: SocketHandle,
    link: Option<Link>,
    stage: Stage,
    stage_ns: u64,
    retry_ns: u64,
    /// Bytes the sockets of earlier connections took.
    written_before: u64,
}

impl PeerConn {
    /// Opens a connection to `to` (on a socket of its own).
    pub(super) fn open(
        ctx: &mut Context,
        to: IpEndpoint,
        now_ns: u64,
    ) -> Result<Self, ControlError> {
        let handle = ctx.add_socket();
        if let Err(e) = ctx.open(handle, to) {
            ctx.remove_socket(handle);
            return Err(e);
        }
        Ok(Self {
            to,
            handle,
            link: None,
            stage: Stage::Connecting,
            stage_ns: now_ns,
            retry_ns: ctx.timeouts.retry_ns,
            written_before: 0,
        })
    }

    /// The connection's stage.
    pub(super) fn stage(&self) -> Stage {
        self.stage
    }

    /// When the current stage began.
    pub(super) fn stage_ns(&self) -> u64 {
        self.stage_ns
    }

    /// The peer's hello, once the handshake is done.
    pub(super) fn peer(&self) -> Option<&Hello> {
        self.link.as_ref().and_then(|l| l.conn.peer())
    }

    /// Seals `msg` for sending.
    pub(super) fn send(&mut self, msg: &Message) -> Result<(), ControlError> {
        self.link
            .as_mut()
            .ok_or(ControlError::Closed)?
            .send(msg)
            .map_err(ControlError::from)
    }

    /// Bytes sealed but not yet taken by the socket.
    pub(super) fn backlog(&self) -> usize {
        self.link.as_ref().map_or(0, Link::backlog)
    }

    /// Bytes taken by the sockets of this connection so far.
    pub(super) fn written(&self) -> u64 {
        self.written_before + self.link.as_ref().map_or(0, |l| l.written)
    }

    /// Bytes sealed so far: taken by the sockets or waiting for them.
    pub(super) fn queued(&self) -> u64 {
        self.written() + self.backlog() as u64
    }

    /// How long nothing moved on the link (0 without a link).
    pub(super) fn idle_ns(&self, now_ns: u64) -> u64 {
        self.link
            .as_ref()
            .map_or(0, |l| now_ns.saturating_sub(l.active_ns))
    }

    /// Bytes in the socket's send queue, and its capacity.
    pub(super) fn send_queue(&self, ctx: &Context) -> (usize, usize) {
        let mut net = ctx.net.borrow_mut();
        let socket = net.tcp(self.handle);
        (socket.send_queue(), socket.send_capacity())
    }

    /// One turn: reconnects when due, completes the connection and the
    /// handshake, exchanges bytes. A refused, closed or silent connection,
    /// or a failed channel, is an error (then [`PeerConn::broken`]).
    pub(super) fn poll(&mut self, ctx: &mut Context, now_ns: u64) -> Result<Polled, ControlError> {
        let mut busy = false;
        match self.stage {
            Stage::Reconnect { at_ns } => {
                if now_ns < at_ns {
                    return Ok(Polled {
                        events: Vec::new(),
                        busy: false,
                    });
                }
                ctx.open(self.handle, self.to)?;
                self.set_stage(Stage::Connecting, now_ns);
                return Ok(Polled {
                    events: Vec::new(),
                    busy: true,
                });
            }
            Stage::Connecting => {
                let state = ctx.net.borrow_mut().tcp(self.handle).state();
                match state {
                    tcp::State::Established => {
                        let (config, nonce) = ctx.channel()?;
                        self.link = Some(Link::new(Connection::client(&config, nonce)?, now_ns));
                        self.set_stage(Stage::Handshake, now_ns);
                        busy = true;
                    }
                    tcp::State::Closed => return Err(ControlError::Refused),
                    _ if now_ns.saturating_sub(self.stage_ns) > ctx.timeouts.connect_ns => {
                        return Err(ControlError::Timeout(ctx.timeouts.connect_ns / 1_000_000));
                    }
                    _ => {
                        return Ok(Polled {
                            events: Vec::new(),
                            busy: false,
                        })
                    }
                }
            }
            Stage::Handshake if now_ns.saturating_sub(self.stage_ns) > ctx.timeouts.connect_ns => {
                return Err(ControlError::Timeout(ctx.timeouts.connect_ns / 1_000_000));
            }
            Stage::Handshake | Stage::Ready => {}
        }
        let mut net = ctx.net.borrow_mut();
        let socket = net.tcp(self.handle);
        let link = self.link.as_mut().ok_or(ControlError::Closed)?;
        let events = link.pump(socket, now_ns)?;
        if events.is_empty() && !socket.may_recv() {
            return Err(ControlError::Closed);
        }
        drop(net);
        if events.iter().any(|e| matches!(e, Event::Established(_))) {
            self.set_stage(Stage::Ready, now_ns);
            self.retry_ns = ctx.timeouts.retry_ns;
        }
        busy |= !events.is_empty();
        Ok(Polled { events, busy })
    }

    fn set_stage(&mut self, stage: Stage, now_ns: u64) {
        self.stage = stage;
        self.stage_ns = now_ns;
    }

    /// Writes what the socket takes of the sealed bytes.
    pub(super) fn flush(&mut self, ctx: &Context, now_ns: u64) {
        if let Some(link) = self.link.as_mut() {
            link.flush(ctx.net.borrow_mut().tcp(self.handle), now_ns);
        }
    }

    /// The link failed: drops it and waits before reconnecting, twice as
    /// long as last time (up to the maximum). Returns the pause in ns.
    pub(super) fn broken(&mut self, ctx: &Context, now_ns: u64) -> u64 {
        self.drop_link(ctx);
        let pause = self.retry_ns;
        self.set_stage(
            Stage::Reconnect {
                at_ns: now_ns + pause,
            },
            now_ns,
        );
        self.retry_ns = (self.retry_ns * 2).min(ctx.timeouts.retry_max_ns);
        pause
    }

    /// The peer is known to be reachable again: reconnects at once, with
    /// the backoff reset.
    pub(super) fn retry_now(&mut self, ctx: &Context, now_ns: u64) {
        self.drop_link(ctx);
        self.set_stage(Stage::Reconnect { at_ns: now_ns }, now_ns);
        self.retry_ns = ctx.timeouts.retry_ns;
    }

    /// Whether a link exists (it may still be in its handshake).
    pub(super) fn has_link(&self) -> bool {
        self.link.is_some()
    }

    fn drop_link(&mut self, ctx: &Context) {
        ctx.net.borrow_mut().tcp(self.handle).abort();
        if let Some(link) = self.link.take() {
            self.written_before += link.written;
        }
    }

    /// Ends the connection (gracefully: what is sealed is flushed first;
    /// else aborted) and lets its socket close in the background.
    pub(super) fn close(mut self, ctx: &mut Context, graceful: bool, now_ns: u64) {
        {
            let mut net = ctx.net.borrow_mut();
            let socket = net.tcp(self.handle);
            if graceful {
                if let Some(link) = self.link.as_mut() {
                    link.flush(socket, now_ns);
                }
                socket.close();
            } else {
                socket.abort();
            }
        }
        ctx.close_later(self.handle, now_ns);
    }
}
