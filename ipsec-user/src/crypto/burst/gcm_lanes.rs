//! AES-GCM for ESP (RFC 4106) with VAES and VPCLMULQDQ on 256-bit vectors (x86-64 only).
//!
//! Contract:
//! - [`LaneGcmKey::seal`] encrypts in place and writes the 16-byte tag; [`LaneGcmKey::verify`]
//!   checks a tag over AAD and ciphertext in constant time (`subtle`) without decrypting;
//!   [`LaneGcmKey::decrypt`] is the counter-mode pass alone, for a packet already verified. The
//!   output is exactly AES-GCM (SP 800-38D) with the 12-byte nonce salt || IV (RFC 4106 §4),
//!   byte for byte the `aes-gcm` crate's (tested against it, against the GCM specification's
//!   test cases and draft-mcgrew-gcm-test-01).
//! - Sealing is stitched: each step makes eight blocks of key stream (four 256-bit vectors, two
//!   blocks each, every AES round in flight for all of them) while GHASH takes in the eight
//!   ciphertext blocks of the step before, with one reduction per eight blocks (`ghash`). The
//!   AES units and the carry-less multiplier work side by side instead of one after the other.
//! - Opening takes two passes on purpose: GHASH over the ciphertext and the tag check first
//!   (`verify_jobs`, for the whole burst), then counter mode only for the packets that
//!   verified, so no plaintext of a forgery ever exists.
//! - A key exists only where [`available`] held (AES-NI, PCLMULQDQ, AVX2, VAES, VPCLMULQDQ):
//!   [`LaneGcmKey::new`] checks, so its methods may use those instructions.
//! - Round keys, hash key powers and salt are wiped on drop; `Debug` never prints them.

use super::aes_lanes::LaneAesKey;
use super::ghash::{self, GhashKey};
use crate::crypto::CipherLengthError;
use core::arch::x86_64::{
    __m128i, __m256i, _mm_aesenc_si128, _mm_aesenclast_si128, _mm_set_epi8, _mm_xor_si128,
    _mm256_add_epi32, _mm256_aesenc_epi128, _mm256_aesenclast_epi128, _mm256_broadcastsi128_si256,
    _mm256_loadu_si256, _mm256_set_epi32, _mm256_setzero_si256, _mm256_shuffle_epi8,
    _mm256_storeu_si256, _mm256_xor_si256,
};
use std::fmt;
use subtle::ConstantTimeEq;
use zeroize::{Zeroize, ZeroizeOnDrop};

/// RFC 4106 §8.1: the salt after the AES key.
const SALT_LEN: usize = 4;
/// The tag (ICV) length.
pub(crate) const TAG_LEN: usize = 16;
/// AES block, bytes.
const BLOCK: usize = 16;
/// Bytes per step: four vectors of two blocks.
const STEP: usize = 4 * 2 * BLOCK;
/// The most round keys (AES-256).
const MAX_ROUND_KEYS: usize = 15;
/// SP 800-38D §5.2.1.1: at most 2^32 - 2 blocks of text under one nonce (the 32-bit counter
/// starts at 2), far beyond an ESP packet.
const MAX_TEXT: u64 = ((1 << 32) - 2) * 16;

/// Whether this CPU has what the GCM lanes use.
pub(crate) fn available() -> bool {
    std::is_x86_feature_detected!("aes")
        && std::is_x86_feature_detected!("pclmulqdq")
        && std::is_x86_feature_detected!("avx2")
        && std::is_x86_feature_detected!("vaes")
        && std::is_x86_feature_detected!("vpclmulqdq")
}

/// An `aes128-gcm` or `aes256-gcm` key (AES key || salt) scheduled for the lanes.
#[derive(Clone, Zeroize, ZeroizeOnDrop)]
pub(crate) struct LaneGcmKey {
    /// Each round key twice, one per 128-bit half of a vector.
    round_keys: [[u8; 2 * BLOCK]; MAX_ROUND_KEYS],
    /// 10 (AES-128) or 14 (AES-256).
    rounds: usize,
    ghash: GhashKey,
    salt: [u8; SALT_LEN],
}

