//! The reference classifier: what a packet's flow matches, written plainly enough to be obviously
//! right. The eBPF classifier is tested against it; it is never on the fast path.
//!
//! A flow takes the first SP of its direction, in `Sp::rank` order, that `matches` it; none means
//! the packet passes in clear. Neighbour discovery (RFC 4861 §4, ICMPv6 types 133-137) only ever
//! matches a policy that names `icmp6` and that type, so a broad `any` policy between two hosts
//! cannot cut them off from each other.
//!
//! Fragments (RFC 4301 §7, stateful fragment checking): a datagram's first fragment is classified
//! like any packet and its verdict is remembered; its later fragments take that verdict. A later
//! fragment whose first fragment was not seen takes the strictest verdict (discard over ipsec over
//! none; the oldest policy among equally strict ones) of every policy that could match it with
//! its ports ignored, and its protocol too when an extension header hides it
//! ([`Spd::classify_fragment`]); if no policy could match, it passes. [`FirstFragments`] is that
//! rule with its state.

use std::collections::HashMap;
use std::net::Ipv6Addr;
use std::ops::RangeInclusive;

use super::packet::Fragment;
use super::sp::Sp;
use super::spd::Spd;
use super::types::{Action, Direction, UpperLayerProtocol};

/// IPv6 next header of ICMPv6 (RFC 4443), as the datapath knows it.
pub const NEXT_HEADER_ICMPV6: u8 = ipsec_common::abi::proto::ICMPV6;

/// Router Solicitation, Router Advertisement, Neighbor Solicitation, Neighbor Advertisement and
/// Redirect (RFC 4861 §4.1-4.5): the datapath's range.
pub const NEIGHBOUR_DISCOVERY_TYPES: RangeInclusive<u8> =
    ipsec_common::abi::ND_TYPE_FIRST..=ipsec_common::abi::ND_TYPE_LAST;

/// What the classifier sees of a packet.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Flow {
    pub src: Ipv6Addr,
    pub dst: Ipv6Addr,
    /// The upper-layer protocol, after any extension headers.
    pub next_header: u8,
    pub l4: L4,
}

/// The upper-layer fields a selector can look at.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum L4 {
    /// TCP or UDP ports.
    Ports { src: u16, dst: u16 },
    /// ICMPv6 type.
    Icmp { kind: u8 },
    /// A non-first fragment, or a protocol without ports: matches only port selectors that are any.
    Opaque,
}

impl Flow {
    /// The ICMPv6 type if this flow is neighbour discovery.
    pub fn neighbour_discovery_type(&self) -> Option<u8> {
        match self.l4 {
            L4::Icmp { kind }
                if self.next_header == NEXT_HEADER_ICMPV6
                    && NEIGHBOUR_DISCOVERY_TYPES.contains(&kind) =>
            {
                Some(kind)
            }
            _ => None,
        }
    }
}

impl Sp {
    /// Whether the policy's selector covers `flow` (direction is the caller's business).
    pub fn matches(&self, flow: &Flow) -> bool {
        self.source.contains(&flow.src)
            && self.destination.contains(&flow.dst)
            && self
                .protocol
                .next_header()
                .is_none_or(|nh| nh == flow.next_header)
            && self
                .source_port
                .is_none_or(|p| matches!(flow.l4, L4::Ports { src, .. } if src == p))
            && self.destination_port.is_none_or(|p| match flow.l4 {
                L4::Ports { dst, .. } => dst == p,
                L4::Icmp { kind } => u16::from(kind) == p,
                L4::Opaque => false,
            })
    }

    /// Whether the policy names ICMPv6 type `kind` explicitly, the only way to catch neighbour
    /// discovery.
    fn names_icmp_type(&self, kind: u8) -> bool {
        self.protocol == UpperLayerProtocol::Icmp6 && self.destination_port == Some(u16::from(kind))
    }
}

