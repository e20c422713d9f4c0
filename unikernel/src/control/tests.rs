//! Two kernels on an in-memory cable, driven by shell commands and by a
//! protocol client: the harness the control tests share ([`Pair`],
//! [`Client`]), and migrations. Sync sessions are in `tests_sync`, clients
//! and peers in `tests_peers`, Wasm tasks in `tests_wasm`. The tests read
//! the nodes' typed events, not their console text.

use super::*;
use crate::testing::{exec, FakeBoard, FakeEntropy, Wire, WireEnd};
use alloc::format;
use alloc::string::String;
use std::sync::{Arc, Mutex};
use tern_hal::Isa;
use tern_protocol::{
    ChannelError, Connection, Event, Message, MigrationReport, Psk, StopReason, SyncReport,
    TaskRole,
};

use crate::net::SharedNet;
use crate::tasks::SharedTasks;
use link::Link;

pub(super) const KEY: &str = "000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f";
pub(super) const OTHER_KEY: &str =
    "ff0102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f";
pub(super) const MAC_A: [u8; 6] = [0x52, 0x54, 0, 0, 0, 0x0a];
pub(super) const MAC_B: [u8; 6] = [0x52, 0x54, 0, 0, 0, 0x0b];

/// One node of a test: its kernel and the parts the tests look into.
pub(super) struct Node {
    pub(super) kernel: Kernel,
    pub(super) net: SharedNet,
    pub(super) tasks: SharedTasks,
    pub(super) control: Rc<RefCell<Control>>,
    /// What its console showed (the rendered events).
    pub(super) out: String,
}

impl Node {
    /// A node of `isa` and `board` on `device`, with entropy from `seed`,
    /// at address `cidr`.
    pub(super) fn new(
        isa: Isa,
        board: &'static str,
        device: WireEnd,
        seed: u64,
        cidr: &str,
    ) -> Self {
        Self::with_heap(
            FakeBoard::leak_with(isa, board, 256 << 20),
            device,
            Some(seed),
            cidr,
        )
    }

    pub(super) fn with_heap(
        board: &'static FakeBoard,
        device: WireEnd,
        seed: Option<u64>,
        cidr: &str,
    ) -> Self {
        Self::with_catalog(
            board,
            device,
            seed,
            cidr,
            Rc::new(tern_workloads::NpbCatalog),
        )
    }

    pub(super) fn with_catalog(
        board: &'static FakeBoard,
        device: WireEnd,
        seed: Option<u64>,
        cidr: &str,
        catalog: Rc<dyn tern_migration::TaskCatalog>,
    ) -> Self {
        let mut kernel = Kernel::new(board);
        if let Some(seed) = seed {
            kernel.set_entropy(Box::new(FakeEntropy(seed)));
        }
        let node_id = node_id_from_mac(tern_hal::NetDevice::mac_address(&device));
        // The catalogs the boards carry: Wasm modules and `catalog` (the
        // NPB workloads unless a test brings its own). The fake clock moves
        // 1 ms per reading, whatever a step takes: the fuel gauge would
        // raise the budget without end.
        let limits = tern_wasm::Limits {
            max_step_fuel: 200_000,
            ..tern_wasm::Limits::default()
        };
        let wasm = tern_wasm::WasmCatalog::new(board.clock(), limits);
        let catalog = tern_migration::Catalogs::new(alloc::vec![
            Rc::new(wasm) as Rc<dyn tern_migration::TaskCatalog>,
            catalog,
        ]);
        let tasks = crate::tasks::install(&mut kernel, node_id, Rc::new(catalog));
        let net = crate::net::install(&mut kernel, Box::new(device));
        let control = install(&mut kernel, net.clone(), tasks.clone());
        exec(&mut kernel, &format!("net {cidr}"));
        Self {
            kernel,
            net,
            tasks,
            control,
            out: String::new(),
        }
    }

    /// Runs a shell line.
    pub(super) fn exec(&mut self, line: &str) -> String {
        exec(&mut self.kernel, line)
    }

    /// Every event the node published, oldest first.
    pub(super) fn events(&self) -> Vec<NodeEvent> {
        self.kernel
            .events()
            .after(0)
            .0
            .map(|r| r.event.clone())
            .collect()
    }

