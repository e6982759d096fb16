//! `3des-cbc`: Triple DES (EDE, three independent keys) in CBC mode, RFC 2451.
//!
//! 3DES is here for compatibility with the source document's example and IPv6 Ready Logo test
//! keys; it is slow (a software cipher with 8-byte blocks) and is only as strong as its 112-bit
//! effective key (the engine retires a 3DES SA after `--tdes-block-limit` blocks, Sweet32). Built
//! on the generic `super::cbc`, with the key rule of RFC 2451 §2.2 added.

use super::ConfigError;
use super::cbc::{CbcCipher, CbcSpec};
use zeroize::Zeroizing;

/// The parameters of 3DES-EDE-CBC. The block (and IV) size, 8 bytes (RFC 2451 §3), comes from
/// `des::TdesEde3`.
#[derive(Debug)]
pub struct TdesEde3;

impl CbcSpec for TdesEde3 {
    type Block = des::TdesEde3;
    const NAME: &'static str = "3des-cbc";
    const DEBUG_NAME: &'static str = "TripleDesCbc";
    /// Three 64-bit DES keys, parity bits included (RFC 2451 §2.2).
    const KEY_LEN: usize = 24;

    /// K1 != K2 and K2 != K3 (RFC 2451 §2.2; equal neighbouring keys collapse EDE into single
    /// DES). Parity bits are ignored, as RFC 2451 allows.
    fn check_key(key: &[u8]) -> Result<(), ConfigError> {
        // Compare without parity bits: keys that differ only in parity are the same DES key.
        // The parts are key material too: wiped when they go out of scope.
        let part = |i: usize| -> Zeroizing<[u8; 8]> {
            let mut p = Zeroizing::new([0; 8]);
            for (d, s) in p.iter_mut().zip(key.iter().skip(i * 8).take(8)) {
                *d = s & 0xfe;
            }
            p
        };
        if *part(0) == *part(1) || *part(1) == *part(2) {
            return Err(ConfigError::TripleDesDegenerate);
        }
        Ok(())
    }
}

/// 3DES-EDE-CBC keyed for one SA.
pub type TripleDesCbc = CbcCipher<TdesEde3>;

#[cfg(test)]
mod tests {
    use super::*;
    use crate::crypto::{Cipher, ConfigError};

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
        // K2 = K3 degrades EDE just as much.
        let k2_k3: Vec<u8> = [k2, k1, k1].concat();
        assert_eq!(
            TripleDesCbc::new(&k2_k3).err(),
            Some(ConfigError::TripleDesDegenerate)
        );
        assert!(TripleDesCbc::new(&[k1, k2, k1].concat()).is_ok());
        assert!(matches!(
            TripleDesCbc::new(&key[..16]),
            Err(ConfigError::Length {
                expected: 24,
                got: 16,
                ..
            })
        ));
        let tdes = TripleDesCbc::new(b"ipv6readylogo3descbcout2").expect("keying 3DES");
        assert_eq!((tdes.block_size(), tdes.iv_len()), (8, 8));
        assert!(tdes.encrypt(&[0; 8], &mut [0; 12]).is_err());
    }
}
