//! A Wasm task: an instance of a checked module, stepped under a fuel
//! budget. Between two calls of its `tern_step` its whole state is its
//! linear memory and its mutable globals (the Wasm call stack is empty), so
//! a checkpoint holds the module's identity, the memory as a bulk region and
//! the globals as a typed region, and means the same on every ISA. A call
//! that runs out of fuel is resumed on the next step; until it ends the task
//! is not at a migration point.

use alloc::format;
use alloc::rc::Rc;
use alloc::string::{String, ToString};
use alloc::vec::Vec;

use serde::{Deserialize, Serialize};
use tern_migration::{ModuleId, Progress, Restored, Snapshot, Step, Task, TaskPlan, WriteError};
use wasmi::{
    Caller, Extern, Global, Linker, Memory, ResourceLimiter, Store, TypedFunc, TypedResumableCall,
    TypedResumableCallOutOfFuel, Val,
};
use wasmi_core::LimiterError;

use crate::catalog::Loaded;
use crate::fuel::FuelGauge;
use crate::module::{
    global_export, render, GlobalType, EXPORT_ARGS, EXPORT_INIT, EXPORT_MEMORY, EXPORT_RESULT,
    EXPORT_STEP, IMPORT_LOG, IMPORT_MODULE, PAGE_BYTES,
};

/// The task kind of checkpoints of Wasm tasks.
pub const KIND: &str = "wasm";
/// Its state layout version.
pub const VERSION: u32 = 1;

/// Longest result a task may return, in bytes.
pub const MAX_RESULT_BYTES: u32 = 4096;

/// Lines of log a task may leave between two reads; more are counted, not kept.
const MAX_LOG_LINES: usize = 8;

/// Bytes of one log line kept.
const MAX_LOG_LINE: usize = 200;

/// Tables a module may define.
const MAX_TABLES: usize = 16;

/// The result call gets this many step budgets of fuel.
const RESULT_BUDGETS: u64 = 10;

/// Which of the task's two calls is next.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Phase {
    /// `tern_init` has not returned yet.
    Init,
    /// Stepping.
    Run,
}

/// The `module` region: which module the task's code is.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ModuleRef {
    /// The module's identity.
    pub module: ModuleId,
    /// Its length in bytes.
    pub len: u64,
}

/// The `state` region: what the task is and how far it got.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TaskState {
    /// How messages name the task.
    pub name: String,
    /// Its arguments as the module read them (NUL-separated).
    pub args: Vec<u8>,
    /// The result that verifies the run, if one was given.
    pub expect: Option<Vec<u8>>,
    /// Init or run.
    pub phase: Phase,
    /// Work units done (the value of the last step).
    pub progress: u64,
    /// Work units of the whole task (from init).
    pub total: u64,
    /// Step calls finished.
    pub steps: u64,
    /// Pages of linear memory (the `memory` region is this many 64 KiB).
    pub pages: u32,
}

/// One mutable global's value in the `globals` region (floats as their bits).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum GlobalValue {
    /// An `i32`.
    I32(i32),
    /// An `i64`.
    I64(i64),
    /// An `f32`'s bits.
    F32(u32),
    /// An `f64`'s bits.
    F64(u64),
}

impl GlobalValue {
    fn from_val(v: &Val) -> Option<Self> {
        Some(match v {
            Val::I32(x) => Self::I32(*x),
            Val::I64(x) => Self::I64(*x),
            Val::F32(x) => Self::F32(x.to_bits()),
            Val::F64(x) => Self::F64(x.to_bits()),
            _ => return None,
        })
    }

    fn to_val(self) -> Val {
        match self {
            Self::I32(x) => Val::I32(x),
            Self::I64(x) => Val::I64(x),
            Self::F32(x) => Val::F32(f32::from_bits(x).into()),
            Self::F64(x) => Val::F64(f64::from_bits(x).into()),
        }
    }

