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

#[test]
fn migration_with_dedup_against_the_base_replica() {
    // 480 KB of bulk data in 8 records; with the header and region table,
    // the typed state's record and the trailer: 11 transfer chunks.
    let mut d = data(60_000);
    let base = checkpoint(4, 100, &d);
    d.set(30_000, 1);
    let next = checkpoint(5, 120, &d);
    let replica = Replica::new(base);
    let (mut c, mut s) = established();
    let mut out = Outgoing::new(Transfer::Migrate, 42, next.clone()).unwrap();
    let mut inc = Incoming::new(
        policy(Some(Known {
            epoch: 4,
            checkpoint_hash: None,
        })),
        Some(&replica),
    );
    assert!(out.owns_task());
    let (need, wire) = run(&mut out, &mut inc, &mut c, &mut s).unwrap();
    // Needed: 0 (header: progress, epoch), 1 (typed state), 5 (the changed
    // bulk chunk's record), 10 (the trailer's SHA-256). The other seven come
    // from the replica.
    let n = tern_protocol::transfer::chunk_list(&next).len();
    assert_eq!(n, 11);
    assert_eq!(need, vec![0, 1, 5, 10]);
    assert!(wire * 10 < next.len() * 6, "wire {wire} of {}", next.len());
    assert!(!out.owns_task());
    assert_eq!(inc.phase(), ReceivePhase::Accepted);
    let got = inc.take_checkpoint().unwrap();
    assert_eq!(got, next);
    let r = read_checkpoint(&got[..], &Limits::default()).unwrap();
    assert_eq!((r.header.epoch, r.header.progress), (5, 120));
}

#[test]
fn a_typed_region_that_grows_shifts_no_other_chunk() {
    // Progress 100 → 200: the typed state's varint grows by a byte, and
    // every byte after it moves. The bulk records still match the replica.
    let d = data(60_000);
    let base = checkpoint(4, 100, &d);
    let next = checkpoint(5, 200, &d);
    assert_eq!(next.len(), base.len() + 1);
    let replica = Replica::new(base);
    let (mut c, mut s) = established();
    let mut out = Outgoing::new(Transfer::Replicate, 42, next.clone()).unwrap();
    let mut inc = Incoming::new(policy(None), Some(&replica));
    let (need, _) = run(&mut out, &mut inc, &mut c, &mut s).unwrap();
    assert_eq!(need, vec![0, 1, 10]);
    assert_eq!(inc.take_checkpoint().unwrap(), next);
}

#[test]
fn input_that_is_not_a_checkpoint_is_cut_at_fixed_offsets_and_long_spans_are_split() {
    use tern_protocol::transfer::{cut_lengths, MAX_TRANSFER_CHUNK, TRANSFER_CHUNK};
    let chunk = TRANSFER_CHUNK as usize;
    assert_eq!(cut_lengths(&vec![1; 2 * chunk + 5]), vec![chunk, chunk, 5]);
    assert_eq!(cut_lengths(&[]), Vec::<usize>::new());
    // A checkpoint's pieces are never longer than a receiver accepts.
    let next = checkpoint(1, 10, &data(100_000));
    let lens = cut_lengths(&next);
    assert_eq!(lens.iter().sum::<usize>(), next.len());
    assert!(lens
        .iter()
        .all(|&l| l > 0 && l <= MAX_TRANSFER_CHUNK as usize));
}

#[test]
fn offers_whose_chunks_do_not_cover_the_checkpoint_are_refused() {
    let next = checkpoint(1, 10, &data(20_000));
    let out = Outgoing::new(Transfer::Migrate, 1, next).unwrap();
    let Message::Offer(o) = out.offer() else {
        unreachable!()
    };
    let mut short = o.clone();
    short.chunks.pop();
    let mut empty = o.clone();
    empty.chunks[1].len = 0;
    let mut long = o.clone();
    long.total_len += 1;
    long.chunks.last_mut().unwrap().len += 1;
    long.chunks[2].len = 3 * 65536;
    for bad in [short, empty, long] {
        let mut inc = Incoming::new(policy(None), None);
        assert_eq!(
            inc.on_message(Message::Offer(bad)),
            Err(TransferError::Rejected(NackReason::UnexpectedMessage))
        );
    }
}

#[test]
fn a_shared_replica_dedups_like_a_borrowed_one_and_the_sender_gets_its_bytes_back() {
    let mut d = data(60_000);
    let base = checkpoint(4, 100, &d);
    d.set(30_000, 1);
    let next = checkpoint(5, 120, &d);
    let replica = std::rc::Rc::new(Replica::new(base));
    let (mut c, mut s) = established();
    let mut out = Outgoing::new(Transfer::Replicate, 42, next.clone()).unwrap();
    assert_eq!(out.offered().epoch, 5);
    assert_eq!(out.offered().total_len, next.len() as u64);
    let mut inc = Incoming::with_shared_replica(policy(None), Some(replica.clone()));
    let (need, _) = run(&mut out, &mut inc, &mut c, &mut s).unwrap();
    assert_eq!(need, vec![0, 1, 5, 10]);
    // A replicate transfer moves no ownership.
    assert!(out.owns_task());
    assert_eq!(inc.take_checkpoint().unwrap(), next);
    assert_eq!(out.into_checkpoint(), next);
}

