//! `CompiledSpd` against the reference (`Spd::classify`, `Spd::classify_fragment`) on random
//! SPDs and flows, and by hand on the precedence rules.

use std::net::Ipv6Addr;

use ipnet::Ipv6Net;

use rand::rngs::StdRng;
use rand::seq::{IndexedRandom, SliceRandom};
use rand::{RngExt, SeedableRng};

use super::*;
use crate::model::{NEIGHBOUR_DISCOVERY_TYPES, SaAddArgs, SpAddArgs, SpRemoveArgs};

/// Network parts the random selectors and flows share, so policies overlap often.
const BASES: [u128; 4] = [
    0x2001_0db8_0001_0000_0000_0000_0000_0000,
    0x2001_0db8_0001_0001_0000_0000_0000_0000,
    0x2001_0db8_8000_0000_0000_0000_0000_0000,
    0xfd00_0000_0000_0000_0000_0000_0000_0000,
];
const PREFIX_LENS: [u8; 7] = [0, 16, 33, 48, 64, 127, 128];
const PORTS: [u16; 5] = [22, 53, 80, 1000, 65535];
/// Echo request/reply, and every neighbour discovery type.
const ICMP_TYPES: [u16; 7] = [128, 129, 133, 134, 135, 136, 137];
/// Other next headers a flow may carry: ESP, SCTP, and an extension header (a later fragment
/// whose protocol is hidden).
const OTHER_PROTOCOLS: [u8; 3] = [50, 132, 60];
/// SAs per direction; `sa{2i}` serves inbound policies, `sa{2i+1}` outbound ones (the model
/// refuses an SA that policies of both directions name).
const SAS_PER_DIRECTION: u32 = 2;

/// An argument as the command line gives it.
#[allow(
    clippy::unnecessary_wraps,
    reason = "the argument structs' fields are options"
)]
fn text<T: ToString + ?Sized>(value: &T) -> Option<String> {
    Some(value.to_string())
}

fn sa_args(i: u32) -> SaAddArgs {
    SaAddArgs {
        sa_source: text("any"),
        sa_destination: text("any"),
        sa_mode: text("transport"),
        sa_spi: Some(format!("{:#x}", 0x1000 + i)),
        encryption_algorithm: text("aes128-cbc"),
        encryption_key: text("0x00112233445566778899aabbccddeeff"),
        integrity_algorithm: text("hmac-sha2-256"),
        integrity_key: Some(format!("0x{}", "ab".repeat(32))),
        sa_name: Some(format!("sa{i}")),
        udp_encapsulation: None,
    }
}

fn masked(addr: u128, len: u8) -> u128 {
    if len == 0 {
        0
    } else {
        addr & (u128::MAX << (128 - u32::from(len)))
    }
}

fn random_addr(rng: &mut StdRng) -> u128 {
    let base = *BASES.choose(rng).expect("bases");
    // Mostly small host parts, so host routes of different policies coincide.
    let host = if rng.random_bool(0.5) {
        rng.random_range(0..4u128)
    } else {
        u128::from(rng.random::<u64>())
    };
    base | host
}

fn random_sp(rng: &mut StdRng, name: &str) -> SpAddArgs {
    let proto = *["any", "tcp", "udp", "icmp6"]
        .choose(rng)
        .expect("protocols");
    let pick = |rng: &mut StdRng, values: &[u16], percent: f64| {
        if rng.random_bool(percent) {
            values.choose(rng).expect("values").to_string()
        } else {
            "any".into()
        }
    };
    let (sport, dport) = match proto {
        "tcp" | "udp" => (pick(rng, &PORTS, 0.3), pick(rng, &PORTS, 0.6)),
        "icmp6" => ("any".into(), pick(rng, &ICMP_TYPES, 0.7)),
        _ => ("any".into(), "any".into()),
    };
    let action = *["none", "discard", "ipsec"].choose(rng).expect("actions");
    let inbound = rng.random_bool(0.5);
    let sa = 2 * rng.random_range(0..SAS_PER_DIRECTION) + u32::from(!inbound);
    let prefix = |rng: &mut StdRng| {
        let len = *PREFIX_LENS.choose(rng).expect("lengths");
        format!("{}/{len}", Ipv6Addr::from(masked(random_addr(rng), len)))
    };
    SpAddArgs {
        sp_source: Some(prefix(rng)),
        sp_destination: Some(prefix(rng)),
        source_port: Some(sport),
        destination_port: Some(dport),
        upper_layer_protocol: text(proto),
        flow_direction: text(if inbound { "in" } else { "out" }),
        action: text(action),
        sp_mode: None,
        // Other actions may name an SA too.
        sa_name: (action == "ipsec" || rng.random_bool(0.1)).then(|| format!("sa{sa}")),
        sp_name: text(name),
        priority: rng
            .random_bool(0.2)
            .then(|| rng.random_range(0..8u16).to_string()),
    }
}

