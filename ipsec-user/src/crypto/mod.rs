//! ESP crypto core: the ciphers, the integrity algorithms and ESP (RFC 4303) itself.
//!
//! Contract:
//! - No I/O. Everything here is a pure function over byte buffers, so it is unit-tested without a
//!   kernel. The daemon owns sockets and queues; it hands packets to [`OutboundSa::encapsulate`]
//!   and [`InboundSa::decapsulate`] and acts on what they return ([`Encapsulated`],
//!   [`Decapsulated`], or an [`EspError`] it can count).
//! - One small trait per role, one file per algorithm: [`Cipher`] (3des-cbc, aes128-cbc,
//!   aes256-cbc, null), [`Integrity`] (hmac-sha1-96, hmac-sha2-256-128) and [`Aead`] for the
//!   combined-mode algorithms that do both (aes128-gcm, aes256-gcm, RFC 4106); `suite` pairs
//!   them for an SA. Keys are scheduled once per SA: the
//!   block cipher key schedule and the keyed HMAC state live in the SA, and each packet only
//!   clones the keyed HMAC state (keying HMAC costs two extra compression calls per packet).
//! - Untrusted bytes never panic: every length is checked before it is used.
//! - Keys are never printed: the keyed types' `Debug` prints `<redacted>`, and the ESP SAs have
//!   no `Debug` at all.
//! - Key schedules are wiped on drop: every keyed type is `ZeroizeOnDrop`, through the `zeroize`
//!   features of `aes`, `des`, `sha1`, `sha2` and `digest` (so each per-packet clone of a keyed
//!   HMAC state is wiped too).

mod aes128_cbc;
mod aes256_cbc;
pub mod burst;
mod cbc;
mod esp;
mod gcm;
mod hmac_sha1_96;
mod hmac_sha256_128;
mod hmac_truncated;
mod null;
mod replay;
mod suite;
mod tdes_cbc;
mod wire;

pub use aes128_cbc::{Aes128, Aes128Cbc};
pub use aes256_cbc::{Aes256, Aes256Cbc};
pub use cbc::{CbcCipher, CbcSpec};
pub use esp::{
    Decapsulated, ESP_HEADER_LEN, Encapsulated, EspError, InboundSa, OutboundSa, OuterHeader,
    SaConfig,
};
pub use gcm::{Aes128Gcm, Aes256Gcm, EspGcm, Gcm128, Gcm256, GcmSpec};
pub use hmac_sha1_96::{HmacSha1_96, Sha1_96};
pub use hmac_sha256_128::{HmacSha256_128, Sha256_128};
pub use hmac_truncated::{HmacSpec, HmacTruncated};
pub use null::NullCipher;
pub use replay::{DEFAULT_REPLAY_WINDOW, MAX_REPLAY_WINDOW, ReplayWindow};
pub use tdes_cbc::{TdesEde3, TripleDesCbc};

use crate::model::{EncryptionAlgorithm, IntegrityAlgorithm};
use std::fmt;
use subtle::ConstantTimeEq;

/// The longest ICV any supported integrity algorithm produces (HMAC-SHA-256-128, RFC 4868).
pub const MAX_ICV_LEN: usize = 16;

/// The longest IV any supported cipher uses (AES-CBC, RFC 3602 §3).
pub const MAX_IV_LEN: usize = 16;

