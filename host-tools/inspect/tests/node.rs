//! `inspect --node` against a fake node: a thread with a TCP listener driving
//! `tern_protocol::Connection::server` as the kernel's control service does
//! (list, fetch with a real workload checkpoint, migrate, ping), and the
//! `inspect` binary's file verbs on what `fetch` saved.

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::{Command, Output};
use std::time::Duration;

use tern_client::{key_hex, NodeClient, NodeError};
use tern_migration::{write_checkpoint, HeaderInfo, Mode, Snapshot, Step};
use tern_protocol::{
    Config, Connection, Event, Hello, Message, MigrationReport, NackReason, Outgoing, Psk,
    Security, TaskRole, TaskStatus, TaskSummary, Transfer,
};
use tern_workloads::{Class, Workload};

const KEY: [u8; 32] = [0x5a; 32];
const TASK: u64 = 0x0000_5254_007e_0002_u64 << 8 | 1;
const NODE_ID: u64 = 0x5254_007e_0002;
const TIMEOUT: Duration = Duration::from_secs(20);

/// A real IS class S checkpoint after `steps` steps.
fn checkpoint(steps: usize) -> Vec<u8> {
    let mut task = Workload::Is.start(Class::S);
    for _ in 0..steps {
        assert!(matches!(task.step(), Step::Running));
    }
    let mut snap = Snapshot::new();
    task.save(&mut snap).unwrap();
    let info = HeaderInfo::for_task(&*task, 1, 0, "x86_64", "pc");
    let mut bytes = Vec::new();
    write_checkpoint(&mut bytes, &info, &snap, Mode::Full).unwrap();
    bytes
}

fn summary() -> TaskSummary {
    TaskSummary {
        task_id: TASK,
        kind: "npb-is".into(),
        progress: 3,
        progress_total: 10,
        owner: NODE_ID,
        epoch: 1,
        role: TaskRole::Owner,
        status: TaskStatus::Running,
        last_sync_ms_ago: Some(1500),
        policy: Some("young".into()),
        tag: None,
    }
}

/// Serves connections until the listener's test ends; the node's answers
/// follow the control service's contract in `docs/protocol.md`.
fn fake_node(key: Security, ckpt: Vec<u8>) -> String {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    std::thread::spawn(move || {
        for sock in listener.incoming() {
            let Ok(sock) = sock else { return };
            let (key, ckpt) = (key.clone(), ckpt.clone());
            std::thread::spawn(move || serve(sock, key, ckpt));
        }
    });
    addr
}

fn serve(mut sock: TcpStream, key: Security, ckpt: Vec<u8>) {
    let hello = Hello {
        version: tern_protocol::PROTOCOL_VERSION,
        isa: "x86_64".into(),
        board: "pc".into(),
        node_id: NODE_ID,
        task_kinds: vec!["npb-is".into()],
        insecure: false,
    };
    let mut conn = Connection::server(&Config::new(hello, Some(key)), [9; 32]).unwrap();
    let mut outgoing: Option<Outgoing> = None;
    let mut buf = vec![0u8; 65536];
    loop {
        let n = match sock.read(&mut buf) {
            Ok(0) | Err(_) => return,
            Ok(n) => n,
        };
        // A refused handshake closes the connection, as the kernel does.
        let Ok(events) = conn.receive(&buf[..n]) else {
            return;
        };
        for event in events {
            let Event::Message(msg) = event else { continue };
            let reply = match msg {
                Message::List => vec![Message::Tasks(vec![summary()])],
                Message::Fetch { task_id } if task_id == TASK => {
                    let o = Outgoing::new(Transfer::Copy, TASK, ckpt.clone()).unwrap();
                    let offer = o.offer();
                    outgoing = Some(o);
                    vec![offer]
                }
                Message::Fetch { .. } => vec![Message::Nack(NackReason::UnknownTask)],
                Message::MigrateTo { task_id, to } if task_id == TASK && to == "10.0.2.3:4470" => {
                    vec![Message::Migrated(MigrationReport {
                        task_id,
                        epoch: 2,
                        from_isa: "x86_64".into(),
                        to_isa: "aarch64".into(),
                        state_bytes: ckpt.len() as u64,
                        wire_bytes: ckpt.len() as u64 + 900,
                        precopy_rounds: 2,
                        total_ms: 420,
                        downtime_ms: 35,
                        chunks: 4,
                        stop_copy_chunks: 2,
                        codec: "lz4".into(),
                        ratio_milli: 1500,
                    })]
                }
                Message::MigrateTo { .. } => vec![Message::Nack(NackReason::MigrationFailed)],
                Message::Ping { nonce } => vec![Message::Pong { nonce }],
                other => {
                    let o = outgoing.as_mut().unwrap();
                    o.on_message(other).unwrap();
                    std::iter::from_fn(|| o.poll_send()).collect()
                }
            };
            for m in reply {
                conn.send(&m).unwrap();
            }
        }
        if sock.write_all(&conn.take_output()).is_err() {
            return;
        }
    }
}