    /// The events `pick` chooses, oldest first.
    pub(super) fn find<T>(&self, pick: impl Fn(&NodeEvent) -> Option<T>) -> Vec<T> {
        self.events().iter().filter_map(pick).collect()
    }

    /// Whether some event satisfies `is`.
    pub(super) fn saw(&self, is: impl Fn(&NodeEvent) -> bool) -> bool {
        self.events().iter().any(is)
    }

    /// The reports of the migrations this node completed.
    pub(super) fn migrated(&self) -> Vec<MigrationReport> {
        self.find(|e| match e {
            NodeEvent::Migrated { report, .. } => Some(report.clone()),
            _ => None,
        })
    }

    /// The reports of the syncs this node's sessions completed.
    pub(super) fn synced(&self) -> Vec<SyncReport> {
        self.find(|e| match e {
            NodeEvent::Synced { report, .. } => Some(report.clone()),
            _ => None,
        })
    }

    /// How many tasks arrived here by migration or failover.
    pub(super) fn arrivals(&self) -> usize {
        self.find(|e| match e {
            NodeEvent::TaskArrived { .. } | NodeEvent::FailedOver { .. } => Some(()),
            _ => None,
        })
        .len()
    }

    /// The verdicts of the tasks that finished here.
    pub(super) fn verdicts(&self) -> Vec<bool> {
        self.find(|e| match e {
            NodeEvent::TaskFinished { verified, .. } => Some(*verified),
            _ => None,
        })
    }

    /// Whether a task paused at its `--pause-at`.
    pub(super) fn paused(&self) -> bool {
        self.saw(|e| matches!(e, NodeEvent::TaskPaused { .. }))
    }

    /// Progress of local task `id`, in percent.
    pub(super) fn percent(&self, id: u32) -> f64 {
        self.tasks
            .borrow_mut()
            .get_mut(id)
            .map_or(0.0, |e| e.task.progress().percent())
    }

    /// Global id of the first task listed here.
    pub(super) fn first_task_id(&self) -> u64 {
        self.tasks.borrow().entries()[0].task_id
    }

    /// What `List` answers now.
    pub(super) fn list(&self) -> Vec<tern_protocol::TaskSummary> {
        let mut control = self.control.borrow_mut();
        let c = &mut *control;
        let mut events = crate::events::EventLog::new();
        let mut turn = Turn {
            now_ns: self.kernel.board().clock().now_ns(),
            deadline_ns: 0,
            events: &mut events,
        };
        let parts = Parts {
            ctx: &mut c.ctx,
            replicas: &mut c.replicas,
            migrations: &mut c.migrations,
            sessions: &mut c.sessions,
            notices: &mut c.notices,
            discovery: &c.discovery,
            turn: &mut turn,
        };
        let now = parts.turn.now_ns;
        requests::list(&parts, now)
    }
}

/// Two nodes on one in-memory cable: A (x86_64 pc, 10.0.0.1) and B
/// (aarch64 rpi4, 10.0.0.2), both keyed.
pub(super) struct Pair {
    pub(super) a: Node,
    pub(super) b: Node,
    pub(super) wire: Arc<Mutex<Wire>>,
}

pub(super) fn pair() -> Pair {
    let wire = Arc::new(Mutex::new(Wire::default()));
    let mut a = Node::new(
        Isa::X86_64,
        "pc",
        WireEnd::node(wire.clone(), MAC_A),
        1,
        "10.0.0.1/24",
    );
    let mut b = Node::new(
        Isa::Aarch64,
        "rpi4",
        WireEnd::peer(wire.clone(), MAC_B),
        2,
        "10.0.0.2/24",
    );
    assert_eq!(a.exec(&format!("key {KEY}")), "key: set\r\n");
    assert_eq!(b.exec(&format!("key {KEY}")), "key: set\r\n");
    Pair { a, b, wire }
}

impl Pair {
    /// Polls both nodes until `done` or `max` turns; whether `done`.
    pub(super) fn run_until(&mut self, max: usize, done: impl Fn(&Pair) -> bool) -> bool {
        for _ in 0..max {
            self.a.kernel.poll_services(&mut self.a.out);
            self.b.kernel.poll_services(&mut self.b.out);
            if done(self) {
                return true;
            }
        }
        false
    }