#[test]
fn migration_without_replica_sends_everything() {
    let next = checkpoint(1, 10, &data(20_000));
    let (mut c, mut s) = established();
    let mut out = Outgoing::new(Transfer::Migrate, 1, next.clone()).unwrap();
    let mut inc = Incoming::new(policy(None), None);
    let (need, wire) = run(&mut out, &mut inc, &mut c, &mut s).unwrap();
    // Header and table, state, 3 bulk records, trailer.
    assert_eq!(need, (0..6).collect::<Vec<u32>>());
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
        let mut out = Outgoing::new(Transfer::Standby, 1, next.clone()).unwrap();
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
    let mut out = Outgoing::new(Transfer::Standby, 1, next.clone()).unwrap();
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
    let mut out = Outgoing::new(Transfer::Migrate, 1, next).unwrap();
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
    let out = Outgoing::new(Transfer::Migrate, 1, next).unwrap();
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
        let out = Outgoing::new(transfer, 1, checkpoint(3, 10, &data(100))).unwrap();
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
    let mut out = Outgoing::new(Transfer::Migrate, 1, next.clone()).unwrap();
    let mut inc = Incoming::new(policy(None), None);
    let Some(Message::Need { chunks }) = inc.on_message(out.offer()).unwrap() else {
        panic!()
    };
    out.on_message(Message::Need { chunks }).unwrap();
    while let Some(m) = out.poll_send() {
        if let Some(ack) = inc.on_message(m).unwrap() {
            assert_eq!(ack, Message::Ack { epoch: 6 });
        }
    }
    // The ack is lost: the sender is in doubt, keeps the task paused, reconnects.
    assert!(out.in_doubt() && out.owns_task());
    out.restart();
    let hash = match out.offer() {
        Message::Offer(o) => o.checkpoint_hash,
        _ => unreachable!(),
    };
    let mut again = Incoming::new(
        policy(Some(Known {
            epoch: 6,
            checkpoint_hash: Some(hash),
        })),
        None,
    );
    let reply = again.on_message(out.offer()).unwrap().unwrap();
    assert_eq!(reply, Message::Ack { epoch: 6 });
    out.on_message(reply).unwrap();
    assert!(!out.owns_task());
}

#[test]
fn bad_chunks_need_and_commit_are_typed() {
    let next = checkpoint(2, 10, &data(20_000));
    let mut out = Outgoing::new(Transfer::Migrate, 1, next.clone()).unwrap();
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
            index: 0,
            codec: Codec::None,
            payload: vec![0; 65536]
        }),
        Err(TransferError::Rejected(NackReason::BadChunk { index: 0 }))
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
    let Message::Offer(o) = out.offer() else {
        unreachable!()
    };
    assert_eq!(
        inc.on_message(Message::Commit {
            checkpoint_hash: o.checkpoint_hash,
            epoch: 2
        }),
        Err(TransferError::Rejected(NackReason::MissingChunks))
    );
    // A chunk twice is refused.
    let mut inc = Incoming::new(policy(None), None);
    inc.on_message(out.offer()).unwrap();
    let lens = tern_protocol::transfer::cut_lengths(&next);
    let start: usize = lens[..2].iter().sum();
    let chunk = Message::Chunk {
        index: 2,
        codec: Codec::None,
        payload: next[start..start + lens[2]].to_vec(),
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
        Outgoing::new(Transfer::Migrate, 1, next[..100].to_vec()),
        Err(TransferError::InvalidCheckpoint)
    ));
}

#[test]
fn an_offer_whose_chunks_lie_about_the_checkpoint_is_refused_at_commit() {
    // Chunks consistent with the offer, but the whole is not a valid checkpoint.
    let next = checkpoint(2, 10, &data(100));
    let out = Outgoing::new(Transfer::Migrate, 1, next.clone()).unwrap();
    let Message::Offer(mut o) = out.offer() else {
        unreachable!()
    };
    let mut bad = next.clone();
    bad[20] ^= 1;
    o.chunks = tern_protocol::transfer::chunk_list(&bad);
    let mut inc = Incoming::new(policy(None), None);
    inc.on_message(Message::Offer(o.clone())).unwrap();
    inc.on_message(Message::Chunk {
        index: 0,
        codec: Codec::None,
        payload: bad,
    })
    .unwrap();
    assert_eq!(
        inc.on_message(Message::Commit {
            checkpoint_hash: o.checkpoint_hash,
            epoch: 2
        }),
        Err(TransferError::Rejected(NackReason::InvalidCheckpoint))
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
    let mut out = Outgoing::new(Transfer::Copy, 7, ckpt.clone()).unwrap();
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
}
