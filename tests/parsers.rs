//! The two parsers, pinned to the same verdicts: the eBPF parser (`ipsec-ebpf/src/parse.rs`,
//! run in the loaded XDP and TC programs through `BPF_PROG_TEST_RUN`) and the userspace reading
//! (`model::packet`, over the `wire` views and the same `ipsec_common::abi` limits), on a table
//! of crafted edge cases: extension-header chains at, below and above `MAX_EXT_HEADERS`, the
//! `MAX_L4_OFFSET` depth, a header cut at every length, fragments (first, later, atomic, ESP,
//! protocol hidden), ESP (known, unknown, truncated, behind a header), AH, unknown next headers,
//! hop-by-hop not first, one to three VLAN tags and other ethertypes.
//!
//! Each row names the counter it must move in each direction. For every row and direction the
//! reference must predict that counter, and the kernel must give the reference's verdict, move
//! that counter by one, the reference's event counter (a later fragment without state) by one,
//! and nothing else.

use ipsec_common::abi::{Counter, MAX_EXT_HEADERS, MAX_L4_OFFSET, ethertype, proto};
use ipsec_tests::{
    frames::{Ext, FrameSpec, l4_icmp, l4_ports},
    random::sa_args,
    reference::expected,
};
use ipsec_user::{
    datapath::{KernelDatapath, LoadOptions},
    model::{Direction, FirstFragments, SpAddArgs, Spd},
};
use xipsec_testkit::require_root;

/// XDP's and TC's return codes for "drop" and "pass" (`XDP_DROP`, `XDP_PASS`; `TC_ACT_SHOT`,
/// `TC_ACT_OK`): no other action is expected without an engine.
const XDP: (u32, u32) = (1, 2);
const TC: (i32, i32) = (2, 0);
/// The SPI of the one inbound SA (`sa_args(0)`).
const KNOWN_SPI: u32 = 0x1000;
/// The port both directions discard.
const DISCARDED_PORT: u16 = 9;

/// One row: a frame and the verdict counter it moves inbound (XDP) and outbound (TC). `None`
/// outbound: the kernel refuses to test-run the frame on TC (an skb with the IPv6 ethertype must
/// hold a whole IPv6 header, `bpf_prog_test_run_skb`), as the stack never sends one.
struct Case {
    what: String,
    frame: Vec<u8>,
    inbound: Counter,
    outbound: Option<Counter>,
}

fn udp(dport: u16) -> FrameSpec {
    FrameSpec::new(
        "2001:db8::1".parse().expect("address"),
        "2001:db8::2".parse().expect("address"),
        proto::UDP,
        l4_ports(40000, dport, 8),
    )
}

fn with(next_header: u8, l4: Vec<u8>) -> FrameSpec {
    FrameSpec {
        next_header,
        l4,
        ..udp(53)
    }
}

fn opts(kind: u8, len: u8) -> Ext {
    Ext::Options { kind, len }
}

fn fragment(offset: u16, more: bool) -> Ext {
    Ext::Fragment {
        offset,
        more,
        id: 0x0bad_cafe,
    }
}

fn esp(spi: u32) -> Vec<u8> {
    let mut esp = spi.to_be_bytes().to_vec();
    esp.extend_from_slice(&[0, 0, 0, 1]);
    esp.extend_from_slice(&[0xee; 24]);
    esp
}

/// The SPD: an inbound `ipsec` policy whose SA makes `KNOWN_SPI` ours (for addresses the rows
/// do not use, so it never drops their clear traffic), and a `discard` of UDP port 9 each way
/// (which a later fragment without state may match: ports are invisible).
fn spd() -> Spd {
    let mut spd = Spd::default();
    spd.add_sa(&sa_args(0)).expect("a valid SA");
    let sp = |name: &str, dir: &str, action: &str| SpAddArgs {
        sp_source: Some("any".into()),
        sp_destination: Some("any".into()),
        source_port: Some("any".into()),
        destination_port: Some(DISCARDED_PORT.to_string()),
        upper_layer_protocol: Some("udp".into()),
        flow_direction: Some(dir.into()),
        action: Some(action.into()),
        sp_name: Some(name.into()),
        ..Default::default()
    };
    spd.add_sp(&sp("drop-in", "in", "discard"))
        .expect("a valid SP");
    spd.add_sp(&sp("drop-out", "out", "discard"))
        .expect("a valid SP");
    spd.add_sp(&SpAddArgs {
        sp_destination: Some("2001:db8:ffff::/48".into()),
        destination_port: Some("any".into()),
        upper_layer_protocol: Some("any".into()),
        sp_mode: Some("transport".into()),
        sa_name: Some("sa0".into()),
        ..sp("esp-in", "in", "ipsec")
    })
    .expect("a valid SP");
    spd
}

