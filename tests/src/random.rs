//! Random SPDs and packets for the differential test, biased to hit policy edges: first and last
//! addresses of prefixes, the address just outside, ports one off, ICMPv6 types of neighbour
//! discovery, fragments, VLAN tags, and malformed frames.

use std::net::Ipv6Addr;

use ipsec_common::abi::XSK_MAX_FRAME;
use rand::{Rng as _, RngExt as _, SeedableRng as _, rngs::StdRng, seq::IndexedRandom as _};

use ipsec_user::model::{Direction, SaAddArgs, Sp, SpAddArgs, Spd, UpperLayerProtocol};

use crate::frames::{Ext, FrameSpec, l4_icmp, l4_ports};

/// `rand`'s `StdRng` seeded from a `u64`: reproducible (a failing seed can be replayed), with
/// the few draws the generators below need.
pub struct Rng(StdRng);

impl Rng {
    pub fn new(seed: u64) -> Self {
        Self(StdRng::seed_from_u64(seed))
    }
    pub fn next_u64(&mut self) -> u64 {
        self.0.next_u64()
    }
    /// Uniform in `0..n`.
    pub fn below(&mut self, n: u64) -> u64 {
        self.0.random_range(0..n)
    }
    /// Uniform in `0..n` for a bound of a smaller unsigned type, drawn as [`Self::below`]
    /// draws (so a seed yields the same stream whatever type the caller wants).
    pub fn below_in<T>(&mut self, n: T) -> T
    where
        T: Into<u64> + TryFrom<u64>,
        T::Error: std::fmt::Debug,
    {
        T::try_from(self.below(n.into())).expect("a draw below n fits n's type")
    }
    /// Uniform in `0..len`: an index into `len` items, drawn as [`Self::below`] draws.
    pub fn index(&mut self, len: usize) -> usize {
        let len = u64::try_from(len).expect("a length fits in u64");
        usize::try_from(self.below(len)).expect("a draw below a length fits in usize")
    }
    /// True with probability `percent` / 100.
    pub fn chance(&mut self, percent: u32) -> bool {
        self.0.random_ratio(percent, 100)
    }
    pub fn pick<T: Copy>(&mut self, items: &[T]) -> T {
        *items
            .choose(&mut self.0)
            .expect("picking from a non-empty list")
    }
}

const BASES: [u128; 4] = [
    0x2001_0db8_0001_0000_0000_0000_0000_0000,
    0x2001_0db8_0001_0001_0000_0000_0000_0000,
    0x2001_0db8_0002_0000_0000_0000_0000_0000,
    0xfd00_0000_0000_0000_0000_0000_0000_0000,
];
const SRC_LENS: [u8; 3] = [0, 48, 128];
const DST_LENS: [u8; 4] = [0, 48, 64, 128];
const DPORTS: [u16; 5] = [22, 53, 80, 443, 5001];
const SPORTS: [u16; 3] = [1000, 1001, 40000];
const ICMP_TYPES: [u16; 6] = [1, 128, 129, 133, 135, 136];

fn random_addr(rng: &mut Rng) -> u128 {
    let base = rng.pick(&BASES);
    // Mostly small host parts so different policies overlap.
    let host = if rng.chance(50) {
        u128::from(rng.below(4))
    } else {
        u128::from(rng.next_u64())
    };
    base | (host & 0xffff_ffff_ffff_ffff)
}

fn prefix(addr: u128, len: u8) -> String {
    let mask = if len == 0 {
        0
    } else {
        u128::MAX << (128 - u32::from(len))
    };
    format!("{}/{len}", Ipv6Addr::from(addr & mask))
}

/// A valid transport-mode SA `sa{i}` with SPI 0x1000 + i.
pub fn sa_args(i: u32) -> SaAddArgs {
    SaAddArgs {
        sa_source: Some("any".into()),
        sa_destination: Some("any".into()),
        sa_mode: Some("transport".into()),
        sa_spi: Some(format!("0x{:x}", 0x1000 + i)),
        encryption_algorithm: Some("aes128-cbc".into()),
        encryption_key: Some("0x00112233445566778899aabbccddeeff".into()),
        integrity_algorithm: Some("hmac-sha2-256".into()),
        integrity_key: Some(format!("0x{}", "ab".repeat(32))),
        sa_name: Some(format!("sa{i}")),
        udp_encapsulation: None,
    }
}