impl Spd {
    /// The SPs of `direction` in precedence order (lowest `rank` first).
    pub fn ranked(&self, direction: Direction) -> Vec<&Sp> {
        let mut sps: Vec<&Sp> = self
            .sps()
            .iter()
            .filter(|sp| sp.direction == direction)
            .collect();
        sps.sort_by_key(|sp| sp.rank());
        sps
    }

    /// THE reference classification: the first SP of `direction`, in rank order, that matches
    /// `flow`; `None` means the packet passes in clear.
    pub fn classify(&self, direction: Direction, flow: &Flow) -> Option<&Sp> {
        self.matching_in_order(direction, *flow).next()
    }

    /// The SPs of `direction` that `flow` matches, in rank order (neighbour discovery matches
    /// only a policy naming its type).
    fn matching_in_order(&self, direction: Direction, flow: Flow) -> impl Iterator<Item = &Sp> {
        let nd = flow.neighbour_discovery_type();
        self.ranked(direction)
            .into_iter()
            .filter(move |sp| nd.is_none_or(|kind| sp.names_icmp_type(kind)))
            .filter(move |sp| sp.matches(&flow))
    }

    /// Every SP of `direction` that `flow` matches, in rank order: [`Self::classify`]'s answer
    /// first, then the policies it won against (for explaining why it won).
    pub fn matching(&self, direction: Direction, flow: &Flow) -> Vec<&Sp> {
        self.matching_in_order(direction, *flow).collect()
    }

    /// The verdict of a later fragment whose first fragment was not seen: the strictest SP of
    /// `direction` that could match it with ports ignored (and the protocol too unless
    /// `proto_known`), the oldest among equally strict ones; `None` when none could.
    pub fn classify_fragment(
        &self,
        direction: Direction,
        flow: &Flow,
        proto_known: bool,
    ) -> Option<&Sp> {
        let strictness = |sp: &Sp| match sp.action {
            Action::Discard => 0,
            Action::Ipsec => 1,
            Action::None => 2,
        };
        self.sps()
            .iter()
            .filter(|sp| sp.direction == direction)
            .filter(|sp| sp.source.contains(&flow.src) && sp.destination.contains(&flow.dst))
            .filter(|sp| {
                !proto_known
                    || sp
                        .protocol
                        .next_header()
                        .is_none_or(|nh| nh == flow.next_header)
            })
            .min_by_key(|sp| (strictness(sp), sp.seq))
    }
}

/// Verdicts of first fragments, remembered for the later fragments of their datagrams (the
/// module docs state the rule). Unbounded: the reference has no eviction.
#[derive(Debug, Default)]
pub struct FirstFragments {
    seen: HashMap<(Ipv6Addr, Ipv6Addr, u32, Direction), Option<Sp>>,
}

/// A packet's reference verdict.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Verdict {
    /// The policy that decides, `None` when the packet passes for lack of one.
    pub sp: Option<Sp>,
    /// A later fragment whose first fragment was not seen (the stateless rule decided).
    pub fragment_without_state: bool,
}

impl FirstFragments {
    pub fn new() -> Self {
        Self::default()
    }

    /// Forget every remembered first fragment.
    pub fn clear(&mut self) {
        self.seen.clear();
    }

