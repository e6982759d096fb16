//! What the SPD tables *mean*, with generation bits and mask ids factored out, read either from
//! the model (compiled) or from the kernel (a loaded datapath, or the maps a daemon pinned).

use std::{collections::BTreeSet, path::Path};

use aya::maps::{Array, HashMap, Map, MapData};
use ipsec_common::abi::{self, MaskDesc, RuleKey, RuleValue};
use ipsec_user::{
    datapath::{
        KernelDatapath,
        compile::{ShapeIds, Tables, compile},
    },
    model::Spd,
};

/// Masks per rule kind and direction (search order, ids cleared) and every rule with its mask
/// spelled out.
pub type Meaning = (
    Vec<Vec<MaskDesc>>,
    BTreeSet<(u8, Vec<u8>, Vec<u8>, Vec<u8>)>,
);

type Masks = [[Vec<MaskDesc>; 2]; abi::RULE_KINDS as usize];

pub fn meaning(masks: &Masks, rules: &[(RuleKey, RuleValue)]) -> Meaning {
    let strip = |m: &MaskDesc| MaskDesc { id: 0, ..*m };
    let mut set = BTreeSet::new();
    for (key, value) in rules {
        let mask = masks[usize::from(key.kind)][usize::from(key.dir)]
            .iter()
            .find(|m| m.id == key.tag & 0x7f)
            .unwrap_or_else(|| panic!("rule {key:?} names a mask that is not active"));
        let key = RuleKey { tag: 0, ..*key };
        set.insert((
            key.dir,
            bytemuck::bytes_of(&strip(mask)).to_vec(),
            bytemuck::bytes_of(&key).to_vec(),
            bytemuck::bytes_of(value).to_vec(),
        ));
    }
    (
        masks
            .iter()
            .flatten()
            .map(|d| d.iter().map(strip).collect())
            .collect(),
        set,
    )
}

pub fn model_meaning(spd: &Spd) -> Meaning {
    let Tables { masks, rules } = compile(spd, 0, &mut ShapeIds::default()).expect("compiles");
    let rules: Vec<_> = rules.into_iter().collect();
    meaning(&masks, &rules)
}

pub fn kernel_meaning(dp: &KernelDatapath) -> Meaning {
    let masks = dp.active_masks().expect("reading masks");
    let rules = dp.active_rules().expect("reading rules");
    meaning(&masks, &rules)
}

fn pinned(dir: &Path, name: &str) -> MapData {
    MapData::from_pin(dir.join(name)).unwrap_or_else(|e| panic!("opening pinned map {name}: {e}"))
}

/// The active tables of the maps a daemon pinned under `dir`.
pub fn pinned_meaning(dir: &Path) -> Meaning {
    let config: Array<_, u64> =
        Array::try_from(Map::Array(pinned(dir, abi::CONFIG))).expect("config map");
    let generation = (config.get(&abi::CONFIG_EPOCH, 0).expect("epoch") & 1) as u8;
    let counts: Array<_, u32> =
        Array::try_from(Map::Array(pinned(dir, abi::MASK_COUNT))).expect("mask counts");
    let all_masks: Array<_, MaskDesc> =
        Array::try_from(Map::Array(pinned(dir, abi::MASKS))).expect("masks");
    let mut masks: Masks = Default::default();
    for kind in ipsec_user::datapath::compile::KINDS {
        for dir_code in [abi::DIR_IN, abi::DIR_OUT] {
            let set = abi::mask_set(kind, generation, dir_code);
            for i in 0..counts.get(&set, 0).expect("mask count") {
                masks[usize::from(kind)][usize::from(dir_code)]
                    .push(all_masks.get(&(set * abi::MAX_MASKS + i), 0).expect("mask"));
            }
        }
    }
    let rules_map: HashMap<_, RuleKey, RuleValue> =
        HashMap::try_from(Map::HashMap(pinned(dir, abi::RULES))).expect("rules map");
    let rules: Vec<_> = rules_map
        .iter()
        .map(|r| r.expect("reading a rule"))
        .filter(|(k, _)| k.tag >> 7 == generation)
        .collect();
    meaning(&masks, &rules)
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
