//! AES-CBC encryption of several packets at once with AES-NI (x86-64 only).
//!
//! Contract:
//! - CBC encryption is serial within a packet (each block needs the previous ciphertext) but
//!   independent across packets. [`encrypt_burst`] keeps [`LANES`] packets in flight, one block
//!   of each per step, so the AES unit's pipeline is full instead of waiting out the latency of
//!   every round: the gain of the multi-buffer libraries (intel-ipsec-mb's `aes_cbc_enc_128_x8`).
//! - The output is exactly CBC (SP 800-38A §6.2) of each packet under its own key and IV, so it
//!   equals the sequential path's byte for byte (tested against the `aes` + `cbc` crates).
//! - Packets of different SAs and key sizes (AES-128, AES-256) mix in one burst; a lane whose
//!   packet ends takes the next packet of the same key size at once.
//! - Only reachable after [`super::Backend::Lanes`] was detected (AES-NI present): the callers
//!   check, and so does [`LaneAesKey::new`].
//! - Round keys are wiped on drop (`ZeroizeOnDrop`); `Debug` never prints them.

use core::arch::x86_64::{
    __m128i, _mm_aesenc_si128, _mm_aesenclast_si128, _mm_aeskeygenassist_si128, _mm_loadu_si128,
    _mm_setzero_si128, _mm_shuffle_epi32, _mm_slli_si128, _mm_storeu_si128, _mm_xor_si128,
};
use std::fmt;
use zeroize::{Zeroize, ZeroizeOnDrop};

/// Packets encrypted side by side. Eight blocks in flight cover the latency of one AES round
/// (4 cycles) at two rounds per cycle, as on the Zen and Intel cores of the last decade.
pub(crate) const LANES: usize = 8;

/// AES block size, bytes.
const BLOCK: usize = 16;

/// The most round keys (AES-256: 14 rounds + the initial whitening key).
const MAX_ROUND_KEYS: usize = 15;

/// An AES-128 or AES-256 encryption key schedule for the lanes.
#[derive(Clone, Zeroize, ZeroizeOnDrop)]
pub(crate) struct LaneAesKey {
    round_keys: [[u8; BLOCK]; MAX_ROUND_KEYS],
    /// 10 (AES-128) or 14 (AES-256).
    rounds: usize,
}

impl fmt::Debug for LaneAesKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        crate::crypto::debug_redacted(f, "LaneAesKey")
    }
}

impl LaneAesKey {
    /// Schedules a 16- or 32-byte key; `None` for any other length or without AES-NI.
    pub(crate) fn new(key: &[u8]) -> Option<Self> {
        if !std::is_x86_feature_detected!("aes") || !std::is_x86_feature_detected!("sse2") {
            return None;
        }
        let mut schedule = Self {
            round_keys: [[0; BLOCK]; MAX_ROUND_KEYS],
            rounds: 0,
        };
        match key.len() {
            16 => {
                // SAFETY: AES-NI and SSE2 were detected just above.
                unsafe { expand_128(key, &mut schedule.round_keys) };
                schedule.rounds = 10;
            }
            32 => {
                // SAFETY: AES-NI and SSE2 were detected just above.
                unsafe { expand_256(key, &mut schedule.round_keys) };
                schedule.rounds = 14;
            }
            _ => return None,
        }
        Some(schedule)
    }

    /// The round keys (the first `rounds + 1` are used) and the number of rounds, for the GCM
    /// lanes, which schedule their key the same way.
    pub(super) fn round_keys(&self) -> (&[[u8; BLOCK]; MAX_ROUND_KEYS], usize) {
        (&self.round_keys, self.rounds)
    }
}

/// One packet to encrypt in place: `data` (a whole number of blocks) under `key`, chained from
/// `iv`.
pub(crate) struct CbcJob<'a> {
    pub(crate) key: &'a LaneAesKey,
    pub(crate) iv: [u8; BLOCK],
    pub(crate) data: &'a mut [u8],
}

