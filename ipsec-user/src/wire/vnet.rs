//! The virtio-net header (`struct virtio_net_hdr`, virtio 1.x §5.1.6) that a TUN device opened
//! with `IFF_VNET_HDR` puts before every packet it reads and expects before every packet
//! written. Its fields are little-endian (virtio 1.0 and the TUN default on little-endian hosts).

/// Size of the header without `num_buffers`.
pub const VNET_HDR_LEN: usize = 10;

/// `flags` bits.
pub mod vnet_flags {
    /// The checksum is partial: complete it from `csum_start`, into `csum_start + csum_offset`.
    pub const NEEDS_CSUM: u8 = 1;
}

/// `gso_type` values.
pub mod vnet_gso {
    /// No segmentation.
    pub const NONE: u8 = 0;
    /// TCP over IPv6 segmentation (TSO/GSO).
    pub const TCPV6: u8 = 4;
}

/// The fields of a virtio-net header.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct VirtioNetHdr {
    pub flags: u8,
    pub gso_type: u8,
    /// Length of the headers to replicate in each segment.
    pub hdr_len: u16,
    /// Payload bytes per segment.
    pub gso_size: u16,
    pub csum_start: u16,
    pub csum_offset: u16,
}

impl VirtioNetHdr {
    /// Reads a header (any 10 bytes are one).
    pub fn parse(bytes: &[u8; VNET_HDR_LEN]) -> Self {
        let le = |at: usize| u16::from_le_bytes([bytes[at], bytes[at + 1]]);
        Self {
            flags: bytes[0],
            gso_type: bytes[1],
            hdr_len: le(2),
            gso_size: le(4),
            csum_start: le(6),
            csum_offset: le(8),
        }
    }

    pub fn emit(&self) -> [u8; VNET_HDR_LEN] {
        let mut bytes = [0; VNET_HDR_LEN];
        bytes[0] = self.flags;
        bytes[1] = self.gso_type;
        for (at, value) in [
            (2, self.hdr_len),
            (4, self.gso_size),
            (6, self.csum_start),
            (8, self.csum_offset),
        ] {
            bytes[at..at + 2].copy_from_slice(&value.to_le_bytes());
        }
        bytes
    }

    pub fn needs_csum(&self) -> bool {
        self.flags & vnet_flags::NEEDS_CSUM != 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn emit_then_parse_round_trips() {
        let hdr = VirtioNetHdr {
            flags: vnet_flags::NEEDS_CSUM,
            gso_type: vnet_gso::TCPV6,
            hdr_len: 72,
            gso_size: 1300,
            csum_start: 40,
            csum_offset: 16,
        };
        let bytes = hdr.emit();
        assert_eq!(bytes, [1, 4, 72, 0, 0x14, 0x05, 40, 0, 16, 0]);
        assert_eq!(VirtioNetHdr::parse(&bytes), hdr);
        assert!(hdr.needs_csum());
        assert_eq!(VirtioNetHdr::default().emit(), [0; VNET_HDR_LEN]);
        assert!(!VirtioNetHdr::default().needs_csum());
    }
}
