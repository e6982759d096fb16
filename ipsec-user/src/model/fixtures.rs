//! Test fixtures shared by the model's unit tests: the spec's examples and small builders.

use super::args::{SaAddArgs, SpAddArgs};

#[allow(
    clippy::unnecessary_wraps,
    reason = "every field of the argument structs is an Option; this fills one"
)]
fn s(value: &str) -> Option<String> {
    Some(value.to_owned())
}

/// The spec's `sa add` example, verbatim.
pub(crate) fn example_sa_args() -> SaAddArgs {
    SaAddArgs {
        sa_source: s("3ffe:501:ffff:0::a"),
        sa_destination: s("3ffe:501:ffff:0001:0000:0000:0000:0001"),
        sa_mode: s("transport"),
        sa_spi: s("0x1000"),
        encryption_algorithm: s("3des-cbc"),
        encryption_key: s("0x6970763672656164796c6f676f336465736362636f757432"),
        integrity_algorithm: s("hmac-sha1"),
        integrity_key: s("0x6970763672656164796c6f67736861316f757432"),
        sa_name: s("sa1"),
        udp_encapsulation: None,
    }
}

/// The example SA with other algorithms and keys.
pub(crate) fn sa_args(
    encryption: &str,
    encryption_key: Option<&str>,
    integrity: &str,
    integrity_key: &str,
) -> SaAddArgs {
    SaAddArgs {
        encryption_algorithm: s(encryption),
        encryption_key: encryption_key.map(str::to_owned),
        integrity_algorithm: s(integrity),
        integrity_key: s(integrity_key),
        ..example_sa_args()
    }
}

/// An SA named `name` with SPI `spi`, in `mode`, between two fixed hosts.
pub(crate) fn named_sa_args(name: &str, spi: u32, mode: &str) -> SaAddArgs {
    SaAddArgs {
        sa_source: s("2001:db8::1"),
        sa_destination: s("2001:db8::2"),
        sa_mode: s(mode),
        sa_spi: Some(format!("{spi:#x}")),
        encryption_algorithm: s("aes128-cbc"),
        encryption_key: s("0x000102030405060708090a0b0c0d0e0f"),
        integrity_algorithm: s("hmac-sha2-256"),
        integrity_key: s("0x000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f"),
        sa_name: s(name),
        udp_encapsulation: None,
    }
}

/// The spec's `sp add` example, verbatim.
pub(crate) fn example_sp_args() -> SpAddArgs {
    SpAddArgs {
        sp_source: s("2001:db8:1::/64"),
        sp_destination: s("2002:db8:1::/64"),
        source_port: s("23"),
        destination_port: s("25"),
        upper_layer_protocol: s("tcp"),
        flow_direction: s("out"),
        action: s("ipsec"),
        sp_mode: s("transport"),
        sa_name: s("sa1"),
        sp_name: s("sp1"),
        priority: None,
    }
}

/// A discard policy with only the given selector; ports any, protocol any, direction out.
pub(crate) fn discard_sp_args(name: &str, source: &str, destination: &str) -> SpAddArgs {
    SpAddArgs {
        sp_source: s(source),
        sp_destination: s(destination),
        source_port: s("any"),
        destination_port: s("any"),
        upper_layer_protocol: None,
        flow_direction: s("out"),
        action: s("discard"),
        sp_mode: None,
        sa_name: None,
        sp_name: s(name),
        priority: None,
    }
}
