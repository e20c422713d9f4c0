//! Several QEMU nodes on one network lab ([`crate::netlab`]), configured
//! through their serial consoles (address, key) and reached from the host
//! through their control service (`tern-client`), with sockets opened
//! inside the lab's namespace.
//!
//! Node `i` sits on tap `i`, with MAC `52:54:00:7e:00:<2+i>` and address
//! `10.0.2.<2+i>/24`; the control service listens on port 4470.

use std::net::{Ipv4Addr, SocketAddr};
use std::time::{Duration, Instant};

use tern_client::{key_hex, NodeClient, NodeError, CONTROL_PORT};
use tern_flash::{Board, Variant};
use tern_protocol::{EventRecord, NodeEvent, Security, TaskSummary};
use thiserror::Error;

use crate::netlab::{Lab, NetlabError};
use crate::node::{
    kernel, tern_prompt, Boot, HarnessError, Node, SerialMode, BOOT_TIMEOUT, REPLY_TIMEOUT,
};

/// What went wrong while running a cluster.
#[derive(Debug, Error)]
pub enum ClusterError {
    /// Booting or talking to a node's console failed.
    #[error(transparent)]
    Harness(#[from] HarnessError),
    /// The network lab failed.
    #[error(transparent)]
    Lab(#[from] NetlabError),
    /// The control service failed.
    #[error(transparent)]
    Node(#[from] NodeError),
    /// A shell command answered with an error.
    #[error("node {node}: '{command}' answered: {answer}")]
    Shell {
        /// The node's index.
        node: usize,
        /// The command.
        command: String,
        /// Its answer.
        answer: String,
    },
    /// A node never listed the awaited task state.
    #[error("node {node} did not list {what} within {timeout:?}{}", last_error.as_deref().map(|e| format!(" (last error: {e})")).unwrap_or_default())]
    Waited {
        /// The node's index.
        node: usize,
        /// What was awaited.
        what: String,
        /// How long.
        timeout: Duration,
        /// Why the last attempt to list failed, if it did.
        last_error: Option<String>,
    },
}

/// The QEMU network device of each board.
pub fn nic(board: Board) -> &'static str {
    match board {
        Board::Pc => "virtio-net-pci",
        Board::Virt | Board::Rpi4 => "virtio-net-device",
    }
}

/// How one node of a cluster is started: its board, its QEMU network device
/// (`-device` prefix, e.g. `e1000e,bus=rp0`) and QEMU arguments placed
/// before the network device's (e.g. the PCIe root port it sits behind).
#[derive(Clone, Debug)]
pub struct NodeSpec {
    /// The board.
    pub board: Board,
    /// The network device.
    pub nic: String,
    /// Extra QEMU arguments.
    pub extra_args: Vec<String>,
}

impl NodeSpec {
    /// `board` with its usual network device and nothing else.
    pub fn new(board: Board) -> Self {
        Self {
            board,
            nic: nic(board).into(),
            extra_args: Vec::new(),
        }
    }
}

/// Nodes on one lab, each configured with an address and the cluster's security.
pub struct Cluster {
    // Nodes first: QEMU must go before its taps and namespace.
    nodes: Vec<Node>,
    lab: Lab,
    security: Security,
}

impl Cluster {
    /// Builds the kernels, creates lab `tag` and boots one node per entry of
    /// `boards` (all at once), then gives each its address and the key.
    pub fn start(tag: &str, boards: &[Board], security: Security) -> Result<Self, ClusterError> {
        let specs: Vec<NodeSpec> = boards.iter().copied().map(NodeSpec::new).collect();
        Self::start_specs(tag, &specs, security)
    }

    /// [`Cluster::start`] with each node's network device and extra QEMU
    /// arguments as `specs` say.
    pub fn start_specs(
        tag: &str,
        specs: &[NodeSpec],
        security: Security,
    ) -> Result<Self, ClusterError> {
        for spec in specs {
            kernel(spec.board, Variant::Tern).map_err(HarnessError::from)?;
        }
        let lab = Lab::create(tag, specs.len())?;
        let mut nodes = Vec::new();
        for (i, spec) in specs.iter().enumerate() {
            let mut launch = lab.launch(i, &spec.nic, &Self::mac(i));
            launch
                .extra_args
                .splice(0..0, spec.extra_args.iter().cloned());
            let elf = kernel(spec.board, Variant::Tern).map_err(HarnessError::from)?;
            nodes.push(Node::start_with(
                spec.board,
                Boot::Elf(elf),
                SerialMode::Pipes,
                &launch,
            )?);
        }
        let boards: Vec<Board> = specs.iter().map(|spec| spec.board).collect();
        let mut cluster = Self {
            nodes,
            lab,
            security,
        };
        // The shell masks a key as it is typed: the answer is awaited, not the echo.
        let (key, answer) = match &cluster.security {
            Security::Key(psk) => (key_hex(psk), "key: set\r\n"),
            Security::ExplicitlyInsecure => ("insecure".into(), "INSECURE MODE"),
        };
        for i in 0..boards.len() {
            let node = &mut cluster.nodes[i];
            node.expect(tern_prompt(), BOOT_TIMEOUT)?;
            cluster.shell(i, &format!("net {}/24", Self::address(i)))?;
            let node = &mut cluster.nodes[i];
            node.send_line(&format!("key {key}"))?;
            node.expect(answer, REPLY_TIMEOUT)?;
            node.expect(tern_prompt(), REPLY_TIMEOUT)?;
        }
        Ok(cluster)
    }

    /// The MAC address of node `i`.
    pub fn mac(i: usize) -> String {
        format!("52:54:00:7e:00:{:02x}", 2 + i)
    }

    /// The IPv4 address of node `i`.
    pub fn address(i: usize) -> Ipv4Addr {
        Ipv4Addr::new(10, 0, 2, 2 + i as u8)
    }

    /// Node `i`'s control service.
    pub fn control(i: usize) -> SocketAddr {
        SocketAddr::from((Self::address(i), CONTROL_PORT))
    }

    /// The lab the nodes are on.
    pub fn lab(&self) -> &Lab {
        &self.lab
    }

    /// The lab, to add Linux hosts to it.
    pub fn lab_mut(&mut self) -> &mut Lab {
        &mut self.lab
    }

    /// Node `i`'s console.
    pub fn node(&mut self, i: usize) -> &mut Node {
        &mut self.nodes[i]
    }

    /// Node `i`, to read its console without consuming it ([`Node::output_since`]).
    pub fn node_ref(&self, i: usize) -> &Node {
        &self.nodes[i]
    }

    /// The unread console output of every node, labelled, for error reports.
    pub fn consoles(&self) -> String {
        self.nodes
            .iter()
            .enumerate()
            .map(|(i, n)| format!("--- node {i} ({}) console ---\n{}", n.board(), n.unread()))
            .collect::<Vec<_>>()
            .join("\n")
    }

    /// Number of nodes.
    pub fn len(&self) -> usize {
        self.nodes.len()
    }

    /// Whether the cluster has no node.
    pub fn is_empty(&self) -> bool {
        self.nodes.is_empty()
    }

    /// Runs a shell command on node `i`; an `error:` answer is an error.
    pub fn shell(&mut self, i: usize, command: &str) -> Result<String, ClusterError> {
        let answer = self.nodes[i].command(command)?;
        if answer.contains("error:") {
            return Err(ClusterError::Shell {
                node: i,
                command: command.into(),
                answer,
            });
        }
        Ok(answer)
    }

    /// An authenticated control connection to node `i`, opened in the lab.
    pub fn client(&self, i: usize, timeout: Duration) -> Result<NodeClient, ClusterError> {
        self.client_with(i, self.security.clone(), timeout)
    }

    /// A control connection to node `i` with another security (bad peers).
    pub fn client_with(
        &self,
        i: usize,
        security: Security,
        timeout: Duration,
    ) -> Result<NodeClient, ClusterError> {
        let addr = Self::control(i);
        let sock = self.lab.netns().connect(addr, timeout)?;
        Ok(NodeClient::handshake(
            &addr.to_string(),
            sock,
            security,
            timeout,
        )?)
    }

    /// Polls node `i`'s task list every `every` until `pick` chooses a task,
    /// for at most `timeout`; connection failures count as "not yet".
    pub fn wait_for_task(
        &self,
        i: usize,
        what: &str,
        timeout: Duration,
        every: Duration,
        mut pick: impl FnMut(&[TaskSummary]) -> Option<TaskSummary>,
    ) -> Result<TaskSummary, ClusterError> {
        let deadline = Instant::now() + timeout;
        loop {
            let listed = self
                .client(i, Duration::from_secs(10))
                .and_then(|mut c| Ok(c.list()?));
            let last_error = listed.as_ref().err().map(ToString::to_string);
            if let Some(task) = listed.ok().as_deref().and_then(&mut pick) {
                return Ok(task);
            }
            if Instant::now() >= deadline {
                return Err(ClusterError::Waited {
                    node: i,
                    what: what.into(),
                    timeout,
                    last_error,
                });
            }
            std::thread::sleep(every);
        }
    }
}

/// How long one read of a node's event stream waits before the watch turns
/// to the next node.
const EVENT_SLICE: Duration = Duration::from_millis(20);

/// The typed events of a cluster's nodes, read through one subscription per
/// node. A subscription that breaks (a cut link, a node busy past the
/// client's timeout) is opened again after the last event seen, so nothing
/// the node still keeps is missed; every event read stays in the history.
pub struct EventWatch {
    subscriptions: Vec<Option<NodeClient>>,
    /// The last sequence number seen per node.
    seen: Vec<u64>,
    history: Vec<(usize, EventRecord)>,
    /// Events the nodes no longer kept when a subscription asked for them.
    missed: u64,
}

impl EventWatch {
    /// Reads whatever the nodes have published, waiting about `wait` in
    /// all; returns the new events (node index and record), oldest first
    /// per node.
    pub fn poll(&mut self, cluster: &Cluster, wait: Duration) -> Vec<(usize, EventRecord)> {
        let deadline = Instant::now() + wait;
        let mut new = Vec::new();
        loop {
            for i in 0..self.subscriptions.len() {
                self.read(cluster, i, &mut new);
            }
            if !new.is_empty() || Instant::now() >= deadline {
                break;
            }
        }
        self.history.extend(new.iter().cloned());
        new
    }

    fn read(&mut self, cluster: &Cluster, i: usize, into: &mut Vec<(usize, EventRecord)>) {
        if self.subscriptions[i].is_none() {
            let opened = cluster.client(i, ANSWER_TIMEOUT).and_then(|mut c| {
                c.subscribe(self.seen[i])?;
                Ok(c)
            });
            self.subscriptions[i] = opened.ok();
        }
        let Some(client) = self.subscriptions[i].as_mut() else {
            return;
        };
        loop {
            match client.next_event(EVENT_SLICE) {
                Ok(record) => {
                    self.seen[i] = self.seen[i].max(record.seq);
                    into.push((i, record));
                }
                Err(NodeError::Timeout { .. }) => break,
                Err(_) => {
                    self.missed += client.missed_events();
                    self.subscriptions[i] = None;
                    break;
                }
            }
        }
    }

    /// Waits up to `timeout` for an event of node `node` that `pick`
    /// chooses (events already in the history count too, oldest first).
    pub fn wait<T>(
        &mut self,
        cluster: &Cluster,
        node: usize,
        what: &str,
        timeout: Duration,
        mut pick: impl FnMut(&NodeEvent) -> Option<T>,
    ) -> Result<T, ClusterError> {
        if let Some(found) = self
            .history
            .iter()
            .filter(|(i, _)| *i == node)
            .find_map(|(_, r)| pick(&r.event))
        {
            return Ok(found);
        }
        let deadline = Instant::now() + timeout;
        while Instant::now() < deadline {
            let left = deadline.saturating_duration_since(Instant::now());
            for (i, record) in self.poll(cluster, left.min(Duration::from_millis(500))) {
                if i == node {
                    if let Some(found) = pick(&record.event) {
                        return Ok(found);
                    }
                }
            }
        }
        Err(ClusterError::Waited {
            node,
            what: what.into(),
            timeout,
            last_error: None,
        })
    }

    /// Forgets the history (later waits see only new events).
    pub fn clear(&mut self) {
        self.history.clear();
    }

    /// Every event read so far, with its node.
    pub fn history(&self) -> &[(usize, EventRecord)] {
        &self.history
    }

    /// Events the nodes no longer kept when a subscription reopened.
    pub fn missed(&self) -> u64 {
        self.missed
    }
}

/// Longest wait for a subscription to open.
const ANSWER_TIMEOUT: Duration = Duration::from_secs(5);

impl Cluster {
    /// A watch on every node's events, from the first each still keeps.
    pub fn watch(&self) -> EventWatch {
        EventWatch {
            subscriptions: (0..self.len()).map(|_| None).collect(),
            seen: vec![0; self.len()],
            history: Vec::new(),
            missed: 0,
        }
    }

    /// A watch on the events the nodes publish from now on.
    pub fn watch_from_now(&self) -> Result<EventWatch, ClusterError> {
        let mut watch = self.watch();
        for i in 0..self.len() {
            let next = self.client(i, ANSWER_TIMEOUT)?.status()?.next_event;
            watch.seen[i] = next.saturating_sub(1);
        }
        Ok(watch)
    }
}