    /// Cuts the cable (dropping the frames in flight when `drop_in_flight`).
    pub(super) fn cut(&mut self, drop_in_flight: bool) {
        let mut wire = self.wire.lock().unwrap();
        wire.cut = true;
        if drop_in_flight {
            wire.from_node.clear();
            wire.to_node.clear();
        }
    }

    /// Mends the cable.
    pub(super) fn mend(&mut self) {
        self.wire.lock().unwrap().cut = false;
    }
}

/// Shortened timeouts: the fake clock advances 1 ms per reading.
pub(super) fn short_timeouts(p: &mut Pair) {
    let t = Timeouts {
        connect_ns: 1_000_000_000,
        idle_ns: 1_500_000_000,
        retry_ns: 300_000_000,
        retry_max_ns: 600_000_000,
    };
    p.a.control.borrow_mut().set_timeouts(t);
    p.b.control.borrow_mut().set_timeouts(t);
}

/// A protocol client (an inspector) on a socket of node A's stack, talking
/// to node B's control port.
pub(super) struct Client {
    pub(super) handle: SocketHandle,
    pub(super) link: Option<Link>,
    pub(super) config: Config,
    pub(super) error: Option<ChannelError>,
    pub(super) inbox: std::collections::VecDeque<Message>,
}

impl Client {
    pub(super) fn connect(p: &mut Pair, key: &str) -> Self {
        Self::connect_from(p, key, 40000)
    }

    pub(super) fn connect_from(p: &mut Pair, key: &str, port: u16) -> Self {
        let net = p.a.net.clone();
        let handle = net.borrow_mut().add_tcp(SOCKET_BUFFER, SOCKET_BUFFER);
        net.borrow_mut()
            .connect(handle, parse_endpoint("10.0.0.2").unwrap(), port)
            .unwrap();
        let hello = Hello {
            version: PROTOCOL_VERSION,
            isa: "x86_64".into(),
            board: "linux-host".into(),
            node_id: 99,
            task_kinds: Vec::new(),
            insecure: false,
        };
        let key = Security::Key(Psk(parse_key(key).unwrap()));
        Self {
            handle,
            link: None,
            config: Config::new(hello, Some(key)),
            error: None,
            inbox: std::collections::VecDeque::new(),
        }
    }

    /// One turn of both nodes and this client; the messages received.
    pub(super) fn turn(&mut self, p: &mut Pair) -> Vec<Message> {
        p.run_until(1, |_| false);
        let net = p.a.net.clone();
        let mut net = net.borrow_mut();
        let socket = net.tcp(self.handle);
        if self.link.is_none() && socket.state() == tcp::State::Established {
            let conn = Connection::client(&self.config, [7; 32]).unwrap();
            self.link = Some(Link::new(conn, 0));
        }
        let Some(link) = self.link.as_mut() else {
            return Vec::new();
        };
        match link.pump(socket, 0) {
            Ok(events) => events
                .into_iter()
                .filter_map(|e| match e {
                    Event::Message(m) => Some(m),
                    Event::Established(_) => None,
                })
                .collect(),
            Err(e) => {
                socket.abort();
                self.error = Some(e);
                self.link = None;
                Vec::new()
            }
        }
    }

    /// Runs until the handshake is done (or failed: false).
    pub(super) fn establish(&mut self, p: &mut Pair) -> bool {
        for _ in 0..5_000 {
            self.turn(p);
            if self.error.is_some() {
                return false;
            }
            if self.link.as_ref().is_some_and(|l| l.conn.is_established()) {
                return true;
            }
        }
        panic!("handshake did not end")
    }

    /// Sends `msg` without waiting.
    pub(super) fn send(&mut self, msg: &Message) {
        self.link.as_mut().unwrap().send(msg).unwrap();
    }

    /// Sends `msg` and returns the first answer.
    pub(super) fn ask(&mut self, p: &mut Pair, msg: &Message) -> Message {
        self.send(msg);
        self.next(p, 200_000)
    }

    /// Sends `msg` and returns the first answer that is not a subscriber's
    /// event stream.
    pub(super) fn request(&mut self, p: &mut Pair, msg: &Message) -> Message {
        self.send(msg);
        loop {
            match self.next(p, 200_000) {
                Message::Events { .. } => {}
                other => return other,
            }
        }
    }

