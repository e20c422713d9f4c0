//! The modules a node holds, content-addressed, and the task catalog that
//! starts and resumes Wasm tasks from them: `run wasm <module> [--name N]
//! [--expect HEX] [--] [args…]`.

use alloc::boxed::Box;
use alloc::collections::BTreeMap;
use alloc::format;
use alloc::rc::Rc;
use alloc::string::String;
use alloc::vec::Vec;
use core::cell::RefCell;

use tern_hal::MonotonicClock;
use tern_migration::{
    hex_prefix, ModuleId, ModuleRefusal, NewTask, Restored, ResumeError, TaskCatalog, TaskPlan,
};
use wasmi::{CompilationMode, Config, Engine};

use crate::fuel::FuelGauge;
use crate::module::{self, hex, parse_hex, prepare, Limits, ModuleInfo};
use crate::task::{self, ModuleRef, Start, WasmTask, KIND, VERSION};

/// Bytes of modules a node keeps at most.
pub const MAX_STORED_BYTES: usize = 32 << 20;

/// A module a node holds: its bytes, compiled for the interpreter.
pub struct Loaded {
    /// Its identity.
    pub id: ModuleId,
    /// The (rewritten) module, as stored and sent to peers.
    pub bytes: Rc<[u8]>,
    /// Compiled by wasmi.
    pub module: wasmi::Module,
    /// Its memory and globals.
    pub info: ModuleInfo,
}

/// The wasmi engine every task of a node shares: fuel metering on, every
/// function compiled when the module arrives (compiled lazily, a call's
/// first run would charge its compilation to the step's fuel, and a step
/// that cannot pay it fails instead of resuming).
pub fn engine() -> Engine {
    let mut config = Config::default();
    config
        .consume_fuel(true)
        .compilation_mode(CompilationMode::Eager);
    Engine::new(&config)
}

/// The Wasm task kind of a node: the modules it holds and the tasks it
/// makes of them.
pub struct WasmCatalog {
    engine: Engine,
    limits: Limits,
    gauge: Rc<FuelGauge>,
    modules: RefCell<BTreeMap<ModuleId, Rc<Loaded>>>,
}

/// What `run wasm …` names.
struct Args<'a> {
    module: ModuleId,
    name: Option<&'a str>,
    expect: Option<Vec<u8>>,
    rest: &'a [&'a str],
}

impl WasmCatalog {
    /// A catalog with no module yet, timing its tasks' steps with `clock`.
    pub fn new(clock: &'static dyn MonotonicClock, limits: Limits) -> Self {
        Self {
            engine: engine(),
            limits,
            gauge: Rc::new(FuelGauge::new(clock, limits.max_step_fuel)),
            modules: RefCell::new(BTreeMap::new()),
        }
    }

    /// The fuel gauge of the node's Wasm tasks.
    pub fn gauge(&self) -> &FuelGauge {
        &self.gauge
    }

    /// The modules held: identity and size.
    pub fn modules(&self) -> Vec<(ModuleId, usize)> {
        self.modules
            .borrow()
            .values()
            .map(|m| (m.id, m.bytes.len()))
            .collect()
    }

    fn loaded(&self, id: &ModuleId) -> Option<Rc<Loaded>> {
        self.modules.borrow().get(id).cloned()
    }

    fn parse<'a>(args: &'a [&'a str]) -> Result<Args<'a>, String> {
        let usage =
            || String::from("usage: wasm <module> [--name N] [--expect HEX] [--] [args...]");
        let [KIND, module, rest @ ..] = args else {
            return Err(usage());
        };
        let module: ModuleId = parse_hex(module)
            .and_then(|b| b.try_into().ok())
            .ok_or_else(|| format!("'{module}' is not a module id (64 hex digits)"))?;
        let (mut name, mut expect, mut rest): (Option<&str>, _, &[&str]) = (None, None, rest);
        loop {
            match rest {
                ["--name", n, tail @ ..] => {
                    name = Some(n);
                    rest = tail;
                }
                ["--expect", e, tail @ ..] => {
                    expect = Some(parse_hex(e).ok_or_else(|| format!("'{e}' is not hex"))?);
                    rest = tail;
                }
                ["--", tail @ ..] => {
                    rest = tail;
                    break;
                }
                _ => break,
            }
        }
        Ok(Args {
            module,
            name,
            expect,
            rest,
        })
    }

    fn module_for(&self, id: &ModuleId) -> Result<Rc<Loaded>, String> {
        self.loaded(id).ok_or_else(|| {
            format!(
                "module {} is not held here (upload it first)",
                hex_prefix(id)
            )
        })
    }

    /// The name of a task of `module` unless one was given.
    fn name(args: &Args<'_>) -> String {
        match args.name {
            Some(name) => name.into(),
            None => format!("wasm {}", hex_prefix(&args.module)),
        }
    }
}

impl TaskCatalog for WasmCatalog {
    fn usage(&self) -> &str {
        "wasm <module> [--name N] [--expect HEX] [--] [args...]"
    }

