//! Receive-side coalescing (userspace GRO) of decrypted TCP segments.
//!
//! The engine writes every decrypted packet into the TUN device, one `write` each, and the
//! local stack answers every second segment with an ACK that itself crosses ESP. Consecutive
//! in-order segments of one TCP flow in a receive batch are therefore merged into one large
//! packet and written once with a virtio-net header describing the segments (GSO, RFC-less but
//! the kernel's own `virtio_net_hdr`), as a NIC's GRO would: the stack then processes (and
//! acknowledges) one packet instead of dozens. The merge rules are the kernel's
//! (`tcp_gro_receive`): same addresses, ports, ACK number, header length, flags (PSH aside),
//! window and options; contiguous sequence numbers; every segment but the last of one size.

/// Size of `struct virtio_net_hdr`, which the TUN device (IFF_VNET_HDR) puts before every
/// packet it reads and expects before every packet written.
pub const VNET_HDR_LEN: usize = 10;
const F_NEEDS_CSUM: u8 = 1;
const GSO_TCPV6: u8 = 4;
const TCP: u8 = 6;
const ACK: u8 = 0x10;
const PSH: u8 = 0x08;
/// Stay clear of the 65,535-byte IPv6 payload limit.
const MAX_PAYLOAD: usize = 60_000;

/// A virtio-net header for a plain packet (no offload requested).
pub const PLAIN: [u8; VNET_HDR_LEN] = [0; VNET_HDR_LEN];

/// The super-packet being built.
#[derive(Debug, Default)]
pub struct Coalescer {
    packet: Vec<u8>,
    header_len: usize,
    mss: usize,
    segments: usize,
    next_seq: u32,
    /// No more segments may join (the last one was short, or carried PSH).
    closed: bool,
}

/// The TCP header length if `packet` is an IPv6 packet carrying a TCP segment with data and
/// only ACK (and maybe PSH) set, directly after the IPv6 header.
fn mergeable(packet: &[u8]) -> Option<usize> {
    if packet.len() < 60 || packet[0] >> 4 != 6 || packet[6] != TCP {
        return None;
    }
    let payload_len = usize::from(u16::from_be_bytes([packet[4], packet[5]]));
    if payload_len + 40 != packet.len() {
        return None;
    }
    let tcp_len = usize::from(packet[52] >> 4) * 4;
    let flags = packet[53];
    if tcp_len < 20 || 40 + tcp_len >= packet.len() || flags & !PSH != ACK {
        return None;
    }
    Some(tcp_len)
}

fn seq(packet: &[u8]) -> u32 {
    u32::from_be_bytes([packet[44], packet[45], packet[46], packet[47]])
}

impl Coalescer {
    #[cfg(test)]
    pub fn is_empty(&self) -> bool {
        self.segments == 0
    }

    /// Start a super-packet with `packet`; false (and nothing kept) when it cannot be merged.
    pub fn start(&mut self, packet: &[u8]) -> bool {
        let Some(tcp_len) = mergeable(packet) else {
            return false;
        };
        self.packet.clear();
        self.packet.extend_from_slice(packet);
        self.header_len = 40 + tcp_len;
        self.mss = packet.len() - self.header_len;
        self.segments = 1;
        self.next_seq = seq(packet).wrapping_add(self.mss as u32);
        self.closed = packet[53] & PSH != 0;
        true
    }

    /// Append `packet` if it continues the super-packet.
    pub fn append(&mut self, packet: &[u8]) -> bool {
        if self.segments == 0 || self.closed || mergeable(packet).is_none() {
            return false;
        }
        let head = &self.packet[..self.header_len];
        let payload = packet.len().saturating_sub(self.header_len);
        let same = packet.len() > self.header_len
            // Version, traffic class, flow label; next header and hop limit; addresses; ports.
            && packet[..4] == head[..4]
            && packet[6..44] == head[6..44]
            // ACK number, then header length, flags (PSH aside) and window.
            && packet[48..52] == head[48..52]
            && packet[52] == head[52]
            && packet[53] & !PSH == head[53] & !PSH
            && packet[54..56] == head[54..56]
            // Options.
            && packet[60..self.header_len] == head[60..]
            && seq(packet) == self.next_seq
            && payload <= self.mss
            && self.packet.len() - 40 + payload <= MAX_PAYLOAD;
        if !same {
            return false;
        }
        self.packet.extend_from_slice(&packet[self.header_len..]);
        self.segments += 1;
        self.next_seq = self.next_seq.wrapping_add(payload as u32);
        if packet[53] & PSH != 0 {
            self.packet[53] |= PSH;
            self.closed = true;
        }
        if payload < self.mss {
            self.closed = true;
        }
        true
    }

