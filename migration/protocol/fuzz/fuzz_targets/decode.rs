//! Any bytes from a peer: the frame decoder, both message decoders, the
//! handshake, both transfer phase machines and the discovery beacon's
//! decoder return values or typed errors, never a panic, with bounded memory.
#![no_main]

use libfuzzer_sys::fuzz_target;
use std::sync::OnceLock;
use tern_migration::{write_checkpoint, BulkRegion, HeaderInfo, Mode, Snapshot};
use tern_protocol::frame::FrameDecoder;
use tern_protocol::{
    Config, Connection, Handshake, Hello, Incoming, Message, Outgoing, Policy, Psk, Replica,
    Security, Transfer,
};

/// A small real checkpoint (5 transfer chunks: cheap to hash on every run) the
/// sender offers and the receiver holds as replica.
fn checkpoint() -> &'static Vec<u8> {
    static C: OnceLock<Vec<u8>> = OnceLock::new();
    C.get_or_init(|| {
        let data = BulkRegion::from_vec((0..9_000u64).collect());
        let mut snap = Snapshot::new();
        snap.typed("state", &1u64).unwrap();
        snap.bulk("data", &data);
        let info = HeaderInfo {
            task_kind: "fuzz".into(),
            task_version: 1,
            progress: 1,
            progress_total: 2,
            epoch: 1,
            created_unix_ms: 0,
            isa: "x86_64".into(),
            board: "fuzz".into(),
        };
        let mut out = Vec::new();
        write_checkpoint(&mut out, &info, &snap, Mode::Full).unwrap();
        out
    })
}

const MAX: u32 = 1 << 16;

fuzz_target!(|data: &[u8]| {
    // A datagram on the beacon port.
    let _ = tern_protocol::Beacon::decode(data, Some(&Psk([7; 32])));

    // The handshake side of a server, fed in two pieces.
    let hello = Hello {
        version: tern_protocol::PROTOCOL_VERSION,
        isa: "x86_64".into(),
        board: "fuzz".into(),
        node_id: 1,
        task_kinds: vec![],
        insecure: false,
    };
    let mut cfg = Config::new(hello, Some(Security::Key(Psk([7; 32]))));
    cfg.max_frame = MAX;
    let mut server = Connection::server(&cfg, [1; 32]).unwrap();
    let (a, b) = data.split_at(data.len() / 2);
    if server.receive(a).is_ok() {
        let _ = server.receive(b);
    }
    let _ = server.end_of_stream();

    // Frames → messages → both phase machines (as if the channel had opened them).
    let replica = Replica::new(checkpoint().clone());
    let policy = Policy {
        max_len: 1 << 20,
        kinds: vec![("fuzz".into(), 1)],
        known: None,
    };
    let mut incoming = Incoming::new(policy, Some(&replica));
    let mut outgoing = Outgoing::new(Transfer::Migrate, 1, checkpoint().clone()).unwrap();
    let mut frames = FrameDecoder::new(MAX);
    if frames.push(data).is_err() {
        return;
    }
    while let Ok(Some(body)) = frames.next_frame() {
        assert!(body.len() <= MAX as usize);
        let _ = postcard::from_bytes::<Handshake>(&body);
        if let Ok(m) = postcard::from_bytes::<Message>(&body) {
            let _ = incoming.on_message(m.clone());
            let _ = outgoing.on_message(m);
            while outgoing.poll_send().is_some() {}
        }
    }
    let _ = frames.finish();
});
