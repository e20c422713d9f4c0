//! The command-line verbs (`tern controller`, `tern submit`, `tern tasks`,
//! `tern nodes`, `tern cancel`): argument structures for clap and thin
//! functions over the library — the service, or the API's client.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{bail, Context, Result};
use clap::{Args, Subcommand};

use crate::api;
use crate::bench::table_5_2;
use crate::catalogue::Catalogue;
use crate::client::Client;
use crate::driver::live::{self, LiveConnector, Timeouts};
use crate::driver::sim::SimCluster;
use crate::driver::wasm::WasmSet;
use crate::engine::{self, EngineConfig};
use crate::model::{submission_json, PolicyKind, TaskSpec};
use crate::timings::TimingTable;

/// `tern controller`.
#[derive(Args, Debug)]
pub struct ServeArgs {
    /// Address to listen on; beyond loopback the UI and API need a token.
    #[arg(long, default_value = "127.0.0.1:4480")]
    pub listen: SocketAddr,
    /// The database (created if missing).
    #[arg(long, default_value = "tern-controller.db")]
    pub db: PathBuf,
    /// File holding the access token (default beyond loopback: a fresh one, printed).
    #[arg(long)]
    pub token_file: Option<PathBuf>,
    /// Run on a simulated cluster shaped like the thesis's Table 5-2 (local pc 4
    /// cores, virt 8, pc 8, virt 4) whose programs take the measured times.
    #[arg(long)]
    pub sim: bool,
    /// --sim: how many times faster than measured the simulated programs run.
    #[arg(long, default_value_t = 20.0, requires = "sim")]
    pub sim_speed: f64,
    /// The program catalogue (default: the NPB kernels and the thesis's
    /// nine Wasm programs).
    #[arg(long)]
    pub catalogue: Option<PathBuf>,
    /// The policy of submissions that name none.
    #[arg(long, default_value = "tern")]
    pub policy: String,
    /// Real nodes: the cluster key, 64 hex digits in a file (else `TERN_KEY`).
    #[arg(long, conflicts_with = "sim")]
    pub key_file: Option<PathBuf>,
    /// Real nodes: talk to them without a key (nodes set to `key insecure`).
    #[arg(long, conflicts_with_all = ["sim", "key_file"])]
    pub insecure: bool,
    /// Real nodes: reach them from inside this network namespace (a lab's,
    /// `ip netns list`), while the UI and API listen in this one.
    #[arg(long, conflicts_with = "sim")]
    pub netns: Option<String>,
    /// Real nodes: the Wasm task set's manifest, whose modules and reference
    /// answers the nine programs run with (`tern task build` writes it;
    /// default: the workspace's `target/wasm-tasks/manifest.json` if built).
    #[arg(long, conflicts_with = "sim")]
    pub wasm_manifest: Option<PathBuf>,
    /// Seconds between checkpoints of each running task that is not robust
    /// (it resumes from the last one if its node dies); 0: none.
    #[arg(long, default_value_t = 10.0)]
    pub checkpoint_every: f64,
    /// Seconds without an answer after which a node is down.
    #[arg(long, default_value_t = 3.0)]
    pub lease: f64,
}

/// The connector to real Tern nodes: the cluster's key (`key_file`, else
/// `insecure`, else `TERN_KEY`), connections from inside network namespace
/// `netns` if given, `answer` as the longest wait for a node's answer, the
/// Wasm programs of manifest `wasm` (else the workspace's, if built).
pub fn live_connector(
    key_file: Option<&Path>,
    insecure: bool,
    netns: Option<String>,
    answer: Duration,
    wasm: Option<&Path>,
) -> Result<LiveConnector> {
    let security = tern_client::security(key_file, insecure)?;
    let dial = netns.map_or_else(live::direct, live::in_netns);
    let built = tern_flash::build::Workspace::locate()
        .ok()
        .map(|ws| tern_tasks::manifest_path(&ws))
        .filter(|p| p.is_file());
    let wasm = match wasm.map(Path::to_path_buf).or(built) {
        Some(path) => WasmSet::load(&path)
            .map_err(|e| anyhow::anyhow!("the Wasm task set ({}): {e}", path.display()))?,
        None => {
            eprintln!(
                "no Wasm task set (`tern task build`, or --wasm-manifest): \
                 the nine programs' starts will be refused"
            );
            WasmSet::default()
        }
    };
    Ok(LiveConnector::new(
        security,
        dial,
        Timeouts {
            answer,
            ..Timeouts::default()
        },
    )
    .with_wasm(wasm))
}

