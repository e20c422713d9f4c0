//! What a node checks in a module before it keeps it, and the one change it
//! makes: every defined mutable global is exported under a reserved name,
//! so that a checkpoint can read and a resumed task can set all of them
//! (wasmi reaches globals only through exports). The rewrite copies every
//! section byte for byte except the export section, which it rebuilds, and
//! drops custom sections (names, debug info): code indices do not change.
//! The rewritten module is what the node stores, sends to peers and names
//! by its SHA-256; rewriting it again changes nothing.

use alloc::borrow::Cow;
use alloc::format;
use alloc::string::{String, ToString};
use alloc::vec::Vec;

use sha2::{Digest, Sha256};
use tern_migration::{ModuleId, ModuleRefusal};
use wasm_encoder::{ExportKind, ExportSection, RawSection};
use wasmparser::{
    ExternalKind, FuncType, Operator, Parser, Payload, TypeRef, ValType, Validator, WasmFeatures,
};

/// The module of the ABI's one import.
pub const IMPORT_MODULE: &str = "tern";
/// The ABI's one import: `log(ptr: i32, len: i32)`, a line of UTF-8.
pub const IMPORT_LOG: &str = "log";
/// Prefix of the exports the rewrite adds: `__tern_global_<index>`.
pub const GLOBAL_EXPORT_PREFIX: &str = "__tern_global_";
/// The exported linear memory.
pub const EXPORT_MEMORY: &str = "memory";
/// `tern_args(len: i32) -> i32`: the address of a buffer for `len` bytes of
/// arguments (0 when they do not fit).
pub const EXPORT_ARGS: &str = "tern_args";
/// `tern_init(len: i32) -> i64`: reads the arguments; the task's total work
/// units, or a negative error code.
pub const EXPORT_INIT: &str = "tern_init";
/// `tern_step() -> i64`: a bounded amount of work; the work units done so
/// far, or a negative error code.
pub const EXPORT_STEP: &str = "tern_step";
/// `tern_result() -> i64`: after the last step, the result's address (low
/// 32 bits) and length (high 32 bits).
pub const EXPORT_RESULT: &str = "tern_result";

/// Bytes of a WebAssembly page.
pub const PAGE_BYTES: u64 = 65_536;

/// What a node accepts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Largest module, in bytes.
    pub max_module_bytes: usize,
    /// Most pages of linear memory a task may have, at start and by growing.
    pub max_pages: u32,
    /// Most fuel one step gets, however fast the node's clock says it runs
    /// (a bound on a turn if the clock misleads the fuel gauge).
    pub max_step_fuel: u64,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_module_bytes: 8 << 20,
            // 128 MiB.
            max_pages: 2048,
            // About 20 ms of a fast node's interpretation.
            max_step_fuel: 20_000_000,
        }
    }
}

/// A refusal: its typed reason and the details.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refusal {
    /// The reason peers see.
    pub reason: ModuleRefusal,
    /// What exactly (an import's name, the validator's message).
    pub detail: String,
}

impl Refusal {
    fn new(reason: ModuleRefusal, detail: impl Into<String>) -> Self {
        Self {
            reason,
            detail: detail.into(),
        }
    }
}

impl core::fmt::Display for Refusal {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        write!(f, "{}: {}", self.reason, self.detail)
    }
}

/// The type of a mutable global a checkpoint holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GlobalType {
    /// `i32`.
    I32,
    /// `i64`.
    I64,
    /// `f32` (its bits).
    F32,
    /// `f64` (its bits).
    F64,
}

/// What a checked module looks like.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ModuleInfo {
    /// Pages of memory at instantiation.
    pub initial_pages: u32,
    /// The mutable globals, by global index, each exported as
    /// `__tern_global_<index>`.
    pub mutable_globals: Vec<(u32, GlobalType)>,
}

/// A module checked and rewritten: what a node stores.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Prepared {
    /// The rewritten module.
    pub bytes: Vec<u8>,
    /// Its identity: SHA-256 of `bytes`.
    pub id: ModuleId,
    /// Its memory and globals.
    pub info: ModuleInfo,
}