    /// The verdict of a packet of `flow` whose fragment header said `fragment`, remembering it
    /// when it is a first fragment.
    pub fn classify(
        &mut self,
        spd: &Spd,
        direction: Direction,
        flow: &Flow,
        fragment: Fragment,
    ) -> Verdict {
        match fragment {
            Fragment::Whole => Verdict {
                sp: spd.classify(direction, flow).cloned(),
                fragment_without_state: false,
            },
            Fragment::First { id } => {
                let sp = spd.classify(direction, flow).cloned();
                self.seen
                    .insert((flow.src, flow.dst, id, direction), sp.clone());
                Verdict {
                    sp,
                    fragment_without_state: false,
                }
            }
            Fragment::NonFirst { id, proto_known } => {
                match self.seen.get(&(flow.src, flow.dst, id, direction)) {
                    Some(sp) => Verdict {
                        sp: sp.clone(),
                        fragment_without_state: false,
                    },
                    None => Verdict {
                        sp: spd.classify_fragment(direction, flow, proto_known).cloned(),
                        fragment_without_state: true,
                    },
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::args::{SpAddArgs, SpRemoveArgs};
    use crate::model::fixtures::{discard_sp_args, example_sa_args, example_sp_args};
    use crate::model::types::Action;

    fn addr(s: &str) -> Ipv6Addr {
        s.parse().expect("parsing a test address")
    }

    fn tcp(src: &str, dst: &str, sport: u16, dport: u16) -> Flow {
        Flow {
            src: addr(src),
            dst: addr(dst),
            next_header: 6,
            l4: L4::Ports {
                src: sport,
                dst: dport,
            },
        }
    }

    fn icmp(src: &str, dst: &str, kind: u8) -> Flow {
        Flow {
            src: addr(src),
            dst: addr(dst),
            next_header: NEXT_HEADER_ICMPV6,
            l4: L4::Icmp { kind },
        }
    }

    fn name(sp: Option<&Sp>) -> Option<&str> {
        sp.map(|sp| sp.name.as_str())
    }

    fn add(spd: &mut Spd, args: &SpAddArgs) {
        spd.add_sp(args).expect("adding a test sp");
    }

    #[test]
    fn spec_example_matches_its_flow_only() {
        let mut spd = Spd::new();
        spd.add_sa(&example_sa_args()).expect("adding sa1");
        add(&mut spd, &example_sp_args());
        let flow = tcp("2001:db8:1::5", "2002:db8:1::9", 23, 25);
        assert_eq!(name(spd.classify(Direction::Out, &flow)), Some("sp1"));
        assert_eq!(spd.classify(Direction::In, &flow), None, "wrong direction");
        for other in [
            tcp("2001:db8:2::5", "2002:db8:1::9", 23, 25),
            tcp("2001:db8:1::5", "2002:db8:2::9", 23, 25),
            tcp("2001:db8:1::5", "2002:db8:1::9", 24, 25),
            tcp("2001:db8:1::5", "2002:db8:1::9", 23, 26),
            Flow {
                next_header: 17,
                ..flow
            },
            Flow {
                l4: L4::Opaque,
                ..flow
            },
        ] {
            assert_eq!(spd.classify(Direction::Out, &other), None, "{other:?}");
        }
    }

    #[test]
    fn precedence_in_classification() {
        let mut spd = Spd::new();
        add(&mut spd, &discard_sp_args("broad", "any", "any"));
        add(&mut spd, &discard_sp_args("dst48", "any", "2001:db8::/48"));
        add(
            &mut spd,
            &discard_sp_args("src64", "2001:db8:9::/64", "2001:db8::/48"),
        );
        let mut tcp_any = discard_sp_args("tcp", "2001:db8:9::/64", "2001:db8::/48");
        tcp_any.upper_layer_protocol = Some("tcp".into());
        add(&mut spd, &tcp_any);
        let mut sport = tcp_any.clone();
        sport.sp_name = Some("sport".into());
        sport.source_port = Some("1000".into());
        add(&mut spd, &sport);
        let mut dport = tcp_any.clone();
        dport.sp_name = Some("dport".into());
        dport.destination_port = Some("80".into());
        add(&mut spd, &dport);

        let out =
            |spd: &Spd, flow: &Flow| name(spd.classify(Direction::Out, flow)).map(str::to_owned);
        assert_eq!(
            out(&spd, &tcp("::1", "3000::1", 1, 2)).as_deref(),
            Some("broad")
        );
        assert_eq!(
            out(&spd, &tcp("::1", "2001:db8::1", 1, 2)).as_deref(),
            Some("dst48")
        );
        let from = "2001:db8:9::1";
        assert_eq!(
            out(&spd, &icmp(from, "2001:db8::1", 128)).as_deref(),
            Some("src64")
        );
        assert_eq!(
            out(&spd, &tcp(from, "2001:db8::1", 1, 2)).as_deref(),
            Some("tcp")
        );
        assert_eq!(
            out(&spd, &tcp(from, "2001:db8::1", 1000, 2)).as_deref(),
            Some("sport")
        );
        assert_eq!(
            out(&spd, &tcp(from, "2001:db8::1", 1000, 80)).as_deref(),
            Some("dport"),
            "dport beats sport"
        );

        // A prioritised broad policy beats every specific one; lower n first.
        let mut p9 = discard_sp_args("p9", "any", "any");
        p9.priority = Some("9".into());
        add(&mut spd, &p9);
        assert_eq!(
            out(&spd, &tcp(from, "2001:db8::1", 1000, 80)).as_deref(),
            Some("p9")
        );
        let mut p3 = discard_sp_args("p3", "any", "3000::/16");
        p3.priority = Some("3".into());
        add(&mut spd, &p3);
        assert_eq!(
            out(&spd, &tcp(from, "3000::1", 1, 1)).as_deref(),
            Some("p3")
        );
        assert_eq!(
            out(&spd, &tcp(from, "2001:db8::1", 1, 1)).as_deref(),
            Some("p9")
        );

        // Equal priority: the older one wins, and keeps winning after the other is re-added.
        let mut p3b = discard_sp_args("p3b", "any", "any");
        p3b.priority = Some("3".into());
        p3b.upper_layer_protocol = Some("tcp".into());
        add(&mut spd, &p3b);
        assert_eq!(
            out(&spd, &tcp(from, "3000::1", 1, 1)).as_deref(),
            Some("p3")
        );
        spd.remove_sp(&SpRemoveArgs {
            sp_name: Some("p3".into()),
            remove_all: false,
        })
        .expect("removing p3");
        add(&mut spd, &p3);
        assert_eq!(
            out(&spd, &tcp(from, "3000::1", 1, 1)).as_deref(),
            Some("p3b"),
            "now p3b is older"
        );
    }

    #[test]
    fn neighbour_discovery_passes_unless_named() {
        let mut spd = Spd::new();
        for direction in ["in", "out"] {
            let mut args = discard_sp_args(&format!("all-{direction}"), "any", "any");
            args.flow_direction = Some(direction.into());
            add(&mut spd, &args);
        }
        for kind in NEIGHBOUR_DISCOVERY_TYPES {
            let flow = icmp("fe80::1", "ff02::1:ff00:2", kind);
            assert_eq!(
                spd.classify(Direction::In, &flow),
                None,
                "type {kind} passes in"
            );
            assert_eq!(
                spd.classify(Direction::Out, &flow),
                None,
                "type {kind} passes out"
            );
        }
        for kind in [1, 128, 132, 138, 255] {
            let flow = icmp("fe80::1", "fe80::2", kind);
            assert_eq!(
                name(spd.classify(Direction::In, &flow)),
                Some("all-in"),
                "type {kind} is not nd"
            );
        }
        // A non-icmp flow with the same numbers is not nd either.
        let odd = Flow {
            next_header: 17,
            ..icmp("fe80::1", "fe80::2", 135)
        };
        assert_eq!(name(spd.classify(Direction::In, &odd)), Some("all-in"));

        let mut icmp_any = discard_sp_args("icmp-any", "any", "any");
        icmp_any.upper_layer_protocol = Some("icmp6".into());
        icmp_any.flow_direction = Some("in".into());
        add(&mut spd, &icmp_any);
        let ns = icmp("fe80::1", "fe80::2", 135);
        assert_eq!(
            spd.classify(Direction::In, &ns),
            None,
            "icmp6 without the type does not catch nd"
        );

        let mut named = icmp_any.clone();
        named.sp_name = Some("block-ns".into());
        named.destination_port = Some("135".into());
        add(&mut spd, &named);
        let hit = spd
            .classify(Direction::In, &ns)
            .expect("a policy naming type 135 catches it");
        assert_eq!(
            (hit.name.as_str(), hit.action),
            ("block-ns", Action::Discard)
        );
        assert_eq!(
            spd.classify(Direction::In, &icmp("fe80::1", "fe80::2", 136)),
            None,
            "other nd types still pass"
        );
        let elsewhere = icmp("fe80::1", "fe80::2", 135);
        assert_eq!(
            spd.classify(Direction::Out, &elsewhere),
            None,
            "only the direction named"
        );
    }

    #[test]
    fn icmp_type_and_opaque_matching() {
        let mut spd = Spd::new();
        let mut echo = discard_sp_args("echo", "any", "any");
        echo.upper_layer_protocol = Some("icmp6".into());
        echo.destination_port = Some("128".into());
        add(&mut spd, &echo);
        assert_eq!(
            name(spd.classify(Direction::Out, &icmp("::1", "::2", 128))),
            Some("echo")
        );
        assert_eq!(spd.classify(Direction::Out, &icmp("::1", "::2", 129)), None);
        let opaque = Flow {
            l4: L4::Opaque,
            ..icmp("::1", "::2", 128)
        };
        assert_eq!(
            spd.classify(Direction::Out, &opaque),
            None,
            "a port selector never matches opaque"
        );
        add(&mut spd, &discard_sp_args("any", "any", "any"));
        assert_eq!(
            name(spd.classify(Direction::Out, &opaque)),
            Some("any"),
            "any matches opaque"
        );
    }

    #[test]
    fn fragments_take_their_first_fragments_verdict_or_the_strictest() {
        let mut spd = Spd::new();
        spd.add_sa(&example_sa_args()).expect("adding sa1");
        // ipsec for UDP port 9000, discard for TCP port 23, between the same hosts.
        let mut udp = discard_sp_args("udp9000", "2001:db8::/64", "2001:db8:1::/64");
        udp.upper_layer_protocol = Some("udp".into());
        udp.destination_port = Some("9000".into());
        udp.action = Some("ipsec".into());
        udp.sp_mode = Some("transport".into());
        udp.sa_name = Some("sa1".into());
        add(&mut spd, &udp);
        let mut telnet = discard_sp_args("telnet", "2001:db8::/64", "2001:db8:1::/64");
        telnet.upper_layer_protocol = Some("tcp".into());
        telnet.destination_port = Some("23".into());
        add(&mut spd, &telnet);
        let first = Flow {
            src: addr("2001:db8::1"),
            dst: addr("2001:db8:1::1"),
            next_header: 17,
            l4: L4::Ports { src: 5, dst: 53 },
        };
        let later = Flow {
            l4: L4::Opaque,
            ..first
        };
        let mut state = FirstFragments::new();
        let out = Direction::Out;
        // A later fragment (no ports) of datagram `id`, with or without its protocol known.
        let later_fragment =
            |state: &mut FirstFragments, direction, flow: &Flow, id, proto_known| {
                state.classify(
                    &spd,
                    direction,
                    flow,
                    Fragment::NonFirst { id, proto_known },
                )
            };
        // Without state a UDP fragment could belong to the ipsec flow: ipsec.
        let v = later_fragment(&mut state, out, &later, 7, true);
        assert_eq!(v.sp.map(|sp| sp.name), Some("udp9000".into()));
        assert!(v.fragment_without_state);
        // With the protocol hidden, the discard policy could match too: discard wins.
        let v = later_fragment(&mut state, out, &later, 7, false);
        assert_eq!(v.sp.map(|sp| sp.name), Some("telnet".into()));
        // A first fragment to port 53 matches nothing; its later fragments pass with it.
        let v = state.classify(&spd, out, &first, Fragment::First { id: 7 });
        assert_eq!(v.sp, None);
        let v = later_fragment(&mut state, out, &later, 7, false);
        assert_eq!((v.sp, v.fragment_without_state), (None, false));
        // Another datagram, and other hosts, have no state; hosts no policy covers pass.
        let v = later_fragment(&mut state, out, &later, 8, true);
        assert!(v.fragment_without_state && v.sp.is_some());
        let elsewhere = Flow {
            dst: addr("2001:db8:2::1"),
            ..later
        };
        let v = later_fragment(&mut state, out, &elsewhere, 7, false);
        assert_eq!((v.sp, v.fragment_without_state), (None, true));
        // The other direction has no policy at all.
        let v = later_fragment(&mut state, Direction::In, &later, 7, true);
        assert_eq!(v.sp, None);
    }
}

/// ESP in UDP (RFC 3948) and the IKE bypass, as the datapath treats them (the reference for
/// `ipsec-ebpf/src/udp.rs`): the local UDP ports of ESP in UDP, and the (local, remote) address
/// pairs of configured IKE peers.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct UdpContext {
    pub encap_ports: std::collections::BTreeSet<u16>,
    pub ike_peers: std::collections::BTreeSet<(Ipv6Addr, Ipv6Addr)>,
}

/// What a UDP datagram is to the datapath ([`UdpContext::kind`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum UdpKind {
    /// Classified like any UDP.
    Other,
    /// ESP in UDP (inbound, to an encapsulation port): steered by SPI like plain ESP; `plain`
    /// when the frame is untagged.
    Esp { spi: u32, plain: bool },
    /// A NAT-keepalive (RFC 3948 §2.3) to an encapsulation port (inbound): dropped.
    Keepalive,
    /// IKE between a configured pair (UDP 500, or 4500 behind the non-ESP marker): passed
    /// unclassified, both ways.
    Ike,
}

impl UdpContext {
    /// What `frame` (an Ethernet frame) is in `direction`, given that the reference parser made
    /// it a whole (unfragmented) flow of protocol UDP. Only UDP right after the fixed IPv6
    /// header counts: behind extension headers it is [`UdpKind::Other`].
    pub fn kind(&self, frame: &[u8], direction: Direction, flow: &Flow) -> UdpKind {
        use ipsec_common::abi::{
            ESP_HEADER_LEN, ETH_HEADER_LEN, IPV6_HEADER_LEN, UDP_HEADER_LEN, VLAN_TAG_LEN,
            ethertype, is_ike_datagram, proto,
        };
        let L4::Ports {
            src: sport,
            dst: dport,
        } = flow.l4
        else {
            return UdpKind::Other;
        };
        let mut l3 = ETH_HEADER_LEN;
        while let Some(kind) = frame.get(l3 - 2..l3) {
            let kind = u16::from_be_bytes([kind[0], kind[1]]);
            if kind != ethertype::VLAN && kind != ethertype::QINQ {
                break;
            }
            l3 += VLAN_TAG_LEN;
        }
        let Some(ip) = frame.get(l3..l3 + IPV6_HEADER_LEN) else {
            return UdpKind::Other;
        };
        let payload = usize::from(u16::from_be_bytes([ip[4], ip[5]]));
        if ip[6] != proto::UDP || payload < UDP_HEADER_LEN {
            return UdpKind::Other;
        }
        let data = payload - UDP_HEADER_LEN;
        let at = l3 + IPV6_HEADER_LEN + UDP_HEADER_LEN;
        let word = if data >= 4 {
            frame.get(at..at + 4).map(|w| [w[0], w[1], w[2], w[3]])
        } else {
            None
        };
        if direction == Direction::In && self.encap_ports.contains(&dport) {
            if data == 1 {
                return if frame.get(at) == Some(&0xff) {
                    UdpKind::Keepalive
                } else {
                    UdpKind::Other
                };
            }
            if let Some(spi) = word
                && spi != [0; 4]
                && data >= ESP_HEADER_LEN
            {
                return UdpKind::Esp {
                    spi: u32::from_be_bytes(spi),
                    plain: l3 == ETH_HEADER_LEN,
                };
            }
        }
        let (local, remote) = match direction {
            Direction::In => (flow.dst, flow.src),
            Direction::Out => (flow.src, flow.dst),
        };
        let marker = word == Some([0; 4]);
        if is_ike_datagram(sport, dport, marker) && self.ike_peers.contains(&(local, remote)) {
            UdpKind::Ike
        } else {
            UdpKind::Other
        }
    }
}
