//! The handshake (mutual PSK authentication) and the sealed channel, sans-IO:
//! bytes in through [`Connection::receive`], bytes out through
//! [`Connection::take_output`]. See `docs/protocol.md` for the key schedule.

use crate::error::ChannelError;
use crate::frame::{write_frame, FrameDecoder, MAX_FRAME};
use crate::message::{Handshake, Hash, Hello, Message, PROTOCOL_VERSION};
use alloc::vec::Vec;
use chacha20poly1305::aead::{Aead, KeyInit, Payload};
use chacha20poly1305::{ChaCha20Poly1305, Key, Nonce};
use hkdf::Hkdf;
use hmac::{Hmac, Mac};
use sha2::{Digest, Sha256};

/// A 32-byte pre-shared key, the same on every node of a cluster.
#[derive(Clone)]
pub struct Psk(pub [u8; 32]);

impl core::fmt::Debug for Psk {
    // Never print key material.
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.write_str("Psk(..)")
    }
}

/// How a node authenticates its peers.
#[derive(Debug, Clone)]
pub enum Security {
    /// Mutual authentication and encryption with this key.
    Key(Psk),
    /// No key: requested explicitly by the operator (the kernel logs it loudly).
    /// The channel then runs the same handshake and framing under a publicly
    /// known all-zero key: it still rejects corrupted, replayed and reordered
    /// frames but gives no secrecy and no authentication. A keyed node refuses
    /// an insecure peer.
    ExplicitlyInsecure,
}

/// A node's channel configuration.
#[derive(Debug, Clone)]
pub struct Config {
    /// What this node says about itself (its `version` is set to [`PROTOCOL_VERSION`]
    /// and its `insecure` flag from `security`).
    pub hello: Hello,
    /// The configured key; `None` refuses every channel.
    pub security: Option<Security>,
    /// Largest frame accepted or sent.
    pub max_frame: u32,
}

impl Config {
    /// A configuration with the default frame maximum.
    pub fn new(hello: Hello, security: Option<Security>) -> Self {
        Self {
            hello,
            security,
            max_frame: MAX_FRAME,
        }
    }
}

/// Which side of the TCP connection this is (the client speaks first).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// Opened the connection.
    Client,
    /// Accepted it.
    Server,
}

/// What [`Connection::receive`] delivers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    /// Both sides proved the key; the peer's hello, now trusted.
    Established(Hello),
    /// A message from the authenticated peer.
    Message(Message),
}

/// One direction's AEAD state.
struct Direction {
    aead: ChaCha20Poly1305,
    counter: u64,
}

impl Direction {
    fn new(key: &[u8; 32]) -> Self {
        Self {
            aead: ChaCha20Poly1305::new(Key::from_slice(key)),
            counter: 0,
        }
    }
}

/// The 96-bit AEAD nonce for a frame counter: 4 zero bytes, then the counter LE.
fn nonce(counter: u64) -> Nonce {
    let mut n = [0u8; 12];
    n[4..].copy_from_slice(&counter.to_le_bytes());
    n.into()
}

/// Keys derived once both nonces and the transcript are known.
struct Keys {
    server_auth: [u8; 32],
    client_auth: [u8; 32],
    c2s: [u8; 32],
    s2c: [u8; 32],
    transcript: Hash,
}

impl Keys {
    fn derive(
        psk: &[u8; 32],
        client_nonce: &[u8; 32],
        server_nonce: &[u8; 32],
        transcript: Hash,
    ) -> Self {
        let mut salt = [0u8; 64];
        salt[..32].copy_from_slice(client_nonce);
        salt[32..].copy_from_slice(server_nonce);
        let hk = Hkdf::<Sha256>::new(Some(&salt), psk);
        let expand = |label: &[u8]| {
            let mut out = [0u8; 32];
            // 32 bytes is far below HKDF-SHA-256's 8160-byte limit: cannot fail.
            let _ = hk.expand_multi_info(&[label, &transcript], &mut out);
            out
        };
        Self {
            server_auth: expand(b"tern/1 server auth"),
            client_auth: expand(b"tern/1 client auth"),
            c2s: expand(b"tern/1 client to server"),
            s2c: expand(b"tern/1 server to client"),
            transcript,
        }
    }

    fn mac(key: &[u8; 32], parts: &[&[u8]]) -> Hash {
        hmac_sha256(key, parts)
    }

    fn server_mac(&self) -> Hash {
        Self::mac(&self.server_auth, &[&self.transcript])
    }

    fn client_mac(&self, server_mac: &Hash) -> Hash {
        Self::mac(&self.client_auth, &[&self.transcript, server_mac])
    }
}

/// HMAC-SHA-256 under a 32-byte key of the concatenated parts (the
/// handshake's proofs, the discovery beacon's tag).
pub(crate) fn hmac_sha256(key: &[u8; 32], parts: &[&[u8]]) -> Hash {
    // HMAC zero-pads a short key to the 64-byte block; padding here gives the
    // same MAC through the infallible fixed-size constructor.
    let mut block = [0u8; 64];
    block[..32].copy_from_slice(key);
    let mut m = <Hmac<Sha256> as KeyInit>::new(&block.into());
    for p in parts {
        m.update(p);
    }
    m.finalize().into_bytes().into()
}

