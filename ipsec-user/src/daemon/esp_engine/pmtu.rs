//! Path-MTU signalling to the local sender (RFC 8201, RFC 4443 §3.2).
//!
//! ESP adds up to ~80 bytes. A full-size packet of a protected flow therefore leaves as two
//! fragments, which halves throughput and loads the peer's reassembly. So when a packet's ESP
//! form exceeds [`PATH_MTU`], the engine still sends it (fragmented: nothing is lost) and also
//! writes an ICMPv6 Packet Too Big into the TUN device, as if from the destination, carrying
//! `PATH_MTU - overhead`. The kernel records that MTU for the destination and TCP shrinks its
//! segments, so the following packets fit unfragmented.

/// The MTU of the links ESP leaves on (Ethernet).
pub const PATH_MTU: usize = 1500;
/// A Packet Too Big message never exceeds the IPv6 minimum MTU (RFC 4443 §2.4 (c)).
const MIN_MTU: usize = 1280;
const IPV6_HEADER: usize = 40;
const ICMPV6_HEADER: usize = 8;

/// Write into `out` an IPv6 packet carrying ICMPv6 Packet Too Big for `packet` (the plaintext
/// IPv6 packet that was too big), with `mtu`, from its destination to its source. `false` when
/// `packet` is not an IPv6 packet.
pub fn packet_too_big(packet: &[u8], mtu: u32, out: &mut Vec<u8>) -> bool {
    if packet.len() < IPV6_HEADER || packet[0] >> 4 != 6 {
        return false;
    }
    let quoted = &packet[..packet.len().min(MIN_MTU - IPV6_HEADER - ICMPV6_HEADER)];
    let icmp_len = ICMPV6_HEADER + quoted.len();
    let (src, dst) = (&packet[24..40], &packet[8..24]);
    out.clear();
    out.extend_from_slice(&[0x60, 0, 0, 0]);
    out.extend_from_slice(&u16::try_from(icmp_len).unwrap_or(u16::MAX).to_be_bytes());
    out.extend_from_slice(&[58, 255]);
    out.extend_from_slice(src);
    out.extend_from_slice(dst);
    out.extend_from_slice(&[2, 0, 0, 0]);
    out.extend_from_slice(&mtu.to_be_bytes());
    out.extend_from_slice(quoted);
    let sum = checksum(src, dst, &out[IPV6_HEADER..]);
    out[IPV6_HEADER + 2..IPV6_HEADER + 4].copy_from_slice(&sum.to_be_bytes());
    true
}

/// The ICMPv6 checksum of `message` (checksum field zero) with the IPv6 pseudo-header.
fn checksum(src: &[u8], dst: &[u8], message: &[u8]) -> u16 {
    let mut sum: u32 = 0;
    let mut add = |bytes: &[u8]| {
        for pair in bytes.chunks(2) {
            let word = u16::from_be_bytes([pair[0], *pair.get(1).unwrap_or(&0)]);
            sum += u32::from(word);
        }
    };
    add(src);
    add(dst);
    add(&u32::try_from(message.len())
        .unwrap_or(u32::MAX)
        .to_be_bytes());
    add(&[0, 0, 0, 58]);
    add(message);
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    !(sum as u16)
}

#[cfg(test)]
mod tests {
    use std::net::Ipv6Addr;

    use super::*;

    fn packet(len: usize) -> Vec<u8> {
        let mut p = vec![0u8; len];
        p[0] = 0x60;
        p[4..6].copy_from_slice(&((len - 40) as u16).to_be_bytes());
        p[6] = 6;
        p[8..24].copy_from_slice(&"fd00::1".parse::<Ipv6Addr>().expect("addr").octets());
        p[24..40].copy_from_slice(&"fd00::2".parse::<Ipv6Addr>().expect("addr").octets());
        p
    }

    #[test]
    fn ptb_goes_back_to_the_sender_and_checksums_to_zero() {
        let mut out = Vec::new();
        assert!(packet_too_big(&packet(1500), 1427, &mut out));
        assert!(out.len() <= MIN_MTU, "a PTB fits the minimum MTU");
        let src: [u8; 16] = out[8..24].try_into().expect("16 bytes");
        let dst: [u8; 16] = out[24..40].try_into().expect("16 bytes");
        assert_eq!(
            (
                Ipv6Addr::from(src).to_string(),
                Ipv6Addr::from(dst).to_string()
            ),
            ("fd00::2".to_string(), "fd00::1".to_string())
        );
        assert_eq!(&out[40..42], &[2, 0], "type 2, code 0");
        assert_eq!(
            u32::from_be_bytes(out[44..48].try_into().expect("4 bytes")),
            1427
        );
        // Summing a message with its checksum in place gives zero.
        assert_eq!(checksum(&out[8..24], &out[24..40], &out[40..]), 0);
    }

    #[test]
    fn small_packets_are_quoted_whole_and_garbage_refused() {
        let mut out = Vec::new();
        assert!(packet_too_big(&packet(100), 1427, &mut out));
        assert_eq!(out.len(), 40 + 8 + 100);
        assert!(!packet_too_big(&[0x45; 60], 1427, &mut out));
        assert!(!packet_too_big(&[0x60; 10], 1427, &mut out));
    }
}
