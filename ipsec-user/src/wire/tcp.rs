//! The TCP header (RFC 9293 §3.1): the fields GRO, GSO and MSS clamping read and rewrite.

use super::{WireError, be16, be32, byte, put};

/// Field offsets (RFC 9293 §3.1).
mod field {
    pub(super) const SRC_PORT: usize = 0;
    pub(super) const DST_PORT: usize = 2;
    pub(super) const SEQ: usize = 4;
    pub(super) const ACK: usize = 8;
    /// Data offset (4 bits, in 32-bit words) and 4 reserved bits.
    pub(super) const DATA_OFFSET: usize = 12;
    pub(super) const FLAGS: usize = 13;
    pub(super) const WINDOW: usize = 14;
    pub(super) const CHECKSUM: usize = 16;
    pub(super) const URGENT: usize = 18;
    pub(super) const OPTIONS: usize = 20;
}

/// Length of the header without options.
pub(super) const MIN_HEADER_LEN: usize = field::OPTIONS;

/// The TCP flag bits of the flags byte (RFC 9293 §3.1).
pub mod tcp_flags {
    pub const FIN: u8 = 0x01;
    pub const SYN: u8 = 0x02;
    pub const RST: u8 = 0x04;
    pub const PSH: u8 = 0x08;
    pub const ACK: u8 = 0x10;
    pub const URG: u8 = 0x20;
    pub const ECE: u8 = 0x40;
    pub const CWR: u8 = 0x80;
}

/// A view of a TCP segment: header (options included), then data.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TcpPacket<T: AsRef<[u8]>> {
    buffer: T,
}

impl<T: AsRef<[u8]>> TcpPacket<T> {
    /// Wraps bytes without checks: accessors never panic but read 0 past the end. For a caller
    /// that checked the length itself, or only reads fields it knows are present.
    pub const fn new_unchecked(buffer: T) -> Self {
        Self { buffer }
    }

    /// Wraps untrusted bytes: the fixed header is present, and the data offset is at least 5
    /// words and within the buffer.
    pub fn new_checked(buffer: T) -> Result<Self, WireError> {
        let packet = Self { buffer };
        let len = packet.buffer.as_ref().len();
        if len < MIN_HEADER_LEN {
            return Err(WireError::Truncated { what: "tcp header" });
        }
        let header_len = packet.header_len();
        if header_len < MIN_HEADER_LEN {
            return Err(WireError::Malformed {
                what: "tcp data offset below 5",
            });
        }
        if header_len > len {
            return Err(WireError::Truncated {
                what: "tcp options",
            });
        }
        Ok(packet)
    }

    pub fn src_port(&self) -> u16 {
        be16(self.buffer.as_ref(), field::SRC_PORT)
    }

    pub fn dst_port(&self) -> u16 {
        be16(self.buffer.as_ref(), field::DST_PORT)
    }

    pub fn seq_number(&self) -> u32 {
        be32(self.buffer.as_ref(), field::SEQ)
    }

    pub fn ack_number(&self) -> u32 {
        be32(self.buffer.as_ref(), field::ACK)
    }

    /// The header length in bytes (data offset × 4), options included.
    pub fn header_len(&self) -> usize {
        usize::from(byte(self.buffer.as_ref(), field::DATA_OFFSET) >> 4) * 4
    }

    /// The flags byte ([`tcp_flags`]).
    pub fn flags(&self) -> u8 {
        byte(self.buffer.as_ref(), field::FLAGS)
    }

    pub fn window(&self) -> u16 {
        be16(self.buffer.as_ref(), field::WINDOW)
    }

    pub fn checksum(&self) -> u16 {
        be16(self.buffer.as_ref(), field::CHECKSUM)
    }

    pub fn urgent_pointer(&self) -> u16 {
        be16(self.buffer.as_ref(), field::URGENT)
    }

    /// The options: bytes 20 to the header length.
    pub fn options(&self) -> &[u8] {
        let end = self.header_len();
        self.buffer
            .as_ref()
            .get(field::OPTIONS..end)
            .unwrap_or_default()
    }

    /// The data after the header.
    pub fn payload(&self) -> &[u8] {
        let start = self.header_len();
        self.buffer.as_ref().get(start..).unwrap_or_default()
    }
}

impl<T: AsRef<[u8]> + AsMut<[u8]>> TcpPacket<T> {
    pub fn set_seq_number(&mut self, seq: u32) {
        put(self.buffer.as_mut(), field::SEQ, &seq.to_be_bytes());
    }

    pub fn set_flags(&mut self, flags: u8) {
        put(self.buffer.as_mut(), field::FLAGS, &[flags]);
    }

    pub fn set_checksum(&mut self, checksum: u16) {
        put(
            self.buffer.as_mut(),
            field::CHECKSUM,
            &checksum.to_be_bytes(),
        );
    }

    /// The options, writable.
    pub fn options_mut(&mut self) -> &mut [u8] {
        let end = self.header_len();
        self.buffer
            .as_mut()
            .get_mut(field::OPTIONS..end)
            .unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Ports 5001 -> 40000, seq 1000, ack 7, 8 words (12 bytes of options), ACK|PSH, window
    /// 256, checksum 0xbeef, urgent 0; options nop nop timestamp; 3 data bytes.
    const SEGMENT: [u8; 35] = [
        0x13, 0x89, 0x9c, 0x40, 0, 0, 0x03, 0xe8, 0, 0, 0, 7, 0x80, 0x18, 1, 0, 0xbe, 0xef, 0, 0,
        1, 1, 8, 10, 0, 0, 0, 1, 0, 0, 0, 2, //
        b'a', b'b', b'c',
    ];

    #[test]
    fn every_accessor_reads_its_field() {
        let tcp = TcpPacket::new_checked(&SEGMENT[..]).expect("a segment");
        assert_eq!((tcp.src_port(), tcp.dst_port()), (5001, 40000));
        assert_eq!((tcp.seq_number(), tcp.ack_number()), (1000, 7));
        assert_eq!(tcp.header_len(), 32);
        assert_eq!(tcp.flags(), tcp_flags::ACK | tcp_flags::PSH);
        assert_eq!(
            (tcp.window(), tcp.checksum(), tcp.urgent_pointer()),
            (256, 0xbeef, 0)
        );
        assert_eq!(tcp.options(), &SEGMENT[20..32]);
        assert_eq!(tcp.payload(), b"abc");
    }

    #[test]
    fn new_checked_refuses_every_truncation_and_a_short_offset() {
        for len in 0..32 {
            assert!(TcpPacket::new_checked(&SEGMENT[..len]).is_err(), "{len}");
        }
        let mut bad = SEGMENT;
        bad[12] = 4 << 4;
        assert!(matches!(
            TcpPacket::new_checked(&bad[..]),
            Err(WireError::Malformed { .. })
        ));
    }

    #[test]
    fn setters_write_their_fields() {
        let mut buf = SEGMENT;
        let mut tcp = TcpPacket::new_checked(&mut buf[..]).expect("a segment");
        tcp.set_seq_number(0x0102_0304);
        tcp.set_flags(tcp_flags::SYN);
        tcp.set_checksum(0x1234);
        tcp.options_mut()[0] = 0;
        let tcp = TcpPacket::new_checked(&buf[..]).expect("a segment");
        assert_eq!(tcp.seq_number(), 0x0102_0304);
        assert_eq!(tcp.flags(), tcp_flags::SYN);
        assert_eq!(tcp.checksum(), 0x1234);
        assert_eq!(tcp.options()[0], 0);
    }
}
