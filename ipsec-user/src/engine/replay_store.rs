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
//! - The engine core asks its `Ceiling` after a packet's ICV verified and before the window
//!   accepts it: a sequence number above the ceiling is accepted only once `seq + step` is
//!   persisted. The core returns a raise request instead of accepting; the engine's inbound
//!   worker writes it ([`ReplayStore::raise`]) without holding the inbound table, confirms it,
//!   and hands the same packet in again (it waits for the write). The step adapts to the SA's
//!   rate (doubling when ceilings are written less than a second apart, halving when more than
//!   4 s apart, 16 to 2^20), so a busy SA writes about once a second.
//! - The crash cost is bounded in time, also when the rate drops: every `TIGHTEN_EVERY`
//!   (500 ms) the engine's housekeeping thread measures each inbound SA's rate over the last
//!   two passes (about one second) and, when its ceiling is more than 4 s of that traffic
//!   ahead of the highest number accepted, lowers it to that number + 2 s of it, exactly that
//!   number for an SA idle for a second (`Ceiling::tighten`). So a `kill -9` refuses at most
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
//!   more than `state_file::MAX_ENTRIES`; then entries of SAs absent from the SPD are pruned.
//! - A missing file is an empty store; a corrupt one is an error and is left untouched.

use std::collections::{BTreeMap, HashSet};
use std::io;
use std::path::{Path, PathBuf};

use super::EngineError;
use super::core::KeyId;
use super::state_file::{self, LoadError};

/// The ceiling file inside the state directory.
pub const FILE_NAME: &str = "esp-replay.json";

// The file: `{"version": 1, "ceilings": [{"spi", "key_id" (32 hex digits), "ceiling"}, ...]}`.
state_file::layout!(version 1, ceilings: [spi: u32, key_id: String, ceiling: u32]);

/// The ceilings, in memory and on disk.
#[derive(Debug)]
pub(crate) struct ReplayStore {
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
    pub(crate) fn open(state_dir: &Path) -> Result<Self, EngineError> {
        let (path, repr) =
            state_file::load::<FileRepr>(state_dir, FILE_NAME).map_err(|e| match e {
                LoadError::Io { path, op, source } => EngineError::ReplayFile { path, op, source },
                LoadError::Corrupt { path, reason } => corrupt(&path, reason),
            })?;
        let mut entries = BTreeMap::new();
        for e in repr.map(|r| r.ceilings).unwrap_or_default() {
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
    pub(crate) fn path(&self) -> &Path {
        &self.path
    }

    /// The persisted ceiling of the SA (`spi`, `key`), if any.
    pub(crate) fn ceiling(&self, spi: u32, key: &KeyId) -> Option<u32> {
        self.entries.get(&(spi, *key)).copied()
    }

    /// Persists ceiling `value` (never lowering an existing one).
    ///
    /// # Errors
    /// The I/O error of the atomic write; the store is then unchanged.
    pub(crate) fn raise(&mut self, spi: u32, key: &KeyId, value: u32) -> io::Result<()> {
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
    pub(crate) fn reset(&mut self, spi: u32, key: &KeyId) -> io::Result<()> {
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
    pub(crate) fn settle(
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
    /// SA's in-memory `Ceiling` to `value` first, so nothing above `value` is accepted before
    /// a higher ceiling is on disk. Never raises, never creates an entry.
    pub(crate) fn lower(&mut self, spi: u32, key: &KeyId, value: u32) {
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
    pub(crate) fn flush(&mut self) -> io::Result<bool> {
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

    /// Drops entries of SAs not in `live` once there are too many; the next write persists it.
    pub(crate) fn prune_if_over(&mut self, live: &HashSet<(u32, KeyId)>) {
        state_file::prune_if_over(&mut self.entries, live);
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
        state_file::save(&self.path, &repr)?;
        self.dirty = false;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::super::core::ceiling::{
        Ceiling, KEEP_AHEAD_SECS, LOWER_ABOVE_SECS, MIN_STEP, Refused, TIGHTEN_EVERY, key_id,
    };
    use super::*;
    use std::fs;
    use std::time::{Duration, Instant};

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
        let others: [(u32, &str, &[u8], &[u8]); 4] = [
            (0x1001, "aes128-cbc", b"k1", b"k2"),
            (0x1000, "aes128-cbc", b"k3", b"k2"),
            (0x1000, "aes128-cbc", b"k1", b"k3"),
            // The same bytes split differently between fields.
            (0x1000, "aes128-cb", b"ck1", b"k2"),
        ];
        for (spi, encryption, key, auth_key) in others {
            assert_ne!(
                base,
                key_id(spi, encryption, key, "hmac-sha1", auth_key),
                "{spi:#x} {encryption} {key:?} {auth_key:?}"
            );
        }
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
                        let burst = [1, 20, 3000][usize::try_from(rng.below(3)).expect("below 3")];
                        for _ in 0..=rng.below(burst) {
                            let seq = highest + 1 + u32::try_from(rng.below(3)).expect("below 3");
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