    fn ty(self) -> GlobalType {
        match self {
            Self::I32(_) => GlobalType::I32,
            Self::I64(_) => GlobalType::I64,
            Self::F32(_) => GlobalType::F32,
            Self::F64(_) => GlobalType::F64,
        }
    }
}

/// What the instance's host side holds: its memory cap and its log.
pub(crate) struct Host {
    cap: MemoryCap,
    log: Vec<String>,
    dropped: u64,
}

/// The cap on a task's linear memory. Growing past it fails the way
/// WebAssembly's `memory.grow` fails (it returns -1; the module decides
/// what that means), and the task's report says so if it then fails.
struct MemoryCap {
    max_bytes: usize,
    refused: bool,
}

impl ResourceLimiter for MemoryCap {
    fn memory_growing(
        &mut self,
        _current: usize,
        desired: usize,
        maximum: Option<usize>,
    ) -> Result<bool, LimiterError> {
        let allowed = desired <= self.max_bytes && maximum.is_none_or(|max| desired <= max);
        self.refused |= !allowed;
        Ok(allowed)
    }

    fn table_growing(
        &mut self,
        _current: usize,
        desired: usize,
        maximum: Option<usize>,
    ) -> Result<bool, LimiterError> {
        // Tables are only sized at instantiation (their growth is refused
        // at upload).
        Ok(maximum.is_none_or(|max| desired <= max))
    }

    fn instances(&self) -> usize {
        1
    }

    fn tables(&self) -> usize {
        MAX_TABLES
    }

    fn memories(&self) -> usize {
        1
    }
}

/// `tern.log(ptr, len)`: keeps a line of the task's memory.
fn log(mut caller: Caller<'_, Host>, ptr: i32, len: i32) {
    let Some(Extern::Memory(memory)) = caller.get_export(EXPORT_MEMORY) else {
        return;
    };
    let (start, len) = (ptr as u32 as usize, len as u32 as usize);
    let line = memory
        .data(&caller)
        .get(start..start.saturating_add(len.min(MAX_LOG_LINE)))
        .map(|b| String::from_utf8_lossy(b).into_owned());
    let host = caller.data_mut();
    match line {
        Some(line) if host.log.len() < MAX_LOG_LINES => host.log.push(line),
        _ => host.dropped += 1,
    }
}

/// How a run ended.
struct Outcome {
    verified: bool,
    report: String,
}

/// A task running a module's code in wasmi.
pub struct WasmTask {
    module: Rc<Loaded>,
    gauge: Rc<FuelGauge>,
    store: Store<Host>,
    memory: Memory,
    args: TypedFunc<i32, i32>,
    init: TypedFunc<i32, i64>,
    step: TypedFunc<(), i64>,
    result: TypedFunc<(), i64>,
    globals: Vec<Global>,
    pending: Option<TypedResumableCallOutOfFuel<i64>>,
    state: TaskState,
    outcome: Option<Outcome>,
}

/// The arguments of a new task.
pub struct Start<'a> {
    /// How messages name it.
    pub name: String,
    /// The module's arguments.
    pub args: &'a [&'a str],
    /// The result that verifies the run.
    pub expect: Option<Vec<u8>>,
}

/// Bytes the state of a task of `module` takes at start.
pub fn plan(module: &Loaded, name: String) -> TaskPlan {
    TaskPlan {
        name,
        state_bytes: u64::from(module.info.initial_pages) * PAGE_BYTES,
    }
}

