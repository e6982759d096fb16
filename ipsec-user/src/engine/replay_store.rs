//! Inbound replay ceilings that survive restarts, `kill -9` and SA re-adds (RFC 4303 §3.4.3:
//! a replayed packet must never be accepted, also not after the receiver restarts).
//!
//! Contract:
//! - `{state_dir}/esp-replay.json` maps (SPI, key id) to a ceiling: the highest sequence number
//!   the SA may accept before a higher ceiling is on disk. The key id is the first 16 bytes of a
//!   SHA-256 over the SPI, the algorithms and both keys: an SA removed and added again with the
//!   same SPI and keys finds its ceiling (so a captured stream cannot be replayed into it), a
//!   rekeyed SA under the same SPI starts afresh (the old stream fails its ICV anyway). The file
//!   holds hashes, never keys, and is written like the sequence reservations (0600, temp file,
//!   fsync, rename, fsync of the directory).
//! - [`Ceiling::admit`] is asked after a packet's ICV verified and before the window accepts
//!   it: a sequence number above the ceiling is accepted only once `seq + step` is persisted.
//!   The step adapts to the SA's rate (doubling when ceilings are written less than a second
//!   apart, halving when more than 4 s apart, 16 to 2^20), so a busy SA writes about once a
//!   second.
//! - The crash cost is bounded in time, also when the rate drops: every [`TIGHTEN_EVERY`]
//!   (500 ms) the engine's housekeeping thread measures each inbound SA's rate over the last
//!   two passes (about one second) and, when its ceiling is more than 4 s of that traffic
//!   ahead of the highest number accepted, lowers it to that number + 2 s of it, exactly that
//!   number for an SA idle for a second ([`Ceiling::tighten`]). So a `kill -9` refuses at most
//!   about 4 s of the peer's traffic at the rate it had in the second before the crash (once a
//!   rate drop is a second old: right after a burst, at most 4 s of the burst's rate, never
//!   more than 2^20 numbers), and nothing of an SA idle for a second. Lowering is safe: the
//!   new ceiling is never below the highest number accepted, and the gate in memory comes down
//!   (under the inbound table's lock) before the store's entry, so nothing above it is accepted
//!   before a higher ceiling is on disk. The pass holds the inbound table only to compute (no
//!   I/O) and writes the file once, for all SAs it lowered, after releasing it; a failed write
//!   keeps the higher (safe) ceilings on disk and is retried at the next pass. The packet path
//!   pays nothing for this (no clock read, no syscall per packet); the price is one more write
//!   when a rate drops, and a write before the first packet after an idle second.
//! - A fresh engine starts each inbound SA's window at its ceiling: everything at or below it
//!   is refused, so nothing accepted before a restart is accepted again.
//! - A failed write (disk full) refuses the packet (fail closed) and backs off: no new attempt
//!   for 1 s, doubling up to 60 s, each failed attempt logged once; packets at or below the
//!   current ceiling keep flowing meanwhile.
//! - A clean stop ([`ReplayStore::settle`], when the engine drops after its workers stopped)
//!   lowers each ceiling to the highest number actually accepted, so a restart after a clean
//!   stop refuses nothing new; only a crash (`kill -9`, power loss) costs the gap.
//! - Ceilings never decrease otherwise (than by a clean stop or the housekeeping pass, both
//!   never below what was accepted), except by an explicit reset ([`ReplayStore::reset`], the
//!   operator's `xipsec sa reset-replay`). Entries of removed SAs are kept until the file holds
//!   more than [`MAX_ENTRIES`]; then entries of SAs absent from the SPD are pruned.
//! - A missing file is an empty store; a corrupt one is an error and is left untouched.

use std::collections::{BTreeMap, HashSet};
use std::fs::{self, DirBuilder};
use std::io;
use std::os::unix::fs::DirBuilderExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use super::EngineError;
use super::seq::write_atomic;

/// The ceiling file inside the state directory.
pub const FILE_NAME: &str = "esp-replay.json";

/// Above this many entries, entries of SAs no longer in the SPD are pruned.
pub const MAX_ENTRIES: usize = 4 * crate::model::MAX_SA as usize;

