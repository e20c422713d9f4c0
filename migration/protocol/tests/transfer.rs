//! Whole migrations between two in-memory peers, with real checkpoints.

mod common;

use common::*;
use tern_migration::{read_checkpoint, Limits};
use tern_protocol::{
    Codec, Connection, Event, Incoming, Known, Message, NackReason, Outgoing, Policy, ReceivePhase,
    Replica, SendPhase, TaskRole, TaskStatus, TaskSummary, Transfer, TransferError,
};

fn policy(known: Option<Known>) -> Policy {
    Policy {
        max_len: 1 << 30,
        kinds: vec![("test-sum".into(), 1)],
        known,
    }
}

/// Runs the transfer phases over an established channel; returns the need and the bytes on the wire.
fn run(
    out: &mut Outgoing,
    inc: &mut Incoming<'_>,
    c: &mut Connection,
    s: &mut Connection,
) -> Result<(Vec<u32>, usize), TransferError> {
    let mut wire = 0;
    c.send(&out.offer()).unwrap();
    let mut need = Vec::new();
    loop {
        let oc = c.take_output();
        wire += oc.len();
        for e in s.receive(&oc).unwrap() {
            let Event::Message(m) = e else {
                panic!("event {e:?}")
            };
            match inc.on_message(m) {
                Ok(Some(reply)) => {
                    if let Message::Need { chunks } = &reply {
                        need = chunks.clone();
                    }
                    s.send(&reply).unwrap()
                }
                Ok(None) => {}
                Err(err) => {
                    s.send(&err.nack().unwrap()).unwrap();
                    let back = s.take_output();
                    for e in c.receive(&back).unwrap() {
                        let Event::Message(m) = e else { panic!() };
                        out.on_message(m).unwrap_err();
                    }
                    return Err(err);
                }
            }
        }
        let os = s.take_output();
        for e in c.receive(&os).unwrap() {
            let Event::Message(m) = e else {
                panic!("event {e:?}")
            };
            out.on_message(m)?;
        }
        while let Some(m) = out.poll_send() {
            c.send(&m).unwrap();
        }
        if out.phase() == SendPhase::Acked {
            return Ok((need, wire));
        }
        if oc.is_empty() && os.is_empty() {
            panic!("stalled in {:?} / {:?}", out.phase(), inc.phase());
        }
    }
}

fn ack(epoch: u64) -> Message {
    Message::Ack {
        epoch,
        times: Default::default(),
    }
}

#[test]
fn migration_with_dedup_against_the_base_replica() {
    // 480 KB of bulk data in 8 chunks after the typed state's chunk.
    let mut d = data(60_000);
    let base = replica(4, 100, &d, None);
    d.set(30_000, 1);
    let next = checkpoint(5, 120, &d);
    let (mut c, mut s) = established();
    let mut out = Outgoing::from_file(Transfer::Migrate, 42, &next).unwrap();
    assert_eq!(out.offered().chunks.len(), 9);
    assert_eq!(out.offered().base, None);
    let mut inc = Incoming::new(
        policy(Some(Known {
            epoch: 4,
            checkpoint_hash: None,
        })),
        Some(&base),
    );
    assert!(out.owns_task());
    let (need, wire) = run(&mut out, &mut inc, &mut c, &mut s).unwrap();
    // Needed: the typed state (its progress changed) and the written bulk
    // chunk (element 30 000 of 8192 per chunk); the other seven come from
    // the replica.
    assert_eq!(need, vec![0, 4]);
    assert!(wire * 10 < next.len() * 4, "wire {wire} of {}", next.len());
    assert!(!out.owns_task());
    assert_eq!(inc.phase(), ReceivePhase::Accepted);
    let got = inc.take_checkpoint().unwrap();
    assert_eq!(got, next);
    let r = read_checkpoint(&got[..], &Limits::default()).unwrap();
    assert_eq!((r.header.epoch, r.header.progress), (5, 120));
}