fn keyed() -> Security {
    Security::Key(Psk(KEY))
}

fn inspect(args: &[&str], env_key: Option<&str>) -> Output {
    let mut command = Command::new(env!("CARGO_BIN_EXE_inspect"));
    command.args(args).env_remove("TERN_KEY");
    if let Some(key) = env_key {
        command.env("TERN_KEY", key);
    }
    command.output().unwrap()
}

fn tempdir(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("tern-inspect-node-{name}-{}", std::process::id()));
    std::fs::create_dir_all(&d).unwrap();
    d
}

#[test]
fn list_shows_the_nodes_tasks_as_a_table_and_json() {
    let addr = fake_node(keyed(), checkpoint(1));
    let mut client = NodeClient::connect(&addr, keyed(), TIMEOUT).unwrap();
    assert_eq!(client.peer().node_id, NODE_ID);
    assert_eq!(client.list().unwrap(), vec![summary()]);
    assert!(client.ping().unwrap() < TIMEOUT);

    let key = key_hex(&Psk(KEY));
    let out = inspect(&["--node", &addr, "list"], Some(&key));
    assert!(out.status.success(), "{out:?}");
    let text = String::from_utf8_lossy(&out.stdout);
    let row = text.lines().nth(1).unwrap();
    for field in [
        &format!("{TASK:#x}")[..],
        "npb-is",
        "30.0%",
        "owner",
        "running",
        "1500 ms",
        "young",
    ] {
        assert!(row.contains(field), "{field} missing from {row:?}");
    }

    let out = inspect(&["--node", &addr, "list", "--json"], Some(&key));
    let json: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(json[0]["task_id"], TASK);
    assert_eq!(json[0]["role"], "owner");
    assert_eq!(json[0]["status"], "running");
    assert_eq!(json[0]["percent"], 30.0);
    assert_eq!(json[0]["owner"], NODE_ID);
}

