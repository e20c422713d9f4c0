//! Where checkpoints come from. Files today; a live node (a checkpoint streamed
//! over TCP by the node's control service) is another [`Origin`], and every verb
//! works on it unchanged because they only consume the byte stream.

use anyhow::{Context, Result};
use std::io::{BufReader, Read};
use std::path::PathBuf;

/// A source of one checkpoint's bytes.
pub trait Origin {
    /// Name for messages (a path, or a node address).
    fn name(&self) -> String;
    /// Opens the byte stream, from the first byte.
    fn open(&self) -> Result<Box<dyn Read>>;
}

/// A checkpoint file.
pub struct FileOrigin(pub PathBuf);

impl Origin for FileOrigin {
    fn name(&self) -> String {
        self.0.display().to_string()
    }
    fn open(&self) -> Result<Box<dyn Read>> {
        let f = std::fs::File::open(&self.0)
            .with_context(|| format!("opening {}", self.0.display()))?;
        Ok(Box::new(BufReader::new(f)))
    }
}
