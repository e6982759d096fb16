//! The UDP header (RFC 768), and the port pair TCP and UDP share.

use super::{Field, WireError, view};

/// The source and destination ports: the first four bytes of TCP (RFC 9293 §3.1) and UDP
/// (RFC 768), all a classifier reads, so a header cut after them still has its ports.
pub fn ports(transport: &[u8]) -> Result<(u16, u16), WireError> {
    if transport.len() < 4 {
        return Err(WireError::Truncated { what: "ports" });
    }
    Ok((u16::read(transport, 0), u16::read(transport, 2)))
}

view! {
    /// A view of a UDP datagram.
    UdpPacket [8, "udp header"] {
        src_port: u16 = 0;
        dst_port: u16 = 2;
        /// The Length field: header and data.
        length: u16 = 4;
        checksum: u16 = 6;
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
