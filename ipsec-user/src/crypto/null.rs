//! `null`: the NULL encryption algorithm, RFC 2410.
//!
//! NULL leaves the payload in clear (integrity still applies: the spec never allows null
//! integrity). RFC 2410 §2 gives it a block size of 1 and no IV; ESP still aligns the trailer to
//! 4 bytes (RFC 4303 §2.4), so the padding boundary reported here is 4.

use super::{Cipher, CipherLengthError, ConfigError};

/// ESP's 4-byte alignment, RFC 4303 §2.4.
const ALIGN: usize = 4;

/// The NULL cipher. It takes no key.
#[derive(Clone, Copy, Debug, Default)]
pub struct NullCipher;

impl NullCipher {
    /// Accepts only an empty key: a key given with `null` is a configuration error (spec).
    ///
    /// # Errors
    /// [`ConfigError::Length`] for a non-empty key.
    pub fn new(key: &[u8]) -> Result<Self, ConfigError> {
        if key.is_empty() {
            Ok(Self)
        } else {
            Err(ConfigError::Length {
                algorithm: "null",
                expected: 0,
                got: key.len(),
            })
        }
    }

    fn check(iv: &[u8], buf: &[u8]) -> Result<(), CipherLengthError> {
        if iv.is_empty() && buf.len().is_multiple_of(ALIGN) {
            Ok(())
        } else {
            Err(CipherLengthError {
                len: buf.len(),
                iv_len: iv.len(),
                block_size: ALIGN,
            })
        }
    }
}

impl Cipher for NullCipher {
    fn name(&self) -> &'static str {
        "null"
    }

    fn block_size(&self) -> usize {
        ALIGN
    }

    fn iv_len(&self) -> usize {
        0
    }

    fn encrypt(&self, iv: &[u8], buf: &mut [u8]) -> Result<(), CipherLengthError> {
        Self::check(iv, buf)
    }

    fn decrypt(&self, iv: &[u8], buf: &mut [u8]) -> Result<(), CipherLengthError> {
        Self::check(iv, buf)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn identity_with_four_byte_alignment() {
        let null = NullCipher::new(&[]).expect("building NULL");
        let mut buf = *b"12345678";
        null.encrypt(&[], &mut buf).expect("encrypting");
        assert_eq!(&buf, b"12345678");
        null.decrypt(&[], &mut buf).expect("decrypting");
        assert_eq!(&buf, b"12345678");
        assert!(null.encrypt(&[], &mut [0; 6]).is_err());
        assert!(null.encrypt(&[0], &mut [0; 4]).is_err());
        assert!(NullCipher::new(b"k").is_err());
    }
}
