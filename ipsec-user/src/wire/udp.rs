//! The UDP header (RFC 768), and the port pair TCP and UDP share.

use super::{WireError, be16};

/// Length of the UDP header.
const HEADER_LEN: usize = 8;

/// The source and destination ports: the first four bytes of TCP (RFC 9293 §3.1) and UDP
/// (RFC 768), all a classifier reads, so a header cut after them still has its ports.
pub fn ports(transport: &[u8]) -> Result<(u16, u16), WireError> {
    if transport.len() < 4 {
        return Err(WireError::Truncated { what: "ports" });
    }
    Ok((be16(transport, 0), be16(transport, 2)))
}

/// A view of a UDP datagram.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct UdpPacket<T: AsRef<[u8]>> {
    buffer: T,
}

impl<T: AsRef<[u8]>> UdpPacket<T> {
    /// Wraps untrusted bytes: the 8-byte header is present.
    pub fn new_checked(buffer: T) -> Result<Self, WireError> {
        if buffer.as_ref().len() < HEADER_LEN {
            return Err(WireError::Truncated { what: "udp header" });
        }
        Ok(Self { buffer })
    }

    pub fn src_port(&self) -> u16 {
        be16(self.buffer.as_ref(), 0)
    }

    pub fn dst_port(&self) -> u16 {
        be16(self.buffer.as_ref(), 2)
    }

    /// The Length field: header and data.
    pub fn length(&self) -> u16 {
        be16(self.buffer.as_ref(), 4)
    }

    pub fn checksum(&self) -> u16 {
        be16(self.buffer.as_ref(), 6)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accessors_and_truncations() {
        let bytes = [0, 53, 1, 0, 0, 8, 0xab, 0xcd];
        let udp = UdpPacket::new_checked(&bytes[..]).expect("a header");
        assert_eq!((udp.src_port(), udp.dst_port()), (53, 256));
        assert_eq!((udp.length(), udp.checksum()), (8, 0xabcd));
        assert_eq!(ports(&bytes[..4]), Ok((53, 256)));
        for len in 0..8 {
            assert!(UdpPacket::new_checked(&bytes[..len]).is_err(), "{len}");
        }
        for len in 0..4 {
            assert!(ports(&bytes[..len]).is_err(), "{len}");
        }
    }
}