#[test]
fn a_round_against_its_base_offers_only_what_changed() {
    let mut d = data(60_000);
    let first = replica(4, 100, &d, None);
    d.set(30_000, 1);
    d.set(59_000, 2);
    let second = replica(4, 100, &d, Some(&first));
    let mut out = Outgoing::new(Transfer::Replicate, 42, second.clone(), Some(&first)).unwrap();
    let o = out.offered().clone();
    assert_eq!(o.base, Some(first.root()));
    assert_eq!(
        o.chunks.iter().map(|c| c.at).collect::<Vec<_>>(),
        [4, 8],
        "the typed state did not change"
    );
    let (mut c, mut s) = established();
    let mut inc = Incoming::new(policy(None), Some(&first));
    let (need, _) = run(&mut out, &mut inc, &mut c, &mut s).unwrap();
    assert_eq!(need, vec![0, 1]);
    let got = inc.take_replica().unwrap();
    assert_eq!(got.root(), second.root());
    assert_eq!(got.to_file().unwrap(), checkpoint(4, 100, &d));
    // The received replica rebuilds the state without reading it again.
    let restored = got.restore().unwrap();
    assert_eq!(restored.hash, second.root());
}

#[test]
fn a_receiver_without_the_base_says_so_and_gets_every_chunk() {
    let mut d = data(20_000);
    let first = replica(1, 10, &d, None);
    d.set(1, 5);
    let second = replica(1, 11, &d, Some(&first));
    let mut out = Outgoing::new(Transfer::Replicate, 42, second, Some(&first)).unwrap();
    let other = replica(1, 10, &data(100), None);
    for held in [None, Some(&other)] {
        let mut inc = Incoming::new(policy(None), held);
        assert_eq!(
            inc.on_message(out.offer()),
            Err(TransferError::Rejected(NackReason::UnknownBase))
        );
    }
    assert!(out.widen());
    assert_eq!(out.offered().base, None);
    assert_eq!(out.offered().chunks.len(), 4);
    let (mut c, mut s) = established();
    let mut inc = Incoming::new(policy(None), None);
    let (need, _) = run(&mut out, &mut inc, &mut c, &mut s).unwrap();
    assert_eq!(need, vec![0, 1, 2, 3]);
    assert!(!out.widen(), "a full offer stays full");
}

#[test]
fn offers_that_do_not_fit_their_layout_are_refused() {
    let mut d = data(20_000);
    let first = replica(1, 10, &d, None);
    let out = Outgoing::new(Transfer::Migrate, 1, first.clone(), None).unwrap();
    let o = out.offered().clone();
    let mut short = o.clone();
    short.chunks.pop();
    let mut empty = o.clone();
    empty.chunks[1].len = 0;
    let mut long = o.clone();
    long.chunks[2].len += 1;
    let mut swapped = o.clone();
    swapped.chunks.swap(1, 2);
    for bad in [short, empty, long, swapped] {
        let mut inc = Incoming::new(policy(None), None);
        assert_eq!(
            inc.on_message(Message::Offer(bad)),
            Err(TransferError::Rejected(NackReason::UnexpectedMessage))
        );
    }
    // A layout that is not a checkpoint's, or says other than the offer.
    let mut garbage = o.clone();
    garbage.layout.truncate(20);
    let mut progress = o.clone();
    progress.progress += 1;
    let mut size = o.clone();
    size.total_len += 1;
    for bad in [garbage, progress, size] {
        let mut inc = Incoming::new(policy(None), None);
        assert_eq!(
            inc.on_message(Message::Offer(bad)),
            Err(TransferError::Rejected(NackReason::InvalidCheckpoint))
        );
    }
    // A round's chunks in order, within the base's records.
    d.set(1, 1);
    d.set(19_000, 1);
    let second = replica(1, 10, &d, Some(&first));
    let out = Outgoing::new(Transfer::Replicate, 1, second, Some(&first)).unwrap();
    let mut reversed = out.offered().clone();
    reversed.chunks.reverse();
    let mut beyond = out.offered().clone();
    beyond.chunks[1].at = 9;
    for bad in [reversed, beyond] {
        let mut inc = Incoming::new(policy(None), Some(&first));
        assert_eq!(
            inc.on_message(Message::Offer(bad)),
            Err(TransferError::Rejected(NackReason::UnexpectedMessage))
        );
    }
}