/// Smallest and largest distance written ahead of the packet that needed a new ceiling.
pub const MIN_STEP: u32 = 16;
pub const MAX_STEP: u32 = 1 << 20;

/// Ceilings written closer together than this double the step; further apart than
/// [`SLOW_WRITES`], halve it.
const FAST_WRITES: Duration = Duration::from_secs(1);
const SLOW_WRITES: Duration = Duration::from_secs(4);

/// How often the engine's housekeeping calls [`Ceiling::tighten`] for every inbound SA.
pub const TIGHTEN_EVERY: Duration = Duration::from_millis(500);

/// [`Ceiling::tighten`] lowers a ceiling that is more than this many seconds of the SA's recent
/// traffic ahead of what it accepted, to this many seconds ahead.
const LOWER_ABOVE_SECS: u64 = 4;
const KEEP_AHEAD_SECS: u64 = 2;

/// Back-off after a failed write: first and longest.
const FIRST_BACKOFF: Duration = Duration::from_secs(1);
const MAX_BACKOFF: Duration = Duration::from_secs(60);

const VERSION: u32 = 1;

/// Which SA a ceiling belongs to beyond its SPI: a hash of its algorithms and keys.
pub type KeyId = [u8; 16];

/// The [`KeyId`] of an SA.
#[must_use]
pub fn key_id(
    spi: u32,
    encryption: &str,
    encryption_key: &[u8],
    integrity: &str,
    integrity_key: &[u8],
) -> KeyId {
    let mut hash = Sha256::new();
    hash.update(b"xipsec replay ceiling v1\0");
    hash.update(spi.to_be_bytes());
    for part in [
        encryption.as_bytes(),
        encryption_key,
        integrity.as_bytes(),
        integrity_key,
    ] {
        // Length-prefixed, so no two different SAs hash the same bytes.
        hash.update((part.len() as u64).to_be_bytes());
        hash.update(part);
    }
    let digest = hash.finalize();
    let mut id = [0; 16];
    id.copy_from_slice(&digest[..16]);
    id
}

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileRepr {
    version: u32,
    ceilings: Vec<EntryRepr>,
}

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct EntryRepr {
    spi: u32,
    key_id: String,
    ceiling: u32,
}

/// The ceilings, in memory and on disk.
#[derive(Debug)]
pub struct ReplayStore {
    path: PathBuf,
    entries: BTreeMap<(u32, KeyId), u32>,
    /// Some entry was lowered ([`Self::lower`]) and not written yet: the file still holds the
    /// higher value, which is safe, only more costly after a crash.
    dirty: bool,
}

fn corrupt(path: &Path, reason: impl Into<String>) -> EngineError {
    EngineError::ReplayFileCorrupt {
        path: path.to_path_buf(),
        reason: reason.into(),
    }
}

