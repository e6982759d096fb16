//! One inbound SA's replay ceiling in memory, and the policy for raising and lowering it
//! (the file that persists it is `replay_store`; the contract is in its module docs).
//!
//! Contract: pure state over values passed in (the clock included), no I/O. The packet path
//! asks [`Ceiling::admits`]; above the ceiling, [`Ceiling::request`] names the value to persist
//! (or refuses while a failed write backs off), and only after the I/O layer has written it does
//! [`Ceiling::written`] raise the gate: the gate in memory is never above what is on disk.
//! [`Ceiling::tighten`] (housekeeping) lowers the gate first; the store's entry follows.

use std::time::{Duration, Instant};

use sha2::{Digest, Sha256};

/// Smallest and largest distance written ahead of the packet that needed a new ceiling.
pub const MIN_STEP: u32 = 16;
pub const MAX_STEP: u32 = 1 << 20;

/// Ceilings written closer together than this double the step; further apart than
/// [`SLOW_WRITES`], halve it.
pub(crate) const FAST_WRITES: Duration = Duration::from_secs(1);
pub(crate) const SLOW_WRITES: Duration = Duration::from_secs(4);

/// How often the engine's housekeeping calls [`Ceiling::tighten`] for every inbound SA.
pub const TIGHTEN_EVERY: Duration = Duration::from_millis(500);

/// [`Ceiling::tighten`] lowers a ceiling that is more than this many seconds of the SA's recent
/// traffic ahead of what it accepted, to this many seconds ahead.
pub(crate) const LOWER_ABOVE_SECS: u64 = 4;
pub(crate) const KEEP_AHEAD_SECS: u64 = 2;

/// Back-off after a failed write: first and longest.
pub(crate) const FIRST_BACKOFF: Duration = Duration::from_secs(1);
pub(crate) const MAX_BACKOFF: Duration = Duration::from_mins(1);

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
        hash.update(u64::try_from(part.len()).unwrap_or(u64::MAX).to_be_bytes());
        hash.update(part);
    }
    let digest = hash.finalize();
    let mut id = [0; 16];
    id.copy_from_slice(&digest[..16]);
    id
}

