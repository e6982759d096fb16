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

pub use crate::wire::VNET_HDR_LEN;
use crate::wire::{
    IPV6_HEADER_LEN, Ipv6Packet, TcpPacket, VirtioNetHdr, checksum, proto, tcp_flags, vnet_flags,
    vnet_gso,
};

/// The IPv6 payload limit (no jumbograms): a whole 64 KiB TSO packet of the peer's stack (the
/// largest it sends, its last segment marked PSH) fits in one merge, so the receiver processes
/// and acknowledges it once, not in two writes (measured: one ACK per write).
const MAX_PAYLOAD: usize = u16::MAX as usize;

/// A virtio-net header for a plain packet (no offload requested).
pub const PLAIN: [u8; VNET_HDR_LEN] = [0; VNET_HDR_LEN];

/// Offset of the TCP header: IPv6 without extension headers, the only shape merged or split.
const TCP_AT: usize = IPV6_HEADER_LEN;
/// The shortest packet either path handles: IPv6 and a TCP header without options.
const MIN_LEN: usize = TCP_AT + 20;
/// Offset of the checksum in the TCP header (`csum_offset` of the virtio-net header).
const TCP_CHECKSUM_AT: u16 = 16;

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

/// The TCP header of `packet`, an IPv6 packet at least [`MIN_LEN`] long.
fn tcp<T: AsRef<[u8]>>(packet: T) -> TcpPacket<T> {
    TcpPacket::new_unchecked(packet)
}

/// The TCP view of `packet` if it is an IPv6 packet (exactly its payload length long) carrying a
/// TCP segment with data and only ACK (and maybe PSH) set, directly after the IPv6 header.
fn mergeable(packet: &[u8]) -> Option<TcpPacket<&[u8]>> {
    let ip = Ipv6Packet::new_checked(packet).ok()?;
    if packet.len() < MIN_LEN || ip.next_header() != proto::TCP || ip.total_len() != packet.len() {
        return None;
    }
    let segment = TcpPacket::new_checked(ip.payload_bytes()).ok()?;
    let with_data = !segment.payload().is_empty();
    (with_data && segment.flags() & !tcp_flags::PSH == tcp_flags::ACK).then_some(segment)
}

/// A length that fits a 16-bit field by construction (headers, segment sizes).
fn u16_of(len: usize) -> u16 {
    u16::try_from(len).unwrap_or(u16::MAX)
}

impl Coalescer {
    /// Whether no super-packet is pending.
    pub fn is_empty(&self) -> bool {
        self.segments == 0
    }

    /// Start a super-packet with `packet`; false (and nothing kept) when it cannot be merged.
    pub fn start(&mut self, packet: &[u8]) -> bool {
        let Some(segment) = mergeable(packet) else {
            return false;
        };
        self.header_len = TCP_AT + segment.header_len();
        self.mss = segment.payload().len();
        self.segments = 1;
        self.next_seq = segment
            .seq_number()
            .wrapping_add(u32::from(u16_of(self.mss)));
        self.closed = segment.flags() & tcp_flags::PSH != 0;
        self.packet.clear();
        self.packet.extend_from_slice(packet);
        true
    }

