//! Multi-buffer ESP crypto: the cipher and the ICV of a burst of framed ESP packets together.
//!
//! Contract:
//! - Input is framed ESP (`SPI | Sequence Number | IV | plaintext with padding and trailer |
//!   room for the ICV`), exactly what the sequential path encrypts and authenticates in place;
//!   output is byte for byte the sequential path's (the same CBC, the same truncated HMAC), so
//!   a peer cannot tell which path sealed a packet. Tests compare both for every burst size,
//!   mixed sizes and mixed SAs.
//! - CBC encryption is serial within a packet but not across packets: with
//!   [`Backend::Lanes`], AES-CBC runs eight packets side by side on AES-NI
//!   (`aes_lanes`) and HMAC-SHA-256 four messages side by side on SHA-NI (`sha256_lanes`).
//!   Everything else (3DES, null, HMAC-SHA-1, a CPU without those instructions, a burst of one)
//!   takes the sequential RustCrypto path, per packet, through the SA's own suite: 3DES stays
//!   on it by design.
//! - AES-GCM (RFC 4106) has its own lanes where the CPU has VAES and VPCLMULQDQ (`gcm_lanes`,
//!   `ghash`): counter mode on eight blocks at once stitched with an aggregated GHASH, byte for
//!   byte the `aes-gcm` crate's output (which it replaces there, and which stays the path
//!   everywhere else).
//! - The backend is chosen once per process at run time ([`Backend::active`]): `Lanes` when the
//!   CPU has AES-NI, SHA-NI, SSSE3 and SSE4.1, else `Sequential`; `XIPSEC_ESP_BACKEND=sequential`
//!   forces the portable path (for A/B measurements and tests).
//! - Inbound, only the ICVs are computed in a burst ([`verify_jobs`]); CBC decryption is
//!   already parallel within a packet. The replay and ceiling steps stay per packet, in order
//!   (see `esp_burst`). With GCM lanes the tag is checked there too (GHASH only), and
//!   [`LaneKeys::decrypt_verified`] later runs counter mode for the packets that passed, so a
//!   forgery is never decrypted.
//! - No allocation: bursts are processed in chunks of [`CHUNK`] with their jobs on the stack.

#[cfg(target_arch = "x86_64")]
mod aes_lanes;
#[cfg(target_arch = "x86_64")]
mod gcm_lanes;
#[cfg(target_arch = "x86_64")]
mod ghash;
#[cfg(target_arch = "x86_64")]
mod sha256_lanes;

use super::suite::Suite;
use super::{CipherLengthError, MAX_ICV_LEN};
use crate::model::{EncryptionAlgorithm, IntegrityAlgorithm};
use crate::wire::ESP_HEADER_LEN;
use smallvec::SmallVec;
use std::sync::OnceLock;

pub(crate) use super::esp::Framed;
pub(crate) use super::esp::burst::{OpenItem, SealItem, seal_packets, verify_packets};
#[cfg(all(test, target_arch = "x86_64"))]
pub(crate) use aes_lanes::LANES;
/// Packets in flight without lanes (tests size their bursts by it).
#[cfg(all(test, not(target_arch = "x86_64")))]
pub(crate) const LANES: usize = 1;

/// Packets whose jobs are built on the stack at once; a longer burst is taken in chunks.
pub(crate) const CHUNK: usize = 32;

/// The environment variable that forces a backend (`sequential` or `lanes`).
pub const BACKEND_ENV: &str = "XIPSEC_ESP_BACKEND";

/// Which implementation seals and opens bursts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    /// AES-CBC over eight packets at once (AES-NI) and HMAC-SHA-256 over four (SHA-NI).
    Lanes,
    /// RustCrypto, one packet at a time (the portable fallback).
    Sequential,
}

