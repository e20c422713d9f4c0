//! A network lab for QEMU nodes: a Linux network namespace holding a bridge
//! (the host side's address `10.0.2.1/24`) with tap devices that QEMU,
//! started inside the namespace, attaches nodes to; optional Linux "hosts"
//! (namespaces of their own, each joined to the bridge by a veth pair) as
//! baselines; links cut and restored for fault injection, and shaped to a
//! rate with `tc` (a token bucket on each tap).
//!
//! Nothing leaves the lab: every namespace is deleted, with its devices, when
//! the [`Lab`] is dropped. Creating one needs root and the `ip` command.
//! Code running in the host process reaches into a namespace through
//! [`Netns::run`]: a thread that enters the namespace (`setns`) and creates
//! sockets there, which then work from any thread.

use std::fs::File;
use std::io;
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::os::fd::AsFd;
use std::process::{Command, Output};
use std::time::Duration;

use rustix::thread::{move_into_link_name_space, LinkNameSpaceType};
use thiserror::Error;

use tern_flash::qemu::Launch;

/// The lab's subnet: the bridge is `.1`, nodes and Linux hosts get the others.
pub const SUBNET: &str = "10.0.2";

/// The bridge's (the host side's) address in the lab.
pub const HOST_ADDRESS: &str = "10.0.2.1";

/// Why the lab could not be built or used.
#[derive(Debug, Error)]
pub enum NetlabError {
    /// Namespaces and taps need root.
    #[error("the network lab creates network namespaces and tap devices: run as root (e.g. sudo)")]
    NotRoot,
    /// A command the lab needs is not installed.
    #[error("the network lab needs '{0}' (Debian: iproute2)")]
    MissingTool(&'static str),
    /// A command failed.
    #[error("{command} failed ({status}): {stderr}")]
    Command {
        /// The command line.
        command: String,
        /// Its exit status.
        status: std::process::ExitStatus,
        /// Its standard error.
        stderr: String,
    },
    /// Starting a command or entering a namespace failed.
    #[error("{what}: {source}")]
    Io {
        /// What was attempted.
        what: String,
        /// The error.
        source: io::Error,
    },
}

/// Runs `program args`; a failure is a [`NetlabError::Command`].
fn run(program: &str, args: &[&str]) -> Result<Output, NetlabError> {
    let output = Command::new(program)
        .args(args)
        .output()
        .map_err(|source| NetlabError::Io {
            what: format!("running {program}"),
            source,
        })?;
    if !output.status.success() {
        return Err(NetlabError::Command {
            command: format!("{program} {}", args.join(" ")),
            status: output.status,
            stderr: String::from_utf8_lossy(&output.stderr).trim().to_owned(),
        });
    }
    Ok(output)
}

/// Fails unless the process runs as root with `ip` on the path.
pub fn require_root() -> Result<(), NetlabError> {
    if !rustix::process::geteuid().is_root() {
        return Err(NetlabError::NotRoot);
    }
    let found = Command::new("ip")
        .arg("-V")
        .output()
        .is_ok_and(|o| o.status.success());
    if !found {
        return Err(NetlabError::MissingTool("ip"));
    }
    Ok(())
}

/// One network namespace, deleted on drop.
#[derive(Debug)]
pub struct Netns {
    name: String,
}

impl Netns {
    /// Creates namespace `name` with its loopback up.
    fn create(name: String) -> Result<Self, NetlabError> {
        run("ip", &["netns", "add", &name])?;
        // From here on a failure still deletes the namespace (drop).
        let ns = Self { name };
        ns.ip("link set lo up")?;
        Ok(ns)
    }

    /// The namespace's name (for `ip netns exec`).
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Runs `ip -n <ns> <args>` (arguments split at spaces).
    pub fn ip(&self, args: &str) -> Result<Output, NetlabError> {
        let mut full = vec!["-n", &self.name];
        full.extend(args.split(' '));
        run("ip", &full)
    }

    /// Runs `program args` inside the namespace.
    pub fn exec(&self, program: &str, args: &[&str]) -> Result<Output, NetlabError> {
        let mut full = vec!["netns", "exec", &self.name, program];
        full.extend(args);
        run("ip", &full)
    }

    /// Runs `f` on a thread inside the namespace and returns its result.
    /// Sockets it creates belong to the namespace and can be used anywhere.
    pub fn run<T: Send + 'static>(
        &self,
        f: impl FnOnce() -> T + Send + 'static,
    ) -> Result<T, NetlabError> {
        run_in(&self.name, f)
    }

    /// A TCP connection from inside the namespace.
    pub fn connect(&self, addr: SocketAddr, timeout: Duration) -> Result<TcpStream, NetlabError> {
        connect_in(&self.name, addr, timeout)
    }

    /// A TCP listener inside the namespace.
    pub fn listen(&self, addr: SocketAddr) -> Result<TcpListener, NetlabError> {
        self.run(move || TcpListener::bind(addr))?
            .map_err(|source| NetlabError::Io {
                what: format!("listening on {addr} in {}", self.name),
                source,
            })
    }
}