    pub(super) fn next(&mut self, p: &mut Pair, turns: usize) -> Message {
        for _ in 0..turns {
            let received = self.turn(p);
            self.inbox.extend(received);
            if let Some(m) = self.inbox.pop_front() {
                return m;
            }
            assert!(self.error.is_none(), "{:?}", self.error);
        }
        panic!("no answer")
    }
}

#[test]
fn a_running_task_migrates_live_with_pre_copy_and_finishes_verified_on_the_receiver() {
    let mut p = pair();
    assert_eq!(p.a.exec("run cg S"), "task 1 (cg S) started\r\n");
    let global = p.a.first_task_id();
    assert_eq!(global, (node_id_from_mac(MAC_A) << 16) | 1);
    // Past the matrix set-up (its arrays are in the checkpoints until then),
    // so every round moves about the final state's size.
    assert!(p.run_until(200_000, |p| p.a.percent(1) >= 5.0));
    assert_eq!(
        p.a.exec("migrate 1 10.0.0.2:4470"),
        "migrate: task 1 (cg S) -> 10.0.0.2:4470: connecting\r\n"
    );
    assert!(
        p.run_until(200_000, |p| !p.a.migrated().is_empty()),
        "{}",
        p.a.out
    );
    let rounds = p.a.find(|e| match e {
        NodeEvent::PrecopyRound { round, to, .. } => Some((*round, to.clone())),
        _ => None,
    });
    assert_eq!(rounds[0], (1, String::from("10.0.0.2:4470")));
    assert!(p.a.saw(|e| matches!(e, NodeEvent::StopAndCopy { .. })));
    let report = &p.a.migrated()[0];
    assert_eq!(
        (
            report.epoch,
            report.from_isa.as_str(),
            report.to_isa.as_str()
        ),
        (2, "x86_64", "aarch64")
    );
    let rounds = u64::from(report.precopy_rounds);
    assert!(
        rounds >= 1
            && rounds as usize
                == p.a
                    .find(|e| match e {
                        NodeEvent::PrecopyRound { .. } => Some(()),
                        _ => None,
                    })
                    .len()
    );
    // Each round sends at most the whole state, plus the protocol's
    // framing, sealing and offers.
    assert!(
        report.wire_bytes > report.state_bytes
            && report.wire_bytes < (rounds + 1) * report.state_bytes * 11 / 10,
        "{report:?}"
    );
    assert!(report.downtime_ms <= report.total_ms);
    // Every round's timeline, the stop-and-copy last, in the order of its
    // moments.
    let timelines = p.a.find(|e| match e {
        NodeEvent::RoundTimeline {
            round,
            stop_and_copy,
            timeline,
            ..
        } => Some((*round, *stop_and_copy, *timeline)),
        _ => None,
    });
    assert_eq!(timelines.len() as u64, rounds + 1, "{timelines:?}");
    for (i, (round, stop_and_copy, t)) in timelines.iter().enumerate() {
        assert_eq!(
            (*round as usize, *stop_and_copy),
            (i + 1, i as u64 == rounds)
        );
        assert!(
            t.offered_us <= t.need_us
                && t.need_us <= t.queued_us
                && t.queued_us <= t.drained_us
                && t.drained_us <= t.acked_us
                && t.turns >= 2,
            "{t:?}"
        );
    }
    // The console shows the same report.
    assert!(
        p.a.out
            .contains("migrated task 1 (cg S) to 10.0.0.2:4470 (x86_64 -> aarch64): epoch 2, "),
        "{}",
        p.a.out
    );
    // Gone here, running there with the same identity and the next epoch.
    assert_eq!(p.a.exec("ps"), "no tasks\r\n");
    assert_eq!(p.b.arrivals(), 1);
    let ps = p.b.exec("ps");
    assert!(
        ps.contains(&format!("{global:016x}")) && ps.contains("      2  "),
        "{ps}"
    );
    // A keeps the sent checkpoint as its replica while the task runs there.
    let list = p.a.list();
    assert_eq!(list.len(), 1);
    assert_eq!(
        (list[0].task_id, list[0].role, list[0].epoch, list[0].owner),
        (global, TaskRole::Standby, 2, node_id_from_mac(MAC_B))
    );
    assert!(p.run_until(1_000_000, |p| !p.b.verdicts().is_empty()));
    assert_eq!(p.b.verdicts(), [true]);
    assert!(p.b.out.contains("task 1 (cg S): VERIFICATION SUCCESSFUL"));
    assert!(p.a.verdicts().is_empty());
    // A kept the sent checkpoint as its replica of the task until B said
    // the task ended.
    assert!(p.run_until(100_000, |p| !dropped(&p.a).is_empty()));
    assert_eq!(dropped(&p.a), [(global, 2)]);
    assert!(p.a.list().is_empty());
}

