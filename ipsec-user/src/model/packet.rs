//! The reference packet parser: what the datapath must make of a frame, written plainly over
//! slices (no shared code with the eBPF parser), so the differential test compares two
//! independent readings of the same rules:
//!
//! - Ethernet with at most two 802.1Q/802.1ad tags (a third tag is dropped: it could hide IPv6);
//!   anything but IPv6 is not ours.
//! - IPv6 version 6 and a payload length that fits the frame, else malformed; parsing never
//!   looks past the end of the payload.
//! - At most 8 extension headers (hop-by-hop, routing, fragment, destination options) are
//!   walked; a 9th is an extension-chain-limit drop, as is a transport header starting more than
//!   1024 bytes after the IPv6 header. A header that does not fit the payload is malformed.
//! - A non-first fragment has no ports: its flow is opaque, with the fragment header's next
//!   header as protocol, which is not visible when it is an extension header. Inbound, a
//!   non-first fragment of ESP is left to reassembly. A first fragment (offset 0, more to come)
//!   is a flow like any other; the identification of either is reported ([`Fragment`]) so the
//!   classifier can give a datagram's later fragments its first fragment's verdict. An atomic
//!   fragment (offset 0, no more) is a whole datagram (RFC 6946).
//! - TCP/UDP need their 4 port bytes and ICMPv6 its 4-byte header, else malformed. ESP inbound
//!   needs its 8-byte header and yields the SPI.

use std::net::Ipv6Addr;

/// The walk bounds are the datapath's own (`ipsec_common::abi`), so the two parsers cannot drift.
pub use ipsec_common::abi::{MAX_EXT_HEADERS, MAX_L4_OFFSET, MAX_VLAN_TAGS};

use super::{Flow, L4};

/// Extension headers after which a non-first fragment's protocol is not visible (RFC 8200 §4 and
/// the later ones IANA lists). Written out here rather than shared, so the reference and the
/// eBPF parser are two readings.
const EXTENSION_HEADERS: [u8; 10] = [0, 43, 44, 51, 60, 135, 139, 140, 253, 254];

/// What the datapath makes of a frame.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Parsed {
    NotIpv6,
    Malformed,
    ExtLimit,
    Esp {
        spi: u32,
        /// Untagged Ethernet with ESP right after the IPv6 header: the shape XDP may hand to
        /// the engine's AF_XDP socket.
        plain: bool,
    },
    /// A non-first fragment of ESP, inbound: passed on to reassembly (the first fragment carries
    /// the SPI and is checked).
    EspFragment,
    /// More than two VLAN tags.
    VlanDepth,
    Flow(Flow),
}

/// What a frame's fragment header says (see the module docs).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Fragment {
    Whole,
    First { id: u32 },
    NonFirst { id: u32, proto_known: bool },
}

/// Parse an Ethernet frame. With `esp_is_terminal` (ingress), ESP yields [`Parsed::Esp`];
/// otherwise ESP is an opaque flow like any protocol without ports.
pub fn parse_frame(frame: &[u8], esp_is_terminal: bool) -> Parsed {
    parse_frame_fragment(frame, esp_is_terminal).0
}

/// [`parse_frame`], and what the frame's fragment header says.
pub fn parse_frame_fragment(frame: &[u8], esp_is_terminal: bool) -> (Parsed, Fragment) {
    let whole = |parsed| (parsed, Fragment::Whole);
    if frame.len() < 14 {
        return whole(Parsed::NotIpv6);
    }
    let mut ethertype = u16::from_be_bytes([frame[12], frame[13]]);
    let mut l3 = 14;
    let mut tags = 0;
    while ethertype == 0x8100 || ethertype == 0x88a8 {
        if tags == MAX_VLAN_TAGS {
            return whole(Parsed::VlanDepth);
        }
        let Some(tag) = frame.get(l3..l3 + 4) else {
            return whole(Parsed::NotIpv6);
        };
        ethertype = u16::from_be_bytes([tag[2], tag[3]]);
        l3 += 4;
        tags += 1;
    }
    if ethertype != 0x86dd {
        return whole(Parsed::NotIpv6);
    }
    let (parsed, fragment) = parse_ipv6(frame, l3, esp_is_terminal);
    (parsed, fragment)
}

