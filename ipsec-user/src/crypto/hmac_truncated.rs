//! HMAC (RFC 2104) truncated to an ICV, generic over the hash: the one implementation behind
//! `hmac-sha1` (`super::hmac_sha1_96`) and `hmac-sha2-256` (`super::hmac_sha256_128`).
//!
//! The keyed state (inner and outer pads already absorbed) is built once per SA and cloned per
//! packet, which saves two compression calls per packet. Each algorithm file only names its hash,
//! key length and ICV length in an [`HmacSpec`]; the code is monomorphised per hash, so the generic
//! costs nothing at run time.

use super::{ConfigError, Icv, Integrity};
use hmac::{KeyInit, Mac};
use std::fmt;
use std::marker::PhantomData;
use zeroize::ZeroizeOnDrop;

/// What distinguishes one truncated-HMAC integrity algorithm from another.
pub trait HmacSpec: Send + Sync + 'static {
    /// The keyed MAC, e.g. `hmac::Hmac<sha1::Sha1>`. Its `zeroize` features must wipe the keyed
    /// state on drop: [`HmacTruncated`] claims `ZeroizeOnDrop` on that ground.
    type Mac: Mac + KeyInit + Clone + Send + Sync;
    /// The model name (`hmac-sha1`, `hmac-sha2-256`), for messages.
    const NAME: &'static str;
    /// The Rust type name printed by `Debug` (`HmacSha1_96`), never the key.
    const DEBUG_NAME: &'static str;
    /// The exact key length the spec requires.
    const KEY_LEN: usize;
    /// The truncated ICV length (at most [`super::MAX_ICV_LEN`]).
    const ICV_LEN: usize;
}

/// A truncated HMAC keyed for one SA.
pub struct HmacTruncated<S: HmacSpec> {
    keyed: S::Mac,
    spec: PhantomData<S>,
}

impl<S: HmacSpec> Clone for HmacTruncated<S> {
    fn clone(&self) -> Self {
        Self {
            keyed: self.keyed.clone(),
            spec: PhantomData,
        }
    }
}

impl<S: HmacSpec> HmacTruncated<S> {
    /// Key length required by the algorithm.
    pub const KEY_LEN: usize = S::KEY_LEN;
    /// ICV length appended to each packet.
    pub const ICV_LEN: usize = S::ICV_LEN;

    /// Keys the HMAC with `key`, which must be exactly [`Self::KEY_LEN`] bytes.
    ///
    /// # Errors
    /// [`ConfigError::Length`] unless the key is exactly [`Self::KEY_LEN`] bytes.
    pub fn new(key: &[u8]) -> Result<Self, ConfigError> {
        if key.len() != S::KEY_LEN {
            return Err(ConfigError::Length {
                algorithm: S::NAME,
                expected: S::KEY_LEN,
                got: key.len(),
            });
        }
        Ok(Self::from_any_key(key))
    }

    /// HMAC accepts keys of any length (RFC 2104 §3); only the tests use other lengths.
    pub(super) fn from_any_key(key: &[u8]) -> Self {
        let keyed = <S::Mac as KeyInit>::new_from_slice(key)
            .expect("HMAC accepts keys of every length (RFC 2104 §3)");
        Self {
            keyed,
            spec: PhantomData,
        }
    }

    /// The full, untruncated HMAC, for the test vectors.
    #[cfg(test)]
    pub(super) fn full(&self, data: &[u8]) -> Vec<u8> {
        self.keyed
            .clone()
            .chain_update(data)
            .finalize()
            .into_bytes()
            .to_vec()
    }
}

/// Prints the algorithm, never the key schedule.
impl<S: HmacSpec> fmt::Debug for HmacTruncated<S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        super::debug_redacted(f, S::DEBUG_NAME)
    }
}

// The keyed HMAC state (two hash cores with the pads absorbed, and the block buffer) is wiped on
// drop by the hash crate and `digest` (their `zeroize` features, see `HmacSpec::Mac`), here and in
// every per-packet clone.
impl<S: HmacSpec> ZeroizeOnDrop for HmacTruncated<S> {}

