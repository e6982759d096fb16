//! GHASH (NIST SP 800-38D §6.4) with carry-less multiplication, eight blocks per reduction.
//!
//! Contract:
//! - Values live in GCM's bit order with their bytes reflected (one `pshufb`), the way Intel's
//!   white paper and the Linux kernel's `aes-gcm-avx10` do it: the hash key is preprocessed once
//!   (shifted left one bit, reduced by `0xc2 << 120 | 1`, BoringSSL's "twist") so that a
//!   carry-less product of a data block and a key power, reduced with two more multiplications
//!   by `0xc2 << 56`, is the field product with no shift left over.
//! - [`GhashKey`] holds H^1 to H^8: [`update`] multiplies the eight blocks of a group by H^8 to
//!   H^1 and adds the products before one reduction (aggregated reduction), so the serial
//!   dependency is one multiplication per eight blocks, not per block.
//! - [`update`] takes 256-bit vectors of two blocks (VPCLMULQDQ); [`mul`] is the 128-bit product
//!   for single blocks (AAD, lengths, key powers).
//! - Every function is `#[target_feature]`: callers reach them only after
//!   `gcm_lanes::available` detected AVX2, PCLMULQDQ and VPCLMULQDQ.
//! - Key powers are wiped on drop (`ZeroizeOnDrop`).

use core::arch::x86_64::{
    __m128i, __m256i, _mm_clmulepi64_si128, _mm_loadu_si128, _mm_set_epi64x, _mm_shuffle_epi32,
    _mm_storeu_si128, _mm_xor_si128, _mm256_castsi256_si128, _mm256_clmulepi64_epi128,
    _mm256_extracti128_si256, _mm256_loadu_si256, _mm256_setzero_si256, _mm256_xor_si256,
    _mm256_zextsi128_si256,
};
use zeroize::{Zeroize, ZeroizeOnDrop};

/// Blocks per aggregated reduction, and so the powers of H kept.
pub(super) const GROUP: usize = 8;

/// `x^128 = x^7 + x^2 + x + 1` in reflected order: `0xc2 << 56` in the high 64 bits (the low
/// half, 1, is only used by the key twist).
const POLY: u128 = 0xc200_0000_0000_0000_0000_0000_0000_0001;

/// The hash key's powers, preprocessed.
#[derive(Clone, Zeroize, ZeroizeOnDrop)]
pub(super) struct GhashKey {
    /// H^8, H^7, ..., H^1, then a zero block: block `j` of a group of `n` multiplies entry
    /// `GROUP - n + j`, so two adjacent blocks load their two powers as one 256-bit vector, and
    /// the unused second half of an odd group meets the zero block.
    descending: [[u8; 16]; GROUP + 1],
}

impl GhashKey {
    /// The powers of `h` = E(K, 0^128) (SP 800-38D §6.4), as it comes out of the cipher.
    #[target_feature(enable = "sse2,pclmulqdq")]
    pub(super) fn new(h: [u8; 16]) -> Self {
        // Reflect the bytes, then multiply by x in the reflected field: shift left one bit and
        // reduce what falls out of the top.
        let reflected = u128::from_be_bytes(h);
        let twisted = (reflected << 1) ^ if reflected >> 127 == 1 { POLY } else { 0 };
        let h1 = load(&twisted.to_le_bytes());
        let mut descending = [[0; 16]; GROUP + 1];
        let mut power = h1;
        for slot in descending[..GROUP].iter_mut().rev() {
            store(slot, power);
            power = mul(power, h1);
        }
        Self { descending }
    }

    /// H^1 (preprocessed).
    #[target_feature(enable = "sse2")]
    pub(super) fn h1(&self) -> __m128i {
        load(&self.descending[GROUP - 1])
    }

    /// The powers of blocks `2 * pair` and `2 * pair + 1` of a group of `n` blocks.
    #[inline]
    #[target_feature(enable = "avx2")]
    fn pair(&self, n: usize, pair: usize) -> __m256i {
        let at = (GROUP - n + 2 * pair) * 16;
        let bytes: &[u8; 32] = self.descending.as_flattened()[at..at + 32]
            .try_into()
            .expect("two blocks of the table");
        // SAFETY: `bytes` is 32 readable bytes.
        unsafe { _mm256_loadu_si256(bytes.as_ptr().cast()) }
    }
}

impl std::fmt::Debug for GhashKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        crate::crypto::debug_redacted(f, "GhashKey")
    }
}

/// 16 bytes as a vector.
#[inline]
#[target_feature(enable = "sse2")]
pub(super) fn load(bytes: &[u8; 16]) -> __m128i {
    // SAFETY: `bytes` is 16 readable bytes; the load is unaligned.
    unsafe { _mm_loadu_si128(bytes.as_ptr().cast()) }
}

/// A vector into 16 bytes.
#[inline]
#[target_feature(enable = "sse2")]
pub(super) fn store(bytes: &mut [u8; 16], value: __m128i) {
    // SAFETY: `bytes` is 16 writable bytes; the store is unaligned.
    unsafe { _mm_storeu_si128(bytes.as_mut_ptr().cast(), value) }
}