impl WasmTask {
    /// A fresh instance of `module` (data segments applied, no code run yet).
    fn instantiate(
        module: Rc<Loaded>,
        gauge: Rc<FuelGauge>,
        max_pages: u32,
        state: TaskState,
    ) -> Result<Self, String> {
        let engine = module.module.engine();
        let cap = MemoryCap {
            max_bytes: usize::try_from(u64::from(max_pages) * PAGE_BYTES).unwrap_or(usize::MAX),
            refused: false,
        };
        let mut store = Store::new(
            engine,
            Host {
                cap,
                log: Vec::new(),
                dropped: 0,
            },
        );
        store.limiter(|host| &mut host.cap);
        let mut linker = Linker::<Host>::new(engine);
        linker
            .func_wrap(IMPORT_MODULE, IMPORT_LOG, log)
            .map_err(|e| format!("linking {IMPORT_MODULE}.{IMPORT_LOG}: {e}"))?;
        let instance = linker
            .instantiate_and_start(&mut store, &module.module)
            .map_err(|e| format!("instantiating: {e}"))?;
        let memory = instance
            .get_memory(&store, EXPORT_MEMORY)
            .ok_or("no memory export")?;
        let func = |name: &str| format!("export '{name}' missing or of the wrong type");
        let args = instance
            .get_typed_func::<i32, i32>(&store, EXPORT_ARGS)
            .map_err(|_| func(EXPORT_ARGS))?;
        let init = instance
            .get_typed_func::<i32, i64>(&store, EXPORT_INIT)
            .map_err(|_| func(EXPORT_INIT))?;
        let step = instance
            .get_typed_func::<(), i64>(&store, EXPORT_STEP)
            .map_err(|_| func(EXPORT_STEP))?;
        let result = instance
            .get_typed_func::<(), i64>(&store, EXPORT_RESULT)
            .map_err(|_| func(EXPORT_RESULT))?;
        let globals = module
            .info
            .mutable_globals
            .iter()
            .map(|(i, _)| {
                instance
                    .get_global(&store, &global_export(*i))
                    .ok_or_else(|| format!("global {i} is not exported"))
            })
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Self {
            module,
            gauge,
            store,
            memory,
            args,
            init,
            step,
            result,
            globals,
            pending: None,
            state,
            outcome: None,
        })
    }

    /// A new task of `module` with `start`'s arguments, written into the
    /// module's argument buffer; its init runs on the first steps.
    pub fn start(
        module: Rc<Loaded>,
        gauge: Rc<FuelGauge>,
        max_pages: u32,
        start: Start<'_>,
    ) -> Result<Self, String> {
        let args = start.args.join("\0").into_bytes();
        let state = TaskState {
            name: start.name,
            args,
            expect: start.expect,
            phase: Phase::Init,
            progress: 0,
            total: 0,
            steps: 0,
            pages: module.info.initial_pages,
        };
        let mut task = Self::instantiate(module, gauge, max_pages, state)?;
        let len = i32::try_from(task.state.args.len()).map_err(|_| "arguments too long")?;
        let args_fn = task.args;
        task.store
            .set_fuel(task.gauge.budget())
            .map_err(|e| e.to_string())?;
        let ptr = args_fn
            .call(&mut task.store, len)
            .map_err(|e| format!("{EXPORT_ARGS}: {e}"))?;
        if ptr == 0 && len > 0 {
            return Err(format!(
                "the module has no room for {len} bytes of arguments"
            ));
        }
        task.memory
            .write(
                &mut task.store,
                ptr as u32 as usize,
                &task.state.args.clone(),
            )
            .map_err(|_| format!("{EXPORT_ARGS} returned {ptr}, outside the memory"))?;
        task.state.pages = task.pages();
        Ok(task)
    }

    /// The task a checkpoint holds, on a fresh instance of `module`.
    pub fn restore(
        module: Rc<Loaded>,
        gauge: Rc<FuelGauge>,
        max_pages: u32,
        mut restored: Restored,
    ) -> Result<Self, String> {
        let state: TaskState = restored.typed("state").map_err(|e| e.to_string())?;
        let values: Vec<GlobalValue> = restored.typed("globals").map_err(|e| e.to_string())?;
        if state.pages > max_pages {
            return Err(format!(
                "{} pages of memory, at most {max_pages} allowed here",
                state.pages
            ));
        }
        if state.progress > state.total && state.phase == Phase::Run {
            return Err("progress past the total".into());
        }
        let bytes = restored
            .take_bulk::<u8>("memory", (u64::from(state.pages) * PAGE_BYTES) as usize)
            .map_err(|e| e.to_string())?
            .into_vec();
        let mut task = Self::instantiate(module, gauge, max_pages, state)?;
        let grow = u64::from(task.state.pages).saturating_sub(u64::from(task.pages()));
        if grow > 0 {
            task.memory
                .grow(&mut task.store, grow)
                .map_err(|e| format!("growing the memory: {e}"))?;
        }
        if task.pages() != task.state.pages {
            return Err(format!(
                "the module starts with {} pages, the checkpoint holds {}",
                task.pages(),
                task.state.pages
            ));
        }
        task.memory
            .write(&mut task.store, 0, &bytes)
            .map_err(|_| "the memory does not fit")?;
        if values.len() != task.globals.len() {
            return Err(format!(
                "{} globals saved, the module has {} mutable ones",
                values.len(),
                task.globals.len()
            ));
        }
        for ((global, value), (index, ty)) in task
            .globals
            .iter()
            .zip(&values)
            .zip(&task.module.info.mutable_globals)
        {
            if value.ty() != *ty {
                return Err(format!(
                    "global {index} saved as {:?}, it is {ty:?}",
                    value.ty()
                ));
            }
            global
                .set(&mut task.store, value.to_val())
                .map_err(|e| format!("global {index}: {e}"))?;
        }
        Ok(task)
    }

    /// Pages of linear memory now.
    fn pages(&self) -> u32 {
        (self.memory.size(&self.store)) as u32
    }

    /// The task's state region as it stands.
    pub fn state(&self) -> &TaskState {
        &self.state
    }

    /// Ends the run: unverified, with `why`.
    fn fail(&mut self, why: String) -> Step {
        let cap = &self.store.data().cap;
        let why = if cap.refused {
            format!(
                "{why} (its memory may not grow past {} KiB)",
                cap.max_bytes >> 10
            )
        } else {
            why
        };
        self.finish(false, format!("VERIFICATION FAILED: {why}"))
    }

    fn finish(&mut self, verified: bool, report: String) -> Step {
        self.pending = None;
        self.outcome = Some(Outcome {
            verified,
            report: report.clone(),
        });
        Step::Finished { verified, report }
    }

    /// A call returned `value`.
    fn returned(&mut self, value: i64) -> Step {
        match self.state.phase {
            Phase::Init => {
                let Ok(total) = u64::try_from(value) else {
                    return self.fail(format!("{EXPORT_INIT} returned error code {value}"));
                };
                self.state.total = total;
                self.state.phase = Phase::Run;
                if total == 0 {
                    return self.verdict();
                }
                Step::Running
            }
            Phase::Run => {
                let Ok(done) = u64::try_from(value) else {
                    return self.fail(format!("{EXPORT_STEP} returned error code {value}"));
                };
                if done < self.state.progress {
                    return self.fail(format!(
                        "progress went back from {} to {done}",
                        self.state.progress
                    ));
                }
                if done > self.state.total {
                    return self.fail(format!(
                        "progress {done} past the total {}",
                        self.state.total
                    ));
                }
                self.state.progress = done;
                self.state.steps += 1;
                if done == self.state.total {
                    return self.verdict();
                }
                Step::Running
            }
        }
    }

    /// The last step is done: reads the result and compares it.
    fn verdict(&mut self) -> Step {
        let fuel = self.gauge.budget().saturating_mul(RESULT_BUDGETS);
        if let Err(e) = self.store.set_fuel(fuel) {
            return self.fail(e.to_string());
        }
        let packed = match self.result.call(&mut self.store, ()) {
            Ok(v) => v as u64,
            Err(e) => return self.fail(format!("{EXPORT_RESULT}: {e}")),
        };
        let (ptr, len) = (packed as u32, (packed >> 32) as u32);
        if len > MAX_RESULT_BYTES {
            return self.fail(format!(
                "a result of {len} bytes (at most {MAX_RESULT_BYTES})"
            ));
        }
        let Some(result) = self
            .memory
            .data(&self.store)
            .get(ptr as usize..ptr as usize + len as usize)
            .map(<[u8]>::to_vec)
        else {
            return self.fail(format!("the result at {ptr}+{len} lies outside the memory"));
        };
        let shown = render(&result).into_owned();
        match self.state.expect.clone() {
            Some(expect) if expect == result => {
                self.finish(true, format!("VERIFICATION SUCCESSFUL: result {shown}"))
            }
            Some(expect) => self.finish(
                false,
                format!(
                    "VERIFICATION FAILED: result {shown}, expected {}",
                    render(&expect)
                ),
            ),
            None => self.finish(
                false,
                format!("VERIFICATION SKIPPED (no expected result given): result {shown}"),
            ),
        }
    }
}

