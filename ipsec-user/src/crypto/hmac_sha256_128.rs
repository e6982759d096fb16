//! `hmac-sha2-256`: HMAC-SHA-256-128, RFC 4868.
//!
//! HMAC-SHA-256 (RFC 2104, FIPS 180-4) truncated to its leftmost 128 bits (RFC 4868 §2.3), built
//! on the generic `super::hmac_truncated`. `sha2` picks SHA-NI (x86) or the `ARMv8` SHA2
//! instructions at run time.

use super::hmac_truncated::{HmacSpec, HmacTruncated};

/// The parameters of HMAC-SHA-256-128.
#[derive(Debug)]
pub struct Sha256_128;

impl HmacSpec for Sha256_128 {
    type Mac = hmac::Hmac<sha2::Sha256>;
    const NAME: &'static str = "hmac-sha2-256";
    const DEBUG_NAME: &'static str = "HmacSha256_128";
    /// RFC 4868 §2.1.1 fixes the key at the output size, 256 bits.
    const KEY_LEN: usize = 32;
    /// 128 bits, RFC 4868 §2.3.
    const ICV_LEN: usize = 16;
}

/// HMAC-SHA-256-128 keyed for one SA.
pub type HmacSha256_128 = HmacTruncated<Sha256_128>;

#[cfg(test)]
mod tests {
    use super::*;
    use crate::crypto::Integrity;
    use crate::crypto::hmac_truncated::checks;

    /// RFC 4231 §4, the HMAC-SHA-256 of test cases 1 to 7 (`checks::rfc_inputs`); the RFC
    /// itself prints case 5 truncated to 128 bits.
    const RFC4231: [&str; 7] = [
        "b0344c61d8db38535ca8afceaf0bf12b881dc200c9833da726e9376c2e32cff7",
        "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843",
        "773ea91e36800e46854db8ebd09181a72959098b3ef8c122d9635514ced565fe",
        "82558a389a443c0ea4cc819899f2083a85f0faa3e578f8077a2e3ff46729665b",
        "a3b6167473100ee06e0c796c2955552b",
        "60e431591ee0b67f0d8a26aacbf5b77f8e0bc6213728c5140546040f0ee37f54",
        "9b09ffa71b942fcb27635fbcd5b0e944bfdc63644f0713938a7f51535c3a35e2",
    ];

    #[test]
    fn rfc4231_vectors_and_128_bit_truncation() {
        let case7 =
            b"This is a test using a larger than block-size key and a larger than block-size \
                      data. The key needs to be hashed before being used by the HMAC algorithm.";
        checks::vectors::<Sha256_128>("RFC 4231", checks::rfc_inputs(131, case7), &RFC4231);
    }

    /// RFC 4868 §2.7.2.1, AUTH256-1 and AUTH256-2: 32-byte keys, 128-bit ICVs.
    #[test]
    fn rfc4868_auth256_vectors() {
        let cases: [(&[u8], &[u8], &str); 2] = [
            (&[0x0b; 32], b"Hi There", "198a607eb44bfbc69903a0f1cf2bbdc5"),
            (
                b"JefeJefeJefeJefeJefeJefeJefeJefe",
                b"what do ya want for nothing?",
                "167f928588c5cc2eef8e3093caa0e87c",
            ),
        ];
        for (key, data, icv) in cases {
            let mac = HmacSha256_128::new(key).expect("keying HMAC-SHA-256");
            assert_eq!(mac.icv_len(), 16);
            assert_eq!(hex::encode(mac.compute(data)), icv);
        }
    }

    #[test]
    fn verify_rejects_any_change_and_wrong_lengths() {
        checks::rejects_changes::<Sha256_128>();
        assert!(HmacSha256_128::new(&[0; 20]).is_err());
    }
}
