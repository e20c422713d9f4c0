//! The Wasm task set: the thesis's nine programs (its Table 5-1), some in C
//! and some in Rust, under stable names (`maze`, `sha256`, `13queen`,
//! `quicksort`, `hashzip`, `dynamic`, `huffman`, `calcpi`, `matrix`).
//! [`build`] turns one into a module (`target/wasm-tasks/<name>.wasm`) and
//! computes its reference answer with a native build of the same source;
//! [`build_all`] does all nine and writes `target/wasm-tasks/manifest.json`,
//! which other tools read ([`Manifest`]). A run on a node passes the
//! reference as `--expect`, so the node itself says whether it verified.

use std::path::{Path, PathBuf};
use std::process::Command;

use serde::{Deserialize, Serialize};
use tern_flash::build::Workspace;
use thiserror::Error;

/// Debian's C compiler for wasm32 and the native reference builds.
pub const CLANG: &str = "clang-19";

/// How a program is written.
#[derive(Debug, Clone, Copy)]
pub enum Source {
    /// A Rust crate (`tasks/programs/<name>`) with the SDK, and the native
    /// run of its task.
    Rust {
        /// Its package.
        package: &'static str,
        /// Runs it natively for the reference answer.
        reference: fn(&[&str]) -> Result<Vec<u8>, String>,
    },
    /// A C file (`tasks/programs/<name>/<name>.c`) with `tern_task.h`.
    C,
}

/// One program of the set.
#[derive(Debug, Clone, Copy)]
pub struct Program {
    /// Its stable name.
    pub name: &'static str,
    /// What it computes.
    pub about: &'static str,
    /// Its source.
    pub source: Source,
    /// The arguments of a run of a few seconds on the slowest QEMU node.
    pub args: &'static [&'static str],
}

/// The nine programs.
pub const PROGRAMS: [Program; 9] = [
    Program {
        name: "maze",
        about: "shortest path through a carved maze (C)",
        source: Source::C,
        args: &["300", "300", "1"],
    },
    Program {
        name: "sha256",
        about: "SHA-256 of a pseudo-random stream (Rust, sha2)",
        source: Source::Rust {
            package: "tern-task-sha256",
            reference: tern_task::run::<tern_task_sha256::Sha256Task>,
        },
        args: &["2048", "1"],
    },
    Program {
        name: "13queen",
        about: "solutions of the 13-queens problem (C)",
        source: Source::C,
        args: &["13"],
    },
    Program {
        name: "quicksort",
        about: "quicksort of pseudo-random numbers (C)",
        source: Source::C,
        args: &["200000", "3"],
    },
    Program {
        name: "hashzip",
        about: "files deflated and hashed (Rust, miniz_oxide and sha2)",
        source: Source::Rust {
            package: "tern-task-hashzip",
            reference: tern_task::run::<tern_task_hashzip::HashZip>,
        },
        args: &["16", "16384", "7"],
    },
    Program {
        name: "dynamic",
        about: "longest common subsequence by dynamic programming (Rust)",
        source: Source::Rust {
            package: "tern-task-dynamic",
            reference: tern_task::run::<tern_task_dynamic::Lcs>,
        },
        args: &["1500", "11"],
    },
    Program {
        name: "huffman",
        about: "Huffman coding and decoding of pseudo-text (C)",
        source: Source::C,
        args: &["300000", "5"],
    },
    Program {
        name: "calcpi",
        about: "digits of pi by a spigot (Rust)",
        source: Source::Rust {
            package: "tern-task-calcpi",
            reference: tern_task::run::<tern_task_calcpi::Pi>,
        },
        args: &["1000"],
    },
    Program {
        name: "matrix",
        about: "product of two f64 matrices (Rust)",
        source: Source::Rust {
            package: "tern-task-matrix",
            reference: tern_task::run::<tern_task_matrix::Matrix>,
        },
        args: &["140", "13"],
    },
];

/// Programs outside the thesis's set, built on demand (not by
/// [`build_all`]): `npb`, the kernels' own NPB code as a Wasm task, for the
/// interpreter benchmark (`ci/benches/wasm.rs`).
pub const EXTRA_PROGRAMS: [Program; 1] = [Program {
    name: "npb",
    about: "an NPB workload of the kernels' own code: ep, is or cg and a class (Rust)",
    source: Source::Rust {
        package: "tern-task-npb",
        reference: tern_task::run::<tern_task_npb::Npb>,
    },
    args: &["cg", "S"],
}];

/// The program called `name`, of the set or [`EXTRA_PROGRAMS`].
pub fn program(name: &str) -> Option<&'static Program> {
    PROGRAMS
        .iter()
        .chain(&EXTRA_PROGRAMS)
        .find(|p| p.name == name)
}

/// Why a program could not be built or its reference computed.
#[derive(Debug, Error)]
pub enum TasksError {
    /// The workspace was not found.
    #[error(transparent)]
    Workspace(#[from] tern_flash::FlashError),
    /// A compiler or the native run could not start.
    #[error("running {program}: {source} (ci/setup.sh installs {CLANG} and the wasm32 target)")]
    Spawn {
        /// The program.
        program: String,
        /// The error.
        source: std::io::Error,
    },
    /// A build failed.
    #[error("building {name} failed:\n{output}")]
    Build {
        /// The task.
        name: String,
        /// What the compiler said.
        output: String,
    },
    /// The native reference run failed.
    #[error("the native run of {name} failed: {why}")]
    Reference {
        /// The task.
        name: String,
        /// Why.
        why: String,
    },
    /// Reading or writing a file failed.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: String,
        /// The error.
        source: std::io::Error,
    },
    /// The manifest does not parse.
    #[error("manifest {path}: {source}")]
    Manifest {
        /// The file.
        path: String,
        /// The error.
        source: serde_json::Error,
    },
}