/// Encrypts every job in place (AES-CBC). A job whose length is not a whole number of blocks
/// is left untouched and reported `false` in `done` (a caller bug, never a panic); the others
/// are `true`. `done` has one entry per job.
pub(crate) fn encrypt_burst(jobs: &mut [CbcJob<'_>], done: &mut [bool]) {
    for (job, ok) in jobs.iter().zip(done.iter_mut()) {
        *ok = job.data.len().is_multiple_of(BLOCK);
    }
    if !std::is_x86_feature_detected!("aes") {
        // No job can hold a key without AES-NI (`LaneAesKey::new`); nothing to do.
        return;
    }
    // SAFETY: AES-NI was detected just above (SSE2 is baseline on x86-64).
    unsafe {
        run::<10>(jobs, done);
        run::<14>(jobs, done);
    }
}

/// A lane's packet: where the next block is, how many are left, its key and chaining value.
#[derive(Clone, Copy)]
struct Lane {
    at: *mut u8,
    /// Bytes to step after each block: 16 for a packet, 0 for an idle lane writing scratch.
    stride: usize,
    left: usize,
    key: *const [u8; BLOCK],
    chain: __m128i,
}

/// The lanes over the jobs with `ROUNDS` rounds that `ok` marks as well formed.
#[target_feature(enable = "aes,sse2")]
unsafe fn run<const ROUNDS: usize>(jobs: &mut [CbcJob<'_>], ok: &[bool]) {
    let mut queue = jobs
        .iter_mut()
        .zip(ok)
        .filter(|(job, ok)| **ok && job.key.rounds == ROUNDS && !job.data.is_empty())
        .map(|(job, _)| job)
        .peekable();
    // Idle lanes encrypt a scratch block under the first job's key, so the step below never
    // branches per lane; the result is thrown away.
    let Some(first) = queue.peek() else {
        return;
    };
    let idle_key: *const [u8; BLOCK] = first.key.round_keys.as_ptr();
    let mut scratch = [[0u8; BLOCK]; LANES];
    let mut lanes: [Lane; LANES] = core::array::from_fn(|i| Lane {
        at: scratch[i].as_mut_ptr(),
        stride: 0,
        left: usize::MAX,
        key: idle_key,
        chain: _mm_setzero_si128(),
    });
    let mut active = 0;
    loop {
        for lane in &mut lanes {
            if lane.stride == 0
                && let Some(job) = queue.next()
            {
                // SAFETY: `iv` is 16 readable bytes.
                let chain = unsafe { _mm_loadu_si128(job.iv.as_ptr().cast()) };
                *lane = Lane {
                    at: job.data.as_mut_ptr(),
                    stride: BLOCK,
                    left: job.data.len() / BLOCK,
                    key: job.key.round_keys.as_ptr(),
                    chain,
                };
                active += 1;
            }
        }
        if active == 0 {
            return;
        }
        let steps = lanes
            .iter()
            .filter(|l| l.stride != 0)
            .map(|l| l.left)
            .min()
            .unwrap_or(0);
        for _ in 0..steps {
            // SAFETY: every active lane points at one of its job's `left` (> 0) remaining whole
            // blocks, exclusively borrowed through `jobs`; an idle lane at its own scratch
            // block; every key pointer at `MAX_ROUND_KEYS` round keys of a live schedule.
            unsafe { step::<ROUNDS>(&mut lanes) };
        }
        for lane in &mut lanes {
            if lane.stride == 0 {
                continue;
            }
            lane.left -= steps;
            if lane.left == 0 {
                lane.stride = 0;
                lane.left = usize::MAX;
                lane.at = scratch.as_mut_ptr().cast();
                lane.key = idle_key;
                active -= 1;
            }
        }
    }
}

/// One block of every lane: `c = E(k, p ^ chain)`, written back in place, then the lane moves on.
///
/// # Safety
/// AES-NI available; each lane's `at` valid for 16 bytes of reads and writes, its `key` for
/// `ROUNDS + 1` round keys.
#[inline]
#[target_feature(enable = "aes,sse2")]
unsafe fn step<const ROUNDS: usize>(lanes: &mut [Lane; LANES]) {
    let mut x: [__m128i; LANES] = [_mm_setzero_si128(); LANES];
    for (x, lane) in x.iter_mut().zip(lanes.iter()) {
        // SAFETY: the caller's contract on `at` and `key`.
        unsafe {
            let plain = _mm_loadu_si128(lane.at.cast());
            *x = _mm_xor_si128(_mm_xor_si128(plain, lane.chain), load_key(lane.key, 0));
        }
    }
    for round in 1..ROUNDS {
        for (x, lane) in x.iter_mut().zip(lanes.iter()) {
            // SAFETY: `round < ROUNDS`, within the schedule.
            *x = _mm_aesenc_si128(*x, unsafe { load_key(lane.key, round) });
        }
    }
    for (x, lane) in x.iter().zip(lanes.iter_mut()) {
        // SAFETY: the caller's contract on `at` and `key`; `at` stays inside the job's buffer
        // or one past its end after its last block (never dereferenced then: the lane idles).
        unsafe {
            let cipher = _mm_aesenclast_si128(*x, load_key(lane.key, ROUNDS));
            _mm_storeu_si128(lane.at.cast(), cipher);
            lane.chain = cipher;
            lane.at = lane.at.add(lane.stride);
        }
    }
}

/// Round key `index` of the schedule at `key`.
///
/// # Safety
/// `key` points at a schedule with more than `index` round keys.
#[inline]
#[target_feature(enable = "sse2")]
unsafe fn load_key(key: *const [u8; BLOCK], index: usize) -> __m128i {
    // SAFETY: the caller's contract.
    unsafe { _mm_loadu_si128(key.add(index).cast()) }
}

/// `key ^ key << 32 ^ key << 64 ^ key << 96 ^ assist`: one step of the AES key expansion
/// (FIPS 197 §5.2) with `assist` the broadcast `SubWord(RotWord(w)) ^ Rcon` word.
#[inline]
#[target_feature(enable = "sse2")]
fn expand_step(key: __m128i, assist: __m128i) -> __m128i {
    let mut key = key;
    key = _mm_xor_si128(key, _mm_slli_si128::<4>(key));
    key = _mm_xor_si128(key, _mm_slli_si128::<4>(key));
    key = _mm_xor_si128(key, _mm_slli_si128::<4>(key));
    _mm_xor_si128(key, assist)
}

/// The AES-128 schedule of the 16-byte `key` (FIPS 197 §5.2) into the first 11 round keys.
#[target_feature(enable = "aes,sse2")]
unsafe fn expand_128(key: &[u8], out: &mut [[u8; BLOCK]; MAX_ROUND_KEYS]) {
    macro_rules! next {
        ($k:expr, $rcon:literal) => {
            expand_step(
                $k,
                _mm_shuffle_epi32::<0xff>(_mm_aeskeygenassist_si128::<$rcon>($k)),
            )
        };
    }
    // SAFETY: the caller passes 16 bytes.
    let k0 = unsafe { _mm_loadu_si128(key.as_ptr().cast()) };
    let k1 = next!(k0, 0x01);
    let k2 = next!(k1, 0x02);
    let k3 = next!(k2, 0x04);
    let k4 = next!(k3, 0x08);
    let k5 = next!(k4, 0x10);
    let k6 = next!(k5, 0x20);
    let k7 = next!(k6, 0x40);
    let k8 = next!(k7, 0x80);
    let k9 = next!(k8, 0x1b);
    let k10 = next!(k9, 0x36);
    for (slot, k) in out
        .iter_mut()
        .zip([k0, k1, k2, k3, k4, k5, k6, k7, k8, k9, k10])
    {
        // SAFETY: `slot` is 16 writable bytes.
        unsafe { _mm_storeu_si128(slot.as_mut_ptr().cast(), k) };
    }
}

/// The AES-256 schedule of the 32-byte `key` (FIPS 197 §5.2) into all 15 round keys.
#[target_feature(enable = "aes,sse2")]
unsafe fn expand_256(key: &[u8], out: &mut [[u8; BLOCK]; MAX_ROUND_KEYS]) {
    // Even round keys take RotWord + SubWord + Rcon of the previous odd one's last word
    // (`0xff` broadcasts word 3 of the assist); odd ones take SubWord only (`0xaa`, word 2).
    macro_rules! even {
        ($prev_even:expr, $prev_odd:expr, $rcon:literal) => {
            expand_step(
                $prev_even,
                _mm_shuffle_epi32::<0xff>(_mm_aeskeygenassist_si128::<$rcon>($prev_odd)),
            )
        };
    }
    macro_rules! odd {
        ($prev_odd:expr, $even:expr) => {
            expand_step(
                $prev_odd,
                _mm_shuffle_epi32::<0xaa>(_mm_aeskeygenassist_si128::<0x00>($even)),
            )
        };
    }
    // SAFETY: the caller passes 32 bytes.
    let (k0, k1) = unsafe {
        (
            _mm_loadu_si128(key.as_ptr().cast()),
            _mm_loadu_si128(key.as_ptr().add(BLOCK).cast()),
        )
    };
    let k2 = even!(k0, k1, 0x01);
    let k3 = odd!(k1, k2);
    let k4 = even!(k2, k3, 0x02);
    let k5 = odd!(k3, k4);
    let k6 = even!(k4, k5, 0x04);
    let k7 = odd!(k5, k6);
    let k8 = even!(k6, k7, 0x08);
    let k9 = odd!(k7, k8);
    let k10 = even!(k8, k9, 0x10);
    let k11 = odd!(k9, k10);
    let k12 = even!(k10, k11, 0x20);
    let k13 = odd!(k11, k12);
    let k14 = even!(k12, k13, 0x40);
    for (slot, k) in out.iter_mut().zip([
        k0, k1, k2, k3, k4, k5, k6, k7, k8, k9, k10, k11, k12, k13, k14,
    ]) {
        // SAFETY: `slot` is 16 writable bytes.
        unsafe { _mm_storeu_si128(slot.as_mut_ptr().cast(), k) };
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use aes::cipher::{BlockModeEncrypt, KeyIvInit, block_padding::NoPadding};
    use rand::rngs::StdRng;
    use rand::{Rng, SeedableRng};

    /// The reference: RustCrypto's CBC, one packet at a time.
    fn reference(key: &[u8], iv: &[u8; 16], data: &mut [u8]) {
        let len = data.len();
        match key.len() {
            16 => cbc::Encryptor::<aes::Aes128>::new_from_slices(key, iv)
                .expect("key and iv")
                .encrypt_padded::<NoPadding>(data, len)
                .map(|_| ())
                .expect("whole blocks"),
            _ => cbc::Encryptor::<aes::Aes256>::new_from_slices(key, iv)
                .expect("key and iv")
                .encrypt_padded::<NoPadding>(data, len)
                .map(|_| ())
                .expect("whole blocks"),
        }
    }

    /// NIST SP 800-38A F.2.1 (CBC-AES128.Encrypt) and F.2.5 (CBC-AES256.Encrypt).
    #[test]
    fn sp800_38a_vectors() {
        let plain = hex::decode(
            "6bc1bee22e409f96e93d7e117393172aae2d8a571e03ac9c9eb76fac45af8e51\
             30c81c46a35ce411e5fbc1191a0a52eff69f2445df4f9b17ad2b417be66c3710",
        )
        .expect("hex");
        let iv: [u8; 16] = hex::decode("000102030405060708090a0b0c0d0e0f")
            .expect("hex")
            .try_into()
            .expect("16 bytes");
        let cases = [
            (
                "2b7e151628aed2a6abf7158809cf4f3c",
                "7649abac8119b246cee98e9b12e9197d5086cb9b507219ee95db113a917678b2\
                 73bed6b8e3c1743b7116e69e222295163ff1caa1681fac09120eca307586e1a7",
            ),
            (
                "603deb1015ca71be2b73aef0857d77811f352c073b6108d72d9810a30914dff4",
                "f58c4c04d6e5f1ba779eabfb5f7bfbd69cfc4e967edb808d679f777bc6702c7d\
                 39f23369a9d9bacfa530e26304231461b2eb05e2c39be9fcda6c19078c6a9d1b",
            ),
        ];
        for (key, expected) in cases {
            let key = LaneAesKey::new(&hex::decode(key).expect("hex")).expect("aes-ni");
            let mut data = plain.clone();
            let mut done = [false];
            encrypt_burst(
                &mut [CbcJob {
                    key: &key,
                    iv,
                    data: &mut data,
                }],
                &mut done,
            );
            assert!(done[0]);
            assert_eq!(hex::encode(&data), expected.replace(' ', ""));
        }
    }

    /// Bursts of every size up to three times the lanes, mixed lengths (empty included), mixed
    /// keys of both sizes: each packet equals RustCrypto's CBC of it.
    #[test]
    fn bursts_equal_sequential_cbc() {
        let mut rng = StdRng::seed_from_u64(7);
        let raw_keys: Vec<Vec<u8>> = [16, 32, 16, 32, 16]
            .iter()
            .map(|&len| {
                let mut k = vec![0; len];
                rng.fill_bytes(&mut k);
                k
            })
            .collect();
        let keys: Vec<LaneAesKey> = raw_keys
            .iter()
            .map(|k| LaneAesKey::new(k).expect("aes-ni"))
            .collect();
        for burst in 1..=3 * LANES {
            let mut packets = Vec::new();
            for _ in 0..burst {
                let blocks = (rng.next_u32() % 100) as usize;
                let mut data = vec![0; blocks * 16];
                rng.fill_bytes(&mut data);
                let mut iv = [0; 16];
                rng.fill_bytes(&mut iv);
                let which = (rng.next_u32() as usize) % keys.len();
                packets.push((which, iv, data));
            }
            let mut expected = packets.clone();
            for (which, iv, data) in &mut expected {
                reference(&raw_keys[*which], iv, data);
            }
            let mut jobs: Vec<CbcJob<'_>> = packets
                .iter_mut()
                .map(|(which, iv, data)| CbcJob {
                    key: &keys[*which],
                    iv: *iv,
                    data,
                })
                .collect();
            let mut done = vec![false; jobs.len()];
            encrypt_burst(&mut jobs, &mut done);
            assert!(done.iter().all(|d| *d));
            drop(jobs);
            for (i, (got, want)) in packets.iter().zip(&expected).enumerate() {
                assert_eq!(got.2, want.2, "burst {burst}, packet {i}");
            }
        }
    }

    #[test]
    fn ragged_lengths_are_refused_and_left_alone() {
        let key = LaneAesKey::new(&[7; 16]).expect("aes-ni");
        let mut bad = vec![1u8; 17];
        let mut good = vec![2u8; 32];
        let mut jobs = [
            CbcJob {
                key: &key,
                iv: [0; 16],
                data: &mut bad,
            },
            CbcJob {
                key: &key,
                iv: [0; 16],
                data: &mut good,
            },
        ];
        let mut done = [true, false];
        encrypt_burst(&mut jobs, &mut done);
        assert_eq!(done, [false, true]);
        assert_eq!(bad, vec![1u8; 17]);
        assert_ne!(good, vec![2u8; 32]);
        assert!(LaneAesKey::new(&[0; 24]).is_none(), "aes192 is not offered");
        assert_eq!(
            format!("{key:?}"),
            "LaneAesKey { key: \"<redacted>\" }",
            "no key material"
        );
    }
}