/// Where the controller is, for the client verbs.
#[derive(Args, Debug)]
pub struct ControllerAddr {
    /// The controller's URL.
    #[arg(long, env = "TERN_CONTROLLER", default_value = "http://127.0.0.1:4480")]
    pub controller: String,
    /// Its access token.
    #[arg(long, env = "TERN_CONTROLLER_TOKEN", hide_env_values = true)]
    pub token: Option<String>,
}

impl ControllerAddr {
    fn client(&self) -> Client {
        Client::new(&self.controller, self.token.clone())
    }
}

/// `tern submit`.
#[derive(Args, Debug)]
pub struct SubmitArgs {
    /// A batch file (JSON: one task, an array, or {"policy", "tasks"}).
    #[arg(conflicts_with = "program")]
    pub file: Option<PathBuf>,
    /// Submit one task of this program instead.
    #[arg(long, requires = "name")]
    pub program: Option<String>,
    /// Its (unique) name.
    #[arg(long)]
    pub name: Option<String>,
    /// Its arguments.
    #[arg(long = "arg")]
    pub args: Vec<String>,
    /// CPU need in cores (default: the program's).
    #[arg(long)]
    pub cpu: Option<f64>,
    /// Memory need in MB (default: the program's).
    #[arg(long)]
    pub memory_mb: Option<u64>,
    /// It needs a GPU.
    #[arg(long)]
    pub gpu: bool,
    /// Run it on the local node (no offloading).
    #[arg(long)]
    pub local: bool,
    /// Keep a standby replica; fail over if its node dies.
    #[arg(long)]
    pub robust: bool,
    /// The policy (default: the controller's).
    #[arg(long)]
    pub policy: Option<String>,
    #[command(flatten)]
    #[allow(missing_docs)]
    pub at: ControllerAddr,
}

/// `tern tasks`.
#[derive(Args, Debug)]
pub struct TasksArgs {
    /// Print JSON.
    #[arg(long)]
    pub json: bool,
    #[command(flatten)]
    #[allow(missing_docs)]
    pub at: ControllerAddr,
}

/// `tern nodes`.
#[derive(Args, Debug)]
pub struct NodesArgs {
    /// What to do (default: list).
    #[command(subcommand)]
    pub action: Option<NodesAction>,
    /// Print JSON.
    #[arg(long)]
    pub json: bool,
    #[command(flatten)]
    #[allow(missing_docs)]
    pub at: ControllerAddr,
}

/// `tern nodes …`.
#[derive(Subcommand, Debug)]
pub enum NodesAction {
    /// Add the node at ADDR:PORT.
    Add {
        /// Its control address.
        addr: String,
        /// It is the local node.
        #[arg(long)]
        local: bool,
    },
    /// Drain a node: nothing new starts there, its tasks move away.
    Drain {
        /// Its id.
        id: i64,
    },
    /// Remove a node that runs nothing.
    Remove {
        /// Its id.
        id: i64,
    },
}

/// `tern cancel`.
#[derive(Args, Debug)]
pub struct CancelArgs {
    /// The task's id.
    pub id: i64,
    #[command(flatten)]
    #[allow(missing_docs)]
    pub at: ControllerAddr,
}

