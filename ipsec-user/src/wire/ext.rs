//! The IPv6 extension-header chain (RFC 8200 §4): the one bounded walk, and the fragment header.

use super::{
    FRAGMENT_HEADER_LEN, Field, IPV6_HEADER_LEN, Ipv6Packet, MAX_EXT_HEADERS, WireError,
    is_walked_extension_header, proto, view,
};

/// Offset of the Next Header field in the fixed IPv6 header.
const IPV6_NEXT_HEADER: usize = 6;

/// One extension header met by [`ExtWalk`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ExtHeader<'a> {
    /// Its type: the Next Header value that announced it.
    pub kind: u8,
    /// Offset (in the IPv6 packet) of the Next Header field that announced it: 6 for the first.
    pub announced_at: usize,
    /// Offset of its first byte (its own Next Header field).
    pub start: usize,
    /// Its bytes, `end - start` of them, all present.
    pub bytes: &'a [u8],
}

impl<'a> ExtHeader<'a> {
    /// Offset just past it.
    pub fn end(&self) -> usize {
        self.start + self.bytes.len()
    }

    /// The header after it.
    pub fn next_header(&self) -> u8 {
        u8::read(self.bytes, 0)
    }

    /// Its fragment header view, if it is one.
    pub fn fragment(&self) -> Option<FragmentHeader<&'a [u8]>> {
        (self.kind == proto::FRAGMENT).then(|| FragmentHeader::new_unchecked(self.bytes))
    }
}

/// The walk over the extension headers of an IPv6 packet, bounded by [`MAX_EXT_HEADERS`]: an
/// iterator over the headers it steps over (`is_walked_extension_header`). It ends at the first
/// other Next Header value (the upper layer, ESP, AH, no next header, ...), which
/// [`Self::next_header`] and [`Self::offset`] then describe, or after an error: a header that
/// does not fit the packet (`Truncated`), or a header past the bound (`TooManyExtHeaders`,
/// reported before the header is read). Offsets are from the start of the IPv6 header.
#[derive(Clone, Debug)]
pub struct ExtWalk<'a> {
    packet: &'a [u8],
    next_header: u8,
    next_header_field: usize,
    offset: usize,
    walked: usize,
    done: bool,
}

impl<'a> ExtWalk<'a> {
    /// Starts after the fixed header of `packet` (link-layer padding is never walked into).
    pub fn new(packet: Ipv6Packet<&'a [u8]>) -> Self {
        Self {
            packet: packet.packet_bytes(),
            next_header: packet.next_header(),
            next_header_field: IPV6_NEXT_HEADER,
            offset: IPV6_HEADER_LEN,
            walked: 0,
            done: false,
        }
    }

    /// The Next Header value after the headers walked so far.
    pub fn next_header(&self) -> u8 {
        self.next_header
    }

    /// Offset of the Next Header field that holds [`Self::next_header`].
    pub fn next_header_field(&self) -> usize {
        self.next_header_field
    }

    /// Where the header after those walked so far starts.
    pub fn offset(&self) -> usize {
        self.offset
    }

    /// The bytes from [`Self::offset`] to the end of the packet.
    pub fn rest(&self) -> &'a [u8] {
        self.packet.get(self.offset..).unwrap_or_default()
    }

    /// Walks to the end of the chain.
    pub fn finish(&mut self) -> Result<(), WireError> {
        self.try_for_each(|header| header.map(drop))
    }

    fn step(&mut self) -> Result<ExtHeader<'a>, WireError> {
        if self.walked == MAX_EXT_HEADERS {
            return Err(WireError::TooManyExtHeaders {
                max: MAX_EXT_HEADERS,
            });
        }
        let truncated = WireError::Truncated {
            what: "ipv6 extension header",
        };
        let start = self.offset;
        let len = if self.next_header == proto::FRAGMENT {
            FRAGMENT_HEADER_LEN
        } else {
            // Hop-by-hop, routing and destination options: (Hdr Ext Len + 1) * 8 bytes, the
            // length in the second byte.
            let ext_len = self.packet.get(start + 1).ok_or(truncated)?;
            (usize::from(*ext_len) + 1) * 8
        };
        let bytes = self.packet.get(start..start + len).ok_or(truncated)?;
        let header = ExtHeader {
            kind: self.next_header,
            announced_at: self.next_header_field,
            start,
            bytes,
        };
        self.next_header = header.next_header();
        self.next_header_field = start;
        self.offset = header.end();
        self.walked += 1;
        Ok(header)
    }
}

