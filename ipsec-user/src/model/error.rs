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

use super::types::{Direction, Mode};

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
    #[error(
        "{option}: any is allowed in transport mode only; give an ipv6 address for tunnel mode"
    )]
    AnyInTunnel { option: &'static str },

    /// NULL encryption (RFC 2410) has no key.
    #[error("--encryption-key: not allowed with --encryption-algorithm null; omit it")]
    KeyWithNull,

    /// AES-GCM (RFC 4106) authenticates by itself: an integrity algorithm or key beside it is
    /// refused rather than ignored.
    #[error(
        "{option}: not allowed with --encryption-algorithm {encryption}, which authenticates by itself (rfc 4106); omit it"
    )]
    IntegrityWithCombined {
        option: &'static str,
        encryption: &'static str,
    },

    /// Two AES-GCM SAs with one AES key: their IV counters are independent (and the peer's
    /// too, for a key used in both directions), so an IV would repeat under the key, which
    /// RFC 4106 §8 calls fatal. The key is never echoed.
    #[error(
        "--encryption-key: this aes-gcm key is already used by sa '{sa}'; give every aes-gcm sa (each direction) its own key (rfc 4106 §8: an iv repeated under a key is fatal)"
    )]
    GcmKeyInUse { sa: String },

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
    #[error("--encryption-key: 3des-cbc needs three different 8-byte keys (k1 != k2 and k2 != k3)")]
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
    #[error(
        "--sp-mode: {sp_mode} does not match sa '{sa}' ({sa_mode}); omit --sp-mode or give {sa_mode}"
    )]
    ModeMismatch {
        sp_mode: Mode,
        sa: String,
        sa_mode: Mode,
    },

    /// An SA protects one direction (RFC 4301 §4.1: a pair of SAs, one per direction, protects
    /// a two-way flow). Named from both directions, an SA would accept our own outbound ESP
    /// reflected back to us as authentic inbound traffic.
    #[error(
        "--sa-name: sa '{sa}' is already used by sp '{other_sp}' (direction {other_direction}); an sa protects one direction only (RFC 4301 §4.1): add a second sa with its own spi for direction {direction}"
    )]
    SaBothDirections {
        sa: String,
        other_sp: String,
        other_direction: Direction,
        direction: Direction,
    },

    /// Identical selector, direction and priority: precedence between the two would be arbitrary.
    #[error(
        "--sp-name: same selector, direction and priority as sp '{existing}'; remove sp '{existing}' or give a different --priority"
    )]
    DuplicateSelector { existing: String },

    /// The kernel maps are sized for `max` entries.
    #[error(
        "{option}: cannot add another {kind}; the limit of {max} {kind}s is reached, remove one first"
    )]
    Limit {
        option: &'static str,
        kind: &'static str,
        max: u32,
    },

    /// A loaded state breaks an invariant; `what` names the record.
    #[error("state: {what}: {reason}")]
    InvalidState { what: String, reason: String },

    /// An `ike peer add` value the option does not accept, with the reason (proposal syntax,
    /// PSK length, lifetimes against each other, ...).
    #[error("{option}: {reason}")]
    Peer {
        option: &'static str,
        reason: String,
    },

    /// The peer to remove is named by policies.
    #[error("--peer-name: peer '{peer}' is used by {}; remove those policies first", list_sps(.sps))]
    PeerInUse { peer: String, sps: Vec<String> },

    /// `sp add --ike-peer` names a peer that does not exist.
    #[error("--ike-peer: no peer named '{name}'; add it first with ike peer add")]
    UnknownPeer { name: String },

    /// An SA IKE negotiated is IKE's to remove.
    #[error(
        "--sa-name: sa '{sa}' was negotiated by ike with peer '{peer}'; it goes when its child sa is deleted or expires (or remove the peer's policies and the peer)"
    )]
    IkeOwned { sa: String, peer: String },
    /// ESP in UDP is sent to, and accepted from, one peer address and port.
    #[error(
        "--udp-encapsulation: not allowed with {option} any; give the sa's ipv6 addresses (udp encapsulation is between two hosts)"
    )]
    UdpEncapWithAny { option: &'static str },
}

