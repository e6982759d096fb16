//! Parsing of single option values: addresses, prefixes, ports, SPIs, keys, names and keywords.
//!
//! Each function takes the option name so its error starts with it. Keywords (`any`, `tcp`,
//! `transport`, ...) are matched case-insensitively; names and ASCII keys are taken as typed.
//! Cross-option rules (ports against protocol, keys against algorithm, ...) live in `sa` and `sp`.

use std::net::Ipv6Addr;

use ipnet::Ipv6Net;

use super::args::opt;
use super::error::{ModelError, shown};
use super::key::Key;

/// What each option accepts, as the tail of its error messages.
pub(crate) mod allowed {
    pub(crate) const SA_ADDRESS: &str = "use an ipv6 address, or any in transport mode";
    pub(crate) const MODE: &str = "use transport or tunnel";
    pub(crate) const SPI: &str = "use 0x followed by 1 to 8 hex digits, 0x100 to 0xffffffff";
    pub(crate) const ENCRYPTION: &str =
        "use 3des-cbc, aes128-cbc, aes256-cbc, aes128-gcm, aes256-gcm or null";
    pub(crate) const INTEGRITY: &str = "use hmac-sha1 or hmac-sha2-256";
    pub(crate) const NAME: &str = "use 1 to 64 characters from A-Z a-z 0-9 _ . -";
    pub(crate) const PREFIX: &str = "use ADDR/LEN (e.g. 2001:db8::/64) or any";
    pub(crate) const PREFIX_LEN: &str = "the prefix length must be 0 to 128";
    pub(crate) const PORT: &str = "use 0 to 65535 or any (0 means any)";
    pub(crate) const PROTOCOL: &str = "use tcp, udp, icmp6 or any";
    pub(crate) const DIRECTION: &str = "use in or out";
    pub(crate) const ACTION: &str = "use none, discard or ipsec";
    pub(crate) const PRIORITY: &str = "use 0 to 65535 (lower ranks first)";
    pub(crate) const SA_REMOVE: &str =
        "give the sa name, or --sa-source, --sa-destination and --sa-spi together, or --remove-all";
    pub(crate) const SA_TRIPLE: &str =
        "--sa-source, --sa-destination and --sa-spi identify the sa together";
    pub(crate) const SP_REMOVE: &str = "give the sp name, or --remove-all";
}

/// Longest SA or SP name.
pub const MAX_NAME_LEN: usize = 64;

fn invalid(option: &'static str, value: &str, allowed: &'static str) -> ModelError {
    ModelError::Invalid {
        option,
        value: shown(value),
        allowed,
    }
}

fn is_any(value: &str) -> bool {
    value.eq_ignore_ascii_case("any")
}

/// The value of a required option, or `Missing`.
pub(crate) fn required<'a>(
    value: Option<&'a String>,
    option: &'static str,
    allowed: &'static str,
) -> Result<&'a str, ModelError> {
    value
        .map(String::as_str)
        .ok_or(ModelError::Missing { option, allowed })
}

