//! The Wasm task set as the live driver hands it to nodes: each program's
//! module, the arguments its reference answer was computed with and that
//! answer (`tern-tasks`' manifest, `target/wasm-tasks/manifest.json`, made
//! by `tern task build`), and the identity each module has on the nodes
//! once uploaded (a node rewrites a module's exports and names the result
//! by its SHA-256, alike on every node, so the identity is learned from
//! the first node's answer and asked of the others).

use std::collections::HashMap;
use std::path::Path;
use std::sync::{Arc, Mutex};

use tern_tasks::Manifest;

/// One program's module and its reference run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WasmModule {
    /// The module as built.
    pub bytes: Vec<u8>,
    /// The arguments the reference answer is for.
    pub args: Vec<String>,
    /// The result a run with those arguments must give.
    pub expected: String,
}

/// What a node is asked to run for a Wasm program.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WasmRun<'a> {
    /// The module.
    pub module: &'a WasmModule,
    /// The run's arguments.
    pub args: &'a [String],
}

impl WasmRun<'_> {
    /// `StartTask`'s arguments for this run of the module the nodes call
    /// `id`, named `name` on the node: the node compares the result with
    /// the reference answer itself.
    pub fn start_args(&self, id: &[u8; 32], name: &str) -> Vec<String> {
        tern_client::wasm_run_args(id, name, Some(&self.module.expected), self.args)
    }
}

/// The programs' modules, by program name, shared by every connection.
#[derive(Debug, Clone, Default)]
pub struct WasmSet {
    /// Shared: every connection (and every start) holds the set.
    modules: Arc<HashMap<String, WasmModule>>,
    /// Each program's module identity on the nodes, once a node told it.
    ids: Arc<Mutex<HashMap<String, [u8; 32]>>>,
}

impl WasmSet {
    /// The programs of `manifest`, their modules read from its files.
    pub fn from_manifest(manifest: &Manifest) -> Result<Self, String> {
        let mut set = Self::default();
        for built in &manifest.tasks {
            let bytes = std::fs::read(&built.wasm)
                .map_err(|e| format!("{}: reading {}: {e}", built.name, built.wasm.display()))?;
            set.insert(
                &built.name,
                WasmModule {
                    bytes,
                    args: built.args.clone(),
                    expected: built.expected.clone(),
                },
            );
        }
        Ok(set)
    }

    /// The programs of the manifest at `path`.
    pub fn load(path: &Path) -> Result<Self, String> {
        let manifest = Manifest::read(path).map_err(|e| e.to_string())?;
        Self::from_manifest(&manifest)
    }

    /// Adds (or replaces) `program`'s module.
    pub fn insert(&mut self, program: &str, module: WasmModule) {
        Arc::make_mut(&mut self.modules).insert(program.into(), module);
        self.ids
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(program);
    }

    /// Whether the set has no program.
    pub fn is_empty(&self) -> bool {
        self.modules.is_empty()
    }

    /// The run of `program` with `args` (its reference arguments when
    /// empty), or why there is none: a program without a module, or
    /// arguments without a reference answer (a run that could not be
    /// verified is not started).
    pub fn run<'a>(&'a self, program: &str, args: &'a [String]) -> Result<WasmRun<'a>, String> {
        let module = self.modules.get(program).ok_or_else(|| {
            format!("no module for {program} (build the task set: `tern task build`)")
        })?;
        let args = if args.is_empty() {
            module.args.as_slice()
        } else if args == module.args.as_slice() {
            args
        } else {
            return Err(format!(
                "{program} has a reference answer only for its arguments {:?}, not {args:?}",
                module.args.join(" ")
            ));
        };
        Ok(WasmRun { module, args })
    }

    /// The identity the nodes gave `program`'s module, if one did.
    pub fn id(&self, program: &str) -> Option<[u8; 32]> {
        self.ids
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(program)
            .copied()
    }

    /// Remembers the identity a node gave `program`'s module.
    pub fn learn(&self, program: &str, id: [u8; 32]) {
        self.ids
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(program.into(), id);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn set() -> WasmSet {
        let mut s = WasmSet::default();
        s.insert(
            "matrix",
            WasmModule {
                bytes: b"\0asm".to_vec(),
                args: vec!["140".into(), "13".into()],
                expected: "trace 1 2".into(),
            },
        );
        s
    }

    #[test]
    fn a_run_has_the_reference_arguments_and_answer_or_says_why_not() {
        let s = set();
        let none: Vec<String> = Vec::new();
        let run = s.run("matrix", &none).unwrap();
        assert_eq!(run.args, ["140", "13"]);
        let id = [0xab; 32];
        let args = run.start_args(&id, "m1");
        assert_eq!(args[0], "wasm");
        assert_eq!(args[1], "ab".repeat(32));
        assert_eq!(&args[2..5], ["--name", "m1", "--expect"]);
        assert_eq!(args[5], tern_client::hex(b"trace 1 2"));
        assert_eq!(&args[6..], ["--", "140", "13"]);
        let same = vec!["140".to_string(), "13".to_string()];
        assert_eq!(s.run("matrix", &same).unwrap().args, ["140", "13"]);
        let other = vec!["200".to_string()];
        assert!(s
            .run("matrix", &other)
            .unwrap_err()
            .contains("reference answer only"));
        assert!(s.run("maze", &none).unwrap_err().contains("no module"));
    }

    #[test]
    fn identities_are_learned_once_and_forgotten_with_a_new_module() {
        let mut s = set();
        assert_eq!(s.id("matrix"), None);
        let shared = s.clone();
        shared.learn("matrix", [1; 32]);
        assert_eq!(s.id("matrix"), Some([1; 32]), "shared by clones");
        s.insert("matrix", s.modules["matrix"].clone());
        assert_eq!(s.id("matrix"), None);
    }
}
