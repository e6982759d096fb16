//! TCP MSS clamping for protected flows (what VPNs call `--clamp-mss`).
//!
//! ESP adds up to [`MAX_ESP_OVERHEAD`] bytes, so a full-size TCP segment of a protected flow
//! would leave as two fragments, which halves throughput and loads the peer's reassembly. Every
//! TCP SYN crossing the engine (outbound before encryption, inbound after decryption) has its
//! MSS option lowered so both ends send segments whose ESP form fits [`LINK_MTU`]: to
//! [`for_overheads`] of the configured SAs, the largest MSS every one of them fits (a SYN's MSS
//! bounds the *other* direction's segments, which may travel under another SA), or
//! [`CLAMPED_MSS`], which fits any suite in either mode. ESP in UDP (RFC 3948) adds
//! [`UDP_ENCAP_OVERHEAD`] more ([`encap_overhead`], counted per SA). Other
//! protocols are untouched: a large UDP datagram is still sent, as outer ESP fragments that the
//! peer reassembles before decryption. (Signalling a smaller path MTU instead would make the
//! local stack fragment UDP *before* ESP, which transport mode cannot carry, RFC 4303 §3.1.1.)

use crate::wire::{Ipv6Packet, TcpPacket, checksum, proto, tcp_flags};

/// The MTU of the links ESP leaves on (Ethernet).
pub const LINK_MTU: usize = 1500;
/// The most ESP adds to a packet with the suites we support: outer IPv6 header (tunnel mode) 40,
/// ESP header 8, IV 16, padding up to 15 plus pad length and next header 2, ICV 16.
pub const MAX_ESP_OVERHEAD: usize = 40 + 8 + 16 + 17 + 16;
/// What ESP in UDP (RFC 3948) adds on top of ESP's overhead: the UDP header.
pub const UDP_ENCAP_OVERHEAD: usize = 8;

/// The overhead UDP encapsulation adds to an SA's ESP: [`UDP_ENCAP_OVERHEAD`] with it, 0
/// without.
pub fn encap_overhead(encap: Option<crate::model::UdpEncap>) -> usize {
    if encap.is_some() {
        UDP_ENCAP_OVERHEAD
    } else {
        0
    }
}

/// The largest MSS whose segments fit: IPv6 (40) and TCP (20) headers come on top of the MSS
/// (TCP options are carved out of it).
#[allow(
    clippy::cast_possible_truncation,
    reason = "1303: the assertion below holds it to 16 bits"
)]
pub const CLAMPED_MSS: u16 = (LINK_MTU - MAX_ESP_OVERHEAD - 40 - 20) as u16;
const _: () = assert!(LINK_MTU - MAX_ESP_OVERHEAD - 40 - 20 <= u16::MAX as usize);

/// The largest MSS whose segments fit [`LINK_MTU`] under every SA of `overheads` (each SA's
/// `max_overhead`); [`CLAMPED_MSS`] when there is none.
pub fn for_overheads(overheads: impl IntoIterator<Item = usize>) -> u16 {
    overheads
        .into_iter()
        .map(|overhead| LINK_MTU.saturating_sub(overhead + 40 + 20))
        .min()
        .map_or(CLAMPED_MSS, |mss| u16::try_from(mss).unwrap_or(CLAMPED_MSS))
}

/// TCP option kinds (RFC 9293 §3.2).
const END_OF_OPTIONS: u8 = 0;
const NO_OPERATION: u8 = 1;
const MSS_KIND: u8 = 2;

