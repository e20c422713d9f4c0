//! Protocol clients and peers on the in-memory cable: bad peers, inspectors,
//! starting and killing tasks, tags, keys, insecure nodes, a migration
//! delivered twice, discovery beacons and network consoles.

use super::tests::*;
use super::*;
use crate::testing::{FakeBoard, Wire, WireEnd};
use alloc::format;
use alloc::string::String;
use std::sync::{Arc, Mutex};
use tern_migration::Limits;
use tern_protocol::{ChannelError, Incoming, Message, NackReason, Policy, TaskRole, TaskStatus};

#[test]
fn bad_peers_lose_their_connection_and_honest_ones_are_served() {
    let mut p = pair();
    p.b.exec("run is S --pause-at 50");
    assert!(p.run_until(100_000, |p| p.b.paused()));
    let dropped = |p: &Pair| {
        p.b.find(|e| match e {
            NodeEvent::PeerDropped { peer, reason } => Some((peer.clone(), reason.clone())),
            _ => None,
        })
    };

    // Garbage, then garbage sent with the FIN right behind it: each judged,
    // and the listening socket comes back.
    let net = p.a.net.clone();
    for (port, garbage, close) in [
        (41000, &b"GET / HTTP/1.0\r\n\r\n"[..], false),
        (41001, &b"\xff\xff\xff\xff"[..], true),
    ] {
        let raw = net.borrow_mut().add_tcp(1024, 1024);
        net.borrow_mut()
            .connect(raw, parse_endpoint("10.0.0.2").unwrap(), port)
            .unwrap();
        let mut sent = false;
        let peer = format!("10.0.0.1:{port}");
        for _ in 0..5_000 {
            p.run_until(1, |_| false);
            let mut net = net.borrow_mut();
            let socket = net.tcp(raw);
            if !sent && socket.can_send() {
                socket.send_slice(garbage).unwrap();
                if close {
                    socket.close();
                }
                sent = true;
            }
            drop(net);
            if dropped(&p).iter().any(|(from, _)| *from == peer) {
                break;
            }
        }
        let why = dropped(&p)
            .into_iter()
            .find(|(from, _)| *from == peer)
            .map(|(_, why)| why);
        assert!(
            why.as_deref().is_some_and(|w| w.starts_with("frame of")),
            "{why:?}"
        );
    }
    assert!(dropped(&p)[1].1.starts_with("frame of 4294967295 bytes"));

    // A wrong key: the client finds the node's proof false and stops.
    let mut wrong = Client::connect(&mut p, OTHER_KEY);
    assert!(!wrong.establish(&mut p));
    assert_eq!(wrong.error, Some(ChannelError::AuthFailed));

    // The node still serves an honest client.
    let mut client = Client::connect(&mut p, KEY);
    assert!(client.establish(&mut p));
    assert_eq!(
        client.ask(&mut p, &Message::Ping { nonce: 5 }),
        Message::Pong { nonce: 5 }
    );
    let Message::Tasks(tasks) = client.ask(&mut p, &Message::List) else {
        panic!("no task list")
    };
    assert_eq!(tasks.len(), 1);
    let t = &tasks[0];
    assert_eq!(
        (t.kind.as_str(), t.role, t.status),
        ("npb-is", TaskRole::Owner, TaskStatus::Paused)
    );
    assert_eq!((t.owner, t.epoch), (node_id_from_mac(MAC_B), 1));
    assert_eq!(
        client.ask(&mut p, &Message::Fetch { task_id: 12 }),
        Message::Nack(NackReason::UnknownTask)
    );

    // Fetch: a copy of the checkpoint, through the transfer phases.
    let policy = Policy {
        max_len: 1 << 30,
        kinds: Vec::new(),
        known: None,
    };
    let mut incoming = Incoming::new(policy, None);
    let mut msg = client.ask(&mut p, &Message::Fetch { task_id: t.task_id });
    loop {
        let reply = incoming.on_message(msg).unwrap();
        if let Some(reply) = reply {
            client.send(&reply);
        }
        if incoming.phase() == tern_protocol::ReceivePhase::Accepted {
            break;
        }
        msg = client.next(&mut p, 100_000);
    }
    let bytes = incoming.take_checkpoint().unwrap();
    let restored = tern_migration::read_checkpoint(&bytes[..], &Limits::default()).unwrap();
    assert_eq!(
        (restored.header.isa.as_str(), restored.header.epoch),
        ("aarch64", 1)
    );
    assert_eq!(restored.header.progress, t.progress);
    // A fetch moves nothing.
    assert!(p.b.exec("ps").contains("paused"));
}