impl LaneGcmKey {
    /// Schedules `key` = AES key (16 or 32 bytes) || 4-byte salt; `None` for any other length
    /// or where [`available`] does not hold.
    pub(crate) fn new(key: &[u8]) -> Option<Self> {
        if !available() {
            return None;
        }
        let (aes_key, salt) = key.split_at_checked(key.len().checked_sub(SALT_LEN)?)?;
        let schedule = LaneAesKey::new(aes_key)?;
        let (keys, rounds) = schedule.round_keys();
        let mut round_keys = [[0; 2 * BLOCK]; MAX_ROUND_KEYS];
        for (double, single) in round_keys.iter_mut().zip(keys) {
            double[..BLOCK].copy_from_slice(single);
            double[BLOCK..].copy_from_slice(single);
        }
        // SAFETY: `available` held above.
        let ghash = unsafe { GhashKey::new(encrypt_block(&round_keys, rounds, [0; BLOCK])) };
        Some(Self {
            round_keys,
            rounds,
            ghash,
            salt: salt.try_into().ok()?,
        })
    }

    /// Encrypts `text` in place and writes the tag over `aad` and the ciphertext into `tag`
    /// (RFC 4106: `aad` is SPI || sequence number, `iv` the packet's explicit IV).
    ///
    /// # Errors
    /// [`CipherLengthError`] for a text beyond GCM's limit (2^32 - 2 blocks); nothing is
    /// written then.
    pub(crate) fn seal(
        &self,
        aad: &[u8],
        iv: [u8; 8],
        text: &mut [u8],
        tag: &mut [u8; TAG_LEN],
    ) -> Result<(), CipherLengthError> {
        if text.len() as u64 > MAX_TEXT {
            return Err(CipherLengthError {
                len: text.len(),
                iv_len: iv.len(),
                block_size: 4,
            });
        }
        let nonce = self.nonce(iv);
        // SAFETY: a key exists only where `available` held (`new`).
        unsafe {
            let acc = self.hash_aad(aad);
            let acc = match self.rounds {
                10 => crypt::<10, true>(self, &nonce, text, acc),
                _ => crypt::<14, true>(self, &nonce, text, acc),
            };
            *tag = self.finish(&nonce, acc, aad.len(), text.len());
        }
        Ok(())
    }

    /// Whether `tag` is the tag of `aad` and `ciphertext` under `iv`, compared in constant time.
    /// Decrypts nothing.
    pub(crate) fn verify(&self, aad: &[u8], iv: [u8; 8], ciphertext: &[u8], tag: &[u8]) -> bool {
        if ciphertext.len() as u64 > MAX_TEXT {
            return false;
        }
        let nonce = self.nonce(iv);
        // SAFETY: a key exists only where `available` held (`new`).
        let computed = unsafe {
            let acc = hash_text(&self.ghash, self.hash_aad(aad), ciphertext);
            self.finish(&nonce, acc, aad.len(), ciphertext.len())
        };
        // `ct_eq` on slices of different lengths is false; lengths are public.
        computed.ct_eq(tag).into()
    }

    /// Decrypts `text` in place (counter mode only): for a packet [`Self::verify`] accepted.
    pub(crate) fn decrypt(&self, iv: [u8; 8], text: &mut [u8]) {
        if text.len() as u64 > MAX_TEXT {
            return;
        }
        let nonce = self.nonce(iv);
        // SAFETY: a key exists only where `available` held (`new`). The GHASH value is unused.
        unsafe {
            let zero = ghash::load(&[0; BLOCK]);
            match self.rounds {
                10 => crypt::<10, false>(self, &nonce, text, zero),
                _ => crypt::<14, false>(self, &nonce, text, zero),
            };
        }
    }

