//! The TCP header (RFC 9293 §3.1): the fields GRO, GSO and MSS clamping read and rewrite.

use super::{Field, WireError, view};

/// Offset of the options (RFC 9293 §3.1), the length of a header without them.
const OPTIONS: usize = 20;
/// Length of the header without options.
pub(super) const MIN_HEADER_LEN: usize = OPTIONS;

/// The TCP flag bits of the flags byte (RFC 9293 §3.1).
pub mod tcp_flags {
    /// No more data from the sender; only on a segmented packet's last segment.
    pub const FIN: u8 = 0x01;
    /// Synchronize sequence numbers: the segments whose MSS option is clamped.
    pub const SYN: u8 = 0x02;
    /// Push: deliver now; ends a coalesced run.
    pub const PSH: u8 = 0x08;
    /// The acknowledgment number is significant: the only flag (with PSH) of mergeable data.
    pub const ACK: u8 = 0x10;
    /// Congestion window reduced (RFC 3168): only on a segmented packet's first segment.
    pub const CWR: u8 = 0x80;
}

view! {
    /// A view of a TCP segment (RFC 9293 §3.1): header (options included), then data.
    TcpPacket {
        src_port: u16 = 0;
        dst_port: u16 = 2;
        seq_number: u32 = 4, set_seq_number;
        ack_number: u32 = 8;
        /// The flags byte ([`tcp_flags`]).
        flags: u8 = 13, set_flags;
        window: u16 = 14;
        checksum: u16 = 16, set_checksum;
        urgent_pointer: u16 = 18;
    }
}

impl<T: AsRef<[u8]>> TcpPacket<T> {
    /// The checks of `new_checked`: the fixed header is present, and the data offset is at
    /// least 5 words and within the buffer.
    pub fn check_len(&self) -> Result<(), WireError> {
        let len = self.buffer.as_ref().len();
        if len < MIN_HEADER_LEN {
            return Err(WireError::Truncated { what: "tcp header" });
        }
        let header_len = self.header_len();
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
        Ok(())
    }

    /// The header length in bytes (data offset × 4), options included.
    pub fn header_len(&self) -> usize {
        // Data offset: the high 4 bits of byte 12, in 32-bit words.
        usize::from(u8::read(self.buffer.as_ref(), 12) >> 4) * 4
    }

    /// The options: bytes 20 to the header length.
    pub fn options(&self) -> &[u8] {
        let end = self.header_len();
        self.buffer.as_ref().get(OPTIONS..end).unwrap_or_default()
    }

    /// The data after the header.
    pub fn payload(&self) -> &[u8] {
        let start = self.header_len();
        self.buffer.as_ref().get(start..).unwrap_or_default()
    }
}

impl<T: AsRef<[u8]> + AsMut<[u8]>> TcpPacket<T> {
    /// The options, writable.
    pub fn options_mut(&mut self) -> &mut [u8] {
        let end = self.header_len();
        self.buffer
            .as_mut()
            .get_mut(OPTIONS..end)
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