/// Lower the MSS option of a TCP SYN in the IPv6 `packet` to at most `max`, fixing the TCP
/// checksum incrementally (RFC 1624). Returns whether the packet changed. Anything that is not
/// a well-formed TCP SYN directly after the IPv6 header (within its payload length) is left
/// alone.
pub fn clamp(packet: &mut [u8], max: u16) -> bool {
    let Ok(mut ip) = Ipv6Packet::new_checked(&mut *packet) else {
        return false;
    };
    if ip.next_header() != proto::TCP {
        return false;
    }
    let Ok(mut tcp) = TcpPacket::new_checked(ip.payload_mut()) else {
        return false;
    };
    if tcp.flags() & tcp_flags::SYN == 0 {
        return false;
    }
    let Some(at) = mss_option(tcp.options()) else {
        return false;
    };
    let options = tcp.options_mut();
    let old = u16::from_be_bytes([options[at], options[at + 1]]);
    if old <= max {
        return false;
    }
    options[at..at + 2].copy_from_slice(&max.to_be_bytes());
    // The checksum sums 16-bit words from the start of the TCP header (the options start on a
    // word, at 20): a value at an odd offset straddles two words, where it counts byte-swapped
    // (RFC 1071 §2(B)). Found by the `mss` fuzz target.
    let (old_word, new_word) = if at % 2 == 1 {
        (old.swap_bytes(), max.swap_bytes())
    } else {
        (old, max)
    };
    let sum = checksum::adjust(tcp.checksum(), old_word, new_word);
    tcp.set_checksum(sum);
    true
}