/// Why [`Ceiling::admit`] refused a sequence number.
#[cfg(test)]
#[derive(Debug)]
pub(crate) enum Refused {
    /// The write failed just now (the engine logs it).
    WriteFailed(#[allow(dead_code, reason = "read by tests' Debug output")] std::io::Error),
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
    /// A raise was requested and its write has not been confirmed yet.
    in_flight: bool,
    /// Kept on disk. An `ike` SA's is not: its keys die with the process, so no restart can be
    /// replayed into, and its replay state must never reach the disk.
    persisted: bool,
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
            in_flight: false,
            persisted: true,
        }
    }

    /// The gate of an SA whose replay state lives in memory only (an `ike` SA): it admits every
    /// number without a write, is never tightened and is never settled to disk.
    #[must_use]
    pub fn in_memory() -> Self {
        Self {
            persisted: false,
            ..Self::new(u32::MAX)
        }
    }

    /// Whether this gate is kept on disk (see [`Self::in_memory`]).
    pub fn is_persisted(&self) -> bool {
        self.persisted
    }

    /// The gate: the highest number accepted without a write.
    #[cfg(test)]
    pub(crate) fn value(&self) -> u32 {
        self.value
    }

    /// Whether `seq` (authentic, new to the window) may be accepted without a write: at or
    /// below the ceiling. The steady state: no clock read, no write.
    pub fn admits(&self, seq: u32) -> bool {
        seq <= self.value
    }

    /// For `seq` above the ceiling: the ceiling to persist before it may be accepted
    /// (`seq + step`, the step adapted to how often ceilings were written), or `None` while a
    /// failed write backs off (the packet must be dropped). Marks a write in flight, which
    /// [`Self::tighten`] leaves alone until [`Self::written`] or [`Self::failed`].
    pub fn request(&mut self, seq: u32, now: Instant) -> Option<u32> {
        if self.retry_at.is_some_and(|at| now < at) {
            return None;
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
        self.in_flight = true;
        Some(seq.saturating_add(self.step.max(1)))
    }

    /// `value` is on disk (written at `now`): the gate rises to it.
    pub fn written(&mut self, value: u32, now: Instant) {
        self.value = self.value.max(value);
        self.last_write = Some(now);
        self.retry_at = None;
        self.backoff = FIRST_BACKOFF;
        self.in_flight = false;
    }

    /// The write failed at `now`: no new attempt before the back-off ends.
    pub fn failed(&mut self, now: Instant) {
        self.retry_at = Some(now + self.backoff);
        self.backoff = (self.backoff * 2).min(MAX_BACKOFF);
        self.in_flight = false;
    }

    /// [`Self::admits`], else [`Self::request`], `persist`, then [`Self::written`] or
    /// [`Self::failed`]: what the engine does for one packet, in one call.
    ///
    /// # Errors
    /// [`Refused`] when the new ceiling is not on disk: the packet must be dropped.
    #[cfg(test)]
    pub(crate) fn admit(
        &mut self,
        seq: u32,
        now: impl FnOnce() -> Instant,
        persist: impl FnOnce(u32) -> std::io::Result<()>,
    ) -> Result<(), Refused> {
        if self.admits(seq) {
            return Ok(());
        }
        let now = now();
        let wanted = self.request(seq, now).ok_or(Refused::BackingOff)?;
        match persist(wanted) {
            Ok(()) => {
                self.written(wanted, now);
                Ok(())
            }
            Err(e) => {
                self.failed(now);
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
    /// returns the new value. The caller then lowers the store's entry to it (`ReplayStore::lower`)
    /// before letting the packet path run again, and writes the file outside the packet path's
    /// lock. Never lowers below `highest`, never raises.
    pub fn tighten(&mut self, highest: u32, now: Instant) -> Option<u32> {
        // A raise in flight may land after this lowering reached the store: lowering its SA
        // now could leave the gate above the file. The next pass will. A gate in memory only
        // has no file to follow.
        if self.in_flight || !self.persisted {
            return None;
        }
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
    use std::io;

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
        // 101 above the ceiling at `t0 + ms`, the disk full: refused after a write, or without
        // trying during the back-off.
        let write_fails = |ceiling: &mut Ceiling, ms| {
            let full = || io::Error::from_raw_os_error(libc::ENOSPC);
            let at = t0 + Duration::from_millis(ms);
            matches!(
                ceiling.admit(101, || at, |_| Err(full())),
                Err(Refused::WriteFailed(_))
            )
        };
        let backs_off = |ceiling: &mut Ceiling, ms| {
            let at = t0 + Duration::from_millis(ms);
            matches!(
                ceiling.admit(101, || at, |_| panic!("backing off")),
                Err(Refused::BackingOff)
            )
        };
        assert!(write_fails(&mut ceiling, 0));
        assert_eq!(ceiling.value(), 100, "not raised");
        // Below the ceiling still flows; above it, no new attempt during the back-off.
        assert!(ceiling.admit(100, || t0, |_| panic!("no write")).is_ok());
        assert!(backs_off(&mut ceiling, 500));
        // After 1 s it tries again; a second failure doubles the back-off.
        assert!(write_fails(&mut ceiling, 1000));
        assert!(backs_off(&mut ceiling, 2500));
        // The disk has room again: accepted once the ceiling is written.
        assert!(
            ceiling
                .admit(101, || t0 + Duration::from_secs(3), |_| Ok(()))
                .is_ok()
        );
        assert!(ceiling.value() > 101);
    }

    #[test]
    fn a_raise_in_flight_is_never_lowered_under_it() {
        let mut ceiling = Ceiling::new(0);
        let t0 = Instant::now();
        assert_eq!(ceiling.tighten(0, t0), None, "the first look has no rate");
        let wanted = ceiling.request(1, t0).expect("no back-off");
        assert!(!ceiling.admits(1), "not before the write is confirmed");
        // Housekeeping while the write is in flight: an idle SA would come down to 0.
        assert_eq!(ceiling.tighten(0, t0 + Duration::from_secs(5)), None);
        ceiling.written(wanted, t0);
        assert!(ceiling.admits(1));
        assert_eq!(ceiling.value(), wanted);
    }
}
