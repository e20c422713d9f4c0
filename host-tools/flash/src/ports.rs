//! The serial port last used per board, remembered in the user's
//! configuration (`$XDG_CONFIG_HOME/tern/flash.toml`, else
//! `~/.config/tern/flash.toml`), so that `flash --serial` needs the port
//! only once, as espflash does.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::{fsutil, Board, FlashError};

/// The file's contents.
#[derive(Debug, Default, Serialize, Deserialize)]
struct Config {
    /// Board name to port (a device path or `tcp:HOST:PORT`).
    #[serde(default)]
    serial: BTreeMap<String, String>,
}

/// Where ports are remembered.
#[derive(Clone, Debug)]
pub struct PortMemory {
    path: PathBuf,
}

impl PortMemory {
    /// The user's configuration file, from `$XDG_CONFIG_HOME` or `$HOME`.
    pub fn user() -> Result<Self, FlashError> {
        let base = match std::env::var_os("XDG_CONFIG_HOME").filter(|dir| !dir.is_empty()) {
            Some(dir) => PathBuf::from(dir),
            None => std::env::var_os("HOME")
                .filter(|dir| !dir.is_empty())
                .map(|home| PathBuf::from(home).join(".config"))
                .ok_or(FlashError::NoConfigDir)?,
        };
        Ok(Self::at(base.join("tern").join("flash.toml")))
    }

    /// A specific file.
    pub fn at(path: impl Into<PathBuf>) -> Self {
        Self { path: path.into() }
    }

    /// The file's path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    fn load(&self) -> Result<Config, FlashError> {
        match std::fs::read_to_string(&self.path) {
            Ok(text) => toml::from_str(&text).map_err(|error| FlashError::Config {
                path: self.path.clone(),
                reason: error.to_string(),
            }),
            Err(error) if error.kind() == std::io::ErrorKind::NotFound => Ok(Config::default()),
            Err(error) => Err(FlashError::Config {
                path: self.path.clone(),
                reason: error.to_string(),
            }),
        }
    }

    /// The port last used for `board`, if any.
    pub fn recall(&self, board: Board) -> Result<Option<String>, FlashError> {
        Ok(self.load()?.serial.remove(board.name()))
    }

    /// Remembers `port` for `board`, keeping the other boards' ports.
    pub fn remember(&self, board: Board, port: &str) -> Result<(), FlashError> {
        let mut config = self.load()?;
        config
            .serial
            .insert(board.name().to_owned(), port.to_owned());
        let text = toml::to_string(&config).map_err(|error| FlashError::Config {
            path: self.path.clone(),
            reason: error.to_string(),
        })?;
        if let Some(dir) = self.path.parent() {
            std::fs::create_dir_all(dir).map_err(|source| FlashError::Write {
                path: dir.to_owned(),
                source,
            })?;
        }
        fsutil::write_atomic(&self.path, text.as_bytes())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn remembers_the_last_port_per_board() {
        let dir = tempfile::tempdir().unwrap();
        let memory = PortMemory::at(dir.path().join("tern/flash.toml"));
        assert_eq!(memory.recall(Board::Rpi4).unwrap(), None);
        memory.remember(Board::Rpi4, "/dev/ttyUSB0").unwrap();
        memory.remember(Board::Pc, "tcp:127.0.0.1:4444").unwrap();
        memory.remember(Board::Rpi4, "/dev/ttyUSB1").unwrap();
        let again = PortMemory::at(memory.path());
        assert_eq!(
            again.recall(Board::Rpi4).unwrap().as_deref(),
            Some("/dev/ttyUSB1")
        );
        assert_eq!(
            again.recall(Board::Pc).unwrap().as_deref(),
            Some("tcp:127.0.0.1:4444")
        );
        assert_eq!(again.recall(Board::Virt).unwrap(), None);
    }

    #[test]
    fn a_damaged_file_is_a_config_error() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("flash.toml");
        std::fs::write(&path, "serial = [not toml").unwrap();
        assert!(matches!(
            PortMemory::at(&path).recall(Board::Rpi4),
            Err(FlashError::Config { .. })
        ));
    }
}
