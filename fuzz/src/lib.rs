//! What the fuzz targets share: the fixed SA every ESP target runs under, and small builders and
//! reference computations (checksums, IPv6 headers) written independently of the code under test,
//! so a target can check the product against them.

use std::net::Ipv6Addr;

use ipsec_user::crypto::{InboundSa, OutboundSa, SaConfig};
use ipsec_user::model::{EncryptionAlgorithm, IntegrityAlgorithm, Mode};

/// The SPI of the fixed SA.
pub const SPI: u32 = 0x1000;
/// aes128-cbc key of the fixed SA.
pub const ENCRYPTION_KEY: &[u8; 16] = b"0123456789abcdef";
/// hmac-sha2-256-128 key of the fixed SA.
pub const INTEGRITY_KEY: &[u8; 32] = b"0123456789abcdef0123456789abcdef";
/// Inner (transport: the packet's own) source and destination.
pub const HOST_A: Ipv6Addr = Ipv6Addr::new(0xfd00, 0, 0, 0, 0, 0, 0, 1);
pub const HOST_B: Ipv6Addr = Ipv6Addr::new(0xfd00, 0, 0, 0, 0, 0, 0, 2);
/// Tunnel endpoints.
pub const GATEWAY_A: Ipv6Addr = Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, 1);
pub const GATEWAY_B: Ipv6Addr = Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, 2);

/// AES block size, which is also the IV length and the padding boundary.
pub const BLOCK: usize = 16;
/// HMAC-SHA-256-128 ICV length (RFC 4868).
pub const ICV_LEN: usize = 16;

/// Transport mode, or tunnel mode between the two gateways.
#[must_use]
pub fn sa_config(mode: Mode) -> SaConfig<'static> {
    SaConfig {
        spi: SPI,
        mode,
        source: GATEWAY_A,
        destination: GATEWAY_B,
        encryption: EncryptionAlgorithm::Aes128Cbc,
        encryption_key: ENCRYPTION_KEY,
        integrity: IntegrityAlgorithm::HmacSha256,
        integrity_key: INTEGRITY_KEY,
    }
}

/// A fresh receiving side of the fixed SA (empty replay window), so every run is deterministic.
#[must_use]
pub fn inbound(mode: Mode) -> InboundSa {
    InboundSa::new(&sa_config(mode)).expect("keying the fixed inbound sa")
}

/// The sending side of the fixed SA.
#[must_use]
pub fn outbound(mode: Mode) -> OutboundSa {
    OutboundSa::new(&sa_config(mode)).expect("keying the fixed outbound sa")
}

/// A fixed IPv6 header (HOST_A -> HOST_B, hop limit 64) in front of `payload`.
#[must_use]
pub fn ipv6(next_header: u8, payload: &[u8]) -> Vec<u8> {
    ipv6_between(HOST_A, HOST_B, next_header, payload)
}

/// An IPv6 header between `src` and `dst` in front of `payload`; the payload length saturates.
#[must_use]
pub fn ipv6_between(src: Ipv6Addr, dst: Ipv6Addr, next_header: u8, payload: &[u8]) -> Vec<u8> {
    let mut packet = Vec::with_capacity(40 + payload.len());
    packet.extend_from_slice(&[0x60, 0, 0, 0]);
    let len = u16::try_from(payload.len()).unwrap_or(u16::MAX);
    packet.extend_from_slice(&len.to_be_bytes());
    packet.push(next_header);
    packet.push(64);
    packet.extend_from_slice(&src.octets());
    packet.extend_from_slice(&dst.octets());
    packet.extend_from_slice(payload);
    packet
}

/// The ones'-complement sum of `bytes` as big-endian 16-bit words (odd tail padded with zero),
/// folded to 16 bits (RFC 1071).
#[must_use]
pub fn ones_sum(bytes: &[u8]) -> u16 {
    let mut sum: u64 = 0;
    for pair in bytes.chunks(2) {
        sum += u64::from(u16::from_be_bytes([pair[0], *pair.get(1).unwrap_or(&0)]));
    }
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    u16::try_from(sum).expect("folded to 16 bits")
}

/// The TCP checksum (RFC 9293 §3.1, IPv6 pseudo-header of RFC 8200 §8.1) of the TCP segment that
/// follows the 40-byte IPv6 header of `packet`, with the checksum field taken as zero. The
/// upper-layer length is the rest of `packet`.
#[must_use]
pub fn tcp_checksum(packet: &[u8]) -> u16 {
    let tcp = &packet[40..];
    let mut pseudo = Vec::with_capacity(40 + tcp.len());
    pseudo.extend_from_slice(&packet[8..40]);
    pseudo.extend_from_slice(&u32::try_from(tcp.len()).unwrap_or(u32::MAX).to_be_bytes());
    pseudo.extend_from_slice(&[0, 0, 0, 6]);
    pseudo.extend_from_slice(tcp);
    // Checksum field (TCP offset 16) counts as zero.
    pseudo[40 + 16] = 0;
    pseudo[40 + 17] = 0;
    !ones_sum(&pseudo)
}

