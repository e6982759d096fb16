//! Persistence of the policy database: `{state_dir}/state.json`.
//!
//! Contract:
//! - The file is `{"version": 1, "generation": N, "spd": ...}`, mode 0600, in a directory
//!   created 0700 (it holds keys). `generation` counts the committed changes (see
//!   `protocol`); a file written before it existed reads as generation 0.
//! - [`StateStore::save`] is atomic and durable (`crate::atomic_file`: temporary file in the same
//!   directory, write, fsync, rename over `state.json`, fsync the directory). When it returns `Ok`, the new state
//!   survives kill -9 and power loss; a reader never sees a half-written file.
//! - [`StateStore::open`] reads it back: a missing file is the empty state; a file that cannot be
//!   read, does not parse, has an unknown version or fails `Spd::validate` is
//!   [`StateError::Corrupt`], and is never written over (the daemon refuses to start).
//! - One daemon per state directory: `open` takes an exclusive `flock` on `{state_dir}/lock`
//!   for the life of the store, so two daemons can never interleave their writes.

use std::fs::{self, DirBuilder, File, OpenOptions};
use std::io;
use std::os::fd::AsRawFd;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::model::Spd;

/// The only state file layout this build reads and writes.
pub const STATE_VERSION: u64 = 1;
const STATE_FILE: &str = "state.json";
const LOCK_FILE: &str = "lock";

/// Why the state could not be opened or saved.
#[derive(Debug, thiserror::Error)]
pub enum StateError {
    #[error("state file {} is corrupt: {reason}; fix or move it away", path.display())]
    Corrupt { path: PathBuf, reason: String },
    #[error("cannot create state directory {}", path.display())]
    CreateDir {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("state directory {} is in use by another xipsec daemon", path.display())]
    Locked { path: PathBuf },
    #[error("cannot {call} {}", path.display())]
    Io {
        call: &'static str,
        path: PathBuf,
        #[source]
        source: io::Error,
    },
}

/// The state directory of one daemon, locked for its lifetime.
#[derive(Debug)]
pub struct StateStore {
    path: PathBuf,
    // Held only for its flock: closing the file releases the lock, also on kill -9.
    _lock: File,
}

#[derive(Serialize)]
struct StateFileRef<'a> {
    version: u64,
    generation: u64,
    spd: &'a Spd,
}

/// What a state file holds: the policy database and its configuration generation.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Saved {
    pub spd: Spd,
    pub generation: u64,
}

impl StateStore {
    /// Create (0700) and lock `dir`, then load its state; see the module docs.
    pub fn open(dir: &Path) -> Result<(Self, Saved), StateError> {
        DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir)
            .map_err(|source| StateError::CreateDir {
                path: dir.to_owned(),
                source,
            })?;
        let lock_path = dir.join(LOCK_FILE);
        let lock = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .mode(0o600)
            .open(&lock_path)
            .map_err(|source| StateError::Io {
                call: "open",
                path: lock_path.clone(),
                source,
            })?;
        // SAFETY: flock on a file descriptor we own and keep open; no memory is involved.
        if unsafe { libc::flock(lock.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) } != 0 {
            let source = io::Error::last_os_error();
            return Err(if source.kind() == io::ErrorKind::WouldBlock {
                StateError::Locked {
                    path: dir.to_owned(),
                }
            } else {
                StateError::Io {
                    call: "flock",
                    path: lock_path,
                    source,
                }
            });
        }
        let store = Self {
            path: dir.join(STATE_FILE),
            _lock: lock,
        };
        let saved = store.load()?;
        Ok((store, saved))
    }

    /// Path of `state.json`.
    pub fn path(&self) -> &Path {
        &self.path
    }

    fn load(&self) -> Result<Saved, StateError> {
        let corrupt = |reason: String| StateError::Corrupt {
            path: self.path.clone(),
            reason,
        };
        let bytes = match fs::read(&self.path) {
            Ok(bytes) => bytes,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Saved::default()),
            Err(e) => return Err(corrupt(format!("cannot read it: {e}"))),
        };
        parse_saved(&bytes).map_err(corrupt)
    }

    /// Replace `state.json` with `spd` at `generation`, atomically and durably; see the module
    /// docs.
    pub fn save(&self, spd: &Spd, generation: u64) -> Result<(), StateError> {
        let mut bytes = serde_json::to_vec(&StateFileRef {
            version: STATE_VERSION,
            generation,
            spd,
        })
        .map_err(|e| StateError::Io {
            call: "serialise",
            path: self.path.clone(),
            source: io::Error::other(e),
        })?;
        bytes.push(b'\n');
        crate::atomic_file::write(&self.path, &bytes).map_err(|e| StateError::Io {
            call: e.call,
            path: e.path,
            source: e.source,
        })?;
        Ok(())
    }
}