impl ModelError {
    /// An `InvalidState` for record `what`, with any message as the reason.
    #[allow(
        clippy::needless_pass_by_value,
        reason = "callers pass `&str` literals and owned errors alike; `&impl ToString`, as the lint suggests, rejects `str`"
    )]
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
    let mut out: String = value
        .chars()
        .take(KEEP)
        .flat_map(char::escape_debug)
        .collect();
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

/// Displays an error and every cause under it, joined by `": "`, each exactly once: what
/// anyhow's `{:#}` prints, for typed errors that never went through anyhow (the daemon's answers
/// and log lines). Every `thiserror` enum of this crate leaves its cause out of its own message
/// and chains it as `source`, so nothing appears twice.
pub struct Chain<'a>(pub &'a (dyn std::error::Error + 'static));

impl std::fmt::Display for Chain<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}", self.0)?;
        let mut cause = self.0.source();
        while let Some(e) = cause {
            write!(f, ": {e}")?;
            cause = e.source();
        }
        Ok(())
    }
}

#[cfg(test)]
mod chain_tests {
    use super::Chain;

    /// An outer error that chains an inner one that chains an `io::Error`, shaped like the
    /// crate's own (a message naming the step, the cause as `#[source]`).
    #[derive(Debug, thiserror::Error)]
    #[error("cannot save the state")]
    struct Outer {
        #[source]
        source: Inner,
    }

    #[derive(Debug, thiserror::Error)]
    #[error("cannot write {path}")]
    struct Inner {
        path: &'static str,
        #[source]
        source: std::io::Error,
    }

    fn nested() -> Outer {
        Outer {
            source: Inner {
                path: "/var/lib/xipsec/state.json",
                source: std::io::Error::other("disk full"),
            },
        }
    }

    #[test]
    fn chain_shows_every_cause_once() {
        let text = Chain(&nested()).to_string();
        assert_eq!(
            text,
            "cannot save the state: cannot write /var/lib/xipsec/state.json: disk full"
        );
        // The CLI's `main` prints anyhow's `{:#}`: the same text, each cause once.
        let via_anyhow = format!("{:#}", anyhow::Error::from(nested()));
        assert_eq!(via_anyhow, text);
        assert_eq!(via_anyhow.matches("disk full").count(), 1);
    }
}

/// THE table of rejected commands and their exact messages. The CLI's own test table pins the
/// same texts with `error: ` in front; every entry also checks that the SPD is left unchanged.
#[cfg(test)]
mod tests {
    use crate::model::args::{SaAddArgs, SaRemoveArgs, SpAddArgs, SpRemoveArgs};
    use crate::model::fixtures::{
        discard_sp_args, example_sa_args, example_sp_args, named_sa_args,
    };
    use crate::model::spd::Spd;

    enum Command {
        SaAdd(SaAddArgs),
        SaRemove(SaRemoveArgs),
        SpAdd(SpAddArgs),
        SpRemove(SpRemoveArgs),
    }

    /// sa1 and sp1 from the spec, a tunnel SA `tun` (SPI 0x2000) and a discard SP `d`.
    fn baseline() -> Spd {
        let mut spd = Spd::new();
        spd.add_sa(&example_sa_args()).expect("adding sa1");
        spd.add_sa(&named_sa_args("tun", 0x2000, "tunnel"))
            .expect("adding tun");
        let mut gcm = named_sa_args("gcm1", 0x5000, "transport");
        gcm.encryption_algorithm = some("aes128-gcm");
        gcm.encryption_key = some("gcm-key-of-gcm1-SALT");
        (gcm.integrity_algorithm, gcm.integrity_key) = (None, None);
        spd.add_sa(&gcm).expect("adding gcm1");
        spd.add_sp(&example_sp_args()).expect("adding sp1");
        spd.add_sp(&discard_sp_args("d", "any", "2001:db8::/32"))
            .expect("adding d");
        spd
    }