#[test]
fn migrate_to_from_an_inspector_is_answered_with_the_report() {
    let mut p = pair();
    p.b.exec("run is S --pause-at 30");
    assert!(p.run_until(100_000, |p| p.b.paused()));
    let task_id = p.b.first_task_id();
    let mut client = Client::connect(&mut p, KEY);
    assert!(client.establish(&mut p));
    assert_eq!(
        client.ask(
            &mut p,
            &Message::MigrateTo {
                task_id: 3,
                to: "10.0.0.1".into(),
                downtime_ms: None,
            }
        ),
        Message::Nack(NackReason::UnknownTask)
    );
    let answer = client.ask(
        &mut p,
        &Message::MigrateTo {
            task_id,
            to: "10.0.0.1:4470".into(),
            downtime_ms: None,
        },
    );
    let Message::Migrated(report) = answer else {
        panic!("{answer:?}: {}", p.b.out)
    };
    assert_eq!(
        (
            report.task_id,
            report.epoch,
            report.from_isa.as_str(),
            report.to_isa.as_str()
        ),
        (task_id, 2, "aarch64", "x86_64")
    );
    assert!(report.wire_bytes > report.state_bytes && report.precopy_rounds >= 1);
    // The event the requester's migration published names it.
    assert!(p.b.saw(|e| matches!(
        e,
        NodeEvent::MigrationStarted { requested_by: Some(peer), .. } if peer.starts_with("10.0.0.1:")
    )));
    assert!(
        p.a.out.contains("task 1 (is S) resumed at 30."),
        "{}",
        p.a.out
    );
    assert_eq!(p.b.exec("ps"), "no tasks\r\n");
}

#[test]
fn a_client_starts_lists_and_kills_tasks_and_reads_status_and_events() {
    let mut p = pair();
    let mut client = Client::connect(&mut p, KEY);
    assert!(client.establish(&mut p));
    let Message::Events { records, dropped } = client.ask(&mut p, &Message::Subscribe { after: 0 })
    else {
        panic!("not subscribed")
    };
    assert_eq!((records.len(), dropped), (0, 0));
    let args = |a: &[&str]| a.iter().map(|s| String::from(*s)).collect::<Vec<_>>();
    assert_eq!(
        client.ask(
            &mut p,
            &Message::StartTask {
                args: args(&["mg", "S"]),
                tag: None,
            }
        ),
        Message::Nack(NackReason::StartRefused)
    );
    client.send(&Message::StartTask {
        args: args(&["cg", "W"]),
        tag: Some("run-7".into()),
    });
    // The answer, and the event stream's record of the start, in any order.
    let mut started = None;
    let mut streamed = Vec::new();
    while started.is_none() || streamed.is_empty() {
        match client.next(&mut p, 100_000) {
            Message::Started { task_id } => started = Some(task_id),
            Message::Events { records, .. } => streamed.extend(records),
            other => panic!("{other:?}"),
        }
    }
    let task_id = started.unwrap();
    assert_eq!(streamed[0].seq, 1);
    assert!(matches!(
        &streamed[0].event,
        NodeEvent::TaskStarted { task, epoch: 1, requested_by: Some(_) }
            if task.task_id == task_id && task.name == "cg W" && task.tag.as_deref() == Some("run-7")
    ));
    // Asking again under the same tag starts nothing new.
    let again = Message::StartTask {
        args: args(&["cg", "W"]),
        tag: Some("run-7".into()),
    };
    assert_eq!(client.request(&mut p, &again), Message::Started { task_id });
    let too_long = Message::StartTask {
        args: args(&["cg", "W"]),
        tag: Some("x".repeat(tern_protocol::MAX_TAG_LEN + 1)),
    };
    assert_eq!(
        client.request(&mut p, &too_long),
        Message::Nack(NackReason::StartRefused)
    );
    assert!(p
        .b
        .out
        .contains("task 1 (cg W) started (requested by 10.0.0.1:40000)"));
    let Message::NodeStatus(status) = client.request(&mut p, &Message::Status) else {
        panic!("no status")
    };
    assert_eq!(
        (status.isa.as_str(), status.board.as_str(), status.node_id),
        ("aarch64", "rpi4", node_id_from_mac(MAC_B))
    );
    assert_eq!(status.address.as_deref(), Some("10.0.0.2/24"));
    assert!(status.heap_free_bytes < status.heap_bytes);
    assert_eq!(status.tasks.len(), 1);
    assert_eq!(status.tasks[0].tag.as_deref(), Some("run-7"));
    assert!(status.task_kinds.contains(&String::from("npb-cg")));
    assert_eq!(
        client.request(&mut p, &Message::KillTask { task_id: 77 }),
        Message::Nack(NackReason::UnknownTask)
    );
    client.send(&Message::KillTask { task_id });
    let mut killed = false;
    let mut saw_kill_event = false;
    while !(killed && saw_kill_event) {
        match client.next(&mut p, 100_000) {
            Message::Killed { task_id: id } => killed = id == task_id,
            Message::Events { records, .. } => {
                saw_kill_event |= records
                    .iter()
                    .any(|r| matches!(r.event, NodeEvent::TaskKilled { .. }));
            }
            other => panic!("{other:?}"),
        }
    }
    assert_eq!(p.b.exec("ps"), "no tasks\r\n");
}