/// Up to `max` random policies (the model refuses some: duplicate selectors), over few enough
/// distinct shapes for the datapath's mask limit.
fn random_spd(rng: &mut StdRng, max: usize) -> Spd {
    let mut spd = Spd::new();
    for i in 0..2 * SAS_PER_DIRECTION {
        spd.add_sa(&sa_args(i)).expect("adding a valid sa");
    }
    for i in 0..rng.random_range(0..=max) {
        let _ = spd.add_sp(&random_sp(rng, &format!("sp{i}")));
    }
    spd
}

/// An address inside `prefix` (its first or last address, or a random one) or just outside it;
/// without a prefix, any address.
fn near(rng: &mut StdRng, prefix: Option<Ipv6Net>) -> Ipv6Addr {
    let Some(prefix) = prefix else {
        return Ipv6Addr::from(random_addr(rng));
    };
    let (net, len) = (u128::from(prefix.network()), prefix.prefix_len());
    let host_mask = if len == 0 {
        u128::MAX
    } else {
        !masked(u128::MAX, len)
    };
    let addr = match rng.random_range(0..5) {
        0 => net,
        1 => net | host_mask,
        2 if len > 0 => net ^ (1u128 << (128 - u32::from(len))),
        _ => net | (rng.random::<u128>() & host_mask),
    };
    Ipv6Addr::from(addr)
}

/// A flow as the parsers make them: near a random policy's selector most of the time.
fn random_flow(rng: &mut StdRng, spd: &Spd) -> Flow {
    let target = spd.sps().choose(rng).filter(|_| rng.random_bool(0.8));
    let src = near(rng, target.map(|sp| sp.source));
    let dst = near(rng, target.map(|sp| sp.destination));
    let next_header = match target.and_then(|sp| sp.protocol.next_header()) {
        Some(nh) if rng.random_bool(0.7) => nh,
        _ => *[6, 17, 58, 6, 17, 58]
            .iter()
            .chain(&OTHER_PROTOCOLS)
            .collect::<Vec<_>>()
            .choose(rng)
            .copied()
            .expect("protocols"),
    };
    let port = |rng: &mut StdRng, selected: Option<u16>| match selected {
        Some(p) if rng.random_bool(0.6) => p,
        Some(p) if rng.random_bool(0.5) => p.wrapping_add(1),
        _ => *PORTS.choose(rng).expect("ports"),
    };
    let l4 = if rng.random_bool(0.1) {
        // A later fragment: no transport header.
        L4::Opaque
    } else {
        match next_header {
            6 | 17 => L4::Ports {
                src: port(rng, target.and_then(|sp| sp.source_port)),
                dst: port(rng, target.and_then(|sp| sp.destination_port)),
            },
            58 => L4::Icmp {
                kind: u8::try_from(port(rng, target.and_then(|sp| sp.destination_port)))
                    .unwrap_or(128),
            },
            _ => L4::Opaque,
        }
    };
    Flow {
        src,
        dst,
        next_header,
        l4,
    }
}

fn name(sp: Option<&Sp>) -> Option<&str> {
    sp.map(|sp| sp.name.as_str())
}

#[test]
fn matches_the_reference_on_random_spds_and_flows() {
    let mut rng = StdRng::seed_from_u64(0x5eed_c1a5);
    let (mut decided, mut fragments_decided) = (0usize, 0usize);
    for round in 0..400 {
        let spd = random_spd(&mut rng, 48);
        let compiled = CompiledSpd::build(&spd).expect("a small spd compiles");
        for _ in 0..200 {
            let flow = random_flow(&mut rng, &spd);
            for direction in [Direction::In, Direction::Out] {
                let expected = spd.classify(direction, &flow);
                assert_eq!(
                    name(compiled.classify(direction, &flow)),
                    name(expected),
                    "round {round}, {direction} {flow:?} in {spd:#?}"
                );
                decided += usize::from(expected.is_some());
                for proto_known in [true, false] {
                    let expected = spd.classify_fragment(direction, &flow, proto_known);
                    assert_eq!(
                        name(compiled.classify_fragment(direction, &flow, proto_known)),
                        name(expected),
                        "round {round}, later fragment (protocol known: {proto_known}), \
                         {direction} {flow:?} in {spd:#?}"
                    );
                    fragments_decided += usize::from(expected.is_some());
                }
            }
        }
    }
    // The generator must exercise matches, not only misses.
    assert!(decided > 40_000, "only {decided} flows matched a policy");
    assert!(
        fragments_decided > 120_000,
        "only {fragments_decided} fragments matched a policy"
    );
}

