//! The few IPv6 facts ESP needs, read through the `wire` views: the checked packet, and where
//! ESP goes or is among the extension headers (RFC 8200 §4, RFC 4303 §3.1.1).
//!
//! Contract: every function takes untrusted bytes and reports problems as [`EspError`]; the walk
//! is `wire::ExtWalk`, bounded by `MAX_EXT_HEADERS`; nothing panics.

use super::EspError;
pub(crate) use crate::wire::NEXT_HEADER_OFFSET;
use crate::wire::{ExtHeader, ExtWalk, Ipv6Packet, WireError};
use std::net::Ipv6Addr;

pub(crate) use crate::wire::{IPV6_HEADER_LEN, proto};

impl From<WireError> for EspError {
    fn from(error: WireError) -> Self {
        match error {
            WireError::Truncated { what } => EspError::Truncated { what },
            WireError::Malformed { what } => EspError::Malformed { what },
            WireError::TooManyExtHeaders { .. } => EspError::Malformed {
                what: "too many ipv6 extension headers",
            },
            WireError::TooManyVlanTags { .. } => EspError::Malformed {
                what: "too many vlan tags",
            },
        }
    }
}

/// Checks the fixed header of an IPv6 packet and returns the packet trimmed to
/// `40 + Payload Length` (link-layer padding after it is not part of the packet).
pub(crate) fn ipv6_packet(buf: &[u8]) -> Result<&[u8], EspError> {
    Ok(Ipv6Packet::new_checked(buf)?.packet_bytes())
}

/// The destination address of a checked IPv6 packet.
pub(crate) fn destination(packet: &[u8]) -> Ipv6Addr {
    Ipv6Packet::new_unchecked(packet).dst_addr()
}

/// Writes the Payload Length field; `packet` must be at least a header long.
pub(crate) fn set_payload_len(packet: &mut [u8], payload_len: u16) {
    Ipv6Packet::new_unchecked(packet).set_payload_len(payload_len);
}

/// The extension headers of a packet [`ipv6_packet`] checked.
fn walk(packet: &[u8]) -> ExtWalk<'_> {
    ExtWalk::new(Ipv6Packet::new_unchecked(packet))
}