#[test]
fn a_tag_travels_with_the_task_through_migrations() {
    let mut p = pair();
    let mut client = Client::connect(&mut p, KEY);
    assert!(client.establish(&mut p));
    let start = Message::StartTask {
        args: vec!["cg".into(), "W".into()],
        tag: Some("batch/3".into()),
    };
    let Message::Started { task_id } = client.request(&mut p, &start) else {
        panic!("not started")
    };
    let to = String::from("10.0.0.1:4470");
    let answer = client.request(
        &mut p,
        &Message::MigrateTo {
            task_id,
            to,
            downtime_ms: None,
        },
    );
    assert!(matches!(answer, Message::Migrated(_)), "{answer:?}");
    let listed = p.a.list();
    assert_eq!(listed[0].task_id, task_id);
    assert_eq!(listed[0].tag.as_deref(), Some("batch/3"));
    assert!(p.a.saw(|e| matches!(
        e,
        NodeEvent::TaskArrived { task, .. } if task.tag.as_deref() == Some("batch/3")
    )));
    // Started again under its tag, on the node it moved to: it is there.
    let mut on_a = p.a.tasks.borrow_mut();
    assert_eq!(on_a.by_tag("batch/3").map(|e| e.task_id), Some(task_id));
}

#[test]
fn a_client_sets_and_ends_a_standby_by_task_id() {
    let mut p = pair();
    assert_eq!(
        p.b.exec("run cg S --pause-at 95"),
        "task 1 (cg S) started\r\n"
    );
    let task_id = p.b.first_task_id();
    let mut client = Client::connect(&mut p, KEY);
    assert!(client.establish(&mut p));
    let set = |task_id, standby: Option<&str>| Message::SetStandby {
        task_id,
        standby: standby.map(String::from),
    };
    assert_eq!(
        client.request(&mut p, &set(77, Some("10.0.0.1"))),
        Message::Nack(NackReason::UnknownTask)
    );
    assert_eq!(
        client.request(&mut p, &set(task_id, Some("node-a"))),
        Message::Nack(NackReason::StartRefused)
    );
    assert_eq!(
        client.request(&mut p, &set(task_id, Some("10.0.0.1:4470"))),
        Message::StandbySet { task_id }
    );
    // Asked again (an answer lost): the session in force stays the only one.
    assert_eq!(
        client.request(&mut p, &set(task_id, Some("10.0.0.1"))),
        Message::StandbySet { task_id }
    );
    let leased = |p: &Pair| p.a.control.borrow().replicas.leased(task_id);
    assert!(
        p.run_until(400_000, |p| leased(p) && !p.b.synced().is_empty()),
        "{}",
        p.b.out
    );
    let connected = p.b.find(|e| match e {
        NodeEvent::SyncConnected { task, to, .. } if task.task_id == task_id => Some(to.clone()),
        _ => None,
    });
    assert_eq!(connected, ["10.0.0.1:4470"]);
    assert_eq!(
        client.request(&mut p, &set(task_id, None)),
        Message::StandbySet { task_id }
    );
    assert!(p.b.saw(|e| matches!(
        e,
        NodeEvent::SyncEnded { task, reason, .. } if task.task_id == task_id && reason == "stopped"
    )));
    assert!(p.run_until(100_000, |p| !leased(p)));
    assert_eq!(
        client.request(&mut p, &set(task_id, None)),
        Message::StandbySet { task_id }
    );
    assert_eq!(p.a.arrivals(), 0);
}

