//! Wasm tasks between two kernels on the in-memory cable: modules uploaded
//! by a client and pushed by a node before a migration or a sync, typed
//! refusals of bad modules, a checkpoint whose module the receiver lacks,
//! a step that never ends.

use super::tests::{pair, short_timeouts, Client, Pair, KEY};
use super::*;
use alloc::format;
use alloc::string::String;
use tern_protocol::{Message, ModuleRefusal, NackReason, Outgoing, Transfer};
use tern_wasm::fixtures::{counter, expected_sum};
use tern_wasm::module::hex;

/// The counter fixture with `extra` in its step.
fn module(extra: &str) -> Vec<u8> {
    wat::parse_str(counter(extra)).unwrap()
}

/// Sends `bytes` to node B as a module upload; B's answer.
fn upload(client: &mut Client, p: &mut Pair, bytes: &[u8]) -> Message {
    for part in tern_protocol::module::parts(bytes) {
        client.send(&part);
    }
    client.next(p, 200_000)
}

/// Uploads `bytes` to node B; the identity B stored the module under.
fn store(client: &mut Client, p: &mut Pair, bytes: &[u8]) -> [u8; 32] {
    match upload(client, p, bytes) {
        Message::ModuleStored { module } => module,
        other => panic!("not stored: {other:?}"),
    }
}

/// A client of node B that uploaded `bytes` there; the module's identity.
fn client_with_module(p: &mut Pair, bytes: &[u8]) -> (Client, [u8; 32]) {
    let mut client = Client::connect(p, KEY);
    assert!(client.establish(p));
    let id = store(&mut client, p, bytes);
    (client, id)
}

/// Migrates B's task 1 to A and runs until A has it.
fn migrate_b_to_a(p: &mut Pair) {
    assert!(p.b.exec("migrate 1 10.0.0.1").contains("connecting"));
    assert!(
        p.run_until(400_000, |p| p.a.arrivals() == 1),
        "{}\n{}",
        p.a.out,
        p.b.out
    );
}

/// The modules a node was given, by event.
fn added(node: &super::tests::Node) -> Vec<[u8; 32]> {
    node.find(|e| match e {
        NodeEvent::ModuleAdded { module, .. } => Some(*module),
        _ => None,
    })
}

/// `run` arguments of the counter over `n` with its expected sum.
fn run_line(id: &[u8; 32], n: u64, more: &str) -> String {
    format!(
        "run wasm {} --name counter --expect {} {n}{more}",
        hex(id),
        hex(&expected_sum(n))
    )
}

#[test]
fn a_wasm_task_migrates_with_its_module_both_ways_and_verifies() {
    let mut p = pair();
    let (mut client, id) = client_with_module(&mut p, &module(""));
    assert_eq!(added(&p.b), [id]);
    assert_eq!(
        client.ask(&mut p, &Message::ModuleQuery { module: id }),
        Message::ModuleHeld {
            module: id,
            held: true
        }
    );
    let n = 300_000;
    let started = p.b.exec(&run_line(&id, n, " --pause-at 30"));
    assert_eq!(started, "task 1 (counter) started\r\n");
    assert!(p.run_until(400_000, |p| p.b.paused()), "{}", p.b.out);
    migrate_b_to_a(&mut p);
    // B pushed the module A lacked, then the checkpoint.
    assert_eq!(added(&p.a), [id]);
    let local = p.a.tasks.borrow().entries()[0].id;
    assert!(p
        .a
        .exec(&format!("migrate {local} 10.0.0.2"))
        .contains("connecting"));
    assert!(
        p.run_until(400_000, |p| p.b.arrivals() == 1),
        "{}\n{}",
        p.a.out,
        p.b.out
    );
    // B held it: nothing sent again.
    assert_eq!(added(&p.b), [id]);
    assert!(
        p.run_until(2_000_000, |p| !p.b.verdicts().is_empty()),
        "{}",
        p.b.out
    );
    assert_eq!(p.b.verdicts(), [true], "{}", p.b.out);
    assert_eq!(p.a.migrated().len(), 1);
    assert_eq!(p.b.migrated().len(), 1);
    // The task's log line became an event where init ran.
    assert!(p
        .b
        .saw(|e| matches!(e, NodeEvent::TaskLog { line, .. } if line == "started")));
}

