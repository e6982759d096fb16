//! The small enums every layer shares (algorithms, modes, directions, actions).
//!
//! Each enum's command-line spelling (`as_str`, `Display`, `ALL`) is the same string serde uses, so
//! the CLI, the JSON output and the state file all spell a value one way.

use std::fmt;

use serde::{Deserialize, Serialize};

/// Implements `ALL`, `as_str` and `Display` from one table of spellings, so the three cannot drift.
macro_rules! spellings {
    ($ty:ty { $($variant:ident => $text:literal),+ $(,)? }) => {
        impl $ty {
            /// Every value with its command-line spelling, in the order help texts list them.
            pub const ALL: &'static [(Self, &'static str)] = &[$((Self::$variant, $text)),+];

            /// The command-line (and serde) spelling.
            pub const fn as_str(self) -> &'static str {
                match self {
                    $(Self::$variant => $text),+
                }
            }
        }

        impl fmt::Display for $ty {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(self.as_str())
            }
        }
    };
}

/// IPsec mode of an SA or SP.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Mode {
    Transport,
    Tunnel,
}

/// ESP encryption algorithm (`--encryption-algorithm`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum EncryptionAlgorithm {
    /// `3des-cbc`, RFC 2451.
    #[serde(rename = "3des-cbc")]
    TripleDesCbc,
    /// `aes128-cbc`, RFC 3602.
    #[serde(rename = "aes128-cbc")]
    Aes128Cbc,
    /// `null`, RFC 2410.
    #[serde(rename = "null")]
    Null,
}

/// ESP integrity algorithm (`--integrity-algorithm`). Integrity is never null.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum IntegrityAlgorithm {
    /// `hmac-sha1`: HMAC-SHA1-96, RFC 2404.
    #[serde(rename = "hmac-sha1")]
    HmacSha1,
    /// `hmac-sha2-256`: HMAC-SHA-256-128, RFC 4868.
    #[serde(rename = "hmac-sha2-256")]
    HmacSha256,
}

/// Traffic direction of an SP (`--flow-direction`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Direction {
    In,
    Out,
}

/// What an SP does with matching traffic (`--action`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Action {
    /// Pass in clear.
    None,
    /// Drop.
    Discard,
    /// Protect with the SP's SA.
    Ipsec,
}

/// Upper-layer protocol selector (`--upper-layer-protocol`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum UpperLayerProtocol {
    Any,
    Tcp,
    Udp,
    Icmp6,
}

impl UpperLayerProtocol {
    /// The IPv6 next-header value this selector names, `None` for `any`.
    pub fn next_header(self) -> Option<u8> {
        match self {
            Self::Any => None,
            Self::Tcp => Some(6),
            Self::Udp => Some(17),
            Self::Icmp6 => Some(58),
        }
    }
}

spellings!(Mode { Transport => "transport", Tunnel => "tunnel" });
spellings!(EncryptionAlgorithm {
    TripleDesCbc => "3des-cbc",
    Aes128Cbc => "aes128-cbc",
    Null => "null",
});
spellings!(IntegrityAlgorithm { HmacSha1 => "hmac-sha1", HmacSha256 => "hmac-sha2-256" });
spellings!(Direction { In => "in", Out => "out" });
spellings!(Action { None => "none", Discard => "discard", Ipsec => "ipsec" });
spellings!(UpperLayerProtocol { Tcp => "tcp", Udp => "udp", Icmp6 => "icmp6", Any => "any" });

impl EncryptionAlgorithm {
    /// Exact key length in bytes: RFC 2451 (3DES, three 8-byte keys), RFC 3602 (AES-128), none for
    /// NULL (RFC 2410).
    pub const fn key_len(self) -> usize {
        match self {
            Self::TripleDesCbc => 24,
            Self::Aes128Cbc => 16,
            Self::Null => 0,
        }
    }

    /// Cipher block size in bytes; NULL has a block size of 1 (RFC 2410 §2), ESP still pads to 4.
    pub const fn block_size(self) -> usize {
        match self {
            Self::TripleDesCbc => 8,
            Self::Aes128Cbc => 16,
            Self::Null => 1,
        }
    }

    /// Length of the explicit IV carried in each ESP payload (RFC 2451 §3, RFC 3602 §3; none for NULL).
    pub const fn iv_len(self) -> usize {
        match self {
            Self::TripleDesCbc => 8,
            Self::Aes128Cbc => 16,
            Self::Null => 0,
        }
    }
}

impl IntegrityAlgorithm {
    /// Exact key length in bytes (RFC 2404 §3: 160 bits; RFC 4868 §2.1.1: 256 bits).
    pub const fn key_len(self) -> usize {
        match self {
            Self::HmacSha1 => 20,
            Self::HmacSha256 => 32,
        }
    }

    /// Length of the truncated ICV in bytes (RFC 2404 §2: 96 bits; RFC 4868 §2.3: 128 bits).
    pub const fn icv_len(self) -> usize {
        match self {
            Self::HmacSha1 => 12,
            Self::HmacSha256 => 16,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn assert_serde_spelling<T: Serialize + fmt::Display>(all: &[(T, &str)]) {
        for (value, text) in all {
            let json = serde_json::to_string(value).expect("serialising a keyword");
            assert_eq!(json, format!("\"{text}\""), "serde spelling of {text}");
            assert_eq!(value.to_string(), *text, "display spelling of {text}");
        }
    }

    #[test]
    fn serde_and_display_spell_alike() {
        assert_serde_spelling(Mode::ALL);
        assert_serde_spelling(EncryptionAlgorithm::ALL);
        assert_serde_spelling(IntegrityAlgorithm::ALL);
        assert_serde_spelling(Direction::ALL);
        assert_serde_spelling(Action::ALL);
        assert_serde_spelling(UpperLayerProtocol::ALL);
    }

    #[test]
    fn next_headers_are_iana_numbers() {
        assert_eq!(UpperLayerProtocol::Tcp.next_header(), Some(6));
        assert_eq!(UpperLayerProtocol::Udp.next_header(), Some(17));
        assert_eq!(UpperLayerProtocol::Icmp6.next_header(), Some(58));
        assert_eq!(UpperLayerProtocol::Any.next_header(), None);
    }
}