/// Runs the controller until Ctrl-C.
pub fn serve(args: ServeArgs) -> Result<()> {
    let catalogue = match &args.catalogue {
        Some(path) => Catalogue::load(path)?,
        None => Catalogue::nodes(),
    };
    let policy = PolicyKind::parse(&args.policy).with_context(|| {
        format!(
            "unknown policy {}; one of {}",
            args.policy,
            PolicyKind::ALL.map(PolicyKind::name).join(", ")
        )
    })?;
    let token = match (&args.token_file, api::needs_token(&args.listen)) {
        (Some(path), _) => Some(
            std::fs::read_to_string(path)
                .with_context(|| format!("reading {}", path.display()))?
                .trim()
                .to_string(),
        ),
        (None, true) => {
            let t = api::random_token().context("OS random generator")?;
            println!("access token (listening beyond loopback): {t}");
            Some(t)
        }
        (None, false) => None,
    };
    anyhow::ensure!(
        args.lease.is_finite() && args.lease > 0.0,
        "--lease must be a positive number of seconds"
    );
    anyhow::ensure!(
        args.checkpoint_every.is_finite() && args.checkpoint_every >= 0.0,
        "--checkpoint-every must be 0 or a positive number of seconds"
    );
    let lease = Duration::from_secs_f64(args.lease);
    let config = EngineConfig {
        default_policy: policy,
        lease,
        checkpoint_every: (args.checkpoint_every > 0.0)
            .then(|| Duration::from_secs_f64(args.checkpoint_every)),
        ..EngineConfig::default()
    };
    let sim = args.sim.then(|| {
        let c = SimCluster::new(catalogue.clone(), TimingTable::bundled(), args.sim_speed, 1);
        for (i, n) in table_5_2(["pc", "virt", "pc", "virt"]).iter().enumerate() {
            let isa = if n.board == "pc" { "x86_64" } else { "aarch64" };
            c.add_node(&sim_addr(i), &n.board, isa, n.cores, n.memory_mb, "sim");
        }
        c
    });
    let connector: Arc<dyn crate::driver::Connector> = match &sim {
        Some(c) => Arc::new(c.connector("sim")),
        None => Arc::new(live_connector(
            args.key_file.as_deref(),
            args.insecure,
            args.netns.clone(),
            lease,
            args.wasm_manifest.as_deref(),
        )?),
    };
    let service = engine::start(&args.db, config, connector, catalogue)?;
    let runtime = tokio::runtime::Runtime::new().context("starting the runtime")?;
    let controller = service.controller.clone();
    let result = runtime.block_on(async {
        let listener = tokio::net::TcpListener::bind(args.listen)
            .await
            .with_context(|| format!("listening on {}", args.listen))?;
        if sim.is_some() && controller.read().nodes()?.is_empty() {
            for i in 0..4 {
                controller
                    .add_node(sim_addr(i), i == 0)
                    .await
                    .map_err(anyhow::Error::msg)?;
            }
        }
        println!(
            "tern controller: http://{} (database {})",
            args.listen,
            args.db.display()
        );
        let router = api::router(controller.clone(), token);
        api::serve(listener, router, async {
            let _ = tokio::signal::ctrl_c().await;
        })
        .await
        .context("serving")
    });
    service.shutdown();
    result
}

/// The address of simulated node `i`.
fn sim_addr(i: usize) -> String {
    format!("sim-{i}:4470")
}

/// Submits a file or one task.
pub fn submit(args: SubmitArgs) -> Result<()> {
    let body = match (&args.file, &args.program) {
        (Some(path), _) => {
            std::fs::read(path).with_context(|| format!("reading {}", path.display()))?
        }
        (None, Some(program)) => {
            let task = serde_json::json!({
                "name": args.name,
                "program": program,
                "args": args.args,
                "gpu": args.gpu,
                "offload": !args.local,
                "robust": args.robust,
            });
            let mut task = task.as_object().cloned().unwrap_or_default();
            if let Some(c) = args.cpu {
                task.insert("cpu".into(), c.into());
            }
            if let Some(m) = args.memory_mb {
                task.insert("memory_mb".into(), m.into());
            }
            let mut body = serde_json::json!({ "tasks": [task] });
            if let Some(p) = &args.policy {
                body["policy"] = p.clone().into();
            }
            body.to_string().into_bytes()
        }
        (None, None) => bail!("give a batch file or --program and --name"),
    };
    let s = args.at.client().submit(body)?;
    println!(
        "batch {}: {} task(s) (ids {}..={}) under {}, placed in {:.1} ms",
        s.batch,
        s.tasks.len(),
        s.tasks.first().copied().unwrap_or_default(),
        s.tasks.last().copied().unwrap_or_default(),
        s.policy,
        s.placement_ms
    );
    for (name, reason) in &s.waiting {
        println!("  {name} waits: {reason}");
    }
    Ok(())
}