#[test]
fn key_command_and_refusals_without_key_or_random_numbers() {
    let wire = Arc::new(Mutex::new(Wire::default()));
    let mut k = Node::with_heap(
        FakeBoard::leak(),
        WireEnd::node(wire.clone(), MAC_A),
        None,
        "10.0.0.1/24",
    );
    k.exec("run ep S");
    assert_eq!(k.exec("key"), "key: none (migration refused)\r\n");
    assert_eq!(
        k.exec("migrate 1 10.0.0.2"),
        "error: migrate: no key configured (set one with 'key <64 hex digits>' or 'key insecure'); migration refused\r\n"
    );
    assert_eq!(
        k.exec("key 0011zz"),
        "error: key: a key is 64 hexadecimal digits (32 bytes)\r\n"
    );
    assert_eq!(k.exec(&format!("key {KEY}")), "key: set\r\n");
    let shown = k.exec("key");
    assert_eq!(shown, "key: set\r\n");
    assert!(!shown.contains(KEY));
    // Keyed, but the board has no random number generator.
    assert_eq!(
        k.exec("migrate 1 10.0.0.2"),
        "error: migrate: no random number generator on this board; migration refused\r\n"
    );
    let insecure = k.exec("key insecure");
    assert!(insecure.starts_with("WARNING: INSECURE MODE"), "{insecure}");
    assert_eq!(k.exec("key"), "key: insecure (WARNING: INSECURE MODE)\r\n");

    // With a random number generator.
    let mut k = Node::with_heap(
        FakeBoard::leak(),
        WireEnd::node(wire, MAC_A),
        Some(3),
        "10.0.0.1/24",
    );
    k.exec("run ep S");
    k.exec("key insecure");
    for (line, error) in [
        (
            "migrate 1",
            "usage: migrate <id> <address>[:port]|<node id> [<downtime ms>]",
        ),
        (
            "migrate 1 10.0.0.2 soon",
            "'soon' is not a downtime in milliseconds",
        ),
        ("migrate 9 10.0.0.2", "no task 9"),
        (
            "migrate 1 10.0.0",
            "'10.0.0' is not <IPv4 address>[:<port>] nor a node id (12 hex digits)",
        ),
        (
            "migrate 1 10.0.0.2:0",
            "'10.0.0.2:0' is not <IPv4 address>[:<port>] nor a node id (12 hex digits)",
        ),
        (
            "migrate 1 5254007e00aa",
            "node 5254007e00aa has not been heard on the LAN (see 'peers')",
        ),
    ] {
        assert_eq!(
            k.exec(line),
            format!("error: migrate: {error}\r\n"),
            "{line}"
        );
    }
    assert_eq!(
        k.exec("migrate 1 10.0.0.2"),
        "migrate: task 1 (ep S) -> 10.0.0.2:4470: connecting\r\n"
    );
    assert_eq!(
        k.exec("migrate 1 10.0.0.2"),
        "error: migrate: task 1 is already migrating\r\n"
    );
}

#[test]
fn insecure_nodes_migrate_and_refuse_keyed_ones() {
    let mut p = pair();
    p.a.exec("key insecure");
    p.a.exec("run is S --pause-at 10");
    assert!(p.run_until(100_000, |p| p.a.paused()));
    p.a.exec("migrate 1 10.0.0.2");
    // The keyed node refuses the handshake and resets the connection.
    assert!(
        p.run_until(20_000, |p| p
            .a
            .saw(|e| matches!(e, NodeEvent::MigrationFailed { .. }))),
        "{}",
        p.a.out
    );
    assert!(
        p.b.saw(|e| matches!(
            e,
            NodeEvent::PeerDropped { reason, .. } if reason == "security mode mismatch: peer insecure = true"
        )),
        "{}",
        p.b.out
    );
    p.b.exec("key insecure");
    p.a.exec("migrate 1 10.0.0.2");
    assert!(
        p.run_until(200_000, |p| !p.a.migrated().is_empty()),
        "{}",
        p.a.out
    );
}

