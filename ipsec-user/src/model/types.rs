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
    /// `aes256-cbc`, RFC 3602 with a 256-bit key (§2.4).
    #[serde(rename = "aes256-cbc")]
    Aes256Cbc,
    /// `aes128-gcm`: AES-GCM with a 16-octet ICV, RFC 4106 (combined mode: no integrity option).
    #[serde(rename = "aes128-gcm")]
    Aes128Gcm,
    /// `aes256-gcm`: as `aes128-gcm` with a 256-bit key.
    #[serde(rename = "aes256-gcm")]
    Aes256Gcm,
}

/// ESP integrity algorithm (`--integrity-algorithm`). Integrity is never null: `none` only
/// stands for the integrity a combined-mode cipher (AES-GCM) provides by itself, and is never
/// accepted on the command line.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum IntegrityAlgorithm {
    /// `hmac-sha1`: HMAC-SHA1-96, RFC 2404.
    #[serde(rename = "hmac-sha1")]
    HmacSha1,
    /// `hmac-sha2-256`: HMAC-SHA-256-128, RFC 4868.
    #[serde(rename = "hmac-sha2-256")]
    HmacSha256,
    /// `none`: the SA's cipher authenticates by itself (AES-GCM, RFC 4106 §2).
    #[serde(rename = "none")]
    None,
}

/// RFC 4106 §8's warning about AES-GCM with a static key, as `sa add --help`, the CLI (after
/// adding such an SA) and the daemon's log print it.
pub const GCM_STATIC_KEY_WARNING: &str = "rfc 4106 §8: aes-gcm fails catastrophically if an iv ever repeats under one key, and rfc 4106 does not intend it for statically configured keys. xipsec never repeats an iv under a key on this host (it keeps a per-key iv high-water mark in its state directory, across sa removal, re-adding under any name or spi, and restarts), but it cannot stop the peer, or another host given the same key, from doing so: give each sa (each direction) its own key, never copy a state directory, and prefer keys negotiated by ikev2";

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
    Aes256Cbc => "aes256-cbc",
    Aes128Gcm => "aes128-gcm",
    Aes256Gcm => "aes256-gcm",
    Null => "null",
});
spellings!(IntegrityAlgorithm {
    HmacSha1 => "hmac-sha1",
    HmacSha256 => "hmac-sha2-256",
    None => "none",
});
spellings!(Direction { In => "in", Out => "out" });
spellings!(Action { None => "none", Discard => "discard", Ipsec => "ipsec" });
spellings!(UpperLayerProtocol { Tcp => "tcp", Udp => "udp", Icmp6 => "icmp6", Any => "any" });

impl EncryptionAlgorithm {
    /// Exact key length in bytes: RFC 2451 (3DES, three 8-byte keys), RFC 3602 (AES-128 and
    /// AES-256), RFC 4106 §8.1 (the AES key followed by a 4-byte salt), none for NULL (RFC 2410).
    pub const fn key_len(self) -> usize {
        match self {
            Self::TripleDesCbc => 24,
            Self::Aes128Cbc => 16,
            Self::Aes256Cbc => 32,
            Self::Aes128Gcm => 16 + 4,
            Self::Aes256Gcm => 32 + 4,
            Self::Null => 0,
        }
    }

    /// Cipher block size in bytes; NULL has a block size of 1 (RFC 2410 §2) and GCM is a
    /// stream (RFC 4106 §3.2: padding only to 4 bytes); ESP pads to at least 4.
    pub const fn block_size(self) -> usize {
        match self {
            Self::TripleDesCbc => 8,
            Self::Aes128Cbc | Self::Aes256Cbc => 16,
            Self::Aes128Gcm | Self::Aes256Gcm => 4,
            Self::Null => 1,
        }
    }

    /// Length of the explicit IV carried in each ESP payload (RFC 2451 §3, RFC 3602 §3,
    /// RFC 4106 §3.1; none for NULL).
    pub const fn iv_len(self) -> usize {
        match self {
            Self::TripleDesCbc | Self::Aes128Gcm | Self::Aes256Gcm => 8,
            Self::Aes128Cbc | Self::Aes256Cbc => 16,
            Self::Null => 0,
        }
    }

    /// Combined mode (RFC 4303 §3.3.2.2): the cipher authenticates too, so the SA has no
    /// integrity algorithm (`IntegrityAlgorithm::None`).
    pub const fn is_combined(self) -> bool {
        matches!(self, Self::Aes128Gcm | Self::Aes256Gcm)
    }

    /// Whether an IV must never repeat under one key (GCM's counter IV, RFC 4106 §3.1 and §8),
    /// as opposed to CBC's random IV.
    pub const fn needs_unique_iv(self) -> bool {
        self.is_combined()
    }
}

impl IntegrityAlgorithm {
    /// Exact key length in bytes (RFC 2404 §3: 160 bits; RFC 4868 §2.1.1: 256 bits).
    pub const fn key_len(self) -> usize {
        match self {
            Self::HmacSha1 => 20,
            Self::HmacSha256 => 32,
            Self::None => 0,
        }
    }

    /// Length of the truncated ICV in bytes (RFC 2404 §2: 96 bits; RFC 4868 §2.3: 128 bits);
    /// `none` adds none (the combined-mode cipher's own ICV is the cipher's).
    pub const fn icv_len(self) -> usize {
        match self {
            Self::HmacSha1 => 12,
            Self::HmacSha256 => 16,
            Self::None => 0,
        }
    }

    /// The values `--integrity-algorithm` accepts: every one but `none`.
    pub const SELECTABLE: &'static [(Self, &'static str)] = &[
        (Self::HmacSha1, "hmac-sha1"),
        (Self::HmacSha256, "hmac-sha2-256"),
    ];
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