/// Lists the tasks.
pub fn tasks(args: TasksArgs) -> Result<()> {
    let tasks = args.at.client().tasks()?;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&tasks)?);
        return Ok(());
    }
    println!(
        "{:>5}  {:<16} {:<10} {:<12} {:<10} {:<18} {:>6}  {:>10}  reason",
        "id", "name", "program", "policy", "state", "node", "done", "completion"
    );
    for t in tasks {
        println!(
            "{:>5}  {:<16} {:<10} {:<12} {:<10} {:<18} {:>5.0}%  {:>10}  {}",
            t.id,
            t.name,
            t.program,
            t.policy.name(),
            t.state.name(),
            t.node.as_deref().unwrap_or("-"),
            t.progress * 100.0,
            t.completion_s.map_or("-".into(), |s| format!("{s:.2} s")),
            t.reason.as_deref().unwrap_or("")
        );
    }
    Ok(())
}

/// Lists, adds, drains or removes nodes.
pub fn nodes(args: NodesArgs) -> Result<()> {
    let client = args.at.client();
    match args.action {
        Some(NodesAction::Add { addr, local }) => {
            println!("node {} added", client.add_node(&addr, local)?);
        }
        Some(NodesAction::Drain { id }) => {
            client.drain(id)?;
            println!("node {id} draining");
        }
        Some(NodesAction::Remove { id }) => {
            client.remove(id)?;
            println!("node {id} removed");
        }
        None => {
            let nodes = client.nodes()?;
            if args.json {
                println!("{}", serde_json::to_string_pretty(&nodes)?);
                return Ok(());
            }
            println!(
                "{:>3}  {:<22} {:<6} {:<8} {:<9} {:>9} {:>14}  tasks",
                "id", "address", "board", "isa", "health", "free cpu", "free memory"
            );
            for n in nodes {
                println!(
                    "{:>3}  {:<22} {:<6} {:<8} {:<9} {:>4.1}/{:<4} {:>7}/{:<6}  {}",
                    n.id,
                    format!("{}{}", n.addr, if n.local { " (local)" } else { "" }),
                    n.board,
                    n.isa,
                    n.state.name(),
                    n.cores - n.used_cpu,
                    n.cores,
                    n.memory_mb - n.used_memory_mb,
                    n.memory_mb,
                    n.tasks.join(", ")
                );
            }
        }
    }
    Ok(())
}

/// Cancels a task.
pub fn cancel(args: CancelArgs) -> Result<()> {
    args.at.client().cancel(args.id)?;
    println!("task {} cancelled", args.id);
    Ok(())
}

/// A batch file of `n` tasks drawn from `catalogue` (for demos and tests).
pub fn batch_file(catalogue: &Catalogue, prefix: &str, n: usize, policy: PolicyKind) -> String {
    let programs: Vec<&String> = catalogue.programs.keys().collect();
    let tasks: Vec<TaskSpec> = (0..n)
        .map(|i| {
            let name = programs[i % programs.len()];
            let p = &catalogue.programs[name];
            TaskSpec {
                name: format!("{prefix}{i:03}"),
                program: name.clone(),
                args: Vec::new(),
                cpu: p.cpu,
                memory_mb: p.memory_mb,
                gpu: false,
                offload: true,
                robust: false,
            }
        })
        .collect();
    submission_json(policy, &tasks).to_string()
}