    /// salt || IV (RFC 4106 §4).
    fn nonce(&self, iv: [u8; 8]) -> [u8; 12] {
        let mut nonce = [0; 12];
        nonce[..SALT_LEN].copy_from_slice(&self.salt);
        nonce[SALT_LEN..].copy_from_slice(&iv);
        nonce
    }

    /// GHASH of the AAD, zero-padded to whole blocks (SP 800-38D §7.1 step 5).
    #[target_feature(enable = "sse2,pclmulqdq")]
    fn hash_aad(&self, aad: &[u8]) -> __m128i {
        let h = self.ghash.h1();
        let mut acc = ghash::load(&[0; BLOCK]);
        for chunk in aad.chunks(BLOCK) {
            let mut block = [0; BLOCK];
            block[..chunk.len()].copy_from_slice(chunk);
            let reflected = u128::from_be_bytes(block).to_le_bytes();
            acc = ghash::mul(_mm_xor_si128(acc, ghash::load(&reflected)), h);
        }
        acc
    }

    /// The tag: GHASH through the lengths block, plus E(K, J0) with J0 = nonce || 1
    /// (SP 800-38D §7.1 steps 2, 5, 6).
    #[target_feature(enable = "aes,sse2,pclmulqdq")]
    fn finish(&self, nonce: &[u8; 12], acc: __m128i, aad_len: usize, text_len: usize) -> [u8; 16] {
        let bits = |len: usize| (len as u128) * 8;
        let lengths = (bits(aad_len) << 64) | bits(text_len);
        let acc = ghash::mul(
            _mm_xor_si128(acc, ghash::load(&lengths.to_le_bytes())),
            self.ghash.h1(),
        );
        let mut reflected = [0; BLOCK];
        ghash::store(&mut reflected, acc);
        let hash = u128::from_le_bytes(reflected);
        let j0 = u128::from_be_bytes(encrypt_block(
            &self.round_keys,
            self.rounds,
            counter_block(nonce, 1),
        ));
        (hash ^ j0).to_be_bytes()
    }
}

/// The type, never the key.
impl fmt::Debug for LaneGcmKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        crate::crypto::debug_redacted(f, "LaneGcmKey")
    }
}

/// E(K, block) on one block, with the first half of each doubled round key.
#[target_feature(enable = "aes,sse2")]
fn encrypt_block(
    round_keys: &[[u8; 2 * BLOCK]; MAX_ROUND_KEYS],
    rounds: usize,
    block: [u8; BLOCK],
) -> [u8; BLOCK] {
    let half = |i: usize| -> __m128i {
        let key: &[u8; BLOCK] = round_keys[i][..BLOCK].try_into().expect("a round key");
        ghash::load(key)
    };
    let mut x = _mm_xor_si128(ghash::load(&block), half(0));
    for round in 1..rounds {
        x = _mm_aesenc_si128(x, half(round));
    }
    x = _mm_aesenclast_si128(x, half(rounds));
    let mut out = [0; BLOCK];
    ghash::store(&mut out, x);
    out
}

/// The counter block `nonce || counter` (SP 800-38D §7.1: J0 = nonce || 1 for a 96-bit nonce,
/// the text's blocks use 2, 3, ...).
fn counter_block(nonce: &[u8; 12], counter: u32) -> [u8; BLOCK] {
    let mut block = [0; BLOCK];
    block[..12].copy_from_slice(nonce);
    block[12..].copy_from_slice(&counter.to_be_bytes());
    block
}

/// Whole or partial blocks in a chunk of at most [`STEP`] bytes.
fn blocks(chunk: &[u8]) -> usize {
    chunk.len().div_ceil(BLOCK)
}

/// Reverses the bytes of each 128-bit half (GCM's byte order to the reflected one and back).
#[inline]
#[target_feature(enable = "avx2")]
fn reverse_mask() -> __m256i {
    _mm256_broadcastsi128_si256(_mm_set_epi8(
        0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15,
    ))
}

