//! ESP in UDP (RFC 3948) in the engine core: the shape of what an SA with `udp_encap` sends,
//! and the check that each SA accepts only its own shape.
//!
//! Contract:
//! - Outbound, an SA with `udp_encap` sends `[IPv6 fixed header, next header 17][UDP][ESP]`:
//!   [`make_room`] turns the framed packet into that shape before sealing (transport mode's kept
//!   extension headers are left out, as the send paths leave them out of plain ESP too), and
//!   [`finish`] writes the UDP header after sealing with the checksum field 0, which no packet
//!   leaves with: the send path completes it ([`complete_checksum`], over the IPv6
//!   pseudo-header and the sealed ESP; RFC 8200 §8.1: mandatory over IPv6, strongSwan's socket
//!   checks it) for a packet sent alone, and a run sent as one UDP GSO frame has it computed per
//!   segment by the device or the kernel (`engine::udp_gso`), so it is never computed twice. The
//!   returned `esp_offset` is the UDP header's: what leaves is `buf[esp_offset..]`, and
//!   [`is_udp`] tells the send paths that it is UDP rather than ESP.
//! - Inbound, [`accepts`]: UDP-encapsulated ESP only for an SA with `udp_encap` whose local
//!   (destination) port it arrived on, plain ESP only for an SA without: a mismatch is dropped
//!   before any cryptography (RFC 3948 §3.2 wants receivers to check the encapsulation the SA
//!   was negotiated with; accepting both would let a third party switch the shape of a flow).
//!   The peer's source port is not checked: a NAT may move it (RFC 3948 §3.1).
//! - The UDP checksum of received ESP is not verified: the ICV covers every ESP byte and is
//!   checked before anything is decrypted (RFC 3948 §3.1.2 lets receivers skip it), while the
//!   UDP length must agree with the IPv6 payload length ([`split`]), so no byte outside the
//!   datagram is taken for ESP.

use std::net::Ipv6Addr;

use crate::crypto::burst::Framed;
use crate::model::UdpEncap;
use crate::wire::{IPV6_HEADER_LEN, NEXT_HEADER_OFFSET, UdpPacket, checksum, proto};

/// The UDP header (RFC 768).
pub const UDP_HEADER_LEN: usize = 8;

/// Where the UDP header of UDP-encapsulated ESP starts in an outgoing buffer.
const UDP_OFFSET: usize = IPV6_HEADER_LEN;

/// Rewrites the framed packet in `out` (not sealed yet) to `[IPv6][UDP (zeroed)][ESP]` and
/// moves `framed`'s offsets with it. Returns the offset the caller sends from (the UDP header).
pub(super) fn make_room(out: &mut Vec<u8>, framed: &mut Framed) -> usize {
    let esp = framed.encapsulated.esp_offset;
    let new_esp = UDP_OFFSET + UDP_HEADER_LEN;
    out.splice(UDP_OFFSET..esp, [0; UDP_HEADER_LEN]);
    // `esp` is at least the fixed header's length: the offsets move by the same amount.
    let moved = |offset: usize| offset - esp + new_esp;
    framed.iv_offset = moved(framed.iv_offset);
    framed.icv_offset = moved(framed.icv_offset);
    framed.encapsulated.esp_offset = new_esp;
    out[NEXT_HEADER_OFFSET] = proto::UDP;
    let payload = u16::try_from(out.len() - IPV6_HEADER_LEN).unwrap_or(u16::MAX);
    out[4..6].copy_from_slice(&payload.to_be_bytes());
    UDP_OFFSET
}

/// Writes the UDP header of a sealed packet `make_room` shaped: ports, length, and a checksum
/// field of 0 for the send path to complete ([`complete_checksum`]).
pub(super) fn finish(buf: &mut [u8], encap: UdpEncap) {
    let Some(datagram) = buf
        .get_mut(UDP_OFFSET..)
        .filter(|d| d.len() >= UDP_HEADER_LEN)
    else {
        return;
    };
    let length = u16::try_from(datagram.len()).unwrap_or(u16::MAX);
    let header = [
        encap.source_port.to_be_bytes(),
        encap.destination_port.to_be_bytes(),
        length.to_be_bytes(),
        [0, 0],
    ];
    datagram[..UDP_HEADER_LEN].copy_from_slice(header.as_flattened());
}

/// Completes the UDP checksum of an outgoing ESP-in-UDP packet [`finish`] wrote (`buf` as the
/// core left it: the IPv6 packet, UDP at [`UDP_OFFSET`]), sent from `source` to `destination`.
/// A field that is not 0 is left alone.
pub fn complete_checksum(buf: &mut [u8], source: Ipv6Addr, destination: Ipv6Addr) {
    let Some(datagram) = buf
        .get_mut(UDP_OFFSET..)
        .filter(|d| d.len() >= UDP_HEADER_LEN && d[6..8] == [0, 0])
    else {
        return;
    };
    let sum = checksum::upper_layer(
        &source.octets(),
        &destination.octets(),
        proto::UDP,
        datagram,
    );
    // A computed 0 is sent as all ones: 0 means "no checksum", refused over IPv6 (RFC 8200 §8.1).
    let sum = if sum == 0 { 0xffff } else { sum };
    datagram[6..8].copy_from_slice(&sum.to_be_bytes());
}

