//! `hmac-sha1`: HMAC-SHA1-96, RFC 2404.
//!
//! HMAC-SHA1 (RFC 2104) truncated to its leftmost 96 bits. The keyed state (inner and outer
//! pads already absorbed) is built once per SA and cloned per packet, which saves two SHA-1
//! compressions per packet. `sha1` picks SHA-NI at run time where the CPU has it.

use super::{ConfigError, Icv, Integrity};
use hmac::{Hmac, KeyInit, Mac};
use sha1::Sha1;
use std::fmt;
use zeroize::ZeroizeOnDrop;

/// HMAC-SHA1-96 keyed for one SA.
#[derive(Clone)]
pub struct HmacSha1_96 {
    keyed: Hmac<Sha1>,
}

impl HmacSha1_96 {
    /// Key length: RFC 2404 §3 uses a 160-bit key; the spec makes it exact.
    pub const KEY_LEN: usize = 20;
    /// ICV length: 96 bits, RFC 2404 §2.
    pub const ICV_LEN: usize = 12;

    /// Keys the HMAC with `key`, which must be exactly 20 bytes.
    ///
    /// # Errors
    /// [`ConfigError::Length`] unless the key is exactly [`Self::KEY_LEN`] bytes.
    pub fn new(key: &[u8]) -> Result<Self, ConfigError> {
        if key.len() != Self::KEY_LEN {
            return Err(ConfigError::Length {
                algorithm: "hmac-sha1",
                expected: Self::KEY_LEN,
                got: key.len(),
            });
        }
        Ok(Self::from_any_key(key))
    }

    /// HMAC accepts keys of any length (RFC 2104 §3); only the tests use other lengths.
    fn from_any_key(key: &[u8]) -> Self {
        let keyed = <Hmac<Sha1> as KeyInit>::new_from_slice(key)
            .expect("HMAC accepts keys of every length (RFC 2104 §3)");
        Self { keyed }
    }

    /// The full 160-bit HMAC, for the test vectors.
    #[cfg(test)]
    fn full(&self, data: &[u8]) -> Vec<u8> {
        self.keyed
            .clone()
            .chain_update(data)
            .finalize()
            .into_bytes()
            .to_vec()
    }
}

/// Prints the algorithm, never the key schedule.
impl fmt::Debug for HmacSha1_96 {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("HmacSha1_96")
            .field("key", &"<redacted>")
            .finish()
    }
}

// The keyed HMAC state (two SHA-1 cores with the pads absorbed, and the block buffer) is
// wiped on drop by `sha1` and `digest` (their `zeroize` features), here and in every per-packet
// clone.
impl ZeroizeOnDrop for HmacSha1_96 {}

impl Integrity for HmacSha1_96 {
    fn name(&self) -> &'static str {
        "hmac-sha1"
    }

    fn icv_len(&self) -> usize {
        Self::ICV_LEN
    }

    fn compute(&self, data: &[u8]) -> Icv {
        let mut mac = self.keyed.clone();
        mac.update(data);
        Icv::truncate(&mac.finalize().into_bytes(), Self::ICV_LEN)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// RFC 2202 §3, test cases 1 to 7 (key, data, HMAC-SHA1).
    fn cases() -> Vec<(Vec<u8>, Vec<u8>, &'static str)> {
        vec![
            (
                vec![0x0b; 20],
                b"Hi There".to_vec(),
                "b617318655057264e28bc0b6fb378c8ef146be00",
            ),
            (
                b"Jefe".to_vec(),
                b"what do ya want for nothing?".to_vec(),
                "effcdf6ae5eb2fa2d27416d5f184df9c259a7c79",
            ),
            (
                vec![0xaa; 20],
                vec![0xdd; 50],
                "125d7342b9ac11cd91a39af48aa17b4f63f175d3",
            ),
            (
                (1..=25).collect(),
                vec![0xcd; 50],
                "4c9007f4026250c6bc8414f9bf50c86c2d7235da",
            ),
            (
                vec![0x0c; 20],
                b"Test With Truncation".to_vec(),
                "4c1a03424b55e07fe7f27be1d58bb9324a9a5a04",
            ),
            (
                vec![0xaa; 80],
                b"Test Using Larger Than Block-Size Key - Hash Key First".to_vec(),
                "aa4ae5e15272d00e95705637ce8a3b55ed402112",
            ),
            (
                vec![0xaa; 80],
                b"Test Using Larger Than Block-Size Key and Larger Than One Block-Size Data"
                    .to_vec(),
                "e8e99d0f45237d786d6bbaa7965c7808bbff1a91",
            ),
        ]
    }

    #[test]
    fn rfc2202_vectors_and_96_bit_truncation() {
        for (i, (key, data, digest)) in cases().into_iter().enumerate() {
            let mac = HmacSha1_96::from_any_key(&key);
            assert_eq!(
                hex::encode(mac.full(&data)),
                digest,
                "RFC 2202 case {}",
                i + 1
            );
            // The ICV is the leftmost 96 bits (24 hex digits).
            let icv = mac.compute(&data);
            assert_eq!(hex::encode(icv), &digest[..24], "RFC 2202 case {}", i + 1);
            assert!(mac.verify(&data, icv.as_ref()));
        }
    }

    /// RFC 2202 case 5 prints the 96-bit truncation itself.
    #[test]
    fn rfc2202_case5_digest_96() {
        let mac = HmacSha1_96::new(&[0x0c; 20]).expect("keying HMAC-SHA1");
        let icv = mac.compute(b"Test With Truncation");
        assert_eq!(hex::encode(icv), "4c1a03424b55e07fe7f27be1");
    }

    #[test]
    fn verify_rejects_any_change_and_wrong_lengths() {
        let mac = HmacSha1_96::new(&[0x0b; 20]).expect("keying HMAC-SHA1");
        let icv = mac.compute(b"Hi There");
        for i in 0..icv.as_ref().len() {
            let mut bad = icv.as_ref().to_vec();
            bad[i] ^= 0x80;
            assert!(!mac.verify(b"Hi There", &bad));
        }
        assert!(!mac.verify(b"Hi There", &icv.as_ref()[..11]));
        assert!(!mac.verify(b"Hi there", icv.as_ref()));
        assert!(HmacSha1_96::new(&[0; 19]).is_err());
        assert!(HmacSha1_96::new(&[0; 32]).is_err());
    }
}
