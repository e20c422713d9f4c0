//! The handshake and the sealed channel, honest and hostile peers.

mod common;

use common::*;
use tern_protocol::{
    frame::write_frame, ChannelError, Config, Connection, Event, FrameError, Handshake, Message,
    Security, PROTOCOL_VERSION,
};

#[test]
fn messages_cross_both_ways_after_the_handshake() {
    let (mut c, mut s) = established();
    c.send(&Message::List).unwrap();
    c.send(&Message::Fetch { task_id: 9 }).unwrap();
    s.send(&Message::Ack {
        epoch: 3,
        times: Default::default(),
    })
    .unwrap();
    let (ec, es) = pump(&mut c, &mut s);
    assert_eq!(
        es,
        vec![
            Event::Message(Message::List),
            Event::Message(Message::Fetch { task_id: 9 })
        ]
    );
    assert_eq!(
        ec,
        vec![Event::Message(Message::Ack {
            epoch: 3,
            times: Default::default()
        })]
    );
    // Ciphertext does not carry the plaintext.
    c.send(&Message::Fetch {
        task_id: 0x4142_4344_4546_4748,
    })
    .unwrap();
    let wire = c.take_output();
    assert!(!wire
        .windows(8)
        .any(|w| w == 0x4142_4344_4546_4748u64.to_le_bytes()));
}

#[test]
fn bytes_delivered_one_at_a_time_give_the_same_events() {
    let mut c = Connection::client(&config(1, 7), [1; 32]).unwrap();
    let mut s = Connection::server(&config(2, 7), [2; 32]).unwrap();
    let mut events = Vec::new();
    for b in c.take_output() {
        events.extend(s.receive(&[b]).unwrap());
    }
    for b in s.take_output() {
        events.extend(c.receive(&[b]).unwrap());
    }
    for b in c.take_output() {
        events.extend(s.receive(&[b]).unwrap());
    }
    assert_eq!(events.len(), 2);
    assert!(c.is_established() && s.is_established());
}

#[test]
fn no_key_refuses_unless_insecure_is_explicit() {
    let none = Config::new(hello(1, "x86_64"), None);
    assert_eq!(
        Connection::client(&none, [0; 32]).err(),
        Some(ChannelError::NoKey)
    );
    assert_eq!(
        Connection::server(&none, [0; 32]).err(),
        Some(ChannelError::NoKey)
    );
    let insecure = Config::new(hello(1, "x86_64"), Some(Security::ExplicitlyInsecure));
    let mut c = Connection::client(&insecure, [1; 32]).unwrap();
    let mut s = Connection::server(&insecure, [2; 32]).unwrap();
    pump(&mut c, &mut s);
    assert!(c.is_established() && s.is_established());
    assert!(s.peer().unwrap().insecure);
    // A keyed node refuses an insecure one.
    let mut c = Connection::client(&insecure, [1; 32]).unwrap();
    let mut s = Connection::server(&config(2, 7), [2; 32]).unwrap();
    assert_eq!(
        s.receive(&c.take_output()),
        Err(ChannelError::ModeMismatch {
            peer_insecure: true
        })
    );
}

