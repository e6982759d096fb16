//! `aes128-gcm` and `aes256-gcm`: AES-GCM in ESP, RFC 4106, with the 16-octet ICV.
//!
//! Contract:
//! - The configured key is the AES key followed by a 4-byte salt (RFC 4106 §8.1: 20 bytes for
//!   AES-128, 36 for AES-256). The 12-byte GCM nonce is salt || the packet's 8-byte explicit IV
//!   (§4); the AAD is SPI || sequence number (§5, 32-bit sequence numbers).
//! - The IV must never repeat under one key (§3.1, §8): choosing it is the SA's job (a counter,
//!   see `esp`); this file only uses the IV it is given.
//! - Opening checks the tag in constant time before any plaintext is produced (the `aes-gcm`
//!   crate computes GHASH over the ciphertext first); a forgery leaves the buffer as it was.
//! - Key schedule, GHASH key and salt are wiped on drop (`aes-gcm`'s `zeroize` feature).
//! - This is the portable path and the reference: bursts seal and open on `crypto::burst`'s
//!   GCM lanes (VAES, VPCLMULQDQ) where the CPU has them, byte for byte the same (tested
//!   against this file's crate), and here otherwise or with `XIPSEC_ESP_BACKEND=sequential`.

use aes_gcm::aead::array::Array;
use aes_gcm::{AeadInOut, AesGcm, KeyInit, Nonce, Tag};
use std::fmt;
use std::marker::PhantomData;
use zeroize::{Zeroize, ZeroizeOnDrop};

use super::{Aead, CipherLengthError, ConfigError};

/// RFC 4106 §8.1: the salt that follows the AES key in the keying material.
pub(crate) const SALT_LEN: usize = 4;
/// RFC 4106 §3.1: the explicit IV is 8 octets.
pub(crate) const IV_LEN: usize = 8;
/// The ICV, 16 octets (RFC 4106 §6 also allows 8 and 12; this is the one ESXi-style ESP and
/// IKEv2's `ENCR_AES_GCM_16` use).
pub(crate) const ICV_LEN: usize = 16;
/// RFC 4106 §3.2: the ESP trailer ends on a 4-byte boundary; GCM itself needs no padding.
const ALIGN: usize = 4;

/// What distinguishes `aes128-gcm` from `aes256-gcm`.
pub trait GcmSpec: Send + Sync + 'static {
    /// The block cipher; its `zeroize` feature wipes the key schedule on drop.
    type Block: aes::cipher::BlockCipherEncrypt
        + aes::cipher::BlockSizeUser<BlockSize = aes::cipher::consts::U16>
        + KeyInit
        + ZeroizeOnDrop
        + Send
        + Sync;
    /// The model name, for messages.
    const NAME: &'static str;
    /// `Debug` name, never the key.
    const DEBUG_NAME: &'static str;
    /// Length of the AES key (without the salt).
    const AES_KEY_LEN: usize;
}

/// `aes128-gcm`.
#[derive(Debug)]
pub struct Gcm128;

impl GcmSpec for Gcm128 {
    type Block = aes::Aes128;
    const NAME: &'static str = "aes128-gcm";
    const DEBUG_NAME: &'static str = "Aes128Gcm";
    const AES_KEY_LEN: usize = 16;
}

/// `aes256-gcm`.
#[derive(Debug)]
pub struct Gcm256;

impl GcmSpec for Gcm256 {
    type Block = aes::Aes256;
    const NAME: &'static str = "aes256-gcm";
    const DEBUG_NAME: &'static str = "Aes256Gcm";
    const AES_KEY_LEN: usize = 32;
}

/// AES-GCM keyed for one SA.
pub struct EspGcm<S: GcmSpec> {
    aead: AesGcm<S::Block, aes::cipher::consts::U12>,
    salt: [u8; SALT_LEN],
    spec: PhantomData<S>,
}

/// `aes128-gcm` keyed for one SA.
pub type Aes128Gcm = EspGcm<Gcm128>;
/// `aes256-gcm` keyed for one SA.
pub type Aes256Gcm = EspGcm<Gcm256>;

impl<S: GcmSpec> EspGcm<S> {
    /// The keying material's length: AES key and salt.
    pub const KEY_LEN: usize = S::AES_KEY_LEN + SALT_LEN;

