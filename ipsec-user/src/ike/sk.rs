//! The Encrypted and Authenticated payload (SK, RFC 7296 §3.14): sealing a message's inner
//! payloads and opening them, with AES-CBC + HMAC (§3.14) or AES-GCM with a 16-octet ICV
//! (RFC 5282).
//!
//! Contract:
//! - One [`SkSealer`] per direction of an IKE SA, keyed with that direction's SK_e (and SK_a);
//!   the keyed algorithms are the ESP crypto's (`crate::crypto`), so they are wiped on drop and
//!   never printed.
//! - Sealing: CBC takes a fresh random 16-octet IV per message; GCM's 8-octet IV is a per-key
//!   counter, so it never repeats under a key (RFC 5282 §3.1). Padding is the minimum the cipher
//!   needs (none for GCM, whose block size is 1 here).
//! - Opening checks the ICV (over header through ciphertext for CBC; GCM's tag covers the header
//!   and the SK generic header as AAD, RFC 5282 §5.1) before anything is decrypted or parsed; a
//!   message that fails is [`SkError::Integrity`] and must be dropped silently (§2.21.2 only
//!   answers authenticated messages).

use crate::crypto::{self, Aead, Cipher, Integrity};
use crate::model::{EncryptionAlgorithm, IntegrityAlgorithm};

use super::message::{
    GENERIC_HEADER_LEN, HEADER_LEN, Header, Message, MessageError, emit_chain, parse_chain,
};
use super::payload::{Payload, PayloadType};
use super::proposal::is_aead;

