//! `xipsec explain`'s kernel side: the explain programs, run with `BPF_PROG_TEST_RUN` over the
//! live maps, agree with the reference model (parser + linear-scan classifier) on thousands of
//! random packets over random SPDs, and running them leaves every counter, the flow cache and
//! the fragment state byte for byte as they were.
//!
//! The live programs run on part of the same packets first, so the counters, the flow cache and
//! the fragment state hold something to disturb.
//!
//! Through the daemon and the CLI: `xipsec explain` names the policy, the rule of precedence
//! that made it win (priority, or which specificity rule) and the SA, beside the reference's
//! answer, in every formatter, and leaves `stats` and the policy counters as they were.

use std::collections::BTreeMap;
use std::path::Path;

use aya::maps::{Array, HashMap, Map, MapData, PerCpuArray};
use ipsec_common::abi::{self, NO_SP};
use ipsec_common::explain::{
    ExplainResult, OUTCOME_CLASSIFIED, OUTCOME_ESP, OUTCOME_ESP_FRAGMENT, OUTCOME_EXT_LIMIT,
    OUTCOME_FRAGMENT, OUTCOME_MALFORMED, OUTCOME_NOT_IPV6, OUTCOME_VLAN_DEPTH,
};
use ipsec_tests::random::{FrameGen, Rng, random_spd};
use ipsec_user::{
    datapath::{KernelDatapath, LoadOptions},
    model::{
        Action, Direction, Spd,
        packet::{Fragment, Parsed, parse_frame_fragment},
    },
};
use xipsec_testkit::{
    as_root,
    cli::{SpArgs, sa_line, write_batch},
    daemon::Node,
    netns::VethPair,
};

const SPDS: usize = 6;
const PACKETS_PER_SPD: usize = 1_000;
const MAX_POLICIES: usize = 1_500;

