//! Header parsing shared by XDP and TC: Ethernet (up to two 802.1Q/802.1ad tags), IPv6, a bounded
//! walk of the extension-header chain, the fragment header's identity, and the transport ports or
//! ICMPv6 type.
//!
//! Every read is bounds-checked twice: against `data_end` (what the verifier needs) and against
//! the end of the IPv6 payload (what the packet claims), so a truncated or inconsistent packet
//! becomes [`Outcome::Malformed`] rather than a read of trailing bytes. The userspace reference
//! parser (`ipsec-user/src/model/packet.rs`) implements the same rules; the differential test
//! holds the two equal.

use ipsec_common::abi::{
    ESP_HEADER_LEN, ETH_HEADER_LEN, FLOW_OPAQUE, FRAGMENT_HEADER_LEN, FlowKey, IPV6_HEADER_LEN,
    MAX_EXT_HEADERS, MAX_L4_OFFSET, MAX_VLAN_TAGS, VLAN_TAG_LEN, ethertype, is_extension_header,
    is_walked_extension_header, proto,
};

/// What the parser made of a frame.
#[derive(Clone, Copy, PartialEq, Eq)]
pub(crate) enum Outcome {
    /// Not IPv6 (or not an Ethernet frame we understand): not ours to judge.
    NotIpv6,
    /// Truncated or inconsistent headers.
    Malformed,
    /// Extension-header chain longer than the walk bound, or transport header too deep.
    ExtLimit,
    /// ESP (inbound only): the SPI (host order), and whether the frame is the plain shape the
    /// engine's AF_XDP path takes (untagged Ethernet, ESP right after the IPv6 header).
    Esp { spi: u32, plain: bool },
    /// A non-first fragment of ESP (inbound only): no SPI to see; left to reassembly.
    EspFragment,
    /// More VLAN tags than `MAX_VLAN_TAGS`.
    VlanDepth,
    /// A classifiable flow; the key has been filled in.
    Flow(Fragment),
}

/// What the fragment header (if any) says about the packet.
#[derive(Clone, Copy, PartialEq, Eq)]
pub(crate) enum Fragment {
    /// Not a fragment, or an atomic fragment (offset 0, no more fragments: RFC 6946).
    Whole,
    /// The first fragment of a datagram (offset 0, more to come): its verdict is remembered.
    First { id: [u8; 4] },
    /// A later fragment: no ports; `proto_known` is false when an extension header follows the
    /// fragment header (the upper-layer protocol is then not visible either).
    NonFirst { id: [u8; 4], proto_known: bool },
}

/// Bounds-checked view of the packet bytes.
#[derive(Clone, Copy)]
pub(crate) struct Frame {
    /// Start and end of the bytes we can read directly (the linear part of an skb).
    pub data: usize,
    pub data_end: usize,
    /// Length of the whole packet: more than `data_end - data` for a non-linear skb (GSO, paged
    /// data), whose IPv6 payload length covers bytes we never need to read.
    pub total_len: usize,
}

impl Frame {
    /// `N` bytes at `off`, or `None` when they lie past `data_end`.
    #[inline(always)]
    pub(crate) fn bytes<const N: usize>(&self, off: usize) -> Option<[u8; N]> {
        let start = self.data + off;
        if start + N > self.data_end {
            return None;
        }
        // SAFETY: [start, start + N) was just checked to lie inside the packet.
        Some(unsafe { core::ptr::read_unaligned(start as *const [u8; N]) })
    }