/// Four transport-mode SAs named sa0..sa3, then up to `max_policies` random SPs.
pub fn random_spd(rng: &mut Rng, max_policies: usize) -> Spd {
    let mut spd = Spd::default();
    for i in 0..4u32 {
        spd.add_sa(&sa_args(i)).expect("adding a valid SA");
    }
    let count = 1 + rng.index(max_policies);
    for i in 0..count {
        // Random selectors may collide with an existing policy; the model refuses those.
        let _ = spd.add_sp(&random_sp_args(rng, &format!("sp{i}"), 4));
    }
    spd
}

/// A random `sp add` over overlapping prefixes, naming one of `sa0..sa{sas}` when it needs one.
pub fn random_sp_args(rng: &mut Rng, name: &str, sas: u64) -> SpAddArgs {
    let proto = rng.pick(&["any", "tcp", "udp", "icmp6"]);
    let (sport, dport) = match proto {
        "tcp" | "udp" => {
            let d = if rng.chance(70) {
                rng.pick(&DPORTS).to_string()
            } else {
                "any".into()
            };
            let s = if rng.chance(30) {
                rng.pick(&SPORTS).to_string()
            } else {
                "any".into()
            };
            (s, d)
        }
        "icmp6" => (
            "any".to_string(),
            if rng.chance(70) {
                rng.pick(&ICMP_TYPES).to_string()
            } else {
                "any".into()
            },
        ),
        _ => ("any".to_string(), "any".to_string()),
    };
    let action = rng.pick(&["none", "discard", "ipsec"]);
    let direction = rng.pick(&["in", "out"]);
    // One SA per direction (the model refuses an SA named by SPs of both): even SAs serve
    // inbound SPs, odd ones outbound.
    let sa = 2 * rng.below(sas.div_ceil(2).max(1)) + u64::from(direction == "out");
    SpAddArgs {
        sp_source: Some(prefix(random_addr(rng), rng.pick(&SRC_LENS))),
        sp_destination: Some(prefix(random_addr(rng), rng.pick(&DST_LENS))),
        source_port: Some(sport),
        destination_port: Some(dport),
        upper_layer_protocol: Some(proto.into()),
        flow_direction: Some(direction.into()),
        action: Some(action.into()),
        sp_mode: None,
        sa_name: (action == "ipsec" || rng.chance(10)).then(|| format!("sa{}", sa.min(sas - 1))),
        sp_name: Some(name.into()),
        priority: rng.chance(20).then(|| rng.below(100).to_string()),
    }
}

/// An address inside, at the edge of, or just outside `prefix`.
fn near(rng: &mut Rng, network: Ipv6Addr, len: u8) -> Ipv6Addr {
    let net = u128::from(network);
    let host_mask = if len == 0 {
        u128::MAX
    } else if len == 128 {
        0
    } else {
        u128::MAX >> len
    };
    let addr = match rng.below(5) {
        0 => net,
        1 => net | host_mask,
        2 if len > 0 => net ^ (1u128 << (128 - u32::from(len))),
        _ => net | (u128::from(rng.next_u64()) & host_mask & 0xffff),
    };
    Ipv6Addr::from(addr)
}

/// A first fragment the generator emitted, so later fragments of the same datagram can follow.
#[derive(Clone, Copy, Debug)]
struct Datagram {
    direction: Direction,
    src: Ipv6Addr,
    dst: Ipv6Addr,
    proto: u8,
    id: u32,
}

/// Random frames, remembering the first fragments it made so that later fragments can belong to
/// a seen datagram (stateful verdict), to none (stateless verdict), or overlap one.
#[derive(Default)]
pub struct FrameGen {
    datagrams: Vec<Datagram>,
}

/// Fragment identifications come from a small pool, so unrelated datagrams collide sometimes.
const FRAGMENT_IDS: u32 = 64;

impl FrameGen {
    pub fn new() -> Self {
        Self::default()
    }