/// One of `table`'s spellings, ignoring ASCII case.
pub(crate) fn keyword<T: Copy>(
    option: &'static str,
    value: &str,
    table: &[(T, &'static str)],
    allowed: &'static str,
) -> Result<T, ModelError> {
    table
        .iter()
        .find(|(_, text)| value.eq_ignore_ascii_case(text))
        .map(|(v, _)| *v)
        .ok_or_else(|| invalid(option, value, allowed))
}

/// An SA endpoint: an IPv6 address, or `any` (`None`). Whether `any` fits the mode is checked by
/// the caller, which knows the mode.
pub(crate) fn sa_address(
    option: &'static str,
    value: &str,
) -> Result<Option<Ipv6Addr>, ModelError> {
    if is_any(value) {
        return Ok(None);
    }
    value
        .parse()
        .map(Some)
        .map_err(|_| invalid(option, value, allowed::SA_ADDRESS))
}

/// The `--sa-source` and `--sa-destination` pair, checked in that order: each must be given
/// (`allowed` says what to give when it is missing) and be an address or `any`.
pub(crate) fn sa_endpoints(
    source: Option<&String>,
    destination: Option<&String>,
    allowed: &'static str,
) -> Result<(Option<Ipv6Addr>, Option<Ipv6Addr>), ModelError> {
    let source = sa_address(opt::SA_SOURCE, required(source, opt::SA_SOURCE, allowed)?)?;
    let destination = required(destination, opt::SA_DESTINATION, allowed)?;
    Ok((source, sa_address(opt::SA_DESTINATION, destination)?))
}

/// `0x` + 1 to 8 hex digits, at least 0x100 (RFC 4303 §2.1 reserves 0-255).
pub(crate) fn spi(value: &str) -> Result<u32, ModelError> {
    let option = super::args::opt::SA_SPI;
    let digits = value
        .strip_prefix("0x")
        .or_else(|| value.strip_prefix("0X"))
        .filter(|d| (1..=8).contains(&d.len()) && d.bytes().all(|b| b.is_ascii_hexdigit()))
        .ok_or_else(|| invalid(option, value, allowed::SPI))?;
    let spi = u32::from_str_radix(digits, 16).map_err(|_| invalid(option, value, allowed::SPI))?;
    if spi < 0x100 {
        return Err(ModelError::ReservedSpi { spi });
    }
    Ok(spi)
}

/// A key: `0x` + an even number of hex digits, or printable ASCII text taken as bytes. A value
/// starting with `0x` is always hex, so a typo in a hex key is an error rather than a text key.
/// The key itself never appears in an error.
pub(crate) fn key(option: &'static str, value: &str) -> Result<Key, ModelError> {
    let bad = |reason| ModelError::BadKey { option, reason };
    if let Some(hex) = value
        .strip_prefix("0x")
        .or_else(|| value.strip_prefix("0X"))
    {
        if hex.is_empty() {
            return Err(bad("0x is not followed by any hex digits"));
        }
        if !hex.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(bad("a 0x key may hold only hex digits"));
        }
        if hex.len() % 2 != 0 {
            return Err(bad("a 0x key needs an even number of hex digits"));
        }
        return hex::decode(hex)
            .map(Key::new)
            .map_err(|_| bad("a 0x key may hold only hex digits"));
    }
    if value.is_empty() {
        return Err(bad("the key is empty"));
    }
    if !value.bytes().all(|b| b.is_ascii_graphic() || b == b' ') {
        return Err(bad("a text key may hold only printable ascii characters"));
    }
    Ok(Key::new(value.as_bytes().to_vec()))
}

/// Whether `name` is 1 to 64 characters of `[A-Za-z0-9_.-]`.
pub fn is_valid_name(name: &str) -> bool {
    (1..=MAX_NAME_LEN).contains(&name.len())
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b'-'))
}

/// An SA or SP name.
pub(crate) fn name(option: &'static str, value: &str) -> Result<String, ModelError> {
    if is_valid_name(value) {
        Ok(value.to_owned())
    } else {
        Err(invalid(option, value, allowed::NAME))
    }
}

/// An SP selector prefix: `ADDR/LEN` with no host bits set, or `any` (`::/0`).
pub(crate) fn prefix(option: &'static str, value: &str) -> Result<Ipv6Net, ModelError> {
    if is_any(value) {
        return Ok(Ipv6Net::default());
    }
    let Some((addr, len)) = value.split_once('/') else {
        return Err(if value.parse::<Ipv6Addr>().is_ok() {
            ModelError::PrefixWithoutLength {
                option,
                value: shown(value),
            }
        } else {
            invalid(option, value, allowed::PREFIX)
        });
    };
    let addr: Ipv6Addr = addr
        .parse()
        .map_err(|_| invalid(option, value, allowed::PREFIX))?;
    let len = decimal(len)
        .filter(|len| *len <= 128)
        .ok_or_else(|| invalid(option, value, allowed::PREFIX_LEN))?;
    let net = u8::try_from(len)
        .ok()
        .and_then(|len| Ipv6Net::new(addr, len).ok())
        .ok_or_else(|| invalid(option, value, allowed::PREFIX_LEN))?;
    if net.network() != addr {
        return Err(ModelError::HostBits {
            option,
            value: shown(value),
            corrected: net.trunc(),
        });
    }
    Ok(net)
}

/// A port (or ICMPv6 type) selector: 0-65535 or `any`; 0 means any and becomes `None`.
pub(crate) fn port(option: &'static str, value: &str) -> Result<Option<u16>, ModelError> {
    if is_any(value) {
        return Ok(None);
    }
    let port = decimal(value)
        .and_then(|p| u16::try_from(p).ok())
        .ok_or_else(|| invalid(option, value, allowed::PORT))?;
    Ok((port != 0).then_some(port))
}