    /// Append `packet` if it continues the super-packet.
    pub fn append(&mut self, packet: &[u8]) -> bool {
        if self.segments == 0 || self.closed {
            return false;
        }
        let Some(segment) = mergeable(packet) else {
            return false;
        };
        let head = &self.packet[..self.header_len];
        let first = tcp(&head[TCP_AT..]);
        let payload = segment.payload().len();
        let flags = segment.flags();
        let same = packet.len() > self.header_len
            // Version, traffic class, flow label; next header and hop limit; addresses.
            && packet[..4] == head[..4]
            && packet[6..TCP_AT] == head[6..TCP_AT]
            && segment.src_port() == first.src_port()
            && segment.dst_port() == first.dst_port()
            && segment.ack_number() == first.ack_number()
            // Data offset with the reserved and AE bits, flags (PSH aside), window, options.
            && packet[TCP_AT + 12] == head[TCP_AT + 12]
            && flags & !tcp_flags::PSH == first.flags() & !tcp_flags::PSH
            && segment.window() == first.window()
            && segment.options() == first.options()
            && segment.seq_number() == self.next_seq
            && payload <= self.mss
            && self.packet.len() - IPV6_HEADER_LEN + payload <= MAX_PAYLOAD;
        if !same {
            return false;
        }
        self.packet.extend_from_slice(segment.payload());
        self.segments += 1;
        self.next_seq = self.next_seq.wrapping_add(u32::from(u16_of(payload)));
        if flags & tcp_flags::PSH != 0 {
            let mut merged = tcp(&mut self.packet[TCP_AT..]);
            let merged_flags = merged.flags();
            merged.set_flags(merged_flags | tcp_flags::PSH);
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
        let payload_len = self.packet.len() - IPV6_HEADER_LEN;
        let mut ip = Ipv6Packet::new_unchecked(&mut self.packet[..]);
        ip.set_payload_len(u16_of(payload_len));
        // CHECKSUM_PARTIAL: the field holds the folded pseudo-header sum, as the stack's own
        // `__tcp_v6_send_check` leaves it.
        let pseudo =
            checksum::pseudo_header(&ip.src_octets(), &ip.dst_octets(), proto::TCP, payload_len);
        tcp(&mut self.packet[TCP_AT..]).set_checksum(checksum::fold(pseudo));
        let hdr = VirtioNetHdr {
            flags: vnet_flags::NEEDS_CSUM,
            gso_type: vnet_gso::TCPV6,
            hdr_len: u16_of(self.header_len),
            gso_size: u16_of(self.mss),
            csum_start: u16_of(TCP_AT),
            csum_offset: TCP_CHECKSUM_AT,
        };
        Some((hdr.emit(), &self.packet))
    }
}

/// The `gso_type` of a virtio-net header: 0 for a plain packet.
pub fn gso_type(hdr: &[u8; VNET_HDR_LEN]) -> u8 {
    VirtioNetHdr::parse(hdr).gso_type
}

/// The header length and segment size of a TSO TCP packet, if `packet` is one.
fn tso(hdr: &[u8; VNET_HDR_LEN], packet: &[u8]) -> Option<(usize, usize)> {
    let hdr = VirtioNetHdr::parse(hdr);
    if hdr.gso_type != vnet_gso::TCPV6 || packet.len() < MIN_LEN {
        return None;
    }
    let header_len = TCP_AT + tcp(&packet[TCP_AT..]).header_len();
    let mss = usize::from(hdr.gso_size);
    (mss > 0 && header_len <= packet.len()).then_some((header_len, mss))
}

/// How many segments [`segment`] would make of `packet`, if it is a TSO TCP packet.
pub fn segment_count(hdr: &[u8; VNET_HDR_LEN], packet: &[u8]) -> Option<usize> {
    let (header_len, mss) = tso(hdr, packet)?;
    Some((packet.len() - header_len).div_ceil(mss))
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
    let Some((header_len, mss)) = tso(hdr, packet) else {
        return false;
    };
    let ip = Ipv6Packet::new_unchecked(packet);
    if ip.next_header() != proto::TCP || header_len < MIN_LEN {
        return false;
    }
    let (src, dst) = (ip.src_octets(), ip.dst_octets());
    let (head, payload) = packet.split_at(header_len);
    let first_seq = tcp(&packet[TCP_AT..]).seq_number();
    let chunks = payload.len().div_ceil(mss);
    for (i, chunk) in payload.chunks(mss).enumerate() {
        scratch.truncate(prefix);
        scratch.extend_from_slice(head);
        scratch.extend_from_slice(chunk);
        let (ip_header, upper) = scratch[prefix..].split_at_mut(TCP_AT);
        Ipv6Packet::new_unchecked(ip_header).set_payload_len(u16_of(upper.len()));
        let mut seg = tcp(&mut *upper);
        let offset = u32::try_from(i * mss).unwrap_or(u32::MAX);
        seg.set_seq_number(first_seq.wrapping_add(offset));
        let mut flags = seg.flags();
        if i + 1 < chunks {
            flags &= !(tcp_flags::FIN | tcp_flags::PSH);
        }
        if i > 0 {
            flags &= !tcp_flags::CWR;
        }
        seg.set_flags(flags);
        seg.set_checksum(0);
        let sum = checksum::upper_layer(&src, &dst, proto::TCP, upper);
        tcp(upper).set_checksum(sum);
        each(scratch);
    }
    true
}

/// Complete the checksum of a packet the TUN device handed over with `VIRTIO_NET_HDR_F_NEEDS_CSUM`
/// (the field at `start + offset` holds the pseudo-header sum); false when the header is
/// inconsistent with the packet.
pub fn complete_checksum(hdr: &[u8; VNET_HDR_LEN], packet: &mut [u8]) -> bool {
    let hdr = VirtioNetHdr::parse(hdr);
    if !hdr.needs_csum() {
        return true;
    }
    let start = usize::from(hdr.csum_start);
    let field = start + usize::from(hdr.csum_offset);
    if field + 2 > packet.len() {
        return false;
    }
    let sum = !checksum::fold(checksum::sum(&packet[start..]));
    packet[field..field + 2].copy_from_slice(&sum.to_be_bytes());
    true
}

#[cfg(test)]
mod tests {
    use super::*;