#[test]
fn a_shared_replica_dedups_like_a_borrowed_one_and_the_sender_keeps_what_it_sent() {
    let mut d = data(60_000);
    let base = std::rc::Rc::new(replica(4, 100, &d, None));
    d.set(30_000, 1);
    let next = replica(5, 120, &d, None);
    let (mut c, mut s) = established();
    let mut out = Outgoing::new(Transfer::Replicate, 42, next.clone(), None).unwrap();
    assert_eq!(out.offered().epoch, 5);
    assert_eq!(out.offered().total_len, next.file_len());
    let mut inc = Incoming::with_shared_replica(policy(None), Some(base.clone()));
    let (need, _) = run(&mut out, &mut inc, &mut c, &mut s).unwrap();
    assert_eq!(need, vec![0, 4]);
    // A replicate transfer moves no ownership.
    assert!(out.owns_task());
    assert_eq!(inc.take_replica().unwrap().root(), next.root());
    assert_eq!(out.into_replica().root(), next.root());
}

#[test]
fn migration_without_replica_sends_everything() {
    let next = checkpoint(1, 10, &data(20_000));
    let (mut c, mut s) = established();
    let mut out = Outgoing::from_file(Transfer::Migrate, 1, &next).unwrap();
    let mut inc = Incoming::new(policy(None), None);
    let (need, wire) = run(&mut out, &mut inc, &mut c, &mut s).unwrap();
    // The state, 3 bulk chunks.
    assert_eq!(need, (0..4).collect::<Vec<u32>>());
    assert!(wire > next.len());
    assert_eq!(inc.take_checkpoint().unwrap(), next);
}

#[test]
fn compressed_chunks_are_decoded_checked_and_bounded() {
    // Compressible state: a run of equal words.
    let next = checkpoint(
        1,
        10,
        &tern_migration::BulkRegion::from_vec(vec![7; 20_000]),
    );
    let encodings = [
        (Codec::Lz4, tern_codec::Codec::Lz4),
        (Codec::Zstd, tern_codec::Codec::Zstd3),
    ];
    for (codec, method) in encodings {
        let mut out = Outgoing::from_file(Transfer::Standby, 1, &next).unwrap();
        let mut inc = Incoming::new(policy(None), None);
        let Some(Message::Need { chunks }) = inc.on_message(out.offer()).unwrap() else {
            panic!("no need")
        };
        out.on_message(Message::Need { chunks }).unwrap();
        let mut wire = 0;
        let mut encode = |b: &[u8]| (codec, method.compress(b));
        while let Some(m) = out.poll_send_with(&mut encode) {
            if let Message::Chunk { payload, .. } = &m {
                wire += payload.len();
            }
            if let Ok(Some(ack)) = inc.on_message(m) {
                out.on_message(ack).unwrap();
            }
        }
        assert_eq!(out.phase(), SendPhase::Acked, "{codec:?}");
        assert!(wire < next.len(), "{codec:?}: {wire} B");
        assert_eq!(inc.take_checkpoint().unwrap(), next);
    }
    // A payload that expands past the chunk's length, or to other bytes, is refused.
    let mut out = Outgoing::from_file(Transfer::Standby, 1, &next).unwrap();
    let mut inc = Incoming::new(policy(None), None);
    let Some(Message::Need { chunks }) = inc.on_message(out.offer()).unwrap() else {
        panic!("no need")
    };
    out.on_message(Message::Need { chunks }).unwrap();
    let mut bigger = |b: &[u8]| {
        let mut v = b.to_vec();
        v.push(0);
        (Codec::Lz4, tern_codec::Codec::Lz4.compress(&v))
    };
    let chunk = out.poll_send_with(&mut bigger).unwrap();
    assert_eq!(
        inc.on_message(chunk),
        Err(TransferError::Rejected(NackReason::BadChunk { index: 0 }))
    );
}

#[test]
fn stale_epoch_is_refused_and_the_sender_keeps_the_task() {
    let next = checkpoint(3, 10, &data(100));
    let (mut c, mut s) = established();
    let mut out = Outgoing::from_file(Transfer::Migrate, 1, &next).unwrap();
    let mut inc = Incoming::new(
        policy(Some(Known {
            epoch: 3,
            checkpoint_hash: None,
        })),
        None,
    );
    assert_eq!(
        run(&mut out, &mut inc, &mut c, &mut s).unwrap_err(),
        TransferError::Rejected(NackReason::StaleEpoch { known: 3 })
    );
    assert!(out.owns_task());
    assert_eq!(out.phase(), SendPhase::Failed);
    assert_eq!(inc.take_checkpoint(), None);
}

