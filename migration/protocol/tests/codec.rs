//! Property tests of the message codec and the frame decoder.

use proptest::prelude::*;
use tern_protocol::frame::{write_frame, FrameDecoder};
use tern_protocol::{
    ChunkInfo, Codec, EventRecord, Handshake, Hello, Message, MigrationReport, NackReason,
    NodeEvent, NodeStatus, Offer, ReceiverTimes, RoundReport, StageTimes, StopReason, TaskRef,
    TaskRole, TaskStatus, TaskSummary, Transfer,
};

fn hello() -> impl Strategy<Value = Hello> {
    (
        any::<u16>(),
        "[a-z0-9_]{0,12}",
        "[a-z-]{0,12}",
        any::<u64>(),
        prop::collection::vec("[a-z-]{1,8}", 0..4),
        any::<bool>(),
    )
        .prop_map(
            |(version, isa, board, node_id, task_kinds, insecure)| Hello {
                version,
                isa,
                board,
                node_id,
                task_kinds,
                insecure,
            },
        )
}

fn chunk() -> impl Strategy<Value = ChunkInfo> {
    (any::<[u8; 32]>(), any::<u32>(), any::<u32>()).prop_map(|(hash, at, len)| ChunkInfo {
        at,
        hash,
        len,
    })
}

fn nack() -> impl Strategy<Value = NackReason> {
    prop_oneof![
        any::<u64>().prop_map(|known| NackReason::StaleEpoch { known }),
        any::<u32>().prop_map(|index| NackReason::BadChunk { index }),
        Just(NackReason::UnsupportedKind),
        Just(NackReason::UnsupportedCodec),
        Just(NackReason::MissingChunks),
        Just(NackReason::HashMismatch),
        Just(NackReason::InvalidCheckpoint),
        Just(NackReason::TooLarge),
        Just(NackReason::UnknownTask),
        Just(NackReason::UnexpectedMessage),
        Just(NackReason::Busy),
        Just(NackReason::MigrationFailed),
        Just(NackReason::StartRefused),
        Just(NackReason::UnknownBase),
    ]
}