fn add(spd: &mut Spd, name: &str, source: &str, destination: &str, edit: impl Fn(&mut SpAddArgs)) {
    let mut args = SpAddArgs {
        sp_source: text(source),
        sp_destination: text(destination),
        source_port: text("any"),
        destination_port: text("any"),
        upper_layer_protocol: None,
        flow_direction: text("out"),
        action: text("discard"),
        sp_mode: None,
        sa_name: None,
        sp_name: text(name),
        priority: None,
    };
    edit(&mut args);
    spd.add_sp(&args).expect("adding a test policy");
}

fn tcp(src: &str, dst: &str, sport: u16, dport: u16) -> Flow {
    Flow {
        src: src.parse().expect("a test address"),
        dst: dst.parse().expect("a test address"),
        next_header: 6,
        l4: L4::Ports {
            src: sport,
            dst: dport,
        },
    }
}

#[test]
fn precedence_by_hand() {
    let mut spd = Spd::new();
    add(&mut spd, "broad", "any", "any", |_| {});
    add(&mut spd, "dst48", "any", "2001:db8::/48", |_| {});
    add(
        &mut spd,
        "src64",
        "2001:db8:9::/64",
        "2001:db8::/48",
        |_| {},
    );
    let tcp_only = |a: &mut SpAddArgs| a.upper_layer_protocol = text("tcp");
    add(
        &mut spd,
        "tcp",
        "2001:db8:9::/64",
        "2001:db8::/48",
        tcp_only,
    );
    add(&mut spd, "sport", "2001:db8:9::/64", "2001:db8::/48", |a| {
        tcp_only(a);
        a.source_port = text(&1000);
    });
    add(&mut spd, "dport", "2001:db8:9::/64", "2001:db8::/48", |a| {
        tcp_only(a);
        a.destination_port = text(&80);
    });
    // Each outbound flow's expected policy, checked against the reference too.
    let expect = |spd: &Spd, cases: &[(Flow, &str)]| {
        let compiled = CompiledSpd::build(spd).expect("compiling");
        for (flow, expected) in cases {
            let got = name(compiled.classify(Direction::Out, flow));
            assert_eq!(got, Some(*expected), "{flow:?}");
            assert_eq!(got, name(spd.classify(Direction::Out, flow)), "{flow:?}");
        }
    };
    let from = "2001:db8:9::1";
    expect(
        &spd,
        &[
            (tcp("::1", "3000::1", 1, 2), "broad"),
            (tcp("::1", "2001:db8::1", 1, 2), "dst48"),
            (
                Flow {
                    next_header: 17,
                    ..tcp(from, "2001:db8::1", 1, 2)
                },
                "src64",
            ),
            (tcp(from, "2001:db8::1", 1, 2), "tcp"),
            (tcp(from, "2001:db8::1", 1000, 2), "sport"),
            // A destination port is more specific than a source port.
            (tcp(from, "2001:db8::1", 1000, 80), "dport"),
        ],
    );

    // A priority beats every specificity; a lower priority number first.
    add(&mut spd, "p9", "any", "any", |a| a.priority = text(&9));
    expect(&spd, &[(tcp(from, "2001:db8::1", 1000, 80), "p9")]);
    add(&mut spd, "p3", "any", "3000::/16", |a| {
        a.priority = text(&3);
    });
    expect(
        &spd,
        &[
            (tcp(from, "3000::1", 1, 1), "p3"),
            (tcp(from, "2001:db8::1", 1, 1), "p9"),
        ],
    );
    // Equal priority: the older policy wins, whatever its specificity.
    add(&mut spd, "p3-tcp", "any", "3000::1/128", |a| {
        a.priority = text(&3);
        tcp_only(a);
    });
    expect(&spd, &[(tcp(from, "3000::1", 1, 1), "p3")]);

    // The other direction has none of these.
    let compiled = CompiledSpd::build(&spd).expect("compiling");
    assert_eq!(
        compiled.classify(Direction::In, &tcp(from, "3000::1", 1, 1)),
        None
    );
}

