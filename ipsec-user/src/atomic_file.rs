//! One way to replace a small file so that it survives `kill -9` and power loss: the state
//! file, the sequence reservations and the replay ceilings all go through [`write`].
//!
//! Contract: [`write`] writes `{path}.tmp` (mode 0600, truncated or created), fsyncs it, renames
//! it over `path` and fsyncs the directory. A reader, or a restart after a crash at any point,
//! sees the old file or the new one, never a torn one; once it returns `Ok` the new contents are
//! durable. A stale temporary file (a crash before the rename) is simply overwritten. On error
//! the file at `path` is unchanged and the error names the step that failed.

use std::ffi::OsString;
use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

/// A failed step of [`write`].
#[derive(Debug, thiserror::Error)]
#[error("cannot {call} {}", path.display())]
pub struct AtomicWriteError {
    /// The step: `create`, `chmod`, `write`, `fsync`, `rename`.
    pub call: &'static str,
    /// The file or directory it was applied to.
    pub path: PathBuf,
    #[source]
    pub source: io::Error,
}

impl From<AtomicWriteError> for io::Error {
    fn from(e: AtomicWriteError) -> Self {
        io::Error::new(e.source.kind(), e)
    }
}

/// The temporary file [`write`] uses for `path`: its name with `.tmp` appended.
#[must_use]
pub fn temporary(path: &Path) -> PathBuf {
    let mut name = OsString::from(path.as_os_str());
    name.push(".tmp");
    PathBuf::from(name)
}

/// Replaces `path` with `bytes`; see the module contract.
///
/// # Errors
/// [`AtomicWriteError`] naming the step and the path; `path` keeps its old contents.
pub fn write(path: &Path, bytes: &[u8]) -> Result<(), AtomicWriteError> {
    let tmp = temporary(path);
    let step = |call: &'static str, path: &Path| {
        let path = path.to_path_buf();
        move |source| AtomicWriteError { call, path, source }
    };
    let mut file = OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(&tmp)
        .map_err(step("create", &tmp))?;
    // The umask can only narrow 0600, and an old temporary file keeps its mode: be explicit,
    // these files hold keys or the state that protects them.
    file.set_permissions(fs::Permissions::from_mode(0o600))
        .map_err(step("chmod", &tmp))?;
    file.write_all(bytes).map_err(step("write", &tmp))?;
    file.sync_all().map_err(step("fsync", &tmp))?;
    drop(file);
    fs::rename(&tmp, path).map_err(step("rename", &tmp))?;
    // The rename is durable only once the directory entry is on disk.
    let dir = match path.parent() {
        Some(dir) if !dir.as_os_str().is_empty() => dir,
        _ => Path::new("."),
    };
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(step("fsync", dir))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A fresh temporary directory holding `f.json`, written once with `bytes`.
    fn written(bytes: &[u8]) -> (tempfile::TempDir, PathBuf) {
        let dir = tempfile::tempdir().expect("creating a temp dir");
        let path = dir.path().join("f.json");
        write(&path, bytes).expect("first write");
        (dir, path)
    }

    #[test]
    fn replaces_the_file_privately_and_leaves_no_temporary_file() {
        let (_dir, path) = written(b"one");
        // A stale, torn temporary file from a crash is overwritten.
        fs::write(temporary(&path), b"{\"tor").expect("leaving a torn temporary file");
        write(&path, b"two").expect("second write");
        assert_eq!(fs::read(&path).expect("reading back"), b"two");
        assert!(!temporary(&path).exists());
        let mode = fs::metadata(&path).expect("stat").permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
    }

    #[test]
    fn a_failed_write_names_its_step_and_changes_nothing() {
        let (_dir, path) = written(b"old");
        // The temporary file's name taken by a directory: every write fails, as on a full disk.
        fs::create_dir(temporary(&path)).expect("blocking writes");
        let err = write(&path, b"new").expect_err("the write must fail");
        assert_eq!(err.call, "create");
        assert!(err.to_string().contains("f.json.tmp"), "{err}");
        assert_eq!(fs::read(&path).expect("reading back"), b"old");
    }
}
