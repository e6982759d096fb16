//! The few IPv6 header facts ESP needs: the fixed header, and the walk over the extension
//! headers that stay in front of the ESP header (RFC 8200 §4, RFC 4303 §3.1.1).
//!
//! Contract: every function takes untrusted bytes, checks each length before reading, bounds
//! the walk by [`MAX_EXT_HEADERS`], and reports problems as [`EspError`]; nothing panics.

use super::EspError;
use std::net::Ipv6Addr;

/// Length of the fixed IPv6 header, RFC 8200 §3.
pub(crate) const IPV6_HEADER_LEN: usize = 40;
/// Offset of the Payload Length field in the IPv6 header.
pub(crate) const PAYLOAD_LEN_OFFSET: usize = 4;
/// Offset of the Next Header field in the IPv6 header.
pub(crate) const NEXT_HEADER_OFFSET: usize = 6;

/// IANA protocol numbers used here.
pub(crate) mod proto {
    pub(crate) const HOP_BY_HOP: u8 = 0;
    pub(crate) const IPV6: u8 = 41;
    pub(crate) const ROUTING: u8 = 43;
    pub(crate) const FRAGMENT: u8 = 44;
    pub(crate) const ESP: u8 = 50;
    pub(crate) const NO_NEXT_HEADER: u8 = 59;
    pub(crate) const DEST_OPTS: u8 = 60;
}

/// Longest extension-header chain walked before ESP; real packets carry two or three.
pub(crate) const MAX_EXT_HEADERS: usize = 8;

/// Checks the fixed header of an IPv6 packet and returns the packet trimmed to
/// `40 + Payload Length` (link-layer padding after it is not part of the packet).
pub(crate) fn ipv6_packet(buf: &[u8]) -> Result<&[u8], EspError> {
    if buf.len() < IPV6_HEADER_LEN {
        return Err(EspError::Truncated {
            what: "ipv6 header",
        });
    }
    if buf[0] >> 4 != 6 {
        return Err(EspError::Malformed {
            what: "ip version is not 6",
        });
    }
    let payload_len = usize::from(u16::from_be_bytes([
        buf[PAYLOAD_LEN_OFFSET],
        buf[PAYLOAD_LEN_OFFSET + 1],
    ]));
    buf.get(..IPV6_HEADER_LEN + payload_len)
        .ok_or(EspError::Truncated {
            what: "ipv6 payload shorter than its payload length",
        })
}

/// The destination address of a checked IPv6 packet.
pub(crate) fn destination(packet: &[u8]) -> Ipv6Addr {
    let mut addr = [0; 16];
    addr.copy_from_slice(&packet[24..40]);
    Ipv6Addr::from(addr)
}

/// Writes the Payload Length field; `packet` must be at least a header long.
pub(crate) fn set_payload_len(packet: &mut [u8], payload_len: u16) {
    packet[PAYLOAD_LEN_OFFSET..PAYLOAD_LEN_OFFSET + 2].copy_from_slice(&payload_len.to_be_bytes());
}

/// One extension header seen during a walk.
struct ExtHeader {
    /// Its own type (the Next Header value that announced it).
    kind: u8,
    /// Offset of its Next Header field (its first byte).
    start: usize,
    /// Offset just past it.
    end: usize,
}