/// The IPv6 packet at `l3` of `frame`.
fn parse_ipv6(frame: &[u8], l3: usize, esp_is_terminal: bool) -> (Parsed, Fragment) {
    let whole = |parsed| (parsed, Fragment::Whole);
    let Some(ip) = frame.get(l3..l3 + 40) else {
        return whole(Parsed::Malformed);
    };
    if ip[0] >> 4 != 6 {
        return whole(Parsed::Malformed);
    }
    let payload_len = usize::from(u16::from_be_bytes([ip[4], ip[5]]));
    let Some(packet) = frame.get(l3..l3 + 40 + payload_len) else {
        return whole(Parsed::Malformed);
    };
    let src = Ipv6Addr::from(<[u8; 16]>::try_from(&ip[8..24]).expect("16 bytes"));
    let dst = Ipv6Addr::from(<[u8; 16]>::try_from(&ip[24..40]).expect("16 bytes"));
    let flow = |next_header, l4| {
        Parsed::Flow(Flow {
            src,
            dst,
            next_header,
            l4,
        })
    };

    let mut next_header = ip[6];
    let mut offset = 40;
    let mut walked = 0;
    let mut fragment = Fragment::Whole;
    loop {
        match next_header {
            0 | 43 | 60 | 44 if walked == MAX_EXT_HEADERS => return whole(Parsed::ExtLimit),
            0 | 43 | 60 => {
                let Some(h) = packet.get(offset..offset + 2) else {
                    return whole(Parsed::Malformed);
                };
                next_header = h[0];
                offset += (usize::from(h[1]) + 1) * 8;
            }
            44 => {
                let Some(h) = packet.get(offset..offset + 8) else {
                    return whole(Parsed::Malformed);
                };
                next_header = h[0];
                offset += 8;
                let word = u16::from_be_bytes([h[2], h[3]]);
                let id = u32::from_be_bytes([h[4], h[5], h[6], h[7]]);
                if word >> 3 != 0 {
                    if esp_is_terminal && next_header == 50 {
                        return whole(Parsed::EspFragment);
                    }
                    let proto_known = !EXTENSION_HEADERS.contains(&next_header);
                    return (
                        flow(next_header, L4::Opaque),
                        Fragment::NonFirst { id, proto_known },
                    );
                }
                if word & 1 == 1 && fragment == Fragment::Whole {
                    fragment = Fragment::First { id };
                }
            }
            _ => break,
        }
        if offset > packet.len() {
            return whole(Parsed::Malformed);
        }
        if offset > MAX_L4_OFFSET {
            return whole(Parsed::ExtLimit);
        }
        walked += 1;
    }
    let l4 = &packet[offset..];
    let parsed = match next_header {
        6 | 17 => match l4.get(..4) {
            Some(p) => flow(
                next_header,
                L4::Ports {
                    src: u16::from_be_bytes([p[0], p[1]]),
                    dst: u16::from_be_bytes([p[2], p[3]]),
                },
            ),
            None => Parsed::Malformed,
        },
        58 => match l4.get(..4) {
            Some(p) => flow(next_header, L4::Icmp { kind: p[0] }),
            None => Parsed::Malformed,
        },
        50 if esp_is_terminal => match l4.get(..8) {
            Some(p) => Parsed::Esp {
                spi: u32::from_be_bytes([p[0], p[1], p[2], p[3]]),
                plain: l3 == 14 && offset == 40,
            },
            None => Parsed::Malformed,
        },
        other => flow(other, L4::Opaque),
    };
    match parsed {
        Parsed::Flow(_) => (parsed, fragment),
        other => whole(other),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frame(next_header: u8, payload: &[u8]) -> Vec<u8> {
        let mut f = vec![0u8; 12];
        f.extend_from_slice(&[0x86, 0xdd]);
        let mut ip = [0u8; 40];
        ip[0] = 0x60;
        ip[4..6].copy_from_slice(&(payload.len() as u16).to_be_bytes());
        ip[6] = next_header;
        ip[7] = 64;
        ip[8..24].copy_from_slice(&"2001:db8::1".parse::<Ipv6Addr>().expect("addr").octets());
        ip[24..40].copy_from_slice(&"2001:db8::2".parse::<Ipv6Addr>().expect("addr").octets());
        f.extend_from_slice(&ip);
        f.extend_from_slice(payload);
        f
    }

    #[test]
    fn udp_ports() {
        let p = parse_frame(&frame(17, &[0, 53, 1, 0, 0, 8, 0, 0]), true);
        let Parsed::Flow(flow) = p else {
            panic!("expected a flow, got {p:?}")
        };
        assert_eq!(flow.l4, L4::Ports { src: 53, dst: 256 });
    }

    #[test]
    fn truncated_tcp_is_malformed() {
        assert_eq!(parse_frame(&frame(6, &[0, 1]), true), Parsed::Malformed);
    }

    #[test]
    fn payload_length_past_frame_is_malformed() {
        let mut f = frame(17, &[0; 8]);
        f[18..20].copy_from_slice(&100u16.to_be_bytes());
        assert_eq!(parse_frame(&f, true), Parsed::Malformed);
    }

    #[test]
    fn nine_extension_headers_hit_the_limit() {
        let mut payload = Vec::new();
        for _ in 0..9 {
            payload.extend_from_slice(&[60, 0, 0, 0, 0, 0, 0, 0]);
        }
        payload.extend_from_slice(&[0; 8]);
        assert_eq!(parse_frame(&frame(60, &payload), true), Parsed::ExtLimit);
    }

    #[test]
    fn non_first_fragment_is_opaque() {
        let payload = [6, 0, 0, 8, 0, 0, 0, 1, 0, 0, 0, 0];
        let Parsed::Flow(flow) = parse_frame(&frame(44, &payload), true) else {
            panic!("expected a flow")
        };
        assert_eq!((flow.next_header, flow.l4), (6, L4::Opaque));
    }

    #[test]
    fn esp_spi_inbound_only() {
        let payload = [0, 0, 0x10, 0, 0, 0, 0, 1];
        assert_eq!(
            parse_frame(&frame(50, &payload), true),
            Parsed::Esp {
                spi: 0x1000,
                plain: true
            }
        );
        assert!(matches!(
            parse_frame(&frame(50, &payload), false),
            Parsed::Flow(_)
        ));
    }

    #[test]
    fn vlan_tag_and_non_ipv6() {
        let mut f = frame(17, &[0; 8]);
        f.splice(12..12, [0x81, 0x00, 0x00, 0x05]);
        assert!(matches!(parse_frame(&f, true), Parsed::Flow(_)));
        f[16] = 0x08;
        f[17] = 0x00;
        assert_eq!(parse_frame(&f, true), Parsed::NotIpv6);
    }

    #[test]
    fn two_tags_parse_and_a_third_is_dropped() {
        let mut f = frame(17, &[0; 8]);
        f.splice(12..12, [0x88, 0xa8, 0x00, 0x05, 0x81, 0x00, 0x00, 0x06]);
        assert!(matches!(parse_frame(&f, true), Parsed::Flow(_)));
        f.splice(12..12, [0x81, 0x00, 0x00, 0x07]);
        assert_eq!(parse_frame(&f, true), Parsed::VlanDepth);
    }

    #[test]
    fn fragment_identity_and_kind() {
        // First fragment (offset 0, M=1) of UDP: ports visible, identification reported.
        let mut first = vec![17, 0, 0, 1, 0xde, 0xad, 0xbe, 0xef];
        first.extend_from_slice(&[0, 53, 1, 0, 0, 8, 0, 0]);
        let (parsed, fragment) = parse_frame_fragment(&frame(44, &first), true);
        assert!(matches!(
            parsed,
            Parsed::Flow(Flow {
                l4: L4::Ports { .. },
                ..
            })
        ));
        assert_eq!(fragment, Fragment::First { id: 0xdead_beef });
        // Atomic fragment (offset 0, M=0): a whole datagram.
        first[3] = 0;
        assert_eq!(
            parse_frame_fragment(&frame(44, &first), true).1,
            Fragment::Whole
        );
        // Later fragment of UDP: protocol known; after a destination-options header: not.
        let later = [17, 0, 0, 0x10, 0, 0, 0, 9, 1, 2, 3, 4];
        assert_eq!(
            parse_frame_fragment(&frame(44, &later), true).1,
            Fragment::NonFirst {
                id: 9,
                proto_known: true
            }
        );
        let hidden = [60, 0, 0, 0x10, 0, 0, 0, 9, 1, 2, 3, 4];
        assert_eq!(
            parse_frame_fragment(&frame(44, &hidden), false).1,
            Fragment::NonFirst {
                id: 9,
                proto_known: false
            }
        );
    }
}
