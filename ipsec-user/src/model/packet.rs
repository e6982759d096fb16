//! The reference packet parser: what the datapath must make of a frame, read through the
//! `wire` views (the eBPF parser is a separate reading of the same rules, over the same
//! `ipsec_common::abi` constants and limits; the differential test and `tests/parsers.rs` hold
//! the two equal):
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

/// The walk bounds are the datapath's own (`ipsec_common::abi`), so the two parsers cannot drift.
pub use crate::wire::{MAX_EXT_HEADERS, MAX_L4_OFFSET, MAX_VLAN_TAGS};

use crate::wire::{
    ETH_HEADER_LEN, EspPacket, EthernetFrame, ExtWalk, IPV6_HEADER_LEN, Icmpv6Packet, Ipv6Packet,
    WireError, ethertype, is_extension_header, ports, proto,
};

use super::{Flow, L4};

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
    let link = match EthernetFrame::new_checked(frame).and_then(|f| f.link()) {
        Ok(link) => link,
        Err(WireError::TooManyVlanTags { .. }) => return whole(Parsed::VlanDepth),
        Err(_) => return whole(Parsed::NotIpv6),
    };
    if link.ethertype != ethertype::IPV6 {
        return whole(Parsed::NotIpv6);
    }
    let Ok(ip) = Ipv6Packet::new_checked(frame.get(link.offset..).unwrap_or_default()) else {
        return whole(Parsed::Malformed);
    };
    let plain_link = link.offset == ETH_HEADER_LEN;
    parse_ipv6(ip, plain_link, esp_is_terminal)
}

/// The checked IPv6 packet `ip`; `plain_link`: untagged Ethernet in front.
fn parse_ipv6(
    ip: Ipv6Packet<&[u8]>,
    plain_link: bool,
    esp_is_terminal: bool,
) -> (Parsed, Fragment) {
    let whole = |parsed| (parsed, Fragment::Whole);
    let flow = |next_header, l4| {
        Parsed::Flow(Flow {
            src: ip.src_addr(),
            dst: ip.dst_addr(),
            next_header,
            l4,
        })
    };
    let mut walk = ExtWalk::new(ip);
    let mut fragment = Fragment::Whole;
    for header in &mut walk {
        let header = match header {
            Ok(header) => header,
            Err(WireError::TooManyExtHeaders { .. }) => return whole(Parsed::ExtLimit),
            Err(_) => return whole(Parsed::Malformed),
        };
        if let Some(f) = header.fragment() {
            let id = f.identification();
            if f.frag_offset() != 0 {
                let next_header = f.next_header();
                if esp_is_terminal && next_header == proto::ESP {
                    return whole(Parsed::EspFragment);
                }
                let proto_known = !is_extension_header(next_header);
                return (
                    flow(next_header, L4::Opaque),
                    Fragment::NonFirst { id, proto_known },
                );
            }
            if f.more_fragments() && fragment == Fragment::Whole {
                fragment = Fragment::First { id };
            }
        }
        if header.end() > MAX_L4_OFFSET {
            return whole(Parsed::ExtLimit);
        }
    }
    let (next_header, l4) = (walk.next_header(), walk.rest());
    let parsed = match next_header {
        proto::TCP | proto::UDP => match ports(l4) {
            Ok((src, dst)) => flow(next_header, L4::Ports { src, dst }),
            Err(_) => Parsed::Malformed,
        },
        proto::ICMPV6 => match Icmpv6Packet::new_checked(l4) {
            Ok(icmp) => flow(
                next_header,
                L4::Icmp {
                    kind: icmp.msg_type(),
                },
            ),
            Err(_) => Parsed::Malformed,
        },
        proto::ESP if esp_is_terminal => match EspPacket::new_checked(l4) {
            Ok(esp) => Parsed::Esp {
                spi: esp.spi(),
                plain: plain_link && walk.offset() == IPV6_HEADER_LEN,
            },
            Err(_) => Parsed::Malformed,
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
    use std::net::Ipv6Addr;

    fn frame(next_header: u8, payload: &[u8]) -> Vec<u8> {
        let mut f = vec![0u8; 12];
        f.extend_from_slice(&[0x86, 0xdd]);
        let mut ip = [0u8; 40];
        ip[0] = 0x60;
        ip[4..6].copy_from_slice(
            &u16::try_from(payload.len())
                .expect("test payload fits")
                .to_be_bytes(),
        );
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
        for (next_header, proto_known) in [(17, true), (60, false)] {
            let later = [next_header, 0, 0, 0x10, 0, 0, 0, 9, 1, 2, 3, 4];
            assert_eq!(
                parse_frame_fragment(&frame(44, &later), false).1,
                Fragment::NonFirst { id: 9, proto_known },
                "next header {next_header}"
            );
        }
    }
}
