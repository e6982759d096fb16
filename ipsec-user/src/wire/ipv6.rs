//! The fixed IPv6 header (RFC 8200 §3): a view and the header we emit.

use std::net::Ipv6Addr;

use super::{Field, IPV6_HEADER_LEN, WireError, array, put, view};

/// Offsets of the addresses (RFC 8200 §3).
const SRC_ADDR: usize = 8;
const DST_ADDR: usize = 24;
/// Offset of the Next Header field: where a transport-mode ESP packet names what it carries.
pub const NEXT_HEADER_OFFSET: usize = 6;

view! {
    /// A view of an IPv6 packet: the fixed header, then `payload_len` bytes. Bytes after those
    /// (link-layer padding) are not part of the packet: [`Self::packet`] and [`Self::payload`]
    /// leave them out.
    Ipv6Packet {
        payload_len: u16 = 4, set_payload_len;
        next_header: u8 = 6, set_next_header;
        hop_limit: u8 = 7, set_hop_limit;
    }
}

impl<T: AsRef<[u8]>> Ipv6Packet<T> {
    /// The checks of [`Self::new_checked`], in the order the errors are reported.
    pub fn check_len(&self) -> Result<(), WireError> {
        let len = self.buffer.as_ref().len();
        if len < IPV6_HEADER_LEN {
            return Err(WireError::Truncated {
                what: "ipv6 header",
            });
        }
        if self.version() != 6 {
            return Err(WireError::Malformed {
                what: "ip version is not 6",
            });
        }
        if self.total_len() > len {
            return Err(WireError::Truncated {
                what: "ipv6 payload shorter than its payload length",
            });
        }
        Ok(())
    }

    pub fn version(&self) -> u8 {
        u8::read(self.buffer.as_ref(), 0) >> 4
    }

    pub fn traffic_class(&self) -> u8 {
        // Version (4 bits), traffic class (8) and flow label (20) share the first word.
        self.word().to_be_bytes()[0] << 4 | self.word().to_be_bytes()[1] >> 4
    }

    pub fn flow_label(&self) -> u32 {
        self.word() & 0x000f_ffff
    }

    fn word(&self) -> u32 {
        u32::read(self.buffer.as_ref(), 0)
    }

    /// The source address, as bytes in network order.
    pub fn src_octets(&self) -> [u8; 16] {
        array(self.buffer.as_ref(), SRC_ADDR).unwrap_or_default()
    }

    /// The destination address, as bytes in network order.
    pub fn dst_octets(&self) -> [u8; 16] {
        array(self.buffer.as_ref(), DST_ADDR).unwrap_or_default()
    }

    pub fn src_addr(&self) -> Ipv6Addr {
        Ipv6Addr::from(self.src_octets())
    }

    pub fn dst_addr(&self) -> Ipv6Addr {
        Ipv6Addr::from(self.dst_octets())
    }

    /// Header and payload: `40 + payload_len`.
    pub fn total_len(&self) -> usize {
        IPV6_HEADER_LEN + usize::from(self.payload_len())
    }

    /// The packet without link-layer padding (the whole buffer if it is shorter than claimed,
    /// which [`Self::new_checked`] refuses).
    pub fn packet(&self) -> &[u8] {
        let b = self.buffer.as_ref();
        b.get(..self.total_len()).unwrap_or(b)
    }

    /// The bytes after the fixed header, up to the payload length.
    pub fn payload(&self) -> &[u8] {
        self.packet().get(IPV6_HEADER_LEN..).unwrap_or_default()
    }
}

impl<'a> Ipv6Packet<&'a [u8]> {
    /// [`Self::packet`] with the buffer's lifetime, for views that outlive this one.
    pub fn packet_bytes(&self) -> &'a [u8] {
        let b: &'a [u8] = self.buffer;
        b.get(..self.total_len()).unwrap_or(b)
    }

    /// [`Self::payload`] with the buffer's lifetime.
    pub fn payload_bytes(&self) -> &'a [u8] {
        self.packet_bytes()
            .get(IPV6_HEADER_LEN..)
            .unwrap_or_default()
    }
}

impl<T: AsRef<[u8]> + AsMut<[u8]>> Ipv6Packet<T> {
    /// Version 6, `traffic_class` and the low 20 bits of `flow_label`.
    pub fn set_version_class_flow(&mut self, traffic_class: u8, flow_label: u32) {
        let word = (6 << 28) | (u32::from(traffic_class) << 20) | (flow_label & 0x000f_ffff);
        word.write(self.buffer.as_mut(), 0);
    }

    pub fn set_src_addr(&mut self, addr: Ipv6Addr) {
        put(self.buffer.as_mut(), SRC_ADDR, &addr.octets());
    }

    pub fn set_dst_addr(&mut self, addr: Ipv6Addr) {
        put(self.buffer.as_mut(), DST_ADDR, &addr.octets());
    }

    /// The payload, writable (up to the payload length).
    pub fn payload_mut(&mut self) -> &mut [u8] {
        let end = self.total_len();
        let b = self.buffer.as_mut();
        let end = end.min(b.len());
        b.get_mut(IPV6_HEADER_LEN..end).unwrap_or_default()
    }
}

