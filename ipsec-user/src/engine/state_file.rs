//! The engine's small JSON state files (`seq`, `replay_store`): one loader and one writer.
//!
//! Contract: [`load`] creates the state directory (0700) when missing, reads
//! `{state_dir}/{name}`, and returns `None` for a missing file; a file that does not parse or
//! has another version is [`LoadError::Corrupt`] and is left untouched. [`save`] writes pretty
//! JSON through `crate::atomic_file` (0600, temporary file, fsync, rename, fsync of the
//! directory).

use std::collections::{BTreeMap, HashSet};
use std::fs::{self, DirBuilder};
use std::hash::Hash;
use std::io;
use std::os::unix::fs::DirBuilderExt;
use std::path::{Path, PathBuf};

use serde::Serialize;
use serde::de::DeserializeOwned;

/// Why a state file could not be loaded.
#[derive(Debug)]
pub(crate) enum LoadError {
    /// The directory or the file could not be created or read.
    Io {
        path: PathBuf,
        op: &'static str,
        source: io::Error,
    },
    /// The file is not one of ours, or of another version.
    Corrupt { path: PathBuf, reason: String },
}

/// A versioned file layout.
pub(crate) trait Versioned: DeserializeOwned {
    const VERSION: u32;
    fn version(&self) -> u32;
}

/// Defines a state file's layout in the calling module: `VERSION`; `FileRepr { version,
/// $list: Vec<EntryRepr> }` and `EntryRepr { $fields }`, both refusing unknown fields; and
/// `FileRepr`'s [`Versioned`] impl.
macro_rules! layout {
    (version $version:literal, $list:ident: [$($field:ident: $ty:ty),* $(,)?]) => {
        const VERSION: u32 = $version;

        #[derive(serde::Serialize, serde::Deserialize)]
        #[serde(deny_unknown_fields)]
        struct FileRepr {
            version: u32,
            $list: Vec<EntryRepr>,
        }

        #[derive(serde::Serialize, serde::Deserialize)]
        #[serde(deny_unknown_fields)]
        struct EntryRepr {
            $($field: $ty),*
        }

        impl $crate::engine::state_file::Versioned for FileRepr {
            const VERSION: u32 = VERSION;
            fn version(&self) -> u32 {
                self.version
            }
        }
    };
}
pub(crate) use layout;

/// Loads `{state_dir}/{name}`; see the module contract. Returns the path and the contents.
pub(crate) fn load<T: Versioned>(
    state_dir: &Path,
    name: &str,
) -> Result<(PathBuf, Option<T>), LoadError> {
    let path = state_dir.join(name);
    DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(state_dir)
        .map_err(|source| LoadError::Io {
            path: state_dir.to_path_buf(),
            op: "create directory",
            source,
        })?;
    let text = match fs::read(&path) {
        Ok(text) => text,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok((path, None)),
        Err(source) => {
            return Err(LoadError::Io {
                path,
                op: "read",
                source,
            });
        }
    };
    let repr: T = match serde_json::from_slice(&text) {
        Ok(repr) => repr,
        Err(e) => {
            return Err(LoadError::Corrupt {
                path,
                reason: e.to_string(),
            });
        }
    };
    if repr.version() != T::VERSION {
        return Err(LoadError::Corrupt {
            reason: format!("version {} (expected {})", repr.version(), T::VERSION),
            path,
        });
    }
    Ok((path, Some(repr)))
}

/// Replaces `path` with `repr` as pretty JSON, atomically and durably.
///
/// # Errors
/// The I/O error of the step that failed; the file is unchanged.
pub(crate) fn save(path: &Path, repr: &impl Serialize) -> io::Result<()> {
    let mut text = serde_json::to_vec_pretty(repr).map_err(io::Error::other)?;
    text.push(b'\n');
    crate::atomic_file::write(path, &text)?;
    Ok(())
}

/// Above this many entries, a store drops the entries of SAs no longer in the SPD
/// ([`prune_if_over`]): removed SAs are remembered (a re-add must not start over) up to a bound.
pub(crate) const MAX_ENTRIES: usize = 4 * crate::model::MAX_SA as usize;

/// Keeps only the entries in `live` once `entries` holds more than [`MAX_ENTRIES`].
pub(crate) fn prune_if_over<K: Ord + Hash, V>(entries: &mut BTreeMap<K, V>, live: &HashSet<K>) {
    if entries.len() > MAX_ENTRIES {
        entries.retain(|key, _| live.contains(key));
    }
}

#[cfg(test)]
mod tests {
    use super::super::EngineError;
    use super::super::replay_store::{self, ReplayStore};
    use super::super::seq::{self, SeqStore};
    use std::fs;
    use std::path::Path;

    type Open = fn(&Path) -> Option<EngineError>;

    #[test]
    fn corrupt_files_are_errors_and_left_untouched() {
        let cases: [(&str, &[&[u8]], Open); 2] = [
            (
                seq::FILE_NAME,
                &[
                    b"{\"version\":1,\"reservations\":[{\"sa_name\":",
                    b"[]",
                    b"{\"version\":9,\"reservations\":[]}",
                ],
                |dir| SeqStore::open(dir).err(),
            ),
            (
                replay_store::FILE_NAME,
                &[
                    b"{\"version\":1,\"ceilings\":[{\"spi\":",
                    b"{\"version\":1,\"ceilings\":[{\"spi\":1,\"key_id\":\"zz\",\"ceiling\":3}]}",
                    b"{\"version\":2,\"ceilings\":[]}",
                ],
                |dir| ReplayStore::open(dir).err(),
            ),
        ];
        for (name, garbage, open) in cases {
            let dir = tempfile::tempdir().expect("creating a temp dir");
            let path = dir.path().join(name);
            for bytes in garbage {
                fs::write(&path, bytes).expect("writing a corrupt file");
                let err = open(dir.path()).expect("a corrupt file must not load");
                assert!(
                    matches!(
                        err,
                        EngineError::SeqFileCorrupt { .. } | EngineError::ReplayFileCorrupt { .. }
                    ),
                    "{err}"
                );
                assert!(err.to_string().contains(name), "{err}");
                assert_eq!(fs::read(&path).expect("reading back"), *bytes);
            }
        }
    }
}