/// The offset in `options` of the value of a well-formed MSS option (kind 2, length 4), if the
/// options are well-formed up to it.
fn mss_option(options: &[u8]) -> Option<usize> {
    let mut i = 0;
    while i < options.len() {
        match options[i] {
            END_OF_OPTIONS => return None,
            NO_OPERATION => i += 1,
            kind => {
                let len = usize::from(*options.get(i + 1)?);
                if len < 2 || i + len > options.len() {
                    return None;
                }
                if kind == MSS_KIND && len == 4 {
                    return Some(i + 2);
                }
                i += len;
            }
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    const TCP: u8 = proto::TCP;
    const SYN: u8 = tcp_flags::SYN;

    /// The TCP checksum over the IPv6 pseudo-header, computed from scratch.
    fn tcp_checksum(packet: &[u8]) -> u16 {
        let ip = Ipv6Packet::new_unchecked(packet);
        checksum::upper_layer(&ip.src_octets(), &ip.dst_octets(), TCP, &packet[40..])
    }

    /// Whether the checksum field of `p` holds the checksum of the rest.
    fn checksum_is_valid(p: &[u8]) -> bool {
        let mut zeroed = p.to_vec();
        zeroed[56..58].copy_from_slice(&[0, 0]);
        tcp_checksum(&zeroed) == u16::from_be_bytes([p[56], p[57]])
    }

    fn syn(mss: u16, flags: u8) -> Vec<u8> {
        let mut p = vec![0u8; 40 + 28];
        p[0] = 0x60;
        p[5] = 28;
        p[6] = TCP;
        p[8] = 0xfd;
        p[23] = 1;
        p[24] = 0xfd;
        p[39] = 2;
        let tcp = &mut p[40..];
        tcp[..4].copy_from_slice(&[0x9c, 0x40, 0x13, 0x89]);
        tcp[12] = 7 << 4;
        tcp[13] = flags;
        tcp[20..24].copy_from_slice(&[1, 1, 4, 2]); // nop nop sack-permitted
        let [high, low] = mss.to_be_bytes();
        tcp[24..28].copy_from_slice(&[MSS_KIND, 4, high, low]);
        let sum = tcp_checksum(&p);
        p[56..58].copy_from_slice(&sum.to_be_bytes());
        p
    }

    #[test]
    fn the_clamp_follows_the_largest_overhead_configured() {
        assert_eq!(for_overheads([]), CLAMPED_MSS);
        // aes128-cbc + hmac-sha2-256, transport: 8 + 16 + 16 + 1 + 16.
        assert_eq!(for_overheads([57]), 1383);
        // ... and a tunnel-mode SA beside it: 40 more.
        assert_eq!(for_overheads([57, 97]), 1343);
        assert_eq!(for_overheads([MAX_ESP_OVERHEAD]), CLAMPED_MSS);
    }

    #[test]
    fn clamps_a_large_mss_and_keeps_the_checksum_valid() {
        let mut p = syn(1440, SYN);
        assert!(clamp(&mut p, CLAMPED_MSS));
        assert_eq!(u16::from_be_bytes([p[66], p[67]]), CLAMPED_MSS);
        assert!(checksum_is_valid(&p));
    }

    #[test]
    fn an_mss_option_at_an_odd_offset_keeps_the_checksum_valid() {
        let mut p = syn(1440, SYN);
        // nop, mss 1440, nop nop nop: the value sits at TCP offset 23.
        p[60..68].copy_from_slice(&[1, MSS_KIND, 4, 0x05, 0xa0, 1, 1, 1]);
        p[56..58].copy_from_slice(&[0, 0]);
        let sum = tcp_checksum(&p);
        p[56..58].copy_from_slice(&sum.to_be_bytes());
        assert!(clamp(&mut p, 1379));
        assert_eq!(u16::from_be_bytes([p[63], p[64]]), 1379);
        assert!(checksum_is_valid(&p));
    }

    #[test]
    fn leaves_small_mss_non_syn_and_garbage_alone() {
        let mut p = syn(1200, SYN);
        assert!(!clamp(&mut p, CLAMPED_MSS));
        let mut p = syn(1440, 0x10);
        assert!(!clamp(&mut p, CLAMPED_MSS), "not a SYN");
        let mut g = vec![0x60u8; 70];
        assert!(!clamp(&mut g, CLAMPED_MSS));
        let mut short = syn(1440, SYN);
        short[52] = 15 << 4; // header length past the packet
        assert!(!clamp(&mut short, CLAMPED_MSS));
    }

    /// A full-size TCP segment (no options) of `mss` payload bytes, as an IPv6 packet.
    fn segment(mss: u16) -> Vec<u8> {
        let mut p = syn(1460, 0x10);
        p.truncate(60);
        p[52] = 5 << 4; // no options
        p.resize(60 + usize::from(mss), 0xa5);
        p[4..6].copy_from_slice(&(20 + mss).to_be_bytes());
        p
    }

    /// Encrypted by the real ESP code under each suite and mode, a segment of the clamped MSS
    /// fits the link, and so does one of the MSS [`for_overheads`] gives for that SA alone,
    /// which no larger segment does: the constants are checked against what ESP really adds,
    /// not against themselves.
    #[test]
    fn clamped_segments_fit_the_link_once_encrypted() {
        use crate::crypto::{OutboundSa, SaConfig};
        use crate::model::{EncryptionAlgorithm as E, IntegrityAlgorithm as I, Mode};
        // Distinct bytes: 3DES refuses keys whose three parts are equal.
        let keys: Vec<u8> = (0..32u8)
            .map(|i| i.wrapping_mul(37).wrapping_add(1))
            .collect();
        let addr: std::net::Ipv6Addr = "fd00::1".parse().expect("an address");
        for (enc, key_len) in [(E::TripleDesCbc, 24), (E::Aes128Cbc, 16), (E::Null, 0)] {
            for (integ, ikey_len) in [(I::HmacSha1, 20), (I::HmacSha256, 32)] {
                for mode in [Mode::Transport, Mode::Tunnel] {
                    let mut sa = OutboundSa::new(&SaConfig {
                        spi: 0x1000,
                        mode,
                        source: addr,
                        destination: addr,
                        encryption: enc,
                        encryption_key: &keys[..key_len],
                        integrity: integ,
                        integrity_key: &keys[..ikey_len],
                    })
                    .expect("building an SA");
                    let own = for_overheads([sa.max_overhead()]);
                    let mut out = Vec::new();
                    let mut esp_len = |mss: u16| {
                        sa.encapsulate(&segment(mss), &mut out).expect("encrypting");
                        out.len()
                    };
                    let what = format!("{enc:?}/{integ:?}/{mode:?}");
                    assert!(esp_len(CLAMPED_MSS) <= LINK_MTU, "{what}: clamped MSS");
                    assert!(esp_len(own) <= LINK_MTU, "{what}: MSS {own}");
                    // Not needlessly low either: within one cipher block more, one overflows.
                    assert!(
                        (own + 1..=own + 16).any(|mss| esp_len(mss) > LINK_MTU),
                        "{what}: MSS {own} is needlessly low"
                    );
                }
            }
        }
    }
}