/// Parse and check a state file's bytes; the error is the reason it is corrupt.
pub fn parse(bytes: &[u8]) -> Result<Spd, String> {
    parse_saved(bytes).map(|saved| saved.spd)
}

/// [`parse`], with the configuration generation.
pub fn parse_saved(bytes: &[u8]) -> Result<Saved, String> {
    let value: serde_json::Value =
        serde_json::from_slice(bytes).map_err(|e| format!("not JSON: {e}"))?;
    let object = value
        .as_object()
        .ok_or("expected a JSON object with \"version\" and \"spd\"")?;
    let version = object
        .get("version")
        .ok_or("no \"version\" field")?
        .as_u64()
        .ok_or("\"version\" is not a number")?;
    if version != STATE_VERSION {
        return Err(format!(
            "unknown version {version} (this xipsec reads version {STATE_VERSION})"
        ));
    }
    let generation = match object.get("generation") {
        None => 0,
        Some(g) => g.as_u64().ok_or("\"generation\" is not a number")?,
    };
    let spd = object.get("spd").ok_or("no \"spd\" field")?;
    let spd = Spd::deserialize(spd).map_err(|e| format!("bad \"spd\": {e}"))?;
    spd.validate()
        .map_err(|e| format!("invalid \"spd\": {e}"))?;
    Ok(Saved { spd, generation })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    /// Opens `dir` again after its store was dropped. A process another test spawns at that
    /// moment holds a copy of the lock's descriptor until its `exec` closes it, so a refusal
    /// as `Locked` is retried for a while; anything else fails at once.
    fn reopen(dir: &Path) -> (StateStore, Saved) {
        for _ in 0..100 {
            match StateStore::open(dir) {
                Err(StateError::Locked { .. }) => {
                    std::thread::sleep(std::time::Duration::from_millis(10));
                }
                other => return other.expect("reopening"),
            }
        }
        StateStore::open(dir).expect("reopening")
    }

    #[test]
    fn missing_file_is_empty_and_saves_round_trip() {
        let dir = tempfile::tempdir().expect("creating a temporary directory");
        let state_dir = dir.path().join("state");
        let (store, saved) = StateStore::open(&state_dir).expect("opening a fresh state dir");
        let spd = saved.spd;
        assert!(spd.sas().is_empty() && spd.sps().is_empty());
        assert_eq!(saved.generation, 0);
        let mode = fs::metadata(&state_dir)
            .expect("stat state dir")
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o700);
        store.save(&spd, 41).expect("saving");
        let mode = fs::metadata(store.path())
            .expect("stat state file")
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
        assert!(!crate::atomic_file::temporary(store.path()).exists());
        drop(store);
        let (_store, back) = reopen(&state_dir);
        assert_eq!(back.generation, 41);
        assert_eq!(
            serde_json::to_value(&back.spd).expect("serialising"),
            serde_json::to_value(&spd).expect("serialising")
        );
    }

    #[test]
    fn a_file_without_a_generation_is_generation_zero() {
        let spd = Spd::new();
        let old = serde_json::json!({"version": 1, "spd": spd});
        let saved = parse_saved(old.to_string().as_bytes()).expect("parsing an older state file");
        assert_eq!(saved, Saved { spd, generation: 0 });
    }

    #[test]
    fn second_open_is_refused_while_locked() {
        let dir = tempfile::tempdir().expect("creating a temporary directory");
        let _first = StateStore::open(dir.path()).expect("first open");
        let second = StateStore::open(dir.path()).expect_err("second open must fail");
        assert!(matches!(second, StateError::Locked { .. }), "{second}");
    }

    #[test]
    fn corrupt_files_are_refused_and_left_alone() {
        for (bytes, reason) in [
            (&b"{\"version\": 1, \"spd\": "[..], "not JSON"),
            (b"[]", "expected a JSON object"),
            (b"{\"spd\": {}}", "no \"version\""),
            (b"{\"version\": 2, \"spd\": {}}", "unknown version 2"),
            (b"{\"version\": 1}", "no \"spd\""),
            (b"{\"version\": 1, \"spd\": 7}", "bad \"spd\""),
            (
                b"{\"version\": 1, \"generation\": -1, \"spd\": {}}",
                "\"generation\" is not a number",
            ),
        ] {
            let dir = tempfile::tempdir().expect("creating a temporary directory");
            let path = dir.path().join(STATE_FILE);
            fs::write(&path, bytes).expect("writing a corrupt state file");
            let err = StateStore::open(dir.path()).expect_err("a corrupt file must be refused");
            let message = err.to_string();
            assert!(message.contains(reason), "{message}");
            assert!(message.ends_with("; fix or move it away"), "{message}");
            assert_eq!(fs::read(&path).expect("reading back"), bytes);
        }
    }
}
