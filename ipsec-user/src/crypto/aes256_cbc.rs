//! `aes256-cbc`: AES-256 in CBC mode with an explicit IV, RFC 3602 (which allows 128-, 192- and
//! 256-bit keys, §2.4).
//!
//! The same generic `super::cbc` as `aes128-cbc`, with `aes::Aes256` (14 rounds instead of 10).

use super::cbc::{CbcCipher, CbcSpec};

/// The parameters of AES-256-CBC: 32-byte key, 16-byte block and IV.
#[derive(Debug)]
pub struct Aes256;

impl CbcSpec for Aes256 {
    type Block = aes::Aes256;
    const NAME: &'static str = "aes256-cbc";
    const DEBUG_NAME: &'static str = "Aes256Cbc";
    const KEY_LEN: usize = 32;
}

/// AES-256-CBC keyed for one SA.
pub type Aes256Cbc = CbcCipher<Aes256>;

#[cfg(test)]
mod tests {
    use super::*;
    use crate::crypto::{Cipher, ConfigError};

    /// NIST SP 800-38A F.2.5 (CBC-AES256.Encrypt) and F.2.6 (its decryption): RFC 3602's
    /// vectors are AES-128 only.
    const KEY: &str = "603deb1015ca71be2b73aef0857d77811f352c073b6108d72d9810a30914dff4";
    const IV: &str = "000102030405060708090a0b0c0d0e0f";
    const PLAIN: &str = "6bc1bee22e409f96e93d7e117393172aae2d8a571e03ac9c9eb76fac45af8e51\
                         30c81c46a35ce411e5fbc1191a0a52eff69f2445df4f9b17ad2b417be66c3710";
    const CIPHER: &str = "f58c4c04d6e5f1ba779eabfb5f7bfbd69cfc4e967edb808d679f777bc6702c7d\
                          39f23369a9d9bacfa530e26304231461b2eb05e2c39be9fcda6c19078c6a9d1b";

    fn unhex(s: &str) -> Vec<u8> {
        hex::decode(s).expect("decoding a test vector")
    }

    #[test]
    fn sp800_38a_f25_encrypt_and_decrypt() {
        let aes = Aes256Cbc::new(&unhex(KEY)).expect("keying AES-256");
        let mut buf = unhex(PLAIN);
        aes.encrypt(&unhex(IV), &mut buf).expect("encrypting");
        assert_eq!(hex::encode(&buf), CIPHER, "SP 800-38A F.2.5");
        aes.decrypt(&unhex(IV), &mut buf).expect("decrypting");
        assert_eq!(hex::encode(&buf), PLAIN, "SP 800-38A F.2.6");
    }

    #[test]
    fn key_is_exactly_32_bytes() {
        for len in [16, 31, 33] {
            assert_eq!(
                Aes256Cbc::new(&vec![7; len]).err(),
                Some(ConfigError::Length {
                    algorithm: "aes256-cbc",
                    expected: 32,
                    got: len,
                })
            );
        }
        let aes = Aes256Cbc::new(&[7; 32]).expect("keying AES-256");
        assert_eq!(
            (aes.name(), aes.block_size(), aes.iv_len()),
            ("aes256-cbc", 16, 16)
        );
    }
}