#[test]
fn neighbour_discovery_and_fragments_by_hand() {
    let mut spd = Spd::new();
    spd.add_sa(&sa_args(1)).expect("adding sa1");
    add(&mut spd, "all", "any", "any", |_| {});
    add(
        &mut spd,
        "udp9000",
        "2001:db8::/64",
        "2001:db8:1::/64",
        |a| {
            a.upper_layer_protocol = text("udp");
            a.destination_port = text(&9000);
            a.action = text("ipsec");
            a.sa_name = text("sa1");
            a.priority = text(&1);
        },
    );
    add(&mut spd, "block-ns", "any", "any", |a| {
        a.upper_layer_protocol = text("icmp6");
        a.destination_port = text(&135);
    });
    let compiled = CompiledSpd::build(&spd).expect("compiling");
    let icmp = |kind| Flow {
        src: "fe80::1".parse().expect("address"),
        dst: "fe80::2".parse().expect("address"),
        next_header: 58,
        l4: L4::Icmp { kind },
    };
    for kind in NEIGHBOUR_DISCOVERY_TYPES {
        let expected = (kind == 135).then_some("block-ns");
        assert_eq!(
            name(compiled.classify(Direction::Out, &icmp(kind))),
            expected,
            "nd type {kind}: only a policy naming it catches it"
        );
    }
    assert_eq!(
        name(compiled.classify(Direction::Out, &icmp(128))),
        Some("all")
    );

    // A later UDP fragment could belong to the protected flow: the ipsec policy is stricter
    // than none but `all` discards, which is stricter still.
    let later = Flow {
        l4: L4::Opaque,
        ..tcp("2001:db8::1", "2001:db8:1::1", 0, 0)
    };
    let later_udp = Flow {
        next_header: 17,
        ..later
    };
    assert_eq!(
        name(compiled.classify_fragment(Direction::Out, &later_udp, true)),
        Some("all")
    );
    let mut no_all = spd.clone();
    no_all
        .remove_sp(&SpRemoveArgs {
            sp_name: text("all"),
            remove_all: false,
        })
        .expect("removing all");
    let compiled = CompiledSpd::build(&no_all).expect("compiling");
    assert_eq!(
        name(compiled.classify_fragment(Direction::Out, &later_udp, true)),
        Some("udp9000")
    );
    // A TCP fragment cannot be the UDP flow, unless its protocol is hidden.
    assert_eq!(
        compiled.classify_fragment(Direction::Out, &later, true),
        None
    );
    assert_eq!(
        name(compiled.classify_fragment(Direction::Out, &later, false)),
        Some("block-ns"),
        "with the protocol hidden, the discard policy could match"
    );
    // The compiled form is a snapshot: the SPD it came from changing does not change it.
    assert_eq!(compiled.spd(), &no_all);
}

/// The field combinations a selector can have: protocol any, or named with any, either or both
/// ports.
const COMBOS: [u8; 5] = [0, 1, 3, 5, 7];

/// A policy of `direction` with shape (`src_len`, `dst_len`, `fields`) at random addresses of
/// fd00::/8 (so prefixes of /16 and longer rarely nest) or under `under` when given.
fn shaped(
    rng: &mut StdRng,
    name: &str,
    direction: &str,
    (src_len, dst_len, fields): (u8, u8, u8),
    under: Option<(u128, u128)>,
) -> SpAddArgs {
    let (src, dst) = under.unwrap_or_else(|| {
        (
            (0xfd_u128 << 120) | (rng.random::<u128>() >> 8),
            (0xfd_u128 << 120) | (rng.random::<u128>() >> 8),
        )
    });
    let port = |rng: &mut StdRng, bit: u8| {
        if fields & bit != 0 {
            PORTS.choose(rng).expect("ports").to_string()
        } else {
            "any".into()
        }
    };
    SpAddArgs {
        sp_source: Some(format!(
            "{}/{src_len}",
            Ipv6Addr::from(masked(src, src_len))
        )),
        sp_destination: Some(format!(
            "{}/{dst_len}",
            Ipv6Addr::from(masked(dst, dst_len))
        )),
        source_port: Some(port(rng, 2)),
        destination_port: Some(port(rng, 4)),
        upper_layer_protocol: text(if fields & 1 != 0 { "tcp" } else { "any" }),
        flow_direction: text(direction),
        action: text(*["none", "discard"].choose(rng).expect("actions")),
        sp_mode: None,
        sa_name: None,
        sp_name: text(name),
        priority: rng
            .random_bool(0.3)
            .then(|| rng.random_range(0..8u16).to_string()),
    }
}