#[test]
fn unknown_kind_and_too_large_are_refused() {
    let next = checkpoint(3, 10, &data(100));
    let out = Outgoing::from_file(Transfer::Migrate, 1, &next).unwrap();
    let mut p = policy(None);
    p.kinds = vec![("test-sum".into(), 2)];
    let mut inc = Incoming::new(p, None);
    assert_eq!(
        inc.on_message(out.offer()),
        Err(TransferError::Rejected(NackReason::UnsupportedKind))
    );
    // A standby may have to run the task: the kind must be known there too;
    // a plain replica is only stored.
    for (transfer, refused) in [(Transfer::Standby, true), (Transfer::Replicate, false)] {
        let out = Outgoing::from_file(transfer, 1, &checkpoint(3, 10, &data(100))).unwrap();
        let mut p = policy(None);
        p.kinds = vec![("test-sum".into(), 2)];
        let r = Incoming::new(p, None).on_message(out.offer());
        assert_eq!(
            r == Err(TransferError::Rejected(NackReason::UnsupportedKind)),
            refused
        );
    }
    let mut p = policy(None);
    p.max_len = 100;
    let mut inc = Incoming::new(p, None);
    assert_eq!(
        inc.on_message(out.offer()),
        Err(TransferError::Rejected(NackReason::TooLarge))
    );
}

#[test]
fn a_repeated_offer_after_a_lost_ack_is_acked_again() {
    let next = checkpoint(6, 10, &data(100));
    let mut out = Outgoing::from_file(Transfer::Migrate, 1, &next).unwrap();
    let mut inc = Incoming::new(policy(None), None);
    let Some(Message::Need { chunks }) = inc.on_message(out.offer()).unwrap() else {
        panic!()
    };
    out.on_message(Message::Need { chunks }).unwrap();
    while let Some(m) = out.poll_send() {
        if let Some(reply) = inc.on_message(m).unwrap() {
            assert_eq!(reply, ack(6));
        }
    }
    // The ack is lost: the sender is in doubt, keeps the task paused, reconnects.
    assert!(out.in_doubt() && out.owns_task());
    out.restart();
    let hash = out.offered().checkpoint_hash;
    let mut again = Incoming::new(
        policy(Some(Known {
            epoch: 6,
            checkpoint_hash: Some(hash),
        })),
        None,
    );
    let reply = again.on_message(out.offer()).unwrap().unwrap();
    assert_eq!(reply, ack(6));
    out.on_message(reply).unwrap();
    assert!(!out.owns_task());
}