/// A built program: its module and its reference answer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Built {
    /// The program's name.
    pub name: String,
    /// The module.
    pub wasm: PathBuf,
    /// The arguments the reference was computed with.
    pub args: Vec<String>,
    /// The result a run with these arguments must give (UTF-8 text).
    pub expected: String,
}

/// Every built program, as `manifest.json` lists them.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Manifest {
    /// The programs.
    pub tasks: Vec<Built>,
}

impl Manifest {
    /// The entry of `name`.
    pub fn get(&self, name: &str) -> Option<&Built> {
        self.tasks.iter().find(|t| t.name == name)
    }

    /// Reads a manifest written by [`build_all`].
    pub fn read(path: &Path) -> Result<Self, TasksError> {
        let text = std::fs::read(path).map_err(|source| TasksError::Io {
            path: path.display().to_string(),
            source,
        })?;
        serde_json::from_slice(&text).map_err(|source| TasksError::Manifest {
            path: path.display().to_string(),
            source,
        })
    }
}

/// Where the modules, the native builds and the manifest go.
pub fn out_dir(ws: &Workspace) -> PathBuf {
    ws.target_dir.join("wasm-tasks")
}

/// The manifest's path.
pub fn manifest_path(ws: &Workspace) -> PathBuf {
    out_dir(ws).join("manifest.json")
}

fn run(mut command: Command, name: &str) -> Result<std::process::Output, TasksError> {
    let program = command.get_program().to_string_lossy().into_owned();
    let out = command
        .output()
        .map_err(|source| TasksError::Spawn { program, source })?;
    if !out.status.success() {
        return Err(TasksError::Build {
            name: name.into(),
            output: format!(
                "{}{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            ),
        });
    }
    Ok(out)
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> TasksError + '_ {
    move |source| TasksError::Io {
        path: path.display().to_string(),
        source,
    }
}

/// Builds program `p`'s module and computes its reference answer for
/// `args` (the program's default arguments when `None`).
pub fn build(ws: &Workspace, p: &Program, args: Option<&[&str]>) -> Result<Built, TasksError> {
    let out = out_dir(ws);
    std::fs::create_dir_all(&out).map_err(io(&out))?;
    let wasm = out.join(format!("{}.wasm", p.name));
    let args: Vec<&str> = args.unwrap_or(p.args).to_vec();
    let expected = match p.source {
        Source::Rust { package, reference } => {
            let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
            let mut c = Command::new(cargo);
            c.current_dir(&ws.root)
                .env("CARGO_TARGET_DIR", &out)
                .args(["build", "--quiet", "--profile", "wasm-task"])
                .args(["--target", "wasm32-unknown-unknown", "-p", package]);
            run(c, p.name)?;
            let built = out
                .join("wasm32-unknown-unknown/wasm-task")
                .join(format!("{}.wasm", package.replace('-', "_")));
            std::fs::copy(&built, &wasm).map_err(io(&built))?;
            reference(&args).map_err(|why| TasksError::Reference {
                name: p.name.into(),
                why,
            })?
        }
        Source::C => {
            let src = ws
                .root
                .join("tasks/programs")
                .join(p.name)
                .join(format!("{}.c", p.name));
            let include = ws.root.join("tasks/include");
            let mut c = Command::new(CLANG);
            c.args(["--target=wasm32", "-O2", "-nostdlib", "-Wl,--no-entry"])
                .arg("-I")
                .arg(&include)
                .arg("-o")
                .arg(&wasm)
                .arg(&src);
            run(c, p.name)?;
            let native = out.join(format!("{}-native", p.name));
            let mut c = Command::new(CLANG);
            c.args(["-O2", "-ffp-contract=off", "-I"])
                .arg(&include)
                .arg("-o")
                .arg(&native)
                .arg(&src)
                .arg(include.join("tern_native.c"));
            run(c, p.name)?;
            let mut c = Command::new(&native);
            c.args(&args);
            run(c, p.name)
                .map_err(|e| TasksError::Reference {
                    name: p.name.into(),
                    why: e.to_string(),
                })?
                .stdout
        }
    };
    Ok(Built {
        name: p.name.into(),
        wasm,
        args: args.iter().map(|a| a.to_string()).collect(),
        expected: String::from_utf8_lossy(&expected).into_owned(),
    })
}

/// Builds the nine programs and writes the manifest (through a temporary
/// file and a rename).
pub fn build_all(ws: &Workspace) -> Result<Manifest, TasksError> {
    let tasks = PROGRAMS
        .iter()
        .map(|p| build(ws, p, None))
        .collect::<Result<Vec<_>, _>>()?;
    let manifest = Manifest { tasks };
    let path = manifest_path(ws);
    let tmp = path.with_extension("json.tmp");
    let json = serde_json::to_vec_pretty(&manifest).map_err(|source| TasksError::Manifest {
        path: path.display().to_string(),
        source,
    })?;
    std::fs::write(&tmp, json).map_err(io(&tmp))?;
    std::fs::rename(&tmp, &path).map_err(io(&path))?;
    Ok(manifest)
}