/// Whether an outgoing buffer whose send part starts at `esp_offset` is UDP-encapsulated ESP
/// (the shape [`make_room`] makes) rather than plain ESP.
pub fn is_udp(buf: &[u8], esp_offset: usize) -> bool {
    esp_offset == UDP_OFFSET && buf.get(NEXT_HEADER_OFFSET) == Some(&proto::UDP)
}

/// The ports of a received UDP datagram, and its payload (the ESP), if its Length field agrees
/// with `datagram` (the IPv6 payload) and the payload is not a non-ESP marker or keepalive.
pub fn split(datagram: &[u8]) -> Option<(UdpEncap, &[u8])> {
    let udp = UdpPacket::new_checked(datagram).ok()?;
    if usize::from(udp.length()) != datagram.len() {
        return None;
    }
    let encap = UdpEncap {
        source_port: udp.src_port(),
        destination_port: udp.dst_port(),
    };
    let esp = &datagram[UDP_HEADER_LEN..];
    // The non-ESP marker (IKE) and keepalives are not ESP (RFC 3948 §2.2, §2.3).
    if esp.len() < 8 || esp[..4] == [0; 4] {
        return None;
    }
    Some((encap, esp))
}

/// Whether an SA encapsulated as `sa` accepts ESP that arrived as `arrived` (see the module).
pub fn accepts(sa: Option<UdpEncap>, arrived: Option<UdpEncap>) -> bool {
    match (sa, arrived) {
        (None, None) => true,
        (Some(sa), Some(arrived)) => sa.destination_port == arrived.destination_port,
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_sa_accepts_only_its_own_shape() {
        let encap = |source_port, destination_port| {
            Some(UdpEncap {
                source_port,
                destination_port,
            })
        };
        assert!(accepts(None, None));
        assert!(!accepts(None, encap(4500, 4500)));
        assert!(!accepts(encap(4500, 4500), None));
        assert!(accepts(encap(4500, 4500), encap(4500, 4500)));
        // The peer's port may be moved by a NAT; ours may not.
        assert!(accepts(encap(4500, 4500), encap(31_000, 4500)));
        assert!(!accepts(encap(4500, 4500), encap(4500, 4501)));
    }

    #[test]
    fn split_wants_a_consistent_length_and_an_spi() {
        let mut datagram = vec![0x11, 0x94, 0x11, 0x94, 0, 16, 0, 0];
        datagram.extend_from_slice(&[0, 0, 1, 0, 0, 0, 0, 1]);
        let (encap, esp) = split(&datagram).expect("esp in udp");
        assert_eq!((encap.source_port, encap.destination_port), (4500, 4500));
        assert_eq!(esp, &datagram[8..]);
        // Trailing bytes the Length does not cover, or a Length past the end: refused.
        let mut longer = datagram.clone();
        longer.push(0);
        assert!(split(&longer).is_none());
        assert!(split(&datagram[..15]).is_none());
        // The non-ESP marker: IKE, not ESP.
        let mut ike = datagram.clone();
        ike[8..12].copy_from_slice(&[0; 4]);
        assert!(split(&ike).is_none());
        // A keepalive.
        assert!(split(&[0x11, 0x94, 0x11, 0x94, 0, 9, 0, 0, 0xff]).is_none());
    }

    /// `finish` leaves the checksum to the send path; the one `complete_checksum` writes
    /// verifies: the complement sum over pseudo-header and datagram is zero.
    #[test]
    fn the_completed_checksum_verifies() {
        let source: Ipv6Addr = "2001:db8::1".parse().expect("address");
        let destination: Ipv6Addr = "2001:db8::2".parse().expect("address");
        let mut buf = vec![0u8; IPV6_HEADER_LEN + UDP_HEADER_LEN];
        buf.extend_from_slice(&[0xde, 0xad, 0xbe, 0xef, 0, 0, 0, 7, 1, 2, 3]);
        let encap = UdpEncap {
            source_port: 4500,
            destination_port: 4501,
        };
        finish(&mut buf, encap);
        assert_eq!(buf[IPV6_HEADER_LEN + 6..IPV6_HEADER_LEN + 8], [0, 0]);
        complete_checksum(&mut buf, source, destination);
        let datagram = &buf[IPV6_HEADER_LEN..];
        let udp = UdpPacket::new_checked(datagram).expect("udp");
        assert_eq!((udp.src_port(), udp.dst_port()), (4500, 4501));
        assert_eq!(usize::from(udp.length()), datagram.len());
        assert_ne!(udp.checksum(), 0);
        let total = checksum::pseudo_header(
            &source.octets(),
            &destination.octets(),
            proto::UDP,
            datagram.len(),
        ) + checksum::sum(datagram);
        assert_eq!(checksum::fold(total), 0xffff);
    }
}