#[test]
fn wrong_key_fails_in_both_directions_and_nothing_is_accepted() {
    let mut c = Connection::client(&config(1, 7), [1; 32]).unwrap();
    let mut s = Connection::server(&config(2, 8), [2; 32]).unwrap();
    assert_eq!(s.receive(&c.take_output()), Ok(vec![]));
    // The client rejects the server's proof.
    assert_eq!(c.receive(&s.take_output()), Err(ChannelError::AuthFailed));
    assert!(
        c.take_output().is_empty(),
        "the client sends no proof to a wrong server"
    );
    assert_eq!(c.send(&Message::List), Err(ChannelError::Closed));
    assert_eq!(s.send(&Message::List), Err(ChannelError::NotEstablished));
    // The server rejects a client proof made without its key, and any sealed
    // frame that follows it.
    let mut forged = Vec::new();
    let body = postcard::to_allocvec(&Handshake::Auth { mac: [0xAA; 32] }).unwrap();
    write_frame(&body, 1 << 20, &mut forged).unwrap();
    assert_eq!(s.receive(&forged), Err(ChannelError::AuthFailed));
    assert!(!s.is_established() && s.peer().is_none());
    assert_eq!(s.receive(&forged), Err(ChannelError::Closed));

    // A client with the wrong key against an honest server: the server's proof
    // fails at the client, so the client never proves anything.
    let mut c = Connection::client(&config(1, 8), [3; 32]).unwrap();
    let mut s = Connection::server(&config(2, 7), [4; 32]).unwrap();
    s.receive(&c.take_output()).unwrap();
    assert_eq!(c.receive(&s.take_output()), Err(ChannelError::AuthFailed));
    assert!(!s.is_established());
}

#[test]
fn a_relayed_proof_from_another_session_fails() {
    // Proof from a session with other nonces does not verify in this one.
    let (mut c1, mut s1) = (
        Connection::client(&config(1, 7), [1; 32]).unwrap(),
        Connection::server(&config(2, 7), [2; 32]).unwrap(),
    );
    s1.receive(&c1.take_output()).unwrap();
    c1.receive(&s1.take_output()).unwrap();
    let old_client_proof = c1.take_output();
    let mut c2 = Connection::client(&config(1, 7), [5; 32]).unwrap();
    let mut s2 = Connection::server(&config(2, 7), [6; 32]).unwrap();
    s2.receive(&c2.take_output()).unwrap();
    assert_eq!(s2.receive(&old_client_proof), Err(ChannelError::AuthFailed));
}

#[test]
fn garbage_is_a_typed_error_and_closes() {
    let mut s = Connection::server(&config(2, 7), [2; 32]).unwrap();
    let mut garbage = Vec::new();
    write_frame(&[0xFF; 40], 1 << 20, &mut garbage).unwrap();
    assert!(matches!(
        s.receive(&garbage),
        Err(ChannelError::Malformed(_))
    ));
    assert_eq!(s.receive(&[]), Err(ChannelError::Closed));

    // Garbage after the handshake: a frame that is no sealed message.
    let (mut c, mut s) = established();
    assert_eq!(
        s.receive(&garbage),
        Err(ChannelError::OutOfOrder {
            expected: 0,
            got: u64::from_le_bytes([0xFF; 8])
        })
    );
    let mut zeros = Vec::new();
    write_frame(&[0; 40], 1 << 20, &mut zeros).unwrap();
    let (mut c2, mut s2) = established();
    assert_eq!(s2.receive(&zeros), Err(ChannelError::Forged));
    // The honest peer's later frames are refused too: the session is over.
    c.send(&Message::List).unwrap();
    assert_eq!(s.receive(&c.take_output()), Err(ChannelError::Closed));
    c2.send(&Message::List).unwrap();
    assert_eq!(s2.receive(&c2.take_output()), Err(ChannelError::Closed));
}

#[test]
fn oversized_length_is_refused_before_allocation() {
    let mut s = Connection::server(&config(2, 7), [2; 32]).unwrap();
    assert_eq!(
        s.receive(&u32::MAX.to_le_bytes()),
        Err(ChannelError::Frame(FrameError::Oversized {
            len: u32::MAX as u64,
            max: 1 << 20
        }))
    );
    let (mut c, _) = established();
    let big = Message::Chunk {
        index: 0,
        codec: tern_protocol::Codec::None,
        payload: vec![0; 2 << 20],
    };
    assert!(matches!(
        c.send(&big),
        Err(ChannelError::Frame(FrameError::Oversized { .. }))
    ));
}