/// The replicas a node dropped because their owner said the task ended:
/// (task, epoch).
pub(super) fn dropped(node: &Node) -> Vec<(u64, u64)> {
    node.find(|e| match e {
        NodeEvent::ReplicaDropped { task_id, epoch, .. } => Some((*task_id, *epoch)),
        _ => None,
    })
}

/// Runs until B drops its replica of `global` at `epoch` on its owner's
/// word, and checks that B holds nothing else.
pub(super) fn b_dropped(p: &mut Pair, global: u64, epoch: u64) {
    assert!(
        p.run_until(100_000, |p| !dropped(&p.b).is_empty()),
        "{}",
        p.b.out
    );
    assert_eq!(dropped(&p.b), [(global, epoch)]);
    assert!(p.b.list().is_empty());
}

/// TCP sockets a node's control service holds.
pub(super) fn sockets(node: &Node) -> u32 {
    node.control.borrow().ctx.sockets
}

#[test]
fn a_task_that_went_there_and_back_leaves_no_replica_nor_socket_when_it_ends() {
    let mut p = pair();
    let idle = LISTENERS as u32;
    assert_eq!((sockets(&p.a), sockets(&p.b)), (idle, idle));
    assert_eq!(p.a.exec("run cg S"), "task 1 (cg S) started\r\n");
    let global = p.a.first_task_id();
    assert!(p.run_until(200_000, |p| p.a.percent(1) >= 5.0));
    p.a.exec("migrate 1 10.0.0.2");
    assert!(
        p.run_until(200_000, |p| !p.a.migrated().is_empty()),
        "{}",
        p.a.out
    );
    let on_b = p.b.tasks.borrow().entries()[0].id;
    p.b.exec(&format!("migrate {on_b} 10.0.0.1"));
    assert!(
        p.run_until(200_000, |p| !p.b.migrated().is_empty()),
        "{}",
        p.b.out
    );
    // B keeps the checkpoint it sent; A runs the task at epoch 3 and holds
    // no replica of it.
    let listed = p.b.list();
    assert_eq!(
        (listed.len(), listed[0].role, listed[0].epoch),
        (1, TaskRole::Standby, 3)
    );
    assert_eq!(p.a.list().len(), 1);
    assert!(p.run_until(1_000_000, |p| !p.a.verdicts().is_empty()));
    assert_eq!(p.a.verdicts(), [true]);
    // The word that it ended reaches B, which drops its replica.
    b_dropped(&mut p, global, 3);
    assert!(dropped(&p.a).is_empty());
    let on_a = p.a.tasks.borrow().entries()[0].id;
    assert_eq!(
        p.a.exec(&format!("kill {on_a}")),
        format!("task {on_a} (cg S) killed\r\n")
    );
    assert!(p.a.list().is_empty());
    // Every connection closed: both nodes are back to their listeners.
    assert!(
        p.run_until(100_000, |p| sockets(&p.a) == idle && sockets(&p.b) == idle),
        "{} {}",
        sockets(&p.a),
        sockets(&p.b)
    );
}

#[test]
fn a_migration_compresses_its_chunks_with_the_chosen_codec_and_verifies() {
    for codec in ["lz4", "zstd-3"] {
        let mut p = pair();
        assert_eq!(p.a.exec("codec"), "codec: adaptive\r\n");
        assert_eq!(
            p.a.exec(&format!("codec {codec}")),
            format!("codec: {codec}\r\n")
        );
        p.a.exec("run is S --pause-at 50");
        assert!(p.run_until(200_000, |p| p.a.paused()));
        p.a.exec("migrate 1 10.0.0.2");
        assert!(
            p.run_until(200_000, |p| !p.a.migrated().is_empty()),
            "{}",
            p.a.out
        );
        let report = &p.a.migrated()[0];
        // IS keys are small integers: every codec shrinks them.
        assert_eq!(report.codec, codec);
        assert!(report.ratio_milli > 1500, "{report:?}");
        assert!(report.wire_bytes < report.state_bytes, "{report:?}");
        p.b.exec("cont 1");
        assert!(p.run_until(1_000_000, |p| !p.b.verdicts().is_empty()));
        assert_eq!(p.b.verdicts(), [true]);
    }
}

