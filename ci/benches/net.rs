//! Network benchmark, in one run on one lab (`tern_lab::netlab`, needs root):
//!
//! 1. TCP throughput into each node's sink (port 4472, reads and discards)
//!    from a Linux host on the lab's bridge, against the same Rust sender
//!    and a Rust receiver in a second Linux host on the same bridge;
//! 2. four migrations PC → virt → PC → virt → PC of a running CG class A
//!    task (a state of megabytes), from 5% of its run on (its matrix
//!    assembled): total time against the
//!    wire-time bound (state bytes ÷ the throughput measured into the
//!    receiving node in step 1), total time against the wire bytes' time
//!    at that rate, downtime against total time, and each report's stop
//!    reason, stage times and rounds (dirty and sent chunks), and each
//!    round's timeline from the sender's events (offer, the receiver's
//!    answer, last chunk queued, everything acknowledged, ack; the sender's
//!    turns and the time its task ran meanwhile).
//!
//! Between the two, each node's sending side: 8 MiB read from its source
//! port (4473) by a Linux reader on the bridge, against Linux → Linux.
//!
//! Run with `cargo bench -p tern-ci --bench net` (optionally `-- ROUNDS` of
//! throughput samples, default 3, and `--receive-only` to stop after the
//! samples into the nodes, for a profile of the receive path with
//! `ci/profile-qemu.sh`). Medians; every sample is printed.

use std::io::{Read, Write};
use std::net::{Shutdown, SocketAddr};
use std::thread;
use std::time::{Duration, Instant};

use tern_client::random_key;
use tern_flash::Board;
use tern_lab::cluster::Cluster;
use tern_lab::netlab::Netns;
use tern_protocol::{MigrationReport, NodeEvent, Security, TaskRole, TaskStatus};

/// Bytes sent per throughput sample.
const SAMPLE_BYTES: usize = 8 << 20;

/// Migrations measured (alternating PC → virt, virt → PC).
const MIGRATIONS: usize = 4;

/// The node's sink port.
const SINK_PORT: u16 = 4472;

/// The node's source port (sends zeros until the client closes).
const SOURCE_PORT: u16 = 4473;

/// The Linux receiver's port.
const LINUX_PORT: u16 = 5001;

/// The round timelines node `node` published for task `task_id` after
/// event `after`, as lines to print, and the last event's sequence number.
fn round_timelines(cluster: &Cluster, node: usize, task_id: u64, after: u64) -> (Vec<String>, u64) {
    let mut client = cluster
        .client(node, Duration::from_secs(20))
        .expect("control connection");
    client.subscribe(after).expect("subscription");
    let (mut lines, mut last) = (Vec::new(), after);
    // The first batch holds every kept event: read until the node is quiet.
    while let Ok(record) = client.next_event(Duration::from_millis(500)) {
        last = record.seq;
        if let NodeEvent::RoundTimeline {
            task,
            round,
            stop_and_copy,
            timeline: t,
        } = record.event
        {
            if task.task_id == task_id {
                let ms = |us: u64| us as f64 / 1e3;
                lines.push(format!(
                    "round {round}{}: offer {:.1}, need {:.1}, queued {:.1}, drained {:.1}, ack {:.1} ms; {} turns, tasks ran {:.1} ms",
                    if stop_and_copy { " (stop-and-copy)" } else { "" },
                    ms(t.offered_us),
                    ms(t.need_us),
                    ms(t.queued_us),
                    ms(t.drained_us),
                    ms(t.acked_us),
                    t.turns,
                    ms(t.tasks_us),
                ));
            }
        }
    }
    (lines, last)
}