/// Reduces the 256-bit product `hi:mi:lo` (`lo` bits 0-127, `mi` 64-191, `hi` 128-255) to a
/// field element: two folds of 64 bits each by `0xc2 << 56` (the kernel's `_ghash_reduce`).
#[inline]
#[target_feature(enable = "sse2,pclmulqdq")]
fn reduce(lo: __m128i, mi: __m128i, hi: __m128i) -> __m128i {
    let poly = _mm_set_epi64x(0xc200_0000_0000_0000_u64.cast_signed(), 1);
    let fold = _mm_clmulepi64_si128::<0x01>(poly, lo);
    let mi = _mm_xor_si128(_mm_xor_si128(mi, _mm_shuffle_epi32::<0x4e>(lo)), fold);
    let fold = _mm_clmulepi64_si128::<0x01>(poly, mi);
    _mm_xor_si128(_mm_xor_si128(hi, _mm_shuffle_epi32::<0x4e>(mi)), fold)
}

/// `a * b` in the field, `b` a preprocessed key power (the product of two key powers is the
/// preprocessed power of their product).
#[inline]
#[target_feature(enable = "sse2,pclmulqdq")]
pub(super) fn mul(a: __m128i, b: __m128i) -> __m128i {
    let lo = _mm_clmulepi64_si128::<0x00>(a, b);
    let mi = _mm_xor_si128(
        _mm_clmulepi64_si128::<0x01>(a, b),
        _mm_clmulepi64_si128::<0x10>(a, b),
    );
    let hi = _mm_clmulepi64_si128::<0x11>(a, b);
    reduce(lo, mi, hi)
}

/// GHASH of `n` (1..=[`GROUP`]) reflected blocks, two per vector (block `j` in half `j % 2` of
/// `blocks[j / 2]`; halves past `n` are ignored), continuing from `acc`:
/// `(acc + b0) H^n + b1 H^(n-1) + ... + b(n-1) H`, with one reduction.
#[inline]
#[target_feature(enable = "avx2,pclmulqdq,vpclmulqdq")]
pub(super) fn update(key: &GhashKey, acc: __m128i, blocks: &[__m256i; 4], n: usize) -> __m128i {
    let mut lo = _mm256_setzero_si256();
    let mut mi = _mm256_setzero_si256();
    let mut hi = _mm256_setzero_si256();
    for (pair, block) in blocks.iter().enumerate().take(n.div_ceil(2)) {
        let data = if pair == 0 {
            _mm256_xor_si256(*block, _mm256_zextsi128_si256(acc))
        } else {
            *block
        };
        let power = key.pair(n, pair);
        lo = _mm256_xor_si256(lo, _mm256_clmulepi64_epi128::<0x00>(data, power));
        mi = _mm256_xor_si256(mi, _mm256_clmulepi64_epi128::<0x01>(data, power));
        mi = _mm256_xor_si256(mi, _mm256_clmulepi64_epi128::<0x10>(data, power));
        hi = _mm256_xor_si256(hi, _mm256_clmulepi64_epi128::<0x11>(data, power));
    }
    reduce(fold(lo), fold(mi), fold(hi))
}

/// The sum of a vector's two halves.
#[inline]
#[target_feature(enable = "avx2")]
fn fold(v: __m256i) -> __m128i {
    _mm_xor_si128(_mm256_castsi256_si128(v), _mm256_extracti128_si256::<1>(v))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The product the schoolbook way (SP 800-38D §6.3, Algorithm 1), on unreflected blocks.
    fn reference_mul(left: u128, right: u128) -> u128 {
        const R: u128 = 0xe1 << 120;
        let (mut product, mut shifted) = (0u128, right);
        for bit in 0..128 {
            if (left >> (127 - bit)) & 1 == 1 {
                product ^= shifted;
            }
            shifted = if shifted & 1 == 1 {
                (shifted >> 1) ^ R
            } else {
                shifted >> 1
            };
        }
        product
    }

    fn reflected(block: u128) -> __m128i {
        // SAFETY: `gcm_lanes::available` holds on the machines these tests run on (checked in
        // `powers_and_groups_equal_the_schoolbook_product`).
        unsafe { load(&block.to_le_bytes()) }
    }

    fn unreflected(value: __m128i) -> u128 {
        let mut bytes = [0; 16];
        // SAFETY: as in `reflected`.
        unsafe { store(&mut bytes, value) };
        u128::from_le_bytes(bytes)
    }

    /// Every power and every group size against Algorithm 1 of SP 800-38D.
    #[test]
    fn powers_and_groups_equal_the_schoolbook_product() {
        assert!(super::super::gcm_lanes::available(), "vaes and vpclmulqdq");
        let h = 0x66e9_4bd4_ef8a_2c3b_884c_fa59_ca34_2b2e_u128;
        // SAFETY: detected just above.
        let key = unsafe { GhashKey::new(h.to_be_bytes()) };
        let blocks: Vec<u128> = (1..=8u128)
            .map(|i| i.wrapping_mul(0x9e37_79b9_7f4a_7c15_f39c_c060_5ced_c835))
            .collect();
        for n in 1..=GROUP {
            let mut expected = 0x0123_4567_89ab_cdef_0f1e_2d3c_4b5a_6978_u128;
            let acc = reflected(expected);
            for block in &blocks[..n] {
                expected = reference_mul(expected ^ block, h);
            }
            let mut bytes = [0u8; 128];
            for (j, block) in blocks[..n].iter().enumerate() {
                bytes[16 * j..16 * j + 16].copy_from_slice(&block.to_le_bytes());
            }
            // SAFETY: detected just above; `bytes` holds four 32-byte vectors.
            let got = unsafe {
                let vectors: [__m256i; 4] =
                    core::array::from_fn(|i| _mm256_loadu_si256(bytes[32 * i..].as_ptr().cast()));
                update(&key, acc, &vectors, n)
            };
            assert_eq!(unreflected(got), expected, "group of {n}");
        }
    }
}