impl Backend {
    /// The backend of this process: detected once, or forced by [`BACKEND_ENV`].
    #[must_use]
    pub fn active() -> Self {
        static ACTIVE: OnceLock<Backend> = OnceLock::new();
        *ACTIVE.get_or_init(|| {
            let forced = std::env::var(BACKEND_ENV).ok();
            let detected = Self::detect();
            match forced.as_deref() {
                Some("sequential") => Self::Sequential,
                _ => detected,
            }
        })
    }

    /// What this CPU supports.
    #[must_use]
    pub fn detect() -> Self {
        #[cfg(target_arch = "x86_64")]
        if std::is_x86_feature_detected!("aes") && sha256_lanes::available() {
            return Self::Lanes;
        }
        Self::Sequential
    }

    /// Its name in reports (`bench esp`, logs).
    #[must_use]
    pub fn name(self) -> &'static str {
        match self {
            Self::Lanes if Self::gcm_lanes() => "aesni-x8+shani-x4+vaes-gcm",
            Self::Lanes => "aesni-x8+shani-x4",
            Self::Sequential => "rustcrypto",
        }
    }

    /// Whether AES-GCM has lanes on this CPU (VAES, VPCLMULQDQ).
    fn gcm_lanes() -> bool {
        #[cfg(target_arch = "x86_64")]
        {
            gcm_lanes::available()
        }
        #[cfg(not(target_arch = "x86_64"))]
        false
    }
}

/// The lane keys of one SA: `None` parts take the sequential path.
#[derive(Default)]
pub(crate) struct LaneKeys {
    #[cfg(target_arch = "x86_64")]
    cipher: Option<aes_lanes::LaneAesKey>,
    #[cfg(target_arch = "x86_64")]
    mac: Option<sha256_lanes::LaneHmacKey>,
    /// Boxed: its doubled round keys and hash key powers are 600 bytes the other suites'
    /// SAs need not carry.
    #[cfg(target_arch = "x86_64")]
    gcm: Option<Box<gcm_lanes::LaneGcmKey>>,
}

impl LaneKeys {
    /// Keys the lanes for an SA's algorithms when [`Backend::active`] is `Lanes` and the
    /// algorithm has lanes (AES-CBC, HMAC-SHA-256, AES-GCM); the keys were already checked by
    /// the SA's sequential algorithms.
    pub(crate) fn new(
        encryption: EncryptionAlgorithm,
        encryption_key: &[u8],
        integrity: IntegrityAlgorithm,
        integrity_key: &[u8],
    ) -> Self {
        if Backend::active() != Backend::Lanes {
            return Self::default();
        }
        #[cfg(target_arch = "x86_64")]
        {
            let cipher = match encryption {
                EncryptionAlgorithm::Aes128Cbc | EncryptionAlgorithm::Aes256Cbc => {
                    aes_lanes::LaneAesKey::new(encryption_key)
                }
                _ => None,
            };
            let mac = match integrity {
                IntegrityAlgorithm::HmacSha256 => sha256_lanes::LaneHmacKey::new(integrity_key),
                IntegrityAlgorithm::HmacSha1 | IntegrityAlgorithm::None => None,
            };
            let gcm = match encryption {
                EncryptionAlgorithm::Aes128Gcm | EncryptionAlgorithm::Aes256Gcm => {
                    gcm_lanes::LaneGcmKey::new(encryption_key).map(Box::new)
                }
                _ => None,
            };
            Self { cipher, mac, gcm }
        }
        #[cfg(not(target_arch = "x86_64"))]
        {
            let _ = (encryption, encryption_key, integrity, integrity_key);
            Self::default()
        }
    }

    /// Whether any part runs on lanes (for reports).
    pub(crate) fn any(&self) -> bool {
        #[cfg(target_arch = "x86_64")]
        {
            self.cipher.is_some() || self.mac.is_some() || self.gcm.is_some()
        }
        #[cfg(not(target_arch = "x86_64"))]
        false
    }
}