impl ReplayStore {
    /// Loads `{state_dir}/esp-replay.json`, creating `state_dir` (mode 0700) if needed.
    ///
    /// # Errors
    /// [`EngineError::ReplayFile`] when the directory or file cannot be read,
    /// [`EngineError::ReplayFileCorrupt`] when the file is not a ceiling file.
    pub fn open(state_dir: &Path) -> Result<Self, EngineError> {
        let path = state_dir.join(FILE_NAME);
        DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(state_dir)
            .map_err(|source| EngineError::ReplayFile {
                path: state_dir.to_path_buf(),
                op: "create directory",
                source,
            })?;
        let text = match fs::read(&path) {
            Ok(text) => text,
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                return Ok(Self {
                    path,
                    entries: BTreeMap::new(),
                    dirty: false,
                });
            }
            Err(source) => {
                return Err(EngineError::ReplayFile {
                    path,
                    op: "read",
                    source,
                });
            }
        };
        let repr: FileRepr =
            serde_json::from_slice(&text).map_err(|e| corrupt(&path, e.to_string()))?;
        if repr.version != VERSION {
            return Err(corrupt(
                &path,
                format!("version {} (expected {VERSION})", repr.version),
            ));
        }
        let mut entries = BTreeMap::new();
        for e in repr.ceilings {
            let mut id = [0; 16];
            hex::decode_to_slice(&e.key_id, &mut id).map_err(|_| {
                corrupt(&path, format!("key_id {:?} is not 32 hex digits", e.key_id))
            })?;
            let slot = entries.entry((e.spi, id)).or_insert(0);
            *slot = e.ceiling.max(*slot);
        }
        Ok(Self {
            path,
            entries,
            dirty: false,
        })
    }

    /// The file this store writes.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The persisted ceiling of the SA (`spi`, `key`), if any.
    pub fn ceiling(&self, spi: u32, key: &KeyId) -> Option<u32> {
        self.entries.get(&(spi, *key)).copied()
    }

    /// Persists ceiling `value` (never lowering an existing one).
    ///
    /// # Errors
    /// The I/O error of the atomic write; the store is then unchanged.
    pub fn raise(&mut self, spi: u32, key: &KeyId, value: u32) -> io::Result<()> {
        let previous = self.entries.get(&(spi, *key)).copied();
        if previous.is_some_and(|p| p >= value) {
            return Ok(());
        }
        self.entries.insert((spi, *key), value);
        self.commit((spi, *key), previous)
    }

    /// Forgets the SA's ceiling (the operator's reset): its next window starts empty.
    ///
    /// # Errors
    /// The I/O error of the atomic write; the store is then unchanged.
    pub fn reset(&mut self, spi: u32, key: &KeyId) -> io::Result<()> {
        let Some(previous) = self.entries.remove(&(spi, *key)) else {
            return Ok(());
        };
        self.commit((spi, *key), Some(previous))
    }

    /// Sets each (SPI, key id) to exactly its value, lower or not, in one write: for a clean
    /// stop, once nothing can be accepted any more, the ceiling becomes the highest sequence
    /// number actually accepted, so the next start refuses nothing the peer has not sent yet.
    ///
    /// # Errors
    /// The I/O error of the atomic write; the store is then unchanged.
    pub fn settle(
        &mut self,
        values: impl IntoIterator<Item = (u32, KeyId, u32)>,
    ) -> io::Result<()> {
        // Only what changes, and its previous values: most updates remove no SA.
        let mut previous = Vec::new();
        for (spi, key, value) in values {
            let old = self.entries.insert((spi, key), value);
            if old != Some(value) {
                previous.push(((spi, key), old));
            }
        }
        if previous.is_empty() {
            return Ok(());
        }
        let written = self.write();
        if written.is_err() {
            for (key, old) in previous.into_iter().rev() {
                match old {
                    Some(v) => self.entries.insert(key, v),
                    None => self.entries.remove(&key),
                };
            }
        }
        written
    }

    /// Lowers the SA's ceiling to `value` in memory only (no I/O: the caller may hold the
    /// inbound table); [`Self::flush`] or the next write persists it. The caller has lowered the
    /// SA's in-memory [`Ceiling`] to `value` first, so nothing above `value` is accepted before
    /// a higher ceiling is on disk. Never raises, never creates an entry.
    pub fn lower(&mut self, spi: u32, key: &KeyId, value: u32) {
        if let Some(current) = self.entries.get_mut(&(spi, *key))
            && *current > value
        {
            *current = value;
            self.dirty = true;
        }
    }

    /// Writes the entries [`Self::lower`] changed, if any write has not done so yet. Returns
    /// whether it wrote.
    ///
    /// # Errors
    /// The I/O error of the atomic write; the lowered values stay in memory and the next write
    /// retries (the file keeps the higher, safe values meanwhile).
    pub fn flush(&mut self) -> io::Result<bool> {
        if !self.dirty {
            return Ok(false);
        }
        self.write()?;
        Ok(true)
    }

    /// Writes the file; on failure puts `key` back to `previous`.
    fn commit(&mut self, key: (u32, KeyId), previous: Option<u32>) -> io::Result<()> {
        let written = self.write();
        if written.is_err() {
            match previous {
                Some(v) => self.entries.insert(key, v),
                None => self.entries.remove(&key),
            };
        }
        written
    }

    /// Drops entries of SAs not in `live` once there are more than [`MAX_ENTRIES`]; the next
    /// write persists the pruning.
    pub fn prune_if_over(&mut self, live: &HashSet<(u32, KeyId)>) {
        if self.entries.len() > MAX_ENTRIES {
            self.entries.retain(|key, _| live.contains(key));
        }
    }

    /// Writes every entry (so also what [`Self::lower`] changed).
    fn write(&mut self) -> io::Result<()> {
        let repr = FileRepr {
            version: VERSION,
            ceilings: self
                .entries
                .iter()
                .map(|((spi, id), ceiling)| EntryRepr {
                    spi: *spi,
                    key_id: hex::encode(id),
                    ceiling: *ceiling,
                })
                .collect(),
        };
        let mut text = serde_json::to_vec_pretty(&repr).map_err(io::Error::other)?;
        text.push(b'\n');
        write_atomic(&self.path, &text)?;
        self.dirty = false;
        Ok(())
    }
}