/// A TCP segment over IPv6 (HOST_A:5001 -> HOST_B:40000) with `options` (a multiple of 4 bytes)
/// and `payload`, its checksum correct.
#[must_use]
pub fn tcp_packet(seq: u32, flags: u8, options: &[u8], payload: &[u8]) -> Vec<u8> {
    let mut tcp = Vec::new();
    tcp.extend_from_slice(&5001u16.to_be_bytes());
    tcp.extend_from_slice(&40000u16.to_be_bytes());
    tcp.extend_from_slice(&seq.to_be_bytes());
    tcp.extend_from_slice(&7u32.to_be_bytes());
    let words = u8::try_from((20 + options.len()) / 4).expect("tcp header of at most 60 bytes");
    tcp.push(words << 4);
    tcp.push(flags);
    tcp.extend_from_slice(&[0x01, 0x00, 0, 0, 0, 0]);
    tcp.extend_from_slice(options);
    tcp.extend_from_slice(payload);
    let mut packet = ipv6(6, &tcp);
    let sum = tcp_checksum(&packet);
    packet[56..58].copy_from_slice(&sum.to_be_bytes());
    packet
}

/// Whether the TCP checksum field of `packet` verifies, as a receiver checks it: the sum over the
/// pseudo-header and the segment, checksum included, is -0. Either zero of ones'-complement
/// (0x0000 or 0xffff) in the field passes when the computed checksum is the other one.
#[must_use]
pub fn tcp_checksum_ok(packet: &[u8]) -> bool {
    let field = u16::from_be_bytes([packet[56], packet[57]]);
    let want = tcp_checksum(packet);
    field == want || (field ^ want == 0xffff && (field == 0 || want == 0))
}

/// An SPD holding the README's examples: a transport SA with 3DES, a tunnel SA with AES, an
/// `ipsec` SP naming the first, a `discard` SP, so removals and SA references have targets.
#[must_use]
pub fn example_spd() -> ipsec_user::model::Spd {
    let (sas, sps) = example_args();
    let mut spd = ipsec_user::model::Spd::new();
    for args in &sas {
        spd.add_sa(args).expect("adding the README's SA");
    }
    for args in &sps {
        spd.add_sp(args).expect("adding the README's SP");
    }
    spd
}

/// The `sa add` and `sp add` arguments of [`example_spd`], in the order it adds them.
#[must_use]
pub fn example_args() -> (
    Vec<ipsec_user::model::SaAddArgs>,
    Vec<ipsec_user::model::SpAddArgs>,
) {
    use serde_json::json;
    // Written as the control protocol carries them (JSON), and read back by serde: the same
    // arguments the CLI sends for the README's commands.
    let sas = [
        json!({"sa_name": "sa1", "sa_mode": "transport", "sa_spi": "0x1000",
               "sa_source": "3ffe:501:ffff:0::a",
               "sa_destination": "3ffe:501:ffff:0001:0000:0000:0000:0001",
               "encryption_algorithm": "3des-cbc",
               "encryption_key": "0x6970763672656164796c6f676f336465736362636f757432",
               "integrity_algorithm": "hmac-sha1",
               "integrity_key": "0x6970763672656164796c6f67736861316f757432"}),
        json!({"sa_name": "to-b", "sa_mode": "tunnel", "sa_spi": "0x2000",
               "sa_source": "2001:db8::1", "sa_destination": "2001:db8::2",
               "encryption_algorithm": "aes128-cbc",
               "encryption_key": "0x000102030405060708090a0b0c0d0e0f",
               "integrity_algorithm": "hmac-sha2-256",
               "integrity_key": "0x000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f"}),
    ];
    let sps = [
        json!({"sp_name": "sp1", "sp_source": "2001:db8:1::/64", "sp_destination": "2002:db8:1::/64",
               "source_port": "23", "destination_port": "25", "upper_layer_protocol": "tcp",
               "flow_direction": "out", "action": "ipsec", "sp_mode": "transport",
               "sa_name": "sa1"}),
        json!({"sp_name": "no-telnet", "sp_source": "2001:db8:bad::/48", "sp_destination": "any",
               "source_port": "any", "destination_port": "23", "upper_layer_protocol": "tcp",
               "flow_direction": "in", "action": "discard"}),
    ];
    (
        sas.into_iter()
            .map(|sa| serde_json::from_value(sa).expect("the README's sa add arguments"))
            .collect(),
        sps.into_iter()
            .map(|sp| serde_json::from_value(sp).expect("the README's sp add arguments"))
            .collect(),
    )
}

/// The state file the daemon writes for `spd` (`daemon::state`: `{"version": 1, "spd": ...}`).
#[must_use]
pub fn state_file(spd: &ipsec_user::model::Spd) -> Vec<u8> {
    let mut bytes = serde_json::to_vec(&serde_json::json!({ "version": 1, "spd": spd }))
        .expect("serialising an spd");
    bytes.push(b'\n');
    bytes
}
