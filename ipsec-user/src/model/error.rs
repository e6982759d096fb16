//! `ModelError`: every way a command or a loaded state can be rejected.
//!
//! Each message is one lowercase line with no trailing period. It starts with the option at fault
//! and says what is allowed, because the CLI prints it verbatim after `error: `. Values the user
//! typed are escaped and shortened (see `shown`) so a message stays one line; keys are never
//! echoed. The CLI test table pins these texts, and so does the table at the end of this file:
//! change them deliberately.

use std::fmt::Write as _;

use ipnet::Ipv6Net;
use thiserror::Error;

use super::types::Mode;

/// How many policy names a message lists before it says "and N more".
const LISTED_NAMES: usize = 5;

/// Why a command (or a loaded state) was rejected. The model is unchanged whenever one is returned.
#[derive(Clone, Debug, PartialEq, Eq, Error)]
pub enum ModelError {
    /// A required option was not given.
    #[error("{option}: required; {allowed}")]
    Missing {
        option: &'static str,
        allowed: &'static str,
    },

    /// A value that does not parse as anything the option accepts.
    #[error("{option}: '{value}' is not valid; {allowed}")]
    Invalid {
        option: &'static str,
        value: String,
        allowed: &'static str,
    },

    /// SPIs 0-255 are reserved (RFC 4303 §2.1).
    #[error("--sa-spi: 0x{spi:x} is reserved (0x0-0xff); use 0x100 to 0xffffffff")]
    ReservedSpi { spi: u32 },

    /// (protocol, SPI) identifies an inbound SA, and ESP is our only protocol.
    #[error("--sa-spi: 0x{spi:x} is already used by sa '{sa}'; each sa needs its own spi")]
    SpiInUse { spi: u32, sa: String },

    /// A tunnel needs real endpoints to put in the outer header.
    #[error("{option}: any is allowed in transport mode only; give an ipv6 address for tunnel mode")]
    AnyInTunnel { option: &'static str },

    /// NULL encryption (RFC 2410) has no key.
    #[error("--encryption-key: not allowed with --encryption-algorithm null; omit it")]
    KeyWithNull,

    /// The algorithm needs a key and none was given.
    #[error(
        "{option}: required with {algorithm}; give {len} bytes as 0x followed by {hex} hex digits, or {len} ascii characters",
        hex = .len * 2
    )]
    KeyMissing {
        option: &'static str,
        algorithm: &'static str,
        len: usize,
    },

    /// The key has the wrong length for its algorithm.
    #[error(
        "{option}: {algorithm} needs a {len}-byte key, got {actual} bytes; give 0x followed by {hex} hex digits, or {len} ascii characters",
        hex = .len * 2
    )]
    KeyLength {
        option: &'static str,
        algorithm: &'static str,
        len: usize,
        actual: usize,
    },

    /// The key is neither `0x` + an even number of hex digits nor printable ASCII.
    #[error(
        "{option}: {reason}; use 0x followed by an even number of hex digits, or printable ascii text"
    )]
    BadKey {
        option: &'static str,
        reason: &'static str,
    },

    /// RFC 2451 §2.3: with K1 = K2 or K2 = K3, 3DES degenerates to single DES.
    #[error(
        "--encryption-key: 3des-cbc needs three different 8-byte keys (k1 != k2 and k2 != k3)"
    )]
    WeakTripleDesKey,

    /// Names identify SAs and SPs, so they are unique per kind.
    #[error("{option}: {kind} '{name}' already exists; names are unique")]
    NameInUse {
        option: &'static str,
        kind: &'static str,
        name: String,
    },

    /// `sp add --sa-name` names an SA that does not exist.
    #[error("--sa-name: no sa named '{name}'; add it first with sa add")]
    UnknownSa { name: String },

    /// `remove` names an SA or SP that does not exist.
    #[error("{option}: no {kind} named '{name}'; see {kind} list")]
    NotFound {
        option: &'static str,
        kind: &'static str,
        name: String,
    },

    /// `sa remove --sa-source --sa-destination --sa-spi` matches no SA.
    #[error(
        "--sa-spi: no sa with source {sa_source}, destination {sa_destination} and spi 0x{spi:x}; see sa list"
    )]
    NoSuchSa {
        sa_source: String,
        sa_destination: String,
        spi: u32,
    },

    /// The SA to remove is referenced by policies.
    #[error("{option}: sa '{sa}' is used by {}; remove those policies first", list_sps(.sps))]
    SaInUse {
        option: &'static str,
        sa: String,
        sps: Vec<String>,
    },

    /// `sa remove --remove-all` while some SAs are referenced: nothing is removed.
    #[error("--remove-all: nothing removed; {}; remove those policies first", list_holders(.held))]
    SasInUse { held: Vec<(String, Vec<String>)> },

    /// Two ways of identifying what to remove were given at once.
    #[error("{option}: cannot be combined with {other}; use one of them")]
    RemoveConflict {
        option: &'static str,
        other: &'static str,
    },

    /// A bare address where a prefix is expected: we never guess the length.
    #[error(
        "{option}: '{value}' has no prefix length; add /128 for a single host ({value}/128) or give ADDR/LEN"
    )]
    PrefixWithoutLength { option: &'static str, value: String },

    /// Bits set beyond the prefix length (`2001:db8::1/64`).
    #[error("{option}: '{value}' has host bits set beyond /{}; did you mean {corrected}", .corrected.prefix_len())]
    HostBits {
        option: &'static str,
        value: String,
        corrected: Ipv6Net,
    },

    /// A port selector without a protocol that has ports.
    #[error(
        "{option}: a port needs --upper-layer-protocol tcp, udp or icmp6; with protocol any use any"
    )]
    PortNeedsProtocol { option: &'static str },

    /// ICMPv6 has no source port; its type is the destination-port selector (RFC 4301 §4.4.1.1).
    #[error(
        "--source-port: must be any with --upper-layer-protocol icmp6; the icmpv6 type goes in --destination-port"
    )]
    SourcePortWithIcmp6,

    /// An ICMPv6 type is one byte.
    #[error(
        "--destination-port: icmpv6 type {value} is out of range; use 0 to 255 or any with --upper-layer-protocol icmp6"
    )]
    IcmpTypeRange { value: u16 },

    /// `--action ipsec` needs an SA to protect with.
    #[error(
        "--sa-name: required with --action ipsec; give an existing sa, or use --action none or discard"
    )]
    SaRequired,

    /// `--sp-mode` disagrees with the SA's mode.
    #[error("--sp-mode: {sp_mode} does not match sa '{sa}' ({sa_mode}); omit --sp-mode or give {sa_mode}")]
    ModeMismatch {
        sp_mode: Mode,
        sa: String,
        sa_mode: Mode,
    },

    /// Identical selector, direction and priority: precedence between the two would be arbitrary.
    #[error(
        "--sp-name: same selector, direction and priority as sp '{existing}'; remove sp '{existing}' or give a different --priority"
    )]
    DuplicateSelector { existing: String },

    /// The kernel maps are sized for `max` entries.
    #[error("{option}: cannot add another {kind}; the limit of {max} {kind}s is reached, remove one first")]
    Limit {
        option: &'static str,
        kind: &'static str,
        max: u32,
    },

    /// A loaded state breaks an invariant; `what` names the record.
    #[error("state: {what}: {reason}")]
    InvalidState { what: String, reason: String },
}