/// The export name of mutable global `index`.
pub fn global_export(index: u32) -> String {
    format!("{GLOBAL_EXPORT_PREFIX}{index}")
}

/// The WebAssembly features a task may use: what wasmi runs, less SIMD,
/// threads, 64-bit and multiple memories, exceptions and GC.
fn features() -> WasmFeatures {
    let mut f = WasmFeatures::empty();
    for feature in [
        WasmFeatures::MUTABLE_GLOBAL,
        WasmFeatures::MULTI_VALUE,
        WasmFeatures::SATURATING_FLOAT_TO_INT,
        WasmFeatures::SIGN_EXTENSION,
        WasmFeatures::BULK_MEMORY,
        WasmFeatures::REFERENCE_TYPES,
        // Required by reference types.
        WasmFeatures::GC_TYPES,
        WasmFeatures::TAIL_CALL,
        WasmFeatures::EXTENDED_CONST,
        WasmFeatures::FLOATS,
    ] {
        f.set(feature, true);
    }
    f
}

/// The ABI's exported functions and their types (params, results).
const ABI_FUNCS: [(&str, &[ValType], &[ValType]); 4] = [
    (EXPORT_ARGS, &[ValType::I32], &[ValType::I32]),
    (EXPORT_INIT, &[ValType::I32], &[ValType::I64]),
    (EXPORT_STEP, &[], &[ValType::I64]),
    (EXPORT_RESULT, &[], &[ValType::I64]),
];

/// Checks `bytes` against the WebAssembly spec (with [`features`]) and the
/// task ABI (`docs/wasm-tasks.md`), then rewrites the exports; a module
/// that fails gets a typed refusal.
pub fn prepare(bytes: &[u8], limits: &Limits) -> Result<Prepared, Refusal> {
    use ModuleRefusal as R;
    if bytes.len() > limits.max_module_bytes {
        return Err(Refusal::new(
            R::TooLarge,
            format!(
                "{} bytes, at most {} accepted",
                bytes.len(),
                limits.max_module_bytes
            ),
        ));
    }
    Validator::new_with_features(features())
        .validate_all(bytes)
        .map_err(|e| Refusal::new(R::Malformed, e.to_string()))?;
    let scan = Scan::read(bytes)?;
    scan.check(limits)?;
    let rewritten = scan.rewrite(bytes);
    let id: ModuleId = Sha256::digest(&rewritten).into();
    Ok(Prepared {
        bytes: rewritten,
        id,
        info: scan.info(),
    })
}

/// One export as the module has it.
struct Export {
    name: String,
    kind: ExternalKind,
    index: u32,
}

/// What the checks need of a (valid) module, read in one pass.
#[derive(Default)]
struct Scan {
    /// Function types by type index (`None`: not a function type).
    types: Vec<Option<FuncType>>,
    /// Type index of each function (imports first).
    funcs: Vec<u32>,
    imported_funcs: u32,
    memories: Vec<wasmparser::MemoryType>,
    /// Each defined global: its value type and mutability.
    globals: Vec<(ValType, bool)>,
    exports: Vec<Export>,
}

