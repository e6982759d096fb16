//! `aes128-cbc`: AES-128 in CBC mode with an explicit IV, RFC 3602.
//!
//! Built on the generic `super::cbc` (encryption keeps the chaining value in a register,
//! decryption is pipelined by the `cbc` crate). The `aes` crate picks AES-NI/VAES (or the `ARMv8`
//! crypto extensions) at run time and falls back to a constant-time software version.

use super::cbc::{CbcCipher, CbcSpec};

/// The parameters of AES-128-CBC. The block (and IV) size, 16 bytes (RFC 3602 §3), comes from
/// `aes::Aes128`.
#[derive(Debug)]
pub struct Aes128;

impl CbcSpec for Aes128 {
    type Block = aes::Aes128;
    const NAME: &'static str = "aes128-cbc";
    const DEBUG_NAME: &'static str = "Aes128Cbc";
    /// RFC 3602 §2.4 allows 128, 192 and 256 bits; AES-256 is `super::aes256_cbc`.
    const KEY_LEN: usize = 16;
}

/// AES-128-CBC keyed for one SA.
pub type Aes128Cbc = CbcCipher<Aes128>;

#[cfg(test)]
mod tests {
    use super::*;
    use crate::crypto::{Cipher, ConfigError};

    /// RFC 3602 §4, cases #1 to #4 (key, IV, plaintext, ciphertext).
    const CASES: &[(&str, &str, &str, &str)] = &[
        (
            "06a9214036b8a15b512e03d534120006",
            "3dafba429d9eb430b422da802c9fac41",
            "53696e676c6520626c6f636b206d7367", // "Single block msg"
            "e353779c1079aeb82708942dbe77181a",
        ),
        (
            "c286696d887c9aa0611bbb3e2025a45a",
            "562e17996d093d28ddb3ba695a2e6f58",
            "000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f",
            "d296cd94c2cccf8a3a863028b5e1dc0a7586602d253cfff91b8266bea6d61ab1",
        ),
        (
            "6c3ea0477630ce21a2ce334aa746c2cd",
            "c782dc4c098c66cbd9cd27d825682c81",
            // "This is a 48-byte message (exactly 3 AES blocks)"
            "5468697320697320612034382d62797465206d657373616765202865786163746c7920332041455320626c6f636b7329",
            "d0a02b3836451753d493665d33f0e8862dea54cdb293abc7506939276772f8d5021c19216bad525c8579695d83ba2684",
        ),
        (
            "56e47a38c5598974bc46903dba290349",
            "8ce82eefbea0da3c44699ed7db51b7d9",
            "a0a1a2a3a4a5a6a7a8a9aaabacadaeafb0b1b2b3b4b5b6b7b8b9babbbcbdbebfc0c1c2c3c4c5c6c7c8c9cacbcccdcecfd0d1d2d3d4d5d6d7d8d9dadbdcdddedf",
            "c30e32ffedc0774e6aff6af0869f71aa0f3af07a9a31a9c684db207eb0ef8e4e35907aa632c3ffdf868bb7b29d3d46ad83ce9f9a102ee99d49a53e87f4c3da55",
        ),
    ];

    fn unhex(s: &str) -> Vec<u8> {
        hex::decode(s).expect("decoding a test vector")
    }

    #[test]
    fn rfc3602_encrypt_and_decrypt() {
        for (i, (key, iv, plain, cipher)) in CASES.iter().enumerate() {
            let aes = Aes128Cbc::new(&unhex(key)).expect("keying AES-128");
            let mut buf = unhex(plain);
            aes.encrypt(&unhex(iv), &mut buf).expect("encrypting");
            assert_eq!(hex::encode(&buf), *cipher, "RFC 3602 case #{}", i + 1);
            aes.decrypt(&unhex(iv), &mut buf).expect("decrypting");
            assert_eq!(hex::encode(&buf), *plain, "RFC 3602 case #{}", i + 1);
        }
    }

    #[test]
    fn wrong_lengths_are_errors_not_panics() {
        assert!(matches!(
            Aes128Cbc::new(&[0; 15]),
            Err(ConfigError::Length {
                expected: 16,
                got: 15,
                ..
            })
        ));
        let aes = Aes128Cbc::new(&[7; 16]).expect("keying AES-128");
        assert_eq!((aes.block_size(), aes.iv_len()), (16, 16));
        assert!(aes.encrypt(&[0; 16], &mut [0; 17]).is_err());
        assert!(aes.decrypt(&[0; 8], &mut [0; 16]).is_err());
        assert!(aes.encrypt(&[0; 16], &mut []).is_ok());
    }
}