    /// A random frame and the direction it travels. Perturbations compose, in wire order: VLAN
    /// tags (802.1Q, 802.1ad, both, or one too many), an extension chain (hop-by-hop, routing,
    /// destination options; too long or too deep sometimes), a fragment header (first, atomic,
    /// later with or without its first fragment seen) possibly followed by more extension
    /// headers (destination options, AH, unknown types) that hide a later fragment's protocol,
    /// AH or an unknown type as the last header, ESP shapes, and truncation or a lying payload
    /// length anywhere.
    pub fn frame(&mut self, rng: &mut Rng, spd: &Spd) -> (Direction, Vec<u8>) {
        let sps = spd.sps();
        let target: Option<&Sp> =
            (!sps.is_empty() && rng.chance(75)).then(|| &sps[rng.index(sps.len())]);
        let mut direction = match target {
            Some(sp) if rng.chance(90) => sp.direction,
            _ => rng.pick(&[Direction::In, Direction::Out]),
        };
        let (mut src, mut dst) = match target {
            Some(sp) => (
                near(rng, sp.source.network(), sp.source.prefix_len()),
                near(rng, sp.destination.network(), sp.destination.prefix_len()),
            ),
            None => (
                Ipv6Addr::from(random_addr(rng)),
                Ipv6Addr::from(random_addr(rng)),
            ),
        };
        let mut proto = match target.map(|sp| sp.protocol) {
            Some(UpperLayerProtocol::Tcp) if rng.chance(85) => 6,
            Some(UpperLayerProtocol::Udp) if rng.chance(85) => 17,
            Some(UpperLayerProtocol::Icmp6) if rng.chance(85) => 58,
            _ => rng.pick(&[6u8, 17, 58, 47, 59, 50]),
        };

        // Fragment header first (it may change the addresses and protocol: a later fragment of
        // a datagram seen before).
        let mut fragment: Option<Ext> = None;
        let mut hidden_after_fragment = false;
        if rng.chance(18) {
            let id = rng.below_in(FRAGMENT_IDS);
            fragment = Some(match rng.below(10) {
                0..=2 => {
                    self.remember(Datagram {
                        direction,
                        src,
                        dst,
                        proto,
                        id,
                    });
                    Ext::Fragment {
                        offset: 0,
                        more: true,
                        id,
                    }
                }
                3 => Ext::Fragment {
                    offset: 0,
                    more: false,
                    id,
                },
                4..=6 if !self.datagrams.is_empty() => {
                    let d = self.datagrams[rng.index(self.datagrams.len())];
                    (direction, src, dst, proto) = (d.direction, d.src, d.dst, d.proto);
                    // Overlapping or not: the datapath does not look at offsets beyond zero.
                    let span = if rng.chance(50) { 2 } else { 400 };
                    Ext::Fragment {
                        offset: 1 + rng.below_in(span),
                        more: rng.chance(50),
                        id: d.id,
                    }
                }
                _ => Ext::Fragment {
                    offset: 1 + rng.below_in(400),
                    more: rng.chance(50),
                    id,
                },
            });
            hidden_after_fragment = rng.chance(20);
        }

        let wiggle = |rng: &mut Rng, p: Option<u16>, pool: &[u16]| -> u16 {
            match p {
                Some(p) if rng.chance(70) => p,
                Some(p) if rng.chance(50) => p.wrapping_add(1),
                _ => rng.pick(pool),
            }
        };
        let l4 = match proto {
            6 | 17 => {
                let s = wiggle(rng, target.and_then(|sp| sp.source_port), &SPORTS);
                let d = wiggle(rng, target.and_then(|sp| sp.destination_port), &DPORTS);
                l4_ports(s, d, if proto == 6 { 20 } else { 8 })
            }
            58 => {
                let t = wiggle(rng, target.and_then(|sp| sp.destination_port), &ICMP_TYPES);
                l4_icmp(if rng.chance(10) {
                    rng.pick(&[133u8, 134, 135, 136, 137])
                } else {
                    // The low byte: a wiggled type one past 255 wraps to 0.
                    t.to_be_bytes()[1]
                })
            }
            _ => vec![0u8; 16],
        };
        let mut spec = FrameSpec::new(src, dst, proto, l4);

        // VLAN tags.
        spec.tags = match rng.below(100) {
            0..=5 => vec![(rng.pick(&[0x8100u16, 0x88a8]), rng.below_in(4095))],
            6..=10 => vec![(0x88a8, 7), (0x8100, rng.below_in(4095))],
            11..=12 => vec![(0x88a8, 7), (0x8100, 8), (0x8100, 9)],
            _ => Vec::new(),
        };

        // Extension headers before the fragment header.
        match rng.below(100) {
            0..=9 => {
                for _ in 0..=rng.below(3) {
                    spec.ext.push(Ext::Options {
                        kind: rng.pick(&[0u8, 43, 60]),
                        len: rng.below_in(3),
                    });
                }
            }
            10..=11 => {
                // Too long a chain: 9 or 10 headers.
                for _ in 0..9 + rng.below(2) {
                    spec.ext.push(Ext::Options { kind: 60, len: 0 });
                }
            }
            12 => {
                // A chain that fits the count bound but puts the transport header too deep.
                for _ in 0..6 {
                    spec.ext.push(Ext::Options { kind: 60, len: 30 });
                }
            }
            _ => {}
        }
        if let Some(f) = fragment {
            spec.ext.push(f);
            if hidden_after_fragment {
                spec.ext.push(Ext::Options {
                    kind: rng.pick(&[60u8, 51, 253]),
                    len: rng.below_in(2),
                });
            }
        }
        // AH or an unknown type where the upper layer would be: parsed as an opaque protocol.
        if rng.chance(3) {
            spec.ext.push(Ext::Options {
                kind: rng.pick(&[51u8, 253]),
                len: 0,
            });
        }

        match rng.below(100) {
            0..=3 => spec.truncate = 1 + rng.index(60),
            4..=5 => spec.payload_len_delta = rng.pick(&[-30i32, -8, -1, 1, 9, 400]),
            6..=8 => {
                // ESP, known or unknown SPI.
                let spi: u32 = if rng.chance(50) {
                    0x1000 + rng.below_in(4)
                } else {
                    0x2000 + rng.below_in(100)
                };
                let mut esp = spi.to_be_bytes().to_vec();
                esp.extend_from_slice(&[0, 0, 0, 1]);
                esp.extend_from_slice(&[0u8; 24]);
                // Frames around the AF_XDP size bound. Only of the plain shape: BPF_PROG_TEST_RUN
                // keeps at most 3,520 bytes of an XDP frame linear (a real generic-XDP frame is
                // linear whatever its size), so tags and headers must not push it past that.
                if rng.chance(20) && spec.ext.is_empty() && spec.tags.is_empty() {
                    esp.resize(XSK_MAX_FRAME - 14 - 40 + rng.index(3) - 1, 0);
                }
                spec.next_header = 50;
                spec.l4 = if rng.chance(10) {
                    esp[..6].to_vec()
                } else {
                    esp
                };
            }
            9 => {
                let l3 = spec.l3_offset();
                let mut f = spec.build();
                if f.len() > l3 {
                    f[l3] = 0x40; // IPv6 ethertype, version 4 header: malformed
                }
                return (direction, f);
            }
            10 => {
                let mut f = spec.build();
                let at = spec.l3_offset() - 2;
                f[at] = 0x08;
                f[at + 1] = 0x00; // IPv4 ethertype: not ours
                return (direction, f);
            }
            _ => {}
        }
        let mut frame = spec.build();
        // BPF_PROG_TEST_RUN needs at least an Ethernet header.
        if frame.len() < 14 {
            frame = FrameSpec {
                truncate: 0,
                ..spec.clone()
            }
            .build();
            frame.truncate(14 + rng.index(4));
        }
        // The kernel refuses BPF_PROG_TEST_RUN of an skb whose IPv6 header is cut short
        // (EINVAL), and the stack never emits one: egress frames keep the whole IPv6 header.
        if direction == Direction::Out && frame.len() < spec.l3_offset() + 40 {
            frame = FrameSpec {
                truncate: 0,
                ..spec
            }
            .build();
        }
        (direction, frame)
    }