/// The fields of an IPv6 header, to build one ([`Self::emit`]) or read one whole
/// ([`Self::parse`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Ipv6Repr {
    pub src_addr: Ipv6Addr,
    pub dst_addr: Ipv6Addr,
    pub next_header: u8,
    pub payload_len: u16,
    pub hop_limit: u8,
    pub traffic_class: u8,
    /// The low 20 bits are used.
    pub flow_label: u32,
}

impl Ipv6Repr {
    /// The fields of a checked packet's header.
    pub fn parse<T: AsRef<[u8]>>(packet: &Ipv6Packet<T>) -> Self {
        Self {
            src_addr: packet.src_addr(),
            dst_addr: packet.dst_addr(),
            next_header: packet.next_header(),
            payload_len: packet.payload_len(),
            hop_limit: packet.hop_limit(),
            traffic_class: packet.traffic_class(),
            flow_label: packet.flow_label(),
        }
    }

    /// Writes the header into the first 40 bytes of `packet` (nothing past a shorter buffer).
    pub fn emit<T: AsRef<[u8]> + AsMut<[u8]>>(&self, packet: &mut Ipv6Packet<T>) {
        packet.set_version_class_flow(self.traffic_class, self.flow_label);
        packet.set_payload_len(self.payload_len);
        packet.set_next_header(self.next_header);
        packet.set_hop_limit(self.hop_limit);
        packet.set_src_addr(self.src_addr);
        packet.set_dst_addr(self.dst_addr);
    }

    /// The header as bytes.
    pub fn to_bytes(&self) -> [u8; IPV6_HEADER_LEN] {
        let mut header = [0; IPV6_HEADER_LEN];
        self.emit(&mut Ipv6Packet::new_unchecked(&mut header[..]));
        header
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Version 6, traffic class 0xb8, flow label 0x12345, payload 4, UDP, hop limit 64,
    /// 2001:db8::1 -> 2001:db8::2, then 4 payload bytes and 2 of padding.
    const PACKET: [u8; 46] = [
        0x6b, 0x81, 0x23, 0x45, 0x00, 0x04, 17, 64, //
        0x20, 0x01, 0x0d, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1, //
        0x20, 0x01, 0x0d, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 2, //
        0xde, 0xad, 0xbe, 0xef, 0xaa, 0xaa,
    ];

    fn repr() -> Ipv6Repr {
        Ipv6Repr {
            src_addr: "2001:db8::1".parse().expect("address"),
            dst_addr: "2001:db8::2".parse().expect("address"),
            next_header: 17,
            payload_len: 4,
            hop_limit: 64,
            traffic_class: 0xb8,
            flow_label: 0x12345,
        }
    }

    #[test]
    fn every_accessor_reads_its_field() {
        let p = Ipv6Packet::new_checked(&PACKET[..]).expect("a valid packet");
        assert_eq!(p.version(), 6);
        assert_eq!(p.traffic_class(), 0xb8);
        assert_eq!(p.flow_label(), 0x12345);
        assert_eq!(p.payload_len(), 4);
        assert_eq!(p.next_header(), 17);
        assert_eq!(p.hop_limit(), 64);
        assert_eq!(p.src_addr(), repr().src_addr);
        assert_eq!(p.dst_addr(), repr().dst_addr);
        assert_eq!(p.total_len(), 44);
        assert_eq!(
            p.packet(),
            &PACKET[..44],
            "padding is not part of the packet"
        );
        assert_eq!(p.packet_bytes(), &PACKET[..44]);
        assert_eq!(p.payload_bytes(), p.payload());
        assert_eq!(p.payload(), &[0xde, 0xad, 0xbe, 0xef]);
        assert_eq!(Ipv6Repr::parse(&p), repr());
        assert_eq!(p.into_inner().len(), 46);
    }

    #[test]
    fn new_checked_refuses_every_truncation_and_a_wrong_version() {
        for len in 0..44 {
            let err = Ipv6Packet::new_checked(&PACKET[..len]).expect_err("truncated");
            assert!(matches!(err, WireError::Truncated { .. }), "{len}: {err}");
        }
        assert!(Ipv6Packet::new_checked(&PACKET[..44]).is_ok());
        let mut v4 = PACKET;
        v4[0] = 0x45;
        assert_eq!(
            Ipv6Packet::new_checked(&v4[..]),
            Err(WireError::Malformed {
                what: "ip version is not 6"
            })
        );
    }

    #[test]
    fn emit_then_parse_round_trips() {
        let bytes = repr().to_bytes();
        assert_eq!(bytes[..], PACKET[..40]);
        let mut buf = PACKET;
        let mut p = Ipv6Packet::new_unchecked(&mut buf[..]);
        p.payload_mut().copy_from_slice(&[1, 2, 3, 4]);
        let other = Ipv6Repr {
            hop_limit: 1,
            payload_len: 2,
            ..repr()
        };
        other.emit(&mut p);
        let p = Ipv6Packet::new_checked(&buf[..]).expect("still valid");
        assert_eq!(Ipv6Repr::parse(&p), other);
        assert_eq!(p.payload(), &[1, 2]);
        // A short buffer takes what fits, and nothing panics.
        let mut short = [0u8; 10];
        repr().emit(&mut Ipv6Packet::new_unchecked(&mut short[..]));
        assert_eq!(short[..8], PACKET[..8]);
        assert_eq!(Ipv6Packet::new_unchecked(&short[..]).dst_octets(), [0; 16]);
    }
}