/// Runs `f` on a thread inside the existing network namespace `name` (one
/// this process does not own, say a lab another process made) and returns
/// its result. Sockets it creates belong to the namespace and can be used
/// from any thread.
pub fn run_in<T: Send + 'static>(
    name: &str,
    f: impl FnOnce() -> T + Send + 'static,
) -> Result<T, NetlabError> {
    let path = format!("/run/netns/{name}");
    let file = File::open(&path).map_err(|source| NetlabError::Io {
        what: format!("opening {path}"),
        source,
    })?;
    let what = format!("entering network namespace {name}");
    std::thread::spawn(move || {
        // The namespace change is the thread's own: the process stays put.
        move_into_link_name_space(file.as_fd(), Some(LinkNameSpaceType::Network))?;
        Ok(f())
    })
    .join()
    .unwrap_or_else(|_| Err(io::Error::other("the namespace thread panicked")))
    .map_err(|source| NetlabError::Io { what, source })
}

/// A TCP connection to `addr` from inside network namespace `name` (the
/// controller reaches a lab's nodes so while it serves its UI outside).
pub fn connect_in(
    name: &str,
    addr: SocketAddr,
    timeout: Duration,
) -> Result<TcpStream, NetlabError> {
    run_in(name, move || TcpStream::connect_timeout(&addr, timeout))?.map_err(|source| {
        NetlabError::Io {
            what: format!("connecting to {addr} in {name}"),
            source,
        }
    })
}

/// Ends the processes left in namespace `name` (QEMU nodes) and deletes it,
/// best effort: for teardown when the owning [`Lab`] cannot be dropped (a
/// signal ends the program).
pub fn remove_namespace(name: &str) {
    if let Ok(out) = Command::new("ip").args(["netns", "pids", name]).output() {
        let pids = String::from_utf8_lossy(&out.stdout);
        for pid in pids.split_whitespace().filter_map(|p| p.parse().ok()) {
            if let Some(pid) = rustix::process::Pid::from_raw(pid) {
                let _ = rustix::process::kill_process(pid, rustix::process::Signal::TERM);
            }
        }
    }
    let _ = Command::new("ip").args(["netns", "del", name]).status();
}

/// The namespace name of [`Lab::create`]`(tag, …)` in this process.
pub fn lab_name(tag: &str) -> String {
    format!("tern-{tag}-{}", std::process::id())
}

impl Drop for Netns {
    fn drop(&mut self) {
        // Best effort: a leftover namespace holds only dead devices, and its
        // name is unique per process.
        let _ = Command::new("ip")
            .args(["netns", "del", &self.name])
            .status();
    }
}

/// The lab: a namespace with bridge `br0` at [`HOST_ADDRESS`]/24 and taps
/// `tap0`, `tap1`, … on it, plus any Linux hosts added.
#[derive(Debug)]
pub struct Lab {
    // Dropped first: the hosts' veths hang on the lab's bridge.
    hosts: Vec<Netns>,
    ns: Netns,
    taps: usize,
}

impl Lab {
    /// Creates the lab `tern-<tag>-<pid>` with `taps` tap devices.
    pub fn create(tag: &str, taps: usize) -> Result<Self, NetlabError> {
        require_root()?;
        let ns = Netns::create(lab_name(tag))?;
        ns.ip("link add br0 type bridge")?;
        ns.ip(&format!("addr add {HOST_ADDRESS}/24 dev br0"))?;
        ns.ip("link set br0 up")?;
        for i in 0..taps {
            ns.ip(&format!("tuntap add tap{i} mode tap"))?;
            ns.ip(&format!("link set tap{i} master br0"))?;
            ns.ip(&format!("link set tap{i} up"))?;
        }
        Ok(Self {
            hosts: Vec::new(),
            ns,
            taps,
        })
    }

    /// The lab's namespace (the bridge's side).
    pub fn netns(&self) -> &Netns {
        &self.ns
    }

    /// How QEMU joins the lab on tap `tap` with network device `nic`
    /// (`virtio-net-pci`, `virtio-net-device`) and MAC address `mac`.
    pub fn launch(&self, tap: usize, nic: &str, mac: &str) -> Launch {
        Launch {
            netns: Some(self.ns.name.clone()),
            extra_args: vec![
                "-netdev".into(),
                format!("tap,id=n0,ifname=tap{tap},script=no,downscript=no"),
                "-device".into(),
                format!("{nic},netdev=n0,mac={mac}"),
            ],
        }
    }

    /// Cuts (`up = false`) or restores tap `tap`'s link: while it is down the
    /// bridge drops every frame to and from that node.
    pub fn set_link(&self, tap: usize, up: bool) -> Result<(), NetlabError> {
        debug_assert!(tap < self.taps);
        let state = if up { "up" } else { "down" };
        self.ns.ip(&format!("link set tap{tap} {state}")).map(drop)
    }

    /// The lab's link shaper (for another thread: it needs only the names).
    pub fn shaper(&self) -> Shaper {
        Shaper {
            netns: self.ns.name.clone(),
            taps: self.taps,
        }
    }