/// Compares `CompiledSpd` with the reference on `flows` random flows near `spd`'s policies.
fn agrees_with_reference(rng: &mut StdRng, spd: &Spd, flows: usize) -> usize {
    let compiled = CompiledSpd::build(spd).expect("compiling");
    let mut decided = 0;
    for _ in 0..flows {
        let flow = random_flow(rng, spd);
        for direction in [Direction::In, Direction::Out] {
            let expected = spd.classify(direction, &flow);
            assert_eq!(
                name(compiled.classify(direction, &flow)),
                name(expected),
                "{direction} {flow:?}"
            );
            decided += usize::from(expected.is_some());
            for proto_known in [true, false] {
                assert_eq!(
                    name(compiled.classify_fragment(direction, &flow, proto_known)),
                    name(spd.classify_fragment(direction, &flow, proto_known)),
                    "later fragment (protocol known: {proto_known}) {direction} {flow:?}"
                );
            }
        }
    }
    decided
}

#[test]
fn four_thousand_shapes_per_direction_compile_and_match_the_reference() {
    let mut rng = StdRng::seed_from_u64(4096);
    let mut shapes: Vec<(u8, u8, u8)> = (16..=128u8)
        .flat_map(|s| (16..=128u8).flat_map(move |d| COMBOS.map(|f| (s, d, f))))
        .collect();
    let mut spd = Spd::new();
    for direction in ["in", "out"] {
        shapes.shuffle(&mut rng);
        for (i, shape) in shapes.iter().take(4_200).enumerate() {
            let args = shaped(
                &mut rng,
                &format!("{direction}{i}"),
                direction,
                *shape,
                None,
            );
            spd.add_sp(&args).expect("adding a shaped policy");
        }
    }
    let decided = agrees_with_reference(&mut rng, &spd, 3_000);
    assert!(decided > 500, "only {decided} flows matched a policy");
}

/// `::/0` and prefixes nested 16 deep on both sides: every packet near them has many candidate
/// lengths, and the search must still find the best rank among them.
#[test]
fn deep_nesting_with_a_catch_all_matches_the_reference() {
    let mut rng = StdRng::seed_from_u64(0xdee9);
    let nest: Vec<u8> = (0..=128u8).step_by(8).collect();
    let (src, dst) = (BASES[0] | 0x1234_5678, BASES[3] | 0x9abc_def0);
    for round in 0..20 {
        let mut spd = Spd::new();
        for (i, &s) in nest.iter().enumerate() {
            for _ in 0..3 {
                let d = *nest.choose(&mut rng).expect("lengths");
                let fields = *COMBOS.choose(&mut rng).expect("combinations");
                let direction = if rng.random_bool(0.5) { "in" } else { "out" };
                let args = shaped(
                    &mut rng,
                    &format!("n{i}-{d}-{fields}-{direction}"),
                    direction,
                    (s, d, fields),
                    Some((src, dst)),
                );
                let _ = spd.add_sp(&args);
            }
        }
        let decided = agrees_with_reference(&mut rng, &spd, 400);
        assert!(decided > 100, "round {round}: only {decided} flows matched");
    }
}

#[test]
fn an_spd_that_could_need_too_many_steps_is_refused() {
    // A source prefix at every length, each with every field combination: a packet inside the
    // longest one has 129 candidate source lengths, each with 5 rules to probe.
    let mut spd = Spd::new();
    let src = BASES[0] | 0x42;
    let mut rng = StdRng::seed_from_u64(7);
    for s in 0..=128u8 {
        for fields in COMBOS {
            let args = shaped(
                &mut rng,
                &format!("p{s}-{fields}"),
                "out",
                (s, 0, fields),
                Some((src, 0)),
            );
            spd.add_sp(&args).expect("adding a nested policy");
        }
    }
    let err = CompiledSpd::build(&spd).expect_err("the step bound is exceeded");
    let CompileError::TooManySteps {
        direction,
        needed,
        max,
        nested,
        ..
    } = err.clone();
    assert_eq!(
        (direction, max, nested),
        ("out", ipsec_common::abi::MAX_PROBES, 129)
    );
    assert!(needed > max, "{needed} steps reported for a refused spd");
    let message = err.to_string();
    assert!(
        message.contains("nested") && message.contains(&max.to_string()),
        "unclear error: {message}"
    );
    // Half the nesting fits.
    let mut half = Spd::new();
    for s in (0..=128u8).step_by(4) {
        let args = shaped(&mut rng, &format!("h{s}"), "out", (s, 0, 7), Some((src, 0)));
        half.add_sp(&args).expect("adding a nested policy");
    }
    agrees_with_reference(&mut rng, &half, 200);
}