/// Why [`Ceiling::admit`] refused a sequence number.
#[derive(Debug)]
pub enum Refused {
    /// The write failed just now (log it).
    WriteFailed(io::Error),
    /// A recent write failed; no new attempt before the back-off ends.
    BackingOff,
}

/// One inbound SA's ceiling in memory, and the policy for raising it; see the module contract.
#[derive(Debug, Clone)]
pub struct Ceiling {
    value: u32,
    step: u32,
    last_write: Option<Instant>,
    retry_at: Option<Instant>,
    backoff: Duration,
    /// What [`Self::tighten`] saw last: the highest accepted number and when, and the rate
    /// (numbers per second) it measured then. Only the housekeeping pass touches these.
    seen: u32,
    seen_at: Option<Instant>,
    last_rate: u64,
}

impl Ceiling {
    /// A ceiling of `value` as loaded from disk (0: none yet).
    #[must_use]
    pub fn new(value: u32) -> Self {
        Self {
            value,
            step: MIN_STEP,
            last_write: None,
            retry_at: None,
            backoff: FIRST_BACKOFF,
            seen: value,
            seen_at: None,
            last_rate: 0,
        }
    }

    /// The persisted ceiling.
    #[cfg(test)]
    fn value(&self) -> u32 {
        self.value
    }

    /// Whether `seq` (authentic, new to the window) may be accepted now (`now` is read only
    /// above the ceiling). Above the ceiling, `persist` must first write `seq + step`; see the
    /// module contract.
    ///
    /// # Errors
    /// [`Refused`] when the new ceiling is not on disk: the packet must be dropped.
    pub fn admit(
        &mut self,
        seq: u32,
        now: impl FnOnce() -> Instant,
        persist: impl FnOnce(u32) -> io::Result<()>,
    ) -> Result<(), Refused> {
        if seq <= self.value {
            // The steady state: no clock read, no write.
            return Ok(());
        }
        let now = now();
        if self.retry_at.is_some_and(|at| now < at) {
            return Err(Refused::BackingOff);
        }
        if let Some(last) = self.last_write {
            let since = now.saturating_duration_since(last);
            if since < FAST_WRITES {
                self.step = (self.step.saturating_mul(2)).min(MAX_STEP);
            } else if since > SLOW_WRITES {
                // Halving never raises a step `tighten` set below the minimum.
                self.step = (self.step / 2).max(MIN_STEP.min(self.step)).max(1);
            }
        }
        let wanted = seq.saturating_add(self.step.max(1));
        match persist(wanted) {
            Ok(()) => {
                self.value = wanted;
                self.last_write = Some(now);
                self.retry_at = None;
                self.backoff = FIRST_BACKOFF;
                Ok(())
            }
            Err(e) => {
                self.retry_at = Some(now + self.backoff);
                self.backoff = (self.backoff * 2).min(MAX_BACKOFF);
                Err(Refused::WriteFailed(e))
            }
        }
    }
}