    fn remember(&mut self, datagram: Datagram) {
        if self.datagrams.len() == 256 {
            self.datagrams.remove(0);
        }
        self.datagrams.push(datagram);
    }
}

/// Field combinations a selector can have (`abi::FIELD_*` bits): protocol any, or TCP with any,
/// either or both ports.
const COMBOS: [u8; 5] = [0, 1, 3, 5, 7];

/// A policy of shape (`src_len`, `dst_len`, `fields`) at the prefixes of `src` and `dst`.
pub fn shaped_sp_args(
    rng: &mut Rng,
    name: &str,
    direction: Direction,
    (src_len, dst_len, fields): (u8, u8, u8),
    (src, dst): (u128, u128),
) -> SpAddArgs {
    let mut port = |bit: u8| {
        if fields & bit != 0 {
            rng.pick(&DPORTS).to_string()
        } else {
            "any".into()
        }
    };
    let (source_port, destination_port) = (port(2), port(4));
    let action = rng.pick(&["none", "discard", "ipsec"]);
    // Even SAs serve inbound policies, odd ones outbound (`random_sp_args`).
    let sa = 2 * rng.below(2) + u64::from(direction == Direction::Out);
    SpAddArgs {
        sp_source: Some(prefix(src, src_len)),
        sp_destination: Some(prefix(dst, dst_len)),
        source_port: Some(source_port),
        destination_port: Some(destination_port),
        upper_layer_protocol: Some(if fields & 1 != 0 { "tcp" } else { "any" }.into()),
        flow_direction: Some(direction.to_string()),
        action: Some(action.into()),
        sp_mode: None,
        sa_name: (action == "ipsec").then(|| format!("sa{sa}")),
        sp_name: Some(name.into()),
        priority: rng.chance(30).then(|| rng.below(8).to_string()),
    }
}