/// Offers `outgoing` through `client` and sends every needed chunk; returns
/// the commit, not sent yet.
fn send_until_commit(client: &mut Client, p: &mut Pair, outgoing: &mut Outgoing) -> Message {
    let need = client.ask(p, &outgoing.offer());
    outgoing.on_message(need).unwrap();
    loop {
        let msg = outgoing.poll_send().unwrap();
        if matches!(msg, Message::Commit { .. }) {
            return msg;
        }
        client.send(&msg);
    }
}

#[test]
fn two_connections_delivering_the_same_migration_give_one_task() {
    let mut p = pair();
    p.a.exec("run is S --pause-at 20");
    assert!(p.run_until(100_000, |p| p.a.paused()));
    let facts = p.a.kernel.board().facts();
    let (task_id, capture) = {
        let tasks = p.a.tasks.borrow();
        let e = &tasks.entries()[0];
        let clock = p.a.kernel.board().clock();
        (e.task_id, e.capture(2, &facts, None, clock).unwrap())
    };
    let replica = Replica::advance(None, capture).unwrap();
    let mut first = Outgoing::new(Transfer::Migrate, task_id, replica.clone(), None).unwrap();
    let mut second = Outgoing::new(Transfer::Migrate, task_id, replica, None).unwrap();
    let mut c1 = Client::connect_from(&mut p, KEY, 40001);
    let mut c2 = Client::connect_from(&mut p, KEY, 40002);
    assert!(c1.establish(&mut p) && c2.establish(&mut p));
    let commit1 = send_until_commit(&mut c1, &mut p, &mut first);
    let commit2 = send_until_commit(&mut c2, &mut p, &mut second);
    assert!(matches!(
        c2.ask(&mut p, &commit2),
        Message::Ack { epoch: 2, .. }
    ));
    // The first connection's commit of the same checkpoint is acked without
    // a second copy of the task.
    assert!(matches!(
        c1.ask(&mut p, &commit1),
        Message::Ack { epoch: 2, .. }
    ));
    assert_eq!(p.b.arrivals(), 1);
    assert_eq!(p.b.tasks.borrow().entries().len(), 1);
}

/// Node B's node id in its text form.
fn b_id() -> String {
    tern_protocol::format_node_id(node_id_from_mac(MAC_B))
}

#[test]
fn beacons_find_keyed_peers_and_a_node_id_stands_for_an_address() {
    let mut p = pair();
    // The first beacons go out at once, then every two seconds.
    assert!(p.run_until(20_000, |p| !p.a.control.borrow().peers().is_empty()));
    let peers = p.a.exec("peers");
    assert!(
        peers.starts_with(&format!(
            "{} rpi4  aarch64  10.0.0.2:4470 0s ago\r\n",
            b_id()
        )),
        "{peers}"
    );
    assert!(p.b.exec("peers").contains("pc    x86_64   10.0.0.1:4470"));
    // A node id works where an address does.
    p.a.exec("run ep S --pause-at 10");
    assert!(p.run_until(100_000, |p| p.a.paused()));
    assert_eq!(
        p.a.exec(&format!("migrate 1 {}", b_id())),
        "migrate: task 1 (ep S) -> 10.0.0.2:4470: connecting\r\n"
    );
    assert!(p.run_until(200_000, |p| p.b.arrivals() == 1));

    // Under another key, B's beacons are refused and it is forgotten.
    p.b.exec(&format!("key {OTHER_KEY}"));
    let ttl = PEER_TTL_NS;
    let start = p.a.kernel.board().clock().now_ns();
    assert!(p.run_until(2_000_000, |p| {
        p.a.kernel.board().clock().now_ns() > start + ttl && p.a.control.borrow().peers().is_empty()
    }));
    let peers = p.a.exec("peers");
    assert!(peers.starts_with("peers: none heard"), "{peers}");
    assert!(peers.contains("datagrams refused"), "{peers}");
    assert_eq!(
        p.a.exec(&format!("migrate 1 {}", b_id())),
        format!(
            "error: migrate: node {} has not been heard on the LAN (see 'peers')\r\n",
            b_id()
        )
    );

    // Two insecure nodes hear each other, marked as such.
    p.a.exec("key insecure");
    p.b.exec("key insecure");
    assert!(p.run_until(20_000, |p| !p.a.control.borrow().peers().is_empty()));
    assert!(p.a.exec("peers").contains(" INSECURE\r\n"));
}

