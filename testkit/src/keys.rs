//! The workspace's fixed test keys, as hex without `0x`: the source document's example keys
//! (the IPv6 Ready Logo test keys) and one fixed key for each algorithm the example does not
//! use. Tests that mean "the example's SA" or "some valid key" take them from here.

/// 3des-cbc: "ipv6readylogo3descbcout2", the source document's `sa add` example.
pub const SPEC_3DES: &str = "6970763672656164796c6f676f336465736362636f757432";
/// hmac-sha1: "ipv6readylogsha1out2", the same example.
pub const SPEC_SHA1: &str = "6970763672656164796c6f67736861316f757432";
/// aes128-cbc: the bytes 0x00 to 0x0f.
pub const AES128: &str = "000102030405060708090a0b0c0d0e0f";
/// hmac-sha2-256: the bytes 0xa0 to 0xbf.
pub const SHA256: &str = "a0a1a2a3a4a5a6a7a8a9aaabacadaeafb0b1b2b3b4b5b6b7b8b9babbbcbdbebf";