fn message() -> impl Strategy<Value = Message> {
    let offer = (
        0..4u8,
        any::<u64>(),
        "[a-z-]{1,10}",
        any::<u32>(),
        any::<[u64; 4]>(),
        any::<[u8; 32]>(),
        prop::collection::vec(chunk(), 0..20),
    )
        .prop_map(
            |(transfer, task_id, kind, kind_version, n, checkpoint_hash, chunks)| {
                Message::Offer(Offer {
                    transfer: [
                        Transfer::Migrate,
                        Transfer::Copy,
                        Transfer::Replicate,
                        Transfer::Standby,
                    ][transfer as usize],
                    task_id,
                    kind,
                    kind_version,
                    progress: n[0],
                    progress_total: n[1],
                    epoch: n[2],
                    checkpoint_hash,
                    total_len: n[3],
                    layout: kind_version.to_le_bytes().to_vec(),
                    base: (n[0] % 2 == 0).then_some(checkpoint_hash),
                    chunks,
                })
            },
        );
    let summary = (
        any::<u64>(),
        "[a-z-]{1,10}",
        any::<[u64; 4]>(),
        any::<bool>(),
        0..5u8,
        any::<Option<u64>>(),
        prop::option::of("[a-z-]{1,10}"),
    )
        .prop_map(
            |(task_id, kind, n, standby, status, last_sync_ms_ago, policy)| TaskSummary {
                task_id,
                kind,
                progress: n[0],
                progress_total: n[1],
                owner: n[2],
                epoch: n[3],
                role: if standby {
                    TaskRole::Standby
                } else {
                    TaskRole::Owner
                },
                status: [
                    TaskStatus::Running,
                    TaskStatus::Paused,
                    TaskStatus::Migrating,
                    TaskStatus::Finished { verified: true },
                    TaskStatus::Replica,
                ][status as usize],
                last_sync_ms_ago,
                tag: policy.clone(),
                policy,
            },
        );
    let report = (
        any::<[u64; 6]>(),
        any::<[u32; 4]>(),
        "[a-z0-9_]{1,8}",
        "[a-z0-9_]{1,8}",
        "[a-z0-9-]{1,8}",
    )
        .prop_map(|(n, k, from_isa, to_isa, codec)| MigrationReport {
            task_id: n[0],
            epoch: n[1],
            from_isa,
            to_isa,
            state_bytes: n[2],
            wire_bytes: n[3],
            precopy_rounds: k[0],
            total_ms: n[4],
            downtime_ms: n[5],
            chunks: k[1],
            stop_copy_chunks: k[2],
            codec,
            ratio_milli: k[3],
            downtime_limit_ms: n[5] / 3,
            stop: match k[0] % 3 {
                0 => StopReason::DowntimeFits { predicted_ms: n[4] },
                1 => StopReason::RoundLimit,
                _ => StopReason::NotConverging { predicted_ms: n[3] },
            },
            rounds: (0..k[1] % 4)
                .map(|r| RoundReport {
                    round: r + 1,
                    dirty_chunks: k[2],
                    dirty_bytes: n[2],
                    chunks_sent: k[3],
                    wire_bytes: n[3],
                    ms: n[4],
                })
                .collect(),
            stages: StageTimes {
                capture_us: n[0],
                hash_us: n[1],
                compress_us: n[2],
                seal_us: n[3],
                send_us: n[4],
                check_us: n[5],
                rebuild_us: n[0] ^ n[1],
            },
        });
    let task =
        (any::<u64>(), any::<u32>(), "[a-z ]{1,8}").prop_map(|(task_id, local_id, name)| TaskRef {
            tag: Some(name.clone()),
            task_id,
            local_id,
            name,
        });
    let event = (
        task,
        any::<[u64; 4]>(),
        any::<bool>(),
        "[ -~]{0,20}",
        0..4u8,
    )
        .prop_map(|(task, n, flag, text, kind)| match kind {
            0 => NodeEvent::TaskFinished {
                task,
                epoch: n[0],
                verified: flag,
                verdict: text,
            },
            1 => NodeEvent::FailedOver {
                task,
                owner: text,
                silent_ms: n[0],
                epoch: n[1],
                progress: n[2],
                progress_total: n[3],
            },
            2 => NodeEvent::TaskStarted {
                task,
                epoch: n[0],
                requested_by: flag.then_some(text),
            },
            _ => NodeEvent::PeerDropped {
                peer: text.clone(),
                reason: text,
            },
        });
    let records = prop::collection::vec((any::<[u64; 2]>(), event), 0..4).prop_map(|events| {
        events
            .into_iter()
            .map(|(n, event)| EventRecord {
                seq: n[0],
                at_ms: n[1],
                event,
            })
            .collect::<Vec<_>>()
    });
    let status = (
        any::<[u64; 6]>(),
        "[a-z0-9_]{1,8}",
        prop::option::of("[0-9./]{1,18}"),
        prop::collection::vec(summary.clone(), 0..3),
    )
        .prop_map(|(n, name, address, tasks)| NodeStatus {
            version: name.clone(),
            node_id: n[0],
            isa: name.clone(),
            board: name.clone(),
            model: name.clone(),
            cores: n[1] as u32,
            memory_bytes: n[2],
            heap_bytes: n[3],
            heap_free_bytes: n[4],
            uptime_ms: n[5],
            address,
            task_kinds: vec![name],
            tasks,
            next_event: n[1],
            control_sockets: n[2] as u32,
        });
    prop_oneof![
        offer,
        prop::collection::vec(any::<u32>(), 0..50).prop_map(|chunks| Message::Need { chunks }),
        (
            any::<u32>(),
            0..3u8,
            prop::collection::vec(any::<u8>(), 0..2000)
        )
            .prop_map(|(index, c, payload)| Message::Chunk {
                index,
                codec: [Codec::None, Codec::Lz4, Codec::Zstd][c as usize],
                payload
            }),
        (any::<[u8; 32]>(), any::<u64>()).prop_map(|(checkpoint_hash, epoch)| Message::Commit {
            checkpoint_hash,
            epoch
        }),
        (any::<u64>(), any::<[u64; 2]>()).prop_map(|(epoch, t)| Message::Ack {
            epoch,
            times: ReceiverTimes {
                check_us: t[0],
                rebuild_us: t[1],
            }
        }),
        nack().prop_map(Message::Nack),
        Just(Message::List),
        prop::collection::vec(summary, 0..5).prop_map(Message::Tasks),
        any::<u64>().prop_map(|task_id| Message::Fetch { task_id }),
        (any::<u64>(), "[0-9.:]{1,21}", any::<Option<u64>>()).prop_map(
            |(task_id, to, downtime_ms)| Message::MigrateTo {
                task_id,
                to,
                downtime_ms
            }
        ),
        report.prop_map(Message::Migrated),
        any::<u64>().prop_map(|nonce| Message::Ping { nonce }),
        any::<u64>().prop_map(|nonce| Message::Pong { nonce }),
        Just(Message::Status),
        status.prop_map(Message::NodeStatus),
        any::<u64>().prop_map(|after| Message::Subscribe { after }),
        (records, any::<u64>()).prop_map(|(records, dropped)| Message::Events { records, dropped }),
        prop::collection::vec("[a-zA-Z0-9]{1,6}", 0..4).prop_map(|args| Message::StartTask {
            tag: args.first().cloned(),
            args
        }),
        any::<u64>().prop_map(|task_id| Message::Started { task_id }),
        any::<u64>().prop_map(|task_id| Message::KillTask { task_id }),
        any::<u64>().prop_map(|task_id| Message::Killed { task_id }),
        (any::<u64>(), prop::option::of("[0-9.:]{1,21}"))
            .prop_map(|(task_id, standby)| Message::SetStandby { task_id, standby }),
        any::<u64>().prop_map(|task_id| Message::StandbySet { task_id }),
        any::<[u64; 2]>().prop_map(|[task_id, epoch]| Message::TaskEnded { task_id, epoch }),
    ]
}