impl Task for WasmTask {
    fn kind(&self) -> &'static str {
        KIND
    }

    fn version(&self) -> u32 {
        VERSION
    }

    fn step(&mut self) -> Step {
        if let Some(o) = &self.outcome {
            return Step::Finished {
                verified: o.verified,
                report: o.report.clone(),
            };
        }
        // A single instruction (a bulk copy, a memory growth) may cost more
        // than a step's budget: the resumed call gets at least that much.
        let required = self.pending.as_ref().map_or(0, |c| c.required_fuel());
        let budget = self.gauge.budget().max(required);
        if let Err(e) = self.store.set_fuel(budget) {
            return self.fail(e.to_string());
        }
        let started = self.gauge.now_ns();
        let call = match (self.pending.take(), self.state.phase) {
            (Some(call), _) => call.resume(&mut self.store),
            (None, Phase::Init) => {
                let len = self.state.args.len() as i32;
                self.init.call_resumable(&mut self.store, len)
            }
            (None, Phase::Run) => self.step.call_resumable(&mut self.store, ()),
        };
        let left = self.store.get_fuel().unwrap_or(0);
        self.gauge.observe(
            budget.saturating_sub(left),
            self.gauge.now_ns().saturating_sub(started),
        );
        let step = match call {
            Ok(TypedResumableCall::Finished(value)) => self.returned(value),
            Ok(TypedResumableCall::OutOfFuel(call)) => {
                self.pending = Some(call);
                Step::Running
            }
            Ok(TypedResumableCall::HostTrap(call)) => {
                self.fail(format!("host function failed: {}", call.host_error()))
            }
            Err(e) => self.fail(format!("trap: {e}")),
        };
        self.state.pages = self.pages();
        step
    }

    fn progress(&self) -> Progress {
        match self.state.phase {
            // The total is known once init returned.
            Phase::Init => Progress { done: 0, total: 1 },
            Phase::Run => Progress {
                done: self.state.progress,
                total: self.state.total,
            },
        }
    }

    fn save<'a>(&'a self, snap: &mut Snapshot<'a>) -> Result<(), WriteError> {
        if self.pending.is_some() {
            return Err(WriteError::NotAtMigrationPoint);
        }
        snap.typed(
            "module",
            &ModuleRef {
                module: self.module.id,
                len: self.module.bytes.len() as u64,
            },
        )?;
        snap.typed("state", &self.state)?;
        let globals: Vec<GlobalValue> = self
            .globals
            .iter()
            .filter_map(|g| GlobalValue::from_val(&g.get(&self.store)))
            .collect();
        snap.typed("globals", &globals)?;
        snap.bulk_bytes("memory", self.memory.data(&self.store));
        Ok(())
    }

    fn clear_dirty(&mut self) {}

    fn at_migration_point(&self) -> bool {
        self.pending.is_none()
    }

    fn module(&self) -> Option<ModuleId> {
        Some(self.module.id)
    }

    fn take_log(&mut self) -> Vec<String> {
        let host = self.store.data_mut();
        let mut lines = core::mem::take(&mut host.log);
        if host.dropped > 0 {
            lines.push(format!("({} more lines not kept)", host.dropped));
            host.dropped = 0;
        }
        lines
    }
}
