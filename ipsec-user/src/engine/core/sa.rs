//! What the core keeps per SA besides the crypto state: its identity (what decides whether a
//! rebuild keeps its state), the 3DES volume limit and the back-off of failed state writes.
//!
//! Contract: pure state over values passed in (the clock included); logging of once-per-SA
//! events is the only side effect.

use std::net::Ipv6Addr;
use std::time::{Duration, Instant};

use tracing::warn;

use super::ceiling::{self, KeyId};
use crate::crypto::{OuterHeader, SaConfig};
use crate::model::{EncryptionAlgorithm, IntegrityAlgorithm, Key, Mode, Sa};

/// What makes two SAs "the same" for keeping state: everything that shapes the packets. The
/// name and slot id are not part of it.
#[derive(Clone, PartialEq, Eq)]
pub(crate) struct SaIdentity {
    pub(crate) spi: u32,
    pub(crate) mode: Mode,
    source: Ipv6Addr,
    destination: Ipv6Addr,
    encryption: EncryptionAlgorithm,
    encryption_key: Key,
    integrity: IntegrityAlgorithm,
    integrity_key: Key,
    /// ESP in UDP (RFC 3948), or plain ESP (see `udp`).
    pub(crate) udp_encap: Option<crate::model::UdpEncap>,
}

impl SaIdentity {
    pub(crate) fn of(sa: &Sa) -> Self {
        Self {
            spi: sa.spi,
            mode: sa.mode,
            source: sa.source.unwrap_or(Ipv6Addr::UNSPECIFIED),
            destination: sa.destination.unwrap_or(Ipv6Addr::UNSPECIFIED),
            encryption: sa.encryption,
            encryption_key: sa.encryption_key.clone(),
            integrity: sa.integrity,
            integrity_key: sa.integrity_key.clone(),
            udp_encap: sa.udp_encap,
        }
    }

    /// Whether ESP that came in `outer` travels between this SA's endpoints; `::` (`any`)
    /// matches every address.
    /// Where ESP in UDP for this SA arrives, if it is encapsulated: its destination
    /// (unspecified for `any`) and the destination port.
    pub(crate) fn udp_endpoint(&self) -> Option<(Ipv6Addr, u16)> {
        self.udp_encap
            .map(|encap| (self.destination, encap.destination_port))
    }

    pub(crate) fn binds(&self, outer: &OuterHeader) -> bool {
        let matches = |want: Ipv6Addr, got: Ipv6Addr| want.is_unspecified() || want == got;
        matches(self.source, outer.source) && matches(self.destination, outer.destination)
    }

    /// Which persisted replay ceiling belongs to this SA (see `ceiling`).
    pub(crate) fn key_id(&self) -> KeyId {
        ceiling::key_id(
            self.spi,
            self.encryption.as_str(),
            self.encryption_key.as_bytes(),
            self.integrity.as_str(),
            self.integrity_key.as_bytes(),
        )
    }

    pub(crate) fn config(&self) -> SaConfig<'_> {
        SaConfig {
            spi: self.spi,
            mode: self.mode,
            source: self.source,
            destination: self.destination,
            encryption: self.encryption,
            encryption_key: self.encryption_key.as_bytes(),
            integrity: self.integrity,
            integrity_key: self.integrity_key.as_bytes(),
        }
    }

    pub(crate) fn encryption(&self) -> EncryptionAlgorithm {
        self.encryption
    }

    /// The IV epoch entry of this SA's key (`seq::iv_entry`), for AES-GCM only.
    pub(crate) fn iv_entry(&self) -> Option<String> {
        crate::engine::seq::iv_entry(self.encryption, self.encryption_key.as_bytes())
    }
}

/// Spaces out retries of a failed state write (a full disk): 1 s, doubling up to 60 s. Each
/// failed attempt is logged by the I/O layer, so the log is rate-limited too.
#[derive(Debug, Default)]
pub(crate) struct Backoff {
    retry_at: Option<Instant>,
    delay: Duration,
}

impl Backoff {
    pub(crate) const FIRST: Duration = Duration::from_secs(1);
    const MAX: Duration = Duration::from_mins(1);

    /// True while the last failure's delay runs at `now`.
    pub(crate) fn waiting(&self, now: Instant) -> bool {
        self.retry_at.is_some_and(|at| now < at)
    }

    /// Records a failure at `now`; returns the delay before the next attempt.
    pub(crate) fn failed(&mut self, now: Instant) -> Duration {
        self.delay = if self.delay.is_zero() {
            Self::FIRST
        } else {
            (self.delay * 2).min(Self::MAX)
        };
        self.retry_at = Some(now + self.delay);
        self.delay
    }

    pub(crate) fn succeeded(&mut self) {
        self.delay = Duration::ZERO;
        self.retry_at = None;
    }
}

/// Sweet32 (CVE-2016-2183): a 64-bit block cipher leaks plaintext after about 2^32 blocks under
/// one key (the birthday bound). A 3DES SA stops protecting, and accepting, once it has
/// encrypted (or decrypted) this many blocks, far below that bound.
pub const DEFAULT_TDES_BLOCK_LIMIT: u64 = 1 << 30;

/// One direction's block count of one SA, with the limit that applies to it (`u64::MAX` for
/// ciphers with 128-bit blocks, which this limit does not concern).
#[derive(Debug, Clone, Copy)]
pub(crate) struct Volume {
    blocks: u64,
    limit: u64,
    logged: bool,
}

impl Volume {
    pub(crate) fn new(encryption: EncryptionAlgorithm, tdes_limit: u64) -> Self {
        let limit = if encryption == EncryptionAlgorithm::TripleDesCbc {
            tdes_limit
        } else {
            u64::MAX
        };
        Self {
            blocks: 0,
            limit,
            logged: false,
        }
    }

    /// 8-byte blocks the cipher processes for a packet of `bytes` (an upper bound).
    pub(crate) fn blocks(bytes: usize) -> u64 {
        u64::try_from(bytes).unwrap_or(u64::MAX).div_ceil(8) + 1
    }

    /// Whether a packet of `bytes` stays within the limit; logs (once) when it does not.
    pub(crate) fn allows(&mut self, bytes: usize, name: &str, direction: &str) -> bool {
        if self.limit == u64::MAX {
            return true;
        }
        if self.blocks.saturating_add(Self::blocks(bytes)) > self.limit {
            if !self.logged {
                self.logged = true;
                warn!(
                    sa = %name, direction, limit = self.limit,
                    "3des sa reached its block limit (sweet32): it no longer protects or accepts traffic; replace it, preferably with aes128-cbc"
                );
            }
            return false;
        }
        true
    }

    /// Counts a packet of `bytes` as processed.
    pub(crate) fn add(&mut self, bytes: usize) {
        if self.limit != u64::MAX {
            self.blocks = self.blocks.saturating_add(Self::blocks(bytes));
        }
    }

    /// [`Self::allows`], then [`Self::add`] if it does.
    pub(crate) fn charge(&mut self, bytes: usize, name: &str, direction: &str) -> bool {
        let allowed = self.allows(bytes, name, direction);
        if allowed {
            self.add(bytes);
        }
        allowed
    }
}