    /// Schedules `key` = AES key || 4-byte salt (RFC 4106 §8.1).
    ///
    /// # Errors
    /// [`ConfigError::Length`] unless `key` is exactly [`Self::KEY_LEN`] bytes.
    pub fn new(key: &[u8]) -> Result<Self, ConfigError> {
        let length = || ConfigError::Length {
            algorithm: S::NAME,
            expected: Self::KEY_LEN,
            got: key.len(),
        };
        if key.len() != Self::KEY_LEN {
            return Err(length());
        }
        let (aes_key, salt) = key.split_at(S::AES_KEY_LEN);
        let aead = AesGcm::new_from_slice(aes_key).map_err(|_| length())?;
        let salt = salt.try_into().map_err(|_| length())?;
        Ok(Self {
            aead,
            salt,
            spec: PhantomData,
        })
    }

    /// salt || IV (RFC 4106 §4), or the length error for an IV that is not 8 bytes.
    fn nonce(
        &self,
        iv: &[u8],
        len: usize,
    ) -> Result<Nonce<aes::cipher::consts::U12>, CipherLengthError> {
        if iv.len() != IV_LEN {
            return Err(CipherLengthError {
                len,
                iv_len: iv.len(),
                block_size: ALIGN,
            });
        }
        let mut nonce = Nonce::<aes::cipher::consts::U12>::default();
        nonce[..SALT_LEN].copy_from_slice(&self.salt);
        nonce[SALT_LEN..].copy_from_slice(iv);
        Ok(nonce)
    }
}

impl<S: GcmSpec> Drop for EspGcm<S> {
    fn drop(&mut self) {
        self.salt.zeroize();
    }
}

// The AES key schedule and the GHASH key are wiped by `aes-gcm` (its `zeroize` feature), the
// salt by `Drop` above.
impl<S: GcmSpec> ZeroizeOnDrop for EspGcm<S> {}

/// Prints the algorithm, never the key.
impl<S: GcmSpec> fmt::Debug for EspGcm<S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        super::debug_redacted(f, S::DEBUG_NAME)
    }
}