    /// The pending packet and its virtio-net header; empties the coalescer. A single segment
    /// goes out untouched with a plain header; a merged one as GSO with a partial checksum.
    pub fn take(&mut self) -> Option<([u8; VNET_HDR_LEN], &[u8])> {
        if self.segments == 0 {
            return None;
        }
        let segments = std::mem::take(&mut self.segments);
        if segments == 1 {
            return Some((PLAIN, &self.packet));
        }
        let payload_len = self.packet.len() - 40;
        self.packet[4..6]
            .copy_from_slice(&u16::try_from(payload_len).unwrap_or(u16::MAX).to_be_bytes());
        // CHECKSUM_PARTIAL: the field holds the folded pseudo-header sum, as the stack's own
        // `__tcp_v6_send_check` leaves it.
        let pseudo = pseudo_header_sum(&self.packet[8..40], payload_len);
        self.packet[56..58].copy_from_slice(&pseudo.to_be_bytes());
        let mut hdr = [0u8; VNET_HDR_LEN];
        hdr[0] = F_NEEDS_CSUM;
        hdr[1] = GSO_TCPV6;
        hdr[2..4].copy_from_slice(&(self.header_len as u16).to_le_bytes());
        hdr[4..6].copy_from_slice(&(self.mss as u16).to_le_bytes());
        hdr[6..8].copy_from_slice(&40u16.to_le_bytes());
        hdr[8..10].copy_from_slice(&16u16.to_le_bytes());
        Some((hdr, &self.packet))
    }
}

/// The `gso_type` of a virtio-net header: 0 for a plain packet.
pub fn gso_type(hdr: &[u8; VNET_HDR_LEN]) -> u8 {
    hdr[1]
}

/// How many segments [`segment`] would make of `packet`, if it is a TSO TCP packet.
pub fn segment_count(hdr: &[u8; VNET_HDR_LEN], packet: &[u8]) -> Option<usize> {
    if gso_type(hdr) != GSO_TCPV6 || packet.len() < 60 {
        return None;
    }
    let header_len = 40 + usize::from(packet[52] >> 4) * 4;
    let mss = usize::from(u16::from_le_bytes([hdr[4], hdr[5]]));
    (mss > 0 && header_len <= packet.len()).then(|| (packet.len() - header_len).div_ceil(mss))
}

/// Split a TSO packet (IPv6 + TCP, `gso_type` TCPV6) the TUN device handed over into its
/// segments, the way the kernel's software GSO would: each gets the header with its own sequence
/// number and length, FIN and PSH only on the last, CWR only on the first, and a full TCP
/// checksum. Calls `each` with every segment in order; false when the packet is not a TSO TCP
/// packet we can split. Segments are built in `scratch` after its first `prefix` bytes, which
/// are kept (the caller's fake Ethernet header), and `each` gets the whole of `scratch`.
pub fn segment(
    hdr: &[u8; VNET_HDR_LEN],
    packet: &[u8],
    scratch: &mut Vec<u8>,
    prefix: usize,
    mut each: impl FnMut(&[u8]),
) -> bool {
    const FIN: u8 = 0x01;
    const CWR: u8 = 0x80;
    if gso_type(hdr) != GSO_TCPV6 || packet.len() < 60 || packet[6] != TCP {
        return false;
    }
    let header_len = 40 + usize::from(packet[52] >> 4) * 4;
    let mss = usize::from(u16::from_le_bytes([hdr[4], hdr[5]]));
    if header_len < 60 || header_len > packet.len() || mss == 0 {
        return false;
    }
    let (head, payload) = packet.split_at(header_len);
    let first_seq = seq(packet);
    let chunks = payload.len().div_ceil(mss);
    for (i, chunk) in payload.chunks(mss).enumerate() {
        scratch.truncate(prefix);
        scratch.extend_from_slice(head);
        scratch.extend_from_slice(chunk);
        let seg = &mut scratch[prefix..];
        let tcp_len = seg.len() - 40;
        seg[4..6].copy_from_slice(&u16::try_from(tcp_len).unwrap_or(u16::MAX).to_be_bytes());
        let seq = first_seq.wrapping_add(u32::try_from(i * mss).unwrap_or(u32::MAX));
        seg[44..48].copy_from_slice(&seq.to_be_bytes());
        if i + 1 < chunks {
            seg[53] &= !(FIN | PSH);
        }
        if i > 0 {
            seg[53] &= !CWR;
        }
        seg[56..58].copy_from_slice(&[0, 0]);
        let sum = tcp_checksum(seg);
        seg[56..58].copy_from_slice(&sum.to_be_bytes());
        each(scratch);
    }
    true
}