#[inline]
#[target_feature(enable = "avx2")]
fn reflect4(v: [__m256i; 4]) -> [__m256i; 4] {
    let mask = reverse_mask();
    v.map(|x| _mm256_shuffle_epi8(x, mask))
}

/// A chunk of at most [`STEP`] bytes as four vectors, zero past its end.
#[inline]
#[target_feature(enable = "avx2")]
fn load_chunk(chunk: &[u8]) -> [__m256i; 4] {
    let mut padded = [0u8; STEP];
    let bytes: &[u8; STEP] = if let Ok(whole) = chunk.try_into() {
        whole
    } else {
        padded[..chunk.len()].copy_from_slice(chunk);
        &padded
    };
    // SAFETY: `bytes` is `STEP` = 4 * 32 readable bytes.
    core::array::from_fn(|i| unsafe { _mm256_loadu_si256(bytes[32 * i..].as_ptr().cast()) })
}

/// The first `chunk.len()` (at most [`STEP`]) bytes of four vectors into `chunk`.
#[inline]
#[target_feature(enable = "avx2")]
fn store_chunk(chunk: &mut [u8], v: [__m256i; 4]) {
    let mut padded = [0u8; STEP];
    let whole = chunk.len() == STEP;
    let bytes: &mut [u8] = if whole { chunk } else { &mut padded };
    for (i, x) in v.iter().enumerate() {
        // SAFETY: `bytes` is `STEP` = 4 * 32 writable bytes.
        unsafe { _mm256_storeu_si256(bytes[32 * i..].as_mut_ptr().cast(), *x) };
    }
    if !whole {
        chunk.copy_from_slice(&padded[..chunk.len()]);
    }
}

/// Counter mode over `data` in place from counter 2, and with `HASH`, GHASH of the ciphertext
/// from `acc`: each step makes the next eight blocks of key stream while hashing the eight
/// blocks the step before wrote.
#[target_feature(enable = "aes,avx2,pclmulqdq,vaes,vpclmulqdq")]
fn crypt<const ROUNDS: usize, const HASH: bool>(
    key: &LaneGcmKey,
    nonce: &[u8; 12],
    data: &mut [u8],
    mut acc: __m128i,
) -> __m128i {
    let mask = reverse_mask();
    // Counters 2 and 3, reflected so that the 32-bit counter is the low lane of each half and
    // `add_epi32` increments it modulo 2^32 (inc32, SP 800-38D §6.2).
    let mut first = [0u8; 32];
    for (half, counter) in first.chunks_exact_mut(BLOCK).zip([2, 3]) {
        half.copy_from_slice(&u128::from_be_bytes(counter_block(nonce, counter)).to_le_bytes());
    }
    // SAFETY: `first` is 32 readable bytes.
    let mut counters = unsafe { _mm256_loadu_si256(first.as_ptr().cast()) };
    let two = _mm256_set_epi32(0, 0, 0, 2, 0, 0, 0, 2);
    let mut pending: Option<([__m256i; 4], usize)> = None;
    for chunk in data.chunks_mut(STEP) {
        let mut stream = [_mm256_setzero_si256(); 4];
        for s in &mut stream {
            *s = _mm256_shuffle_epi8(counters, mask);
            counters = _mm256_add_epi32(counters, two);
        }
        let stream = encrypt4::<ROUNDS>(&key.round_keys, stream);
        if HASH && let Some((cipher, n)) = pending {
            acc = ghash::update(&key.ghash, acc, &cipher, n);
        }
        let text = load_chunk(chunk);
        let out: [__m256i; 4] = core::array::from_fn(|i| _mm256_xor_si256(text[i], stream[i]));
        store_chunk(chunk, out);
        if HASH {
            // GHASH takes the ciphertext zero-padded: past a partial chunk's end, `out` holds
            // key stream.
            let cipher = if chunk.len() == STEP {
                out
            } else {
                load_chunk(chunk)
            };
            pending = Some((reflect4(cipher), blocks(chunk)));
        }
    }
    if HASH && let Some((cipher, n)) = pending {
        acc = ghash::update(&key.ghash, acc, &cipher, n);
    }
    acc
}