fn cases() -> Vec<Case> {
    use Counter::{
        DropDiscard, DropExtHeaderLimit, DropMalformed, DropUnknownSpi, DropVlanDepth, EspKnownSpi,
        PassEspFragment, PassNeighbourDiscovery, PassNoPolicy, PassNotIpv6,
    };
    let mut cases = Vec::new();
    let mut row = |what: String, frame: Vec<u8>, inbound, outbound| {
        let outbound = (frame.len() >= 54 || frame[12..14] != [0x86, 0xdd]).then_some(outbound);
        cases.push(Case {
            what,
            frame,
            inbound,
            outbound,
        });
    };
    let both = |c: Counter| (c, c);

    let (i, o) = both(PassNoPolicy);
    row("udp".into(), udp(53).build(), i, o);
    let (i, o) = both(DropDiscard);
    row("udp to the discarded port".into(), udp(9).build(), i, o);

    // Chains of destination options at, below and above the walk bound; a mixed chain at it.
    for count in [MAX_EXT_HEADERS - 1, MAX_EXT_HEADERS, MAX_EXT_HEADERS + 1] {
        let spec = FrameSpec {
            ext: vec![opts(proto::DEST_OPTS, 0); count],
            ..udp(DISCARDED_PORT)
        };
        let c = if count > MAX_EXT_HEADERS {
            DropExtHeaderLimit
        } else {
            DropDiscard
        };
        row(format!("{count} destination options"), spec.build(), c, c);
    }
    let mut mixed = vec![
        opts(proto::HOP_BY_HOP, 1),
        opts(proto::ROUTING, 0),
        fragment(0, false),
    ];
    mixed.extend(vec![opts(proto::DEST_OPTS, 2); MAX_EXT_HEADERS - 3]);
    let (i, o) = both(DropDiscard);
    let spec = FrameSpec {
        ext: mixed.clone(),
        ..udp(DISCARDED_PORT)
    };
    row("a mixed chain at the bound".into(), spec.build(), i, o);
    mixed.push(fragment(0, false));
    let spec = FrameSpec {
        ext: mixed,
        ..udp(DISCARDED_PORT)
    };
    let (i, o) = both(DropExtHeaderLimit);
    row("a mixed chain over the bound".into(), spec.build(), i, o);
    let spec = FrameSpec {
        ext: vec![opts(proto::DEST_OPTS, 0), opts(proto::HOP_BY_HOP, 0)],
        ..udp(DISCARDED_PORT)
    };
    let (i, o) = both(DropDiscard);
    row("hop-by-hop not first (walked)".into(), spec.build(), i, o);

    // The transport header at and just past `MAX_L4_OFFSET` (one header of (len + 1) * 8).
    let at_limit = u8::try_from((MAX_L4_OFFSET - 40) / 8 - 1).expect("fits");
    for (len, c) in [(at_limit, DropDiscard), (at_limit + 1, DropExtHeaderLimit)] {
        let spec = FrameSpec {
            ext: vec![opts(proto::DEST_OPTS, len)],
            ..udp(DISCARDED_PORT)
        };
        let depth = 40 + (usize::from(len) + 1) * 8;
        row(format!("transport at offset {depth}"), spec.build(), c, c);
    }

    // A chain cut at every length, the payload length telling the truth about the cut: the
    // frame ends inside a header (malformed) until only the UDP header's last 4 bytes are gone
    // (the ports are all a classifier reads).
    let spec = FrameSpec {
        ext: vec![opts(proto::HOP_BY_HOP, 1), fragment(0, false), opts(60, 0)],
        ..udp(DISCARDED_PORT)
    };
    let payload = 16 + 8 + 8 + 8;
    for cut in 1..=payload {
        let cut_spec = FrameSpec {
            truncate: cut,
            payload_len_delta: -i32::try_from(cut).expect("small"),
            ..spec.clone()
        };
        let c = if cut <= 4 { DropDiscard } else { DropMalformed };
        row(format!("chain cut by {cut} bytes"), cut_spec.build(), c, c);
    }
    // The frame cut inside the IPv6 header, and a payload length that overstates the frame.
    let whole = udp(53).build();
    for len in 14..54 {
        let (i, o) = both(DropMalformed);
        row(format!("frame of {len} bytes"), whole[..len].to_vec(), i, o);
    }
    let spec = FrameSpec {
        payload_len_delta: 1,
        ..udp(53)
    };
    let (i, o) = both(DropMalformed);
    row("payload length past the frame".into(), spec.build(), i, o);
    let mut padded = udp(DISCARDED_PORT).build();
    padded.extend_from_slice(&[0; 20]);
    let (i, o) = both(DropDiscard);
    row("ethernet padding after the payload".into(), padded, i, o);

    // Fragments. Each row runs with no fragment state: a later fragment gets the stateless
    // verdict (ports invisible: the discard of UDP port 9 could match it).
    for (what, ext, dport, c) in [
        ("first fragment", fragment(0, true), 53, PassNoPolicy),
        ("first fragment, port 9", fragment(0, true), 9, DropDiscard),
        (
            "atomic fragment, port 9",
            fragment(0, false),
            9,
            DropDiscard,
        ),
        ("atomic fragment", fragment(0, false), 53, PassNoPolicy),
        (
            "later fragment of udp",
            fragment(100, false),
            53,
            DropDiscard,
        ),
        ("later fragment, more", fragment(1, true), 53, DropDiscard),
    ] {
        let spec = FrameSpec {
            ext: vec![ext],
            ..udp(dport)
        };
        row(what.into(), spec.build(), c, c);
    }
    let spec = FrameSpec {
        ext: vec![fragment(100, false)],
        ..with(proto::TCP, l4_ports(1, 2, 20))
    };
    let (i, o) = both(PassNoPolicy);
    row("later fragment of tcp".into(), spec.build(), i, o);
    let spec = FrameSpec {
        ext: vec![fragment(100, false), opts(proto::DEST_OPTS, 0)],
        ..udp(53)
    };
    let (i, o) = both(DropDiscard);
    row("later fragment, protocol hidden".into(), spec.build(), i, o);
    // ESP fragments: inbound, a later one goes to reassembly and a first one shows its SPI;
    // outbound, ESP is an opaque flow.
    for (what, ext, inbound) in [
        (
            "later fragment of esp",
            fragment(100, false),
            PassEspFragment,
        ),
        ("first fragment of esp", fragment(0, true), EspKnownSpi),
    ] {
        let spec = FrameSpec {
            ext: vec![ext],
            ..with(proto::ESP, esp(KNOWN_SPI))
        };
        row(what.into(), spec.build(), inbound, PassNoPolicy);
    }

    // ESP, AH and other next headers.
    for (what, spec, inbound) in [
        (
            "esp, known spi",
            with(proto::ESP, esp(KNOWN_SPI)),
            EspKnownSpi,
        ),
        (
            "esp, unknown spi",
            with(proto::ESP, esp(0x4242)),
            DropUnknownSpi,
        ),
        (
            "esp cut to 7 bytes",
            with(proto::ESP, esp(KNOWN_SPI)[..7].to_vec()),
            DropMalformed,
        ),
        (
            "esp behind destination options",
            FrameSpec {
                ext: vec![opts(proto::DEST_OPTS, 0)],
                ..with(proto::ESP, esp(KNOWN_SPI))
            },
            EspKnownSpi,
        ),
        (
            "ah",
            with(proto::AH, vec![proto::ESP, 4, 0, 0]),
            PassNoPolicy,
        ),
        (
            "no next header",
            with(proto::NO_NEXT_HEADER, vec![]),
            PassNoPolicy,
        ),
        (
            "unknown next header",
            with(253, vec![1, 2, 3]),
            PassNoPolicy,
        ),
        (
            "icmpv6 echo",
            with(proto::ICMPV6, l4_icmp(128)),
            PassNoPolicy,
        ),
        (
            "neighbour solicitation",
            with(proto::ICMPV6, l4_icmp(135)),
            PassNeighbourDiscovery,
        ),
        (
            "icmpv6 cut to 3 bytes",
            with(proto::ICMPV6, vec![128, 0, 0]),
            DropMalformed,
        ),
        (
            "tcp cut to 3 bytes",
            with(proto::TCP, vec![0, 1, 0]),
            DropMalformed,
        ),
    ] {
        // Outbound, ESP is a flow like any protocol without ports.
        let outbound = match inbound {
            EspKnownSpi | DropUnknownSpi => PassNoPolicy,
            DropMalformed if spec.next_header == proto::ESP => PassNoPolicy,
            c => c,
        };
        row(what.into(), spec.build(), inbound, outbound);
    }

    // VLAN tags: one and two parse, a third is dropped; other ethertypes are not ours.
    for (tags, c) in [
        (vec![(ethertype::VLAN, 5)], DropDiscard),
        (
            vec![(ethertype::QINQ, 5), (ethertype::VLAN, 6)],
            DropDiscard,
        ),
        (vec![(ethertype::VLAN, 5); 3], DropVlanDepth),
    ] {
        let what = format!("{} vlan tags", tags.len());
        let spec = FrameSpec {
            tags,
            ..udp(DISCARDED_PORT)
        };
        row(what, spec.build(), c, c);
    }
    for (what, tagged, kind) in [
        ("ipv4", false, 0x0800u16),
        ("arp", false, 0x0806),
        ("ipv4 behind a vlan tag", true, 0x0800),
    ] {
        let spec = FrameSpec {
            tags: if tagged {
                vec![(ethertype::VLAN, 5)]
            } else {
                vec![]
            },
            ..udp(DISCARDED_PORT)
        };
        let mut frame = spec.build();
        let at = spec.l3_offset() - 2;
        frame[at..at + 2].copy_from_slice(&kind.to_be_bytes());
        let (i, o) = both(PassNotIpv6);
        row(what.into(), frame, i, o);
    }
    let mut v4 = udp(DISCARDED_PORT).build();
    v4[14] = 0x45;
    let (i, o) = both(DropMalformed);
    row("ipv6 ethertype, version 4".into(), v4, i, o);
    cases
}

