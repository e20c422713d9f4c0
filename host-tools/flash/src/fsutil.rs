//! Files written whole or not at all: into a temporary in the destination's
//! directory, then renamed over the destination, so that a failure (or a
//! Ctrl-C) never leaves a half-written kernel or image behind.

use std::fs::{self, File, Permissions};
use std::io::{self, Write};
use std::os::unix::fs::PermissionsExt;
use std::path::Path;

use tempfile::NamedTempFile;

use crate::FlashError;

/// Writes `bytes` to `path` atomically.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<(), FlashError> {
    create_atomic(path, |file| file.write_all(bytes))
}

/// Creates `path` atomically: `fill` writes the temporary, which is renamed
/// to `path` only if `fill` succeeds.
pub fn create_atomic(
    path: &Path,
    fill: impl FnOnce(&mut File) -> io::Result<()>,
) -> Result<(), FlashError> {
    let error = |source| FlashError::Write {
        path: path.to_owned(),
        source,
    };
    let mut temp = temporary_beside(path).map_err(error)?;
    fill(temp.as_file_mut()).map_err(error)?;
    temp.as_file().sync_all().map_err(error)?;
    temp.persist(path).map_err(|e| error(e.error))?;
    Ok(())
}

/// A temporary file in `path`'s directory (so the rename stays on one file
/// system), readable by others like a file created the ordinary way.
pub fn temporary_beside(path: &Path) -> io::Result<NamedTempFile> {
    let dir = match path.parent() {
        Some(dir) if !dir.as_os_str().is_empty() => dir,
        _ => Path::new("."),
    };
    let temp = tempfile::Builder::new()
        .prefix(".tern-flash-")
        .tempfile_in(dir)?;
    fs::set_permissions(temp.path(), Permissions::from_mode(0o644))?;
    Ok(temp)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn writes_and_replaces_whole_files() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("kernel8.img");
        write_atomic(&path, b"first").unwrap();
        write_atomic(&path, b"second").unwrap();
        assert_eq!(fs::read(&path).unwrap(), b"second");
        assert_eq!(
            fs::read_dir(dir.path()).unwrap().count(),
            1,
            "no temporary left"
        );
    }

    #[test]
    fn a_failed_write_leaves_the_old_file_and_no_temporary() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("config.txt");
        write_atomic(&path, b"old").unwrap();
        let result = create_atomic(&path, |file| {
            file.write_all(b"half")?;
            Err(io::Error::other("disk full"))
        });
        assert!(matches!(result, Err(FlashError::Write { .. })));
        assert_eq!(fs::read(&path).unwrap(), b"old");
        assert_eq!(fs::read_dir(dir.path()).unwrap().count(), 1);
    }

    #[test]
    fn a_missing_directory_is_a_write_error() {
        let result = write_atomic(Path::new("/nonexistent-tern-dir/x"), b"x");
        assert!(matches!(result, Err(FlashError::Write { .. })));
    }
}
