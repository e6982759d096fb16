//! Ethernet/IPv6 frame builders for tests.

use std::net::Ipv6Addr;

/// One extension header to put before the upper layer.
#[derive(Clone, Debug)]
pub enum Ext {
    /// Hop-by-hop, routing or destination options (next-header value), `len` in 8-byte units - 1.
    Options { kind: u8, len: u8 },
    /// Fragment header with this offset (8-byte units) and identification.
    Fragment { offset: u16, more: bool, id: u32 },
}

/// A frame description; `build` turns it into bytes.
#[derive(Clone, Debug)]
pub struct FrameSpec {
    /// VLAN tags, outermost first: (TPID, VLAN id).
    pub tags: Vec<(u16, u16)>,
    pub src: Ipv6Addr,
    pub dst: Ipv6Addr,
    pub ext: Vec<Ext>,
    pub next_header: u8,
    pub l4: Vec<u8>,
    /// Added to the honest payload length (negative truncates the claim, positive overstates).
    pub payload_len_delta: i32,
    /// Bytes cut from the end of the frame.
    pub truncate: usize,
}

impl FrameSpec {
    pub fn new(src: Ipv6Addr, dst: Ipv6Addr, next_header: u8, l4: Vec<u8>) -> Self {
        Self {
            tags: Vec::new(),
            src,
            dst,
            ext: Vec::new(),
            next_header,
            l4,
            payload_len_delta: 0,
            truncate: 0,
        }
    }

    /// Bytes of Ethernet header and tags before the IPv6 header.
    pub fn l3_offset(&self) -> usize {
        14 + 4 * self.tags.len()
    }

    pub fn build(&self) -> Vec<u8> {
        let mut f = vec![0x02, 0, 0, 0, 0, 2, 0x02, 0, 0, 0, 0, 1];
        for (tpid, vid) in &self.tags {
            f.extend_from_slice(&tpid.to_be_bytes());
            f.extend_from_slice(&vid.to_be_bytes());
        }
        f.extend_from_slice(&[0x86, 0xdd]);
        let mut payload = Vec::new();
        let kinds: Vec<u8> = self
            .ext
            .iter()
            .map(|e| match e {
                Ext::Options { kind, .. } => *kind,
                Ext::Fragment { .. } => 44,
            })
            .collect();
        for (i, e) in self.ext.iter().enumerate() {
            let next = kinds.get(i + 1).copied().unwrap_or(self.next_header);
            match e {
                Ext::Options { len, .. } => {
                    let mut h = vec![0u8; (usize::from(*len) + 1) * 8];
                    h[0] = next;
                    h[1] = *len;
                    // PadN so the options are well formed (up to 259 bytes of options; a longer
                    // header keeps the low byte of its length, which no parser reads).
                    h[2] = 1;
                    h[3] = (h.len() - 4).to_le_bytes()[0];
                    payload.extend_from_slice(&h);
                }
                Ext::Fragment { offset, more, id } => {
                    let word = (offset << 3) | u16::from(*more);
                    payload.extend_from_slice(&[next, 0]);
                    payload.extend_from_slice(&word.to_be_bytes());
                    payload.extend_from_slice(&id.to_be_bytes());
                }
            }
        }
        payload.extend_from_slice(&self.l4);
        let len = i64::try_from(payload.len()).expect("a frame's length fits in i64")
            + i64::from(self.payload_len_delta);
        let len = u16::try_from(len.clamp(0, 65_535)).expect("clamped to u16's range");
        let first = kinds.first().copied().unwrap_or(self.next_header);
        f.extend_from_slice(&[0x60, 0, 0, 0]);
        f.extend_from_slice(&len.to_be_bytes());
        f.extend_from_slice(&[first, 64]);
        f.extend_from_slice(&self.src.octets());
        f.extend_from_slice(&self.dst.octets());
        f.extend_from_slice(&payload);
        let keep = f.len().saturating_sub(self.truncate);
        f.truncate(keep);
        f
    }
}

/// Transport header bytes: TCP/UDP ports (padded to a plausible header), ICMPv6 type.
pub fn l4_ports(sport: u16, dport: u16, header_len: usize) -> Vec<u8> {
    let mut h = vec![0u8; header_len.max(4)];
    h[..2].copy_from_slice(&sport.to_be_bytes());
    h[2..4].copy_from_slice(&dport.to_be_bytes());
    h
}

pub fn l4_icmp(kind: u8) -> Vec<u8> {
    vec![kind, 0, 0, 0, 0, 0, 0, 0]
}