/// Handshake progress.
enum State {
    /// Waiting for the peer's hello.
    AwaitHello,
    /// Waiting for the peer's proof; keys derived.
    AwaitAuth(Keys),
    /// Sealed channel up.
    Established { send: Direction, recv: Direction },
    /// An error ended the connection.
    Closed,
}

/// One end of an authenticated, encrypted connection, driven by byte buffers.
pub struct Connection {
    role: Role,
    state: State,
    psk: [u8; 32],
    hello: Hello,
    nonce: [u8; 32],
    /// The client's hello frame body, kept for the transcript.
    client_hello: Vec<u8>,
    peer: Option<Hello>,
    decoder: FrameDecoder,
    max_frame: u32,
    out: Vec<u8>,
}

impl Connection {
    /// Opens the client side; the first output is its hello. `nonce` must be
    /// 32 fresh random bytes from the board's entropy source.
    pub fn client(config: &Config, nonce: [u8; 32]) -> Result<Self, ChannelError> {
        let mut c = Self::new(Role::Client, config, nonce)?;
        let body = encode_handshake(&Handshake::Hello {
            hello: c.hello.clone(),
            nonce,
        })?;
        write_frame(&body, c.max_frame, &mut c.out)?;
        c.client_hello = body;
        Ok(c)
    }

    /// Opens the server side; it waits for the client's hello.
    pub fn server(config: &Config, nonce: [u8; 32]) -> Result<Self, ChannelError> {
        Self::new(Role::Server, config, nonce)
    }

    fn new(role: Role, config: &Config, nonce: [u8; 32]) -> Result<Self, ChannelError> {
        let (psk, insecure) = match &config.security {
            None => return Err(ChannelError::NoKey),
            Some(Security::Key(k)) => (k.0, false),
            Some(Security::ExplicitlyInsecure) => ([0; 32], true),
        };
        let mut hello = config.hello.clone();
        hello.insecure = insecure;
        hello.version = PROTOCOL_VERSION;
        Ok(Self {
            role,
            state: State::AwaitHello,
            psk,
            hello,
            nonce,
            client_hello: Vec::new(),
            peer: None,
            decoder: FrameDecoder::new(config.max_frame),
            max_frame: config.max_frame,
            out: Vec::new(),
        })
    }

    /// True once both sides proved the key.
    pub fn is_established(&self) -> bool {
        matches!(self.state, State::Established { .. })
    }

    /// The peer's hello, once established.
    pub fn peer(&self) -> Option<&Hello> {
        self.peer.as_ref().filter(|_| self.is_established())
    }

    /// Bytes to write to the transport (taken: the next call returns only new bytes).
    pub fn take_output(&mut self) -> Vec<u8> {
        core::mem::take(&mut self.out)
    }

    /// Feeds bytes read from the transport; returns what they completed.
    /// Any error closes the connection for good.
    pub fn receive(&mut self, bytes: &[u8]) -> Result<Vec<Event>, ChannelError> {
        if matches!(self.state, State::Closed) {
            return Err(ChannelError::Closed);
        }
        let r = self.receive_inner(bytes);
        if r.is_err() {
            self.close();
        }
        r
    }

    /// Call when the transport reports end of stream: a partial frame is an error.
    pub fn end_of_stream(&mut self) -> Result<(), ChannelError> {
        let r = self.decoder.finish().map_err(ChannelError::from);
        self.close();
        r
    }

    /// Seals `msg` into the output. Only after [`Event::Established`].
    pub fn send(&mut self, msg: &Message) -> Result<(), ChannelError> {
        let State::Established { send, .. } = &mut self.state else {
            return Err(match self.state {
                State::Closed => ChannelError::Closed,
                _ => ChannelError::NotEstablished,
            });
        };
        let plain = postcard::to_allocvec(msg).map_err(ChannelError::Malformed)?;
        let counter = send.counter;
        let next = counter
            .checked_add(1)
            .ok_or(ChannelError::CounterExhausted)?;
        let aad = counter.to_le_bytes();
        let sealed = send
            .aead
            .encrypt(
                &nonce(counter),
                Payload {
                    msg: &plain,
                    aad: &aad,
                },
            )
            .map_err(|_| ChannelError::OutOfMemory)?;
        let mut body = Vec::new();
        body.try_reserve(8 + sealed.len())
            .map_err(|_| ChannelError::OutOfMemory)?;
        body.extend_from_slice(&aad);
        body.extend_from_slice(&sealed);
        write_frame(&body, self.max_frame, &mut self.out)?;
        send.counter = next;
        Ok(())
    }

    fn close(&mut self) {
        self.state = State::Closed;
        self.out.clear();
    }