/// `--priority`: 0-65535.
pub(crate) fn priority(value: &str) -> Result<u16, ModelError> {
    decimal(value)
        .and_then(|p| u16::try_from(p).ok())
        .ok_or_else(|| invalid(super::args::opt::PRIORITY, value, allowed::PRIORITY))
}

/// Plain decimal digits only (no sign, no spaces), at most 5 of them.
fn decimal(value: &str) -> Option<u32> {
    if value.is_empty() || value.len() > 5 || !value.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    value.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::types::Mode;

    const OPT: &str = "--opt";

    fn net(s: &str) -> Ipv6Net {
        s.parse().expect("parsing a test prefix")
    }

    fn error_text<T: std::fmt::Debug>(r: Result<T, ModelError>) -> String {
        r.expect_err("expecting a parse error").to_string()
    }

    #[test]
    fn sa_addresses() {
        assert_eq!(sa_address(OPT, "any").expect("any"), None);
        assert_eq!(sa_address(OPT, "ANY").expect("ANY"), None);
        assert_eq!(
            sa_address(OPT, "3ffe:501:ffff:0001:0000:0000:0000:0001").expect("long form"),
            Some("3ffe:501:ffff:1::1".parse().expect("addr"))
        );
        assert_eq!(
            sa_address(OPT, "3ffe:501:ffff:0::a").expect("short form"),
            Some("3ffe:501:ffff::a".parse().expect("addr"))
        );
        for bad in [
            "",
            "192.0.2.1",
            "2001:db8::/64",
            "2001:db8::g",
            "fe80::1%eth0",
            " ::1",
        ] {
            assert_eq!(
                error_text(sa_address(OPT, bad)),
                format!(
                    "--opt: '{bad}' is not valid; use an ipv6 address, or any in transport mode"
                )
            );
        }
    }

    #[test]
    fn spis() {
        assert_eq!(spi("0x100").expect("lowest"), 0x100);
        assert_eq!(spi("0x1000").expect("example"), 0x1000);
        assert_eq!(spi("0XABCdef01").expect("mixed case"), 0xabcd_ef01);
        assert_eq!(spi("0xffffffff").expect("highest"), u32::MAX);
        assert_eq!(spi("0x00000100").expect("8 digits with zeros"), 0x100);
        assert_eq!(
            error_text(spi("0xff")),
            "--sa-spi: 0xff is reserved (0x0-0xff); use 0x100 to 0xffffffff"
        );
        assert_eq!(
            error_text(spi("0x0")),
            "--sa-spi: 0x0 is reserved (0x0-0xff); use 0x100 to 0xffffffff"
        );
        for bad in [
            "4096",
            "0x",
            "0x100000000",
            "0x000000100",
            "0x10g0",
            "x100",
            "",
            "-0x100",
        ] {
            assert_eq!(
                error_text(spi(bad)),
                format!(
                    "--sa-spi: '{bad}' is not valid; use 0x followed by 1 to 8 hex digits, 0x100 to 0xffffffff"
                )
            );
        }
    }

    #[test]
    fn keys() {
        assert_eq!(key(OPT, "0x00ff").expect("hex").as_bytes(), &[0, 0xff]);
        assert_eq!(
            key(OPT, "0XAbCd").expect("hex case").as_bytes(),
            &[0xab, 0xcd]
        );
        assert_eq!(key(OPT, "ab cd~").expect("ascii").as_bytes(), b"ab cd~");
        // Looks like hex without the prefix: still text.
        assert_eq!(key(OPT, "00ff").expect("text digits").as_bytes(), b"00ff");
        let tail = "; use 0x followed by an even number of hex digits, or printable ascii text";
        for (bad, reason) in [
            ("0x", "0x is not followed by any hex digits"),
            ("0xabc", "a 0x key needs an even number of hex digits"),
            ("0xzz", "a 0x key may hold only hex digits"),
            ("", "the key is empty"),
            (
                "caf\u{e9}",
                "a text key may hold only printable ascii characters",
            ),
            (
                "a\tb",
                "a text key may hold only printable ascii characters",
            ),
        ] {
            assert_eq!(error_text(key(OPT, bad)), format!("--opt: {reason}{tail}"));
        }
    }

    #[test]
    fn names() {
        assert_eq!(name(OPT, "sa1").expect("simple"), "sa1");
        assert_eq!(name(OPT, "A-z_0.9").expect("all classes"), "A-z_0.9");
        assert!(is_valid_name(&"x".repeat(64)));
        assert!(!is_valid_name(&"x".repeat(65)));
        for bad in ["", "a b", "a/b", "\u{e9}", "a\nb"] {
            let shown_value = shown(bad);
            assert_eq!(
                error_text(name(OPT, bad)),
                format!(
                    "--opt: '{shown_value}' is not valid; use 1 to 64 characters from A-Z a-z 0-9 _ . -"
                )
            );
        }
        assert_eq!(
            error_text(name(OPT, "a\nb")),
            "--opt: 'a\\nb' is not valid; use 1 to 64 characters from A-Z a-z 0-9 _ . -",
            "a newline stays on one line"
        );
    }

    #[test]
    fn prefixes() {
        assert_eq!(prefix(OPT, "any").expect("any"), net("::/0"));
        assert_eq!(prefix(OPT, "::/0").expect("zero"), net("::/0"));
        assert_eq!(
            prefix(OPT, "2001:db8:1::/64").expect("example"),
            net("2001:db8:1::/64")
        );
        assert_eq!(
            prefix(OPT, "2001:db8::1/128").expect("host"),
            net("2001:db8::1/128")
        );
        assert_eq!(
            error_text(prefix(OPT, "2001:db8::1")),
            "--opt: '2001:db8::1' has no prefix length; add /128 for a single host (2001:db8::1/128) or give ADDR/LEN"
        );
        assert_eq!(
            error_text(prefix(OPT, "2001:db8::1/64")),
            "--opt: '2001:db8::1/64' has host bits set beyond /64; did you mean 2001:db8::/64"
        );
        assert_eq!(
            error_text(prefix(OPT, "2001:db8:1:2:3::/48")),
            "--opt: '2001:db8:1:2:3::/48' has host bits set beyond /48; did you mean 2001:db8:1::/48"
        );
        for bad in [
            "2001:db8::/129",
            "2001:db8::/",
            "2001:db8::/-1",
            "2001:db8::/+8",
            "::/1000000",
        ] {
            assert_eq!(
                error_text(prefix(OPT, bad)),
                format!("--opt: '{bad}' is not valid; the prefix length must be 0 to 128")
            );
        }
        for bad in ["198.51.100.0/24", "nope", "", "2001:db8::x/64"] {
            assert_eq!(
                error_text(prefix(OPT, bad)),
                format!("--opt: '{bad}' is not valid; use ADDR/LEN (e.g. 2001:db8::/64) or any")
            );
        }
    }

    #[test]
    fn ports_and_priorities() {
        assert_eq!(port(OPT, "any").expect("any"), None);
        assert_eq!(port(OPT, "0").expect("zero"), None);
        assert_eq!(port(OPT, "00000").expect("zeros"), None);
        assert_eq!(port(OPT, "1").expect("one"), Some(1));
        assert_eq!(port(OPT, "65535").expect("max"), Some(65535));
        for bad in ["65536", "-1", "+1", "", "1.0", "http", "000001"] {
            assert_eq!(
                error_text(port(OPT, bad)),
                format!("--opt: '{bad}' is not valid; use 0 to 65535 or any (0 means any)")
            );
        }
        assert_eq!(priority("0").expect("zero"), 0);
        assert_eq!(priority("65535").expect("max"), 65535);
        for bad in ["65536", "any", "", "-5"] {
            assert_eq!(
                error_text(priority(bad)),
                format!("--priority: '{bad}' is not valid; use 0 to 65535 (lower ranks first)")
            );
        }
    }

    #[test]
    fn keywords_ignore_case() {
        assert_eq!(
            keyword(OPT, "TUNNEL", Mode::ALL, allowed::MODE).expect("upper case"),
            Mode::Tunnel
        );
        assert_eq!(
            error_text(keyword(OPT, "tunel", Mode::ALL, allowed::MODE)),
            "--opt: 'tunel' is not valid; use transport or tunnel"
        );
    }

    #[test]
    fn shown_values_stay_short() {
        let long = "a".repeat(100);
        assert_eq!(shown(&long), format!("{}...", "a".repeat(64)));
        assert_eq!(shown("it's"), "it\\'s");
    }
}