/// One framed ESP packet to seal in place.
pub(crate) struct SealJob<'a> {
    pub(crate) suite: &'a Suite,
    pub(crate) lanes: &'a LaneKeys,
    /// ESP header, IV, plaintext with padding and trailer, then `suite.icv_len()` bytes that
    /// receive the ICV.
    pub(crate) esp: &'a mut [u8],
}

/// How far a job got in [`seal_jobs`].
#[derive(Clone, Copy, PartialEq, Eq)]
enum Stage {
    /// Refused (lengths), or sealed whole by the suite itself: nothing left to do.
    Finished,
    /// Encrypted: the ICV is still to compute.
    Encrypted,
}

/// Encrypts and authenticates every job in place; `results[i]` says how job `i` went (an
/// error only for a framing bug: lengths that do not fit the cipher, the packet then unsealed).
pub(crate) fn seal_jobs(jobs: &mut [SealJob<'_>], results: &mut [Result<(), CipherLengthError>]) {
    for (jobs, results) in jobs.chunks_mut(CHUNK).zip(results.chunks_mut(CHUNK)) {
        let mut stages = [Stage::Finished; CHUNK];
        encrypt_chunk(jobs, results, &mut stages);
        authenticate_chunk(jobs, &stages);
    }
}

/// The offsets of the text and the ICV in a framed packet of `suite`, if `len` fits it.
fn layout(suite: &Suite, len: usize) -> Result<(usize, usize), CipherLengthError> {
    let text_offset = ESP_HEADER_LEN + suite.iv_len();
    let error = CipherLengthError {
        len,
        iv_len: suite.iv_len(),
        block_size: suite.block_size(),
    };
    let icv_offset = len.checked_sub(suite.icv_len()).ok_or(error)?;
    if icv_offset < text_offset || !(icv_offset - text_offset).is_multiple_of(suite.block_size()) {
        return Err(error);
    }
    Ok((text_offset, icv_offset))
}

fn encrypt_chunk(
    jobs: &mut [SealJob<'_>],
    results: &mut [Result<(), CipherLengthError>],
    stages: &mut [Stage],
) {
    #[cfg(target_arch = "x86_64")]
    let mut lanes: SmallVec<[aes_lanes::CbcJob<'_>; CHUNK]> = SmallVec::new();
    for ((job, result), stage) in jobs
        .iter_mut()
        .zip(results.iter_mut())
        .zip(stages.iter_mut())
    {
        *stage = Stage::Finished;
        let (text_offset, icv_offset) = match layout(job.suite, job.esp.len()) {
            Ok(offsets) => offsets,
            Err(error) => {
                *result = Err(error);
                continue;
            }
        };
        let Suite::Composed { cipher, .. } = job.suite else {
            // Combined mode (AES-GCM) seals in one call, packet by packet.
            *result = job
                .lanes
                .seal_combined(job.suite, job.esp, text_offset, icv_offset);
            continue;
        };
        if !job.lanes.any() {
            *result = job.suite.seal(job.esp, text_offset, icv_offset);
            continue;
        }
        *stage = Stage::Encrypted;
        let (head, rest) = job.esp.split_at_mut(text_offset);
        let (iv, text) = (
            &head[ESP_HEADER_LEN..],
            &mut rest[..icv_offset - text_offset],
        );
        #[cfg(target_arch = "x86_64")]
        if let (Some(key), Ok(iv)) = (&job.lanes.cipher, <[u8; 16]>::try_from(iv)) {
            lanes.push(aes_lanes::CbcJob {
                key,
                iv,
                data: text,
            });
            *result = Ok(());
            continue;
        }
        *result = cipher.encrypt(iv, text);
        if result.is_err() {
            *stage = Stage::Finished;
        }
    }
    // `layout` checked every lane job's length: whole blocks, so none is refused.
    #[cfg(target_arch = "x86_64")]
    aes_lanes::encrypt_burst(&mut lanes, &mut [true; CHUNK]);
}

fn authenticate_chunk(jobs: &mut [SealJob<'_>], stages: &[Stage]) {
    #[cfg(target_arch = "x86_64")]
    let mut lanes: SmallVec<[sha256_lanes::HmacJob<'_>; CHUNK]> = SmallVec::new();
    for (job, stage) in jobs.iter_mut().zip(stages) {
        let Suite::Composed { integrity, .. } = job.suite else {
            continue;
        };
        if *stage != Stage::Encrypted {
            continue;
        }
        // `layout` checked the length.
        let (authenticated, icv) = job.esp.split_at_mut(job.esp.len() - integrity.icv_len());
        #[cfg(target_arch = "x86_64")]
        if let Some(key) = job.lanes.mac_for(authenticated) {
            lanes.push(sha256_lanes::HmacJob {
                key,
                data: authenticated,
                out: icv,
            });
            continue;
        }
        icv.copy_from_slice(integrity.compute(authenticated).as_ref());
    }
    #[cfg(target_arch = "x86_64")]
    sha256_lanes::hmac_burst(&mut lanes);
}

/// One inbound packet whose ICV to check: `authenticated` is ESP header to ciphertext, `icv`
/// what the packet carries. `ok` receives the verdict. A combined-mode suite (AES-GCM) without
/// lanes checks its tag while opening, so its `ok` is `true` here and the opening decides
/// (see [`LaneKeys::decrypts_verified`]).
pub(crate) struct VerifyJob<'a> {
    pub(crate) suite: &'a Suite,
    pub(crate) lanes: &'a LaneKeys,
    pub(crate) authenticated: &'a [u8],
    pub(crate) icv: &'a [u8],
    pub(crate) ok: bool,
}

/// Checks every job's ICV in constant time (RFC 4303 §3.4.4.1), as `Integrity::verify` does.
pub(crate) fn verify_jobs(jobs: &mut [VerifyJob<'_>]) {
    for jobs in jobs.chunks_mut(CHUNK) {
        let mut computed = [[0u8; MAX_ICV_LEN]; CHUNK];
        #[cfg(target_arch = "x86_64")]
        {
            let mut lanes: SmallVec<[sha256_lanes::HmacJob<'_>; CHUNK]> = SmallVec::new();
            for (job, out) in jobs.iter().zip(computed.iter_mut()) {
                if let Some(key) = job.lanes.mac_for(job.authenticated) {
                    let icv_len = job.suite.icv_len().min(MAX_ICV_LEN);
                    lanes.push(sha256_lanes::HmacJob {
                        key,
                        data: job.authenticated,
                        out: &mut out[..icv_len],
                    });
                }
            }
            sha256_lanes::hmac_burst(&mut lanes);
        }
        for (job, computed) in jobs.iter_mut().zip(&computed) {
            job.ok = match job.suite {
                Suite::Combined(_) => job.lanes.combined_verdict(job.authenticated, job.icv),
                Suite::Composed { integrity, .. } if !job.lanes.has_mac_for(job.authenticated) => {
                    integrity.verify(job.authenticated, job.icv)
                }
                Suite::Composed { integrity, .. } => {
                    let icv_len = integrity.icv_len().min(MAX_ICV_LEN);
                    crate::crypto::icv_eq(&computed[..icv_len], job.icv)
                }
            };
        }
    }
}

/// Messages shorter than this are authenticated one at a time: a lane's fixed cost (padding
/// blocks, the outer hash, refilling) outweighs the interleaving for a few blocks (measured:
/// 64-byte packets were 13% slower on lanes, 1,400-byte ones 2.2 times faster).
const LANE_MIN_BYTES: usize = 256;

impl LaneKeys {
    /// The lane key for an HMAC over `message`, if it is worth the lanes.
    #[cfg(target_arch = "x86_64")]
    fn mac_for(&self, message: &[u8]) -> Option<&sha256_lanes::LaneHmacKey> {
        self.mac
            .as_ref()
            .filter(|_| message.len() >= LANE_MIN_BYTES)
    }

    fn has_mac_for(&self, message: &[u8]) -> bool {
        #[cfg(target_arch = "x86_64")]
        {
            self.mac_for(message).is_some()
        }
        #[cfg(not(target_arch = "x86_64"))]
        {
            let _ = message;
            false
        }
    }
}

impl LaneKeys {
    /// Seals a combined-mode (AES-GCM) packet: on the GCM lanes when the SA has them, else
    /// through its suite. `esp` is ESP header, 8-byte IV, text, then the 16-byte ICV room.
    /// Kept out of line so the CBC loop around it stays as tight as before.
    #[inline(never)]
    fn seal_combined(
        &self,
        suite: &Suite,
        esp: &mut [u8],
        text_offset: usize,
        icv_offset: usize,
    ) -> Result<(), CipherLengthError> {
        #[cfg(target_arch = "x86_64")]
        if let Some(key) = &self.gcm {
            let (head, rest) = esp.split_at_mut(text_offset);
            let (text, icv) = rest.split_at_mut(icv_offset - text_offset);
            let (header, iv) = head.split_at(ESP_HEADER_LEN);
            let bad = CipherLengthError {
                len: text.len(),
                iv_len: iv.len(),
                block_size: suite.block_size(),
            };
            let iv = <[u8; 8]>::try_from(iv).map_err(|_| bad)?;
            let icv = <&mut [u8; gcm_lanes::TAG_LEN]>::try_from(icv).map_err(|_| bad)?;
            return key.seal(header, iv, text, icv);
        }
        suite.seal(esp, text_offset, icv_offset)
    }

    /// The verdict on a combined-mode packet's ICV: checked here (GHASH, constant-time
    /// compare) on the GCM lanes; `true` without them, the opening then checks it. Out of line
    /// like [`Self::seal_combined`].
    #[inline(never)]
    fn combined_verdict(&self, authenticated: &[u8], icv: &[u8]) -> bool {
        #[cfg(target_arch = "x86_64")]
        if let Some(key) = &self.gcm {
            let Some((header, rest)) = authenticated.split_at_checked(ESP_HEADER_LEN) else {
                return false;
            };
            let Some((iv, ciphertext)) = rest.split_first_chunk::<8>() else {
                return false;
            };
            return key.verify(header, *iv, ciphertext, icv);
        }
        let _ = (authenticated, icv);
        true
    }

    /// Whether [`verify_jobs`] gives this SA's combined-mode packets a real verdict, so that
    /// opening one is [`Self::decrypt_verified`] after that verdict, not the suite's `open`.
    pub(crate) fn decrypts_verified(&self) -> bool {
        #[cfg(target_arch = "x86_64")]
        {
            self.gcm.is_some()
        }
        #[cfg(not(target_arch = "x86_64"))]
        false
    }

    /// Decrypts in place the text of a combined-mode packet whose ICV [`verify_jobs`] accepted
    /// (`iv` the packet's explicit IV), when [`Self::decrypts_verified`].
    ///
    /// # Errors
    /// [`CipherLengthError`] for an IV that is not 8 bytes or an SA without GCM lanes (bugs);
    /// `text` is then untouched.
    pub(crate) fn decrypt_verified(
        &self,
        iv: &[u8],
        text: &mut [u8],
    ) -> Result<(), CipherLengthError> {
        let bad = CipherLengthError {
            len: text.len(),
            iv_len: iv.len(),
            block_size: 4,
        };
        #[cfg(target_arch = "x86_64")]
        if let (Some(key), Ok(iv)) = (&self.gcm, <[u8; 8]>::try_from(iv)) {
            key.decrypt(iv, text);
            return Ok(());
        }
        Err(bad)
    }
}
