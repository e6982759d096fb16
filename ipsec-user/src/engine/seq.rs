//! Sequence-number reservations that survive `kill -9` (RFC 4303 §3.3.3: a sender never reuses
//! a sequence number within an SA).
//!
//! Contract:
//! - `{state_dir}/esp-seq.json` maps (SA name, SPI) to a reservation: a sequence number the SA
//!   may send up to. The engine core never sends a number above the reservation it was told is
//!   on disk: it asks for `last_sent + RESERVATION_STEP` ahead of need (a new SA at install,
//!   a running one when half its reservation is used), the engine's I/O layer writes it with
//!   [`SeqStore::reserve_all`] (atomically: temporary file, fsync, rename, fsync of the
//!   directory) outside the table lock, and only then tells the core.
//! - After a restart the engine calls `OutboundSa::resume_after(reservation)`, so the first
//!   packet carries a number above anything the previous process can have sent, and the peer's
//!   anti-replay window keeps accepting us. Each restart skips at most `RESERVATION_STEP`
//!   numbers.
//! - A reservation never decreases, and entries of SAs that were removed are kept (an SA
//!   re-added with the same name and SPI must not start over at 1) until the file holds more
//!   than `state_file::MAX_ENTRIES`, when entries of SAs absent from the SPD are pruned.
//! - A missing file is an empty store; a corrupt one is an error and is left untouched.
//!
//! The same file holds the AES-GCM IV epochs (RFC 4106 §8: an IV must never repeat under one
//! key, and a manual key outlives any SA). A GCM SA's IV is `epoch || sequence number`; each
//! time an SA is keyed with a GCM key (added, re-added under any name or SPI, or restarted),
//! `rebuild` takes the next epoch of that key and hands it out as one more reservation,
//! under the entry [`iv_entry`] names (a domain-separated SHA-256 of the AES key, never the
//! key; SPI [`IV_EPOCH_SPI`]), written in the same atomic write as the SA's first sequence
//! reservation, which the SA waits for before its first packet. So no packet leaves under an
//! epoch that is not on disk, and a kill -9 at any point leaves either both or neither.
//! Epoch entries are never pruned; a failed write keeps them raised in memory, so the next
//! successful write (which writes every entry) carries them.

use std::collections::{BTreeMap, HashSet};
use std::io;
use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};

use super::EngineError;
use super::state_file::{self, LoadError};
use crate::model::EncryptionAlgorithm;

/// Sequence numbers reserved per write: one fsync per 65,536 packets and SA.
pub const RESERVATION_STEP: u32 = 65_536;

/// The reservation file inside the state directory.
pub const FILE_NAME: &str = "esp-seq.json";

/// The SPI of IV epoch entries (no SA has it: SPIs below 0x100 are reserved, RFC 4303 §2.1).
pub(crate) const IV_EPOCH_SPI: u32 = 0;

/// What entry names of IV epochs start with (SA names cannot hold a `:`).
const IV_ENTRY_PREFIX: &str = "gcm-iv:";

/// Labels the hash, so it is never the hash of the bare key (nor equal to one made for
/// anything else).
const IV_ENTRY_LABEL: &[u8] = b"xipsec rfc4106 iv epochs v1\0";

/// The entry that holds the IV epochs of `encryption` keyed with `key` (AES key and salt), or
/// `None` for an algorithm whose IVs are random. Keyed by the AES key alone: the salt only
/// changes the nonce's prefix, so an epoch is never reused under an AES key whatever the salt.
pub(crate) fn iv_entry(encryption: EncryptionAlgorithm, key: &[u8]) -> Option<String> {
    if !encryption.needs_unique_iv() {
        return None;
    }
    let aes_key = &key[..key.len().saturating_sub(4)];
    let digest = Sha256::new()
        .chain_update(IV_ENTRY_LABEL)
        .chain_update(encryption.as_str().as_bytes())
        .chain_update([0])
        .chain_update(aes_key)
        .finalize();
    Some(format!("{IV_ENTRY_PREFIX}{}", hex::encode(digest)))
}

fn is_iv_entry(name: &str) -> bool {
    name.starts_with(IV_ENTRY_PREFIX)
}

// The file: `{"version": 1, "reservations": [{"sa_name", "spi", "reserved"}, ...]}`.
state_file::layout!(version 1, reservations: [sa_name: String, spi: u32, reserved: u32]);

/// The reservations, in memory and on disk.
#[derive(Debug)]
pub(crate) struct SeqStore {
    path: PathBuf,
    entries: BTreeMap<(String, u32), u32>,
}