/// One header of [`walk`], refusing a real fragment: ESP works on whole datagrams only
/// (RFC 4303 §3.3.4 outbound, §3.4.1 inbound); an atomic fragment (RFC 6946) is one.
fn whole_datagram(header: Result<ExtHeader<'_>, WireError>) -> Result<ExtHeader<'_>, EspError> {
    let header = header?;
    match header.fragment() {
        Some(f) if !f.is_atomic() => Err(EspError::Fragment),
        _ => Ok(header),
    }
}

/// Where transport-mode ESP goes in an outbound packet.
#[derive(Debug, PartialEq, Eq)]
pub(crate) struct TransportSplit {
    /// Offset where the ESP header is inserted: everything before it stays in clear.
    pub(crate) offset: usize,
    /// Offset of the Next Header field to rewrite to 50 (in the IPv6 header or the last
    /// extension header kept in front).
    pub(crate) next_header_field: usize,
    /// The value that field held: it moves into the ESP trailer.
    pub(crate) next_header: u8,
}

/// Finds the transport-mode insertion point (RFC 4303 §3.1.1): after the hop-by-hop, routing
/// and fragment headers, because intermediate nodes must read them. A destination options
/// header in front of a routing header is for the nodes on the route, so it stays in front
/// too; destination options after the last of those (for the final destination) go inside ESP.
pub(crate) fn transport_split(packet: &[u8]) -> Result<TransportSplit, EspError> {
    let mut walk = walk(packet);
    let mut split = TransportSplit {
        offset: IPV6_HEADER_LEN,
        next_header_field: walk.next_header_field(),
        next_header: walk.next_header(),
    };
    for header in &mut walk {
        let header = whole_datagram(header)?;
        if header.kind != proto::DEST_OPTS {
            split = TransportSplit {
                offset: header.end(),
                next_header_field: header.start,
                next_header: header.next_header(),
            };
        }
    }
    Ok(split)
}

/// Where the ESP header is in an inbound packet.
#[derive(Debug, PartialEq, Eq)]
pub(crate) struct EspLocation {
    /// Offset of the ESP header (the SPI).
    pub(crate) offset: usize,
    /// Offset of the Next Header field that holds 50.
    pub(crate) next_header_field: usize,
}

/// Walks the extension headers in front of ESP (hop-by-hop, routing, fragment, destination
/// options, in any order a sender may have used) to the ESP header.
pub(crate) fn find_esp(packet: &[u8]) -> Result<EspLocation, EspError> {
    let mut walk = walk(packet);
    for header in &mut walk {
        whole_datagram(header)?;
    }
    match walk.next_header() {
        proto::ESP => Ok(EspLocation {
            offset: walk.offset(),
            next_header_field: walk.next_header_field(),
        }),
        other => Err(EspError::NotEsp { next_header: other }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::MAX_EXT_HEADERS;

    /// An IPv6 header with the given next header and payload, payload length filled in.
    fn packet(next_header: u8, payload: &[u8]) -> Vec<u8> {
        let mut p = vec![0x60, 0, 0, 0, 0, 0, next_header, 64];
        p.extend_from_slice(&[0x20, 0x01, 0x0d, 0xb8]);
        p.extend_from_slice(&[0; 12]);
        p.extend_from_slice(&[0x20, 0x01, 0x0d, 0xb8]);
        p.extend_from_slice(&[0; 11]);
        p.push(2);
        p.extend_from_slice(payload);
        let len = u16::try_from(payload.len()).expect("test payload fits");
        set_payload_len(&mut p, len);
        p
    }

    #[test]
    fn fixed_header_checks() {
        let p = packet(59, &[1, 2, 3]);
        assert_eq!(ipv6_packet(&p).expect("valid packet").len(), 43);
        let mut padded = p.clone();
        padded.extend_from_slice(&[0; 7]);
        assert_eq!(ipv6_packet(&padded).expect("padded packet").len(), 43);
        assert!(matches!(
            ipv6_packet(&p[..42]),
            Err(EspError::Truncated { .. })
        ));
        assert!(matches!(
            ipv6_packet(&p[..39]),
            Err(EspError::Truncated { .. })
        ));
        let mut v4 = p.clone();
        v4[0] = 0x45;
        assert!(matches!(ipv6_packet(&v4), Err(EspError::Malformed { .. })));
        assert_eq!(
            destination(&p),
            "2001:db8::2".parse::<Ipv6Addr>().expect("address")
        );
    }

    #[test]
    fn transport_split_places_esp_after_hbh_routing_fragment() {
        // HBH (8) -> DestOpts (8) -> Routing (24) -> DestOpts (8) -> UDP.
        let mut ext = vec![60, 0, 0, 0, 0, 0, 0, 0]; // HBH, next = dest opts
        ext.extend_from_slice(&[43, 0, 0, 0, 0, 0, 0, 0]); // dest opts, next = routing
        ext.extend_from_slice(&[60, 2, 0, 0, 0, 0, 0, 0]); // routing, 24 bytes
        ext.extend_from_slice(&[0; 16]);
        ext.extend_from_slice(&[17, 0, 0, 0, 0, 0, 0, 0]); // dest opts, next = UDP
        ext.extend_from_slice(&[0; 8]);
        // (what, packet, offset, next header field, next header)
        for (what, p, offset, next_header_field, next_header) in [
            ("no extension headers", packet(6, &[0; 20]), 40, 6, 6),
            ("routing and what precedes it", packet(0, &ext), 80, 56, 60),
            (
                "a lone destination options header goes inside",
                packet(60, &[6, 0, 0, 0, 0, 0, 0, 0, 1, 2, 3, 4]),
                40,
                6,
                60,
            ),
            (
                "an atomic fragment stays in front",
                packet(44, &[17, 0, 0, 0, 0, 0, 0, 1, 9, 9]),
                48,
                40,
                17,
            ),
        ] {
            let want = TransportSplit {
                offset,
                next_header_field,
                next_header,
            };
            assert_eq!(transport_split(&p), Ok(want), "{what}");
        }
        // A real fragment (M set, or an offset) is refused.
        for word in [1, 8] {
            let p = packet(44, &[17, 0, 0, word, 0, 0, 0, 1, 9, 9]);
            assert_eq!(transport_split(&p), Err(EspError::Fragment));
        }
    }

    #[test]
    fn walks_are_bounded_and_length_checked() {
        // A chain of destination options longer than the cap.
        let mut ext = Vec::new();
        for _ in 0..=MAX_EXT_HEADERS {
            ext.extend_from_slice(&[60, 0, 0, 0, 0, 0, 0, 0]);
        }
        let too_many = EspError::Malformed {
            what: "too many ipv6 extension headers",
        };
        let truncated = EspError::Truncated {
            what: "ipv6 extension header",
        };
        // ... and a header claiming more bytes than the packet has.
        for (p, want) in [
            (packet(60, &ext), too_many),
            (packet(0, &[50, 3, 0, 0, 0, 0, 0, 0]), truncated),
        ] {
            assert_eq!(transport_split(&p), Err(want));
            assert_eq!(find_esp(&p), Err(want));
        }
        assert_eq!(find_esp(&packet(0, &[])), Err(truncated));
    }

    #[test]
    fn find_esp_through_extension_headers() {
        let p = packet(50, &[0; 8]);
        assert_eq!(
            find_esp(&p).expect("esp"),
            EspLocation {
                offset: 40,
                next_header_field: 6
            }
        );
        let p = packet(0, &[60, 0, 0, 0, 0, 0, 0, 0, 50, 0, 0, 0, 0, 0, 0, 0, 1]);
        assert_eq!(
            find_esp(&p).expect("esp"),
            EspLocation {
                offset: 56,
                next_header_field: 48
            }
        );
        assert_eq!(
            find_esp(&packet(17, &[0; 8])),
            Err(EspError::NotEsp { next_header: 17 })
        );
    }
}
