//! Shared helpers: real checkpoints from tern-migration and in-memory peers.
#![allow(dead_code)]

use tern_migration::{capture, write_checkpoint, BulkRegion, HeaderInfo, Mode, Snapshot};
use tern_protocol::{Config, Connection, Event, Hello, Psk, Replica, Security};

fn info(epoch: u64, progress: u64) -> HeaderInfo {
    HeaderInfo {
        task_kind: "test-sum".into(),
        task_version: 1,
        progress,
        progress_total: 1000,
        epoch,
        created_unix_ms: 0,
        isa: "x86_64".into(),
        board: "linux-host".into(),
    }
}

/// A real checkpoint file of a small task: a typed counter and a bulk u64 array.
pub fn checkpoint(epoch: u64, progress: u64, data: &BulkRegion<u64>) -> Vec<u8> {
    let mut snap = Snapshot::new();
    snap.typed("state", &(progress, 7u32)).unwrap();
    snap.bulk("data", data);
    let mut out = Vec::new();
    write_checkpoint(&mut out, &info(epoch, progress), &snap, Mode::Full).unwrap();
    out
}

/// The same task captured for a transfer, against `base` (the previous
/// round's replica) when given: only the changed chunks are copied.
pub fn replica(
    epoch: u64,
    progress: u64,
    data: &BulkRegion<u64>,
    base: Option<&Replica>,
) -> Replica {
    let mut snap = Snapshot::new();
    snap.typed("state", &(progress, 7u32)).unwrap();
    snap.bulk("data", data);
    let c = capture(&info(epoch, progress), &snap, base.map(Replica::manifest)).unwrap();
    Replica::advance(base, c).unwrap()
}

/// A bulk region of `n` distinct values.
pub fn data(n: usize) -> BulkRegion<u64> {
    BulkRegion::from_vec(
        (0..n as u64)
            .map(|i| i.wrapping_mul(0x9E37_79B9_7F4A_7C15))
            .collect(),
    )
}

pub fn hello(node_id: u64, isa: &str) -> Hello {
    Hello {
        version: tern_protocol::PROTOCOL_VERSION,
        isa: isa.into(),
        board: "test".into(),
        node_id,
        task_kinds: vec!["test-sum".into()],
        insecure: false,
    }
}

pub fn config(node_id: u64, key: u8) -> Config {
    Config::new(
        hello(node_id, "x86_64"),
        Some(Security::Key(Psk([key; 32]))),
    )
}

/// Moves bytes both ways until neither side has output; returns each side's events.
pub fn pump(a: &mut Connection, b: &mut Connection) -> (Vec<Event>, Vec<Event>) {
    let (mut ea, mut eb) = (Vec::new(), Vec::new());
    loop {
        let (oa, ob) = (a.take_output(), b.take_output());
        if oa.is_empty() && ob.is_empty() {
            return (ea, eb);
        }
        eb.extend(b.receive(&oa).unwrap());
        ea.extend(a.receive(&ob).unwrap());
    }
}

/// An established client/server pair with the same key.
pub fn established() -> (Connection, Connection) {
    let mut c = Connection::client(&config(1, 7), [1; 32]).unwrap();
    let mut s = Connection::server(&config(2, 7), [2; 32]).unwrap();
    let (ec, es) = pump(&mut c, &mut s);
    assert_eq!(ec, vec![Event::Established(hello(2, "x86_64"))]);
    assert_eq!(es, vec![Event::Established(hello(1, "x86_64"))]);
    (c, s)
}
