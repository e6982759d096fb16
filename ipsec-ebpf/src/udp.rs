//! ESP in UDP (RFC 3948) and the IKE bypass, for both programs: what a UDP datagram right after
//! the fixed IPv6 header is to us. To a local port in `UDP_ENCAP_PORTS`, a payload that starts
//! with a non-zero SPI and holds SPI and sequence number is ESP (steered by SPI like plain ESP),
//! a lone 0xFF byte a NAT-keepalive (RFC 3948 §2.3); IKE (UDP 500, or 4500 behind the non-ESP
//! marker, `abi::is_ike_datagram`) between a pair of `IKE_PEERS` is passed unclassified. A
//! datagram with extension headers before UDP, or a fragment, is none of these: it is classified
//! like any UDP (fail closed: an `ipsec` or `discard` policy still catches it).

use aya_ebpf::{
    macros::map,
    maps::{Array, HashMap},
};
use ipsec_common::abi::{
    DIR_IN, ETH_HEADER_LEN, ESP_HEADER_LEN, FlowKey, IKE_PORT, IPV6_HEADER_LEN, IkePeerKey,
    MAX_IKE_PEERS, NAT_T_PORT,
    UDP_ENCAP_PORTS_ENTRIES, UDP_HEADER_LEN, is_ike_datagram, proto,
};

use crate::parse::Frame;

#[map(name = "XIPSEC_UDP_ENCAP_PORTS")]
/// 1 at the local UDP ports of ESP in UDP (see `abi::UDP_ENCAP_PORTS`).
pub(crate) static UDP_ENCAP_PORTS: Array<u32> = Array::with_max_entries(UDP_ENCAP_PORTS_ENTRIES, 0);

#[map(name = "XIPSEC_IKE_PEERS")]
/// (local, remote) address pairs of the configured IKE peers (value unused).
pub(crate) static IKE_PEERS: HashMap<IkePeerKey, u32> = HashMap::with_max_entries(MAX_IKE_PEERS, 0);

/// What a UDP datagram is to us.
#[derive(Clone, Copy, PartialEq, Eq)]
pub(crate) enum Udp {
    /// Nothing special: classify it.
    Other,
    /// ESP in UDP: the SPI (host order), and whether the frame is untagged (the AF_XDP shape).
    Esp { spi: u32, plain: bool },
    /// A NAT-keepalive to an encapsulation port.
    Keepalive,
    /// IKE between a configured pair.
    Ike,
}

/// What the UDP datagram of `flow` (already parsed: UDP, not a fragment; `l3` where its IPv6
/// header starts) is, seen in direction `dir`: the local end is the destination inbound, the
/// source outbound. ESP and keepalives are recognised inbound only (outbound, the engine's own
/// ESP in UDP is recognised by its socket, see `egress`).
#[inline(always)]
pub(crate) fn inspect(frame: &Frame, l3: usize, flow: &FlowKey, dir: u8) -> Udp {
    // Most UDP is neither: decide that from the ports alone (one array index), before reading
    // any more of the packet.
    let encap = dir == DIR_IN && is_encap_port(flow.dport);
    if !encap && !is_ike_port(flow.sport) && !is_ike_port(flow.dport) {
        return Udp::Other;
    }
    let Some(ip) = frame.bytes::<8>(l3) else {
        return Udp::Other;
    };
    if ip[6] != proto::UDP {
        return Udp::Other;
    }
    let payload = u16::from_be_bytes([ip[4], ip[5]]) as usize;
    if payload < UDP_HEADER_LEN {
        return Udp::Other;
    }
    let data = payload - UDP_HEADER_LEN;
    let at = l3 + IPV6_HEADER_LEN + UDP_HEADER_LEN;
    // The first payload word (0 when the payload is shorter: then it is neither ESP nor IKE
    // behind the marker). Plain branches: the verifier refuses arithmetic on `data_end`, which
    // a branch-free form of these tests would do.
    let mut word = [0xffu8; 4];
    if data >= 4 {
        match frame.bytes::<4>(at) {
            Some(bytes) => word = bytes,
            None => return Udp::Other,
        }
    }
    if encap {
        if data == 1 {
            return match frame.bytes::<1>(at) {
                Some([0xff]) => Udp::Keepalive,
                _ => Udp::Other,
            };
        }
        if data >= ESP_HEADER_LEN && word != [0; 4] {
            return Udp::Esp {
                spi: u32::from_be_bytes(word),
                plain: l3 == ETH_HEADER_LEN,
            };
        }
    }
    let marker = data >= 4 && word == [0; 4];
    if is_ike_datagram(flow.sport, flow.dport, marker) && is_ike_pair(flow, dir) {
        return Udp::Ike;
    }
    Udp::Other
}

/// The SPI of the engine's own ESP in UDP (outbound): a non-zero first word and room for SPI and
/// sequence number after a UDP header right behind the fixed IPv6 header.
#[inline(always)]
pub(crate) fn own_esp_spi(frame: &Frame, l3: usize) -> Option<u32> {
    let ip = frame.bytes::<8>(l3)?;
    let payload = u16::from_be_bytes([ip[4], ip[5]]) as usize;
    if ip[6] != proto::UDP || payload < UDP_HEADER_LEN + ESP_HEADER_LEN {
        return None;
    }
    let spi = frame.bytes::<4>(l3 + IPV6_HEADER_LEN + UDP_HEADER_LEN)?;
    (spi != [0; 4]).then(|| u32::from_be_bytes(spi))
}

#[inline(always)]
fn is_ike_port(port: u16) -> bool {
    port == IKE_PORT || port == NAT_T_PORT
}

#[inline(always)]
fn is_encap_port(port: u16) -> bool {
    UDP_ENCAP_PORTS
        .get(u32::from(port))
        .is_some_and(|&marked| marked != 0)
}

#[inline(always)]
fn is_ike_pair(flow: &FlowKey, dir: u8) -> bool {
    let key = if dir == DIR_IN {
        IkePeerKey {
            local: flow.dst,
            remote: flow.src,
        }
    } else {
        IkePeerKey {
            local: flow.src,
            remote: flow.dst,
        }
    };
    IKE_PEERS.get_ptr(key).is_some()
}
