//! What seals and opens an SA's packets: a cipher with a separate integrity algorithm
//! (encrypt-then-MAC, RFC 4303 §3.3.2.1), or one combined-mode algorithm (AES-GCM, RFC 4106;
//! RFC 4303 §3.3.2.2). ESP's framing (`esp`) asks the suite for its sizes and hands it the
//! packet from the SPI to the end of the ICV; nothing here knows about headers or modes.
//!
//! Contract: sealing writes the ciphertext in place and the ICV into the room at the end;
//! opening verifies the ICV in constant time before any plaintext exists (a forgery changes
//! nothing), then appends the plaintext to the caller's buffer.

use super::esp::{ESP_HEADER_LEN, EspError};
use super::{Aead, Cipher, CipherLengthError, ConfigError, Integrity, new_cipher, new_integrity};
use crate::model::{EncryptionAlgorithm, IntegrityAlgorithm};

/// One SA's keyed algorithms.
pub(crate) enum Suite {
    /// A cipher, then an HMAC over ESP header, IV and ciphertext.
    Composed {
        cipher: Box<dyn Cipher>,
        integrity: Box<dyn Integrity>,
    },
    /// An AEAD: the AAD is the ESP header (SPI || sequence number), the ICV its tag.
    Combined(Box<dyn Aead>),
}

impl Suite {
    /// Keys the algorithms. A combined-mode cipher takes integrity `none` (and no key), any
    /// other cipher an integrity algorithm.
    ///
    /// # Errors
    /// A [`ConfigError`] for a key that does not suit its algorithm, or a pairing that is not
    /// allowed.
    pub(crate) fn new(
        encryption: EncryptionAlgorithm,
        encryption_key: &[u8],
        integrity: IntegrityAlgorithm,
        integrity_key: &[u8],
    ) -> Result<Self, ConfigError> {
        if encryption.is_combined() {
            if integrity != IntegrityAlgorithm::None || !integrity_key.is_empty() {
                return Err(ConfigError::IntegrityWithCombined {
                    encryption: encryption.as_str(),
                });
            }
            return Ok(Self::Combined(super::new_aead(encryption, encryption_key)?));
        }
        if integrity == IntegrityAlgorithm::None {
            return Err(ConfigError::IntegrityRequired {
                encryption: encryption.as_str(),
            });
        }
        Ok(Self::Composed {
            cipher: new_cipher(encryption, encryption_key)?,
            integrity: new_integrity(integrity, integrity_key)?,
        })
    }

    /// The ESP padding boundary (RFC 4303 §2.4): the cipher's block, at least 4.
    pub(crate) fn block_size(&self) -> usize {
        match self {
            Self::Composed { cipher, .. } => cipher.block_size(),
            Self::Combined(aead) => aead.block_size(),
        }
    }

    /// Length of the explicit IV.
    pub(crate) fn iv_len(&self) -> usize {
        match self {
            Self::Composed { cipher, .. } => cipher.iv_len(),
            Self::Combined(aead) => aead.iv_len(),
        }
    }

    /// Length of the ICV.
    pub(crate) fn icv_len(&self) -> usize {
        match self {
            Self::Composed { integrity, .. } => integrity.icv_len(),
            Self::Combined(aead) => aead.icv_len(),
        }
    }

    /// Whether the IV is a counter that must never repeat under the key (GCM, RFC 4106 §3.1)
    /// rather than random bytes (CBC must be unpredictable, RFC 3602 §3).
    pub(crate) fn counter_iv(&self) -> bool {
        matches!(self, Self::Combined(_))
    }

    /// Seals `esp` (SPI to the end of the ICV room): the text from `text_offset` to
    /// `icv_offset` is encrypted in place and the ICV written after it.
    ///
    /// # Errors
    /// [`CipherLengthError`] when the offsets do not fit `esp` or the algorithm (a bug).
    pub(crate) fn seal(
        &self,
        esp: &mut [u8],
        text_offset: usize,
        icv_offset: usize,
    ) -> Result<(), CipherLengthError> {
        let bad = CipherLengthError {
            len: esp.len(),
            iv_len: self.iv_len(),
            block_size: self.block_size(),
        };
        if text_offset != ESP_HEADER_LEN + self.iv_len()
            || text_offset > icv_offset
            || icv_offset + self.icv_len() != esp.len()
        {
            return Err(bad);
        }
        let (head, rest) = esp.split_at_mut(text_offset);
        let (text, icv) = rest.split_at_mut(icv_offset - text_offset);
        let (header, iv) = head.split_at(ESP_HEADER_LEN);
        match self {
            Self::Composed { cipher, integrity } => {
                cipher.encrypt(iv, text)?;
                let computed = integrity.compute(&esp[..icv_offset]);
                esp[icv_offset..].copy_from_slice(computed.as_ref());
                Ok(())
            }
            Self::Combined(aead) => aead.seal(header, iv, text, icv),
        }
    }

    /// Opens `esp` (SPI to the end of the ICV): verifies the ICV, then appends the decrypted
    /// text (`text_offset..icv_offset`) to `out`. On error `out` is as it was.
    ///
    /// # Errors
    /// [`EspError::AuthFailed`] for a packet that does not verify; [`EspError::Cipher`] for
    /// offsets that do not fit (a bug).
    pub(crate) fn open(
        &self,
        esp: &[u8],
        text_offset: usize,
        icv_offset: usize,
        out: &mut Vec<u8>,
    ) -> Result<(), EspError> {
        let (authenticated, icv) = esp.split_at(icv_offset);
        let (head, text) = authenticated.split_at(text_offset);
        let (header, iv) = head.split_at(ESP_HEADER_LEN);
        let plain_offset = out.len();
        match self {
            Self::Composed { cipher, integrity } => {
                // RFC 4303 §3.4.4.1: verify before decrypting, in constant time.
                if !integrity.verify(authenticated, icv) {
                    return Err(EspError::AuthFailed);
                }
                out.extend_from_slice(text);
                if let Err(error) = cipher.decrypt(iv, &mut out[plain_offset..]) {
                    out.truncate(plain_offset);
                    return Err(error.into());
                }
            }
            Self::Combined(aead) => {
                out.extend_from_slice(text);
                if !aead.open(header, iv, &mut out[plain_offset..], icv) {
                    out.truncate(plain_offset);
                    return Err(EspError::AuthFailed);
                }
            }
        }
        Ok(())
    }
}
