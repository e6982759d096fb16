//! The reference packet parser: what the datapath must make of a frame, written plainly over
//! slices (no shared code with the eBPF parser), so the differential test compares two
//! independent readings of the same rules:
//!
//! - Ethernet with at most one 802.1Q/802.1ad tag; anything but IPv6 is not ours.
//! - IPv6 version 6 and a payload length that fits the frame, else malformed; parsing never
//!   looks past the end of the payload.
//! - At most 8 extension headers (hop-by-hop, routing, fragment, destination options) are
//!   walked; a 9th is an extension-chain-limit drop, as is a transport header starting more than
//!   1024 bytes after the IPv6 header. A header that does not fit the payload is malformed.
//! - A non-first fragment has no ports: its flow is opaque, with the fragment header's next
//!   header as protocol. Inbound, a non-first fragment of ESP is left to reassembly.
//! - TCP/UDP need their 4 port bytes and ICMPv6 its 4-byte header, else malformed. ESP inbound
//!   needs its 8-byte header and yields the SPI.

use std::net::Ipv6Addr;

use super::{Flow, L4};

/// Walk bound on extension headers (mirrors `ipsec_common::abi::MAX_EXT_HEADERS`).
pub const MAX_EXT_HEADERS: usize = 8;
/// Deepest transport-header offset from the IPv6 header (mirrors `abi::MAX_L4_OFFSET`).
pub const MAX_L4_OFFSET: usize = 1024;

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
    Flow(Flow),
}

/// Parse an Ethernet frame. With `esp_is_terminal` (ingress), ESP yields [`Parsed::Esp`];
/// otherwise ESP is an opaque flow like any protocol without ports.
pub fn parse_frame(frame: &[u8], esp_is_terminal: bool) -> Parsed {
    if frame.len() < 14 {
        return Parsed::NotIpv6;
    }
    let mut ethertype = u16::from_be_bytes([frame[12], frame[13]]);
    let mut l3 = 14;
    if ethertype == 0x8100 || ethertype == 0x88a8 {
        if frame.len() < 18 {
            return Parsed::NotIpv6;
        }
        ethertype = u16::from_be_bytes([frame[16], frame[17]]);
        l3 = 18;
    }
    if ethertype != 0x86dd {
        return Parsed::NotIpv6;
    }
    let Some(ip) = frame.get(l3..l3 + 40) else {
        return Parsed::Malformed;
    };
    if ip[0] >> 4 != 6 {
        return Parsed::Malformed;
    }
    let payload_len = usize::from(u16::from_be_bytes([ip[4], ip[5]]));
    let Some(packet) = frame.get(l3..l3 + 40 + payload_len) else {
        return Parsed::Malformed;
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
    loop {
        match next_header {
            0 | 43 | 60 | 44 if walked == MAX_EXT_HEADERS => return Parsed::ExtLimit,
            0 | 43 | 60 => {
                let Some(h) = packet.get(offset..offset + 2) else {
                    return Parsed::Malformed;
                };
                next_header = h[0];
                offset += (usize::from(h[1]) + 1) * 8;
            }
            44 => {
                let Some(h) = packet.get(offset..offset + 8) else {
                    return Parsed::Malformed;
                };
                next_header = h[0];
                offset += 8;
                let fragment_offset = u16::from_be_bytes([h[2], h[3]]) >> 3;
                if fragment_offset != 0 {
                    if esp_is_terminal && next_header == 50 {
                        return Parsed::EspFragment;
                    }
                    return flow(next_header, L4::Opaque);
                }
            }
            _ => break,
        }
        if offset > packet.len() {
            return Parsed::Malformed;
        }
        if offset > MAX_L4_OFFSET {
            return Parsed::ExtLimit;
        }
        walked += 1;
    }
    let l4 = &packet[offset..];
    match next_header {
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
}