impl<S: GcmSpec> Aead for EspGcm<S> {
    fn name(&self) -> &'static str {
        S::NAME
    }

    fn block_size(&self) -> usize {
        ALIGN
    }

    fn iv_len(&self) -> usize {
        IV_LEN
    }

    fn icv_len(&self) -> usize {
        ICV_LEN
    }

    fn seal(
        &self,
        aad: &[u8],
        iv: &[u8],
        text: &mut [u8],
        icv: &mut [u8],
    ) -> Result<(), CipherLengthError> {
        let nonce = self.nonce(iv, text.len())?;
        let bad = CipherLengthError {
            len: text.len(),
            iv_len: iv.len(),
            block_size: ALIGN,
        };
        if icv.len() != ICV_LEN {
            return Err(bad);
        }
        // Only the length limits of GCM (2^36 bytes) can fail here, far beyond a packet.
        let tag = self
            .aead
            .encrypt_inout_detached(&nonce, aad, text.into())
            .map_err(|_| bad)?;
        icv.copy_from_slice(&tag);
        Ok(())
    }

    fn open(&self, aad: &[u8], iv: &[u8], text: &mut [u8], icv: &[u8]) -> bool {
        let Ok(nonce) = self.nonce(iv, text.len()) else {
            return false;
        };
        let Ok(tag) = <&Tag>::try_from(icv) else {
            return false;
        };
        let tag: &Array<u8, _> = tag;
        self.aead
            .decrypt_inout_detached(&nonce, aad, text.into(), tag)
            .is_ok()
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::crypto::suite::Suite;
    use crate::model::{EncryptionAlgorithm, IntegrityAlgorithm};

    /// draft-mcgrew-gcm-test-01 §4, the AES-128 and AES-256 cases with 16-octet ICVs (not
    /// the AES-192 one): (case, AES key, salt, AAD, explicit IV, plaintext, ciphertext || ICV).
    /// The AAD is SPI || sequence number: 8 octets, or 12 with extended sequence numbers
    /// (cases 1 and 13; ESP here sends 32-bit ones, the AEAD takes either).
    pub(crate) const CASES: &[(u32, &str, &str, &str, &str, &str, &str)] = &[
        (
            2,
            "feffe9928665731c6d6a8f9467308308",
            "cafebabe",
            "0000a5f80000000a",
            "facedbaddecaf888",
            "4500003e698f000080114dccc0a80102c0a801010a980035002a2343b2d001000001000000000000037369700963796265726369747902646b00000100010001",
            "deb22cd9b07c72c16e3a65beeb8df304a5a5897d33ae530f1ba76d5d114d2a5c3de81827c10e9a4f51330d0eec416642cfbb85a5b47e48a4ec3b9ba95d918bd183b70d3aa8bc6ee4c309e9d85a41ad4a",
        ),
        (
            3,
            "abbccddef00112233445566778899aababbccddef00112233445566778899aab",
            "11223344",
            "4a2cbfe300000002",
            "0102030405060708",
            "4500003069a6400080062690c0a801029389155e0a9e008b2dc57ee0000000007002400020bf0000020405b40101040201020201",
            "ff425c9b724599df7a3bcd510194e00d6a78107f1b0b1cbf06efae9d65a5d763748a637985771d347f0545659f14e99def842d8eb335f4eecfdbf831824b4c4915956c96",
        ),
        (
            4,
            "00000000000000000000000000000000",
            "00000000",
            "0000000000000001",
            "0000000000000000",
            "4500003c99c500008001cb7a40679318010101010800075c0200440061626364656667686\
             96a6b6c6d6e6f707172737475767761626364656667686901020201",
            "4688daf2f973a392732909c331d56d60f694abaa414b5e7ff5fdcdfff5e9a284456476492719ffb64de7d9dca1e1d894bc3bd57873ed4d181d19d4d5c8c18af3f821d496eeb096e98ad2b69e4799c71d",
        ),
        (
            12,
            "7d773d00c144c525ac619d18c84a3f47",
            "d9664267",
            "335467aeffffffff",
            "43457e9182443bc6",
            "01020201",
            "437f866bcb3f699fe9b0822bac961c4504bef270",
        ),
        (
            1,
            "4c80cdefbb5d10da906ac73c3613a634",
            "2e443b68",
            "000043218765432100000000",
            "4956ed7e3b244cfe",
            "45000048699a000080114db7c0a80102c0a801010a9bf15638d301000001000000000000045f736970045f756470037369700963796265726369747902646b000021000101020201",
            "fecf537e729d5b07dc30df528dd22b768d1b98736696a6fd348509fa13ceac34cfa2436f14a3f3cf65925bf1f4a13c5d15b21e1884f5ff6247aeabb786b93bce61bc17d768fd9732459018148f6cbe722fd04796562dfdb4",
        ),
        (
            13,
            "abbccddef00112233445566778899aab",
            "decaf888",
            "000001000000000000000001",
            "cafedebaceface74",
            "746f016265016f72016e6f7401746f0162650001",
            "29c9fc69a197d038ccdd14e2ddfcaa0543332164412503524303ed3c6c5f283843af8c3e",
        ),
    ];

    fn unhex(s: &str) -> Vec<u8> {
        hex::decode(s.replace(' ', "")).expect("decoding a test vector")
    }

    fn keyed(key: &[u8]) -> Box<dyn Aead> {
        let algorithm = if key.len() == Aes128Gcm::KEY_LEN {
            EncryptionAlgorithm::Aes128Gcm
        } else {
            EncryptionAlgorithm::Aes256Gcm
        };
        crate::crypto::new_aead(algorithm, key).expect("keying AES-GCM")
    }

    #[test]
    fn draft_mcgrew_gcm_test_vectors_seal_and_open() {
        for (case, key, salt, aad, iv, plain, sealed) in CASES {
            let aead = keyed(&unhex(&format!("{key}{salt}")));
            let (aad, iv, plain, sealed) = (unhex(aad), unhex(iv), unhex(plain), unhex(sealed));
            let mut text = plain.clone();
            let mut icv = [0; ICV_LEN];
            aead.seal(&aad, &iv, &mut text, &mut icv).expect("sealing");
            assert_eq!(
                [text.as_slice(), &icv].concat(),
                sealed,
                "case {case}: seal"
            );
            assert!(aead.open(&aad, &iv, &mut text, &icv), "case {case}: open");
            assert_eq!(text, plain, "case {case}: opened plaintext");
        }
    }

    /// The 32-bit-sequence cases as whole ESP payloads (SPI || seq || IV || ciphertext ||
    /// ICV) through the suite ESP uses: the AAD is taken from the ESP header and the nonce is
    /// salt || the packet's IV, as RFC 4106 lays them out.
    #[test]
    fn draft_mcgrew_gcm_test_vectors_as_esp_packets() {
        for (case, key, salt, aad, iv, plain, sealed) in CASES.iter().filter(|c| c.3.len() == 16) {
            let key = unhex(&format!("{key}{salt}"));
            let encryption = if key.len() == Aes128Gcm::KEY_LEN {
                EncryptionAlgorithm::Aes128Gcm
            } else {
                EncryptionAlgorithm::Aes256Gcm
            };
            let suite = Suite::new(encryption, &key, IntegrityAlgorithm::None, &[])
                .expect("keying the suite");
            let packet = unhex(&format!("{aad}{iv}{sealed}"));
            let plain = unhex(plain);
            let text_offset = 16;
            let icv_offset = text_offset + plain.len();
            let mut framed = [
                &unhex(&format!("{aad}{iv}")),
                plain.as_slice(),
                &[0; ICV_LEN],
            ]
            .concat();
            suite
                .seal(&mut framed, text_offset, icv_offset)
                .expect("sealing an esp payload");
            assert_eq!(
                hex::encode(&framed),
                hex::encode(&packet),
                "case {case}: esp packet"
            );
            let mut out = vec![0xee];
            suite
                .open(&packet, text_offset, icv_offset, &mut out)
                .expect("opening an esp payload");
            assert_eq!(out[1..], plain[..], "case {case}: esp plaintext");
        }
    }

    #[test]
    fn forgeries_are_refused_and_leave_the_text_alone() {
        let (_, key, salt, aad, iv, plain, sealed) = CASES[0];
        let aead = keyed(&unhex(&format!("{key}{salt}")));
        let (aad, iv, sealed) = (unhex(aad), unhex(iv), unhex(sealed));
        let (ciphertext, icv) = sealed.split_at(unhex(plain).len());
        // A flipped bit in the ciphertext, the ICV, the AAD (SPI or sequence number) or the IV.
        let flips: [(usize, usize); 4] = [(0, 3), (1, 15), (2, 7), (3, 0)];
        for (part, byte) in flips {
            let (mut text, mut tag, mut a, mut v) =
                (ciphertext.to_vec(), icv.to_vec(), aad.clone(), iv.clone());
            [&mut text, &mut tag, &mut a, &mut v][part][byte] ^= 1;
            let before = text.clone();
            assert!(
                !aead.open(&a, &v, &mut text, &tag),
                "flip in part {part} accepted"
            );
            assert_eq!(text, before, "a refused packet is not decrypted");
        }
        // The salt is part of the key: another salt does not open it.
        let other = keyed(&unhex(&format!("{key}cafebabf")));
        let mut text = ciphertext.to_vec();
        assert!(!other.open(&aad, &iv, &mut text, icv));
        assert_eq!(text, ciphertext);
    }

    #[test]
    fn keys_are_aes_key_and_salt() {
        for (algorithm, len) in [
            (EncryptionAlgorithm::Aes128Gcm, 20),
            (EncryptionAlgorithm::Aes256Gcm, 36),
        ] {
            assert_eq!(algorithm.key_len(), len);
            for wrong in [len - 4, len - 1, len + 1] {
                assert_eq!(
                    crate::crypto::new_aead(algorithm, &vec![1; wrong]).err(),
                    Some(ConfigError::Length {
                        algorithm: algorithm.as_str(),
                        expected: len,
                        got: wrong,
                    })
                );
            }
            let aead = crate::crypto::new_aead(algorithm, &vec![1; len]).expect("keying");
            assert_eq!(
                (
                    aead.name(),
                    aead.block_size(),
                    aead.iv_len(),
                    aead.icv_len()
                ),
                (algorithm.as_str(), 4, 8, 16)
            );
            assert!(
                format!("{:?}", Aes128Gcm::new(&[1; 20]).expect("keying")).contains("<redacted>")
            );
        }
    }
}