/// Milliseconds node `node` has spent in its network stack since boot, and
/// the part of them in polls that moved nothing (its `net` command's "stack
/// time" line).
fn stack_ms(cluster: &mut Cluster, node: usize) -> [f64; 2] {
    let net = cluster.shell(node, "net").expect("net command");
    let numbers: Vec<f64> = net
        .lines()
        .find_map(|line| line.strip_prefix("stack time "))
        .map(|rest| {
            rest.split_whitespace()
                .filter_map(|word| word.parse().ok())
                .collect()
        })
        .unwrap_or_default();
    match numbers[..] {
        [total, empty] => [total, empty],
        _ => panic!("no stack time in {net:?}"),
    }
}

/// Sends `SAMPLE_BYTES` to `addr` from namespace `from`, half-closes, and
/// waits for the receiver to close: the time until then is the transfer's.
/// Returns MB/s (10^6 bytes per second).
fn throughput(from: &Netns, addr: SocketAddr) -> f64 {
    let mut sock = from
        .connect(addr, Duration::from_secs(10))
        .expect("connect to the receiver");
    sock.set_read_timeout(Some(Duration::from_secs(120)))
        .unwrap();
    let block = vec![0x5au8; 64 * 1024];
    let start = Instant::now();
    let mut sent = 0;
    while sent < SAMPLE_BYTES {
        sock.write_all(&block).expect("send");
        sent += block.len();
    }
    sock.shutdown(Shutdown::Write).unwrap();
    // The receiver closes once it has read everything.
    let mut rest = [0u8; 16];
    while sock.read(&mut rest).expect("receiver's close") > 0 {}
    sent as f64 / start.elapsed().as_secs_f64() / 1e6
}

/// A Rust receiver in namespace `ns`: reads and discards each connection
/// to its end, then closes, like the node's sink.
/// Reads `SAMPLE_BYTES` from the node's source port at `addr` in namespace
/// `into`, then closes: MB/s from the connection's start to the last byte.
fn download(into: &Netns, addr: SocketAddr) -> f64 {
    let mut sock = into
        .connect(addr, Duration::from_secs(10))
        .expect("connect to the source");
    sock.set_read_timeout(Some(Duration::from_secs(120)))
        .unwrap();
    let mut buf = vec![0u8; 256 * 1024];
    let start = Instant::now();
    let mut got = 0;
    while got < SAMPLE_BYTES {
        let n = sock.read(&mut buf).expect("read from the source");
        assert!(n > 0, "the source closed after {got} bytes");
        got += n;
    }
    let elapsed = start.elapsed();
    drop(sock);
    got as f64 / elapsed.as_secs_f64() / 1e6
}

