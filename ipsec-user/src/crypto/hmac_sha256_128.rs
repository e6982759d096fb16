//! `hmac-sha2-256`: HMAC-SHA-256-128, RFC 4868.
//!
//! HMAC-SHA-256 (RFC 2104, FIPS 180-4) truncated to its leftmost 128 bits (RFC 4868 §2.3). The
//! keyed state is built once per SA and cloned per packet, saving two SHA-256 compressions per
//! packet. `sha2` picks SHA-NI (x86) or the `ARMv8` SHA2 instructions at run time.

use super::{ConfigError, Icv, Integrity};
use hmac::{Hmac, KeyInit, Mac};
use sha2::Sha256;
use std::fmt;
use zeroize::ZeroizeOnDrop;

/// HMAC-SHA-256-128 keyed for one SA.
#[derive(Clone)]
pub struct HmacSha256_128 {
    keyed: Hmac<Sha256>,
}

impl HmacSha256_128 {
    /// Key length: RFC 4868 §2.1.1 fixes the key at the output size, 256 bits.
    pub const KEY_LEN: usize = 32;
    /// ICV length: 128 bits, RFC 4868 §2.3.
    pub const ICV_LEN: usize = 16;

    /// Keys the HMAC with `key`, which must be exactly 32 bytes.
    ///
    /// # Errors
    /// [`ConfigError::Length`] unless the key is exactly [`Self::KEY_LEN`] bytes.
    pub fn new(key: &[u8]) -> Result<Self, ConfigError> {
        if key.len() != Self::KEY_LEN {
            return Err(ConfigError::Length {
                algorithm: "hmac-sha2-256",
                expected: Self::KEY_LEN,
                got: key.len(),
            });
        }
        Ok(Self::from_any_key(key))
    }

    /// HMAC accepts keys of any length (RFC 2104 §3); only the tests use other lengths.
    fn from_any_key(key: &[u8]) -> Self {
        let keyed = <Hmac<Sha256> as KeyInit>::new_from_slice(key)
            .expect("HMAC accepts keys of every length (RFC 2104 §3)");
        Self { keyed }
    }

    /// The full 256-bit HMAC, for the test vectors.
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
impl fmt::Debug for HmacSha256_128 {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("HmacSha256_128")
            .field("key", &"<redacted>")
            .finish()
    }
}

// The keyed HMAC state (two SHA-256 cores with the pads absorbed, and the block buffer) is
// wiped on drop by `sha2` and `digest` (their `zeroize` features), here and in every per-packet
// clone.
impl ZeroizeOnDrop for HmacSha256_128 {}

impl Integrity for HmacSha256_128 {
    fn name(&self) -> &'static str {
        "hmac-sha2-256"
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

    /// RFC 4231 §4, test cases 1 to 7 (key, data, HMAC-SHA-256; case 5 is printed truncated
    /// to 128 bits by the RFC itself).
    fn rfc4231() -> Vec<(Vec<u8>, Vec<u8>, &'static str)> {
        vec![
            (
                vec![0x0b; 20],
                b"Hi There".to_vec(),
                "b0344c61d8db38535ca8afceaf0bf12b881dc200c9833da726e9376c2e32cff7",
            ),
            (
                b"Jefe".to_vec(),
                b"what do ya want for nothing?".to_vec(),
                "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843",
            ),
            (
                vec![0xaa; 20],
                vec![0xdd; 50],
                "773ea91e36800e46854db8ebd09181a72959098b3ef8c122d9635514ced565fe",
            ),
            (
                (1..=25).collect(),
                vec![0xcd; 50],
                "82558a389a443c0ea4cc819899f2083a85f0faa3e578f8077a2e3ff46729665b",
            ),
            (
                vec![0x0c; 20],
                b"Test With Truncation".to_vec(),
                "a3b6167473100ee06e0c796c2955552b",
            ),
            (
                vec![0xaa; 131],
                b"Test Using Larger Than Block-Size Key - Hash Key First".to_vec(),
                "60e431591ee0b67f0d8a26aacbf5b77f8e0bc6213728c5140546040f0ee37f54",
            ),
            (
                vec![0xaa; 131],
                b"This is a test using a larger than block-size key and a larger than block-size \
                  data. The key needs to be hashed before being used by the HMAC algorithm."
                    .to_vec(),
                "9b09ffa71b942fcb27635fbcd5b0e944bfdc63644f0713938a7f51535c3a35e2",
            ),
        ]
    }

    #[test]
    fn rfc4231_vectors_and_128_bit_truncation() {
        for (i, (key, data, digest)) in rfc4231().into_iter().enumerate() {
            let mac = HmacSha256_128::from_any_key(&key);
            let full = hex::encode(mac.full(&data));
            assert_eq!(&full[..digest.len()], digest, "RFC 4231 case {}", i + 1);
            let icv = mac.compute(&data);
            assert_eq!(hex::encode(icv), &digest[..32], "RFC 4231 case {}", i + 1);
            assert!(mac.verify(&data, icv.as_ref()));
        }
    }

    /// RFC 4868 §2.7.2.1, AUTH256-1 and AUTH256-2: 32-byte keys, 128-bit ICVs.
    #[test]
    fn rfc4868_auth256_vectors() {
        let cases: [(&[u8], &[u8], &str); 2] = [
            (&[0x0b; 32], b"Hi There", "198a607eb44bfbc69903a0f1cf2bbdc5"),
            (
                b"JefeJefeJefeJefeJefeJefeJefeJefe",
                b"what do ya want for nothing?",
                "167f928588c5cc2eef8e3093caa0e87c",
            ),
        ];
        for (key, data, icv) in cases {
            let mac = HmacSha256_128::new(key).expect("keying HMAC-SHA-256");
            assert_eq!(mac.icv_len(), 16);
            assert_eq!(hex::encode(mac.compute(data)), icv);
        }
    }

    #[test]
    fn verify_rejects_any_change_and_wrong_lengths() {
        let mac = HmacSha256_128::new(&[0x0b; 32]).expect("keying HMAC-SHA-256");
        let icv = mac.compute(b"Hi There");
        for i in 0..16 {
            let mut bad = icv.as_ref().to_vec();
            bad[i] ^= 1;
            assert!(!mac.verify(b"Hi There", &bad));
        }
        assert!(!mac.verify(b"Hi There", &icv.as_ref()[..12]));
        assert!(HmacSha256_128::new(&[0; 20]).is_err());
    }
}
