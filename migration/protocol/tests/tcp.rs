//! The same state machines over a real loopback TCP connection (as the host
//! inspector will drive them): a migration from a client thread to a server.

mod common;

use common::*;
use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use tern_protocol::{Connection, Event, Incoming, Message, Outgoing, Policy, SendPhase, Transfer};

/// Writes pending output, then reads once and returns the events.
fn exchange(conn: &mut Connection, sock: &mut TcpStream) -> Vec<Event> {
    sock.write_all(&conn.take_output()).unwrap();
    let mut buf = [0u8; 4096];
    let n = sock.read(&mut buf).unwrap();
    if n == 0 {
        conn.end_of_stream().unwrap();
        return Vec::new();
    }
    conn.receive(&buf[..n]).unwrap()
}

#[test]
fn migration_over_loopback_tcp() {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let ckpt = checkpoint(2, 50, &data(30_000));
    let expected = ckpt.clone();
    let receiver = std::thread::spawn(move || {
        let (mut sock, _) = listener.accept().unwrap();
        let mut conn = Connection::server(&config(2, 7), [2; 32]).unwrap();
        let mut inc = Incoming::new(
            Policy {
                max_len: 1 << 30,
                kinds: vec![("test-sum".into(), 1)],
                known: None,
            },
            None,
        );
        loop {
            for e in exchange(&mut conn, &mut sock) {
                if let Event::Message(m) = e {
                    if let Some(reply) = inc.on_message(m).unwrap() {
                        conn.send(&reply).unwrap();
                        if matches!(reply, Message::Ack { .. }) {
                            sock.write_all(&conn.take_output()).unwrap();
                            return inc.take_checkpoint().unwrap();
                        }
                    }
                }
            }
        }
    });
    let mut sock = TcpStream::connect(addr).unwrap();
    let mut conn = Connection::client(&config(1, 7), [1; 32]).unwrap();
    let mut out = Outgoing::from_file(Transfer::Migrate, 9, &ckpt).unwrap();
    while out.phase() != SendPhase::Acked {
        for e in exchange(&mut conn, &mut sock) {
            match e {
                Event::Established(_) => conn.send(&out.offer()).unwrap(),
                Event::Message(m) => out.on_message(m).unwrap(),
            }
        }
        while let Some(m) = out.poll_send() {
            conn.send(&m).unwrap();
        }
    }
    assert!(!out.owns_task());
    assert_eq!(receiver.join().unwrap(), expected);
}