    /// Copy the 16-byte address at `off` into `to`, as eight 2-byte loads and stores. A
    /// byte-wise copy compiles to a call into a `memmove` byte loop (~20 ns per packet), and
    /// the BPF backend splits any load it cannot prove aligned into bytes. IPv6 addresses sit
    /// at even offsets (14 or 18 bytes of Ethernet, then 8 or 24), packet data starts 2-byte
    /// aligned, and `FlowKey` is 2-byte aligned.
    #[inline(always)]
    fn copy_address(&self, off: usize, to: &mut [u8; 16]) -> bool {
        let start = self.data + off;
        if start + 16 > self.data_end {
            return false;
        }
        #[allow(
            clippy::cast_ptr_alignment,
            reason = "`to` is 2-byte aligned inside `FlowKey` (see above)"
        )]
        let to = to.as_mut_ptr().cast::<u16>();
        let mut i = 0;
        while i < 8 {
            // SAFETY: [start, start + 16) was just checked to lie inside the packet; both sides
            // are 2-byte aligned (see above) and `to` points at 16 writable bytes.
            unsafe { core::ptr::write(to.add(i), core::ptr::read((start + 2 * i) as *const u16)) };
            i += 1;
        }
        true
    }

    /// `N` bytes at `off` that lie inside both the readable data and the IPv6 payload, which
    /// ends at `payload_end`.
    #[inline(always)]
    fn within<const N: usize>(&self, off: usize, payload_end: usize) -> Option<[u8; N]> {
        // `data_end` first: checked after `payload_end`, LLVM may drop it as implied (on XDP
        // the payload end was checked against the frame length), and the verifier, which
        // cannot follow that, refuses the read.
        let bytes = self.bytes::<N>(off)?;
        if off + N > payload_end {
            return None;
        }
        Some(bytes)
    }

    #[inline(always)]
    pub(crate) fn len(&self) -> usize {
        self.total_len
    }
}

/// Zero the key in `slot` with five 8-byte volatile stores and hand it out. Zeroing it any
/// other way (`FlowKey::default()`, a loop) compiles to a call into a byte-wise `memset` loop,
/// 40 iterations on every packet: the BPF backend does not expand that memset inline.
#[inline(always)]
pub(crate) fn zeroed_key(slot: &mut core::mem::MaybeUninit<FlowKey>) -> &mut FlowKey {
    let words = slot.as_mut_ptr().cast::<u64>();
    let mut i = 0;
    while i < size_of::<FlowKey>() / 8 {
        // SAFETY: `FlowKey` is 40 bytes, 8-byte aligned, plain data; the stores cover it.
        unsafe { core::ptr::write_volatile(words.add(i), 0) };
        i += 1;
    }
    // SAFETY: every byte was written above, and any bit pattern is a valid `FlowKey` (Pod).
    unsafe { slot.assume_init_mut() }
}