/// GHASH of `text` (zero-padded to whole blocks) from `acc`, eight blocks per reduction.
#[target_feature(enable = "avx2,pclmulqdq,vpclmulqdq")]
fn hash_text(key: &GhashKey, mut acc: __m128i, text: &[u8]) -> __m128i {
    for chunk in text.chunks(STEP) {
        acc = ghash::update(key, acc, &reflect4(load_chunk(chunk)), blocks(chunk));
    }
    acc
}

/// AES on eight blocks, two per vector, every round for all of them before the next.
#[inline]
#[target_feature(enable = "avx2,vaes")]
fn encrypt4<const ROUNDS: usize>(
    keys: &[[u8; 2 * BLOCK]; MAX_ROUND_KEYS],
    mut x: [__m256i; 4],
) -> [__m256i; 4] {
    // SAFETY: every round key is 32 readable bytes.
    let key = |round: usize| unsafe { _mm256_loadu_si256(keys[round].as_ptr().cast()) };
    let k = key(0);
    for v in &mut x {
        *v = _mm256_xor_si256(*v, k);
    }
    for round in 1..ROUNDS {
        let k = key(round);
        for v in &mut x {
            *v = _mm256_aesenc_epi128(*v, k);
        }
    }
    let k = key(ROUNDS);
    for v in &mut x {
        *v = _mm256_aesenclast_epi128(*v, k);
    }
    x
}

#[cfg(test)]
mod tests {
    use super::*;
    use aes_gcm::aead::array::Array;
    use aes_gcm::{AeadInOut, KeyInit};
    use rand::rngs::StdRng;
    use rand::{Rng, SeedableRng};

    fn unhex(s: &str) -> Vec<u8> {
        hex::decode(s).expect("decoding a test vector")
    }

    fn keyed(key_and_salt: &[u8]) -> LaneGcmKey {
        assert!(available(), "vaes and vpclmulqdq on the test machine");
        LaneGcmKey::new(key_and_salt).expect("keying the gcm lanes")
    }

    /// Seals with the lanes, checks the result, verifies and decrypts it back.
    fn seal_and_open(key: &LaneGcmKey, aad: &[u8], nonce: &[u8], plain: &[u8]) -> Vec<u8> {
        let iv: [u8; 8] = nonce[SALT_LEN..].try_into().expect("8-byte iv");
        let mut text = plain.to_vec();
        let mut tag = [0; TAG_LEN];
        key.seal(aad, iv, &mut text, &mut tag).expect("sealing");
        assert!(key.verify(aad, iv, &text, &tag), "own tag verifies");
        let sealed = [text.as_slice(), &tag].concat();
        key.decrypt(iv, &mut text);
        assert_eq!(text, plain, "decrypts back");
        sealed
    }