impl ModelError {
    /// An `InvalidState` for record `what`, with any message as the reason.
    pub(crate) fn state(what: impl Into<String>, reason: impl ToString) -> Self {
        Self::InvalidState {
            what: what.into(),
            reason: reason.to_string(),
        }
    }
}

/// A user-typed value fit for a one-line message: control characters and quotes escaped, at most
/// 64 characters kept.
pub(crate) fn shown(value: &str) -> String {
    const KEEP: usize = 64;
    let mut out: String = value.chars().take(KEEP).flat_map(char::escape_debug).collect();
    if value.chars().nth(KEEP).is_some() {
        out.push_str("...");
    }
    out
}

/// `sp 'a', 'b' and 3 more`.
fn list_sps(sps: &[String]) -> String {
    let mut out = String::from("sp ");
    for (i, sp) in sps.iter().take(LISTED_NAMES).enumerate() {
        if i > 0 {
            out.push_str(", ");
        }
        let _ = write!(out, "'{sp}'");
    }
    if sps.len() > LISTED_NAMES {
        let _ = write!(out, " and {} more", sps.len() - LISTED_NAMES);
    }
    out
}

/// `sa 'a' is used by sp 'x'; sa 'b' is used by sp 'y', 'z'`.
fn list_holders(held: &[(String, Vec<String>)]) -> String {
    let mut out = String::new();
    for (i, (sa, sps)) in held.iter().take(LISTED_NAMES).enumerate() {
        if i > 0 {
            out.push_str("; ");
        }
        let _ = write!(out, "sa '{sa}' is used by {}", list_sps(sps));
    }
    if held.len() > LISTED_NAMES {
        let _ = write!(out, "; and {} more sas", held.len() - LISTED_NAMES);
    }
    out
}