fn linux_receiver(ns: &Netns, addr: SocketAddr) {
    let listener = ns.listen(addr).expect("listen");
    thread::spawn(move || {
        for conn in listener.incoming() {
            let Ok(mut conn) = conn else { return };
            let mut buf = vec![0u8; 256 * 1024];
            while conn.read(&mut buf).is_ok_and(|n| n > 0) {}
        }
    });
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

fn main() {
    let rounds: usize = std::env::args()
        .skip(1)
        .find_map(|a| a.parse().ok())
        .unwrap_or(3);
    let receive_only = std::env::args().any(|a| a == "--receive-only");
    let key = random_key().expect("OS random generator");
    let mut cluster = Cluster::start("bench", &[Board::Pc, Board::Virt], Security::Key(key))
        .expect("nodes boot on the lab");
    for host in [100u8, 101] {
        cluster
            .lab_mut()
            .add_linux_host(host)
            .expect("Linux host on the bridge");
    }
    let stack_before = [stack_ms(&mut cluster, 0), stack_ms(&mut cluster, 1)];
    let sender = cluster.lab().linux_host(100).expect("sender namespace");
    let receiver_ns = cluster.lab().linux_host(101).expect("receiver namespace");
    let linux_addr: SocketAddr = ([10, 0, 2, 101], LINUX_PORT).into();
    linux_receiver(receiver_ns, linux_addr);

    println!(
        "TCP throughput, {} MiB per sample, MB/s:",
        SAMPLE_BYTES >> 20
    );
    println!(
        "{:<6} {:>14} {:>14} {:>14}",
        "round", "linux->linux", "linux->pc", "linux->virt"
    );
    let (mut linux, mut pc, mut virt) = (Vec::new(), Vec::new(), Vec::new());
    for round in 0..rounds {
        linux.push(throughput(sender, linux_addr));
        pc.push(throughput(
            sender,
            SocketAddr::new(Cluster::address(0).into(), SINK_PORT),
        ));
        virt.push(throughput(
            sender,
            SocketAddr::new(Cluster::address(1).into(), SINK_PORT),
        ));
        println!(
            "{round:<6} {:>14.1} {:>14.1} {:>14.1}",
            linux[round], pc[round], virt[round]
        );
    }
    // Where the receive time goes: the nodes' time inside their network
    // stack (driver, smoltcp, the sink's reads) against the samples' wall
    // time, and the part of it that moved frames. Working time near the wall
    // time: the stack's work bounds the stream; polls that find nothing:
    // the node waits for frames.
    for (node, name, rates) in [(0, "pc", &pc), (1, "virt", &virt)] {
        let wall_ms: f64 = rates
            .iter()
            .map(|mbps| SAMPLE_BYTES as f64 / (mbps * 1e3))
            .sum();
        let [total, empty] = stack_ms(&mut cluster, node);
        let stack = total - stack_before[node][0];
        let empty = empty - stack_before[node][1];
        println!(
            "{name}: {stack:.0} ms in the network stack during {wall_ms:.0} ms of samples ({:.2}), \
             {empty:.0} ms of it in polls that moved nothing ({:.2} working)",
            stack / wall_ms,
            (stack - empty) / wall_ms
        );
    }
    let (linux, pc, virt) = (median(linux), median(pc), median(virt));
    println!(
        "median {linux:>14.1} {pc:>14.1} {virt:>14.1}   (node / Linux: pc {:.3}, virt {:.3})",
        pc / linux,
        virt / linux
    );

    // Where the receive time goes: frames per byte (large receive merges a
    // stream's segments into frames of up to 64 KiB).
    for (node, name) in [(0, "pc"), (1, "virt")] {
        let net = cluster.shell(node, "net").expect("net command");
        if let Some(rx) = net.lines().find(|l| l.starts_with("rx ")) {
            let frames = rx
                .split_whitespace()
                .nth(1)
                .and_then(|n| n.parse::<f64>().ok());
            let bytes = rx
                .split_whitespace()
                .nth(3)
                .and_then(|n| n.parse::<f64>().ok());
            let mean = frames.zip(bytes).map_or(0.0, |(f, b)| b / f.max(1.0));
            println!("{name}: {rx} (mean {mean:.0} bytes per frame)");
        }
    }
    if receive_only {
        return;
    }

    // The nodes' sending side: each node's source port into a Linux reader.
    let sender = cluster.lab().linux_host(100).expect("sender namespace");
    println!("{:<6} {:>14} {:>14}", "round", "pc->linux", "virt->linux");
    let (mut pc_out, mut virt_out) = (Vec::new(), Vec::new());
    for round in 0..rounds {
        for (node, samples) in [(0, &mut pc_out), (1, &mut virt_out)] {
            samples.push(download(
                sender,
                SocketAddr::new(Cluster::address(node).into(), SOURCE_PORT),
            ));
        }
        println!(
            "{round:<6} {:>14.1} {:>14.1}",
            pc_out[round], virt_out[round]
        );
    }
    let (pc_out, virt_out) = (median(pc_out), median(virt_out));
    println!(
        "median {pc_out:>14.1} {virt_out:>14.1}   (node sending / Linux -> Linux: pc {:.3}, virt {:.3})",
        pc_out / linux,
        virt_out / linux
    );

    // Migrations of one running task, back and forth, once it has assembled
    // its matrix and iterates (5% of its steps): during the assembly every
    // round rewrites most of the state, which measures the assembly.
    cluster.shell(0, "run cg A").expect("task starts");
    let task = cluster
        .wait_for_task(
            0,
            "the task iterating",
            Duration::from_secs(300),
            Duration::from_millis(300),
            |t| {
                t.iter()
                    .find(|t| t.role == TaskRole::Owner && t.progress * 20 >= t.progress_total)
                    .cloned()
            },
        )
        .expect("task listed");
    println!("\nmigrations of cg A (bound = state bytes / throughput into the receiver):");
    println!(
        "{:<18} {:>12} {:>12} {:>10} {:>10} {:>12} {:>10} {:>12}",
        "direction",
        "state bytes",
        "wire bytes",
        "total ms",
        "bound ms",
        "total/bound",
        "total/wire",
        "downtime ms"
    );
    let mut ratios = Vec::new();
    let mut downtime_share = Vec::new();
    let mut owner = 0;
    let mut seen = [0u64; 2];
    for _ in 0..MIGRATIONS {
        let to = 1 - owner;
        seen[owner] = round_timelines(&cluster, owner, task.task_id, seen[owner]).1;
        let report: MigrationReport =
            match cluster
                .client(owner, Duration::from_secs(20))
                .and_then(|mut c| {
                    Ok(c.migrate(
                        task.task_id,
                        &Cluster::control(to).to_string(),
                        Duration::from_secs(300),
                    )?)
                }) {
                Ok(report) => report,
                Err(e) => {
                    // A failed migration is a result too: report it with the
                    // nodes' own account, and stop (the owner did not change).
                    println!(
                        "migration from node {owner} failed: {e}\n{}",
                        cluster.consoles()
                    );
                    break;
                }
            };
        let mbps = if to == 0 { pc } else { virt };
        let bound_ms = report.state_bytes as f64 / (mbps * 1e6) * 1e3;
        let ratio = report.total_ms as f64 / bound_ms;
        // Against the time the bytes actually sent would take at that rate.
        let wire_ratio = report.total_ms as f64 / (report.wire_bytes as f64 / (mbps * 1e3));
        ratios.push(ratio);
        downtime_share.push(report.downtime_ms as f64 / report.total_ms.max(1) as f64);
        println!(
            "{:<18} {:>12} {:>12} {:>10} {:>10.1} {:>12.2} {:>10.2} {:>12}",
            format!("{} -> {}", report.from_isa, report.to_isa),
            report.state_bytes,
            report.wire_bytes,
            report.total_ms,
            bound_ms,
            ratio,
            wire_ratio,
            report.downtime_ms
        );
        // Where the time went, and what each round carried.
        println!("    {}", tern_ci::migration_stages(&report));
        for r in &report.rounds {
            println!(
                "    round {}: {} chunks ({} B) dirty, {} sent, {} B on the wire, {} ms",
                r.round, r.dirty_chunks, r.dirty_bytes, r.chunks_sent, r.wire_bytes, r.ms
            );
        }
        let (timelines, last) = round_timelines(&cluster, owner, task.task_id, seen[owner]);
        seen[owner] = last;
        for line in timelines {
            println!("    {line}");
        }
        owner = to;
        // The task keeps running on its new owner.
        let listed = cluster
            .wait_for_task(
                owner,
                "the migrated task",
                Duration::from_secs(30),
                Duration::from_millis(300),
                |t| {
                    t.iter()
                        .find(|t| t.task_id == task.task_id && t.role == TaskRole::Owner)
                        .cloned()
                },
            )
            .expect("the receiver owns the task");
        assert!(
            matches!(listed.status, TaskStatus::Running),
            "the task must still run to be migrated again: {listed:?}"
        );
    }
    if !ratios.is_empty() {
        println!(
            "{} migrations: median total/bound {:.2}, median downtime/total {:.3}",
            ratios.len(),
            median(ratios),
            median(downtime_share)
        );
    }
}