    /// The command `wrap` makes of `args` once `edit` has changed them.
    fn edited<A>(mut args: A, edit: impl FnOnce(&mut A), wrap: fn(A) -> Command) -> Command {
        edit(&mut args);
        wrap(args)
    }

    /// `sa add` of sa1's arguments under a new name and SPI.
    fn sa_add(edit: impl FnOnce(&mut SaAddArgs)) -> Command {
        let mut args = example_sa_args();
        (args.sa_name, args.sa_spi) = (some("new"), some("0x3000"));
        edited(args, edit, Command::SaAdd)
    }

    fn sa_remove(edit: impl FnOnce(&mut SaRemoveArgs)) -> Command {
        edited(SaRemoveArgs::default(), edit, Command::SaRemove)
    }

    /// `sp add` of sp1's arguments under a new name and destination port.
    fn sp_add(edit: impl FnOnce(&mut SpAddArgs)) -> Command {
        let mut args = example_sp_args();
        (args.sp_name, args.destination_port) = (some("new"), some("26"));
        edited(args, edit, Command::SpAdd)
    }

    #[allow(
        clippy::unnecessary_wraps,
        reason = "the table assigns Option<String> fields: `a.sa_spi = some(\"0xff\")` reads as the value it sets"
    )]
    fn some(s: &str) -> Option<String> {
        Some(s.to_owned())
    }

    #[test]
    fn the_controls_are_accepted() {
        // The table's builders must produce valid commands when left alone, or the table proves
        // nothing about the one field each entry breaks.
        for command in [sa_add(|_| {}), sp_add(|_| {})] {
            let mut spd = baseline();
            match command {
                Command::SaAdd(args) => drop(spd.add_sa(&args).expect("control sa add")),
                Command::SpAdd(args) => drop(spd.add_sp(&args).expect("control sp add")),
                Command::SaRemove(_) | Command::SpRemove(_) => unreachable!(),
            }
        }
    }

    #[test]
    fn bad_inputs_are_rejected_with_stable_messages_and_change_nothing() {
        #[rustfmt::skip]
        let table: Vec<(Command, &str)> = vec![
            // sa add: missing options, in the spec's order.
            (sa_add(|a| a.sa_source = None), "--sa-source: required; use an ipv6 address, or any in transport mode"),
            (sa_add(|a| a.sa_destination = None), "--sa-destination: required; use an ipv6 address, or any in transport mode"),
            (sa_add(|a| a.sa_mode = None), "--sa-mode: required; use transport or tunnel"),
            (sa_add(|a| a.sa_spi = None), "--sa-spi: required; use 0x followed by 1 to 8 hex digits, 0x100 to 0xffffffff"),
            (sa_add(|a| a.encryption_algorithm = None), "--encryption-algorithm: required; use 3des-cbc, aes128-cbc, aes256-cbc, aes128-gcm, aes256-gcm or null"),
            (sa_add(|a| a.encryption_key = None), "--encryption-key: required with 3des-cbc; give 24 bytes as 0x followed by 48 hex digits, or 24 ascii characters"),
            (sa_add(|a| a.integrity_algorithm = None), "--integrity-algorithm: required; use hmac-sha1 or hmac-sha2-256"),
            (sa_add(|a| a.integrity_key = None), "--integrity-key: required with hmac-sha1; give 20 bytes as 0x followed by 40 hex digits, or 20 ascii characters"),
            (sa_add(|a| a.sa_name = None), "--sa-name: required; use 1 to 64 characters from A-Z a-z 0-9 _ . -"),
            // sp add: missing options.
            (sp_add(|a| a.sp_source = None), "--sp-source: required; use ADDR/LEN (e.g. 2001:db8::/64) or any"),
            (sp_add(|a| a.sp_destination = None), "--sp-destination: required; use ADDR/LEN (e.g. 2001:db8::/64) or any"),
            (sp_add(|a| a.source_port = None), "--source-port: required; use 0 to 65535 or any (0 means any)"),
            (sp_add(|a| a.destination_port = None), "--destination-port: required; use 0 to 65535 or any (0 means any)"),
            (sp_add(|a| a.flow_direction = None), "--flow-direction: required; use in or out"),
            (sp_add(|a| a.sa_name = None), "--sa-name: required with --action ipsec; give an existing sa, or use --action none or discard"),
            (sp_add(|a| a.sp_name = None), "--sp-name: required; use 1 to 64 characters from A-Z a-z 0-9 _ . -"),
            // sa add: bad values.
            (sa_add(|a| a.sa_source = some("192.0.2.1")), "--sa-source: '192.0.2.1' is not valid; use an ipv6 address, or any in transport mode"),
            (sa_add(|a| a.sa_destination = some("2001:db8::/64")), "--sa-destination: '2001:db8::/64' is not valid; use an ipv6 address, or any in transport mode"),
            (sa_add(|a| a.sa_mode = some("tunel")), "--sa-mode: 'tunel' is not valid; use transport or tunnel"),
            (sa_add(|a| a.sa_spi = some("0xff")), "--sa-spi: 0xff is reserved (0x0-0xff); use 0x100 to 0xffffffff"),
            (sa_add(|a| a.sa_spi = some("4096")), "--sa-spi: '4096' is not valid; use 0x followed by 1 to 8 hex digits, 0x100 to 0xffffffff"),
            (sa_add(|a| a.sa_spi = some("0x100000000")), "--sa-spi: '0x100000000' is not valid; use 0x followed by 1 to 8 hex digits, 0x100 to 0xffffffff"),
            (sa_add(|a| a.sa_spi = some("0x1000")), "--sa-spi: 0x1000 is already used by sa 'sa1'; each sa needs its own spi"),
            (sa_add(|a| a.encryption_algorithm = some("des-cbc")), "--encryption-algorithm: 'des-cbc' is not valid; use 3des-cbc, aes128-cbc, aes256-cbc, aes128-gcm, aes256-gcm or null"),
            (sa_add(|a| { a.encryption_algorithm = some("null"); }), "--encryption-key: not allowed with --encryption-algorithm null; omit it"),
            (sa_add(|a| a.encryption_key = some("0x123")), "--encryption-key: a 0x key needs an even number of hex digits; use 0x followed by an even number of hex digits, or printable ascii text"),
            (sa_add(|a| a.encryption_key = some("short")), "--encryption-key: 3des-cbc needs a 24-byte key, got 5 bytes; give 0x followed by 48 hex digits, or 24 ascii characters"),
            (sa_add(|a| a.encryption_key = some("samesamesamesameDIFFERNT")), "--encryption-key: 3des-cbc needs three different 8-byte keys (k1 != k2 and k2 != k3)"),
            (sa_add(|a| a.integrity_algorithm = some("null")), "--integrity-algorithm: 'null' is not valid; use hmac-sha1 or hmac-sha2-256"),
            (sa_add(|a| a.integrity_algorithm = some("none")), "--integrity-algorithm: 'none' is not valid; use hmac-sha1 or hmac-sha2-256"),
            (sa_add(|a| { a.encryption_algorithm = some("aes128-gcm"); a.encryption_key = some("0123456789abcdef0123"); }), "--integrity-algorithm: not allowed with --encryption-algorithm aes128-gcm, which authenticates by itself (rfc 4106); omit it"),
            (sa_add(|a| { a.encryption_algorithm = some("aes256-gcm"); a.encryption_key = some("0123456789abcdef0123456789abcdef0123"); a.integrity_algorithm = None; }), "--integrity-key: not allowed with --encryption-algorithm aes256-gcm, which authenticates by itself (rfc 4106); omit it"),
            (sa_add(|a| { a.encryption_algorithm = some("aes128-gcm"); a.encryption_key = some("0123456789abcdef"); a.integrity_algorithm = None; a.integrity_key = None; }), "--encryption-key: aes128-gcm needs a 20-byte key, got 16 bytes; give 0x followed by 40 hex digits, or 20 ascii characters"),
            (sa_add(|a| { a.encryption_algorithm = some("aes256-gcm"); a.encryption_key = some("0123456789abcdef0123456789abcdef"); a.integrity_algorithm = None; a.integrity_key = None; }), "--encryption-key: aes256-gcm needs a 36-byte key, got 32 bytes; give 0x followed by 72 hex digits, or 36 ascii characters"),
            (sa_add(|a| { a.encryption_algorithm = some("aes128-gcm"); a.encryption_key = some("gcm-key-of-gcm1-pepr"); a.integrity_algorithm = None; a.integrity_key = None; }), "--encryption-key: this aes-gcm key is already used by sa 'gcm1'; give every aes-gcm sa (each direction) its own key (rfc 4106 §8: an iv repeated under a key is fatal)"),
            (sa_add(|a| { a.encryption_algorithm = some("aes256-cbc"); a.encryption_key = some("0123456789abcdef0123456789abcde"); }), "--encryption-key: aes256-cbc needs a 32-byte key, got 31 bytes; give 0x followed by 64 hex digits, or 32 ascii characters"),
            (sa_add(|a| a.integrity_algorithm = some("hmac-sha2-256")), "--integrity-key: hmac-sha2-256 needs a 32-byte key, got 20 bytes; give 0x followed by 64 hex digits, or 32 ascii characters"),
            (sa_add(|a| a.integrity_key = some("caf\u{e9}")), "--integrity-key: a text key may hold only printable ascii characters; use 0x followed by an even number of hex digits, or printable ascii text"),
            (sa_add(|a| a.sa_name = some("sa1")), "--sa-name: sa 'sa1' already exists; names are unique"),
            (sa_add(|a| a.sa_name = some("my sa")), "--sa-name: 'my sa' is not valid; use 1 to 64 characters from A-Z a-z 0-9 _ . -"),
            (sa_add(|a| a.sa_name = some("")), "--sa-name: '' is not valid; use 1 to 64 characters from A-Z a-z 0-9 _ . -"),
            (sa_add(|a| { a.sa_mode = some("tunnel"); a.sa_source = some("any"); }), "--sa-source: any is allowed in transport mode only; give an ipv6 address for tunnel mode"),
            (sa_add(|a| { a.sa_mode = some("tunnel"); a.sa_destination = some("ANY"); }), "--sa-destination: any is allowed in transport mode only; give an ipv6 address for tunnel mode"),
            // sa remove.
            (sa_remove(|_| {}), "--sa-name: required; give the sa name, or --sa-source, --sa-destination and --sa-spi together, or --remove-all"),
            (sa_remove(|a| a.sa_name = some("nope")), "--sa-name: no sa named 'nope'; see sa list"),
            (sa_remove(|a| a.sa_name = some("sa1")), "--sa-name: sa 'sa1' is used by sp 'sp1'; remove those policies first"),
            (sa_remove(|a| a.remove_all = true), "--remove-all: nothing removed; sa 'sa1' is used by sp 'sp1'; remove those policies first"),
            (sa_remove(|a| { a.remove_all = true; a.sa_name = some("tun"); }), "--remove-all: cannot be combined with --sa-name; use one of them"),
            (sa_remove(|a| { a.remove_all = true; a.sa_spi = some("0x2000"); }), "--remove-all: cannot be combined with --sa-source, --sa-destination and --sa-spi; use one of them"),
            (sa_remove(|a| { a.sa_name = some("tun"); a.sa_spi = some("0x2000"); }), "--sa-name: cannot be combined with --sa-source, --sa-destination and --sa-spi; use one of them"),
            (sa_remove(|a| a.sa_spi = some("0x2000")), "--sa-source: required; --sa-source, --sa-destination and --sa-spi identify the sa together"),
            (sa_remove(|a| { a.sa_source = some("2001:db8::1"); a.sa_spi = some("0x2000"); }), "--sa-destination: required; --sa-source, --sa-destination and --sa-spi identify the sa together"),
            (sa_remove(|a| { a.sa_source = some("2001:db8::1"); a.sa_destination = some("2001:db8::2"); }), "--sa-spi: required; --sa-source, --sa-destination and --sa-spi identify the sa together"),
            (sa_remove(|a| { a.sa_source = some("2001:db8::1"); a.sa_destination = some("any"); a.sa_spi = some("0x2000"); }), "--sa-spi: no sa with source 2001:db8::1, destination any and spi 0x2000; see sa list"),
            (sa_remove(|a| { a.sa_source = some("3ffe:501:ffff::a"); a.sa_destination = some("3ffe:501:ffff:1::1"); a.sa_spi = some("0x1000"); }), "--sa-spi: sa 'sa1' is used by sp 'sp1'; remove those policies first"),
            // sp add: bad values.
            (sp_add(|a| a.sp_source = some("2001:db8:1::")), "--sp-source: '2001:db8:1::' has no prefix length; add /128 for a single host (2001:db8:1::/128) or give ADDR/LEN"),
            (sp_add(|a| a.sp_destination = some("2002:db8:1::1/64")), "--sp-destination: '2002:db8:1::1/64' has host bits set beyond /64; did you mean 2002:db8:1::/64"),
            (sp_add(|a| a.sp_destination = some("2002:db8:1::/200")), "--sp-destination: '2002:db8:1::/200' is not valid; the prefix length must be 0 to 128"),
            (sp_add(|a| a.sp_source = some("198.51.100.0/24")), "--sp-source: '198.51.100.0/24' is not valid; use ADDR/LEN (e.g. 2001:db8::/64) or any"),
            (sp_add(|a| a.source_port = some("70000")), "--source-port: '70000' is not valid; use 0 to 65535 or any (0 means any)"),
            (sp_add(|a| a.destination_port = some("http")), "--destination-port: 'http' is not valid; use 0 to 65535 or any (0 means any)"),
            (sp_add(|a| a.upper_layer_protocol = some("sctp")), "--upper-layer-protocol: 'sctp' is not valid; use tcp, udp, icmp6 or any"),
            (sp_add(|a| a.upper_layer_protocol = some("any")), "--source-port: a port needs --upper-layer-protocol tcp, udp or icmp6; with protocol any use any"),
            (sp_add(|a| { a.upper_layer_protocol = None; a.source_port = some("any"); }), "--destination-port: a port needs --upper-layer-protocol tcp, udp or icmp6; with protocol any use any"),
            (sp_add(|a| a.upper_layer_protocol = some("icmp6")), "--source-port: must be any with --upper-layer-protocol icmp6; the icmpv6 type goes in --destination-port"),
            (sp_add(|a| { a.upper_layer_protocol = some("icmp6"); a.source_port = some("0"); a.destination_port = some("300"); }), "--destination-port: icmpv6 type 300 is out of range; use 0 to 255 or any with --upper-layer-protocol icmp6"),
            (sp_add(|a| a.flow_direction = some("both")), "--flow-direction: 'both' is not valid; use in or out"),
            (sp_add(|a| a.action = some("bypass")), "--action: 'bypass' is not valid; use none, discard or ipsec"),
            (sp_add(|a| a.sp_mode = some("tunnel")), "--sp-mode: tunnel does not match sa 'sa1' (transport); omit --sp-mode or give transport"),
            (sp_add(|a| { a.sa_name = some("tun"); a.sp_mode = some("transport"); }), "--sp-mode: transport does not match sa 'tun' (tunnel); omit --sp-mode or give tunnel"),
            (sp_add(|a| a.sp_mode = some("beet")), "--sp-mode: 'beet' is not valid; use transport or tunnel"),
            (sp_add(|a| a.sa_name = some("nope")), "--sa-name: no sa named 'nope'; add it first with sa add"),
            (sp_add(|a| { a.action = some("discard"); a.sa_name = some("nope"); }), "--sa-name: no sa named 'nope'; add it first with sa add"),
            (sp_add(|a| a.sp_name = some("sp1")), "--sp-name: sp 'sp1' already exists; names are unique"),
            (sp_add(|a| a.flow_direction = some("in")), "--sa-name: sa 'sa1' is already used by sp 'sp1' (direction out); an sa protects one direction only (RFC 4301 §4.1): add a second sa with its own spi for direction in"),
            (sp_add(|a| { a.flow_direction = some("in"); a.action = some("discard"); }), "--sa-name: sa 'sa1' is already used by sp 'sp1' (direction out); an sa protects one direction only (RFC 4301 §4.1): add a second sa with its own spi for direction in"),
            (sp_add(|a| a.sp_name = some("sp/1")), "--sp-name: 'sp/1' is not valid; use 1 to 64 characters from A-Z a-z 0-9 _ . -"),
            (sp_add(|a| a.priority = some("65536")), "--priority: '65536' is not valid; use 0 to 65535 (lower ranks first)"),
            (sp_add(|a| a.destination_port = some("25")), "--sp-name: same selector, direction and priority as sp 'sp1'; remove sp 'sp1' or give a different --priority"),
            (sp_add(|a| { a.destination_port = some("25"); a.action = some("discard"); a.sa_name = None; }), "--sp-name: same selector, direction and priority as sp 'sp1'; remove sp 'sp1' or give a different --priority"),
            // sp remove.
            (Command::SpRemove(SpRemoveArgs { sp_name: None, remove_all: false }), "--sp-name: required; give the sp name, or --remove-all"),
            (Command::SpRemove(SpRemoveArgs { sp_name: some("nope"), remove_all: false }), "--sp-name: no sp named 'nope'; see sp list"),
            (Command::SpRemove(SpRemoveArgs { sp_name: some("sp1"), remove_all: true }), "--remove-all: cannot be combined with --sp-name; use one of them"),
        ];
        for (command, expected) in table {
            let mut spd = baseline();
            let before = spd.clone();
            let error = match &command {
                Command::SaAdd(args) => spd.add_sa(args).map(drop),
                Command::SaRemove(args) => spd.remove_sa(args).map(drop),
                Command::SpAdd(args) => spd.add_sp(args).map(drop),
                Command::SpRemove(args) => spd.remove_sp(args).map(drop),
            }
            .expect_err(expected)
            .to_string();
            assert_eq!(error, expected);
            assert!(!error.contains('\n'), "one line: {error}");
            assert!(!error.ends_with('.'), "no trailing period: {error}");
            assert!(error.starts_with("--"), "starts with the option: {error}");
            assert_eq!(
                spd, before,
                "a rejected command changes nothing: {expected}"
            );
        }
    }

    #[test]
    fn keys_never_appear_in_messages() {
        let secret = "0123456789abcdef0123456789abcdef0123456789abcdef0";
        let mut spd = baseline();
        for key in [secret, "0xzz11223344", "Secret-Key"] {
            let mut args = example_sa_args();
            args.sa_name = some("k");
            args.sa_spi = some("0x4000");
            args.encryption_key = some(key);
            args.integrity_key = some(key);
            let error = spd.add_sa(&args).expect_err("bad key").to_string();
            assert!(!error.contains(key), "key echoed in: {error}");
        }
    }

    #[test]
    fn long_lists_of_holders_are_cut() {
        let mut spd = baseline();
        for i in 0..7 {
            let mut args = example_sp_args();
            args.sp_name = Some(format!("extra{i}"));
            args.priority = Some(i.to_string());
            spd.add_sp(&args).expect("adding a user of sa1");
        }
        let error = spd
            .remove_sa(&SaRemoveArgs {
                sa_name: some("sa1"),
                ..SaRemoveArgs::default()
            })
            .expect_err("sa1 in use")
            .to_string();
        assert_eq!(
            error,
            "--sa-name: sa 'sa1' is used by sp 'sp1', 'extra0', 'extra1', 'extra2', 'extra3' and 3 more; remove those policies first"
        );
    }
}