    fn receive_inner(&mut self, bytes: &[u8]) -> Result<Vec<Event>, ChannelError> {
        self.decoder.push(bytes)?;
        let mut events = Vec::new();
        while let Some(body) = self.decoder.next_frame()? {
            if let Some(e) = self.on_frame(&body)? {
                events.push(e);
            }
        }
        Ok(events)
    }

    fn on_frame(&mut self, body: &[u8]) -> Result<Option<Event>, ChannelError> {
        match &mut self.state {
            State::Closed => Err(ChannelError::Closed),
            State::Established { recv, .. } => open(recv, body).map(|m| Some(Event::Message(m))),
            State::AwaitHello => {
                let Handshake::Hello { hello, nonce } =
                    postcard::from_bytes(body).map_err(ChannelError::Malformed)?
                else {
                    return Err(ChannelError::UnexpectedHandshake);
                };
                if hello.version != PROTOCOL_VERSION {
                    return Err(ChannelError::Version {
                        peer: hello.version,
                        ours: PROTOCOL_VERSION,
                    });
                }
                if hello.insecure != self.hello.insecure {
                    return Err(ChannelError::ModeMismatch {
                        peer_insecure: hello.insecure,
                    });
                }
                self.peer = Some(hello);
                let keys = match self.role {
                    Role::Server => {
                        let ours = encode_handshake(&Handshake::Hello {
                            hello: self.hello.clone(),
                            nonce: self.nonce,
                        })?;
                        let transcript = transcript(body, &ours);
                        let keys = Keys::derive(&self.psk, &nonce, &self.nonce, transcript);
                        let auth = encode_handshake(&Handshake::Auth {
                            mac: keys.server_mac(),
                        })?;
                        write_frame(&ours, self.max_frame, &mut self.out)?;
                        write_frame(&auth, self.max_frame, &mut self.out)?;
                        keys
                    }
                    Role::Client => {
                        let transcript = transcript(&self.client_hello, body);
                        Keys::derive(&self.psk, &self.nonce, &nonce, transcript)
                    }
                };
                self.state = State::AwaitAuth(keys);
                Ok(None)
            }
            State::AwaitAuth(keys) => {
                let Handshake::Auth { mac } =
                    postcard::from_bytes(body).map_err(ChannelError::Malformed)?
                else {
                    return Err(ChannelError::UnexpectedHandshake);
                };
                let (proof, send_key, recv_key) = match self.role {
                    Role::Client => (keys.server_mac(), &keys.c2s, &keys.s2c),
                    Role::Server => (keys.client_mac(&keys.server_mac()), &keys.s2c, &keys.c2s),
                };
                // Constant-time comparison: a mismatch reveals nothing about the key.
                if !bool::from(subtle::ConstantTimeEq::ct_eq(&proof[..], &mac[..])) {
                    return Err(ChannelError::AuthFailed);
                }
                let (send, recv) = (Direction::new(send_key), Direction::new(recv_key));
                if self.role == Role::Client {
                    let proof = encode_handshake(&Handshake::Auth {
                        mac: keys.client_mac(&mac),
                    })?;
                    write_frame(&proof, self.max_frame, &mut self.out)?;
                }
                self.state = State::Established { send, recv };
                let peer = self.peer.clone().ok_or(ChannelError::UnexpectedHandshake)?;
                Ok(Some(Event::Established(peer)))
            }
        }
    }
}

fn encode_handshake(h: &Handshake) -> Result<Vec<u8>, ChannelError> {
    postcard::to_allocvec(h).map_err(ChannelError::Malformed)
}

/// SHA-256 over both hello frame bodies, each prefixed by its length.
fn transcript(client_hello: &[u8], server_hello: &[u8]) -> Hash {
    let mut h = Sha256::new();
    h.update(b"tern/1 transcript");
    for part in [client_hello, server_hello] {
        h.update((part.len() as u64).to_le_bytes());
        h.update(part);
    }
    h.finalize().into()
}

/// Checks a sealed frame's counter, opens it and decodes the message.
fn open(recv: &mut Direction, body: &[u8]) -> Result<Message, ChannelError> {
    let Some((head, sealed)) = body.split_first_chunk::<8>() else {
        return Err(ChannelError::ShortFrame { len: body.len() });
    };
    if sealed.len() < 16 {
        return Err(ChannelError::ShortFrame { len: body.len() });
    }
    let got = u64::from_le_bytes(*head);
    let expected = recv.counter;
    if got < expected {
        return Err(ChannelError::Replayed { expected, got });
    }
    if got > expected {
        return Err(ChannelError::OutOfOrder { expected, got });
    }
    let plain = recv
        .aead
        .decrypt(
            &nonce(got),
            Payload {
                msg: sealed,
                aad: head,
            },
        )
        .map_err(|_| ChannelError::Forged)?;
    let msg = postcard::from_bytes(&plain).map_err(ChannelError::Malformed)?;
    recv.counter = expected
        .checked_add(1)
        .ok_or(ChannelError::CounterExhausted)?;
    Ok(msg)
}