/// Why an SK payload could not be opened (or sealed).
#[derive(Debug, thiserror::Error)]
pub enum SkError {
    #[error(transparent)]
    Message(#[from] MessageError),
    #[error("no encrypted payload")]
    NotEncrypted,
    #[error("integrity check failed")]
    Integrity,
    #[error("encrypted payload: {0}")]
    Layout(&'static str),
    #[error("ike sa keys: {0}")]
    Config(#[from] crypto::ConfigError),
}

enum Protection {
    Cbc {
        cipher: Box<dyn Cipher>,
        integrity: Box<dyn Integrity>,
    },
    Aead(Box<dyn Aead>),
}

impl Protection {
    fn new(
        encryption: EncryptionAlgorithm,
        integrity: IntegrityAlgorithm,
        encryption_key: &[u8],
        integrity_key: &[u8],
    ) -> Result<Self, SkError> {
        Ok(if is_aead(encryption) {
            Self::Aead(crypto::new_aead(encryption, encryption_key)?)
        } else {
            Self::Cbc {
                cipher: crypto::new_cipher(encryption, encryption_key)?,
                integrity: crypto::new_integrity(integrity, integrity_key)?,
            }
        })
    }

    /// (IV length, padding block, ICV length).
    fn layout(&self) -> (usize, usize, usize) {
        match self {
            Self::Cbc { cipher, integrity } => {
                (cipher.iv_len(), cipher.block_size(), integrity.icv_len())
            }
            Self::Aead(aead) => (aead.iv_len(), 1, aead.icv_len()),
        }
    }
}

/// The keyed SK protection of one direction: seals what this side sends.
pub struct SkSealer {
    protection: Protection,
    /// GCM's next explicit IV.
    counter: u64,
}

/// The keyed SK protection of the other direction: opens what the peer sends.
pub struct SkOpener {
    protection: Protection,
}

impl SkSealer {
    /// # Errors
    /// [`SkError::Config`] for keys of the wrong length.
    pub fn new(
        encryption: EncryptionAlgorithm,
        integrity: IntegrityAlgorithm,
        encryption_key: &[u8],
        integrity_key: &[u8],
    ) -> Result<Self, SkError> {
        Ok(Self {
            protection: Protection::new(encryption, integrity, encryption_key, integrity_key)?,
            counter: 0,
        })
    }

    /// The message `header` with `payloads` inside an SK payload, as bytes.
    ///
    /// # Errors
    /// [`SkError`] when the payloads cannot be emitted.
    pub fn seal(&mut self, header: &Header, payloads: &[Payload]) -> Result<Vec<u8>, SkError> {
        let (iv_len, block, icv_len) = self.protection.layout();
        let mut plain = Vec::new();
        let first = emit_chain(payloads, &mut plain)?;
        // Pad Length counts the padding octets, then itself (§3.14).
        let pad = (block - (plain.len() + 1) % block) % block;
        plain.resize(plain.len() + pad, 0);
        plain.push(u8::try_from(pad).map_err(|_| SkError::Layout("padding over 255"))?);
        let sk_len = GENERIC_HEADER_LEN + iv_len + plain.len() + icv_len;
        let total = HEADER_LEN + sk_len;
        let too_long = || MessageError::TooLong { len: total };
        let mut out = Vec::with_capacity(total);
        header.emit(
            PayloadType::SK,
            u32::try_from(total).map_err(|_| too_long())?,
            &mut out,
        );
        out.extend_from_slice(&[first.0, 0]);
        out.extend_from_slice(&u16::try_from(sk_len).map_err(|_| too_long())?.to_be_bytes());
        let aad_end = out.len();
        let mut iv = vec![0; iv_len];
        match &self.protection {
            Protection::Cbc { .. } => rand::fill(&mut iv[..]),
            Protection::Aead(_) => {
                iv.copy_from_slice(&self.counter.to_be_bytes()[8 - iv_len.min(8)..]);
                self.counter = self
                    .counter
                    .checked_add(1)
                    .ok_or(SkError::Layout("gcm iv counter exhausted"))?;
            }
        }
        out.extend_from_slice(&iv);
        let text_start = out.len();
        out.extend_from_slice(&plain);
        let layout = |_| SkError::Layout("cipher length");
        match &self.protection {
            Protection::Cbc { cipher, integrity } => {
                cipher
                    .encrypt(&iv, &mut out[text_start..])
                    .map_err(layout)?;
                let icv = integrity.compute(&out);
                out.extend_from_slice(icv.as_ref());
            }
            Protection::Aead(aead) => {
                let mut icv = vec![0; icv_len];
                let (aad, text) = out.split_at_mut(text_start);
                aead.seal(&aad[..aad_end], &iv, text, &mut icv)
                    .map_err(layout)?;
                out.extend_from_slice(&icv);
            }
        }
        debug_assert_eq!(out.len(), total);
        Ok(out)
    }
}

impl SkOpener {
    /// # Errors
    /// [`SkError::Config`] for keys of the wrong length.
    pub fn new(
        encryption: EncryptionAlgorithm,
        integrity: IntegrityAlgorithm,
        encryption_key: &[u8],
        integrity_key: &[u8],
    ) -> Result<Self, SkError> {
        Ok(Self {
            protection: Protection::new(encryption, integrity, encryption_key, integrity_key)?,
        })
    }

    /// Authenticates and decrypts `datagram` (already parsed as `outer`): the message with its
    /// SK payload replaced by the payloads inside.
    ///
    /// # Errors
    /// [`SkError::Integrity`] for a forgery or a corrupted message, other [`SkError`]s for
    /// messages that authenticate but do not parse.
    pub fn open(&self, datagram: &[u8], outer: &Message) -> Result<Message, SkError> {
        let Some((Payload::Encrypted { first, data }, before)) = outer.payloads.split_last() else {
            return Err(SkError::NotEncrypted);
        };
        let (iv_len, block, icv_len) = self.protection.layout();
        // The SK body is the datagram's tail (`parse_chain` insists it is last).
        let body_start = datagram.len() - data.len();
        if data.len() < iv_len + icv_len + 1 {
            return Err(SkError::Layout("shorter than iv, pad length and icv"));
        }
        let text_len = data.len() - iv_len - icv_len;
        if text_len % block != 0 {
            return Err(SkError::Layout("ciphertext is not whole blocks"));
        }
        let iv = &data[..iv_len];
        let mut text = data[iv_len..iv_len + text_len].to_vec();
        let icv = &data[iv_len + text_len..];
        let ok = match &self.protection {
            Protection::Cbc { cipher, integrity } => {
                integrity.verify(&datagram[..datagram.len() - icv_len], icv)
                    && cipher.decrypt(iv, &mut text).is_ok()
            }
            Protection::Aead(aead) => aead.open(&datagram[..body_start], iv, &mut text, icv),
        };
        if !ok {
            return Err(SkError::Integrity);
        }
        let pad = usize::from(*text.last().ok_or(SkError::Layout("empty plaintext"))?);
        if pad + 1 > text.len() {
            return Err(SkError::Layout("pad length beyond the plaintext"));
        }
        text.truncate(text.len() - pad - 1);
        let mut payloads = before.to_vec();
        payloads.extend(parse_chain(*first, &text)?);
        Ok(Message {
            header: outer.header,
            payloads,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ike::message::{ExchangeType, flags};
    use crate::ike::payload::{Notify, NotifyType};

    fn header() -> Header {
        Header {
            spi_i: [1; 8],
            spi_r: [2; 8],
            exchange: ExchangeType::IKE_AUTH,
            flags: flags::INITIATOR,
            message_id: 1,
        }
    }

    fn payloads() -> Vec<Payload> {
        vec![
            Payload::Nonce(vec![9; 32]),
            Payload::Notify(Notify::new(NotifyType::USE_TRANSPORT_MODE, vec![])),
        ]
    }

    type Suite = (EncryptionAlgorithm, IntegrityAlgorithm, usize, usize);

    const SUITES: [Suite; 4] = [
        (
            EncryptionAlgorithm::Aes128Cbc,
            IntegrityAlgorithm::HmacSha256,
            16,
            32,
        ),
        (
            EncryptionAlgorithm::Aes256Cbc,
            IntegrityAlgorithm::HmacSha256,
            32,
            32,
        ),
        (
            EncryptionAlgorithm::Aes128Gcm,
            IntegrityAlgorithm::None,
            20,
            0,
        ),
        (
            EncryptionAlgorithm::Aes256Gcm,
            IntegrityAlgorithm::None,
            36,
            0,
        ),
    ];

    fn pair((e, i, el, il): Suite) -> (SkSealer, SkOpener) {
        let (ek, ik) = (vec![0x5a; el], vec![0xa5; il]);
        (
            SkSealer::new(e, i, &ek, &ik).expect("sealer"),
            SkOpener::new(e, i, &ek, &ik).expect("opener"),
        )
    }

    fn open(opener: &SkOpener, bytes: &[u8]) -> Result<Message, SkError> {
        let outer = Message::parse(bytes)?;
        opener.open(bytes, &outer)
    }

    #[test]
    fn seal_then_open_for_each_suite() {
        for suite in SUITES {
            let (mut sealer, opener) = pair(suite);
            let bytes = sealer.seal(&header(), &payloads()).expect("sealing");
            let message = open(&opener, &bytes).expect("opening");
            assert_eq!(message.header, header(), "{:?}", suite.0);
            assert_eq!(message.payloads, payloads(), "{:?}", suite.0);
            // The plaintext never shows: the nonce's bytes are not in the datagram.
            assert!(!bytes.windows(32).any(|w| w == [9; 32]), "{:?}", suite.0);
        }
    }

    /// Any flipped bit anywhere (header, SK header, IV, ciphertext, ICV) is refused.
    #[test]
    fn tampering_is_refused_everywhere() {
        for suite in SUITES {
            let (mut sealer, opener) = pair(suite);
            let bytes = sealer.seal(&header(), &payloads()).expect("sealing");
            for at in 0..bytes.len() {
                let mut bad = bytes.clone();
                bad[at] ^= 0x01;
                assert!(open(&opener, &bad).is_err(), "{:?}: byte {at}", suite.0);
            }
        }
    }

    #[test]
    fn the_other_key_does_not_open() {
        for suite in SUITES {
            let (mut sealer, _) = pair(suite);
            let (e, i, el, il) = suite;
            let other = SkOpener::new(e, i, &vec![0x5b; el], &vec![0xa6; il]).expect("opener");
            let bytes = sealer.seal(&header(), &payloads()).expect("sealing");
            assert!(matches!(open(&other, &bytes), Err(SkError::Integrity)));
        }
    }

    #[test]
    fn gcm_ivs_never_repeat() {
        let (mut sealer, _) = pair(SUITES[2]);
        let a = sealer.seal(&header(), &payloads()).expect("sealing");
        let b = sealer.seal(&header(), &payloads()).expect("sealing");
        let iv = HEADER_LEN + GENERIC_HEADER_LEN;
        assert_ne!(a[iv..iv + 8], b[iv..iv + 8]);
    }
}