    /// The test cases of the GCM specification (McGrew and Viega, "The Galois/Counter Mode of
    /// Operation", Appendix B; the cases NIST's GCMVS vectors start from) with 96-bit IVs:
    /// (case, key, nonce, AAD, plaintext, ciphertext || tag). The nonce's first four bytes
    /// play the salt, the other eight the ESP IV.
    const SPEC_CASES: &[(u32, &str, &str, &str, &str, &str)] = &[
        (
            1,
            "00000000000000000000000000000000",
            "000000000000000000000000",
            "",
            "",
            "58e2fccefa7e3061367f1d57a4e7455a",
        ),
        (
            2,
            "00000000000000000000000000000000",
            "000000000000000000000000",
            "",
            "00000000000000000000000000000000",
            "0388dace60b6a392f328c2b971b2fe78ab6e47d42cec13bdf53a67b21257bddf",
        ),
        (
            3,
            "feffe9928665731c6d6a8f9467308308",
            "cafebabefacedbaddecaf888",
            "",
            "d9313225f88406e5a55909c5aff5269a86a7a9531534f7da2e4c303d8a318a721c3c0c95956809532fcf0e2449a6b525b16aedf5aa0de657ba637b391aafd255",
            "42831ec2217774244b7221b784d0d49ce3aa212f2c02a4e035c17e2329aca12e21d514b25466931c7d8f6a5aac84aa051ba30b396a0aac973d58e091473f59854d5c2af327cd64a62cf35abd2ba6fab4",
        ),
        (
            4,
            "feffe9928665731c6d6a8f9467308308",
            "cafebabefacedbaddecaf888",
            "feedfacedeadbeeffeedfacedeadbeefabaddad2",
            "d9313225f88406e5a55909c5aff5269a86a7a9531534f7da2e4c303d8a318a721c3c0c95956809532fcf0e2449a6b525b16aedf5aa0de657ba637b39",
            "42831ec2217774244b7221b784d0d49ce3aa212f2c02a4e035c17e2329aca12e21d514b25466931c7d8f6a5aac84aa051ba30b396a0aac973d58e0915bc94fbc3221a5db94fae95ae7121a47",
        ),
        (
            13,
            "0000000000000000000000000000000000000000000000000000000000000000",
            "000000000000000000000000",
            "",
            "",
            "530f8afbc74536b9a963b4f1c4cb738b",
        ),
        (
            14,
            "0000000000000000000000000000000000000000000000000000000000000000",
            "000000000000000000000000",
            "",
            "00000000000000000000000000000000",
            "cea7403d4d606b6e074ec5d3baf39d18d0d1c8a799996bf0265b98b5d48ab919",
        ),
        (
            15,
            "feffe9928665731c6d6a8f9467308308feffe9928665731c6d6a8f9467308308",
            "cafebabefacedbaddecaf888",
            "",
            "d9313225f88406e5a55909c5aff5269a86a7a9531534f7da2e4c303d8a318a721c3c0c95956809532fcf0e2449a6b525b16aedf5aa0de657ba637b391aafd255",
            "522dc1f099567d07f47f37a32a84427d643a8cdcbfe5c0c97598a2bd2555d1aa8cb08e48590dbb3da7b08b1056828838c5f61e6393ba7a0abcc9f662898015adb094dac5d93471bdec1a502270e3cc6c",
        ),
        (
            16,
            "feffe9928665731c6d6a8f9467308308feffe9928665731c6d6a8f9467308308",
            "cafebabefacedbaddecaf888",
            "feedfacedeadbeeffeedfacedeadbeefabaddad2",
            "d9313225f88406e5a55909c5aff5269a86a7a9531534f7da2e4c303d8a318a721c3c0c95956809532fcf0e2449a6b525b16aedf5aa0de657ba637b39",
            "522dc1f099567d07f47f37a32a84427d643a8cdcbfe5c0c97598a2bd2555d1aa8cb08e48590dbb3da7b08b1056828838c5f61e6393ba7a0abcc9f66276fc6ece0f4e1768cddf8853bb2d551b",
        ),
    ];

    #[test]
    fn gcm_specification_test_cases() {
        for (case, key, nonce, aad, plain, sealed) in SPEC_CASES {
            let nonce = unhex(nonce);
            let lanes = keyed(&[unhex(key), nonce[..SALT_LEN].to_vec()].concat());
            let got = seal_and_open(&lanes, &unhex(aad), &nonce, &unhex(plain));
            assert_eq!(hex::encode(got), *sealed, "case {case}");
        }
    }