impl SeqStore {
    /// Loads `{state_dir}/esp-seq.json`, creating `state_dir` (mode 0700) if needed.
    ///
    /// # Errors
    /// [`EngineError::SeqFile`] when the directory or file cannot be read,
    /// [`EngineError::SeqFileCorrupt`] when the file is not a reservation file.
    pub(crate) fn open(state_dir: &Path) -> Result<Self, EngineError> {
        let (path, repr) =
            state_file::load::<FileRepr>(state_dir, FILE_NAME).map_err(|e| match e {
                LoadError::Io { path, op, source } => EngineError::SeqFile { path, op, source },
                LoadError::Corrupt { path, reason } => EngineError::SeqFileCorrupt { path, reason },
            })?;
        let mut entries = BTreeMap::new();
        for e in repr.map(|r| r.reservations).unwrap_or_default() {
            let slot = entries.entry((e.sa_name, e.spi)).or_insert(0);
            *slot = e.reserved.max(*slot);
        }
        Ok(Self { path, entries })
    }

    /// The file this store writes.
    pub(crate) fn path(&self) -> &Path {
        &self.path
    }

    /// The persisted reservation of SA `name` with `spi`, if any.
    pub(crate) fn reservation(&self, name: &str, spi: u32) -> Option<u32> {
        // BTreeMap<(String, u32)> cannot be queried by (&str, u32) without allocating; this is
        // only called when an SA is installed.
        self.entries.get(&(name.to_owned(), spi)).copied()
    }

    /// Persists reservation `value` for `name`/`spi` (never lowering an existing one).
    ///
    /// # Errors
    /// The I/O error of the atomic write; the store is then unchanged.
    #[cfg(test)]
    pub(crate) fn reserve(&mut self, name: &str, spi: u32, value: u32) -> io::Result<()> {
        self.reserve_all([(name, spi, value)])
    }

    /// Persists several reservations in one write (never lowering an existing one).
    ///
    /// # Errors
    /// The I/O error of the atomic write; the store is then unchanged.
    pub(crate) fn reserve_all<'a>(
        &mut self,
        values: impl IntoIterator<Item = (&'a str, u32, u32)>,
    ) -> io::Result<()> {
        let before = self.entries.clone();
        for (name, spi, value) in values {
            let slot = self.entries.entry((name.to_owned(), spi)).or_insert(0);
            *slot = (*slot).max(value);
        }
        if self.entries == before {
            return Ok(());
        }
        let written = self.write();
        if written.is_err() {
            // An SA's reservation goes back (it is not on disk, so nothing may use it); an IV
            // epoch stays raised (handed out, so never to be handed out again), and goes to
            // disk with the next write.
            let epochs = self.epochs();
            self.entries = before;
            self.entries.extend(epochs);
        }
        written
    }

    /// Drops entries of SAs not in `live` once there are too many; the next write persists it.
    /// IV epochs are never pruned: they outlive the SAs that used them.
    pub(crate) fn prune_if_over(&mut self, live: &HashSet<(String, u32)>) {
        let epochs = self.epochs();
        state_file::prune_if_over(&mut self.entries, live);
        self.entries.extend(epochs);
    }

    /// The IV epoch entries.
    fn epochs(&self) -> Vec<((String, u32), u32)> {
        self.entries
            .iter()
            .filter(|((name, _), _)| is_iv_entry(name))
            .map(|(key, value)| (key.clone(), *value))
            .collect()
    }

