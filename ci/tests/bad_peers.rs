//! Bad peers against a live node's control service (port 4470): a wrong key,
//! an insecure client, garbage, a truncated frame, a whole session replayed
//! into a new connection, a frame replayed and a frame forged inside a
//! session. Each is refused (the node closes the connection without
//! answering), the node's task keeps running, and an honest
//! `inspect --node … list` works afterwards. Needs root (network namespace).

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Duration;

use tern_ci::host_tool;
use tern_client::{key_hex, NodeError};
use tern_flash::Board;
use tern_lab::cluster::{Cluster, ClusterError};
use tern_protocol::frame::{FrameDecoder, MAX_FRAME};
use tern_protocol::{Config, Connection, Event, Hello, Message, Psk, Security};

const KEY: [u8; 32] = [0x42; 32];
const TIMEOUT: Duration = Duration::from_secs(20);

fn hello() -> Hello {
    Hello {
        version: tern_protocol::PROTOCOL_VERSION,
        isa: "x86_64".into(),
        board: "linux-host".into(),
        node_id: 0,
        task_kinds: Vec::new(),
        insecure: false,
    }
}

/// A raw TCP connection to the node's control port, from the lab.
fn raw(cluster: &Cluster) -> TcpStream {
    let sock = cluster
        .lab()
        .netns()
        .connect(Cluster::control(0), TIMEOUT)
        .unwrap();
    sock.set_read_timeout(Some(TIMEOUT)).unwrap();
    sock
}

/// Everything the node sends until it closes the connection (a timeout
/// fails the test: a refused peer must be disconnected, not left hanging).
fn until_closed(sock: &mut TcpStream) -> Vec<u8> {
    let mut all = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        match sock.read(&mut buf) {
            Ok(0) => return all,
            Ok(n) => all.extend_from_slice(&buf[..n]),
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => return all,
            Err(e) => panic!("the node neither answered nor closed: {e}"),
        }
    }
}

/// Number of whole frames in `bytes`.
fn frames(bytes: &[u8]) -> usize {
    let mut decoder = FrameDecoder::new(MAX_FRAME);
    decoder.push(bytes).unwrap();
    std::iter::from_fn(|| decoder.next_frame().unwrap()).count()
}

/// An honest session driven by hand, recording every byte it sends.
struct Recorded {
    sock: TcpStream,
    conn: Connection,
    sent: Vec<u8>,
}

impl Recorded {
    fn open(cluster: &Cluster, nonce: [u8; 32]) -> Self {
        let config = Config::new(hello(), Some(Security::Key(Psk(KEY))));
        let mut s = Self {
            sock: raw(cluster),
            conn: Connection::client(&config, nonce).unwrap(),
            sent: Vec::new(),
        };
        while !s.conn.is_established() {
            s.flush();
            s.read_events();
        }
        s.flush();
        s
    }

    fn flush(&mut self) {
        let out = self.conn.take_output();
        self.sock.write_all(&out).unwrap();
        self.sent.extend_from_slice(&out);
    }

    fn read_events(&mut self) -> Vec<Event> {
        let mut buf = [0u8; 65536];
        let n = self.sock.read(&mut buf).unwrap();
        assert!(n > 0, "the node closed an honest session");
        self.conn.receive(&buf[..n]).unwrap()
    }

    /// Sends `List`, returns the frame's bytes and waits for `Tasks`.
    fn list(&mut self) -> Vec<u8> {
        self.conn.send(&Message::List).unwrap();
        let frame = self.conn.take_output();
        self.sock.write_all(&frame).unwrap();
        self.sent.extend_from_slice(&frame);
        loop {
            if let Some(Event::Message(m)) = self.read_events().pop() {
                assert!(matches!(m, Message::Tasks(_)), "{m:?}");
                return frame;
            }
        }
    }
}

#[test]
fn bad_peers_are_refused_and_honest_clients_still_served() {
    let mut cluster = Cluster::start("peers", &[Board::Virt], Security::Key(Psk(KEY))).unwrap();
    cluster.shell(0, "run cg W").unwrap();

    // Wrong key: our proof check fails first, and we send nothing sealed.
    let wrong = cluster.client_with(0, Security::Key(Psk([0x24; 32])), TIMEOUT);
    assert!(
        matches!(wrong, Err(ClusterError::Node(NodeError::WrongKey { .. }))),
        "{:?}",
        wrong.err()
    );
    // A keyed node drops an insecure client at its hello.
    let insecure = cluster.client_with(0, Security::ExplicitlyInsecure, TIMEOUT);
    assert!(
        matches!(
            insecure,
            Err(ClusterError::Node(NodeError::HandshakeRefused { .. }))
        ),
        "{:?}",
        insecure.err()
    );

    // Garbage: a length far beyond the maximum, then noise.
    let mut sock = raw(&cluster);
    let garbage: Vec<u8> = (0..4096u32)
        .map(|i| (i.wrapping_mul(2654435761) >> 13) as u8 | 0x80)
        .collect();
    sock.write_all(&garbage).unwrap();
    assert_eq!(until_closed(&mut sock), b"", "garbage got an answer");

    // A truncated hello: all but its last byte, then end of stream, sent
    // together with the connection's first bytes.
    let config = Config::new(hello(), Some(Security::Key(Psk(KEY))));
    let hello_frame = Connection::client(&config, [7; 32]).unwrap().take_output();
    let mut sock = raw(&cluster);
    sock.write_all(&hello_frame[..hello_frame.len() - 1])
        .unwrap();
    sock.shutdown(std::net::Shutdown::Write).unwrap();
    assert_eq!(
        until_closed(&mut sock),
        b"",
        "a truncated hello got an answer"
    );

    // A whole honest session replayed into a new connection: the node's new
    // nonce makes the recorded proof worthless; it answers at most its hello
    // and proof (an abort may discard even those), never a sealed frame.
    let mut honest = Recorded::open(&cluster, [1; 32]);
    honest.list();
    let recorded = honest.sent.clone();
    drop(honest);
    let mut sock = raw(&cluster);
    sock.write_all(&recorded).unwrap();
    let answer = until_closed(&mut sock);
    assert!(
        frames(&answer) <= 2,
        "a replayed session got sealed answers"
    );

    // Inside a session: a replayed frame, then (new session) a forged one.
    let mut session = Recorded::open(&cluster, [2; 32]);
    let list_frame = session.list();
    session.sock.write_all(&list_frame).unwrap();
    assert_eq!(
        until_closed(&mut session.sock),
        b"",
        "a replayed frame got an answer"
    );
    let mut session = Recorded::open(&cluster, [3; 32]);
    session.conn.send(&Message::List).unwrap();
    let mut forged = session.conn.take_output();
    let last = forged.len() - 1;
    forged[last] ^= 1;
    session.sock.write_all(&forged).unwrap();
    assert_eq!(
        until_closed(&mut session.sock),
        b"",
        "a forged frame got an answer"
    );

    // An honest inspector still gets the list, and the task still runs.
    let inspect = host_tool("tern-inspect", "inspect").unwrap();
    let out = cluster
        .lab()
        .netns()
        .exec(
            "env",
            &[
                &format!("TERN_KEY={}", key_hex(&Psk(KEY))),
                inspect.to_str().unwrap(),
                "--node",
                &Cluster::control(0).to_string(),
                "list",
            ],
        )
        .unwrap();
    let table = String::from_utf8_lossy(&out.stdout);
    assert!(table.contains("npb-cg"), "{table}");
    assert!(table.contains("owner"), "{table}");
    assert!(
        table.contains("running") || table.contains("verified"),
        "{table}"
    );
}