#[test]
fn bad_modules_get_typed_refusals_and_the_node_keeps_serving() {
    let mut p = pair();
    let mut client = Client::connect(&mut p, KEY);
    assert!(client.establish(&mut p));
    let reason = |m: Message| match m {
        Message::ModuleRejected { reason, .. } => reason,
        other => panic!("{other:?}"),
    };
    assert_eq!(
        reason(upload(&mut client, &mut p, b"\0asm garbage")),
        ModuleRefusal::Malformed
    );
    let import = counter("").replace(r#"(import "tern" "log""#, r#"(import "env" "time""#);
    assert_eq!(
        reason(upload(
            &mut client,
            &mut p,
            &wat::parse_str(&import).unwrap()
        )),
        ModuleRefusal::UnknownImport
    );
    let start = counter("").replace(
        "(memory (export",
        "(start $log_start) (func $log_start) (memory (export",
    );
    assert_eq!(
        reason(upload(
            &mut client,
            &mut p,
            &wat::parse_str(&start).unwrap()
        )),
        ModuleRefusal::StartFunction
    );
    // A part that does not start the module.
    client.send(&Message::ModulePart {
        offset: 8,
        total_len: 16,
        bytes: alloc::vec![0; 8],
    });
    assert_eq!(
        reason(client.next(&mut p, 200_000)),
        ModuleRefusal::Malformed
    );
    let refused = p.b.find(|e| match e {
        NodeEvent::ModuleRefused { reason, .. } => Some(*reason),
        _ => None,
    });
    assert_eq!(refused.len(), 4);
    assert!(added(&p.b).is_empty());
    assert_eq!(
        client.ask(&mut p, &Message::ModuleQuery { module: [9; 32] }),
        Message::ModuleHeld {
            module: [9; 32],
            held: false
        }
    );
    assert!(matches!(
        client.request(&mut p, &Message::List),
        Message::Tasks(t) if t.is_empty()
    ));
}

#[test]
fn a_checkpoint_naming_a_module_the_receiver_lacks_is_refused_with_its_id() {
    let mut p = pair();
    let id =
        p.a.tasks
            .borrow()
            .catalog()
            .add_module(&module(""))
            .unwrap();
    p.a.exec(&run_line(&id, 100_000, " --pause-at 10"));
    assert!(p.run_until(400_000, |p| p.a.paused()), "{}", p.a.out);
    let facts = p.a.kernel.board().facts();
    let (task_id, bytes) = {
        let tasks = p.a.tasks.borrow();
        let e = &tasks.entries()[0];
        (e.task_id, e.checkpoint_file(2, &facts).unwrap())
    };
    let mut outgoing = Outgoing::from_file(Transfer::Migrate, task_id, &bytes).unwrap();
    let mut client = Client::connect(&mut p, KEY);
    assert!(client.establish(&mut p));
    let need = client.ask(&mut p, &outgoing.offer());
    outgoing.on_message(need).unwrap();
    let commit = loop {
        let msg = outgoing.poll_send().unwrap();
        if matches!(msg, Message::Commit { .. }) {
            break msg;
        }
        client.send(&msg);
    };
    assert_eq!(
        client.ask(&mut p, &commit),
        Message::Nack(NackReason::MissingModule { module: id })
    );
    assert!(p.b.saw(|e| matches!(e, NodeEvent::CheckpointRefused { reason, .. } if reason.contains("not held here"))));
    assert!(p.b.tasks.borrow().entries().is_empty());
}

#[test]
fn a_step_that_never_ends_keeps_the_node_serving_and_is_never_migrated() {
    let mut p = pair();
    short_timeouts(&mut p);
    let (mut client, id) = client_with_module(&mut p, &module("(loop $forever (br $forever))"));
    p.b.exec(&format!("run wasm {} 10", hex(&id)));
    p.run_until(50, |_| false);
    assert!(!p.b.tasks.borrow().entries()[0].at_migration_point());
    // The run loop turns: the node answers while the task spins.
    assert!(matches!(
        client.request(&mut p, &Message::Ping { nonce: 5 }),
        Message::Pong { nonce: 5 }
    ));
    assert!(matches!(
        client.request(&mut p, &Message::List),
        Message::Tasks(t) if t.len() == 1
    ));
    assert!(p.b.exec("migrate 1 10.0.0.1").contains("connecting"));
    let failed = |p: &Pair| {
        p.b.find(|e| match e {
            NodeEvent::MigrationFailed { reason, .. } => Some(reason.clone()),
            _ => None,
        })
    };
    assert!(
        p.run_until(400_000, |p| !failed(p).is_empty()),
        "{}",
        p.b.out
    );
    assert!(
        failed(&p)[0].contains("no migration point"),
        "{:?}",
        failed(&p)
    );
    assert!(p.b.exec("ps").contains("running"));
    assert_eq!(p.a.arrivals(), 0);
    assert_eq!(
        p.b.exec("kill 1"),
        "task 1 (wasm ".to_string() + &hex(&id)[..16] + ") killed\r\n"
    );
}

#[test]
fn a_standby_of_a_wasm_task_gets_its_module_and_takes_over_after_a_cut() {
    let mut p = pair();
    short_timeouts(&mut p);
    p.a.exec("sync lease 1000");
    p.b.exec("sync lease 1000");
    let id =
        p.a.tasks
            .borrow()
            .catalog()
            .add_module(&module(""))
            .unwrap();
    let n = 400_000;
    p.a.exec(&run_line(&id, n, " --pause-at 40"));
    assert!(p.a.exec("sync 1 10.0.0.2").contains("connecting"));
    assert!(
        p.run_until(400_000, |p| !p.a.synced().is_empty()),
        "{}\n{}",
        p.a.out,
        p.b.out
    );
    assert_eq!(added(&p.b), [id]);
    p.cut(false);
    assert!(p.run_until(400_000, |p| p.b.arrivals() == 1), "{}", p.b.out);
    assert!(
        p.run_until(2_000_000, |p| !p.b.verdicts().is_empty()),
        "{}",
        p.b.out
    );
    assert_eq!(p.b.verdicts(), [true], "{}", p.b.out);
}

/// A module whose step needs about five of the test nodes' fuel budgets.
fn slow_module() -> Vec<u8> {
    module(
        "(local.set $i (i64.const 0))
      (block $b (loop $l
        (br_if $b (i64.ge_u (local.get $i) (i64.const 150000)))
        (local.set $i (i64.add (local.get $i) (i64.const 1)))
        (br $l)))",
    )
}

#[test]
fn a_capture_holds_a_long_step_at_its_migration_point_for_a_turn() {
    let mut p = pair();
    let (_client, id) = client_with_module(&mut p, &slow_module());
    assert!(p.b.exec(&run_line(&id, 20_000, "")).contains("started"));
    let ready = |p: &Pair| {
        p.b.tasks
            .borrow_mut()
            .get_mut(1)
            .unwrap()
            .ready_for_capture()
    };
    // The capture asks while a step runs: the runner is told to hold it.
    assert!(p.run_until(100, |p| !ready(p)));
    let mut runner = crate::tasks::TaskRunner::new(p.b.tasks.clone(), p.b.kernel.board().clock());
    let mut events = crate::events::EventLog::new();
    let mut poll = |deadline_ns| {
        runner.poll(&mut Turn {
            now_ns: 0,
            deadline_ns,
            events: &mut events,
        })
    };
    // With all the time in the world the runner ends that step and stops
    // there (it would otherwise run the task to its end).
    poll(u64::MAX);
    let at_point = |p: &Pair| p.b.tasks.borrow().entries()[0].at_migration_point();
    assert!(at_point(&p));
    assert_eq!(
        p.b.tasks.borrow().entries()[0].state,
        crate::tasks::TaskState::Running
    );
    assert!(p.b.percent(1) < 100.0);
    // A turn later the hold is gone, captured or not: the next step begins.
    poll(0);
    assert!(!at_point(&p));
}

#[test]
fn a_task_whose_steps_outlast_a_turn_migrates_and_verifies() {
    let mut p = pair();
    short_timeouts(&mut p);
    let (_client, id) = client_with_module(&mut p, &slow_module());
    let n = 200_000;
    assert!(p.b.exec(&run_line(&id, n, "")).contains("started"));
    migrate_b_to_a(&mut p);
    assert!(
        p.run_until(4_000_000, |p| !p.a.verdicts().is_empty()),
        "{}",
        p.a.out
    );
    assert_eq!(p.a.verdicts(), [true], "{}", p.a.out);
}
