//! Two kernels on an in-memory cable, driven by shell commands and by a
//! protocol client: migrations, sync sessions, failover and failback, bad
//! peers. The tests read the nodes' typed events, not their console text.

use super::*;
use crate::testing::{exec, FakeBoard, FakeEntropy, Wire, WireEnd};
use alloc::format;
use alloc::string::String;
use std::sync::{Arc, Mutex};
use tern_hal::Isa;
use tern_migration::Limits;
use tern_protocol::{
    ChannelError, Connection, Event, Incoming, Message, MigrationReport, NackReason, Policy, Psk,
    StopReason, SyncReport, TaskRole, TaskStatus,
};

use crate::net::SharedNet;
use crate::tasks::SharedTasks;
use link::Link;

pub(super) const KEY: &str = "000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f";
const OTHER_KEY: &str = "ff0102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f";
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

    fn with_heap(
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

    fn with_catalog(
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
        server::list(&parts, now)
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
    handle: SocketHandle,
    link: Option<Link>,
    config: Config,
    error: Option<ChannelError>,
    inbox: std::collections::VecDeque<Message>,
}

impl Client {
    pub(super) fn connect(p: &mut Pair, key: &str) -> Self {
        Self::connect_from(p, key, 40000)
    }

    fn connect_from(p: &mut Pair, key: &str, port: u16) -> Self {
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
    fn turn(&mut self, p: &mut Pair) -> Vec<Message> {
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
fn dropped(node: &Node) -> Vec<(u64, u64)> {
    node.find(|e| match e {
        NodeEvent::ReplicaDropped { task_id, epoch, .. } => Some((*task_id, *epoch)),
        _ => None,
    })
}

/// Runs until B drops its replica of `global` at `epoch` on its owner's
/// word, and checks that B holds nothing else.
fn b_dropped(p: &mut Pair, global: u64, epoch: u64) {
    assert!(
        p.run_until(100_000, |p| !dropped(&p.b).is_empty()),
        "{}",
        p.b.out
    );
    assert_eq!(dropped(&p.b), [(global, epoch)]);
    assert!(p.b.list().is_empty());
}

/// TCP sockets a node's control service holds.
fn sockets(node: &Node) -> u32 {
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

/// Starts cg S on A, to pause at `pause_at` percent, and its sync session to B.
fn started_sync(p: &mut Pair, pause_at: u32) -> u64 {
    assert_eq!(
        p.a.exec(&format!("run cg S --pause-at {pause_at}")),
        "task 1 (cg S) started\r\n"
    );
    assert_eq!(
        p.a.exec("sync 1 10.0.0.2"),
        "sync: task 1 (cg S) -> 10.0.0.2:4470: connecting\r\n"
    );
    p.a.first_task_id()
}

/// Percent of a report's progress.
fn percent(done: u64, total: u64) -> f64 {
    done as f64 * 100.0 / total as f64
}

#[test]
fn an_owner_keeps_a_standby_fresh_at_the_policys_interval() {
    let mut p = pair();
    let global = started_sync(&mut p, 95);
    assert!(
        p.run_until(400_000, |p| p.a.synced().len() >= 2),
        "{}",
        p.a.out
    );
    assert!(p.a.saw(|e| matches!(
        e,
        NodeEvent::SyncConnected { peer_isa, peer_board, to, .. }
            if peer_isa == "aarch64" && peer_board == "rpi4" && to == "10.0.0.2:4470"
    )));
    let syncs = p.a.synced();
    assert!(syncs
        .iter()
        .all(|s| s.epoch == 1 && s.policy == "cost-rate"));
    assert!(p.a.out.contains(": sync 1 at "), "{}", p.a.out);
    // The owner lists its task with the policy and the time of the last sync.
    let owner = p.a.list();
    assert_eq!(owner.len(), 1);
    assert_eq!(owner[0].role, TaskRole::Owner);
    assert_eq!(owner[0].policy.as_deref(), Some("cost-rate"));
    assert!(owner[0].last_sync_ms_ago.is_some());
    // The standby holds a leased replica of it.
    let standby = p.b.list();
    assert_eq!(standby.len(), 1);
    assert_eq!(
        (standby[0].task_id, standby[0].role, standby[0].epoch),
        (global, TaskRole::Standby, 1)
    );
    assert_eq!(standby[0].owner, node_id_from_mac(MAC_A));
    assert_eq!(standby[0].policy.as_deref(), Some("cost-rate"));
    // The first sync knows no bandwidth and sends raw chunks, all of them;
    // later ones only those that changed since (none once the task is
    // paused).
    let first = &syncs[0];
    assert_eq!(first.chunks_sent, first.chunks, "{first:?}");
    assert_eq!((first.codec.as_str(), first.ratio_milli), ("none", 1000));
    assert!(first.next_ms > 0);
    assert!(syncs[1].ms > 0);
    // Once the task is paused, a sync finds nothing changed (which sync
    // that is depends on when the policy's interval falls).
    let unchanged = |p: &Pair| p.a.synced().iter().any(|s| s.chunks_sent == 0);
    assert!(p.run_until(400_000, unchanged), "{:?}", p.a.synced());
    let last = p.a.synced().last().cloned().unwrap();
    assert_eq!((last.chunks_sent, last.chunks), (0, 22), "{last:?}");
    let sessions = p.a.exec("sync");
    assert!(
        sessions.contains(&format!("connected, {} syncs, last ", last.number)),
        "{sessions}"
    );
    let leases = p.b.exec("sync");
    assert!(
        leases.starts_with(&format!("standby of task {global:016x} for 10.0.0.1: ")),
        "{leases}"
    );
    assert_eq!(p.b.arrivals(), 0);
    assert!(p.b.exec("ps").contains("no tasks"));
}

#[test]
fn lease_command_and_refusals() {
    let mut p = pair();
    assert_eq!(p.b.exec("sync"), "no sync sessions\r\n");
    assert_eq!(p.b.exec("sync lease"), "sync: lease 3000 ms\r\n");
    assert_eq!(p.b.exec("sync lease 1200"), "sync: lease 1200 ms\r\n");
    assert_eq!(
        p.b.exec("sync lease 0"),
        "error: sync: a lease is a positive number of milliseconds\r\n"
    );
    assert_eq!(p.a.exec("sync 1 10.0.0.2"), "error: sync: no task 1\r\n");
    assert_eq!(
        p.a.exec("sync 1 nowhere"),
        "error: sync: 'nowhere' is not <IPv4 address>[:<port>] nor a node id (12 hex digits)\r\n"
    );
    started_sync(&mut p, 95);
    assert_eq!(
        p.a.exec("sync 1 10.0.0.2"),
        "error: sync: task 1 already has a sync session\r\n"
    );
    assert_eq!(p.a.exec("sync stop 1"), "");
    assert!(p.a.saw(|e| matches!(
        e,
        NodeEvent::SyncEnded { reason, syncs: 0, .. } if reason == "stopped"
    )));
    assert_eq!(
        p.a.exec("sync stop 1"),
        "error: sync: task 1 has no sync session\r\n"
    );
    assert_eq!(p.a.exec("sync"), "no sync sessions\r\n");
}

#[test]
fn a_cut_link_fails_over_to_the_standby_and_back_with_one_owner() {
    let mut p = pair();
    short_timeouts(&mut p);
    p.a.exec("sync lease 1000");
    p.b.exec("sync lease 1000");
    let global = started_sync(&mut p, 40);
    assert!(
        p.run_until(400_000, |p| !p.a.synced().is_empty()),
        "{}",
        p.a.out
    );
    let synced = p.a.synced()[0].progress;
    p.cut(false);
    let failovers = |p: &Pair| {
        p.b.find(|e| match e {
            NodeEvent::FailedOver {
                task,
                owner,
                epoch,
                progress,
                ..
            } => Some((task.task_id, owner.clone(), *epoch, *progress)),
            _ => None,
        })
    };
    assert!(
        p.run_until(400_000, |p| !failovers(p).is_empty()),
        "{}",
        p.b.out
    );
    // Resumed from the last sync at the next epoch: the owner went on to
    // 40 % before the next sync was due, and only that is done again.
    assert_eq!(
        failovers(&p),
        [(global, String::from("10.0.0.1"), 2, synced)]
    );
    let paused_at = p.a.find(|e| match e {
        NodeEvent::TaskPaused {
            progress,
            progress_total,
            ..
        } => Some(percent(*progress, *progress_total)),
        _ => None,
    });
    assert!(paused_at[0] >= 40.0, "{}", p.a.out);
    assert_eq!(p.a.synced().len(), 1, "{}", p.a.out);
    // Hold the new owner's copy at 60 % so it is still running when the
    // link returns.
    p.b.tasks.borrow_mut().get_mut(1).unwrap().pause_at = Some(60.0);
    // Both hold the task while the link is down; the old owner noticed.
    assert!(p.run_until(100_000, |p| p
        .a
        .saw(|e| matches!(e, NodeEvent::SyncLinkLost { .. }))));
    p.mend();
    let stepped_down = |p: &Pair| {
        p.a.find(|e| match e {
            NodeEvent::SteppedDown {
                task,
                winner,
                winner_epoch,
                epoch,
                progress,
                progress_total,
            } => Some((
                task.task_id,
                winner.clone(),
                *winner_epoch,
                *epoch,
                percent(*progress, *progress_total),
            )),
            _ => None,
        })
    };
    assert!(
        p.run_until(400_000, |p| !stepped_down(p).is_empty()),
        "{}\n---\n{}",
        p.a.out,
        p.b.out
    );
    assert_eq!(
        stepped_down(&p),
        [(global, String::from("10.0.0.2"), 2, 1, paused_at[0])]
    );
    assert!(p.a.out.contains("this node is its standby now"));
    assert_eq!(p.a.exec("ps"), "no tasks\r\n");
    // The new owner syncs back: the old one is its leased standby at epoch 2.
    assert!(
        p.run_until(400_000, |p| !p.b.synced().is_empty()),
        "{}\n---\n{}",
        p.a.out,
        p.b.out
    );
    assert_eq!(p.b.synced()[0].epoch, 2);
    let list = p.a.list();
    assert_eq!(list.len(), 1);
    assert_eq!((list[0].epoch, list[0].role), (2, TaskRole::Standby));
    assert_eq!(list[0].policy.as_deref(), Some("cost-rate"));
    assert!(p.a.control.borrow().replicas.leased(global));
    assert!(p.run_until(2_000_000, |p| p.b.paused()));
    assert_eq!(p.b.exec("cont 1"), "task 1 (cg S) continues\r\n");
    assert!(
        p.run_until(2_000_000, |p| !p.b.verdicts().is_empty()),
        "{}",
        p.b.out
    );
    assert_eq!(p.b.verdicts(), [true]);
    // One owner: B; A never ran it again.
    assert!(p.a.verdicts().is_empty());
    assert_eq!(p.a.arrivals(), 0);
    assert_eq!(p.a.exec("ps"), "no tasks\r\n");
    // The new owner's session ends with the task and says so: A drops its
    // replica and its lease.
    assert!(p.run_until(100_000, |p| !dropped(&p.a).is_empty()));
    assert_eq!(dropped(&p.a), [(global, 2)]);
    assert!(p.a.list().is_empty() && !p.a.control.borrow().replicas.leased(global));
}

/// Starts cg S on A paused at 40 %, synced to B (lease 1 s), and waits for
/// a sync; returns the task's global id.
fn synced_and_paused(p: &mut Pair) -> u64 {
    short_timeouts(p);
    p.a.exec("sync lease 1000");
    p.b.exec("sync lease 1000");
    let global = started_sync(p, 40);
    assert!(
        p.run_until(400_000, |p| !p.a.synced().is_empty() && p.a.paused()),
        "{}",
        p.a.out
    );
    assert_eq!(p.b.list()[0].task_id, global);
    global
}

#[test]
fn a_synced_task_that_finishes_leaves_no_replica_on_its_standby() {
    let mut p = pair();
    let global = synced_and_paused(&mut p);
    assert_eq!(p.a.exec("cont 1"), "task 1 (cg S) continues\r\n");
    assert!(p.run_until(2_000_000, |p| !p.a.verdicts().is_empty()));
    assert_eq!(p.a.verdicts(), [true]);
    b_dropped(&mut p, global, 1);
    assert!(p.a.saw(|e| matches!(
        e,
        NodeEvent::SyncEnded { reason, .. } if reason == "the task finished"
    )));
    // Long past the lease: nothing to fail over, the sockets are closed.
    p.run_until(100_000, |_| false);
    assert_eq!(p.b.arrivals(), 0);
    let idle = LISTENERS as u32;
    assert_eq!((sockets(&p.a), sockets(&p.b)), (idle, idle));
}

#[test]
fn a_synced_task_that_is_killed_leaves_no_replica_on_its_standby() {
    let mut p = pair();
    let global = synced_and_paused(&mut p);
    assert_eq!(p.a.exec("kill 1"), "task 1 (cg S) killed\r\n");
    b_dropped(&mut p, global, 1);
    p.run_until(100_000, |_| false);
    assert_eq!(p.b.arrivals(), 0);
}

#[test]
fn a_task_that_finishes_behind_a_cut_link_still_fails_over_to_its_standby() {
    let mut p = pair();
    let global = synced_and_paused(&mut p);
    p.cut(false);
    assert_eq!(p.a.exec("cont 1"), "task 1 (cg S) continues\r\n");
    assert!(p.run_until(2_000_000, |p| !p.a.verdicts().is_empty()));
    // The owner's word is lost with the link: past the lease the standby
    // resumes the task from its replica, as for an owner that died.
    let failed_over = |p: &Pair| {
        p.b.find(|e| match e {
            NodeEvent::FailedOver { task, epoch, .. } => Some((task.task_id, *epoch)),
            _ => None,
        })
    };
    assert!(
        p.run_until(400_000, |p| !failed_over(p).is_empty()),
        "{}",
        p.b.out
    );
    assert_eq!(failed_over(&p), [(global, 2)]);
    assert!(dropped(&p.b).is_empty());
    assert!(p.run_until(2_000_000, |p| !p.b.verdicts().is_empty()));
    assert_eq!(p.b.verdicts(), [true]);
}

#[test]
fn stopping_one_session_ends_only_its_lease() {
    let mut p = pair();
    let first = started_sync(&mut p, 95);
    assert_eq!(
        p.a.exec("run cg S --pause-at 95"),
        "task 2 (cg S) started\r\n"
    );
    p.a.exec("sync 2 10.0.0.2");
    let second = p.a.tasks.borrow().entries()[1].task_id;
    let leased = |p: &Pair, task| p.b.control.borrow().replicas.leased(task);
    let synced_first = |p: &Pair| {
        p.a.saw(|e| matches!(e, NodeEvent::Synced { task, .. } if task.local_id == 1))
    };
    assert!(p.run_until(400_000, |p| leased(p, first)
        && leased(p, second)
        && synced_first(p)));
    p.a.exec("sync stop 1");
    assert!(p.a.saw(|e| matches!(
        e,
        NodeEvent::SyncEnded { task, reason, syncs: 1, .. } if task.local_id == 1 && reason == "stopped"
    )));
    assert!(p.run_until(100_000, |p| !leased(p, first)));
    assert!(leased(&p, second));
    assert_eq!(p.b.arrivals(), 0);
}

#[test]
fn a_sync_never_replaces_a_newer_replica() {
    let mut p = pair();
    started_sync(&mut p, 95);
    assert!(p.run_until(400_000, |p| !p.a.synced().is_empty()));
    let control = p.b.control.borrow();
    let held = control.replicas.replicas().next().unwrap().1.offer.clone();
    let verdict = |offer: &tern_protocol::Offer| control.replicas.verdict(offer, None);
    let stale = replicas::ReplicaVerdict::Refuse(NackReason::StaleEpoch { known: 1 });
    // Same state, more progress or a newer epoch: taken.
    assert_eq!(verdict(&held), replicas::ReplicaVerdict::Accept);
    let more = tern_protocol::Offer {
        progress: held.progress + 1,
        ..held.clone()
    };
    assert_eq!(verdict(&more), replicas::ReplicaVerdict::Accept);
    // Less progress on the same epoch, or an older epoch: refused.
    let less = tern_protocol::Offer {
        progress: held.progress - 1,
        ..held.clone()
    };
    assert_eq!(verdict(&less), stale);
    let older = tern_protocol::Offer {
        epoch: 0,
        progress: held.progress + 10,
        ..held.clone()
    };
    assert_eq!(verdict(&older), stale);
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