proptest! {
    #[test]
    fn messages_round_trip(m in message()) {
        let bytes = postcard::to_allocvec(&m).unwrap();
        prop_assert_eq!(postcard::from_bytes::<Message>(&bytes).unwrap(), m);
    }

    #[test]
    fn handshakes_round_trip(h in hello(), nonce in any::<[u8; 32]>(), mac in any::<[u8; 32]>()) {
        for m in [Handshake::Hello { hello: h.clone(), nonce }, Handshake::Auth { mac }] {
            let bytes = postcard::to_allocvec(&m).unwrap();
            prop_assert_eq!(postcard::from_bytes::<Handshake>(&bytes).unwrap(), m);
        }
    }

    #[test]
    fn every_strict_prefix_of_a_message_is_an_error(m in message()) {
        let bytes = postcard::to_allocvec(&m).unwrap();
        for cut in 0..bytes.len() {
            prop_assert!(postcard::from_bytes::<Message>(&bytes[..cut]).is_err());
        }
    }

    #[test]
    fn arbitrary_bytes_decode_to_a_value_or_an_error(bytes in prop::collection::vec(any::<u8>(), 0..300)) {
        let _ = postcard::from_bytes::<Message>(&bytes);
        let _ = postcard::from_bytes::<Handshake>(&bytes);
        let mut d = FrameDecoder::new(256);
        d.push(&bytes).unwrap();
        while let Ok(Some(f)) = d.next_frame() {
            prop_assert!(f.len() <= 256);
        }
    }

    #[test]
    fn frames_survive_any_split(ms in prop::collection::vec(message(), 1..6), cuts in prop::collection::vec(1usize..500, 0..20)) {
        let mut wire = Vec::new();
        let bodies: Vec<Vec<u8>> = ms.iter().map(|m| postcard::to_allocvec(m).unwrap()).collect();
        for b in &bodies {
            write_frame(b, 1 << 20, &mut wire).unwrap();
        }
        let mut d = FrameDecoder::new(1 << 20);
        let mut got = Vec::new();
        let mut rest = &wire[..];
        for c in cuts.iter().chain(core::iter::once(&usize::MAX)) {
            let (now, later) = rest.split_at((*c).min(rest.len()));
            d.push(now).unwrap();
            while let Some(f) = d.next_frame().unwrap() {
                got.push(postcard::from_bytes::<Message>(&f).unwrap());
            }
            rest = later;
        }
        d.finish().unwrap();
        prop_assert_eq!(got, ms);
    }
}