impl Ceiling {
    /// The housekeeping step, every [`TIGHTEN_EVERY`] (never on the packet path): given the
    /// highest number the SA accepted so far, measures the SA's rate over the last two calls and,
    /// when the ceiling is more than [`LOWER_ABOVE_SECS`] of that traffic ahead of `highest`,
    /// lowers it to `highest` + [`KEEP_AHEAD_SECS`] of it (exactly `highest` for an idle SA) and
    /// returns the new value. The caller then lowers the store's entry to it
    /// ([`ReplayStore::lower`]) before letting the packet path run again, and writes the file
    /// outside the packet path's lock. Never lowers below `highest`, never raises.
    pub fn tighten(&mut self, highest: u32, now: Instant) -> Option<u32> {
        let advance = u128::from(highest.saturating_sub(self.seen));
        let since = self.seen_at.map(|at| now.saturating_duration_since(at));
        self.seen = highest;
        self.seen_at = Some(now);
        // The first look has no rate yet.
        let since = since?;
        let rate_now =
            u64::try_from(advance * 1_000_000_000 / since.as_nanos().max(1)).unwrap_or(u64::MAX);
        // The faster of the last two intervals: a short lull inside a flow is not a slowdown.
        let rate = rate_now.max(self.last_rate);
        self.last_rate = rate_now;
        let ahead = |secs: u64| {
            u32::try_from(rate.saturating_mul(secs))
                .unwrap_or(u32::MAX)
                .min(MAX_STEP)
        };
        let (limit, keep) = (ahead(LOWER_ABOVE_SECS), ahead(KEEP_AHEAD_SECS));
        if self.value.saturating_sub(highest) <= limit {
            return None;
        }
        let lowered = highest.saturating_add(keep);
        self.value = lowered;
        // The next raise writes about as far ahead as this SA now needs.
        self.step = keep.max(1);
        self.last_write = Some(now);
        Some(lowered)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const KEY: KeyId = [7; 16];

    #[test]
    fn ceilings_survive_reload_never_decrease_and_reset_forgets() {
        let dir = tempfile::tempdir().expect("creating a temp dir");
        let mut store = ReplayStore::open(dir.path()).expect("opening the store");
        assert_eq!(store.ceiling(0x1000, &KEY), None);
        assert!(!store.path().exists(), "nothing written before a ceiling");
        store.raise(0x1000, &KEY, 500).expect("raising");
        store.raise(0x1000, &KEY, 100).expect("raising lower");
        let mut reloaded = ReplayStore::open(dir.path()).expect("reloading");
        assert_eq!(reloaded.ceiling(0x1000, &KEY), Some(500));
        assert_eq!(reloaded.ceiling(0x1000, &[8; 16]), None, "other keys");
        assert_eq!(reloaded.ceiling(0x1001, &KEY), None, "other spi");
        let mode = fs::metadata(reloaded.path())
            .expect("file mode")
            .permissions();
        assert_eq!(
            std::os::unix::fs::PermissionsExt::mode(&mode) & 0o777,
            0o600
        );
        let text = fs::read_to_string(reloaded.path()).expect("reading");
        assert!(text.contains(&hex::encode(KEY)), "{text}");
        reloaded.reset(0x1000, &KEY).expect("resetting");
        assert_eq!(
            ReplayStore::open(dir.path())
                .expect("reloading")
                .ceiling(0x1000, &KEY),
            None
        );
    }

    #[test]
    fn settle_sets_exact_values_in_one_write() {
        let dir = tempfile::tempdir().expect("creating a temp dir");
        let mut store = ReplayStore::open(dir.path()).expect("opening the store");
        store.raise(0x1000, &KEY, 5000).expect("raising");
        store
            .settle([(0x1000, KEY, 4321), (0x2000, KEY, 7)])
            .expect("settling");
        let reloaded = ReplayStore::open(dir.path()).expect("reloading");
        assert_eq!(
            reloaded.ceiling(0x1000, &KEY),
            Some(4321),
            "lowered to what was accepted"
        );
        assert_eq!(reloaded.ceiling(0x2000, &KEY), Some(7));
    }

    #[test]
    fn key_ids_separate_keys_algorithms_and_spis() {
        let base = key_id(0x1000, "aes128-cbc", b"k1", "hmac-sha1", b"k2");
        assert_eq!(
            base,
            key_id(0x1000, "aes128-cbc", b"k1", "hmac-sha1", b"k2")
        );
        assert_ne!(
            base,
            key_id(0x1001, "aes128-cbc", b"k1", "hmac-sha1", b"k2")
        );
        assert_ne!(
            base,
            key_id(0x1000, "aes128-cbc", b"k3", "hmac-sha1", b"k2")
        );
        assert_ne!(
            base,
            key_id(0x1000, "aes128-cbc", b"k1", "hmac-sha1", b"k3")
        );
        assert_ne!(
            base,
            key_id(0x1000, "aes128-cb", b"ck1", "hmac-sha1", b"k2")
        );
    }

    #[test]
    fn corrupt_file_is_an_error_and_left_untouched() {
        let dir = tempfile::tempdir().expect("creating a temp dir");
        let path = dir.path().join(FILE_NAME);
        for garbage in [
            &b"{\"version\":1,\"ceilings\":[{\"spi\":"[..],
            b"{\"version\":1,\"ceilings\":[{\"spi\":1,\"key_id\":\"zz\",\"ceiling\":3}]}",
            b"{\"version\":2,\"ceilings\":[]}",
        ] {
            fs::write(&path, garbage).expect("writing a corrupt file");
            let err = ReplayStore::open(dir.path()).expect_err("a corrupt file must not load");
            assert!(
                matches!(err, EngineError::ReplayFileCorrupt { .. }),
                "{err}"
            );
            assert!(err.to_string().contains(FILE_NAME), "{err}");
            assert_eq!(fs::read(&path).expect("reading back"), garbage);
        }
    }

    #[test]
    fn nothing_above_the_ceiling_before_it_is_written() {
        let mut ceiling = Ceiling::new(0);
        let t0 = Instant::now();
        let mut written = Vec::new();
        assert!(
            ceiling
                .admit(
                    1,
                    || t0,
                    |v| {
                        written.push(v);
                        Ok(())
                    }
                )
                .is_ok()
        );
        assert_eq!(written, [1 + MIN_STEP]);
        // Up to the ceiling: no write.
        for seq in 2..=1 + MIN_STEP {
            assert!(
                ceiling
                    .admit(seq, || t0, |_| panic!("no write needed"))
                    .is_ok()
            );
        }
        // Above it: a write first, with a doubled step (written less than 1 s apart).
        assert!(
            ceiling
                .admit(
                    2 + MIN_STEP,
                    || t0,
                    |v| {
                        written.push(v);
                        Ok(())
                    }
                )
                .is_ok()
        );
        assert_eq!(written[1], 2 + 3 * MIN_STEP);
        assert_eq!(ceiling.value(), 2 + 3 * MIN_STEP);
    }

    #[test]
    fn the_step_adapts_to_the_rate() {
        let mut ceiling = Ceiling::new(0);
        let mut now = Instant::now();
        let mut seq = 1;
        // A fast SA: the step grows to its maximum.
        for _ in 0..40 {
            ceiling.admit(seq, || now, |_| Ok(())).expect("admitting");
            seq = ceiling.value() + 1;
            now += Duration::from_millis(10);
        }
        assert_eq!(ceiling.step, MAX_STEP);
        // A slow one: it shrinks back.
        for _ in 0..40 {
            now += Duration::from_secs(10);
            ceiling.admit(seq, || now, |_| Ok(())).expect("admitting");
            seq = ceiling.value() + 1;
        }
        assert_eq!(ceiling.step, MIN_STEP);
    }

    #[test]
    fn a_failed_write_refuses_and_backs_off() {
        let mut ceiling = Ceiling::new(100);
        let t0 = Instant::now();
        let full = || io::Error::from_raw_os_error(libc::ENOSPC);
        assert!(matches!(
            ceiling.admit(101, || t0, |_| Err(full())),
            Err(Refused::WriteFailed(_))
        ));
        assert_eq!(ceiling.value(), 100, "not raised");
        // Below the ceiling still flows; above it, no new attempt during the back-off.
        assert!(ceiling.admit(100, || t0, |_| panic!("no write")).is_ok());
        assert!(matches!(
            ceiling.admit(
                101,
                || t0 + Duration::from_millis(500),
                |_| panic!("backing off")
            ),
            Err(Refused::BackingOff)
        ));
        // After 1 s it tries again; a second failure doubles the back-off.
        assert!(matches!(
            ceiling.admit(101, || t0 + Duration::from_secs(1), |_| Err(full())),
            Err(Refused::WriteFailed(_))
        ));
        assert!(matches!(
            ceiling.admit(
                101,
                || t0 + Duration::from_millis(2500),
                |_| panic!("backing off")
            ),
            Err(Refused::BackingOff)
        ));
        // The disk has room again: accepted once the ceiling is written.
        assert!(
            ceiling
                .admit(101, || t0 + Duration::from_secs(3), |_| Ok(()))
                .is_ok()
        );
        assert!(ceiling.value() > 101);
    }

    /// What the engine does with a [`Ceiling`]: the gate on the packet path, raising the store.
    fn accept(
        ceiling: &mut Ceiling,
        store: &mut ReplayStore,
        seq: u32,
        now: Instant,
    ) -> Result<(), Refused> {
        ceiling.admit(seq, || now, |v| store.raise(0x1000, &KEY, v))
    }

    /// What the housekeeping pass does: tighten in memory, lower the store, write it.
    fn housekeeping(
        ceiling: &mut Ceiling,
        store: &mut ReplayStore,
        highest: u32,
        now: Instant,
    ) -> io::Result<bool> {
        if let Some(v) = ceiling.tighten(highest, now) {
            store.lower(0x1000, &KEY, v);
        }
        store.flush()
    }

    fn on_disk(dir: &Path) -> u32 {
        ReplayStore::open(dir)
            .expect("reloading")
            .ceiling(0x1000, &KEY)
            .unwrap_or(0)
    }

    #[test]
    fn after_a_burst_the_ceiling_follows_the_rate_down() {
        let dir = tempfile::tempdir().expect("creating a temp dir");
        let mut store = ReplayStore::open(dir.path()).expect("opening the store");
        let mut ceiling = Ceiling::new(0);
        let t0 = Instant::now();
        let mut now = t0;
        let mut next_pass = t0;
        let mut highest = 0;
        // A burst: 100,000 numbers a second for 2 s, housekeeping every 500 ms.
        for seq in 1..=200_000u32 {
            now = t0 + Duration::from_micros(u64::from(seq) * 10);
            accept(&mut ceiling, &mut store, seq, now).expect("admitting the burst");
            highest = seq;
            if now >= next_pass {
                housekeeping(&mut ceiling, &mut store, highest, now).expect("housekeeping");
                next_pass += TIGHTEN_EVERY;
            }
        }
        let margin = on_disk(dir.path()) - highest;
        assert!(
            margin > 10_000,
            "a burst writes far ahead (the problem this fixes): {margin}"
        );
        assert!(
            u64::from(margin) <= 100_000 * LOWER_ABOVE_SECS,
            "even during the burst, at most a few seconds of it: {margin}"
        );
        // Then one number a second (a ping): within about a second the margin is a few seconds
        // of that rate.
        for _ in 0..4 {
            now += Duration::from_millis(500);
            highest += 1;
            accept(&mut ceiling, &mut store, highest, now).expect("admitting a ping");
            now += Duration::from_millis(500);
            housekeeping(&mut ceiling, &mut store, highest, now).expect("housekeeping");
        }
        let margin = on_disk(dir.path()) - highest;
        assert!(
            u64::from(margin) <= 2 * KEEP_AHEAD_SECS,
            "a crash now refuses at most {KEEP_AHEAD_SECS} s of 1 to 2 numbers a second: {margin}"
        );
        // Idle for a second: the ceiling is what was accepted; a crash costs nothing.
        for _ in 0..3 {
            now += TIGHTEN_EVERY;
            housekeeping(&mut ceiling, &mut store, highest, now).expect("housekeeping");
        }
        assert_eq!(
            on_disk(dir.path()),
            highest,
            "idle: exactly the highest accepted"
        );
        // Idle stays idle without writes.
        fs::remove_file(store.path()).expect("removing the file to see a write");
        now += TIGHTEN_EVERY;
        assert!(
            !housekeeping(&mut ceiling, &mut store, highest, now).expect("housekeeping"),
            "nothing to write"
        );
        // The next number needs a new ceiling first, as after any restart.
        let mut written = None;
        ceiling
            .admit(
                highest + 1,
                || now,
                |v| {
                    written = Some(v);
                    Ok(())
                },
            )
            .expect("admitting after idle");
        assert!(written.is_some_and(|v| v > highest), "{written:?}");
    }

    /// A small deterministic generator (xorshift64*), so a failure names its seed.
    struct Rng(u64);

    impl Rng {
        fn below(&mut self, n: u64) -> u64 {
            self.0 ^= self.0 >> 12;
            self.0 ^= self.0 << 25;
            self.0 ^= self.0 >> 27;
            self.0.wrapping_mul(0x2545_f491_4f6c_dd1d) % n
        }
    }

    #[test]
    fn the_file_never_holds_less_than_was_accepted_whatever_the_interleaving() {
        for seed in 1..=12u64 {
            let dir = tempfile::tempdir().expect("creating a temp dir");
            let blocker = dir.path().join(format!("{FILE_NAME}.tmp"));
            let mut store = ReplayStore::open(dir.path()).expect("opening the store");
            let mut ceiling = Ceiling::new(0);
            let mut rng = Rng(seed.wrapping_mul(0x9e37_79b9_7f4a_7c15));
            let mut now = Instant::now();
            let mut highest = 0u32;
            for op in 0..300 {
                match rng.below(10) {
                    // Accept the next numbers, bursty or one by one (gaps: lost packets).
                    0..=4 => {
                        let burst = [1, 20, 3000][rng.below(3) as usize];
                        for _ in 0..rng.below(burst) + 1 {
                            let seq = highest + 1 + rng.below(3) as u32;
                            if accept(&mut ceiling, &mut store, seq, now).is_ok() {
                                highest = seq;
                            } else {
                                break;
                            }
                            now += Duration::from_micros(rng.below(2000));
                        }
                    }
                    5 | 6 => now += Duration::from_millis(rng.below(3000)),
                    7 | 8 => {
                        // Housekeeping; its write may fail too.
                        let _ = housekeeping(&mut ceiling, &mut store, highest, now);
                    }
                    // A full disk comes or goes.
                    _ => {
                        if blocker.exists() {
                            fs::remove_dir(&blocker).expect("unblocking writes");
                        } else {
                            fs::create_dir(&blocker).expect("blocking writes");
                        }
                    }
                }
                // A crash here: what the file says must cover everything accepted, and
                // everything the gate lets through without a write.
                let disk = on_disk(dir.path());
                assert!(
                    disk >= highest && disk >= ceiling.value(),
                    "seed {seed} op {op}: file {disk}, accepted {highest}, gate {}",
                    ceiling.value()
                );
            }
        }
    }

    #[test]
    fn a_steady_flow_writes_about_once_a_second_and_stays_within_seconds() {
        for rate in [1u32, 50, 1000, 100_000] {
            let dir = tempfile::tempdir().expect("creating a temp dir");
            let mut store = ReplayStore::open(dir.path()).expect("opening the store");
            let mut ceiling = Ceiling::new(0);
            let t0 = Instant::now();
            let gap = Duration::from_secs(1) / rate;
            let (mut writes, mut worst) = (0u32, 0u32);
            let mut next_pass = t0;
            // 30 s of traffic; the first 5 s let the step settle.
            for seq in 1..=rate * 30 {
                let now = t0 + gap * seq;
                let mut wrote = false;
                ceiling
                    .admit(
                        seq,
                        || now,
                        |v| {
                            wrote = true;
                            store.raise(0x1000, &KEY, v)
                        },
                    )
                    .expect("admitting");
                if now >= next_pass {
                    wrote |= housekeeping(&mut ceiling, &mut store, seq, now).expect("writing");
                    next_pass += TIGHTEN_EVERY;
                }
                if now >= t0 + Duration::from_secs(5) {
                    writes += u32::from(wrote);
                    worst = worst.max(ceiling.value() - seq);
                }
            }
            assert!(writes <= 25 * 3 / 2, "rate {rate}: {writes} writes in 25 s");
            assert!(
                u64::from(worst) <= u64::from(rate) * LOWER_ABOVE_SECS + u64::from(MIN_STEP),
                "rate {rate}: {worst} numbers ahead"
            );
        }
    }
}