impl<S: HmacSpec> Integrity for HmacTruncated<S> {
    fn name(&self) -> &'static str {
        S::NAME
    }

    fn icv_len(&self) -> usize {
        S::ICV_LEN
    }

    fn compute(&self, data: &[u8]) -> Icv {
        let mut mac = self.keyed.clone();
        mac.update(data);
        Icv::truncate(&mac.finalize().into_bytes(), S::ICV_LEN)
    }
}

/// Test helpers shared by the algorithm files' RFC vector tests.
#[cfg(test)]
pub(super) mod checks {
    use super::{HmacSpec, HmacTruncated};
    use crate::crypto::Integrity;

    /// The inputs of RFC 2202 §3 (HMAC-SHA1) and RFC 4231 §4 (HMAC-SHA-2), test cases 1 to 7.
    /// Cases 1 to 5 are the same in both RFCs; cases 6 and 7 key with `long_key` bytes of 0xaa
    /// (longer than the hash's block), and case 7 hashes `case7`.
    pub(in crate::crypto) fn rfc_inputs(long_key: usize, case7: &[u8]) -> Vec<(Vec<u8>, Vec<u8>)> {
        vec![
            (vec![0x0b; 20], b"Hi There".to_vec()),
            (b"Jefe".to_vec(), b"what do ya want for nothing?".to_vec()),
            (vec![0xaa; 20], vec![0xdd; 50]),
            ((1..=25).collect(), vec![0xcd; 50]),
            (vec![0x0c; 20], b"Test With Truncation".to_vec()),
            (
                vec![0xaa; long_key],
                b"Test Using Larger Than Block-Size Key - Hash Key First".to_vec(),
            ),
            (vec![0xaa; long_key], case7.to_vec()),
        ]
    }

    /// Checks each `(key, data)` input against its digest: the full HMAC starts with the digest
    /// (some RFC cases print it truncated), the ICV is its leftmost `ICV_LEN` bytes, and the ICV
    /// verifies.
    pub(in crate::crypto) fn vectors<S: HmacSpec>(
        rfc: &str,
        inputs: Vec<(Vec<u8>, Vec<u8>)>,
        digests: &[&str],
    ) {
        assert_eq!(inputs.len(), digests.len());
        for (i, ((key, data), digest)) in inputs.into_iter().zip(digests).enumerate() {
            let mac = HmacTruncated::<S>::from_any_key(&key);
            let full = hex::encode(mac.full(&data));
            assert_eq!(&full[..digest.len()], *digest, "{rfc} case {}", i + 1);
            let icv = mac.compute(&data);
            assert_eq!(
                hex::encode(icv),
                &digest[..2 * S::ICV_LEN],
                "{rfc} case {}",
                i + 1
            );
            assert!(mac.verify(&data, icv.as_ref()));
        }
    }

    /// Any flipped bit, a shortened ICV or changed data fail verification; keys of other
    /// lengths than `KEY_LEN` are refused.
    pub(in crate::crypto) fn rejects_changes<S: HmacSpec>() {
        let mac = HmacTruncated::<S>::new(&vec![0x0b; S::KEY_LEN]).expect("keying the HMAC");
        assert_eq!(mac.icv_len(), S::ICV_LEN);
        let icv = mac.compute(b"Hi There");
        for i in 0..icv.as_ref().len() {
            for bit in [0x01, 0x80] {
                let mut bad = icv.as_ref().to_vec();
                bad[i] ^= bit;
                assert!(!mac.verify(b"Hi There", &bad));
            }
        }
        assert!(!mac.verify(b"Hi There", &icv.as_ref()[..S::ICV_LEN - 1]));
        assert!(!mac.verify(b"Hi there", icv.as_ref()));
        assert!(HmacTruncated::<S>::new(&vec![0; S::KEY_LEN - 1]).is_err());
        assert!(HmacTruncated::<S>::new(&vec![0; S::KEY_LEN + 1]).is_err());
    }
}