/// Reads the extension header of type `kind` at `start`; refuses a real fragment.
fn ext_header(packet: &[u8], kind: u8, start: usize) -> Result<ExtHeader, EspError> {
    let truncated = EspError::Truncated {
        what: "ipv6 extension header",
    };
    let end = if kind == proto::FRAGMENT {
        // RFC 8200 §4.5: fixed 8 bytes. Offset 0 with M clear is an atomic fragment
        // (RFC 6946), a whole datagram; anything else is a piece of one, and ESP works on
        // whole datagrams only (RFC 4303 §3.3.4 outbound, §3.4.1 inbound).
        let header = packet.get(start..start + 8).ok_or(truncated)?;
        if u16::from_be_bytes([header[2], header[3]]) & 0xfff9 != 0 {
            return Err(EspError::Fragment);
        }
        start + 8
    } else {
        // Hop-by-hop, routing and destination options: (Hdr Ext Len + 1) * 8 bytes.
        let len = packet.get(start + 1).ok_or(truncated)?;
        start + (usize::from(*len) + 1) * 8
    };
    if end > packet.len() {
        return Err(truncated);
    }
    Ok(ExtHeader { kind, start, end })
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
    let mut split = TransportSplit {
        offset: IPV6_HEADER_LEN,
        next_header_field: NEXT_HEADER_OFFSET,
        next_header: packet[NEXT_HEADER_OFFSET],
    };
    let mut field = NEXT_HEADER_OFFSET;
    let mut pos = IPV6_HEADER_LEN;
    for _ in 0..MAX_EXT_HEADERS {
        let kind = packet[field];
        if !matches!(
            kind,
            proto::HOP_BY_HOP | proto::ROUTING | proto::FRAGMENT | proto::DEST_OPTS
        ) {
            return Ok(split);
        }
        let header = ext_header(packet, kind, pos)?;
        if header.kind != proto::DEST_OPTS {
            split = TransportSplit {
                offset: header.end,
                next_header_field: header.start,
                next_header: packet[header.start],
            };
        }
        field = header.start;
        pos = header.end;
    }
    if matches!(
        packet[field],
        proto::HOP_BY_HOP | proto::ROUTING | proto::FRAGMENT | proto::DEST_OPTS
    ) {
        return Err(EspError::Malformed {
            what: "too many ipv6 extension headers",
        });
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
    let mut field = NEXT_HEADER_OFFSET;
    let mut pos = IPV6_HEADER_LEN;
    for _ in 0..=MAX_EXT_HEADERS {
        match packet[field] {
            proto::ESP => {
                return Ok(EspLocation {
                    offset: pos,
                    next_header_field: field,
                });
            }
            kind @ (proto::HOP_BY_HOP | proto::ROUTING | proto::FRAGMENT | proto::DEST_OPTS) => {
                let header = ext_header(packet, kind, pos)?;
                field = header.start;
                pos = header.end;
            }
            other => return Err(EspError::NotEsp { next_header: other }),
        }
    }
    Err(EspError::Malformed {
        what: "too many ipv6 extension headers",
    })
}

#[cfg(test)]
mod tests {
    use super::*;

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
        // No extension headers: ESP right after the fixed header.
        let p = packet(6, &[0; 20]);
        assert_eq!(
            transport_split(&p).expect("split"),
            TransportSplit {
                offset: 40,
                next_header_field: 6,
                next_header: 6
            }
        );
        // HBH (8) -> DestOpts (8) -> Routing (24) -> DestOpts (8) -> UDP.
        let mut ext = vec![60, 0, 0, 0, 0, 0, 0, 0]; // HBH, next = dest opts
        ext.extend_from_slice(&[43, 0, 0, 0, 0, 0, 0, 0]); // dest opts, next = routing
        ext.extend_from_slice(&[60, 2, 0, 0, 0, 0, 0, 0]); // routing, 24 bytes
        ext.extend_from_slice(&[0; 16]);
        ext.extend_from_slice(&[17, 0, 0, 0, 0, 0, 0, 0]); // dest opts, next = UDP
        ext.extend_from_slice(&[0; 8]);
        let p = packet(0, &ext);
        assert_eq!(
            transport_split(&p).expect("split"),
            TransportSplit {
                offset: 40 + 40,
                next_header_field: 56,
                next_header: 60
            }
        );
        // A lone destination options header goes inside ESP.
        let p = packet(60, &[6, 0, 0, 0, 0, 0, 0, 0, 1, 2, 3, 4]);
        assert_eq!(
            transport_split(&p).expect("split"),
            TransportSplit {
                offset: 40,
                next_header_field: 6,
                next_header: 60
            }
        );
        // An atomic fragment stays in front; a real fragment is refused.
        let p = packet(44, &[17, 0, 0, 0, 0, 0, 0, 1, 9, 9]);
        assert_eq!(
            transport_split(&p).expect("split"),
            TransportSplit {
                offset: 48,
                next_header_field: 40,
                next_header: 17
            }
        );
        let p = packet(44, &[17, 0, 0, 1, 0, 0, 0, 1, 9, 9]);
        assert_eq!(transport_split(&p), Err(EspError::Fragment));
        let p = packet(44, &[17, 0, 0, 8, 0, 0, 0, 1, 9, 9]);
        assert_eq!(transport_split(&p), Err(EspError::Fragment));
    }

    #[test]
    fn walks_are_bounded_and_length_checked() {
        // A chain of destination options longer than the cap.
        let mut ext = Vec::new();
        for _ in 0..=MAX_EXT_HEADERS {
            ext.extend_from_slice(&[60, 0, 0, 0, 0, 0, 0, 0]);
        }
        let p = packet(60, &ext);
        assert!(matches!(
            transport_split(&p),
            Err(EspError::Malformed { .. })
        ));
        assert!(matches!(find_esp(&p), Err(EspError::Malformed { .. })));
        // A header claiming more bytes than the packet has.
        let p = packet(0, &[50, 3, 0, 0, 0, 0, 0, 0]);
        assert!(matches!(
            transport_split(&p),
            Err(EspError::Truncated { .. })
        ));
        assert!(matches!(find_esp(&p), Err(EspError::Truncated { .. })));
        let p = packet(0, &[]);
        assert!(matches!(find_esp(&p), Err(EspError::Truncated { .. })));
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