/// Why an SA (or one of its algorithms) could not be built: a configuration error, reported
/// when the SA is installed, never per packet.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ConfigError {
    /// The key has the wrong length for its algorithm; lengths are exact (see the spec).
    #[error("{algorithm} key must be {expected} bytes, got {got}")]
    Length {
        algorithm: &'static str,
        expected: usize,
        got: usize,
    },
    /// RFC 2451 §2.2 / SP 800-67: K1 = K2 or K2 = K3 degrades 3DES to single DES.
    #[error("3des-cbc key parts must differ (K1 != K2 and K2 != K3, RFC 2451)")]
    TripleDesDegenerate,
    /// A tunnel-mode SA needs concrete endpoints for the outer header.
    #[error("tunnel mode needs a concrete {which} address, got ::")]
    TunnelEndpoint { which: &'static str },
    /// A combined-mode algorithm (AES-GCM) authenticates by itself: its SA has integrity
    /// `none` and no integrity key.
    #[error("{encryption} authenticates by itself: integrity must be none, with no key")]
    IntegrityWithCombined { encryption: &'static str },
    /// Only a combined-mode algorithm goes without an integrity algorithm.
    #[error("{encryption} needs an integrity algorithm, not none")]
    IntegrityRequired { encryption: &'static str },
    /// The algorithm is of the other kind than the constructor builds (a cipher asked of
    /// `new_aead`, an AEAD of `new_cipher`).
    #[error("{algorithm} is not a {wanted}")]
    WrongKind {
        algorithm: &'static str,
        wanted: &'static str,
    },
    /// Every IV epoch of this GCM key has been used (2^32 installs): the key must be replaced.
    #[error("every iv of this {encryption} key has been used: replace the key")]
    IvExhausted { encryption: &'static str },
    /// Replay window sizes outside `1..=MAX_REPLAY_WINDOW`.
    #[error("replay window must be 1 to {max} packets, got {got}")]
    ReplayWindow { got: usize, max: usize },
}

/// A cipher buffer whose length does not fit the cipher (a caller bug, never a panic).
#[derive(Debug, thiserror::Error, Clone, Copy, PartialEq, Eq)]
#[error("cipher input of {len} bytes (IV {iv_len} bytes) does not fit block size {block_size}")]
pub struct CipherLengthError {
    pub len: usize,
    pub iv_len: usize,
    pub block_size: usize,
}

/// An ESP encryption algorithm keyed for one SA.
///
/// ESP (RFC 4303 §2.3) carries the IV explicitly in each packet, so the keyed cipher is
/// stateless across packets and the IV is an argument.
pub trait Cipher: Send + Sync {
    /// The model name (`3des-cbc`, `aes128-cbc`, `null`), for messages.
    fn name(&self) -> &'static str;

    /// The ESP padding boundary: the cipher block size, and at least 4 because RFC 4303 §2.4
    /// requires the Pad Length and Next Header fields to end on a 4-byte boundary.
    fn block_size(&self) -> usize;

    /// Length of the explicit per-packet IV that precedes the ciphertext.
    fn iv_len(&self) -> usize;

    /// Encrypts `buf` in place. `iv.len()` must equal [`Self::iv_len`] and `buf.len()` must be a
    /// multiple of [`Self::block_size`].
    ///
    /// # Errors
    /// [`CipherLengthError`] when either length is wrong; `buf` is then untouched.
    fn encrypt(&self, iv: &[u8], buf: &mut [u8]) -> Result<(), CipherLengthError>;

    /// Decrypts `buf` in place, with the same length rules as [`Self::encrypt`].
    ///
    /// # Errors
    /// [`CipherLengthError`] when either length is wrong; `buf` is then untouched.
    fn decrypt(&self, iv: &[u8], buf: &mut [u8]) -> Result<(), CipherLengthError>;
}

/// A truncated ICV, held inline so computing one never allocates.
#[derive(Clone, Copy)]
pub struct Icv {
    bytes: [u8; MAX_ICV_LEN],
    len: usize,
}

impl Icv {
    /// Keeps the leftmost `len` bytes of a full MAC output (the truncation of RFC 2104 §5, as
    /// RFC 2404 §2 and RFC 4868 §2.3 require).
    pub(crate) fn truncate(full: &[u8], len: usize) -> Self {
        let mut bytes = [0; MAX_ICV_LEN];
        let len = len.min(MAX_ICV_LEN).min(full.len());
        bytes[..len].copy_from_slice(&full[..len]);
        Self { bytes, len }
    }
}

impl AsRef<[u8]> for Icv {
    fn as_ref(&self) -> &[u8] {
        &self.bytes[..self.len]
    }
}

/// An ESP integrity algorithm keyed for one SA.
pub trait Integrity: Send + Sync {
    /// The model name (`hmac-sha1`, `hmac-sha2-256`), for messages.
    fn name(&self) -> &'static str;

    /// Length of the truncated ICV appended to each packet.
    fn icv_len(&self) -> usize;

    /// Computes the ICV over `data` (RFC 4303 §2.8: ESP header through Next Header, i.e. SPI,
    /// sequence number, IV and ciphertext).
    fn compute(&self, data: &[u8]) -> Icv;

    /// Checks `icv` against the ICV of `data` in constant time (RFC 4303 §3.4.4.1 asks for the
    /// check before decryption; constant time keeps the comparison from leaking a prefix).
    fn verify(&self, data: &[u8], icv: &[u8]) -> bool {
        icv_eq(self.compute(data).as_ref(), icv)
    }
}

/// Whether two ICVs are equal, in constant time: every byte pair is compared, the differences
/// folded into one byte with no branch, and only that byte goes through `subtle` (one
/// optimisation barrier per packet instead of one per byte). Slices of different lengths are
/// unequal (lengths are public).
pub(crate) fn icv_eq(computed: &[u8], received: &[u8]) -> bool {
    if computed.len() != received.len() {
        return false;
    }
    let difference = computed
        .iter()
        .zip(received)
        .fold(0u8, |acc, (a, b)| acc | (a ^ b));
    difference.ct_eq(&0).into()
}

/// An ESP combined-mode algorithm (RFC 4303 §3.3.2.2) keyed for one SA: it encrypts and
/// authenticates in one pass, so the SA has no separate [`Integrity`].
pub trait Aead: Send + Sync {
    /// The model name (`aes128-gcm`, `aes256-gcm`), for messages.
    fn name(&self) -> &'static str;

    /// The ESP padding boundary (4 for a stream mode such as GCM, RFC 4106 §3.2).
    fn block_size(&self) -> usize;

    /// Length of the explicit per-packet IV (8 for GCM, RFC 4106 §3.1).
    fn iv_len(&self) -> usize;

    /// Length of the ICV (the tag) appended to each packet.
    fn icv_len(&self) -> usize;

    /// Encrypts `text` in place and writes the ICV over `aad` and the ciphertext into `icv`.
    ///
    /// # Errors
    /// [`CipherLengthError`] for an IV or ICV of the wrong length; nothing is written then.
    fn seal(
        &self,
        aad: &[u8],
        iv: &[u8],
        text: &mut [u8],
        icv: &mut [u8],
    ) -> Result<(), CipherLengthError>;

    /// Verifies `icv` over `aad` and the ciphertext `text` in constant time and only then
    /// decrypts `text` in place. False (and `text` unchanged) when it does not verify.
    fn open(&self, aad: &[u8], iv: &[u8], text: &mut [u8], icv: &[u8]) -> bool;
}

/// Builds the keyed cipher for `algorithm`. `null` takes an empty key.
///
/// # Errors
/// A [`ConfigError`] when the key does not suit the algorithm, or
/// [`ConfigError::WrongKind`] for a combined-mode algorithm (see [`new_aead`]).
pub fn new_cipher(
    algorithm: EncryptionAlgorithm,
    key: &[u8],
) -> Result<Box<dyn Cipher>, ConfigError> {
    Ok(match algorithm {
        EncryptionAlgorithm::TripleDesCbc => Box::new(TripleDesCbc::new(key)?),
        EncryptionAlgorithm::Aes128Cbc => Box::new(Aes128Cbc::new(key)?),
        EncryptionAlgorithm::Aes256Cbc => Box::new(Aes256Cbc::new(key)?),
        EncryptionAlgorithm::Null => Box::new(NullCipher::new(key)?),
        EncryptionAlgorithm::Aes128Gcm | EncryptionAlgorithm::Aes256Gcm => {
            return Err(ConfigError::WrongKind {
                algorithm: algorithm.as_str(),
                wanted: "cipher without integrity",
            });
        }
    })
}

/// Builds the keyed combined-mode algorithm for `algorithm` (the key with its salt).
///
/// # Errors
/// A [`ConfigError`] when the key does not suit the algorithm, or
/// [`ConfigError::WrongKind`] for an algorithm that is not combined mode.
pub fn new_aead(algorithm: EncryptionAlgorithm, key: &[u8]) -> Result<Box<dyn Aead>, ConfigError> {
    Ok(match algorithm {
        EncryptionAlgorithm::Aes128Gcm => Box::new(Aes128Gcm::new(key)?),
        EncryptionAlgorithm::Aes256Gcm => Box::new(Aes256Gcm::new(key)?),
        EncryptionAlgorithm::TripleDesCbc
        | EncryptionAlgorithm::Aes128Cbc
        | EncryptionAlgorithm::Aes256Cbc
        | EncryptionAlgorithm::Null => {
            return Err(ConfigError::WrongKind {
                algorithm: algorithm.as_str(),
                wanted: "combined-mode algorithm",
            });
        }
    })
}

/// Builds the keyed integrity algorithm for `algorithm`; a key that does not suit it is a
/// [`ConfigError`], as for [`new_cipher`]. `none` is no integrity algorithm:
/// [`ConfigError::IntegrityRequired`].
pub fn new_integrity(
    algorithm: IntegrityAlgorithm,
    key: &[u8],
) -> Result<Box<dyn Integrity>, ConfigError> {
    Ok(match algorithm {
        IntegrityAlgorithm::HmacSha1 => Box::new(HmacSha1_96::new(key)?),
        IntegrityAlgorithm::HmacSha256 => Box::new(HmacSha256_128::new(key)?),
        IntegrityAlgorithm::None => {
            return Err(ConfigError::WrongKind {
                algorithm: "none",
                wanted: "integrity algorithm",
            });
        }
    })
}

/// `Debug` of a keyed type: its name and `key: "<redacted>"`, never the key schedule.
fn debug_redacted(f: &mut fmt::Formatter<'_>, name: &str) -> fmt::Result {
    f.debug_struct(name).field("key", &"<redacted>").finish()
}

#[cfg(test)]
mod icv_tests {
    use super::icv_eq;

    /// Equal ICVs pass; one bit off anywhere (first, middle, last byte) or a different length
    /// fails.
    #[test]
    fn icv_eq_accepts_only_the_same_bytes() {
        let icv: Vec<u8> = (1..=16).collect();
        assert!(icv_eq(&icv, &icv.clone()));
        for at in [0, 7, 15] {
            let mut other = icv.clone();
            other[at] ^= 0x01;
            assert!(!icv_eq(&icv, &other), "byte {at} differs");
        }
        assert!(!icv_eq(&icv, &icv[..12]), "shorter");
        assert!(!icv_eq(&icv[..12], &icv), "longer");
        assert!(icv_eq(&[], &[]));
    }
}
