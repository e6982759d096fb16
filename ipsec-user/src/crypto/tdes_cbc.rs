//! `3des-cbc`: Triple DES (EDE, three independent keys) in CBC mode, RFC 2451.
//!
//! 3DES is here for compatibility with the source document's example and IPv6 Ready Logo test
//! keys; it is slow (a software cipher with 8-byte blocks) and is only as strong as its 112-bit
//! effective key. The key schedule is computed once per SA; CBC as in `aes128_cbc`.

use super::{Cipher, CipherLengthError, ConfigError, check_cbc_lengths};
use des::TdesEde3;
use des::cipher::{Array, BlockModeDecrypt, InnerIvInit, KeyInit};
use std::fmt;
use zeroize::{ZeroizeOnDrop, Zeroizing};

/// DES block size, which RFC 2451 §3 also makes the IV size.
const BLOCK: usize = 8;

/// 3DES-EDE-CBC keyed for one SA.
pub struct TripleDesCbc {
    tdes: TdesEde3,
}

impl TripleDesCbc {
    /// Key length: three 64-bit DES keys, parity bits included (RFC 2451 §2.2).
    pub const KEY_LEN: usize = 24;

    /// Schedules `key`: 24 bytes with K1 != K2 and K2 != K3 (RFC 2451 §2.2; equal neighbouring
    /// keys collapse EDE into single DES). Parity bits are ignored, as RFC 2451 allows.
    ///
    /// # Errors
    /// [`ConfigError::Length`] for a key that is not 24 bytes,
    /// [`ConfigError::TripleDesDegenerate`] when K1 = K2 or K2 = K3.
    pub fn new(key: &[u8]) -> Result<Self, ConfigError> {
        if key.len() != Self::KEY_LEN {
            return Err(ConfigError::Length {
                algorithm: "3des-cbc",
                expected: Self::KEY_LEN,
                got: key.len(),
            });
        }
        // Compare without parity bits: keys that differ only in parity are the same DES key.
        // The parts are key material too: wiped when they go out of scope.
        let part = |i: usize| -> Zeroizing<[u8; 8]> {
            let mut p = Zeroizing::new([0; 8]);
            for (d, s) in p.iter_mut().zip(&key[i * 8..i * 8 + 8]) {
                *d = s & 0xfe;
            }
            p
        };
        if *part(0) == *part(1) || *part(1) == *part(2) {
            return Err(ConfigError::TripleDesDegenerate);
        }
        let tdes = TdesEde3::new_from_slice(key).map_err(|_| ConfigError::Length {
            algorithm: "3des-cbc",
            expected: Self::KEY_LEN,
            got: key.len(),
        })?;
        Ok(Self { tdes })
    }
}

/// Prints the algorithm, never the key schedule.
impl fmt::Debug for TripleDesCbc {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TripleDesCbc")
            .field("key", &"<redacted>")
            .finish()
    }
}

// The `des` crate wipes its key schedules on drop (its `zeroize` feature).
impl ZeroizeOnDrop for TripleDesCbc {}

impl Cipher for TripleDesCbc {
    fn name(&self) -> &'static str {
        "3des-cbc"
    }

    fn block_size(&self) -> usize {
        BLOCK
    }

    fn iv_len(&self) -> usize {
        BLOCK
    }

    fn encrypt(&self, iv: &[u8], buf: &mut [u8]) -> Result<(), CipherLengthError> {
        check_cbc_lengths(iv, buf, BLOCK)?;
        // The length check above makes the conversion infallible and the tail empty.
        let iv = <&Array<u8, _>>::try_from(iv).map_err(|_| length_error(iv, buf))?;
        let (blocks, _) = Array::slice_as_chunks_mut(buf);
        super::cbc::encrypt(&self.tdes, iv, blocks);
        Ok(())
    }

    fn decrypt(&self, iv: &[u8], buf: &mut [u8]) -> Result<(), CipherLengthError> {
        check_cbc_lengths(iv, buf, BLOCK)?;
        let mode = cbc::Decryptor::<&TdesEde3>::inner_iv_slice_init(&self.tdes, iv);
        let mut mode = mode.map_err(|_| length_error(iv, buf))?;
        let (blocks, _) = Array::slice_as_chunks_mut(buf);
        mode.decrypt_blocks(blocks);
        Ok(())
    }
}