/// The full TCP checksum of an IPv6 packet (checksum field zero), with the pseudo-header.
fn tcp_checksum(packet: &[u8]) -> u16 {
    let mut sum = u64::from(pseudo_header_sum(&packet[8..40], packet.len() - 40));
    let tcp = &packet[40..];
    let mut words = tcp.chunks_exact(4);
    for w in &mut words {
        sum += u64::from(u32::from_be_bytes([w[0], w[1], w[2], w[3]]));
    }
    for (i, b) in words.remainder().iter().enumerate() {
        sum += u64::from(*b) << (if i % 2 == 0 { 8 } else { 0 });
    }
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    !(sum as u16)
}

/// Ones'-complement sum (folded, not complemented) of the IPv6 pseudo-header for TCP.
fn pseudo_header_sum(addresses: &[u8], tcp_len: usize) -> u16 {
    let mut sum: u32 = 0;
    for pair in addresses.chunks(2) {
        sum += u32::from(u16::from_be_bytes([pair[0], pair[1]]));
    }
    let len = u32::try_from(tcp_len).unwrap_or(u32::MAX);
    sum += (len >> 16) + (len & 0xffff) + u32::from(TCP);
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    sum as u16
}

/// Complete the checksum of a packet the TUN device handed over with `VIRTIO_NET_HDR_F_NEEDS_CSUM`
/// (the field at `start + offset` holds the pseudo-header sum); false when the header is
/// inconsistent with the packet.
pub fn complete_checksum(hdr: &[u8; VNET_HDR_LEN], packet: &mut [u8]) -> bool {
    if hdr[0] & F_NEEDS_CSUM == 0 {
        return true;
    }
    let start = usize::from(u16::from_le_bytes([hdr[6], hdr[7]]));
    let field = start + usize::from(u16::from_le_bytes([hdr[8], hdr[9]]));
    if field + 2 > packet.len() || start > field {
        return false;
    }
    let mut sum: u32 = 0;
    for pair in packet[start..].chunks(2) {
        sum += u32::from(u16::from_be_bytes([pair[0], *pair.get(1).unwrap_or(&0)]));
    }
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    packet[field..field + 2].copy_from_slice(&(!(sum as u16)).to_be_bytes());
    true
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn splits_a_tso_packet_like_the_kernel() {
        // Three segments' worth of payload (1300 + 1300 + 400) in one packet, PSH set.
        let mut big = segment_packet(1000, 3000, ACK | PSH);
        let mut hdr = [0u8; VNET_HDR_LEN];
        hdr[0] = F_NEEDS_CSUM;
        hdr[1] = GSO_TCPV6;
        hdr[4..6].copy_from_slice(&1300u16.to_le_bytes());
        big[56..58].copy_from_slice(&[0, 0]);
        let mut segs = Vec::new();
        let mut scratch = Vec::new();
        assert!(super::segment(&hdr, &big, &mut scratch, 0, |s| segs.push(s.to_vec())));
        assert_eq!(segs.len(), 3);
        assert_eq!(
            segs.iter().map(|s| s.len() - 72).collect::<Vec<_>>(),
            [1300, 1300, 400]
        );
        assert_eq!(seq(&segs[1]), 2300);
        assert_eq!(seq(&segs[2]), 3600);
        assert_eq!(
            (segs[0][53], segs[2][53]),
            (ACK, ACK | PSH),
            "PSH only on the last"
        );
        for s in &segs {
            let mut zeroed = s.clone();
            zeroed[56..58].copy_from_slice(&[0, 0]);
            assert_eq!(tcp_checksum(&zeroed), u16::from_be_bytes([s[56], s[57]]));
            assert_eq!(usize::from(u16::from_be_bytes([s[4], s[5]])), s.len() - 40);
        }
        // Coalescing the segments back gives the original payload.
        let mut c = Coalescer::default();
        assert!(c.start(&segs[0]));
        assert!(c.append(&segs[1]) && c.append(&segs[2]));
        let (_, merged) = c.take().expect("merged");
        assert_eq!(&merged[72..], &big[72..]);
        assert!(
            !super::segment(&PLAIN, &big, &mut scratch, 0, |_| {}),
            "not a TSO packet"
        );
    }

    fn segment_packet(seq: u32, payload: usize, flags: u8) -> Vec<u8> {
        super::tests::segment(seq, payload, flags)
    }

    fn segment(seq: u32, payload: usize, flags: u8) -> Vec<u8> {
        let mut p = vec![0u8; 40 + 32 + payload];
        p[0] = 0x60;
        p[4..6].copy_from_slice(&((32 + payload) as u16).to_be_bytes());
        p[6] = TCP;
        p[7] = 64;
        p[8] = 0xfd;
        p[23] = 1;
        p[24] = 0xfd;
        p[39] = 2;
        p[40..44].copy_from_slice(&[0x13, 0x89, 0x9c, 0x40]);
        p[44..48].copy_from_slice(&seq.to_be_bytes());
        p[48..52].copy_from_slice(&7u32.to_be_bytes());
        p[52] = 8 << 4;
        p[53] = flags;
        p[54..56].copy_from_slice(&[1, 0]);
        p[60..72].copy_from_slice(&[1, 1, 8, 10, 0, 0, 0, 1, 0, 0, 0, 2]);
        for (i, b) in p[72..].iter_mut().enumerate() {
            *b = (seq as usize + i) as u8;
        }
        p
    }

    #[test]
    fn merges_contiguous_segments_into_one_gso_packet() {
        let mut c = Coalescer::default();
        assert!(c.start(&segment(1000, 1300, ACK)));
        assert!(c.append(&segment(2300, 1300, ACK)));
        assert!(
            c.append(&segment(3600, 500, ACK | PSH)),
            "a short last segment joins"
        );
        assert!(
            !c.append(&segment(4100, 1300, ACK)),
            "nothing joins after it"
        );
        let (hdr, packet) = c.take().expect("a packet");
        assert_eq!(packet.len(), 72 + 3100);
        assert_eq!(
            usize::from(u16::from_be_bytes([packet[4], packet[5]])),
            32 + 3100
        );
        assert_eq!(packet[53], ACK | PSH);
        assert_eq!((hdr[0], hdr[1]), (F_NEEDS_CSUM, GSO_TCPV6));
        assert_eq!(
            u16::from_le_bytes([hdr[4], hdr[5]]),
            1300,
            "gso_size is the segment size"
        );
        assert_eq!(
            u16::from_le_bytes([hdr[2], hdr[3]]),
            72,
            "hdr_len covers IPv6 and TCP"
        );
        // The payload bytes follow each other in order.
        assert_eq!(packet[72 + 1300], segment(2300, 1, ACK)[72]);
        assert!(c.is_empty());
    }

    #[test]
    fn refuses_gaps_other_flags_and_other_flows() {
        let mut c = Coalescer::default();
        assert!(c.start(&segment(1000, 1300, ACK)));
        assert!(!c.append(&segment(9999, 1300, ACK)), "sequence gap");
        assert!(!c.append(&segment(2300, 1300, ACK | 0x01)), "FIN");
        let mut other = segment(2300, 1300, ACK);
        other[41] = 0x8a;
        assert!(!c.append(&other), "other port");
        let mut window = segment(2300, 1300, ACK);
        window[55] = 9;
        assert!(!c.append(&window), "other window");
        assert!(
            !c.start(&segment(1, 0, ACK)),
            "no payload: a pure ACK is not merged"
        );
        assert!(!c.start(&segment(1, 10, 0x02)), "SYN");
        let (hdr, packet) = c.take().expect("the single segment");
        assert_eq!(hdr, PLAIN);
        assert_eq!(
            packet,
            &segment(1000, 1300, ACK)[..],
            "a lone segment goes out untouched"
        );
    }

    #[test]
    fn completes_a_partial_checksum() {
        let mut p = segment(5, 101, ACK);
        let tcp_len = p.len() - 40;
        let pseudo = pseudo_header_sum(&p[8..40], tcp_len);
        // The reference: the full checksum computed from scratch with a zero field.
        p[56..58].copy_from_slice(&[0, 0]);
        let mut sum = u32::from(pseudo);
        for pair in p[40..].chunks(2) {
            sum += u32::from(u16::from_be_bytes([pair[0], *pair.get(1).unwrap_or(&0)]));
        }
        while sum > 0xffff {
            sum = (sum & 0xffff) + (sum >> 16);
        }
        let want = !(sum as u16);
        p[56..58].copy_from_slice(&pseudo.to_be_bytes());
        let mut hdr = [0u8; VNET_HDR_LEN];
        hdr[0] = F_NEEDS_CSUM;
        hdr[6..8].copy_from_slice(&40u16.to_le_bytes());
        hdr[8..10].copy_from_slice(&16u16.to_le_bytes());
        assert!(complete_checksum(&hdr, &mut p));
        assert_eq!(u16::from_be_bytes([p[56], p[57]]), want);
        let before = p.clone();
        assert!(complete_checksum(&PLAIN, &mut p), "no flag: nothing to do");
        assert_eq!(p, before);
        hdr[8..10].copy_from_slice(&4000u16.to_le_bytes());
        assert!(
            !complete_checksum(&hdr, &mut p),
            "a field past the packet is refused"
        );
    }
}
