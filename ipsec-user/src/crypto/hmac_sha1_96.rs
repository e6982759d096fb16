//! `hmac-sha1`: HMAC-SHA1-96, RFC 2404.
//!
//! HMAC-SHA1 (RFC 2104) truncated to its leftmost 96 bits, built on the generic
//! `super::hmac_truncated`. `sha1` picks SHA-NI at run time where the CPU has it.

use super::hmac_truncated::{HmacSpec, HmacTruncated};

/// The parameters of HMAC-SHA1-96.
#[derive(Debug)]
pub struct Sha1_96;

impl HmacSpec for Sha1_96 {
    type Mac = hmac::Hmac<sha1::Sha1>;
    const NAME: &'static str = "hmac-sha1";
    const DEBUG_NAME: &'static str = "HmacSha1_96";
    /// RFC 2404 §3 uses a 160-bit key; the spec makes it exact.
    const KEY_LEN: usize = 20;
    /// 96 bits, RFC 2404 §2.
    const ICV_LEN: usize = 12;
}

/// HMAC-SHA1-96 keyed for one SA.
pub type HmacSha1_96 = HmacTruncated<Sha1_96>;

#[cfg(test)]
mod tests {
    use super::*;
    use crate::crypto::Integrity;
    use crate::crypto::hmac_truncated::checks;

    /// RFC 2202 §3, the HMAC-SHA1 of test cases 1 to 7 (`checks::rfc_inputs`).
    const RFC2202: [&str; 7] = [
        "b617318655057264e28bc0b6fb378c8ef146be00",
        "effcdf6ae5eb2fa2d27416d5f184df9c259a7c79",
        "125d7342b9ac11cd91a39af48aa17b4f63f175d3",
        "4c9007f4026250c6bc8414f9bf50c86c2d7235da",
        "4c1a03424b55e07fe7f27be1d58bb9324a9a5a04",
        "aa4ae5e15272d00e95705637ce8a3b55ed402112",
        "e8e99d0f45237d786d6bbaa7965c7808bbff1a91",
    ];

    #[test]
    fn rfc2202_vectors_and_96_bit_truncation() {
        let case7 = b"Test Using Larger Than Block-Size Key and Larger Than One Block-Size Data";
        // Every digest here is the full 160 bits; the ICV is the leftmost 96 (24 hex digits).
        assert!(RFC2202.iter().all(|digest| digest.len() == 40));
        checks::vectors::<Sha1_96>("RFC 2202", checks::rfc_inputs(80, case7), &RFC2202);
    }

    /// RFC 2202 case 5 prints the 96-bit truncation itself.
    #[test]
    fn rfc2202_case5_digest_96() {
        let mac = HmacSha1_96::new(&[0x0c; 20]).expect("keying HMAC-SHA1");
        let icv = mac.compute(b"Test With Truncation");
        assert_eq!(hex::encode(icv), "4c1a03424b55e07fe7f27be1");
    }

    #[test]
    fn verify_rejects_any_change_and_wrong_lengths() {
        checks::rejects_changes::<Sha1_96>();
        assert!(HmacSha1_96::new(&[0; 32]).is_err());
    }
}