fn length_error(iv: &[u8], buf: &[u8]) -> CipherLengthError {
    CipherLengthError {
        len: buf.len(),
        iv_len: iv.len(),
        block_size: BLOCK,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn unhex(s: &str) -> Vec<u8> {
        hex::decode(s).expect("decoding a test vector")
    }

    /// NIST SP 800-67 Rev. 1, Appendix B (TDEA ECB example): K1 0123456789ABCDEF,
    /// K2 23456789ABCDEF01, K3 456789ABCDEF0123, plaintext "The qufck brown fox jump".
    /// CBC with an all-zero IV over one block is ECB, so each block is checked that way.
    #[test]
    fn sp800_67_known_answer() {
        let key = unhex("0123456789abcdef23456789abcdef01456789abcdef0123");
        let tdes = TripleDesCbc::new(&key).expect("keying 3DES");
        let plain = b"The qufck brown fox jump";
        let expected = ["a826fd8ce53b855f", "cce21c8112256fe6", "68d5c05dd9b6b900"];
        for (block, want) in plain.chunks(8).zip(expected) {
            let mut buf = block.to_vec();
            tdes.encrypt(&[0; 8], &mut buf)
                .expect("encrypting one block");
            assert_eq!(hex::encode(&buf), want);
            tdes.decrypt(&[0; 8], &mut buf)
                .expect("decrypting one block");
            assert_eq!(buf, block);
        }
    }

    /// CBC chaining over the spec's example key (`ipv6readylogo3descbcout2`). Expected value
    /// from `openssl enc -des-ede3-cbc -nopad` (OpenSSL 3.0), an independent implementation.
    #[test]
    fn cbc_chaining_matches_openssl() {
        let tdes = TripleDesCbc::new(b"ipv6readylogo3descbcout2").expect("keying 3DES");
        let iv = unhex("0001020304050607");
        let mut buf = b"The qufck brown fox jump".to_vec();
        tdes.encrypt(&iv, &mut buf).expect("encrypting");
        assert_eq!(hex::encode(&buf), OPENSSL_CBC);
        tdes.decrypt(&iv, &mut buf).expect("decrypting");
        assert_eq!(&buf, b"The qufck brown fox jump");
    }

    const OPENSSL_CBC: &str = "fa483b2a2cf9b286633d43da884e48827212340b4a3beac9";

    #[test]
    fn degenerate_and_short_keys_are_refused() {
        let k1 = [0x01, 0x23, 0x45, 0x67, 0x89, 0xab, 0xcd, 0xef];
        let k2 = [0x23, 0x45, 0x67, 0x89, 0xab, 0xcd, 0xef, 0x01];
        let mut key = Vec::new();
        key.extend_from_slice(&k1);
        key.extend_from_slice(&k1);
        key.extend_from_slice(&k2);
        assert_eq!(
            TripleDesCbc::new(&key).err(),
            Some(ConfigError::TripleDesDegenerate)
        );
        // Differing only in the parity bit is still the same DES key.
        key[8] ^= 1;
        assert_eq!(
            TripleDesCbc::new(&key).err(),
            Some(ConfigError::TripleDesDegenerate)
        );
        assert!(matches!(
            TripleDesCbc::new(&key[..16]),
            Err(ConfigError::Length {
                expected: 24,
                got: 16,
                ..
            })
        ));
        let tdes = TripleDesCbc::new(b"ipv6readylogo3descbcout2").expect("keying 3DES");
        assert!(tdes.encrypt(&[0; 8], &mut [0; 12]).is_err());
    }
}