impl<'a> Iterator for ExtWalk<'a> {
    type Item = Result<ExtHeader<'a>, WireError>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.done || !is_walked_extension_header(self.next_header) {
            return None;
        }
        let step = self.step();
        self.done = step.is_err();
        Some(step)
    }
}

impl std::iter::FusedIterator for ExtWalk<'_> {}

/// Offset of the fragment offset (13 bits, 8-octet units), 2 reserved bits and the M flag.
const OFFSET_FLAGS: usize = 2;

view! {
    /// A view of a fragment header (RFC 8200 §4.5).
    FragmentHeader [FRAGMENT_HEADER_LEN, "ipv6 fragment header"] {
        next_header: u8 = 0;
        identification: u32 = 4;
    }
}

impl<T: AsRef<[u8]>> FragmentHeader<T> {
    /// The fragment offset in 8-octet units.
    pub fn frag_offset(&self) -> u16 {
        u16::read(self.buffer.as_ref(), OFFSET_FLAGS) >> 3
    }

    /// The M flag: more fragments follow.
    pub fn more_fragments(&self) -> bool {
        u16::read(self.buffer.as_ref(), OFFSET_FLAGS) & 1 == 1
    }

    /// Offset 0 and no more fragments: a whole datagram (RFC 6946). The reserved bits are
    /// ignored, as RFC 8200 §4.5 asks of a receiver.
    pub fn is_atomic(&self) -> bool {
        self.frag_offset() == 0 && !self.more_fragments()
    }
}

/// The fields of a fragment header, to build one.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FragmentRepr {
    pub next_header: u8,
    /// In 8-octet units (13 bits).
    pub frag_offset: u16,
    pub more_fragments: bool,
    pub identification: u32,
}

impl FragmentRepr {
    pub fn parse<T: AsRef<[u8]>>(header: &FragmentHeader<T>) -> Self {
        Self {
            next_header: header.next_header(),
            frag_offset: header.frag_offset(),
            more_fragments: header.more_fragments(),
            identification: header.identification(),
        }
    }

    /// Writes the header into the first 8 bytes of `buf` (nothing past a shorter buffer).
    pub fn emit(&self, buf: &mut [u8]) {
        let word = (self.frag_offset << 3) | u16::from(self.more_fragments);
        self.next_header.write(buf, 0);
        0u8.write(buf, 1);
        word.write(buf, OFFSET_FLAGS);
        self.identification.write(buf, 4);
    }

    pub fn to_bytes(&self) -> [u8; FRAGMENT_HEADER_LEN] {
        let mut header = [0; FRAGMENT_HEADER_LEN];
        self.emit(&mut header);
        header
    }
}

#[cfg(test)]
mod tests {
    use super::super::Ipv6Repr;
    use super::*;

    /// An IPv6 packet whose chain starts with `first` and holds `chain`.
    fn packet(first: u8, chain: &[u8]) -> Vec<u8> {
        let repr = Ipv6Repr {
            src_addr: "2001:db8::1".parse().expect("address"),
            dst_addr: "2001:db8::2".parse().expect("address"),
            next_header: first,
            payload_len: u16::try_from(chain.len()).expect("test payload fits"),
            hop_limit: 64,
            traffic_class: 0,
            flow_label: 0,
        };
        let mut p = repr.to_bytes().to_vec();
        p.extend_from_slice(chain);
        p
    }