fn counters(dp: &KernelDatapath) -> Vec<(Counter, u64)> {
    dp.counters().expect("reading counters")
}

#[test]
fn both_parsers_give_every_edge_case_the_same_verdict() {
    if !require_root("both_parsers_give_every_edge_case_the_same_verdict") {
        return;
    }
    let mut dp = KernelDatapath::load(&LoadOptions::default()).expect("loading the eBPF programs");
    let spd = spd();
    dp.sync(&spd).expect("syncing the SPD");
    let cases = cases();
    let mut before = counters(&dp);
    for case in &cases {
        let runs = [
            Some((Direction::In, case.inbound)),
            case.outbound.map(|c| (Direction::Out, c)),
        ];
        for (direction, want_counter) in runs.into_iter().flatten() {
            let context = || {
                format!(
                    "{} ({direction:?}): {}",
                    case.what,
                    hex::encode(&case.frame)
                )
            };
            // Each row alone: no first fragment remembered, no cached verdict.
            dp.clear_fragment_state().expect("clearing fragment state");
            dp.clear_flow_cache().expect("clearing the flow cache");
            let want = expected(
                &spd,
                &mut FirstFragments::new(),
                (direction, &case.frame),
                |spi| spi == KNOWN_SPI,
                false,
                false,
            );
            assert_eq!(
                want.counter,
                want_counter,
                "the reference reads it otherwise: {}",
                context()
            );
            let pass = match direction {
                Direction::In => {
                    let action = dp.test_run_xdp(&case.frame).expect("running XDP");
                    assert!(action == XDP.1 || action == XDP.0, "XDP action {action}");
                    action == XDP.1
                }
                Direction::Out => {
                    let action = dp.test_run_tc(&case.frame).expect("running TC");
                    assert!(action == TC.1 || action == TC.0, "TC action {action}");
                    action == TC.1
                }
            };
            assert_eq!(pass, want.pass, "verdict differs: {}", context());
            let after = counters(&dp);
            for ((counter, was), (_, now)) in before.iter().zip(&after) {
                let expect = u64::from(*counter == want.counter || Some(*counter) == want.event);
                assert_eq!(
                    now - was,
                    expect,
                    "counter {} moved by {}: {}",
                    counter.name(),
                    now - was,
                    context()
                );
            }
            before = after;
        }
    }
    eprintln!("parsers: {} edge cases agree both ways", cases.len());
}