#[test]
fn the_codec_command_refuses_unknown_codecs() {
    let mut p = pair();
    let answer = p.a.exec("codec gzip");
    assert!(
        answer.contains("usage: codec [adaptive|none|lz4|zstd-1|zstd-3|zstd-9]"),
        "{answer}"
    );
    assert_eq!(p.a.exec("codec"), "codec: adaptive\r\n");
}

#[test]
fn a_paused_task_moves_with_only_its_changed_chunks_after_pre_copy() {
    let mut p = pair();
    p.a.exec("run cg S --pause-at 30");
    assert!(p.run_until(100_000, |p| p.a.paused()));
    p.a.exec("migrate 1 10.0.0.2");
    assert!(
        p.run_until(200_000, |p| !p.a.migrated().is_empty()),
        "{}\n{}",
        p.a.out,
        p.b.out
    );
    // After the first round nothing is left to send (the task is paused):
    // the stop-and-copy follows at once and offers no chunk (the new epoch
    // is in the header, which the offer carries).
    let rounds = p.a.find(|e| match e {
        NodeEvent::PrecopyRound {
            chunks_sent,
            chunks,
            ..
        } => Some((*chunks_sent, *chunks)),
        _ => None,
    });
    assert_eq!(rounds, [(22, 22)]);
    let report = &p.a.migrated()[0];
    assert_eq!((report.stop_copy_chunks, report.chunks), (0, 22));
    assert!(
        matches!(report.stop, StopReason::DowntimeFits { .. }),
        "{report:?}"
    );
    assert_eq!(report.rounds.len(), 2);
    assert_eq!(report.rounds[1].dirty_chunks, 0, "{report:?}");
    assert!(
        report.wire_bytes < report.state_bytes + 20_000,
        "{report:?}"
    );
    assert!(
        p.b.out.contains("task 1 (cg S) resumed at 30."),
        "{}",
        p.b.out
    );
    assert!(p.b.exec("ps").contains("running"));
}

/// Cuts the cable once A has sent the commit (dropping the frames in flight
/// too when `lose_commit`), restores it later: exactly one node ends up
/// with the task.
fn cut_after_commit(lose_commit: bool) {
    let mut p = pair();
    short_timeouts(&mut p);
    p.a.exec("run cg S --pause-at 20");
    assert!(p.run_until(100_000, |p| p.a.paused()));
    p.a.exec("migrate 1 10.0.0.2");
    let in_doubt = |p: &Pair| p.a.control.borrow().migrations.in_doubt();
    if lose_commit {
        assert!(p.run_until(200_000, in_doubt), "{}", p.a.out);
    } else {
        // B resumed the task; its ack is not on the wire yet.
        assert!(p.run_until(200_000, |p| p.b.arrivals() == 1));
        assert!(in_doubt(&p));
    }
    p.cut(lose_commit);
    // Long enough for timeouts and a few reconnection attempts.
    p.run_until(4_000, |_| false);
    assert!(p.a.saw(|e| matches!(e, NodeEvent::MigrationInDoubt { .. })));
    // In doubt the sender neither runs nor drops the task.
    assert!(p.a.exec("ps").contains("migrating"));
    assert_eq!(
        p.a.exec("kill 1"),
        "error: kill: task 1 is migrating; its owner is being decided\r\n"
    );
    assert_eq!(p.b.arrivals(), usize::from(!lose_commit));
    p.mend();
    assert!(
        p.run_until(100_000, |p| !p.a.migrated().is_empty()),
        "{}",
        p.a.out
    );
    assert_eq!(p.a.exec("ps"), "no tasks\r\n");
    assert_eq!(p.b.arrivals(), 1);
    assert!(p.run_until(1_000_000, |p| p.b.verdicts() == [true]));
}

#[test]
fn a_cut_after_the_commit_that_the_receiver_got_ends_with_one_owner() {
    cut_after_commit(false);
}