    fn walk(p: &[u8]) -> ExtWalk<'_> {
        ExtWalk::new(Ipv6Packet::new_checked(p).expect("a valid packet"))
    }

    #[test]
    fn walks_every_kind_and_reports_offsets() {
        // HBH (8) -> routing (24) -> fragment (8) -> dest opts (16) -> UDP.
        let mut chain = vec![43, 0, 1, 4, 0, 0, 0, 0];
        chain.extend_from_slice(&[44, 2]);
        chain.extend_from_slice(&[0; 22]);
        chain.extend_from_slice(
            &FragmentRepr {
                next_header: 60,
                frag_offset: 0,
                more_fragments: true,
                identification: 0xdead_beef,
            }
            .to_bytes(),
        );
        chain.extend_from_slice(&[17, 1]);
        chain.extend_from_slice(&[0; 14]);
        chain.extend_from_slice(&[0, 53, 0, 53]);
        let p = packet(0, &chain);
        let mut w = walk(&p);
        let headers: Vec<ExtHeader<'_>> = w.by_ref().map(|h| h.expect("a header")).collect();
        let shape: Vec<_> = headers
            .iter()
            .map(|h| (h.kind, h.announced_at, h.start, h.end(), h.next_header()))
            .collect();
        assert_eq!(
            shape,
            [
                (0, 6, 40, 48, 43),
                (43, 40, 48, 72, 44),
                (44, 48, 72, 80, 60),
                (60, 72, 80, 96, 17)
            ]
        );
        let f = headers[2].fragment().expect("a fragment header");
        assert_eq!(
            (f.next_header(), f.frag_offset(), f.more_fragments()),
            (60, 0, true)
        );
        assert_eq!(f.identification(), 0xdead_beef);
        assert!(!f.is_atomic());
        assert!(headers[0].fragment().is_none());
        assert_eq!(
            (w.next_header(), w.offset(), w.next_header_field()),
            (17, 96, 80)
        );
        assert_eq!(w.rest(), &[0, 53, 0, 53]);
        assert_eq!(w.next(), None, "fused");
    }

    #[test]
    fn the_walk_is_bounded_and_stops_at_the_upper_layer() {
        for count in [
            0,
            1,
            MAX_EXT_HEADERS - 1,
            MAX_EXT_HEADERS,
            MAX_EXT_HEADERS + 1,
        ] {
            let mut chain = Vec::new();
            for i in 0..count {
                let next = if i + 1 == count { 50 } else { 60 };
                chain.extend_from_slice(&[next, 0, 0, 0, 0, 0, 0, 0]);
            }
            chain.extend_from_slice(&[0; 8]);
            let first = if count == 0 { 50 } else { 60 };
            let p = packet(first, &chain);
            let mut w = walk(&p);
            let result = w.finish();
            if count > MAX_EXT_HEADERS {
                assert_eq!(result, Err(WireError::TooManyExtHeaders { max: 8 }));
                assert_eq!(w.offset(), 40 + 8 * MAX_EXT_HEADERS, "stopped at the bound");
            } else {
                assert_eq!(result, Ok(()), "{count} headers");
                assert_eq!((w.next_header(), w.offset()), (50, 40 + 8 * count));
            }
        }
        // AH and ESP end the walk; so does an unknown value.
        for kind in [proto::AH, proto::ESP, proto::NO_NEXT_HEADER, 200] {
            let p = packet(kind, &[0; 8]);
            assert_eq!(walk(&p).count(), 0);
        }
    }

    #[test]
    fn a_header_cut_at_every_length_is_truncated() {
        for (kind, header) in [
            (0, vec![17, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0]),
            (44, vec![17, 0, 0, 1, 0, 0, 0, 7]),
        ] {
            for len in 0..header.len() {
                let p = packet(kind, &header[..len]);
                let mut w = walk(&p);
                assert_eq!(
                    w.next(),
                    Some(Err(WireError::Truncated {
                        what: "ipv6 extension header"
                    })),
                    "kind {kind}, {len} bytes"
                );
                assert_eq!(w.next(), None, "nothing after an error");
            }
            let p = packet(kind, &header);
            assert_eq!(walk(&p).finish(), Ok(()));
        }
        // Link-layer padding after the payload is never walked into.
        let mut p = packet(60, &[]);
        p.extend_from_slice(&[17, 0, 0, 0, 0, 0, 0, 0]);
        assert!(walk(&p).finish().is_err());
    }

    #[test]
    fn fragment_repr_round_trips_and_checks_length() {
        let repr = FragmentRepr {
            next_header: 6,
            frag_offset: 0x1fff,
            more_fragments: false,
            identification: 7,
        };
        let bytes = repr.to_bytes();
        assert_eq!(bytes, [6, 0, 0xff, 0xf8, 0, 0, 0, 7]);
        let view = FragmentHeader::new_checked(&bytes[..]).expect("8 bytes");
        assert_eq!(FragmentRepr::parse(&view), repr);
        for len in 0..8 {
            assert!(FragmentHeader::new_checked(&bytes[..len]).is_err(), "{len}");
        }
        let atomic = FragmentRepr {
            frag_offset: 0,
            ..repr
        };
        assert!(FragmentHeader::new_unchecked(atomic.to_bytes()).is_atomic());
    }
}