/// Turns of both nodes through the kernel's whole run loop (the remote
/// consoles are served there) with `client`; the console text it received.
fn console_turns(p: &mut Pair, client: &mut Client, turns: usize, until: &str) -> String {
    let mut text = String::new();
    for _ in 0..turns {
        p.b.kernel.turn(&mut p.b.out);
        for m in client.turn(p) {
            match m {
                Message::ConsoleOutput { text: t } => text.push_str(&t),
                other => panic!("unexpected {other:?}"),
            }
        }
        if text.contains(until) {
            return text;
        }
    }
    panic!("no '{until}' on the console: {text}")
}

#[test]
fn network_consoles_run_the_shell_with_line_editing_and_stream_the_log() {
    let mut p = pair();
    let mut one = Client::connect_from(&mut p, KEY, 40001);
    let mut two = Client::connect_from(&mut p, KEY, 40002);
    assert!(one.establish(&mut p) && two.establish(&mut p));
    one.send(&Message::ConsoleOpen);
    let hello = console_turns(&mut p, &mut one, 10_000, "tern> ");
    assert!(
        hello.starts_with("Tern 0.1.0 on rpi4 (aarch64) (network console from 10.0.0.1:40001"),
        "{hello}"
    );
    two.send(&Message::ConsoleOpen);
    console_turns(&mut p, &mut two, 10_000, "tern> ");

    // Typed bytes are echoed, backspace erases, Enter runs the line.
    one.send(&Message::ConsoleInput {
        bytes: b"inxx\x7f\x7ffo\r".to_vec(),
    });
    let answer = console_turns(&mut p, &mut one, 10_000, "uptime:");
    assert!(
        answer.starts_with("inxx\x08 \x08\x08 \x08fo\r\nboard: rpi4\r\n"),
        "{answer:?}"
    );
    // The key is never echoed.
    one.send(&Message::ConsoleInput {
        bytes: format!("key {KEY}\r").into_bytes(),
    });
    let answer = console_turns(&mut p, &mut one, 10_000, "key: set");
    assert!(!answer.contains("0102"), "{answer}");
    // A task a peer starts is a log line on every console; one the console
    // started is its answer.
    two.send(&Message::ConsoleInput {
        bytes: b"run ep S\r".to_vec(),
    });
    let answer = console_turns(&mut p, &mut two, 10_000, "started");
    assert!(
        answer.contains("task 1 (ep S) started\r\ntern> "),
        "{answer}"
    );
    let finished = console_turns(&mut p, &mut one, 1_000_000, "VERIFICATION SUCCESSFUL");
    assert!(finished.contains("\r\ntask 1 (ep S): "), "{finished}");
    // Input without a console, or too much of it, is refused.
    let mut three = Client::connect_from(&mut p, KEY, 40003);
    assert!(three.establish(&mut p));
    assert_eq!(
        three.ask(
            &mut p,
            &Message::ConsoleInput {
                bytes: b"halt\r".to_vec()
            }
        ),
        Message::Nack(NackReason::UnexpectedMessage)
    );
    one.send(&Message::ConsoleInput {
        bytes: vec![b'x'; tern_protocol::MAX_CONSOLE_INPUT + 1],
    });
    assert_eq!(
        one.next(&mut p, 10_000),
        Message::Nack(NackReason::TooLarge)
    );
    assert_eq!(p.b.kernel.remote_consoles().len(), 2);
    // A wrong key gets no console.
    let mut wrong = Client::connect_from(&mut p, OTHER_KEY, 40004);
    assert!(!wrong.establish(&mut p));
}