impl Scan {
    fn read(bytes: &[u8]) -> Result<Self, Refusal> {
        use ModuleRefusal as R;
        let malformed =
            |e: wasmparser::BinaryReaderError| Refusal::new(R::Malformed, e.to_string());
        let mut scan = Self::default();
        for payload in Parser::new(0).parse_all(bytes) {
            match payload.map_err(malformed)? {
                Payload::TypeSection(reader) => {
                    for group in reader.into_iter_err_on_gc_types() {
                        scan.types.push(Some(group.map_err(malformed)?));
                    }
                }
                Payload::ImportSection(reader) => {
                    for import in reader {
                        let import = import.map_err(malformed)?;
                        let TypeRef::Func(ty) = import.ty else {
                            return Err(Refusal::new(
                                R::UnknownImport,
                                format!(
                                    "{}.{}: only the function {IMPORT_MODULE}.{IMPORT_LOG} may be imported",
                                    import.module, import.name
                                ),
                            ));
                        };
                        let log = [ValType::I32, ValType::I32];
                        let fits = scan.func_type(ty).is_some_and(|t| {
                            t.params() == log.as_slice() && t.results().is_empty()
                        });
                        if import.module != IMPORT_MODULE || import.name != IMPORT_LOG || !fits {
                            return Err(Refusal::new(
                                R::UnknownImport,
                                format!(
                                    "{}.{}: the only import is {IMPORT_MODULE}.{IMPORT_LOG}(i32, i32)",
                                    import.module, import.name
                                ),
                            ));
                        }
                        scan.funcs.push(ty);
                        scan.imported_funcs += 1;
                    }
                }
                Payload::FunctionSection(reader) => {
                    for ty in reader {
                        scan.funcs.push(ty.map_err(malformed)?);
                    }
                }
                Payload::MemorySection(reader) => {
                    for memory in reader {
                        scan.memories.push(memory.map_err(malformed)?);
                    }
                }
                Payload::GlobalSection(reader) => {
                    for global in reader {
                        let g = global.map_err(malformed)?;
                        scan.globals.push((g.ty.content_type, g.ty.mutable));
                    }
                }
                Payload::ExportSection(reader) => {
                    for export in reader {
                        let e = export.map_err(malformed)?;
                        scan.exports.push(Export {
                            name: e.name.into(),
                            kind: e.kind,
                            index: e.index,
                        });
                    }
                }
                Payload::StartSection { func, .. } => {
                    return Err(Refusal::new(
                        R::StartFunction,
                        format!("function {func} would run at instantiation"),
                    ));
                }
                Payload::CodeSectionEntry(body) => {
                    let mut ops = body.get_operators_reader().map_err(malformed)?;
                    while !ops.eof() {
                        match ops.read().map_err(malformed)? {
                            Operator::TableSet { .. }
                            | Operator::TableGrow { .. }
                            | Operator::TableFill { .. }
                            | Operator::TableCopy { .. }
                            | Operator::TableInit { .. } => {
                                return Err(Refusal::new(
                                    R::TableMutation,
                                    "a table's contents are not part of a checkpoint",
                                ));
                            }
                            Operator::DataDrop { .. } | Operator::ElemDrop { .. } => {
                                return Err(Refusal::new(
                                    R::SegmentDrop,
                                    "a dropped segment is not part of a checkpoint",
                                ));
                            }
                            _ => {}
                        }
                    }
                }
                _ => {}
            }
        }
        Ok(scan)
    }

    fn func_type(&self, type_index: u32) -> Option<&FuncType> {
        self.types.get(type_index as usize)?.as_ref()
    }

    fn check(&self, limits: &Limits) -> Result<(), Refusal> {
        use ModuleRefusal as R;
        let [memory] = self.memories.as_slice() else {
            return Err(Refusal::new(
                R::Memory,
                format!("{} memories defined, one expected", self.memories.len()),
            ));
        };
        if memory.memory64 || memory.shared {
            return Err(Refusal::new(
                R::Memory,
                "the memory must be 32-bit and unshared",
            ));
        }
        if memory.initial > u64::from(limits.max_pages) {
            return Err(Refusal::new(
                R::MemoryTooLarge,
                format!(
                    "{} pages at start, at most {} allowed",
                    memory.initial, limits.max_pages
                ),
            ));
        }
        let exported = |name: &str| self.exports.iter().find(|e| e.name == name);
        match exported(EXPORT_MEMORY) {
            Some(e) if e.kind == ExternalKind::Memory => {}
            Some(_) => {
                return Err(Refusal::new(
                    R::WrongExportType,
                    format!("'{EXPORT_MEMORY}' is not a memory"),
                ))
            }
            None => {
                return Err(Refusal::new(
                    R::MissingExport,
                    format!("no export '{EXPORT_MEMORY}'"),
                ))
            }
        }
        for (name, params, results) in ABI_FUNCS {
            let export = exported(name)
                .ok_or_else(|| Refusal::new(R::MissingExport, format!("no export '{name}'")))?;
            let ty = (export.kind == ExternalKind::Func)
                .then(|| self.funcs.get(export.index as usize))
                .flatten()
                .and_then(|&t| self.func_type(t));
            if !ty.is_some_and(|t| t.params() == params && t.results() == results) {
                return Err(Refusal::new(
                    R::WrongExportType,
                    format!("'{name}' must be a function {params:?} -> {results:?}"),
                ));
            }
        }
        for (i, (ty, mutable)) in self.globals.iter().enumerate() {
            if *mutable && global_type(*ty).is_none() {
                return Err(Refusal::new(
                    R::UnsupportedGlobal,
                    format!(
                        "mutable global {i} is a {ty}: only i32, i64, f32 and f64 can be saved"
                    ),
                ));
            }
        }
        Ok(())
    }