#[test]
fn fetch_saves_a_checkpoint_that_show_and_verify_accept() {
    let ckpt = checkpoint(3);
    let addr = fake_node(keyed(), ckpt.clone());
    let dir = tempdir("fetch");
    let key_file = dir.join("key");
    std::fs::write(&key_file, key_hex(&Psk(KEY))).unwrap();
    let file = dir.join("is.tckpt");
    let out = inspect(
        &[
            "--node",
            &addr,
            "--key-file",
            key_file.to_str().unwrap(),
            "fetch",
            &TASK.to_string(),
            "-o",
            file.to_str().unwrap(),
        ],
        None,
    );
    assert!(out.status.success(), "{out:?}");
    assert_eq!(std::fs::read(&file).unwrap(), ckpt);
    // No temporary is left next to it.
    assert_eq!(std::fs::read_dir(&dir).unwrap().count(), 2);
    let verify = inspect(&["verify", file.to_str().unwrap()], None);
    assert!(verify.status.success(), "{verify:?}");
    let show = inspect(&["show", file.to_str().unwrap()], None);
    assert!(String::from_utf8_lossy(&show.stdout).contains("npb-is"));

    // An unknown task is the node's typed refusal, and no file is written.
    let mut client = NodeClient::connect(&addr, keyed(), TIMEOUT).unwrap();
    assert!(matches!(
        client.fetch(TASK + 1),
        Err(NodeError::Refused {
            reason: NackReason::UnknownTask,
            ..
        })
    ));
    let missing = dir.join("missing.tckpt");
    let out = inspect(
        &[
            "--node",
            &addr,
            "fetch",
            "7",
            "-o",
            missing.to_str().unwrap(),
        ],
        Some(&key_hex(&Psk(KEY))),
    );
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("no such task"));
    assert!(!missing.exists());
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn migrate_prints_the_report_or_the_refusal() {
    let addr = fake_node(keyed(), checkpoint(1));
    let key = key_hex(&Psk(KEY));
    let out = inspect(
        &[
            "--node",
            &addr,
            "migrate",
            &format!("{TASK:#x}"),
            "--to",
            "10.0.2.3:4470",
            "--json",
        ],
        Some(&key),
    );
    assert!(out.status.success(), "{out:?}");
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(report["from_isa"], "x86_64");
    assert_eq!(report["to_isa"], "aarch64");
    assert_eq!(report["downtime_ms"], 35);

    let out = inspect(
        &[
            "--node",
            &addr,
            "migrate",
            &TASK.to_string(),
            "--to",
            "10.0.2.3:4470",
        ],
        Some(&key),
    );
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("x86_64 -> aarch64"), "{text}");
    assert!(text.contains("downtime  35 ms"), "{text}");

    let mut client = NodeClient::connect(&addr, keyed(), TIMEOUT).unwrap();
    assert!(matches!(
        client.migrate(TASK, "10.0.2.9:4470", TIMEOUT),
        Err(NodeError::Refused {
            reason: NackReason::MigrationFailed,
            ..
        })
    ));
}

#[test]
fn wrong_key_missing_key_and_mode_mismatch_are_clear_errors() {
    let addr = fake_node(keyed(), checkpoint(1));
    let wrong = Security::Key(Psk([0x11; 32]));
    assert!(matches!(
        NodeClient::connect(&addr, wrong, TIMEOUT),
        Err(NodeError::WrongKey { .. })
    ));
    let out = inspect(&["--node", &addr, "list"], Some(&"11".repeat(32)));
    assert_eq!(out.status.code(), Some(2));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("authentication failed: wrong key?"),
        "{out:?}"
    );

    // The keyed node drops an insecure client at its hello.
    assert!(matches!(
        NodeClient::connect(&addr, Security::ExplicitlyInsecure, TIMEOUT),
        Err(NodeError::HandshakeRefused { .. })
    ));
    let out = inspect(&["--node", &addr, "--insecure", "list"], None);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("warning: --insecure"), "{err}");
    assert!(
        err.contains("closed the connection during the handshake"),
        "{err}"
    );

    let out = inspect(&["--node", &addr, "list"], None);
    assert!(String::from_utf8_lossy(&out.stderr).contains("no key: pass --key-file"));
    let out = inspect(&["--node", &addr, "list"], Some("xyz"));
    assert!(String::from_utf8_lossy(&out.stderr).contains("64 hex digits"));
    let out = inspect(&["list"], Some(&"11".repeat(32)));
    assert!(String::from_utf8_lossy(&out.stderr).contains("pass --node"));
}

#[test]
fn refused_connections_and_silent_nodes_are_typed_errors() {
    // A port nobody listens on.
    let port = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let closed = format!("127.0.0.1:{port}");
    assert!(matches!(
        NodeClient::connect(&closed, keyed(), TIMEOUT),
        Err(NodeError::Connect { .. })
    ));
    // A listener that accepts and never answers.
    let silent = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = silent.local_addr().unwrap().to_string();
    assert!(matches!(
        NodeClient::connect(&addr, keyed(), Duration::from_millis(300)),
        Err(NodeError::Timeout { .. })
    ));
    drop(silent);
}
