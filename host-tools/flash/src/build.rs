//! Building a board's kernel with cargo, in release mode, for its target.

use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use crate::board::KernelBuild;
use crate::{Board, FlashError, Variant};

/// The Tern workspace `flash` works in.
#[derive(Clone, Debug)]
pub struct Workspace {
    /// The directory of the workspace's root `Cargo.toml`.
    pub root: PathBuf,
    /// Cargo's target directory for host builds.
    pub target_dir: PathBuf,
}

impl Workspace {
    /// Finds the workspace around the current directory (`cargo
    /// locate-project --workspace`), else the one `flash` was built from (so
    /// an installed `flash` still builds kernels from its sources); the
    /// target directory is `$CARGO_TARGET_DIR` or `<root>/target`.
    pub fn locate() -> Result<Self, FlashError> {
        let manifest = locate_from(None).or_else(|error| {
            let sources = Path::new(env!("CARGO_MANIFEST_DIR"));
            if sources.is_dir() {
                locate_from(Some(sources))
            } else {
                Err(error)
            }
        })?;
        let root = manifest
            .parent()
            .ok_or_else(|| FlashError::NotInWorkspace(manifest.display().to_string()))?
            .to_owned();
        let target_dir = match std::env::var_os("CARGO_TARGET_DIR") {
            Some(dir) => absolute(Path::new(&dir)),
            None => root.join("target"),
        };
        Ok(Self { root, target_dir })
    }

    /// Where kernels are built: a target directory of their own, so that a
    /// cargo run from inside `cargo run` or `cargo test` never waits for the
    /// lock the outer cargo holds on the host target directory.
    pub fn kernels_dir(&self) -> PathBuf {
        self.target_dir.join("kernels")
    }

    /// The path of the built `variant` kernel of `board`.
    pub fn kernel_path(&self, board: Board, variant: Variant) -> Result<PathBuf, FlashError> {
        Ok(self
            .kernels_dir()
            .join(board.target())
            .join("release")
            .join(board.bin(variant)?))
    }

    /// Builds the `variant` kernel of `board` in release mode and returns its
    /// ELF's path. `quiet` hides cargo's progress (errors still show).
    pub fn build_kernel(
        &self,
        board: Board,
        variant: Variant,
        quiet: bool,
    ) -> Result<PathBuf, FlashError> {
        let bin = board.bin(variant)?;
        let (mut command, program) = match board.kernel_build() {
            KernelBuild::Stable { target } => {
                let mut command = Command::new(cargo());
                command.args(["build", "--target", target]);
                (command, "cargo")
            }
            KernelBuild::PinnedNightly {
                toolchain,
                target_spec,
            } => {
                // rustup's `run` picks the toolchain whatever the workspace's
                // rust-toolchain.toml says; the outer cargo's own variables
                // would point the inner one back at the stable compiler.
                let mut command = Command::new("rustup");
                command
                    .args(["run", toolchain, "cargo", "build", "--target"])
                    .arg(self.root.join(target_spec))
                    .args([
                        "-Zjson-target-spec",
                        "-Zbuild-std=core,alloc",
                        "-Zbuild-std-features=compiler-builtins-mem",
                    ])
                    .env_remove("CARGO")
                    .env_remove("RUSTC")
                    .env_remove("RUSTDOC")
                    .env_remove("RUSTUP_TOOLCHAIN");
                (command, "rustup")
            }
        };
        command
            .current_dir(&self.root)
            .env("CARGO_TARGET_DIR", self.kernels_dir())
            .args(["--release", "-p", board.package(), "--bin", bin]);
        if quiet {
            command.arg("--quiet");
        }
        let status = command.status().map_err(|source| FlashError::Spawn {
            program: program.into(),
            source,
        })?;
        if !status.success() {
            return Err(FlashError::BuildFailed {
                package: board.package(),
                bin,
                status,
            });
        }
        self.kernel_path(board, variant)
    }
}

/// The workspace manifest found by cargo from `dir` (default: the current directory).
fn locate_from(dir: Option<&Path>) -> Result<PathBuf, FlashError> {
    let mut command = Command::new(cargo());
    command.args(["locate-project", "--workspace", "--message-format", "plain"]);
    if let Some(dir) = dir {
        command.current_dir(dir);
    }
    let output = command
        .stderr(Stdio::piped())
        .output()
        .map_err(|source| FlashError::Spawn {
            program: "cargo".into(),
            source,
        })?;
    if !output.status.success() {
        return Err(FlashError::NotInWorkspace(
            String::from_utf8_lossy(&output.stderr).trim().to_owned(),
        ));
    }
    Ok(PathBuf::from(
        String::from_utf8_lossy(&output.stdout).trim(),
    ))
}

/// The cargo that runs us (set by `cargo run` and `cargo test`), else the one on PATH.
fn cargo() -> OsString {
    std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into())
}

fn absolute(path: &Path) -> PathBuf {
    std::path::absolute(path).unwrap_or_else(|_| path.to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kernels_are_built_in_their_own_target_dir() {
        let workspace = Workspace::locate().unwrap();
        assert!(
            workspace.root.join("boards").is_dir(),
            "{:?}",
            workspace.root
        );
        assert_eq!(
            workspace.kernel_path(Board::Pc, Variant::Tern).unwrap(),
            workspace
                .target_dir
                .join("kernels/x86_64-tern-pc/release/tern-pc")
        );
    }
}