    fn info(&self) -> ModuleInfo {
        ModuleInfo {
            initial_pages: self.memories.first().map_or(0, |m| m.initial as u32),
            mutable_globals: self
                .globals
                .iter()
                .enumerate()
                .filter(|(_, (_, mutable))| *mutable)
                .filter_map(|(i, (ty, _))| Some((i as u32, global_type(*ty)?)))
                .collect(),
        }
    }

    /// The exports of the rewritten module: the module's own (less any
    /// under the reserved prefix), then one per mutable global.
    fn export_section(&self) -> ExportSection {
        let mut section = ExportSection::new();
        for e in &self.exports {
            if e.name.starts_with(GLOBAL_EXPORT_PREFIX) {
                continue;
            }
            let kind = match e.kind {
                ExternalKind::Func => ExportKind::Func,
                ExternalKind::Table => ExportKind::Table,
                ExternalKind::Memory => ExportKind::Memory,
                ExternalKind::Global => ExportKind::Global,
                ExternalKind::Tag => ExportKind::Tag,
            };
            section.export(&e.name, kind, e.index);
        }
        for (index, _) in self.info().mutable_globals {
            section.export(&global_export(index), ExportKind::Global, index);
        }
        section
    }

    /// `bytes` with the export section rebuilt and custom sections dropped;
    /// every other section copied as it is, in its place.
    fn rewrite(&self, bytes: &[u8]) -> Vec<u8> {
        let mut module = wasm_encoder::Module::new();
        // The module passed validation: every payload parses again.
        for payload in Parser::new(0).parse_all(bytes).flatten() {
            if let Payload::ExportSection(_) = payload {
                module.section(&self.export_section());
                continue;
            }
            if let Some((id, range)) = payload.as_section() {
                if id != 0 {
                    module.section(&RawSection {
                        id,
                        data: &bytes[range],
                    });
                }
            }
        }
        module.finish()
    }
}

/// A global value type a checkpoint holds.
fn global_type(ty: ValType) -> Option<GlobalType> {
    Some(match ty {
        ValType::I32 => GlobalType::I32,
        ValType::I64 => GlobalType::I64,
        ValType::F32 => GlobalType::F32,
        ValType::F64 => GlobalType::F64,
        _ => return None,
    })
}

/// Renders `bytes` for people: as text if it is printable ASCII, else hex.
pub fn render(bytes: &[u8]) -> Cow<'_, str> {
    if !bytes.is_empty() && bytes.iter().all(|b| (0x20..0x7f).contains(b)) {
        // Printable ASCII is UTF-8.
        Cow::Borrowed(core::str::from_utf8(bytes).unwrap_or_default())
    } else {
        Cow::Owned(hex(bytes))
    }
}

/// Lowercase hex digits of `bytes`.
pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Parses hex digits (either case) into bytes.
pub fn parse_hex(text: &str) -> Option<Vec<u8>> {
    if !text.len().is_multiple_of(2) || !text.is_ascii() {
        return None;
    }
    (0..text.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&text[i..i + 2], 16).ok())
        .collect()
}