    /// The Linux host added as `<SUBNET>.<host>`, if any.
    pub fn linux_host(&self, host: u8) -> Option<&Netns> {
        let name = format!("{}-h{host}", self.ns.name);
        self.hosts.iter().find(|h| h.name == name)
    }

    /// Adds a Linux host: a namespace of its own whose `eth0` has
    /// `<SUBNET>.<host>/24` and is joined to the bridge by a veth pair.
    pub fn add_linux_host(&mut self, host: u8) -> Result<&Netns, NetlabError> {
        let ns = Netns::create(format!("{}-h{host}", self.ns.name))?;
        let veth = format!("veth{host}");
        self.ns.ip(&format!(
            "link add {veth} type veth peer name eth0 netns {}",
            ns.name
        ))?;
        self.ns.ip(&format!("link set {veth} master br0"))?;
        self.ns.ip(&format!("link set {veth} up"))?;
        ns.ip(&format!("addr add {SUBNET}.{host}/24 dev eth0"))?;
        ns.ip("link set eth0 up")?;
        self.hosts.push(ns);
        Ok(&self.hosts[self.hosts.len() - 1])
    }
}

/// Sets the rate of every node's link in a lab: a token bucket (`tc tbf`) on
/// each tap limits what the bridge delivers to that node, so a transfer
/// between two nodes is limited once, at the receiver's tap.
#[derive(Clone, Debug)]
pub struct Shaper {
    netns: String,
    taps: usize,
}

/// Longest a frame waits in a shaped tap's queue before it is dropped: a
/// bounded queue, as a real bottleneck's buffer.
const SHAPED_QUEUE_MS: u64 = 100;

impl Shaper {
    /// Limits every tap to `bytes_per_s`, or lifts the limit (`None`).
    pub fn set_rate(&self, bytes_per_s: Option<u64>) -> Result<(), NetlabError> {
        for tap in 0..self.taps {
            let args = tc_args(&self.netns, tap, bytes_per_s);
            let args: Vec<&str> = args.iter().map(String::as_str).collect();
            match run("tc", &args) {
                // Nothing to delete on a tap never shaped.
                Err(NetlabError::Command { .. }) if bytes_per_s.is_none() => {}
                Err(NetlabError::Io { source, .. }) if source.kind() == io::ErrorKind::NotFound => {
                    return Err(NetlabError::MissingTool("tc"));
                }
                r => r.map(drop)?,
            }
        }
        Ok(())
    }
}

/// The `tc` arguments that shape tap `tap` of namespace `netns` to
/// `bytes_per_s` (or remove its shaping): a token bucket whose burst holds
/// 10 ms of traffic (at least 16 KiB, so that one timer tick's worth always
/// fits) and whose queue holds [`SHAPED_QUEUE_MS`].
fn tc_args(netns: &str, tap: usize, bytes_per_s: Option<u64>) -> Vec<String> {
    let mut args = vec!["-n".to_owned(), netns.to_owned(), "qdisc".to_owned()];
    let dev = format!("tap{tap}");
    match bytes_per_s {
        None => args.extend(["del".into(), "dev".into(), dev, "root".into()]),
        Some(rate) => {
            let rate = rate.max(1);
            let burst = (rate / 100).max(16 * 1024);
            args.extend([
                "replace".into(),
                "dev".into(),
                dev,
                "root".into(),
                "tbf".into(),
                "rate".into(),
                format!("{}bit", rate * 8),
                "burst".into(),
                burst.to_string(),
                "latency".into(),
                format!("{SHAPED_QUEUE_MS}ms"),
            ]);
        }
    }
    args
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shaping_is_a_token_bucket_per_tap_or_none() {
        assert_eq!(
            tc_args("tern-x-1", 1, Some(10_000_000)).join(" "),
            "-n tern-x-1 qdisc replace dev tap1 root tbf rate 80000000bit burst 100000 latency 100ms"
        );
        // Slow links keep a burst of at least 16 KiB.
        assert_eq!(
            tc_args("tern-x-1", 0, Some(20_000)).join(" "),
            "-n tern-x-1 qdisc replace dev tap0 root tbf rate 160000bit burst 16384 latency 100ms"
        );
        assert_eq!(
            tc_args("tern-x-1", 0, None).join(" "),
            "-n tern-x-1 qdisc del dev tap0 root"
        );
    }

    #[test]
    fn the_launch_puts_qemu_on_the_tap_in_the_namespace() {
        let lab = Lab {
            hosts: Vec::new(),
            ns: Netns {
                name: "tern-unit-0".into(),
            },
            taps: 2,
        };
        let launch = lab.launch(1, "virtio-net-pci", "52:54:00:7e:00:03");
        assert_eq!(launch.netns.as_deref(), Some("tern-unit-0"));
        assert_eq!(
            launch.extra_args.join(" "),
            "-netdev tap,id=n0,ifname=tap1,script=no,downscript=no \
             -device virtio-net-pci,netdev=n0,mac=52:54:00:7e:00:03"
        );
        // Not created: dropping must not delete anything real.
        std::mem::forget(lab);
    }
}