/// Every byte of the maps the live programs write, by map and key (per-CPU maps: every CPU's
/// value).
type Dump = BTreeMap<(&'static str, Vec<u8>), Vec<u8>>;

fn pinned(dir: &Path, name: &str) -> MapData {
    MapData::from_pin(dir.join(name)).unwrap_or_else(|e| panic!("opening pinned map {name}: {e}"))
}

fn dump(dir: &Path) -> Dump {
    let mut out = Dump::new();
    let counters: PerCpuArray<_, u64> =
        PerCpuArray::try_from(Map::PerCpuArray(pinned(dir, abi::COUNTERS))).expect("counters");
    for i in 0..abi::Counter::COUNT {
        let values = counters.get(&i, 0).expect("a counter");
        let bytes = values.iter().flat_map(|v| v.to_ne_bytes()).collect();
        out.insert((abi::COUNTERS, i.to_ne_bytes().to_vec()), bytes);
    }
    let stats: PerCpuArray<_, abi::SpStats> =
        PerCpuArray::try_from(Map::PerCpuArray(pinned(dir, abi::SP_STATS))).expect("sp stats");
    for i in 0..abi::MAX_SP {
        let values = stats.get(&i, 0).expect("sp stats");
        let bytes = values
            .iter()
            .flat_map(|v| bytemuck::bytes_of(v).to_vec())
            .collect();
        out.insert((abi::SP_STATS, i.to_ne_bytes().to_vec()), bytes);
    }
    // The flow cache is an array of slots: every slot ever written (all zeros = never).
    let cache: Array<_, abi::CacheSlot> =
        Array::try_from(Map::Array(pinned(dir, abi::FLOW_CACHE))).expect("flow cache");
    for (index, slot) in cache.iter().enumerate() {
        let slot = slot.expect("a flow-cache slot");
        let bytes = bytemuck::bytes_of(&slot);
        if bytes.iter().any(|&b| b != 0) {
            out.insert(
                (abi::FLOW_CACHE, index.to_ne_bytes().to_vec()),
                bytes.to_vec(),
            );
        }
    }
    let frags: HashMap<_, abi::FragKey, abi::FragValue> =
        HashMap::try_from(Map::LruHashMap(pinned(dir, abi::FRAG_STATE))).expect("fragment state");
    for entry in &frags {
        let (key, value) = entry.expect("a fragment-state entry");
        out.insert(
            (abi::FRAG_STATE, bytemuck::bytes_of(&key).to_vec()),
            bytemuck::bytes_of(&value).to_vec(),
        );
    }
    out
}

/// What the reference says the explain program must report for `frame` (outcome, sp id, rank,
/// action, spi known).
fn expected(spd: &Spd, direction: Direction, frame: &[u8]) -> (u32, u32, u64, u32, u32) {
    let none = |outcome| (outcome, NO_SP, u64::MAX, abi::ACTION_NONE, 0);
    match parse_frame_fragment(frame, direction == Direction::In) {
        (Parsed::Flow(flow), Fragment::Whole) => match spd.classify(direction, &flow) {
            None => none(OUTCOME_CLASSIFIED),
            Some(sp) => {
                let action = match sp.action {
                    Action::None => abi::ACTION_NONE,
                    Action::Discard => abi::ACTION_DISCARD,
                    Action::Ipsec => abi::ACTION_IPSEC,
                };
                (OUTCOME_CLASSIFIED, sp.id, sp.rank(), action, 0)
            }
        },
        (Parsed::Flow(_), _) => none(OUTCOME_FRAGMENT),
        (Parsed::Esp { spi, .. }, _) => {
            let known = spd
                .sa_by_spi(spi)
                .is_some_and(|sa| spd.is_inbound_sa(&sa.name));
            (
                OUTCOME_ESP,
                NO_SP,
                u64::MAX,
                abi::ACTION_NONE,
                u32::from(known),
            )
        }
        (Parsed::NotIpv6, _) => none(OUTCOME_NOT_IPV6),
        (Parsed::Malformed, _) => none(OUTCOME_MALFORMED),
        (Parsed::ExtLimit, _) => none(OUTCOME_EXT_LIMIT),
        (Parsed::VlanDepth, _) => none(OUTCOME_VLAN_DEPTH),
        (Parsed::EspFragment, _) => none(OUTCOME_ESP_FRAGMENT),
    }
}

fn found(r: &ExplainResult) -> (u32, u32, u64, u32, u32) {
    (r.outcome, r.sp_id, r.rank, r.action, r.spi_known)
}

#[test]
fn explain_agrees_with_the_reference_and_disturbs_nothing() {
    as_root(
        "explain_agrees_with_the_reference_and_disturbs_nothing",
        || {
            // Removed when the test ends, also on a panic (declared before the datapath, so
            // dropped after it).
            let pin_dir = tempfile::Builder::new()
                .prefix("xipsec-explain-")
                .tempdir_in("/sys/fs/bpf")
                .expect("creating a pin directory in bpffs");
            let pins = pin_dir.path().to_path_buf();
            let mut dp = KernelDatapath::load(&LoadOptions {
                pin_dir: Some(pins.clone()),
                benchmark: false,
            })
            .expect("loading the datapath");
            let mut rng = Rng::new(0x0e8b_1a1e);
            let mut classified = 0;
            let mut matched = 0;
            for round in 0..SPDS {
                let spd = random_spd(&mut rng, MAX_POLICIES);
                dp.sync(&spd).expect("syncing a random spd");
                let mut frames = FrameGen::new();
                let packets: Vec<(Direction, Vec<u8>)> = (0..PACKETS_PER_SPD)
                    .map(|_| frames.frame(&mut rng, &spd))
                    .collect();
                // The live programs see the first half: counters, cache and fragment state fill.
                for (direction, frame) in &packets[..PACKETS_PER_SPD / 2] {
                    match direction {
                        Direction::In => drop(dp.test_run_xdp(frame).expect("live xdp run")),
                        Direction::Out => drop(dp.test_run_tc(frame).expect("live tc run")),
                    }
                }
                let before = dump(&pins);
                for (i, (direction, frame)) in packets.iter().enumerate() {
                    let result = dp.explain(*direction, frame).expect("explaining a packet");
                    let want = expected(&spd, *direction, frame);
                    assert_eq!(
                        found(&result),
                        want,
                        "spd {round}, packet {i} ({direction:?}): the kernel's explanation \
                     (outcome, sp, rank, action, spi known) differs from the reference's; \
                     frame {}",
                        hex::encode(frame)
                    );
                    if want.0 == OUTCOME_CLASSIFIED {
                        classified += 1;
                        matched += usize::from(want.1 != NO_SP);
                    }
                }
                let after = dump(&pins);
                assert!(
                    before.keys().any(|(map, _)| *map == abi::FLOW_CACHE),
                    "the live runs filled the flow cache"
                );
                if before != after {
                    let changed: Vec<_> = before
                        .iter()
                        .filter(|(k, v)| after.get(*k) != Some(*v))
                        .map(|((map, key), _)| format!("{map} {}", hex::encode(key)))
                        .chain(
                            after
                                .keys()
                                .filter(|k| !before.contains_key(*k))
                                .map(|(map, key)| format!("{map} {} (new)", hex::encode(key))),
                        )
                        .take(10)
                        .collect();
                    panic!("spd {round}: explain changed the live maps: {changed:?}");
                }
            }
            eprintln!(
                "explain: {} packets over {SPDS} random spds agree with the reference ({classified} \
             classified, {matched} of them matched a policy); maps unchanged",
                SPDS * PACKETS_PER_SPD
            );
            assert!(matched > 1000, "the random packets hit policies: {matched}");
        },
    );
}

/// `xipsec explain --direction DIRECTION --source SOURCE --destination DESTINATION MORE
/// --formatter json` on `node`: the record.
fn explain_json(
    node: &Node,
    (direction, source, destination): (&str, &str, &str),
    more: &[&str],
) -> serde_json::Value {
    let packet = [
        "--direction",
        direction,
        "--source",
        source,
        "--destination",
        destination,
    ];
    let out = node.ok(&[&["explain"], &packet[..], more, &["--formatter", "json"]].concat());
    serde_json::from_str(&out).unwrap_or_else(|e| panic!("explain's json ({e}): {out}"))
}

#[test]
fn the_cli_explains_verdict_policy_rank_reason_and_sa() {
    as_root("the_cli_explains_verdict_policy_rank_reason_and_sa", || {
        let net = VethPair::new("xexp", 0x7b);
        let node = Node::start(&net.ns_a, &net.if_a);
        let (a, b) = (net.addr_a.as_str(), net.addr_b.as_str());
        let (a128, b128) = (format!("{a}/128"), format!("{b}/128"));
        let mut lines = vec![sa_line("sa-out", (a, b), 0x7b01)];
        lines.push(
            SpArgs {
                action: "discard",
                sa: None,
                ..SpArgs::ipsec("fd00::/16", "any", "out", "wide")
            }
            .line(),
        );
        lines.push(
            SpArgs {
                sa: Some("sa-out"),
                ..SpArgs::ipsec(&a128, &b128, "out", "narrow")
            }
            .line(),
        );
        lines.push(
            SpArgs {
                proto: "tcp",
                dport: "22",
                action: "none",
                sa: None,
                priority: Some("5"),
                ..SpArgs::ipsec(&a128, &b128, "out", "ssh")
            }
            .line(),
        );
        let file = node.dir().join("explain-batch");
        write_batch(&file, &lines);
        node.ok(&["batch", file.to_str().expect("utf-8")]);
        let stats = || {
            (
                node.ok(&["stats", "--formatter", "json"]),
                node.ok(&["sp", "list", "--formatter", "json"]),
            )
        };
        let before = stats();

        let ssh = explain_json(
            &node,
            ("out", a, b),
            &["--protocol", "tcp", "--destination-port", "22"],
        );
        let udp = explain_json(&node, ("out", a, b), &["--protocol", "udp"]);
        let other = explain_json(&node, ("out", "fd00:99::1", b), &["--protocol", "icmp6"]);
        let inbound = explain_json(&node, ("in", b, a), &[]);
        for (record, verdict, sp, reason, sa) in [
            (
                &ssh,
                "pass",
                Some("ssh"),
                Some("priority 5 (a policy with a priority comes first)"),
                None,
            ),
            (
                &udp,
                "protect",
                Some("narrow"),
                Some("longer destination prefix (/128 over /0)"),
                Some("sa-out"),
            ),
            (
                &other,
                "drop",
                Some("wide"),
                Some("the only matching policy"),
                None,
            ),
            (&inbound, "pass", None, None, None),
        ] {
            for side in ["kernel", "reference"] {
                let field =
                    |name: &str| record[format!("{side}_{name}")].as_str().map(str::to_owned);
                assert_eq!(
                    field("verdict").as_deref(),
                    Some(verdict),
                    "{side}: {record}"
                );
                assert_eq!(field("sp").as_deref(), sp, "{side}: {record}");
                assert_eq!(field("rank_reason").as_deref(), reason, "{side}: {record}");
                assert_eq!(field("sa").as_deref(), sa, "{side}: {record}");
            }
            assert_eq!(record["agree"], "yes", "{record}");
        }
        // The table names the same, and every formatter carries the record.
        let table = node.ok(&[
            "explain",
            "--direction",
            "out",
            "--source",
            a,
            "--destination",
            b,
            "--protocol",
            "udp",
        ]);
        eprintln!("xipsec explain (table):\n{table}");
        assert!(
            table.contains("Kernel SP: narrow") && table.contains("Agree: yes"),
            "{table}"
        );
        for formatter in ["xml", "csv", "keyvalue"] {
            let out = node.ok(&[
                "explain",
                "--direction",
                "in",
                "--source",
                b,
                "--destination",
                a,
                "--formatter",
                formatter,
            ]);
            assert!(
                out.contains("reference_verdict") || out.contains("Reference"),
                "{formatter}: {out}"
            );
        }
        let bad = node.cli(&[
            "explain",
            "--direction",
            "up",
            "--source",
            a,
            "--destination",
            b,
        ]);
        assert!(!bad.status.success());
        assert_eq!(
            String::from_utf8_lossy(&bad.stderr).trim(),
            "error: --direction: 'up' is not valid; use in or out"
        );
        assert_eq!(stats(), before, "explain moved no counter");
    });
}