    fn claims(&self, args: &[&str]) -> bool {
        args.first() == Some(&KIND)
    }

    fn plan(&self, args: &[&str]) -> Result<TaskPlan, String> {
        let a = Self::parse(args)?;
        let module = self.module_for(&a.module)?;
        Ok(task::plan(&module, Self::name(&a)))
    }

    fn start(&self, args: &[&str]) -> Result<NewTask, String> {
        let a = Self::parse(args)?;
        let module = self.module_for(&a.module)?;
        let name = Self::name(&a);
        let task = WasmTask::start(
            module,
            self.gauge.clone(),
            self.limits.max_pages,
            Start {
                name: name.clone(),
                args: a.rest,
                expect: a.expect,
            },
        )?;
        Ok(NewTask {
            name,
            task: Box::new(task),
        })
    }

    fn resume(&self, restored: Restored) -> Result<NewTask, ResumeError> {
        let module: ModuleRef = restored
            .typed("module")
            .map_err(|e| format!("cannot resume: {e}"))?;
        let loaded = self
            .loaded(&module.module)
            .ok_or(ResumeError::MissingModule(module.module))?;
        let task = WasmTask::restore(loaded, self.gauge.clone(), self.limits.max_pages, restored)
            .map_err(|e| format!("cannot resume: {e}"))?;
        Ok(NewTask {
            name: task.state().name.clone(),
            task: Box::new(task),
        })
    }

    fn kinds(&self) -> Vec<(String, u32)> {
        alloc::vec![(KIND.into(), VERSION)]
    }

    fn add_module(&self, bytes: &[u8]) -> Result<ModuleId, (ModuleRefusal, String)> {
        let prepared = prepare(bytes, &self.limits).map_err(|r| (r.reason, r.detail))?;
        if self.modules.borrow().contains_key(&prepared.id) {
            return Ok(prepared.id);
        }
        let stored: usize = self.modules.borrow().values().map(|m| m.bytes.len()).sum();
        if stored + prepared.bytes.len() > MAX_STORED_BYTES {
            return Err((
                ModuleRefusal::OutOfMemory,
                format!("{stored} bytes of modules held already, at most {MAX_STORED_BYTES}"),
            ));
        }
        let compiled = wasmi::Module::new(&self.engine, &prepared.bytes[..]).map_err(|e| {
            (
                ModuleRefusal::Malformed,
                format!("the interpreter refused it: {e}"),
            )
        })?;
        let id = prepared.id;
        self.modules.borrow_mut().insert(
            id,
            Rc::new(Loaded {
                id,
                bytes: prepared.bytes.into(),
                module: compiled,
                info: prepared.info,
            }),
        );
        Ok(id)
    }

    fn module(&self, id: &ModuleId) -> Option<Rc<[u8]>> {
        self.loaded(id).map(|m| m.bytes.clone())
    }
}

/// Describes a typed region of a Wasm task's checkpoint for people (`inspect
/// show`): the module, the state, the globals; `None` for other regions.
pub fn describe(region: &str, bytes: &[u8]) -> Option<String> {
    use crate::task::{GlobalValue, TaskState};
    match region {
        "module" => postcard::from_bytes::<ModuleRef>(bytes)
            .ok()
            .map(|m| format!("module {} ({} bytes)", hex(&m.module), m.len)),
        "state" => postcard::from_bytes::<TaskState>(bytes).ok().map(|s| {
            format!(
                "name {:?}, {:?}, progress {}/{}, {} steps, {} pages ({} KiB), args {:?}, expect {}",
                s.name,
                s.phase,
                s.progress,
                s.total,
                s.steps,
                s.pages,
                u64::from(s.pages) * module::PAGE_BYTES / 1024,
                String::from_utf8_lossy(&s.args).replace('\0', " "),
                s.expect
                    .as_deref()
                    .map_or_else(|| "none".into(), |e| module::render(e).into_owned())
            )
        }),
        "globals" => postcard::from_bytes::<Vec<GlobalValue>>(bytes)
            .ok()
            .map(|g| format!("{} mutable globals {g:?}", g.len())),
        _ => None,
    }
}