/// Parse `frame` into `key`. With `esp_is_terminal`, ESP yields [`Outcome::Esp`] (ingress);
/// otherwise ESP is classified like any other protocol without ports (egress). `l3` is set to
/// where the IPv6 header starts once the Ethernet header and its tags are read (policy byte
/// counters count IPv6 packets, from there on).
#[inline(always)]
pub(crate) fn parse(
    frame: &Frame,
    dir: u8,
    esp_is_terminal: bool,
    key: &mut FlowKey,
    l3_offset: &mut usize,
) -> Outcome {
    let Some(eth) = frame.bytes::<ETH_HEADER_LEN>(0) else {
        return Outcome::NotIpv6;
    };
    let mut l3 = ETH_HEADER_LEN;
    let mut eth_type = u16::from_be_bytes([eth[12], eth[13]]);
    let mut tags = 0usize;
    while eth_type == ethertype::VLAN || eth_type == ethertype::QINQ {
        if tags == MAX_VLAN_TAGS {
            return Outcome::VlanDepth;
        }
        let Some(tag) = frame.bytes::<VLAN_TAG_LEN>(l3) else {
            return Outcome::NotIpv6;
        };
        eth_type = u16::from_be_bytes([tag[2], tag[3]]);
        l3 += VLAN_TAG_LEN;
        tags += 1;
    }
    if eth_type != ethertype::IPV6 {
        return Outcome::NotIpv6;
    }
    *l3_offset = l3;
    // Version, payload length and next header; the addresses are read as words below.
    let Some(ip) = frame.bytes::<8>(l3) else {
        return Outcome::Malformed;
    };
    if !frame.copy_address(l3 + 8, &mut key.src) || !frame.copy_address(l3 + 24, &mut key.dst) {
        return Outcome::Malformed;
    }
    if ip[0] >> 4 != 6 {
        return Outcome::Malformed;
    }
    // The payload must be present in full; parsing never looks past its end.
    let payload_end = l3 + IPV6_HEADER_LEN + u16::from_be_bytes([ip[4], ip[5]]) as usize;
    if payload_end > frame.len() {
        return Outcome::Malformed;
    }
    key.dir = dir;
    key.flags = 0;
    key._pad = 0;
    key.sport = 0;
    key.dport = 0;

    let mut nh = ip[6];
    let mut off = l3 + IPV6_HEADER_LEN;
    let mut walked = 0usize;
    let mut fragment = Fragment::Whole;
    while walked <= MAX_EXT_HEADERS {
        if !is_walked_extension_header(nh) {
            break;
        }
        if walked == MAX_EXT_HEADERS {
            return Outcome::ExtLimit;
        }
        if nh == proto::FRAGMENT {
            let Some(h) = frame.within::<FRAGMENT_HEADER_LEN>(off, payload_end) else {
                return Outcome::Malformed;
            };
            nh = h[0];
            off += FRAGMENT_HEADER_LEN;
            let word = u16::from_be_bytes([h[2], h[3]]);
            let id = [h[4], h[5], h[6], h[7]];
            if word >> 3 != 0 {
                // A non-first fragment: what follows is the middle of the payload, with no
                // ports to see. Its datagram's first fragment decides its verdict.
                if esp_is_terminal && nh == proto::ESP {
                    return Outcome::EspFragment;
                }
                let proto_known = !is_extension_header(nh);
                key.proto = if proto_known { nh } else { 0 };
                key.flags = FLOW_OPAQUE;
                return Outcome::Flow(Fragment::NonFirst { id, proto_known });
            }
            // The first fragment header decides; an atomic fragment is a whole datagram.
            if word & 1 != 0 && fragment == Fragment::Whole {
                fragment = Fragment::First { id };
            }
        } else {
            // Hop-by-hop, routing, destination options: (Hdr Ext Len + 1) * 8 bytes.
            let Some(h) = frame.within::<2>(off, payload_end) else {
                return Outcome::Malformed;
            };
            nh = h[0];
            off += (h[1] as usize + 1) * 8;
        }
        if off > payload_end {
            return Outcome::Malformed;
        }
        if off - l3 > MAX_L4_OFFSET {
            return Outcome::ExtLimit;
        }
        walked += 1;
    }
    // Keep the verifier's view of `off` bounded before the transport reads.
    if off - l3 > MAX_L4_OFFSET {
        return Outcome::ExtLimit;
    }
    key.proto = nh;
    match nh {
        proto::TCP | proto::UDP => {
            // The ports: the first four bytes of both.
            let Some(p) = frame.within::<4>(off, payload_end) else {
                return Outcome::Malformed;
            };
            key.sport = u16::from_be_bytes([p[0], p[1]]);
            key.dport = u16::from_be_bytes([p[2], p[3]]);
        }
        proto::ICMPV6 => {
            // Type, code, checksum.
            let Some(p) = frame.within::<4>(off, payload_end) else {
                return Outcome::Malformed;
            };
            key.dport = u16::from(p[0]);
        }
        proto::ESP if esp_is_terminal => {
            // The whole header must be there; the SPI is its first half.
            if off + ESP_HEADER_LEN > payload_end {
                return Outcome::Malformed;
            }
            let Some(p) = frame.bytes::<4>(off) else {
                return Outcome::Malformed;
            };
            return Outcome::Esp {
                spi: u32::from_be_bytes(p),
                plain: l3 == ETH_HEADER_LEN && off == ETH_HEADER_LEN + IPV6_HEADER_LEN,
            };
        }
        _ => key.flags = FLOW_OPAQUE,
    }
    Outcome::Flow(fragment)
}