#[test]
fn bad_chunks_need_and_commit_are_typed() {
    let next = checkpoint(2, 10, &data(20_000));
    let mut out = Outgoing::from_file(Transfer::Migrate, 1, &next).unwrap();
    // A need outside the offer, or not increasing.
    assert_eq!(
        out.on_message(Message::Need { chunks: vec![0, 9] }),
        Err(TransferError::BadNeed { index: 9 })
    );
    out.restart();
    assert_eq!(
        out.on_message(Message::Need { chunks: vec![1, 1] }),
        Err(TransferError::BadNeed { index: 1 })
    );
    out.restart();
    assert!(out.owns_task());

    let mut inc = Incoming::new(policy(None), None);
    inc.on_message(out.offer()).unwrap();
    assert_eq!(
        inc.on_message(Message::Chunk {
            index: 1,
            codec: Codec::None,
            payload: vec![0; 65536]
        }),
        Err(TransferError::Rejected(NackReason::BadChunk { index: 1 }))
    );
    let mut inc = Incoming::new(policy(None), None);
    inc.on_message(out.offer()).unwrap();
    assert_eq!(
        inc.on_message(Message::Chunk {
            index: 0,
            codec: Codec::Zstd,
            payload: vec![]
        }),
        Err(TransferError::Rejected(NackReason::BadChunk { index: 0 }))
    );
    let mut inc = Incoming::new(policy(None), None);
    inc.on_message(out.offer()).unwrap();
    assert_eq!(
        inc.on_message(Message::Commit {
            checkpoint_hash: out.offered().checkpoint_hash,
            epoch: 2
        }),
        Err(TransferError::Rejected(NackReason::MissingChunks))
    );
    // A chunk twice is refused.
    let mut inc = Incoming::new(policy(None), None);
    inc.on_message(out.offer()).unwrap();
    let chunk = Message::Chunk {
        index: 2,
        codec: Codec::None,
        payload: out.replica().chunk(2).unwrap().to_vec(),
    };
    assert_eq!(inc.on_message(chunk.clone()), Ok(None));
    assert_eq!(
        inc.on_message(chunk),
        Err(TransferError::Rejected(NackReason::BadChunk { index: 2 }))
    );
    // Messages out of phase.
    let mut inc = Incoming::new(policy(None), None);
    assert_eq!(
        inc.on_message(Message::Commit {
            checkpoint_hash: [0; 32],
            epoch: 2
        }),
        Err(TransferError::Rejected(NackReason::UnexpectedMessage))
    );
    assert!(matches!(
        Outgoing::from_file(Transfer::Migrate, 1, &next[..100]),
        Err(TransferError::InvalidCheckpoint)
    ));
}

#[test]
fn an_offer_whose_root_lies_about_its_chunks_is_refused_at_commit() {
    // Every chunk matches its announced hash, but the root the offer and the
    // commit name is not the root over them.
    let next = checkpoint(2, 10, &data(100));
    let out = Outgoing::from_file(Transfer::Migrate, 1, &next).unwrap();
    let mut o = out.offered().clone();
    o.checkpoint_hash[0] ^= 1;
    let mut inc = Incoming::new(policy(None), None);
    inc.on_message(Message::Offer(o.clone())).unwrap();
    for (i, c) in o.chunks.iter().enumerate() {
        inc.on_message(Message::Chunk {
            index: i as u32,
            codec: Codec::None,
            payload: out.replica().chunk(c.at as usize).unwrap().to_vec(),
        })
        .unwrap();
    }
    assert_eq!(
        inc.on_message(Message::Commit {
            checkpoint_hash: o.checkpoint_hash,
            epoch: 2
        }),
        Err(TransferError::Rejected(NackReason::HashMismatch))
    );
    assert_eq!(inc.take_checkpoint(), None);
}

#[test]
fn inspector_list_and_fetch_copy_without_moving_ownership() {
    let (mut inspector, mut node) = established();
    inspector.send(&Message::List).unwrap();
    let (_, ev) = pump(&mut inspector, &mut node);
    assert_eq!(ev, vec![Event::Message(Message::List)]);
    let tasks = vec![TaskSummary {
        task_id: 7,
        kind: "test-sum".into(),
        progress: 10,
        progress_total: 1000,
        owner: 2,
        epoch: 3,
        role: TaskRole::Owner,
        status: TaskStatus::Running,
        last_sync_ms_ago: None,
        policy: None,
        tag: None,
    }];
    node.send(&Message::Tasks(tasks.clone())).unwrap();
    let (ev, _) = pump(&mut inspector, &mut node);
    assert_eq!(ev, vec![Event::Message(Message::Tasks(tasks))]);

    // fetch 7: the node answers with an offer of a copy; the roles of the
    // transfer are reversed relative to the connection.
    let ckpt = checkpoint(3, 10, &data(10_000));
    let mut out = Outgoing::from_file(Transfer::Copy, 7, &ckpt).unwrap();
    let mut inc = Incoming::new(
        Policy {
            max_len: 1 << 30,
            kinds: vec![],
            known: None,
        },
        None,
    );
    run(&mut out, &mut inc, &mut node, &mut inspector).unwrap();
    assert!(out.owns_task(), "a copy leaves the task where it is");
    assert_eq!(inc.take_checkpoint().unwrap(), ckpt);
    // A v1 file is not a transfer's checkpoint.
    let _ = Replica::from_file(&ckpt, &Limits::default()).unwrap();
}
