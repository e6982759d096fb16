//! What the SPD tables *mean*, with generation bits factored out, read either from the model
//! (compiled) or from the kernel (a loaded datapath, or the maps a daemon pinned).

use std::{
    collections::{BTreeMap, BTreeSet},
    path::Path,
};

use aya::maps::{Array, HashMap, Map, MapData, lpm_trie::LpmTrie};
use ipsec_common::abi;
use ipsec_user::{
    datapath::{
        KernelDatapath, active_tables,
        compile::{Tables, compile},
    },
    model::Spd,
};

/// Every table entry as bytes, generation bits cleared: prefixes (length, tag, address,
/// lengths), rules (`.1`, one per policy and rule kind), length pairs and field sets (by
/// generation-free index).
pub type Meaning = (
    BTreeSet<(u8, Vec<u8>, Vec<u8>)>,
    BTreeSet<(Vec<u8>, Vec<u8>)>,
    BTreeMap<u32, Vec<u8>>,
    BTreeMap<u32, Vec<u8>>,
);

/// A `LEN_PAIRS`/`FIELD_SETS` index with the generation bit of its rule set cleared.
fn without_generation(index: u32, per_set: u32) -> u32 {
    let (set, rest) = (index / per_set, index % per_set);
    (set & !2) * per_set + rest
}

/// Array entries (`per_set` of them per rule set) as bytes, by generation-free index.
fn by_set<V: bytemuck::Pod, S>(
    entries: &std::collections::HashMap<u32, V, S>,
    per_set: u32,
) -> BTreeMap<u32, Vec<u8>> {
    entries
        .iter()
        .map(|(index, value)| {
            (
                without_generation(*index, per_set),
                bytemuck::bytes_of(value).to_vec(),
            )
        })
        .collect()
}

pub fn meaning(tables: &Tables) -> Meaning {
    let rules = tables
        .rules
        .iter()
        .map(|(key, value)| {
            let key = abi::RuleKey {
                tag: key.tag & !0x40,
                ..*key
            };
            (
                bytemuck::bytes_of(&key).to_vec(),
                bytemuck::bytes_of(value).to_vec(),
            )
        })
        .collect();
    let prefixes = tables
        .prefixes
        .iter()
        .map(|(entry, lengths)| {
            let key = abi::PrefixKey {
                tag: entry.key.tag & 3,
                ..entry.key
            };
            (
                entry.len,
                bytemuck::bytes_of(&key).to_vec(),
                bytemuck::bytes_of(lengths).to_vec(),
            )
        })
        .collect();
    let pairs = by_set(&tables.pairs, abi::PREFIX_LENS);
    let field_sets = by_set(&tables.field_sets, abi::PREFIX_LENS * abi::PREFIX_LENS);
    (prefixes, rules, pairs, field_sets)
}

pub fn model_meaning(spd: &Spd) -> Meaning {
    meaning(&compile(spd, 0).expect("compiles"))
}

pub fn kernel_meaning(dp: &KernelDatapath) -> Meaning {
    meaning(&dp.active_tables().expect("reading the tables"))
}

fn pinned(dir: &Path, name: &str) -> MapData {
    MapData::from_pin(dir.join(name)).unwrap_or_else(|e| panic!("opening pinned map {name}: {e}"))
}

/// The active tables of the maps a daemon pinned under `dir`.
pub fn pinned_meaning(dir: &Path) -> Meaning {
    let config: Array<_, u64> =
        Array::try_from(Map::Array(pinned(dir, abi::CONFIG))).expect("config map");
    let epoch = config.get(&abi::CONFIG_EPOCH, 0).expect("epoch");
    let rules: HashMap<_, abi::RuleKey, abi::RuleValue> =
        HashMap::try_from(Map::HashMap(pinned(dir, abi::RULES))).expect("rules map");
    let prefixes: LpmTrie<_, abi::PrefixKey, abi::LenSet> =
        LpmTrie::try_from(Map::LpmTrie(pinned(dir, abi::PREFIXES))).expect("prefix trie");
    let pairs: Array<_, abi::LenSet> =
        Array::try_from(Map::Array(pinned(dir, abi::LEN_PAIRS))).expect("length pairs");
    let fields: Array<_, abi::FieldSet> =
        Array::try_from(Map::Array(pinned(dir, abi::FIELD_SETS))).expect("field sets");
    meaning(&active_tables(epoch, &rules, &prefixes, &pairs, &fields).expect("reading the tables"))
}

/// The sum over CPUs of datapath counter `counter` in the maps pinned under `pin_dir`: readable
/// while the daemon is dead, from the maps of the programs that are still attached.
pub fn pinned_counter(pin_dir: &Path, counter: abi::Counter) -> u64 {
    use aya::maps::PerCpuArray;
    let path = pin_dir.join(abi::COUNTERS);
    let map = MapData::from_pin(&path)
        .unwrap_or_else(|e| panic!("opening the pinned counters {}: {e}", path.display()));
    let counters: PerCpuArray<_, u64> =
        PerCpuArray::try_from(Map::PerCpuArray(map)).expect("the counters are a per-CPU array");
    counters
        .get(&(counter as u32), 0)
        .expect("reading a counter")
        .iter()
        .sum()
}

/// Names of the programs on `iface`'s TC egress in `ns`: TCX programs (queried with
/// `BPF_PROG_QUERY` from a thread that joined the namespace) and classic `tc` filters.
pub fn tc_egress_programs(ns: &str, iface: &str) -> Vec<String> {
    let mut names = xipsec_testkit::netns::in_netns(ns, || {
        let (_, programs) = aya::programs::SchedClassifier::query_tcx(
            iface,
            aya::programs::tc::TcAttachType::Egress,
        )
        .unwrap_or_else(|e| panic!("querying TCX egress of {iface}: {e}"));
        programs
            .iter()
            .map(|p| format!("tcx:{}", p.name_as_str().unwrap_or("?")))
            .collect::<Vec<_>>()
    });
    let out = std::process::Command::new("tc")
        .args(["-n", ns, "filter", "show", "dev", iface, "egress"])
        .output()
        .expect("running tc filter show");
    names.extend(
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .filter(|l| l.contains("bpf"))
            .map(|l| format!("tc:{l}")),
    );
    names
}
