//! Several QEMU nodes on one network lab ([`crate::netlab`]), reached from
//! the host through their control service (`tern-client`), with sockets
//! opened inside the lab's namespace. Two ways to set them up:
//! - [`Cluster::start`]: through their serial consoles, a static address
//!   (`10.0.2.<2+i>/24`) and the key typed on each;
//! - [`Cluster::start_lan`]: as on an office LAN, with no console at all:
//!   each kernel is keyed at flash time (its boot-command slot), takes its
//!   address from the lab's DHCP server and its clock from its SNTP server
//!   ([`crate::lan`]), and is found by its beacon.
//!
//! Node `i` sits on tap `i`, with MAC `52:54:00:7e:00:<2+i>` (node id
//! `5254007e00<2+i>`); the control service listens on port 4470.

use std::net::{Ipv4Addr, SocketAddr};
use std::time::{Duration, Instant};

use tern_client::discovery::Trust;
use tern_client::{key_hex, NodeClient, NodeError, CONTROL_PORT};
use tern_flash::image::KernelElf;
use tern_flash::provision;
use tern_flash::{Board, FlashError, Variant};
use tern_protocol::{format_node_id, EventRecord, NodeEvent, Psk, Security, TaskSummary};
use thiserror::Error;

use crate::lan::{self, DhcpServer, SntpServer};
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
    /// Provisioning a kernel failed.
    #[error(transparent)]
    Flash(#[from] FlashError),
    /// Some nodes were never heard on the LAN.
    #[error("no verified beacon of node(s) {} within {timeout:?}\n{consoles}", missing.join(", "))]
    NotHeard {
        /// Their node ids.
        missing: Vec<String>,
        /// How long the lab listened.
        timeout: Duration,
        /// The nodes' console output, which tells why.
        consoles: String,
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
    /// A LAN cluster's DHCP and SNTP servers (before the lab goes).
    services: Option<(DhcpServer, SntpServer)>,
    lab: Lab,
    security: Security,
    /// Node `i`'s control service.
    controls: Vec<SocketAddr>,
    /// The keyed kernels of a LAN cluster.
    _keyed: Option<tempfile::TempDir>,
}

/// How long a LAN cluster waits for every node's first verified beacon
/// (boot, DHCP, then the first beacon).
pub const HEARD_TIMEOUT: Duration = Duration::from_secs(60);

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
            services: None,
            lab,
            security,
            controls: (0..boards.len()).map(Self::control).collect(),
            _keyed: None,
        };
        // The shell masks a key as it is typed: the answer is awaited, not the echo.
        let (key, answer) = match &cluster.security {
            Security::Key(psk) => (key_hex(psk), "key: set\r\n"),
            Security::ExplicitlyInsecure => ("insecure".into(), "INSECURE MODE"),
        };
        for i in 0..boards.len() {
            let node = &mut cluster.nodes[i];
            node.expect_text(tern_prompt(), BOOT_TIMEOUT)?;
            cluster.shell(i, &format!("net {}/24", Self::address(i)))?;
            let node = &mut cluster.nodes[i];
            node.send_line(&format!("key {key}"))?;
            node.expect_text(answer, REPLY_TIMEOUT)?;
            node.expect_text(tern_prompt(), REPLY_TIMEOUT)?;
        }
        Ok(cluster)
    }

    /// Builds the kernels, keys a copy of each with `key` (as `flash
    /// --key-file` does), creates lab `tag` with a DHCP and an SNTP server,
    /// boots one node per entry of `boards` and waits until every node's
    /// verified beacon is heard: no console is used.
    pub fn start_lan(tag: &str, boards: &[Board], key: &Psk) -> Result<Self, ClusterError> {
        let mut kernels = Vec::new();
        for board in boards {
            kernels.push(KernelElf::read(
                &kernel(*board, Variant::Tern).map_err(HarnessError::from)?,
            )?);
        }
        let keyed = tempfile::tempdir().map_err(HarnessError::from)?;
        let lab = Lab::create(tag, boards.len())?;
        let services = (
            DhcpServer::start(lab.netns())?,
            SntpServer::start(lab.netns(), lan::NTP_PORT)?,
        );
        let mut nodes = Vec::new();
        for (i, (board, elf)) in boards.iter().zip(&kernels).enumerate() {
            let dir = keyed.path().join(i.to_string());
            std::fs::create_dir(&dir).map_err(HarnessError::from)?;
            let elf = provision::provisioned(elf, &provision::key_command(&key_hex(key)), &dir)?;
            let launch = lab.launch(i, nic(*board), &Self::mac(i));
            nodes.push(Node::start_with(
                *board,
                Boot::Elf(elf.path().to_owned()),
                SerialMode::Pipes,
                &launch,
            )?);
        }
        let security = Security::Key(key.clone());
        let wanted: Vec<u64> = (0..boards.len()).map(Self::node_id).collect();
        let verified = |n: &tern_client::discovery::Discovered| n.trust == Trust::Verified;
        let heard = lan::listen(lab.netns(), Some(&security), HEARD_TIMEOUT, |heard| {
            wanted
                .iter()
                .all(|id| heard.iter().any(|n| n.beacon.node_id == *id && verified(n)))
        })?;
        let mut controls = Vec::new();
        let mut missing = Vec::new();
        for id in &wanted {
            match heard
                .iter()
                .find(|n| n.beacon.node_id == *id && verified(n))
            {
                Some(n) => controls.push(n.control()),
                None => missing.push(format_node_id(*id)),
            }
        }
        let cluster = Self {
            nodes,
            services: Some(services),
            lab,
            security,
            controls,
            _keyed: Some(keyed),
        };
        if !missing.is_empty() {
            return Err(ClusterError::NotHeard {
                missing,
                timeout: HEARD_TIMEOUT,
                consoles: cluster.consoles(),
            });
        }
        Ok(cluster)
    }

    /// The node id of node `i` (its MAC's 48 bits).
    pub fn node_id(i: usize) -> u64 {
        0x5254_007e_0002 + i as u64
    }

    /// Node `i`'s control service as the cluster reaches it: its static
    /// address, or where its beacon said.
    pub fn endpoint(&self, i: usize) -> SocketAddr {
        self.controls[i]
    }

    /// SNTP queries the lab's time server answered (LAN clusters).
    pub fn sntp_answers(&self) -> u64 {
        self.services
            .as_ref()
            .map_or(0, |(_, sntp)| sntp.answered())
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
        let addr = self.controls[i];
        let sock = self.lab.netns().connect(addr, timeout)?;
        Ok(NodeClient::handshake(
            &addr.to_string(),
            sock,
            security,
            timeout,
        )?)
    }

    /// Runs `line` on node `i`'s network console (the shell over its
    /// control channel, no serial port); an `error:` answer is an error.
    pub fn console(&self, i: usize, line: &str) -> Result<String, ClusterError> {
        let mut client = self.client(i, REPLY_TIMEOUT)?;
        client.open_console()?;
        let answer = client.console_command(line)?;
        if answer.contains("error:") {
            return Err(ClusterError::Shell {
                node: i,
                command: line.into(),
                answer,
            });
        }
        Ok(answer)
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