/// SAs sa0..sa3, then `shapes` policies per direction, each of its own shape (prefix lengths
/// /16 to /128 on both addresses, protocol and ports wildcarded at random) at random addresses of
/// fd00::/8, so prefixes rarely nest.
pub fn many_shapes_spd(rng: &mut Rng, shapes: usize) -> Spd {
    let mut spd = Spd::default();
    for i in 0..4u32 {
        spd.add_sa(&sa_args(i)).expect("adding a valid SA");
    }
    let all: Vec<(u8, u8, u8)> = (16..=128u8)
        .flat_map(|s| (16..=128u8).flat_map(move |d| COMBOS.map(|f| (s, d, f))))
        .collect();
    for direction in [Direction::In, Direction::Out] {
        let mut taken = std::collections::HashSet::new();
        while taken.len() < shapes.min(all.len()) {
            let shape = rng.pick(&all);
            if !taken.insert(shape) {
                continue;
            }
            let addr = |rng: &mut Rng| {
                BASES[3] | (u128::from(rng.next_u64()) << 64 | u128::from(rng.next_u64())) >> 8
            };
            let addrs = (addr(rng), addr(rng));
            let name = format!("{direction}-{}", taken.len());
            let args = shaped_sp_args(rng, &name, direction, shape, addrs);
            spd.add_sp(&args).expect("adding a policy of a new shape");
        }
    }
    spd
}

/// SAs sa0..sa3, then up to `policies` policies whose prefixes nest `::/0`, /8, /16 ... /128 deep
/// on both sides (all around two addresses), with `::/0` catch-alls among them.
pub fn nested_spd(rng: &mut Rng, policies: usize) -> Spd {
    let mut spd = Spd::default();
    for i in 0..4u32 {
        spd.add_sa(&sa_args(i)).expect("adding a valid SA");
    }
    let nest: Vec<u8> = (0..=128u8).step_by(8).collect();
    let (src, dst) = (BASES[0] | 0x1234_5678, BASES[3] | 0x9abc_def0);
    for i in 0..policies {
        let shape = (rng.pick(&nest), rng.pick(&nest), rng.pick(&COMBOS));
        let direction = rng.pick(&[Direction::In, Direction::Out]);
        // Some policies a little aside, so sibling prefixes exist too.
        let aside = if rng.chance(20) { 1u128 << 70 } else { 0 };
        let args = shaped_sp_args(rng, &format!("n{i}"), direction, shape, (src ^ aside, dst));
        let _ = spd.add_sp(&args);
    }
    spd
}