#[test]
fn truncated_frames_are_errors() {
    let (mut c, mut s) = established();
    c.send(&Message::List).unwrap();
    let wire = c.take_output();
    assert_eq!(s.receive(&wire[..wire.len() - 3]), Ok(vec![]));
    assert_eq!(
        s.end_of_stream(),
        Err(ChannelError::Frame(FrameError::Truncated {
            have: wire.len() as u64 - 3
        }))
    );
    // A frame whose body is cut inside the counter or the tag.
    let (_, mut s) = established();
    let mut short = Vec::new();
    write_frame(&[0; 20], 1 << 20, &mut short).unwrap();
    assert_eq!(s.receive(&short), Err(ChannelError::ShortFrame { len: 20 }));
    // A complete frame whose ciphertext lost its last bytes (length rewritten).
    let (mut c, mut s) = established();
    c.send(&Message::Fetch { task_id: 1 }).unwrap();
    let wire = c.take_output();
    let mut cut = Vec::new();
    write_frame(&wire[4..wire.len() - 2], 1 << 20, &mut cut).unwrap();
    assert_eq!(s.receive(&cut), Err(ChannelError::Forged));
}

#[test]
fn replayed_reordered_and_tampered_frames_are_refused() {
    let (mut c, mut s) = established();
    c.send(&Message::List).unwrap();
    let first = c.take_output();
    c.send(&Message::Fetch { task_id: 1 }).unwrap();
    let second = c.take_output();
    assert_eq!(s.receive(&first), Ok(vec![Event::Message(Message::List)]));
    assert_eq!(
        s.receive(&first),
        Err(ChannelError::Replayed {
            expected: 1,
            got: 0
        })
    );

    let (mut c, mut s) = established();
    c.send(&Message::List).unwrap();
    let _first = c.take_output();
    c.send(&Message::Fetch { task_id: 1 }).unwrap();
    let second_here = c.take_output();
    assert_eq!(
        s.receive(&second_here),
        Err(ChannelError::OutOfOrder {
            expected: 0,
            got: 1
        })
    );

    // A frame from another session (same counter) does not open here.
    let (_, mut s) = established();
    let (mut c2, _) = {
        let mut c = Connection::client(&config(1, 7), [9; 32]).unwrap();
        let mut s = Connection::server(&config(2, 7), [8; 32]).unwrap();
        pump(&mut c, &mut s);
        (c, s)
    };
    c2.send(&Message::List).unwrap();
    assert_eq!(s.receive(&c2.take_output()), Err(ChannelError::Forged));
    let _ = second;

    // One flipped bit anywhere in the ciphertext.
    let (mut c, mut s) = established();
    c.send(&Message::List).unwrap();
    let mut wire = c.take_output();
    let last = wire.len() - 1;
    wire[last] ^= 1;
    assert_eq!(s.receive(&wire), Err(ChannelError::Forged));
}

#[test]
fn a_server_frame_reflected_to_the_server_fails() {
    // Per-direction keys: the server's own frame sent back to it does not open.
    let (mut c, mut s) = established();
    s.send(&Message::List).unwrap();
    let from_server = s.take_output();
    assert_eq!(s.receive(&from_server), Err(ChannelError::Forged));
    assert_eq!(
        c.receive(&from_server),
        Ok(vec![Event::Message(Message::List)])
    );
}

#[test]
fn version_mismatch_is_typed() {
    let mut c = Connection::client(&config(1, 7), [1; 32]).unwrap();
    let mut wire = c.take_output();
    // The hello's version is the first field after the variant index: a
    // one-byte varint.
    assert_eq!(wire[4..6], [0, PROTOCOL_VERSION as u8]);
    wire[5] = PROTOCOL_VERSION as u8 + 1;
    let mut s = Connection::server(&config(2, 7), [2; 32]).unwrap();
    assert_eq!(
        s.receive(&wire),
        Err(ChannelError::Version {
            peer: PROTOCOL_VERSION + 1,
            ours: PROTOCOL_VERSION
        })
    );
}