    /// Writes every entry (see `state_file::save`).
    fn write(&self) -> io::Result<()> {
        let repr = FileRepr {
            version: VERSION,
            reservations: self
                .entries
                .iter()
                .map(|((sa_name, spi), reserved)| EntryRepr {
                    sa_name: sa_name.clone(),
                    spi: *spi,
                    reserved: *reserved,
                })
                .collect(),
        };
        state_file::save(&self.path, &repr)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::crypto::{OutboundSa, SaConfig};
    use crate::model::{EncryptionAlgorithm, IntegrityAlgorithm, Mode};
    use std::fs;
    use std::net::Ipv6Addr;

    fn tx() -> OutboundSa {
        OutboundSa::new(&SaConfig {
            spi: 0x1000,
            mode: Mode::Transport,
            source: Ipv6Addr::UNSPECIFIED,
            destination: Ipv6Addr::UNSPECIFIED,
            encryption: EncryptionAlgorithm::Null,
            encryption_key: b"",
            integrity: IntegrityAlgorithm::HmacSha1,
            integrity_key: b"ipv6readylogsha1out2",
        })
        .expect("building a test sa")
    }

    /// An empty store in a new directory (kept alive by the returned guard).
    fn fresh_store() -> (tempfile::TempDir, SeqStore) {
        let dir = tempfile::tempdir().expect("creating a temp dir");
        let store = SeqStore::open(dir.path()).expect("opening the store");
        (dir, store)
    }

    /// A minimal IPv6/UDP packet for the test SA.
    fn packet() -> Vec<u8> {
        let mut p = vec![0x60, 0, 0, 0, 0, 8, 17, 64];
        p.extend_from_slice(&[0; 15]);
        p.push(1);
        p.extend_from_slice(&[0; 15]);
        p.push(2);
        p.extend_from_slice(&[0, 1, 0, 2, 0, 8, 0, 0]);
        p
    }

    /// Makes sure `last_sent + 1` is within `reserved`, reserving `last_sent + RESERVATION_STEP`
    /// first if it is not, as the engine does; returns whether it wrote.
    fn cover(store: &mut SeqStore, reserved: &mut u32, last_sent: u32) -> io::Result<bool> {
        if u64::from(last_sent) < u64::from(*reserved) {
            return Ok(false);
        }
        let wanted = last_sent.saturating_add(RESERVATION_STEP);
        store.reserve("sa1", 0x1000, wanted)?;
        *reserved = wanted;
        Ok(true)
    }

    /// What the engine does per packet: cover, then encapsulate. Returns the sequence numbers
    /// sent.
    fn send(store: &mut SeqStore, sa: &mut OutboundSa, reserved: &mut u32, n: usize) -> Vec<u32> {
        let mut out = Vec::new();
        (0..n)
            .map(|_| {
                cover(store, reserved, sa.last_sequence()).expect("persisting a reservation");
                assert!(u64::from(sa.last_sequence()) < u64::from(*reserved));
                sa.encapsulate(&packet(), &mut out)
                    .expect("encapsulating")
                    .seq
            })
            .collect()
    }

    #[test]
    fn missing_file_is_empty_and_directory_is_created() {
        let dir = tempfile::tempdir().expect("creating a temp dir");
        let state = dir.path().join("nested/state");
        let store = SeqStore::open(&state).expect("opening a fresh store");
        assert_eq!(store.reservation("sa1", 0x1000), None);
        assert!(state.is_dir());
        assert!(
            !store.path().exists(),
            "nothing written before a reservation"
        );
    }

    #[test]
    fn reservation_is_written_before_the_first_packet_and_survives_reload() {
        let (dir, mut store) = fresh_store();
        let mut sa = tx();
        let mut reserved = 0;
        assert_eq!(send(&mut store, &mut sa, &mut reserved, 3), [1, 2, 3]);
        assert_eq!(reserved, RESERVATION_STEP);
        let reloaded = SeqStore::open(dir.path()).expect("reloading the store");
        assert_eq!(reloaded.reservation("sa1", 0x1000), Some(RESERVATION_STEP));
        assert_eq!(reloaded.reservation("sa1", 0x1001), None);
        assert_eq!(reloaded.reservation("sa2", 0x1000), None);
        // Atomic write: no temporary file is left behind, and the file is private.
        assert!(!dir.path().join("esp-seq.json.tmp").exists());
        let mode = fs::metadata(reloaded.path())
            .expect("reading the file mode")
            .permissions();
        assert_eq!(
            std::os::unix::fs::PermissionsExt::mode(&mode) & 0o777,
            0o600
        );
    }

    #[test]
    fn restarts_never_reuse_a_sequence_number() {
        let dir = tempfile::tempdir().expect("creating a temp dir");
        let mut highest_sent = 0;
        // Five "processes", each killed -9 after a different number of packets (crossing a
        // reservation boundary in the third), none saving anything at exit.
        for (run, count) in [1usize, 10, 70_000, 0, 5].into_iter().enumerate() {
            let mut store = SeqStore::open(dir.path()).expect("opening the store");
            let mut sa = tx();
            let mut reserved = store.reservation("sa1", 0x1000).unwrap_or(0);
            sa.resume_after(reserved);
            let sent = send(&mut store, &mut sa, &mut reserved, count);
            if let Some(first) = sent.first() {
                assert!(
                    *first > highest_sent,
                    "run {run}: {first} <= {highest_sent}"
                );
            }
            assert!(sent.windows(2).all(|w| w[1] == w[0] + 1));
            highest_sent = highest_sent.max(sent.last().copied().unwrap_or(0));
        }
        assert!(highest_sent > 70_000);
    }

    #[test]
    fn stale_temporary_file_is_ignored_and_replaced() {
        let (dir, mut store) = fresh_store();
        store.reserve("sa1", 0x1000, 100).expect("reserving");
        // A crash between create and rename leaves a torn temporary file behind.
        fs::write(dir.path().join("esp-seq.json.tmp"), b"{\"vers").expect("writing");
        let mut store = SeqStore::open(dir.path()).expect("the real file is intact");
        assert_eq!(store.reservation("sa1", 0x1000), Some(100));
        store.reserve("sa1", 0x1000, 200).expect("reserving again");
        assert_eq!(
            SeqStore::open(dir.path())
                .expect("reloading")
                .reservation("sa1", 0x1000),
            Some(200)
        );
    }

    #[test]
    fn reservations_never_decrease() {
        let (_dir, mut store) = fresh_store();
        store.reserve("sa1", 0x1000, 500).expect("reserving");
        store.reserve("sa1", 0x1000, 100).expect("reserving lower");
        assert_eq!(store.reservation("sa1", 0x1000), Some(500));
    }

    #[test]
    fn reservation_saturates_at_the_last_sequence_number() {
        let (_dir, mut store) = fresh_store();
        let mut reserved = u32::MAX - 10;
        assert!(cover(&mut store, &mut reserved, u32::MAX - 10).expect("covering"));
        assert_eq!(reserved, u32::MAX);
        assert!(!cover(&mut store, &mut reserved, u32::MAX - 1).expect("covering"));
    }

    #[test]
    fn pruning_keeps_live_entries_only_when_over_the_limit() {
        let (_dir, mut store) = fresh_store();
        store.reserve("gone", 0x2000, 1).expect("reserving");
        store.reserve("live", 0x1000, 1).expect("reserving");
        let live = HashSet::from([("live".to_owned(), 0x1000)]);
        store.prune_if_over(&live);
        assert_eq!(
            store.reservation("gone", 0x2000),
            Some(1),
            "under the limit"
        );
        for i in 0..=u32::try_from(state_file::MAX_ENTRIES).expect("fits") {
            store.entries.insert((format!("x{i}"), 0x100 + i), 1);
        }
        store.prune_if_over(&live);
        assert_eq!(store.entries.len(), 1);
        assert_eq!(store.reservation("live", 0x1000), Some(1));
    }

    const GCM128: &[u8] = b"0123456789abcdefSALT";

    #[test]
    fn iv_entries_hash_the_aes_key_and_never_show_it() {
        let entry = iv_entry(EncryptionAlgorithm::Aes128Gcm, GCM128).expect("a gcm entry");
        assert!(entry.starts_with(IV_ENTRY_PREFIX) && entry.len() == IV_ENTRY_PREFIX.len() + 64);
        assert!(
            !entry.contains(&hex::encode(&GCM128[..16])),
            "the key is not in the name"
        );
        assert!(
            !crate::model::is_valid_name(&entry),
            "no sa can be named like it"
        );
        // The salt does not matter (the AES key does), nor does anything but the key.
        assert_eq!(
            iv_entry(EncryptionAlgorithm::Aes128Gcm, b"0123456789abcdefPEPR"),
            Some(entry.clone())
        );
        assert_ne!(
            iv_entry(EncryptionAlgorithm::Aes128Gcm, b"0123456789abcdeFSALT"),
            Some(entry.clone())
        );
        // Domain separation: not the bare SHA-256 of the key.
        assert!(!entry.ends_with(&hex::encode(Sha256::digest(&GCM128[..16]))));
        assert_eq!(
            iv_entry(EncryptionAlgorithm::Aes128Cbc, b"0123456789abcdef"),
            None
        );
    }

    /// A failed write takes an SA's reservation back but keeps an IV epoch raised (it was
    /// handed out), and the next write that succeeds carries it to disk; pruning never drops
    /// an epoch.
    #[test]
    fn iv_epochs_survive_failed_writes_and_pruning() {
        let (dir, mut store) = fresh_store();
        let entry = iv_entry(EncryptionAlgorithm::Aes128Gcm, GCM128).expect("a gcm entry");
        // The file's place is taken by a non-empty directory: the rename fails.
        fs::create_dir_all(store.path().join("blocker")).expect("blocking the file");
        let failed = store.reserve_all([("sa1", 0x1000, 100), (entry.as_str(), IV_EPOCH_SPI, 1)]);
        assert!(failed.is_err(), "the write fails");
        assert_eq!(store.reservation("sa1", 0x1000), None, "taken back");
        assert_eq!(
            store.reservation(&entry, IV_EPOCH_SPI),
            Some(1),
            "kept raised"
        );
        fs::remove_dir_all(store.path()).expect("unblocking the file");
        store.reserve("sa2", 0x2000, 5).expect("the next write");
        let reloaded = SeqStore::open(dir.path()).expect("reloading");
        assert_eq!(
            reloaded.reservation(&entry, IV_EPOCH_SPI),
            Some(1),
            "on disk now"
        );

        for i in 0..=u32::try_from(state_file::MAX_ENTRIES).expect("fits") {
            store.entries.insert((format!("x{i}"), 0x100 + i), 1);
        }
        store.prune_if_over(&HashSet::new());
        assert_eq!(
            store.reservation(&entry, IV_EPOCH_SPI),
            Some(1),
            "never pruned"
        );
        assert_eq!(store.entries.len(), 1);
    }
}