#[test]
fn a_cut_that_loses_the_commit_ends_with_one_owner() {
    cut_after_commit(true);
}

#[test]
fn a_link_lost_before_the_commit_gives_the_task_back_here() {
    let mut p = pair();
    short_timeouts(&mut p);
    p.a.exec("run cg S --pause-at 40");
    assert!(p.run_until(100_000, |p| p.a.paused()));
    p.a.exec("migrate 1 10.0.0.2");
    assert!(p.run_until(100_000, |p| p
        .a
        .saw(|e| matches!(e, NodeEvent::StopAndCopy { .. }))));
    assert!(p.a.exec("ps").contains("migrating"));
    p.cut(true);
    let failures = |p: &Pair| {
        p.a.find(|e| match e {
            NodeEvent::MigrationFailed { reason, to, .. } => Some((to.clone(), reason.clone())),
            _ => None,
        })
    };
    assert!(
        p.run_until(10_000, |p| failures(p).len() == 1),
        "{}",
        p.a.out
    );
    assert_eq!(failures(&p)[0].0, "10.0.0.2:4470");
    assert!(p
        .a
        .out
        .contains("migrate: task 1 (cg S) -> 10.0.0.2:4470 failed: "));
    // Back in the state it had before the migration.
    let ps = p.a.exec("ps");
    assert!(ps.contains("paused"), "{ps}{}", p.a.out);
    // Nobody at that address: the connection attempt times out.
    p.a.exec("migrate 1 10.0.0.9");
    assert!(p.run_until(10_000, |p| failures(p).len() == 2));
    assert_eq!(failures(&p)[1].1, "no answer from the peer within 1000 ms");
    p.mend();
    p.a.exec("cont 1");
    assert!(p.run_until(1_000_000, |p| p.a.verdicts() == [true]));
    assert_eq!(p.b.arrivals(), 0);
}

#[test]
fn the_stop_and_copy_carries_the_chunks_written_since_the_last_round_only() {
    // Two nodes running scribble tasks: 24 MiB of state, of which each step
    // writes one of four chunks.
    let wire = Arc::new(Mutex::new(Wire::default()));
    let node = |isa, board, end, seed, cidr| {
        let board = FakeBoard::leak_with(isa, board, 256 << 20);
        let catalog = Rc::new(crate::testing::ScribbleCatalog);
        let mut n = Node::with_catalog(board, end, Some(seed), cidr, catalog);
        assert_eq!(n.exec(&format!("key {KEY}")), "key: set\r\n");
        n
    };
    let a = node(
        Isa::X86_64,
        "pc",
        WireEnd::node(wire.clone(), MAC_A),
        1,
        "10.0.0.1/24",
    );
    let b = node(
        Isa::Aarch64,
        "rpi4",
        WireEnd::peer(wire.clone(), MAC_B),
        2,
        "10.0.0.2/24",
    );
    let mut p = Pair { a, b, wire };
    assert_eq!(
        p.a.exec("run scribble 24"),
        "task 1 (scribble 24) started\r\n"
    );
    assert!(p.run_until(100, |p| p.a.list()[0].progress > 100));
    p.a.exec("migrate 1 10.0.0.2");
    assert!(
        p.run_until(2_000_000, |p| !p.a.migrated().is_empty()),
        "{}\n{}",
        p.a.out,
        p.b.out
    );
    let report = &p.a.migrated()[0];
    // The typed state's chunk and 384 of data.
    assert_eq!(report.chunks, 385, "{report:?}");
    let first = &report.rounds[0];
    assert_eq!((first.dirty_chunks, first.chunks_sent), (385, 385));
    // Every later round, the stop-and-copy too, carries at most the working
    // set and the typed state: what changed, not the state.
    let set = crate::testing::SCRIBBLE_SET as u32 + 1;
    for round in &report.rounds[1..] {
        assert!(round.dirty_chunks <= set, "{report:?}");
        assert!(round.chunks_sent <= set, "{report:?}");
    }
    assert!(report.stop_copy_chunks <= set, "{report:?}");
    assert_eq!(report.rounds.len() as u32, report.precopy_rounds + 1);
    assert!(
        report.wire_bytes < report.state_bytes + (1 << 20),
        "{report:?}"
    );
    assert!(p.b.exec("ps").contains("scribble 24"));
}