    const F_NEEDS_CSUM: u8 = vnet_flags::NEEDS_CSUM;
    const GSO_TCPV6: u8 = vnet_gso::TCPV6;
    const TCP: u8 = proto::TCP;
    const ACK: u8 = tcp_flags::ACK;
    const PSH: u8 = tcp_flags::PSH;

    fn seq(packet: &[u8]) -> u32 {
        tcp(&packet[TCP_AT..]).seq_number()
    }

    /// The full TCP checksum of an IPv6 packet (checksum field zero).
    fn tcp_checksum(packet: &[u8]) -> u16 {
        let ip = Ipv6Packet::new_unchecked(packet);
        checksum::upper_layer(&ip.src_octets(), &ip.dst_octets(), TCP, &packet[TCP_AT..])
    }

    /// The folded pseudo-header sum of an IPv6 packet carrying `tcp_len` bytes of TCP.
    fn pseudo_header_sum(packet: &[u8], tcp_len: usize) -> u16 {
        let ip = Ipv6Packet::new_unchecked(packet);
        checksum::fold(checksum::pseudo_header(
            &ip.src_octets(),
            &ip.dst_octets(),
            TCP,
            tcp_len,
        ))
    }

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
        p[4..6].copy_from_slice(
            &u16::try_from(32 + payload)
                .expect("test packet fits")
                .to_be_bytes(),
        );
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
            *b = (seq as usize + i).to_le_bytes()[0];
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
    fn a_whole_64k_tso_packet_merges_into_one_write() {
        // The kernel's largest TSO packet over this path: 49 segments of 1331 bytes (65,219),
        // PSH on the last, as `bench e2e` sees them.
        let mut c = Coalescer::default();
        assert!(c.start(&segment(0, 1331, ACK)));
        for i in 1..49u32 {
            let flags = if i == 48 { ACK | PSH } else { ACK };
            assert!(
                c.append(&segment(i * 1331, 1331, flags)),
                "segment {i} joins"
            );
        }
        let (hdr, packet) = c.take().expect("a packet");
        assert_eq!(packet.len(), 72 + 49 * 1331);
        assert_eq!(u16::from_le_bytes([hdr[4], hdr[5]]), 1331);
        // One byte more than the IPv6 payload limit stays out.
        assert!(c.start(&segment(0, 1331, ACK)));
        for i in 1..49u32 {
            assert!(c.append(&segment(i * 1331, 1331, ACK)));
        }
        let room = u16::MAX as usize - (32 + 49 * 1331);
        assert!(!c.append(&segment(49 * 1331, room + 1, ACK)), "over 65,535");
        assert!(c.append(&segment(49 * 1331, room, ACK)), "exactly 65,535");
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
        let pseudo = pseudo_header_sum(&p, tcp_len);
        // The reference: the full checksum computed from scratch with a zero field.
        p[56..58].copy_from_slice(&[0, 0]);
        let mut sum = u32::from(pseudo);
        for pair in p[40..].chunks(2) {
            sum += u32::from(u16::from_be_bytes([pair[0], *pair.get(1).unwrap_or(&0)]));
        }
        while sum > 0xffff {
            sum = (sum & 0xffff) + (sum >> 16);
        }
        let want = !checksum::fold(u64::from(sum));
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