    /// draft-mcgrew-gcm-test-01's ESP cases (shared with `crypto::gcm`'s tests).
    #[test]
    fn draft_mcgrew_gcm_test_vectors() {
        for (case, key, salt, aad, iv, plain, sealed) in crate::crypto::gcm::tests::CASES {
            let lanes = keyed(&unhex(&format!("{key}{salt}")));
            let nonce = unhex(&format!("{salt}{iv}"));
            let plain = unhex(&plain.replace(' ', ""));
            let got = seal_and_open(&lanes, &unhex(aad), &nonce, &plain);
            assert_eq!(hex::encode(got), *sealed, "case {case}");
        }
    }

    /// The `aes-gcm` crate's seal of the same inputs: ciphertext || tag.
    fn reference(key: &[u8], nonce: &[u8], aad: &[u8], plain: &[u8]) -> Vec<u8> {
        let mut text = plain.to_vec();
        let nonce = Array::try_from(nonce).expect("12-byte nonce");
        let tag = if key.len() == 16 {
            aes_gcm::Aes128Gcm::new_from_slice(key)
                .expect("key")
                .encrypt_inout_detached(&nonce, aad, text.as_mut_slice().into())
        } else {
            aes_gcm::Aes256Gcm::new_from_slice(key)
                .expect("key")
                .encrypt_inout_detached(&nonce, aad, text.as_mut_slice().into())
        }
        .expect("sealing with aes-gcm");
        [text.as_slice(), &tag].concat()
    }

    /// Every length from 0 to 2,048 bytes (whole steps, whole blocks, partial blocks), AAD of 8
    /// and 12 bytes (ESN), a fresh random key and nonce each time, both key sizes: the same
    /// bytes as the `aes-gcm` crate, and a flipped bit anywhere is refused.
    #[test]
    fn equals_the_aes_gcm_crate() {
        let mut rng = StdRng::seed_from_u64(0x6c6d);
        for len in 0..=2048 {
            for aad_len in [8, 12] {
                let key_len = if len % 2 == 0 { 16 } else { 32 };
                let mut material = vec![0; key_len + SALT_LEN + 8 + aad_len + len];
                rng.fill_bytes(&mut material);
                let (key, rest) = material.split_at(key_len);
                let (salt, rest) = rest.split_at(SALT_LEN);
                let (iv, rest) = rest.split_at(8);
                let (aad, plain) = rest.split_at(aad_len);
                let lanes = keyed(&[key, salt].concat());
                let nonce = [salt, iv].concat();
                let got = seal_and_open(&lanes, aad, &nonce, plain);
                assert_eq!(
                    got,
                    reference(key, &nonce, aad, plain),
                    "len {len}, aad {aad_len}, key {key_len}"
                );
                let iv: [u8; 8] = iv.try_into().expect("8 bytes");
                let mut forged = got.clone();
                let at = (rng.next_u32() as usize) % forged.len();
                forged[at] ^= 1 << (rng.next_u32() % 8);
                let (text, tag) = forged.split_at(len);
                assert!(
                    !lanes.verify(aad, iv, text, tag),
                    "forgery at {at} of {len}"
                );
            }
        }
    }

    #[test]
    fn keys_are_aes_key_and_salt() {
        assert!(available(), "vaes and vpclmulqdq on the test machine");
        for bad in [0, 16, 19, 21, 24, 28, 35, 37] {
            assert!(LaneGcmKey::new(&vec![1; bad]).is_none(), "{bad} bytes");
        }
        assert_eq!(
            format!("{:?}", keyed(&[1; 20])),
            "LaneGcmKey { key: \"<redacted>\" }",
            "no key material"
        );
        let key = keyed(&[2; 36]);
        let mut tag = [0; TAG_LEN];
        let mut text = [0; 4];
        key.seal(&[0; 8], [0; 8], &mut text, &mut tag)
            .expect("sealing");
        assert!(!key.verify(&[0; 8], [0; 8], &text, &tag[..15]), "short tag");
    }
}