#[test]
fn an_empty_spd_decides_nothing() {
    let compiled = CompiledSpd::default();
    let flow = tcp("::1", "::2", 1, 2);
    assert_eq!(compiled.classify(Direction::Out, &flow), None);
    assert_eq!(
        compiled.classify_fragment(Direction::In, &flow, false),
        None
    );
}

/// The tables of a [`Lookup`], counting the lookups a search makes (each step makes one, but
/// the last).
struct Counting<'a> {
    tables: &'a Lookup,
    lookups: std::cell::Cell<u32>,
}

impl Counting<'_> {
    fn count(&self) {
        self.lookups.set(self.lookups.get() + 1);
    }
}

impl ClassifierTables for Counting<'_> {
    fn prefix_lengths(&self, tag: u8, addr: &[u8; 16]) -> Option<ipsec_common::abi::LenSet> {
        self.tables.prefix_lengths(tag, addr)
    }
    fn pairs(&self, index: u32) -> Option<ipsec_common::abi::LenSet> {
        self.count();
        self.tables.pairs(index)
    }
    fn field_set(&self, index: u32) -> Option<FieldSet> {
        self.count();
        self.tables.field_set(index)
    }
    fn rule(&self, key: &RuleKey) -> Option<RuleValue> {
        self.count();
        self.tables.rule(key)
    }
}

/// The compiler's step bound holds: no flow of any kind takes more steps than it said, on random
/// SPDs, deeply nested ones and ones of many shapes (an unsound bound would let the kernel run
/// out of steps and drop a packet a policy passes).
#[test]
fn no_search_takes_more_steps_than_the_compiler_bounded() {
    let mut rng = StdRng::seed_from_u64(0x57e9);
    let nested = |rng: &mut StdRng| {
        let mut spd = Spd::new();
        let (src, dst) = (BASES[0] | 0x77, BASES[1] | 0x99);
        for i in 0..80 {
            let shape = (
                *[0u8, 8, 16, 32, 48, 64, 96, 112, 128]
                    .choose(rng)
                    .expect("lengths"),
                *[0u8, 16, 48, 64, 128].choose(rng).expect("lengths"),
                *COMBOS.choose(rng).expect("combinations"),
            );
            let _ = spd.add_sp(&shaped(
                rng,
                &format!("n{i}"),
                "out",
                shape,
                Some((src, dst)),
            ));
        }
        spd
    };
    let mut worst = 0u32;
    for round in 0..60 {
        let spd = if round % 2 == 0 {
            random_spd(&mut rng, 48)
        } else {
            nested(&mut rng)
        };
        let tables = compile::compile(&spd, GENERATION).expect("compiling");
        let bound = tables.steps;
        assert!(bound <= ipsec_common::abi::MAX_PROBES);
        let lookup = Lookup::new(tables);
        for _ in 0..300 {
            let flow = random_flow(&mut rng, &spd);
            for direction in [Direction::In, Direction::Out] {
                for (kind, flow) in [
                    (RULE_FLOW, flow),
                    (
                        RULE_FRAG_PORTS,
                        Flow {
                            l4: L4::Opaque,
                            ..flow
                        },
                    ),
                    (
                        RULE_FRAG_ANY,
                        Flow {
                            l4: L4::Opaque,
                            ..flow
                        },
                    ),
                ] {
                    let counting = Counting {
                        tables: &lookup,
                        lookups: std::cell::Cell::new(0),
                    };
                    let found =
                        abi::search(&counting, &flow_key(direction, &flow), kind, GENERATION);
                    assert_ne!(found, Searched::OutOfSteps, "round {round}: {flow:?}");
                    let steps = counting.lookups.get() + 1;
                    worst = worst.max(steps);
                    assert!(
                        steps <= bound,
                        "round {round}: {steps} steps, bounded at {bound}: {flow:?} in {spd:#?}"
                    );
                }
            }
        }
    }
    assert!(
        worst > 20,
        "the searches were all short ({worst} steps): the test proves little"
    );
}
